// libFuzzer target: the GGUF parser, then every accessor a consumer would touch.
#include <cstddef>
#include <cstdint>

#include "edgeq/formats/error.h"
#include "edgeq/formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = edgeq::GgufFile::parse(data, size, "fuzz.gguf");
    for (auto& [k, v] : f.metadata()) (void)v.to_display(4);
    uint64_t sum = 0;
    for (auto& t : f.tensors()) {
      auto v = f.view(t);
      if (v.nbytes) sum += v.data[0] + v.data[v.nbytes - 1];  // touch both ends: must be inside the buffer
    }
    (void)sum;
  } catch (const edgeq::Error&) {
  }
  return 0;
}
