// Block formats: quantize and dequantize every ggml block type edgeq supports, bit-compatible with ggml.
// One implementation shared by the quantizer and the runtime.
#pragma once
#include <cstddef>
#include <cstdint>

#include "edgeq/formats/ggml_types.h"

namespace edgeq::quant {

bool can_dequantize(GgmlType t);
bool can_quantize(GgmlType t);

// Dequantizes n elements (a multiple of the type's block size) from src into dst.
// Throws edgeq::Error for a type that cannot be dequantized.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);

// Quantizes nrows rows of n_per_row floats into dst (ggml_row_size(t, n_per_row) bytes per row).
// importance: optional per-column weights (n_per_row floats, e.g. an imatrix row), may be nullptr.
// Returns the bytes written. Deterministic: the same input gives the same bytes on any thread count.
size_t quantize_rows(GgmlType t, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                     const float* importance);

}  // namespace edgeq::quant
