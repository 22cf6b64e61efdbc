#include "finite_check.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/quant/blocks.h"

namespace edgeq::runtime {

namespace {

[[noreturn]] void report(const GgufFile& file, const TensorView& v, size_t index, float x) {
  const uint64_t ne0 = v.dims.empty() ? 1 : v.dims[0];
  fail("{}: tensor {}: non-finite value {} at row {}, column {}", file.path(), v.name, x, index / ne0, index % ne0);
}

}  // namespace

bool all_finite(const float* x, size_t n) {
  uint32_t bad = 0;  // no early exit: the loop vectorises
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, x + i, sizeof u);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

void check_finite_tensors(const GgufFile& file) {
  std::vector<float> buf;
  for (const auto& t : file.tensors()) {
    const TensorView v = file.view(t);
    if (!v.data || v.n_elements() == 0) continue;
    if (!quant::can_dequantize(v.type)) continue;  // integer data (palette indices): nothing can be non-finite
    const uint64_t ne0 = v.dims[0], rows = v.n_rows();
    const uint64_t chunk = std::max<uint64_t>(1, (uint64_t(1) << 16) / ne0);  // rows per dequantized chunk
    buf.resize(static_cast<size_t>(chunk * ne0));
    for (uint64_t r0 = 0; r0 < rows; r0 += chunk) {
      const uint64_t nr = std::min(chunk, rows - r0);
      quant::dequantize_row(v.type, v.data + r0 * v.row_bytes(), buf.data(), static_cast<int64_t>(nr * ne0));
      if (all_finite(buf.data(), nr * ne0)) continue;
      for (size_t i = 0; i < nr * ne0; ++i)
        if (!std::isfinite(buf[i])) report(file, v, static_cast<size_t>(r0 * ne0) + i, buf[i]);
    }
  }
}

}  // namespace edgeq::runtime
