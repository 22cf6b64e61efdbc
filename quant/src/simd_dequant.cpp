// SIMD dequantizers (AVX2 + F16C, chosen at run time) for F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K,
// Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS.
// They compute exactly the scalar path's f32 operations (the same products and differences, no FMA), so
// results are bit-identical; tests compare both on random blocks and on the golden tensors.
#include <cstring>

#include "block_kernels.h"
#include "edgeq/base/cpu.h"
#include "edgeq/base/error.h"
#include "edgeq/quant/blocks.h"

#if EDGEQ_QUANT_AVX2
#include <immintrin.h>
#endif

namespace edgeq::quant {
using namespace detail;

#if EDGEQ_QUANT_AVX2
namespace detail {

EDGEQ_AVX2 inline __m256 u8x8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
EDGEQ_AVX2 inline __m256 i8x8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

EDGEQ_AVX2 void avx2_f16(const void* src, float* y, int64_t n) {
  auto* s = static_cast<const uint8_t*>(src);
  int64_t i = 0;
  const __m128i expmask = _mm_set1_epi16(0x7C00);
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2 * i));
    // Lanes with an all-ones exponent (Inf/NaN) take the scalar conversion (NaN payload handling).
    __m128i special = _mm_cmpeq_epi16(_mm_and_si128(h, expmask), expmask);
    if (_mm_movemask_epi8(special)) {
      dequantize_row_scalar(GgmlType::F16, s + 2 * i, y + i, 8);
      continue;
    }
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(h));
  }
  if (i < n) dequantize_row_scalar(GgmlType::F16, s + 2 * i, y + i, n - i);
}

EDGEQ_AVX2 void avx2_q8_0(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b[i].d));
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs + 16));
    _mm256_storeu_ps(y + 0, _mm256_mul_ps(d, i8x8_to_ps(q0)));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(q0, 8))));
    _mm256_storeu_ps(y + 16, _mm256_mul_ps(d, i8x8_to_ps(q1)));
    _mm256_storeu_ps(y + 24, _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(q1, 8))));
  }
}

EDGEQ_AVX2 void avx2_q4_0(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockQ4_0*>(src);
  const __m128i m4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b[i].d));
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(v, m4), eight);
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m4), eight);
    _mm256_storeu_ps(y + 0, _mm256_mul_ps(d, i8x8_to_ps(lo)));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(lo, 8))));
    _mm256_storeu_ps(y + 16, _mm256_mul_ps(d, i8x8_to_ps(hi)));
    _mm256_storeu_ps(y + 24, _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(hi, 8))));
  }
}

// y[0..32) = dl * q - ml for 32 unsigned byte levels in q.
EDGEQ_AVX2 inline void affine32(float* y, __m256 dl, __m256 ml, __m128i q0, __m128i q1) {
  _mm256_storeu_ps(y + 0, _mm256_sub_ps(_mm256_mul_ps(dl, u8x8_to_ps(q0)), ml));
  _mm256_storeu_ps(y + 8, _mm256_sub_ps(_mm256_mul_ps(dl, u8x8_to_ps(_mm_srli_si128(q0, 8))), ml));
  _mm256_storeu_ps(y + 16, _mm256_sub_ps(_mm256_mul_ps(dl, u8x8_to_ps(q1)), ml));
  _mm256_storeu_ps(y + 24, _mm256_sub_ps(_mm256_mul_ps(dl, u8x8_to_ps(_mm_srli_si128(q1, 8))), ml));
}

EDGEQ_AVX2 void avx2_q4_k(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockQ4_K*>(src);
  const __m128i m4 = _mm_set1_epi8(0x0F);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d), dmin = load_f16(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0; j < 8; j += 2, q += 32) {
      uint8_t sc, m;
      get_scale_min_k4(j, b[i].scales, &sc, &m);
      const __m256 d1 = _mm256_set1_ps(d * sc), m1 = _mm256_set1_ps(dmin * m);
      get_scale_min_k4(j + 1, b[i].scales, &sc, &m);
      const __m256 d2 = _mm256_set1_ps(d * sc), m2 = _mm256_set1_ps(dmin * m);
      const __m128i v0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
      const __m128i v1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
      affine32(y, d1, m1, _mm_and_si128(v0, m4), _mm_and_si128(v1, m4));
      y += 32;
      affine32(y, d2, m2, _mm_and_si128(_mm_srli_epi16(v0, 4), m4), _mm_and_si128(_mm_srli_epi16(v1, 4), m4));
      y += 32;
    }
  }
}

EDGEQ_AVX2 void avx2_q5_k(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockQ5_K*>(src);
  const __m128i m4 = _mm_set1_epi8(0x0F), zero = _mm_setzero_si128(), sixteen = _mm_set1_epi8(16);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d), dmin = load_f16(b[i].dmin);
    const uint8_t* q = b[i].qs;
    const __m128i h0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qh));
    const __m128i h1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qh + 16));
    for (int j = 0; j < 8; j += 2, q += 32) {
      uint8_t sc, m;
      get_scale_min_k4(j, b[i].scales, &sc, &m);
      const __m256 d1 = _mm256_set1_ps(d * sc), m1 = _mm256_set1_ps(dmin * m);
      get_scale_min_k4(j + 1, b[i].scales, &sc, &m);
      const __m256 d2 = _mm256_set1_ps(d * sc), m2 = _mm256_set1_ps(dmin * m);
      const __m128i u1 = _mm_set1_epi8(static_cast<char>(1 << j)), u2 = _mm_set1_epi8(static_cast<char>(2 << j));
      auto hb = [&](__m128i h, __m128i u) {  // 16 where the bit is set
        return _mm_andnot_si128(_mm_cmpeq_epi8(_mm_and_si128(h, u), zero), sixteen);
      };
      const __m128i v0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
      const __m128i v1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16));
      affine32(y, d1, m1, _mm_or_si128(_mm_and_si128(v0, m4), hb(h0, u1)),
               _mm_or_si128(_mm_and_si128(v1, m4), hb(h1, u1)));
      y += 32;
      affine32(y, d2, m2, _mm_or_si128(_mm_and_si128(_mm_srli_epi16(v0, 4), m4), hb(h0, u2)),
               _mm_or_si128(_mm_and_si128(_mm_srli_epi16(v1, 4), m4), hb(h1, u2)));
      y += 32;
    }
  }
}

EDGEQ_AVX2 void avx2_q6_k(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockQ6_K*>(src);
  const __m128i m4 = _mm_set1_epi8(0x0F), m2 = _mm_set1_epi8(3), off = _mm_set1_epi8(32);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = b[i].ql + 64 * half;
      const uint8_t* qh = b[i].qh + 32 * half;
      float* yy = y + 128 * half;
      for (int s = 0; s < 4; ++s) {  // 32 elements: ql nibble s/2 of ql[(s%2)*32 + l], qh bits 2s
        for (int k = 0; k < 2; ++k) {  // 16 elements each, one scale
          const int l0 = 16 * k;
          __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ql + (s % 2) * 32 + l0));
          if (s >= 2) lo = _mm_srli_epi16(lo, 4);
          lo = _mm_and_si128(lo, m4);
          __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + l0));
          hi = _mm_and_si128(_mm_srli_epi16(hi, 2 * s), m2);
          const __m128i qv = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), off);
          const int e0 = 32 * s + l0;
          const __m256 dl = _mm256_set1_ps(d * static_cast<float>(b[i].scales[(128 * half + e0) / 16]));
          _mm256_storeu_ps(yy + e0, _mm256_mul_ps(dl, i8x8_to_ps(qv)));
          _mm256_storeu_ps(yy + e0 + 8, _mm256_mul_ps(dl, i8x8_to_ps(_mm_srli_si128(qv, 8))));
        }
      }
    }
    y += QK_K;
  }
}

EDGEQ_AVX2 void avx2_bf16(const void* src, float* y, int64_t n) {
  auto* s = static_cast<const uint8_t*>(src);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {  // bf16 -> f32 is a pure bit move (h << 16), NaN payloads included
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2 * i));
    _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  }
  if (i < n) dequantize_row_scalar(GgmlType::BF16, s + 2 * i, y + i, n - i);
}

// y[0..16) = d * q for 16 signed byte levels in q.
EDGEQ_AVX2 inline void scale16(float* y, __m256 d, __m128i q) {
  _mm256_storeu_ps(y + 0, _mm256_mul_ps(d, i8x8_to_ps(q)));
  _mm256_storeu_ps(y + 8, _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(q, 8))));
}
// y[0..16) = (d * q) + m for 16 unsigned byte levels in q (Q4_1 / Q5_1: product first, then the min added).
EDGEQ_AVX2 inline void scale_add16(float* y, __m256 d, __m256 m, __m128i q) {
  _mm256_storeu_ps(y + 0, _mm256_add_ps(_mm256_mul_ps(d, u8x8_to_ps(q)), m));
  _mm256_storeu_ps(y + 8, _mm256_add_ps(_mm256_mul_ps(d, u8x8_to_ps(_mm_srli_si128(q, 8))), m));
}
// y[0..16) = (d * q) - m for 16 unsigned byte levels in q.
EDGEQ_AVX2 inline void affine16(float* y, __m256 d, __m256 m, __m128i q) {
  _mm256_storeu_ps(y + 0, _mm256_sub_ps(_mm256_mul_ps(d, u8x8_to_ps(q)), m));
  _mm256_storeu_ps(y + 8, _mm256_sub_ps(_mm256_mul_ps(d, u8x8_to_ps(_mm_srli_si128(q, 8))), m));
}

// Q5_0 / Q5_1 high bits: for the 32 bits of qh, 16 in the byte of element j where bit j is set (j < 16 in lo,
// j >= 16 in hi).
EDGEQ_AVX2 inline void q5_high_bits(const uint8_t* qh, __m128i* lo, __m128i* hi) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const __m128i v = _mm_cvtsi32_si128(static_cast<int>(bits));
  const __m128i sel_lo = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m128i sel_hi = _mm_setr_epi8(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m128i bit = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  const __m128i sixteen = _mm_set1_epi8(16);
  const __m128i blo = _mm_shuffle_epi8(v, sel_lo), bhi = _mm_shuffle_epi8(v, sel_hi);
  *lo = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(blo, bit), bit), sixteen);
  *hi = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(bhi, bit), bit), sixteen);
}

EDGEQ_AVX2 void avx2_q4_1(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockQ4_1*>(src);
  const __m128i m4 = _mm_set1_epi8(0x0F);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b[i].d)), m = _mm256_set1_ps(load_f16(b[i].m));
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    scale_add16(y, d, m, _mm_and_si128(v, m4));
    scale_add16(y + 16, d, m, _mm_and_si128(_mm_srli_epi16(v, 4), m4));
  }
}

EDGEQ_AVX2 void avx2_q5_0(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockQ5_0*>(src);
  const __m128i m4 = _mm_set1_epi8(0x0F), sixteen = _mm_set1_epi8(16);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b[i].d));
    __m128i hlo, hhi;
    q5_high_bits(b[i].qh, &hlo, &hhi);
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    scale16(y, d, _mm_sub_epi8(_mm_or_si128(_mm_and_si128(v, m4), hlo), sixteen));
    scale16(y + 16, d, _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(v, 4), m4), hhi), sixteen));
  }
}

EDGEQ_AVX2 void avx2_q5_1(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockQ5_1*>(src);
  const __m128i m4 = _mm_set1_epi8(0x0F);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(load_f16(b[i].d)), m = _mm256_set1_ps(load_f16(b[i].m));
    __m128i hlo, hhi;
    q5_high_bits(b[i].qh, &hlo, &hhi);
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    scale_add16(y, d, m, _mm_or_si128(_mm_and_si128(v, m4), hlo));
    scale_add16(y + 16, d, m, _mm_or_si128(_mm_and_si128(_mm_srli_epi16(v, 4), m4), hhi));
  }
}

EDGEQ_AVX2 void avx2_q2_k(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockQ2_K*>(src);
  const __m128i m2 = _mm_set1_epi8(3);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d), dmin = load_f16(b[i].dmin);
    const uint8_t* q = b[i].qs;
    int is = 0;
    for (int n = 0; n < QK_K; n += 128, q += 32) {
      const __m128i v[2] = {_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)),
                            _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16))};
      for (int shift = 0; shift < 8; shift += 2) {
        const __m128i sh = _mm_cvtsi32_si128(shift);
        for (int half = 0; half < 2; ++half, y += 16) {
          const uint8_t sc = b[i].scales[is++];
          const __m256 dl = _mm256_set1_ps(d * static_cast<float>(sc & 0xF));
          const __m256 ml = _mm256_set1_ps(dmin * static_cast<float>(sc >> 4));
          affine16(y, dl, ml, _mm_and_si128(_mm_srl_epi16(v[half], sh), m2));
        }
      }
    }
  }
}

EDGEQ_AVX2 void avx2_q3_k(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockQ3_K*>(src);
  const __m128i m2 = _mm_set1_epi8(3), four = _mm_set1_epi8(4);
  for (int64_t i = 0; i < nb; ++i, y += QK_K) {
    const float d = load_f16(b[i].d);
    float dl[16];  // d * scale per group of 16, exactly as the scalar path
    for (int g = 0; g < 16; ++g) dl[g] = d * static_cast<float>(q3k_scale(b[i].scales, g));
    const __m128i hm[2] = {_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].hmask)),
                           _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].hmask + 16))};
    for (int half = 0; half < 2; ++half) {
      const __m128i qs[2] = {_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs + 32 * half)),
                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs + 32 * half + 16))};
      for (int s = 0; s < 4; ++s) {  // group g = 8 * half + 2 * s + k: bits 2s of qs, hmask bit 4 * half + s
        const __m128i sh = _mm_cvtsi32_si128(2 * s);
        const __m128i u = _mm_set1_epi8(static_cast<char>(1 << (4 * half + s)));
        for (int k = 0; k < 2; ++k) {
          const int g = 8 * half + 2 * s + k;
          const __m128i lo = _mm_and_si128(_mm_srl_epi16(qs[k], sh), m2);
          const __m128i set = _mm_cmpeq_epi8(_mm_and_si128(hm[k], u), u);  // high bit set: subtract 0, else 4
          scale16(y + 16 * g, _mm256_set1_ps(dl[g]), _mm_sub_epi8(lo, _mm_andnot_si128(set, four)));
        }
      }
    }
  }
}

EDGEQ_AVX2 inline __m128i iq4nl_table() { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)); }

// y[0..32) = d * kvalues[q] for the 32 nibbles of 16 bytes (low nibbles first).
EDGEQ_AVX2 inline void iq4_32(float* y, __m256 d, __m128i tbl, const uint8_t* qs) {
  const __m128i m4 = _mm_set1_epi8(0x0F);
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  scale16(y, d, _mm_shuffle_epi8(tbl, _mm_and_si128(v, m4)));
  scale16(y + 16, d, _mm_shuffle_epi8(tbl, _mm_and_si128(_mm_srli_epi16(v, 4), m4)));
}

EDGEQ_AVX2 void avx2_iq4_nl(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockIQ4_NL*>(src);
  const __m128i tbl = iq4nl_table();
  for (int64_t i = 0; i < nb; ++i, y += 32) iq4_32(y, _mm256_set1_ps(load_f16(b[i].d)), tbl, b[i].qs);
}

EDGEQ_AVX2 void avx2_iq4_xs(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const BlockIQ4_XS*>(src);
  const __m128i tbl = iq4nl_table();
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    uint16_t sh;
    std::memcpy(&sh, &b[i].scales_h, 2);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      const int ls = ((b[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4);
      iq4_32(y, _mm256_set1_ps(d * static_cast<float>(ls - 32)), tbl, b[i].qs + 16 * ib);
    }
  }
}

}  // namespace detail
#endif

bool has_simd_dequantize(GgmlType t) {
  const BlockOps* ops = block_ops(t);
  return ops && ops->dequantize_simd;
}

const char* simd_target_name() {
#if EDGEQ_QUANT_AVX2
  return cpu::avx2() ? "AVX2+F16C" : "scalar";
#else
  return "scalar";
#endif
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  const BlockOps& ops = dequantizable_row(t, n);
  (ops.dequantize_simd && cpu::avx2() ? ops.dequantize_simd : ops.dequantize)(src, dst, n / ops.info->block_size);
}

}  // namespace edgeq::quant
