// libFuzzer target: the safetensors parser and f32 conversion of every convertible tensor.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = edgeq::SafetensorsFile::parse(data, size, "fuzz.safetensors");
    std::vector<float> buf;
    for (auto& t : f.tensors()) {
      if (!edgeq::st_dtype_is_float_convertible(t.dtype) || t.n_elements() > (1u << 16)) continue;
      buf.resize(t.n_elements());
      edgeq::st_to_f32(t.dtype, t.data, buf.data(), buf.size());
    }
  } catch (const edgeq::Error&) {
  }
  return 0;
}
