#include "ggml_order.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "edgeq/base/cpu.h"
#include "edgeq/base/half.h"
#include "edgeq/quant/block_layout.h"
#include "edgeq/quant/iq_grids.h"
#include "kernels.h"

namespace edgeq::runtime::ggml_order {
namespace {

namespace L = quant::layout;

// A k-quant block decoded to integers: value e is w[e] · sc of its 16 (sc[e / 32][(e % 32) / 2]: the scale of
// each pair of values as _mm256_madd_epi16 takes it), plus the type's minimums (Q2_K: one per 16 values; Q4_K,
// Q5_K: one per 32 in mins[0, 8)) and the block's two fp16 scales, widened.
struct KBlock {
  int8_t w[256];
  int16_t sc[8][16];
  int16_t mins[16];
  float d, dmin;
};
// IQ1_M: also the sign of each value's delta (+-1), which llama.cpp multiplies with the activations and the same
// scales in a second set of lanes.
struct KBlock2 : KBlock {
  int8_t w2[256];
};
template <GgmlType M>
using KB = std::conditional_t<M == GgmlType::IQ1_M, KBlock2, KBlock>;
// A 32-value block (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL): the integer values and the scale (and Q4_1/Q5_1's
// minimum), widened.
struct Q8Block {
  int8_t w[32];
  float d, m;
};

// The decoders, one per type (the type table below names them): a block of the file's bytes into the integers
// and scales the products take.
int nib(const uint8_t* qs, int j) { return j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4; }
Q8Block& q8_out(void* out) {
  auto& o = *static_cast<Q8Block*>(out);
  o.m = 0.f;
  return o;
}
void dec_q8_0(const uint8_t* src, void* out) {
  Q8Block& o = q8_out(out);
  const auto& b = *reinterpret_cast<const L::BlockQ8_0*>(src);
  std::memcpy(o.w, b.qs, 32);
  o.d = L::load_f16(b.d);
}
void dec_q4_0(const uint8_t* src, void* out) {
  Q8Block& o = q8_out(out);
  const auto& b = *reinterpret_cast<const L::BlockQ4_0*>(src);
  for (int j = 0; j < 32; ++j) o.w[j] = static_cast<int8_t>(nib(b.qs, j) - 8);
  o.d = L::load_f16(b.d);
}
void dec_q4_1(const uint8_t* src, void* out) {
  Q8Block& o = q8_out(out);
  const auto& b = *reinterpret_cast<const L::BlockQ4_1*>(src);
  for (int j = 0; j < 32; ++j) o.w[j] = static_cast<int8_t>(nib(b.qs, j));
  o.d = L::load_f16(b.d), o.m = L::load_f16(b.m);
}
template <bool q51>
void dec_q5(const uint8_t* src, void* out) {
  Q8Block& o = q8_out(out);
  const uint8_t* qs = q51 ? reinterpret_cast<const L::BlockQ5_1*>(src)->qs : reinterpret_cast<const L::BlockQ5_0*>(src)->qs;
  const uint8_t* qhp = q51 ? reinterpret_cast<const L::BlockQ5_1*>(src)->qh : reinterpret_cast<const L::BlockQ5_0*>(src)->qh;
  uint32_t qh;
  std::memcpy(&qh, qhp, 4);
  for (int j = 0; j < 32; ++j) o.w[j] = static_cast<int8_t>((nib(qs, j) | (((qh >> j) & 1) << 4)) - (q51 ? 0 : 16));
  if (q51) {
    const auto& b = *reinterpret_cast<const L::BlockQ5_1*>(src);
    o.d = L::load_f16(b.d), o.m = L::load_f16(b.m);
  } else {
    o.d = L::load_f16(reinterpret_cast<const L::BlockQ5_0*>(src)->d);
  }
}
void dec_iq4_nl(const uint8_t* src, void* out) {
  Q8Block& o = q8_out(out);
  const auto& b = *reinterpret_cast<const L::BlockIQ4_NL*>(src);
  for (int j = 0; j < 32; ++j) o.w[j] = L::kIq4nlValues[nib(b.qs, j)];
  o.d = L::load_f16(b.d);
}

void set_sc(KBlock& b, int g16, int v) {  // the scale of values [16·g16, 16·g16 + 16)
  for (int k = 0; k < 8; ++k) b.sc[g16 / 2][(g16 % 2) * 8 + k] = static_cast<int16_t>(v);
}

// The lattice i-quants as their AVX2 dot products take them (ggml_vec_dot_iq*_q8_K): each value the signed grid
// value, each pair of values its odd scale 2 s + 1 (kernels::decode_lattice's decoding), d the block's fp16 scale;
// IQ1_S's delta terms as a minimum per 32 values (+-(2 s + 1), times the activations' sums), IQ1_M's as w2 (+-1 per
// value). Each type's constant factor (1/8, 1/4, the delta 1/8) is applied at the end.
void decode_iq(GgmlType t, const uint8_t* src, KBlock& o) {
  int8_t q[256];
  int16_t s[16];
  if (!kernels::decode_lattice(t, src, q, s)) return;
  for (int g = 0; g < 16; ++g) set_sc(o, g, s[g]);
  if (t == GgmlType::IQ1_M) {
    uint16_t sc[4];
    L::iq1m_words(*reinterpret_cast<const L::BlockIQ1_M*>(src), sc);
    o.d = f16_to_f32(L::iq1m_d_bits(sc));
  } else {  // every other lattice block starts with its fp16 d
    uint16_t d;
    std::memcpy(&d, src, 2);
    o.d = L::load_f16(d);
  }
  if (t != GgmlType::IQ1_S && t != GgmlType::IQ1_M) {
    std::memcpy(o.w, q, 256);
    return;
  }
  // IQ1: q = 8 g + delta with g in {-1, 0, 1} and delta = +-1: split into the grid value and the delta's sign.
  for (int e = 0; e < 256; ++e) {
    const int g = (q[e] > 4) - (q[e] < -4);
    o.w[e] = static_cast<int8_t>(g);
    if (t == GgmlType::IQ1_M) static_cast<KBlock2&>(o).w2[e] = static_cast<int8_t>(q[e] - 8 * g);
  }
  if (t == GgmlType::IQ1_S)  // one delta sign per 32 values
    for (int ib = 0; ib < 8; ++ib) o.mins[ib] = static_cast<int16_t>((q[32 * ib] - 8 * o.w[32 * ib]) * s[2 * ib]);
}

KBlock& k_out(void* out) {
  auto& o = *static_cast<KBlock*>(out);
  std::memset(o.mins, 0, sizeof o.mins);
  o.dmin = 0.f;
  return o;
}
void dec_q2_k(const uint8_t* src, void* out) {
  KBlock& o = k_out(out);
  const auto& b = *reinterpret_cast<const L::BlockQ2_K*>(src);
  o.d = L::load_f16(b.d), o.dmin = L::load_f16(b.dmin);
  for (int e = 0; e < 256; ++e) {
    const int n = e / 128, j = (e % 128) / 32, l = e % 32;
    o.w[e] = static_cast<int8_t>((b.qs[32 * n + l] >> (2 * j)) & 3);
  }
  for (int g = 0; g < 16; ++g) {
    set_sc(o, g, b.scales[g] & 0xF);
    o.mins[g] = static_cast<int16_t>(b.scales[g] >> 4);
  }
}
void dec_q3_k(const uint8_t* src, void* out) {
  KBlock& o = k_out(out);
  const auto& b = *reinterpret_cast<const L::BlockQ3_K*>(src);
  o.d = L::load_f16(b.d);
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, s = (e % 128) / 32, l = e % 32, bit = e / 32;
    o.w[e] = static_cast<int8_t>(((b.qs[half * 32 + l] >> (2 * s)) & 3) - (((b.hmask[l] >> bit) & 1) ? 0 : 4));
  }
  for (int g = 0; g < 16; ++g) set_sc(o, g, L::q3k_scale(b.scales, g));
}
template <bool q5>
void dec_q45_k(const uint8_t* src, void* out) {
  KBlock& o = k_out(out);
  const uint8_t* scales = q5 ? reinterpret_cast<const L::BlockQ5_K*>(src)->scales : reinterpret_cast<const L::BlockQ4_K*>(src)->scales;
  const uint8_t* qs = q5 ? reinterpret_cast<const L::BlockQ5_K*>(src)->qs : reinterpret_cast<const L::BlockQ4_K*>(src)->qs;
  const uint8_t* qh = q5 ? reinterpret_cast<const L::BlockQ5_K*>(src)->qh : nullptr;
  const uint16_t d = q5 ? reinterpret_cast<const L::BlockQ5_K*>(src)->d : reinterpret_cast<const L::BlockQ4_K*>(src)->d;
  const uint16_t dm = q5 ? reinterpret_cast<const L::BlockQ5_K*>(src)->dmin : reinterpret_cast<const L::BlockQ4_K*>(src)->dmin;
  o.d = L::load_f16(d), o.dmin = L::load_f16(dm);
  for (int j = 0; j < 8; ++j) {  // 32 values each
    uint8_t sc, m;
    L::get_scale_min_k4(j, scales, &sc, &m);
    set_sc(o, 2 * j, sc);
    set_sc(o, 2 * j + 1, sc);
    o.mins[j] = m;
    for (int l = 0; l < 32; ++l) {
      const uint8_t q = qs[32 * (j / 2) + l];
      int v = j % 2 ? q >> 4 : q & 0xF;
      if (q5 && ((qh[l] >> j) & 1)) v += 16;
      o.w[32 * j + l] = static_cast<int8_t>(v);
    }
  }
}
void dec_q6_k(const uint8_t* src, void* out) {
  KBlock& o = k_out(out);
  const auto& b = *reinterpret_cast<const L::BlockQ6_K*>(src);
  o.d = L::load_f16(b.d);
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, r0 = e % 128, hi = r0 / 64, s = r0 / 32, l = e % 32;
    const uint8_t ql = b.ql[half * 64 + r0 % 64], qh = b.qh[half * 32 + l];
    o.w[e] = static_cast<int8_t>((((ql >> (4 * hi)) & 0xF) | (((qh >> (2 * s)) & 3) << 4)) - 32);
  }
  for (int g = 0; g < 16; ++g) set_sc(o, g, b.scales[g]);
}
// ggml_vec_dot_iq4_xs_q8_K: the table values, a signed 6-bit scale per 32
void dec_iq4_xs(const uint8_t* src, void* out) {
  KBlock& o = k_out(out);
  const auto& b = *reinterpret_cast<const L::BlockIQ4_XS*>(src);
  o.d = L::load_f16(b.d);
  int16_t ls[8];
  kernels::iq4_xs_block_scales(src, ls);
  for (int ib = 0; ib < 8; ++ib) {
    set_sc(o, 2 * ib, ls[ib]), set_sc(o, 2 * ib + 1, ls[ib]);
    for (int j = 0; j < 16; ++j) {
      o.w[32 * ib + j] = L::kIq4nlValues[b.qs[16 * ib + j] & 0xF];
      o.w[32 * ib + 16 + j] = L::kIq4nlValues[b.qs[16 * ib + j] >> 4];
    }
  }
}
template <GgmlType T>
void dec_iq(const uint8_t* src, void* out) { decode_iq(T, src, k_out(out)); }

inline float tree8(const float* a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }
inline int q8s(const kernels::ActQ8_K& a, int k) {  // the sum of the 32 activations of sub-block k
  return a.bsums[2 * k] + a.bsums[2 * k + 1];
}

// The definition (any CPU); the SIMD tile kernels (ggml_order_dots.inc) perform the same operations.
// A type's constant factor, applied to the final sum (ggml: 0.125f * hsum_float_8(acc) for IQ2_*, 0.25f for
// IQ3_XXS; IQ1's delta 1/8 is applied to its own terms; 1 elsewhere: an exact multiplication).
constexpr float final_factor(GgmlType t) {
  return t == GgmlType::IQ2_XXS || t == GgmlType::IQ2_XS || t == GgmlType::IQ2_S ? 0.125f
         : t == GgmlType::IQ3_XXS                                               ? 0.25f
                                                                                : 1.f;
}

template <class B>
float dot_k(GgmlType t, const B* b, const kernels::ActQ8_K* a, int64_t nb) {
  constexpr bool kW2 = std::is_same_v<B, KBlock2>;
  float acc[8] = {}, acc2[8] = {}, accm[4] = {}, summs = 0.f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t s[8] = {}, s2[8] = {};
    for (int e = 0; e < 256; ++e) s[(e % 32) / 4] += b[i].sc[e / 32][(e % 32) / 2] * b[i].w[e] * a[i].qs[e];
    if constexpr (kW2)
      for (int e = 0; e < 256; ++e) s2[(e % 32) / 4] += b[i].sc[e / 32][(e % 32) / 2] * b[i].w2[e] * a[i].qs[e];
    const float d = a[i].d * b[i].d, dmin = -a[i].d * b[i].dmin;
    if (t == GgmlType::Q2_K)
      for (int l = 0; l < 8; ++l)
        acc[l] = std::fma(dmin, static_cast<float>(b[i].mins[2 * l] * a[i].bsums[2 * l] + b[i].mins[2 * l + 1] * a[i].bsums[2 * l + 1]), acc[l]);
    if (t == GgmlType::Q4_K)
      for (int m = 0; m < 4; ++m)
        accm[m] = std::fma(dmin, static_cast<float>(b[i].mins[2 * m] * q8s(a[i], 2 * m) + b[i].mins[2 * m + 1] * q8s(a[i], 2 * m + 1)), accm[m]);
    if (t == GgmlType::Q5_K || t == GgmlType::IQ1_S) {  // Q5_K: its minimums; IQ1_S: its deltas (times d)
      int tot = 0;
      for (int k = 0; k < 8; ++k) tot += b[i].mins[k] * q8s(a[i], k);
      summs = std::fma(t == GgmlType::IQ1_S ? d : dmin, static_cast<float>(tot), summs);
    }
    for (int l = 0; l < 8; ++l) acc[l] = std::fma(d, static_cast<float>(s[l]), acc[l]);
    if constexpr (kW2)
      for (int l = 0; l < 8; ++l) acc2[l] = std::fma(d, static_cast<float>(s2[l]), acc2[l]);
  }
  float r = tree8(acc);
  if (t == GgmlType::Q4_K) r += (accm[0] + accm[2]) + (accm[1] + accm[3]);
  if (t == GgmlType::Q5_K) r += summs;
  if (t == GgmlType::IQ1_S) r = std::fma(L::kIq1Delta, summs, r);
  if constexpr (kW2) r = std::fma(L::kIq1Delta, tree8(acc2), r);
  return final_factor(t) * r;
}

// The float part of dot_k for one block and one token, given the block's 8 exact integer lane sums s (and, for
// IQ1_M, s2: its deltas' lanes): what every SIMD level performs after forming them. M: the type (its minimum term,
// deltas and final factor).
struct KAcc {
  __m256 acc, acc2;  // the lanes; IQ1_M's delta lanes
  __m128 accm;       // Q4_K's minimum lanes
  float summs;       // Q5_K's minimum, IQ1_S's delta
};
template <GgmlType M>
__attribute__((target("avx2,fma"), always_inline)) inline void kfloat(const KB<M>& b, const kernels::ActQ8_K& ak,
                                                                      __m256i s, __m256i s2, KAcc& st) {
  const float d = ak.d * b.d, dmin = -ak.d * b.dmin;
  if constexpr (M == GgmlType::Q2_K) {
    const __m256i prod = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.mins)),
                                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ak.bsums)));
    st.acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), st.acc);
  }
  if constexpr (M == GgmlType::Q4_K || M == GgmlType::Q5_K || M == GgmlType::IQ1_S) {
    const __m128i q8 = _mm_hadd_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ak.bsums)),
                                      _mm_loadu_si128(reinterpret_cast<const __m128i*>(ak.bsums + 8)));
    const __m128i prod = _mm_madd_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.mins)), q8);
    if constexpr (M == GgmlType::Q4_K) {
      st.accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), st.accm);
    } else {
      const __m128i h = _mm_hadd_epi32(_mm_hadd_epi32(prod, _mm_setzero_si128()), _mm_setzero_si128());
      st.summs = std::fma(M == GgmlType::IQ1_S ? d : dmin, static_cast<float>(_mm_cvtsi128_si32(h)), st.summs);
    }
  }
  st.acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), st.acc);
  if constexpr (M == GgmlType::IQ1_M) st.acc2 = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s2), st.acc2);
}

template <GgmlType M>
__attribute__((target("avx2,fma"), always_inline)) inline float kfinish(const KAcc& st) {
  alignas(32) float l[8];
  _mm256_store_ps(l, st.acc);
  float r = tree8(l);
  if constexpr (M == GgmlType::Q4_K) {
    alignas(16) float m[4];
    _mm_store_ps(m, st.accm);
    r += (m[0] + m[2]) + (m[1] + m[3]);
  }
  if constexpr (M == GgmlType::Q5_K) r += st.summs;
  if constexpr (M == GgmlType::IQ1_S) r = std::fma(L::kIq1Delta, st.summs, r);
  if constexpr (M == GgmlType::IQ1_M) {
    _mm256_store_ps(l, st.acc2);
    r = std::fma(L::kIq1Delta, tree8(l), r);
  }
  return final_factor(M) * r;
}

// 32-value blocks: the scale product xd·yd (tinyBLAS: unhalf(A.d)·unhalf(B.d); vec_dot: the same product) times
// the 8 lanes; Q4_1/Q5_1 add xm·ys into one running float (summs += m·s, contracted) and it after the lanes.
// qfloat: that float part for one block and one token, given its 8 exact integer lane sums s.
template <bool kMins>
__attribute__((target("avx2,fma"), always_inline)) inline void qfloat(const Q8Block& b, const kernels::ActQ8_0& a,
                                                                      __m256i s, __m256& acc, float& summs) {
  if constexpr (kMins) summs = std::fma(b.m, a.s, summs);
  acc = _mm256_fmadd_ps(_mm256_set1_ps(b.d * a.d), _mm256_cvtepi32_ps(s), acc);
}

// The tile kernels once over the SIMD level: ggml_order_dots.inc holds dot_k_n and dot_q8_n, written with the
// integer operations each level defines here. Only how the exact integer lane sums are formed differs; every
// level then performs the same float operations (kfloat, qfloat), so all give the same bits.
namespace avx2 {
#define GO_FN __attribute__((target("avx2,fma")))
#define GO_OP GO_FN __attribute__((always_inline)) inline
using VI = __m256i;
constexpr int kC = 32;  // weight bytes per integer step of a k-quant block
GO_OP VI zero() { return _mm256_setzero_si256(); }
GO_OP VI loadi(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
// |w| and y with w's sign (_mm256_sign_epi8; 0 where w = 0, which |w| = 0 makes irrelevant).
GO_OP VI absw(VI w) { return _mm256_sign_epi8(w, w); }
GO_OP VI signed_y(VI y, VI w) { return _mm256_sign_epi8(y, w); }
// acc + sc · (pair sums of |w| · y): the k-quants' per-16-value scale applied (vpmaddubsw, vpmaddwd, vpaddd).
GO_OP VI dot_sc(VI acc, VI sc, VI aw, VI y) { return _mm256_add_epi32(acc, _mm256_madd_epi16(sc, _mm256_maddubs_epi16(aw, y))); }
GO_OP __m256i fold(VI s) { return s; }  // the 8 lane sums
// 32-value blocks (one 256-bit register each): the 8 sums of 4 products.
GO_OP __m256i absw32(__m256i w) { return _mm256_sign_epi8(w, w); }
GO_OP __m256i signed_y32(__m256i y, __m256i w) { return _mm256_sign_epi8(y, w); }
GO_OP __m256i dot4(__m256i aw, __m256i y) { return _mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16(aw, y)); }
#include "ggml_order_dots.inc"
#undef GO_OP
#undef GO_FN
}  // namespace avx2

// AVX-512 BW + VNNI: 64 weight bytes per step, the scale applied and accumulated by one vpdpwssd, and the two
// halves' 8 lanes added lane by lane into AVX2's 8 lane sums (exact integers: the same s); the 32-value blocks'
// sums of 4 by one vpdpbusd, which maddubs never saturates here (|w| <= 128, |y| <= 128). The sign moves to y
// by a masked negation where w < 0 (as _mm256_sign_epi8; w = 0 contributes 0 either way).
// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(), which -Wuninitialized flags.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace avx512 {
#define GO_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define GO_OP GO_FN __attribute__((always_inline)) inline
using VI = __m512i;
constexpr int kC = 64;
GO_OP VI zero() { return _mm512_setzero_si512(); }
GO_OP VI loadi(const void* p) { return _mm512_loadu_si512(p); }
GO_OP VI absw(VI w) { return _mm512_abs_epi8(w); }
GO_OP VI signed_y(VI y, VI w) { return _mm512_mask_sub_epi8(y, _mm512_movepi8_mask(w), _mm512_setzero_si512(), y); }
GO_OP VI dot_sc(VI acc, VI sc, VI aw, VI y) { return _mm512_dpwssd_epi32(acc, sc, _mm512_maddubs_epi16(aw, y)); }
GO_OP __m256i fold(VI s) { return _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1)); }
GO_OP __m256i absw32(__m256i w) { return _mm256_abs_epi8(w); }
GO_OP __m256i signed_y32(__m256i y, __m256i w) {
  return _mm256_mask_sub_epi8(y, _mm256_movepi8_mask(w), _mm256_setzero_si256(), y);
}
GO_OP __m256i dot4(__m256i aw, __m256i y) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, y); }
#include "ggml_order_dots.inc"
#undef GO_OP
#undef GO_FN
}  // namespace avx512
#pragma GCC diagnostic pop

// The kernel for T tokens of one decoded row (dec: KBlock or Q8Block[nb]; acts: T activation rows).
using DotT = void (*)(const void* dec, const void* const* acts, int64_t nb, float* out);
template <auto F, class B, class A>
void as_dot_t(const void* dec, const void* const* acts, int64_t nb, float* out) {
  F(static_cast<const B*>(dec), reinterpret_cast<const A* const*>(acts), nb, out);
}

// The tile kernels for a type: T tokens per call (tokens[0]) and 1 (tokens[1], the batch's last few), or none
// without AVX2 (the portable definitions then run).
struct TileKernels {
  DotT tokens[2] = {nullptr, nullptr};
  int t = 1;
};
template <int T, GgmlType M, bool kSigned>
TileKernels k_tiles(bool vnni) {
  using A = kernels::ActQ8_K;
  if (vnni) return {{as_dot_t<avx512::dot_k_n<M, kSigned, T>, KB<M>, A>, as_dot_t<avx512::dot_k_n<M, kSigned, 1>, KB<M>, A>}, T};
  return {{as_dot_t<avx2::dot_k_n<M, kSigned, T>, KB<M>, A>, as_dot_t<avx2::dot_k_n<M, kSigned, 1>, KB<M>, A>}, T};
}
template <int T, bool kMins>
TileKernels q8_tiles(bool vnni) {
  using A = kernels::ActQ8_0;
  if (vnni) return {{as_dot_t<avx512::dot_q8_n<kMins, T>, Q8Block, A>, as_dot_t<avx512::dot_q8_n<kMins, 1>, Q8Block, A>}, T};
  return {{as_dot_t<avx2::dot_q8_n<kMins, T>, Q8Block, A>, as_dot_t<avx2::dot_q8_n<kMins, 1>, Q8Block, A>}, T};
}
// AVX2: 4 tokens (its 16 registers); AVX-512: 8 (32 registers), enough independent accumulators to hide the
// latency of the per-block fused multiply-add chain. F: the type's family (the type table below).
template <int T, GgmlType F>
TileKernels family_tiles_t(bool vnni) {
  if constexpr (F == GgmlType::Q8_0 || F == GgmlType::Q4_1) {
    return q8_tiles<T, F == GgmlType::Q4_1>(vnni);
  } else {  // unsigned values with minimums (Q2_K, Q4_K, Q5_K) or signed ones
    return k_tiles<T, F, !(F == GgmlType::Q2_K || F == GgmlType::Q4_K || F == GgmlType::Q5_K)>(vnni);
  }
}
template <GgmlType F>
TileKernels family_tiles() {
  if (!cpu::avx2()) return {};
  return cpu::avx512_vnni() ? family_tiles_t<8, F>(true) : family_tiles_t<4, F>(false);
}

float dot_q8(bool mins, const Q8Block* b, const kernels::ActQ8_0* a, int64_t nb) {
  float acc[8] = {}, summs = 0.f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t s[8] = {};
    for (int e = 0; e < 32; ++e) s[e / 4] += b[i].w[e] * a[i].qs[e];
    if (mins) summs = std::fma(b[i].m, a[i].s, summs);
    const float d = b[i].d * a[i].d;
    for (int l = 0; l < 8; ++l) acc[l] = std::fma(d, static_cast<float>(s[l]), acc[l]);
  }
  return mins ? tree8(acc) + summs : tree8(acc);
}

// The weight types whose products this file reproduces, one row each: the decoder of its blocks and its family,
// the arithmetic its products share with other types (the kernels' template parameter): Q8_0 (32-value blocks,
// Q8_0 activations), Q4_1 (the same with a minimum), Q2_K, Q4_K, Q5_K (unsigned values with minimums), Q6_K
// (signed values, no minimum, factor 1), IQ2_XXS (factor 1/8), IQ3_XXS (1/4), IQ1_S (deltas as minimums),
// IQ1_M (deltas in second lanes). Nothing else in this file names a block type.
struct TypeRow {
  GgmlType type, family;
  void (*decode)(const uint8_t* src, void* out);  // one block into a Q8Block, KBlock or KBlock2 (the family's)
  TileKernels (*tiles)();                          // the family's SIMD tile kernels (none without AVX2)
  bool q8() const { return family == GgmlType::Q8_0 || family == GgmlType::Q4_1; }
  bool mins() const { return family == GgmlType::Q4_1; }
  bool w2() const { return family == GgmlType::IQ1_M; }
  size_t decoded_bytes() const { return q8() ? sizeof(Q8Block) : w2() ? sizeof(KBlock2) : sizeof(KBlock); }
};
template <GgmlType F>
constexpr TypeRow row(GgmlType t, void (*decode)(const uint8_t*, void*)) {
  return {t, F, decode, family_tiles<F>};
}
using G = GgmlType;
const TypeRow kTypes[] = {
    row<G::Q8_0>(G::Q8_0, dec_q8_0),         row<G::Q8_0>(G::Q4_0, dec_q4_0),
    row<G::Q4_1>(G::Q4_1, dec_q4_1),         row<G::Q8_0>(G::Q5_0, dec_q5<false>),
    row<G::Q4_1>(G::Q5_1, dec_q5<true>),     row<G::Q8_0>(G::IQ4_NL, dec_iq4_nl),
    row<G::Q2_K>(G::Q2_K, dec_q2_k),         row<G::Q6_K>(G::Q3_K, dec_q3_k),
    row<G::Q4_K>(G::Q4_K, dec_q45_k<false>), row<G::Q5_K>(G::Q5_K, dec_q45_k<true>),
    row<G::Q6_K>(G::Q6_K, dec_q6_k),         row<G::Q6_K>(G::IQ4_XS, dec_iq4_xs),
    row<G::IQ2_XXS>(G::IQ2_XXS, dec_iq<G::IQ2_XXS>), row<G::IQ2_XXS>(G::IQ2_XS, dec_iq<G::IQ2_XS>),
    row<G::IQ2_XXS>(G::IQ2_S, dec_iq<G::IQ2_S>),     row<G::IQ3_XXS>(G::IQ3_XXS, dec_iq<G::IQ3_XXS>),
    row<G::Q6_K>(G::IQ3_S, dec_iq<G::IQ3_S>),        row<G::IQ1_S>(G::IQ1_S, dec_iq<G::IQ1_S>),
    row<G::IQ1_M>(G::IQ1_M, dec_iq<G::IQ1_M>),
};
const TypeRow* type_row(GgmlType t) {
  for (const TypeRow& r : kTypes)
    if (r.type == t) return &r;
  return nullptr;
}

// F32 and F16 rows: tinyBLAS's order (k % 8 == 0): value p in partial sum p mod 8, fused multiply-adds in order
// of p, the partial sums added as tree8; F16 multiplies f16 activations (round_f16 before).
float dot_f(bool f16, const uint8_t* w, const float* x, int64_t n) {
  float acc[8] = {};
  for (int64_t p = 0; p < n; ++p) {
    const float wv = f16 ? f16_to_f32(reinterpret_cast<const uint16_t*>(w)[p]) : reinterpret_cast<const float*>(w)[p];
    acc[p % 8] = std::fma(wv, x[p], acc[p % 8]);
  }
  return tree8(acc);
}
// llama.cpp's F32/F16 product order (tinyBLAS): per output one accumulator, one fused multiply-add per 8 lanes
// along the row, then tree8. R rows x T tokens at once, each output keeping its own accumulator, so every result
// is the same whatever the tile; the tile only reuses each loaded weight and activation vector, as tinyBLAS's
// register blocking does.
template <int R, int T>
__attribute__((target("avx2,fma,f16c"))) void dot_f_tile_avx2(bool f16, const uint8_t* const* w, const float* const* x,
                                                             int64_t n, float* out /* [R][T] */) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  for (int64_t p = 0; p < n; p += 8) {
    __m256 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(x[t] + p);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = f16 ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r] + 2 * p)))
                            : _mm256_loadu_ps(reinterpret_cast<const float*>(w[r]) + p);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  alignas(32) float l[8];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) {
      _mm256_store_ps(l, acc[r][t]);
      out[r * T + t] = tree8(l);
    }
}

__attribute__((target("avx2,fma,f16c"))) float dot_f_avx2(bool f16, const uint8_t* w, const float* x, int64_t n) {
  float o;
  dot_f_tile_avx2<1, 1>(f16, &w, &x, n, &o);
  return o;
}

constexpr int64_t kRows = 16;  // weight rows decoded per task

}  // namespace

bool supported(const Weight& w) {
  if (w.palette) return false;
  const int64_t in = static_cast<int64_t>(w.dims[0]);
  if (w.type == GgmlType::F32 || w.type == GgmlType::F16) return in % 8 == 0;
  const TypeRow* r = type_row(w.type);
  return r && in % (r->q8() ? 32 : 256) == 0;
}

void matmul(const Weight& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy, ThreadPool& pool,
            MatmulScratch& scratch) {
  const int64_t in = static_cast<int64_t>(w.dims[0]), out = static_cast<int64_t>(w.n_rows());
  const bool simd = cpu::avx2();
  if (w.type == GgmlType::F32 || w.type == GgmlType::F16) {
    const bool f16 = w.type == GgmlType::F16;
    const float* xs = x;
    int64_t ld = ldx;
    if (f16) {  // llama.cpp converts the activations to the weights' f16
      ld = act_stride(in);
      scratch.xr.resize(static_cast<size_t>(n_tokens * ld));
      pool.run(n_tokens, [&](int64_t t, int) {
        std::memcpy(scratch.xr.data() + t * ld, x + t * ldx, static_cast<size_t>(in) * sizeof(float));
        round_f16(scratch.xr.data() + t * ld, in);
      });
      xs = scratch.xr.data();
    }
    const uint64_t rb = w.row_bytes();
    pool.run((out + kRows - 1) / kRows, [&](int64_t task, int) {
      const int64_t r0 = task * kRows, r1 = std::min(out, r0 + kRows);
      int64_t t0 = 0;
      if (simd) {  // whole tiles of 4 rows x 3 tokens; the edges below, one output at a time
        constexpr int kR = 4, kT = 3;
        for (; t0 + kT <= n_tokens; t0 += kT) {
          const float* xt[kT];
          for (int t = 0; t < kT; ++t) xt[t] = xs + (t0 + t) * ld;
          int64_t r = r0;
          for (; r + kR <= r1; r += kR) {
            const uint8_t* wr[kR];
            for (int k = 0; k < kR; ++k) wr[k] = w.data + static_cast<uint64_t>(r + k) * rb;
            float o[kR * kT];
            dot_f_tile_avx2<kR, kT>(f16, wr, xt, in, o);
            for (int k = 0; k < kR; ++k)
              for (int t = 0; t < kT; ++t) y[(t0 + t) * ldy + r + k] = o[k * kT + t];
          }
          for (; r < r1; ++r)
            for (int t = 0; t < kT; ++t)
              y[(t0 + t) * ldy + r] = dot_f_avx2(f16, w.data + static_cast<uint64_t>(r) * rb, xt[t], in);
        }
      }
      for (int64_t t = t0; t < n_tokens; ++t)
        for (int64_t r = r0; r < r1; ++r) {
          const uint8_t* wr = w.data + static_cast<uint64_t>(r) * rb;
          y[t * ldy + r] = simd ? dot_f_avx2(f16, wr, xs + t * ld, in) : dot_f(f16, wr, xs + t * ld, in);
        }
    });
    return;
  }
  const TypeRow& tr = *type_row(w.type);
  const bool q8 = tr.q8(), mins = tr.mins();
  const ActRounding ar = q8 ? ActRounding::Q8_0 : ActRounding::Q8_K;
  const size_t arb = kernels::act_row_bytes(ar, in);
  scratch.xq.resize(static_cast<size_t>(n_tokens) * arb);
  pool.run(n_tokens, [&](int64_t t, int) { kernels::quantize_act(ar, x + t * ldx, scratch.xq.data() + t * arb, in); });
  const int64_t nb = in / (q8 ? 32 : 256);
  const bool w2 = tr.w2();  // decoded as KBlock2
  const size_t dec_block = tr.decoded_bytes();
  const size_t dec_row = static_cast<size_t>(nb) * dec_block;
  const uint64_t rb = w.row_bytes(), bb = rb / static_cast<uint64_t>(nb);
  if (static_cast<int>(scratch.tiles.size()) < pool.size()) scratch.tiles.resize(pool.size());
  pool.run((out + kRows - 1) / kRows, [&](int64_t task, int worker) {
    const int64_t r0 = task * kRows, r1 = std::min(out, r0 + kRows);
    auto& buf = scratch.tiles[worker];  // the decoded rows (float storage: 4-byte aligned)
    buf.resize((static_cast<size_t>(r1 - r0) * dec_row + sizeof(float) - 1) / sizeof(float));
    auto* dec = reinterpret_cast<uint8_t*>(buf.data());
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* src = w.data + static_cast<uint64_t>(r) * rb;
      uint8_t* d = dec + static_cast<size_t>(r - r0) * dec_row;
      for (int64_t i = 0; i < nb; ++i) tr.decode(src + i * bb, d + static_cast<size_t>(i) * dec_block);
    }
    const TileKernels tk = tr.tiles();
    if (tk.tokens[0] != nullptr) {  // T tokens per call, the last few one at a time
      for (int64_t t = 0; t < n_tokens;) {
        const int nt = n_tokens - t >= tk.t ? tk.t : 1;
        const void* a[8];
        for (int k = 0; k < nt; ++k) a[k] = scratch.xq.data() + static_cast<size_t>(t + k) * arb;
        const DotT dot = tk.tokens[nt == tk.t ? 0 : 1];
        for (int64_t r = r0; r < r1; ++r) {
          float o[8];
          dot(dec + static_cast<size_t>(r - r0) * dec_row, a, nb, o);
          for (int k = 0; k < nt; ++k) y[(t + k) * ldy + r] = o[k];
        }
        t += nt;
      }
      return;
    }
    for (int64_t t = 0; t < n_tokens; ++t) {
      const uint8_t* a = scratch.xq.data() + static_cast<size_t>(t) * arb;
      for (int64_t r = r0; r < r1; ++r) {
        const uint8_t* d = dec + static_cast<size_t>(r - r0) * dec_row;
        y[t * ldy + r] = q8 ? dot_q8(mins, reinterpret_cast<const Q8Block*>(d), reinterpret_cast<const kernels::ActQ8_0*>(a), nb)
                   : w2 ? dot_k(tr.family, reinterpret_cast<const KBlock2*>(d), reinterpret_cast<const kernels::ActQ8_K*>(a), nb)
                        : dot_k(tr.family, reinterpret_cast<const KBlock*>(d), reinterpret_cast<const kernels::ActQ8_K*>(a), nb);
      }
    }
  });
}

}  // namespace edgeq::runtime::ggml_order
