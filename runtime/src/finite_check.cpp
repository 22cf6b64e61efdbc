#include "finite_check.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "edgeq/base/finite.h"
#include "edgeq/quant/blocks.h"

namespace edgeq::runtime {

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
      check_finite_rows(file.path(), v.name, buf.data(), r0, nr, ne0);
    }
  }
}

}  // namespace edgeq::runtime
