// Batched products of quantized weights in llama.cpp's own order of float operations (its AVX2 build, the one
// that made the goldens): the activations quantized to Q8_K / Q8_0 blocks, an exact integer sum per block in 8
// lanes (lane l: the values whose index mod 32 lies in [4l, 4l + 4), as _mm256_maddubs/_madd group them), each
// lane scaled by the block's float scale with a fused multiply-add into its own float accumulator, the 8
// accumulators added as ((0+4)+(2+6))+((1+5)+(3+7)) (hsum_float_8), plus each type's minimum term as
// ggml_vec_dot_<type>_q8_K accumulates it (Q2_K: in the same lanes, before the values; Q4_K: 4 lanes of its
// own, added after; Q5_K: one running float). The 32-value blocks (Q8_0, Q4_0, Q5_0, IQ4_NL: tinyBLAS's order,
// which is also ggml_vec_dot_<type>_q8_0's; Q4_1, Q5_1: ggml_vec_dot_<type>_q8_1's) take the same 8 lanes per
// block, and Q4_1/Q5_1 a running float for the minimum.
//
// Why: llama.cpp's KV cache (f16) and the next product's activation quantization round every result again, so a
// last-bit difference in one product becomes a rounding step elsewhere; on models with peaked logits this moved
// PPL by 0.1% where the same math in another order (dequantize + GEMM) was used.
#pragma once
#include <cstdint>

#include "edgeq/formats/ggml_types.h"
#include "edgeq/runtime/matmul.h"

namespace edgeq::runtime::ggml_order {

// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS and the lattice i-quants IQ1_S, IQ1_M,
// IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S (ggml_vec_dot_iq*_q8_K: the same 8 lanes, each type's constant factor
// after the sum, IQ1's delta terms fused in as GCC contracts them) (rows a whole number of blocks); F32 and
// F16 rows of a multiple of 8 values (tinyBLAS: 8 partial sums, value p in sum p mod 8, added as above; F16 with
// the activations rounded to f16).
bool supported(const Weight& w);

// y[t, o] = Σ_i x[t, i] · W[o, i], as llama.cpp computes it (activations rounded inside).
void matmul(const Weight& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy, ThreadPool& pool,
            MatmulScratch& scratch);

}  // namespace edgeq::runtime::ggml_order
