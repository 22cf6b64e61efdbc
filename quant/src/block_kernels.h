// Internal: the functions the block-ops table (block_ops.cpp) names. Dequantizers live in blocks_dequant.cpp
// (portable) and simd_dequant.cpp (AVX2+F16C), encoders in blocks_quantize.cpp.
#pragma once
#include <cstdint>

#include "edgeq/quant/block_layout.h"
#include "edgeq/quant/block_ops.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EDGEQ_QUANT_AVX2 1
#define EDGEQ_AVX2 __attribute__((target("avx2,f16c")))
#else
#define EDGEQ_QUANT_AVX2 0
#endif

namespace edgeq::quant::detail {
using namespace layout;

// The row of t when it can dequantize n elements; else throws edgeq::Error naming the type and problem.
const BlockOps& dequantizable_row(GgmlType t, int64_t n);

// Portable dequantizers: (src, dst, nblocks).
void deq_f32(const void* src, float* y, int64_t nb);
void deq_f16(const void* src, float* y, int64_t nb);
void deq_bf16(const void* src, float* y, int64_t nb);
void deq_q4_0(const void* src, float* y, int64_t nb);
void deq_q4_1(const void* src, float* y, int64_t nb);
void deq_q5_0(const void* src, float* y, int64_t nb);
void deq_q5_1(const void* src, float* y, int64_t nb);
void deq_q8_0(const void* src, float* y, int64_t nb);
void deq_q8_1(const void* src, float* y, int64_t nb);
void deq_q2_k(const void* src, float* y, int64_t nb);
void deq_q3_k(const void* src, float* y, int64_t nb);
void deq_q4_k(const void* src, float* y, int64_t nb);
void deq_q5_k(const void* src, float* y, int64_t nb);
void deq_q6_k(const void* src, float* y, int64_t nb);
void deq_q8_k(const void* src, float* y, int64_t nb);
void deq_iq4_nl(const void* src, float* y, int64_t nb);
void deq_iq4_xs(const void* src, float* y, int64_t nb);
void deq_tq1_0(const void* src, float* y, int64_t nb);
void deq_tq2_0(const void* src, float* y, int64_t nb);
// The lattice i-quants (iq_dequant.cpp).
void deq_iq2_xxs(const void* src, float* y, int64_t nb);
void deq_iq2_xs(const void* src, float* y, int64_t nb);
void deq_iq2_s(const void* src, float* y, int64_t nb);
void deq_iq3_xxs(const void* src, float* y, int64_t nb);
void deq_iq3_s(const void* src, float* y, int64_t nb);
void deq_iq1_s(const void* src, float* y, int64_t nb);
void deq_iq1_m(const void* src, float* y, int64_t nb);

#if EDGEQ_QUANT_AVX2
// AVX2+F16C dequantizers (dequantize_row takes them at edgeq/base/cpu.h's level Avx2 and above): same signature
// and bits as the portable ones.
EDGEQ_AVX2 void avx2_f16(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_bf16(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_q4_0(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_q4_1(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_q5_0(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_q5_1(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_q8_0(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_q2_k(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_q3_k(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_q4_k(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_q5_k(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_q6_k(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_iq4_nl(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_iq4_xs(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_iq2_xxs(const void* src, float* y, int64_t nb);  // the lattice i-quants: iq_dequant.cpp
EDGEQ_AVX2 void avx2_iq2_xs(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_iq2_s(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_iq3_xxs(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_iq3_s(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_iq1_s(const void* src, float* y, int64_t nb);
EDGEQ_AVX2 void avx2_iq1_m(const void* src, float* y, int64_t nb);
#define EDGEQ_SIMD(fn) fn
#else
#define EDGEQ_SIMD(fn) nullptr
#endif

// Plain-type encoders: (x, w ignored, dst, n elements).
// Per-element code writers (block_codes.cpp), the table's codes column.
void code_q4_0(void* block, int e, int code);
void code_q4_1(void* block, int e, int code);
void code_q5_0(void* block, int e, int code);
void code_q5_1(void* block, int e, int code);
void code_q8_0(void* block, int e, int code);
void code_q2_k(void* block, int e, int code);
void code_q3_k(void* block, int e, int code);
void code_q4_k(void* block, int e, int code);
void code_q5_k(void* block, int e, int code);
void code_q6_k(void* block, int e, int code);
void code_iq4_nl(void* block, int e, int code);
void code_iq4_xs(void* block, int e, int code);

void enc_f32(const float* x, const float* w, void* dst, int64_t nb);
void enc_f16(const float* x, const float* w, void* dst, int64_t nb);
void enc_bf16(const float* x, const float* w, void* dst, int64_t nb);

// Block encoders: one block of x with weights w (> 0) into dst.
void enc_q4_0(const float* x, const float* w, void* dst);
void enc_q4_1(const float* x, const float* w, void* dst);
void enc_q5_0(const float* x, const float* w, void* dst);
void enc_q5_1(const float* x, const float* w, void* dst);
void enc_q8_0(const float* x, const float* w, void* dst);
void enc_q8_1(const float* x, const float* w, void* dst);
void enc_q2_k(const float* x, const float* w, void* dst);
void enc_q3_k(const float* x, const float* w, void* dst);
void enc_q4_k(const float* x, const float* w, void* dst);
void enc_q5_k(const float* x, const float* w, void* dst);
void enc_q6_k(const float* x, const float* w, void* dst);
void enc_q8_k(const float* x, const float* w, void* dst);
void enc_iq4_nl(const float* x, const float* w, void* dst);
void enc_iq4_xs(const float* x, const float* w, void* dst);
void enc_tq1_0(const float* x, const float* w, void* dst);
void enc_tq2_0(const float* x, const float* w, void* dst);
// The lattice i-quants (iq_quantize.cpp).
void enc_iq2_xxs(const float* x, const float* w, void* dst);
void enc_iq2_xs(const float* x, const float* w, void* dst);
void enc_iq2_s(const float* x, const float* w, void* dst);
void enc_iq3_xxs(const float* x, const float* w, void* dst);
void enc_iq3_s(const float* x, const float* w, void* dst);
void enc_iq1_s(const float* x, const float* w, void* dst);
void enc_iq1_m(const float* x, const float* w, void* dst);

// A block encoder as an EncodeFn: nb consecutive blocks of Block (Block::qk elements each).
template <void (*Enc)(const float*, const float*, void*), typename Block>
void each_block(const float* x, const float* w, void* dst, int64_t nb) {
  auto* o = static_cast<Block*>(dst);
  for (int64_t b = 0; b < nb; ++b) Enc(x + b * Block::qk, w + b * Block::qk, o + b);
}

}  // namespace edgeq::quant::detail
