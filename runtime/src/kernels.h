// Quantized dot products: a weight row in its ggml block format times an activation row quantized to the
// block format llama.cpp's CPU backend pairs with it (Q8_0 for the 32-blocks, Q8_1 for Q4_1/Q5_1, Q8_K for the
// k-quants and IQ4_XS), in integer arithmetic per block, as ggml_vec_dot_<type>_q8_<0|1|K> does.
//
// Exactness: every block's integer sum is exact whatever the instruction set, and the float combination per
// block (scale products, the running sum over blocks in order) is the same scalar code in every path, compiled
// without FMA contraction (runtime/CMakeLists.txt). So the portable path and every SIMD path return the same
// bits, and a product does not depend on how rows and tokens are split over threads.
//
// Adding a kernel for a block type: write its scalar reference dot (the definition), then SIMD versions that
// compute the same per-block integers; name them in kernels.cpp's kernel table (the activation format is the
// type's block-ops row's act_rounding);
// test_matmul_kernels checks every type with kernels (scalar == SIMD, and against dequantized floats).
#pragma once
#include <cstddef>
#include <cstdint>

#include <algorithm>
#include <cmath>

#include "edgeq/base/half.h"

#include "edgeq/formats/ggml_types.h"
#include "edgeq/quant/block_ops.h"
#include "edgeq/runtime/matmul.h"

namespace edgeq::runtime::kernels {

// Activation blocks. d is the scale as llama.cpp uses it (Q8_0: the fp16-rounded scale, widened).
// ActQ8_0 is also ggml's Q8_1 (the activations of Q4_1 and Q5_1): the same d and qs, plus
// s = fp16(amax / 127 * sum of qs), widened, which those types' dot products multiply with the block minimum.
struct ActQ8_0 {
  float d;
  float s;
  int8_t qs[32];
};
struct ActQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];  // sums of qs over 16-element groups
};

// Dot products over at most kMaxAct activation rows per call (DotFn's n_act).
constexpr int kMaxAct = 4;
using runtime::BlockKernels;
using runtime::DotFn;

// A weight type with kernels: its block-ops row (the activation format) and its kernels.
struct Entry {
  const quant::BlockOps* ops;
  BlockKernels kernels;
};
// The entry of a weight type with kernels, or nullptr (then matmul dequantizes and uses sgemm).
const Entry* find(GgmlType t);
// The fastest path of a row's kernels at edgeq/base/cpu.h's level (AVX-512 needs VNNI too).
DotFn best(const BlockKernels& k);
// Name of the SIMD level best() picks on this CPU ("avx512vnni", "avx2", "scalar").
const char* simd_level();

// The activation formats' block scales, written once: ggml's quantize_row_q8_0 (d = amax / 127, stored as fp16;
// id = 127 / amax, 0 for an all-zero block; q = nearest(x · id)) and quantize_row_q8_K_ref (iscale = -127 / max,
// max the signed value of the largest |x| (the first such); q = min(127, nearest(iscale · x)), d = 1 / iscale).
// quantize_act stores the integers; round_activations (matmul.h) the values they stand for.
struct Q8_0Scale {
  float d, id, d_f16;  // d_f16: d rounded to fp16, widened (the scale the block stores)
};
inline Q8_0Scale q8_0_scale(const float* x) {
  float amax = 0.f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.f;
  return {d, amax != 0.f ? 127.f / amax : 0.f, f16_to_f32(f32_to_f16(d))};
}
// False for an all-zero block (every q and d are 0).
inline bool q8_K_scale(const float* x, float* iscale, float* d) {
  float amax = 0.f, mx = 0.f;
  for (int j = 0; j < 256; ++j) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) {
      amax = ax;
      mx = x[j];
    }
  }
  if (amax == 0.f) return false;
  *iscale = -127.f / mx;
  *d = 1.f / *iscale;
  return true;
}

// Bytes of one activation row of n values quantized to a.
size_t act_row_bytes(ActRounding a, int64_t n);
// Quantizes a row of n floats (n a multiple of the block size) exactly as llama.cpp's quantize_row_q8_0 (and
// _q8_1, for s) / quantize_row_q8_K do; dequantizing the result gives round_activations' values. simd=false
// takes the portable path (the same bytes).
void quantize_act(ActRounding a, const float* x, void* dst, int64_t n);

// A lattice i-quant block (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) as the kernels decode it: q[256]
// the values as signed bytes (the signed grid value; IQ1: 8 x grid value + the delta's sign, +-1), s[16] the odd
// scale 2s + 1 of each 16 values. False (nothing written) for another type.
bool decode_lattice(GgmlType t, const void* block, int8_t* q, int16_t* s);
// IQ4_XS's 8 signed 6-bit scales of its 32-value sub-blocks.
void iq4_xs_block_scales(const void* block, int16_t* sc);

}  // namespace edgeq::runtime::kernels
