// Quantized dot products: a weight row in its ggml block format times an activation row quantized to the
// block format llama.cpp's CPU backend pairs with it (Q8_0 for the 32-blocks, Q8_K for the k-quants), in
// integer arithmetic per block, as ggml_vec_dot_<type>_q8_<0|K> does.
//
// Exactness: every block's integer sum is exact whatever the instruction set, and the float combination per
// block (scale products, the running sum over blocks in order) is the same scalar code in every path, compiled
// without FMA contraction (runtime/CMakeLists.txt). So the portable path and every SIMD path return the same
// bits, and a product does not depend on how rows and tokens are split over threads.
//
// Adding a kernel for a block type: write its scalar reference dot (the definition), then SIMD versions that
// compute the same per-block integers; add a row to the table in kernels.cpp naming the activation format and
// the functions; test_kernels checks every row of the table (scalar == SIMD, and against dequantized floats).
#pragma once
#include <cstddef>
#include <cstdint>

#include "edgeq/formats/ggml_types.h"
#include "edgeq/runtime/matmul.h"

namespace edgeq::runtime::kernels {

// Activation blocks. d is the scale as llama.cpp uses it (Q8_0: the fp16-rounded scale, widened).
struct ActQ8_0 {
  float d;
  int8_t qs[32];
};
struct ActQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];  // sums of qs over 16-element groups
};

// out[k * out_stride] = dot(weight row, activation row k) for k < n_act (1 .. kMaxAct); activation row k starts
// at act + k * act_stride bytes; n values per row. Every output is the same whatever n_act.
constexpr int kMaxAct = 4;
using DotFn = void (*)(const uint8_t* w_row, const uint8_t* act, size_t act_stride, int n_act, int64_t n,
                       float* out, size_t out_stride);

struct DotKernel {
  GgmlType type;
  ActRounding act;  // Q8_0 or Q8_K
  DotFn scalar;     // the reference
  DotFn avx2;       // nullptr: none
  DotFn avx512;     // AVX-512 VNNI (+BW/VL); nullptr: none
};

// The kernel for a weight type, or nullptr (then matmul dequantizes and uses sgemm).
const DotKernel* find(GgmlType t);
// The fastest path of k this CPU runs (or the scalar one when simd is false).
DotFn best(const DotKernel& k, bool simd = true);
// Name of the SIMD level best() picks on this CPU ("avx512vnni", "avx2", "scalar").
const char* simd_level();

// Bytes of one activation row of n values quantized to a.
size_t act_row_bytes(ActRounding a, int64_t n);
// Quantizes a row of n floats (n a multiple of the block size) exactly as llama.cpp's quantize_row_q8_0 /
// quantize_row_q8_K do; dequantizing the result gives round_activations' values.
void quantize_act(ActRounding a, const float* x, void* dst, int64_t n);

}  // namespace edgeq::runtime::kernels
