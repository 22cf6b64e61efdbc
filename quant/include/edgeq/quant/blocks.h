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
// Uses the SIMD path where one exists; its output equals dequantize_row_scalar bit for bit.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);

// The portable reference dequantizer (same results as gguf-py's dequantizers, bit for bit).
void dequantize_row_scalar(GgmlType t, const void* src, float* dst, int64_t n);

// True when dequantize_row has a SIMD path for t (otherwise it calls the scalar one).
bool has_simd_dequantize(GgmlType t);
// Name of the dequantizers' SIMD path in use ("AVX2+F16C" or "scalar"), for benchmarks and logs.
const char* simd_target_name();

// Quantizes nrows rows of n_per_row floats into dst (ggml_row_size(t, n_per_row) bytes per row).
// importance: optional per-column weights (n_per_row floats, e.g. an imatrix row), may be nullptr.
// Returns the bytes written. Deterministic: the same input gives the same bytes on any thread count.
// Without importance the search minimises the plain squared error of each block; with importance it
// minimises sum_j importance[j] * (x_j - q_j)^2. Throws edgeq::Error for a type it cannot produce,
// a row length that is not a multiple of the block size, or a non-finite input value.
size_t quantize_rows(GgmlType t, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                     const float* importance);

// quantize_rows' SIMD paths follow edgeq/base/cpu.h's level (Portable, Avx2, Avx512: set_max_level). All
// write the same bytes (the SIMD lanes repeat the scalar operations in order); only the speed differs. The
// kernels that score many scale candidates at once (one per lane) run 16 lanes at Avx512 and 8 at Avx2; for
// tests and benchmarks, false here makes the SIMD paths score one candidate at a time instead. Not
// thread-safe with a quantization in progress.
void set_quantize_candidate_lanes(bool enabled);
// True when quantize_rows uses SIMD code (level Avx2 or above).
bool quantize_simd_active();
// The candidate-parallel width in use: 16, 8, or 0 (none).
int quantize_simd_lanes();

// A block's grid with its scales kept (the block-ops table's codes column): the number of integer codes an
// element of type t can take (0 when this is not supported for t), and writing element e's code in an encoded
// block. block_level_values gives values[k * block_size + e], the value element e takes with code k under the
// block's scales (GPTQ rounds on that grid).
int block_code_levels(GgmlType t);
void set_block_code(GgmlType t, void* block, int element, int code);
void block_level_values(GgmlType t, const void* block, float* values);

// The lattice i-quants (IQ1_*, IQ2_*, IQ3_*) choose codes per group of 8 consecutive elements (one sign byte and
// its grid point(s)), not per element: block_code_group(t) is that group size (8), 0 for other types.
// set_block_group re-chooses group g of an encoded block for the targets x[0..8) with weights w (> 0), keeping the
// block's scales (and IQ1_S's delta sign, shared with the sub-block), exactly: the grid point(s) and signs of least
// weighted error; y receives the group's dequantized values. GPTQ feeds errors back group by group with it.
int block_code_group(GgmlType t);
void set_block_group(GgmlType t, void* block, int g, const float* x, const float* w, float* y);
// Lattice i-quants: multiplies an encoded block's f16 scale by factor (rounded to f16; sub-scales, points and
// signs kept), so GPTQ can try its group choices at a few block scales and keep the one of least error.
void scale_block_d(GgmlType t, void* block, float factor);

// Error metric used by tests and benchmarks: sum_j w_j * (a_j - b_j)^2 (w == nullptr: all 1), in double.
double weighted_sq_error(const float* a, const float* b, int64_t n, const float* w);

}  // namespace edgeq::quant
