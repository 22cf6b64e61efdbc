// The one check that weights are finite: quantize's loading (quant/src/quantize_model.cpp) and the runtime's
// load-time scan and forward pass (runtime/src/finite_check.cpp, forward.cpp) use it, so the test and the error
// are the same wherever a NaN or Inf is found.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "edgeq/base/error.h"

namespace edgeq {

// Whether all n floats are finite (a vectorisable bit test, no early exit).
inline bool all_finite(const float* x, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, x + i, sizeof u);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// Rows r0 .. r0 + nr - 1 of a tensor with rows of ne0 values, held at x: throws edgeq::Error
// "<path>: tensor <name>: non-finite value <v> at row <r>, column <c>" for the first NaN or Inf.
inline void check_finite_rows(std::string_view path, std::string_view name, const float* x, uint64_t r0, uint64_t nr,
                              uint64_t ne0) {
  if (all_finite(x, static_cast<size_t>(nr * ne0))) return;
  for (uint64_t i = 0; i < nr * ne0; ++i)
    if (!std::isfinite(x[i])) fail("{}: tensor {}: non-finite value {} at row {}, column {}", path, name, x[i], r0 + i / ne0, i % ne0);
}

}  // namespace edgeq
