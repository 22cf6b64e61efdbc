#include "kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <deque>
#include <type_traits>
#include <utility>

#include "edgeq/base/cpu.h"
#include "edgeq/base/error.h"
#include "edgeq/base/half.h"
#include "edgeq/quant/block_layout.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/iq_grids.h"

namespace edgeq::runtime::kernels {
namespace {

using namespace quant::layout;  // the ggml block layouts, shared with quant/'s codecs

// ---------------------------------------------------------------- per-block float combination (all paths)
// One place for the float arithmetic, so every path performs the same operations in the same order. Weight
// scales are widened from fp16 exactly (f16_to_f32 or F16C: the same value).

inline float fold_min_K(float acc, float dx, float dmx, const ActQ8_K& y, int32_t sumi, int32_t summs) {
  return acc + ((y.d * dx) * static_cast<float>(sumi) - (y.d * dmx) * static_cast<float>(summs));
}
inline float fold_K(float acc, float dx, const ActQ8_K& y, int32_t sumi) {
  return acc + (y.d * dx) * static_cast<float>(sumi);
}
// Q8_0 keeps 8 float lanes, lane l summing the products of values 4l..4l+3 of every block (as the SIMD
// registers do), added up at the end in one fixed tree.
inline float hsum_lanes(const float* l) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); }

// Q4_K's 6-bit sub-block scales and mins (ggml's get_scale_min_k4), and sum_j min_j * (sum of the 32 y).
inline void q4_K_scales(const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      sc[j] = q[j] & 63;
      mn[j] = q[j + 4] & 63;
    } else {
      sc[j] = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
      mn[j] = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
  }
}
inline int32_t q4_K_summs(const uint8_t* mn, const ActQ8_K& y) {
  int32_t s = 0;
  for (int j = 0; j < 8; ++j) s += mn[j] * (y.bsums[2 * j] + y.bsums[2 * j + 1]);
  return s;
}
// Q6_K stores q + 32; the offset's share: 32 * sum_k scale_k * (sum of the 16 y of group k).
inline int32_t q6_K_offset(const BlockQ6_K& x, const ActQ8_K& y) {
  int32_t s = 0;
  for (int k = 0; k < 16; ++k) s += x.scales[k] * y.bsums[k];
  return 32 * s;
}
// Q2_K / Q3_K: the 2-bit field of value 32c + l (bits 2 (c % 4) of qs[32 (c / 4) + l]).
inline int two_bits(const uint8_t* qs, int c, int l) { return (qs[32 * (c / 4) + l] >> (2 * (c % 4))) & 3; }
// Q2_K: the 4-bit mins (high nibbles of the scales) times the 16-value sums of y.
inline int32_t q2_K_summs(const BlockQ2_K& x, const ActQ8_K& y) {
  int32_t s = 0;
  for (int k = 0; k < 16; ++k) s += (x.scales[k] >> 4) * y.bsums[k];
  return s;
}
// Q3_K's 16 signed 6-bit scales; the kernels multiply the unsigned values q + 4 (0..7), so the offset's share
// 4 * sum_k scale_k * (sum of the 16 y of group k) is subtracted.
inline void q3_K_scales(const BlockQ3_K& x, int16_t* sc) {
  for (int k = 0; k < 16; ++k) sc[k] = static_cast<int16_t>(q3k_scale(x.scales, k));
}
inline int32_t q3_K_offset(const int16_t* sc, const ActQ8_K& y) {
  int32_t s = 0;
  for (int k = 0; k < 16; ++k) s += sc[k] * y.bsums[k];
  return 4 * s;
}
// IQ4_XS's 8 signed 6-bit scales of its 32-value sub-blocks.
inline void iq4_xs_scales(const BlockIQ4_XS& x, int16_t* sc) {
  for (int j = 0; j < 8; ++j)
    sc[j] = static_cast<int16_t>((((x.scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | (((x.scales_h >> (2 * j)) & 3) << 4)) - 32);
}
// The 32-blocks with a minimum (Q4_1, Q5_1) add m * s per block, in block order, after the lanes' sum.
inline float fold_min(float summs, float m, const ActQ8_0& y) { return summs + m * y.s; }
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

template <class A>
inline const A* act_row(const uint8_t* act, size_t stride, int k) {
  return reinterpret_cast<const A*>(act + stride * static_cast<size_t>(k));
}

// ---------------------------------------------------------------- portable reference

// The 32-value blocks' fields (the nibble/bit layout of ggml's dequantize_row_<type>): the nibble of value e and
// its fifth bit (Q5_0, Q5_1). The signed types pair with Q8_0 activations; Q4_1 and Q5_1 hold unsigned values
// and a minimum m and pair with Q8_1.
inline int nibble(const uint8_t* qs, int e) { return e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4; }
inline int bit4(const uint8_t* qh, int e) { return static_cast<int>((load_u32(qh) >> e) & 1) << 4; }

// U: one of the 32-block type structs below (blk::Q8_0 ...); a minimum m (U::kMin) is added through fold_min.
template <class U>
void dot_32_scalar(const uint8_t* w, const uint8_t* act, size_t as, int na, int64_t n, float* out, size_t os) {
  constexpr bool HasMin = U::kMin;
  const auto* x = reinterpret_cast<const typename U::Block*>(w);
  for (int k = 0; k < na; ++k) {
    const auto* y = act_row<ActQ8_0>(act, as, k);
    float lanes[8] = {}, summs = 0.f;
    for (int64_t i = 0; i < n / 32; ++i) {
      const float d = f16_to_f32(x[i].d) * y[i].d;
      for (int l = 0; l < 8; ++l) {
        int32_t s = 0;
        for (int e = 4 * l; e < 4 * l + 4; ++e) s += U::value(x[i], e) * y[i].qs[e];
        lanes[l] = lanes[l] + d * static_cast<float>(s);
      }
      if constexpr (HasMin) summs = fold_min(summs, f16_to_f32(x[i].m), y[i]);
    }
    out[os * static_cast<size_t>(k)] = HasMin ? hsum_lanes(lanes) + summs : hsum_lanes(lanes);
  }
}

// The 256-blocks (Q8_K activations): each type's struct below (blk::Q2_K ... blk::IQ4_XS) gives the float a
// block adds, fold(acc, block, y), from integer sums taken over groups of 16 or 32 values by sum_groups:
// sum_g scale(g) * (sum_{e in group g} value(e) * y_e), value(c, l) the block's value 32c + l.
// The chunks are unrolled (c a compile-time constant), so value's field selection folds away.
template <int Group, class Value, class Scale>
inline int32_t sum_groups(const ActQ8_K& y, Value value, Scale scale) {
  int32_t sumi = 0;
  auto chunk = [&](auto c) {
    if constexpr (Group == 16) {
      int32_t s0 = 0, s1 = 0;  // values 32c .. 32c + 15, 32c + 16 .. 32c + 31
      for (int l = 0; l < 32; ++l) (l < 16 ? s0 : s1) += value(c, l) * y.qs[32 * c + l];
      sumi += scale(2 * c) * s0 + scale(2 * c + 1) * s1;
    } else {
      int32_t s = 0;
      for (int l = 0; l < 32; ++l) s += value(c, l) * y.qs[32 * c + l];
      sumi += scale(c) * s;
    }
  };
  [&]<int... C>(std::integer_sequence<int, C...>) {
    (chunk(std::integral_constant<int, C>{}), ...);
  }(std::make_integer_sequence<int, QK_K / 32>{});
  return sumi;
}
template <class U>
void dot_K_scalar(const uint8_t* w, const uint8_t* act, size_t as, int na, int64_t n, float* out, size_t os) {
  const auto* x = reinterpret_cast<const typename U::Block*>(w);
  for (int k = 0; k < na; ++k) {
    const auto* y = act_row<ActQ8_K>(act, as, k);
    float acc = 0.f;
    for (int64_t i = 0; i < n / QK_K; ++i) acc = U::fold(acc, x[i], y[i]);
    out[os * static_cast<size_t>(k)] = acc;
  }
}

// ---------------------------------------------------------------- AVX2
// Each weight block is unpacked once and multiplied with up to kMaxAct activation rows.

__attribute__((target("avx2"))) inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}
__attribute__((target("avx2"))) inline float hsum_f32(__m256 v) {
  alignas(32) float l[8];
  _mm256_store_ps(l, v);
  return hsum_lanes(l);
}

// The 32 values of a 32-block in byte order (ggml's element order): low nibbles are values 0..15, high 16..31.
__attribute__((target("avx2"))) inline __m256i nibbles_avx2(const uint8_t* qs) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_setr_m128i(b, _mm_srli_epi16(b, 4)), _mm256_set1_epi8(0xF));
}
// 0x10 in byte e where bit e of the 32-bit qh is set (the fifth bit of Q5_0/Q5_1 values).
__attribute__((target("avx2"))) inline __m256i bit4_avx2(const uint8_t* qh) {
  const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                       2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
  const __m256i b = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(load_u32(qh))), sel), bit);
  return _mm256_and_si256(_mm256_cmpeq_epi8(b, bit), _mm256_set1_epi8(0x10));
}
__attribute__((target("avx2"))) inline __m256i iq4nl_table_avx2() {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
}
// The 32-value block types: value(b, e) is value e of a block (portable), avx2(b) its 32 values as bytes (AVX2
// and AVX-512); kMin: the type has a minimum m (Q4_1, Q5_1: unsigned values and Q8_1 activations).
namespace blk {
struct Q8_0 {
  using Block = BlockQ8_0;
  static constexpr bool kMin = false;
  static int value(const Block& b, int e) { return b.qs[e]; }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
};
struct Q4_0 {
  using Block = BlockQ4_0;
  static constexpr bool kMin = false;
  static int value(const Block& b, int e) { return nibble(b.qs, e) - 8; }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& b) { return _mm256_sub_epi8(nibbles_avx2(b.qs), _mm256_set1_epi8(8)); }
};
struct Q5_0 {
  using Block = BlockQ5_0;
  static constexpr bool kMin = false;
  static int value(const Block& b, int e) { return (nibble(b.qs, e) | bit4(b.qh, e)) - 16; }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& b) {
    return _mm256_sub_epi8(_mm256_or_si256(nibbles_avx2(b.qs), bit4_avx2(b.qh)), _mm256_set1_epi8(16));
  }
};
struct IQ4_NL {
  using Block = BlockIQ4_NL;
  static constexpr bool kMin = false;
  static int value(const Block& b, int e) { return kIq4nlValues[nibble(b.qs, e)]; }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& b) { return _mm256_shuffle_epi8(iq4nl_table_avx2(), nibbles_avx2(b.qs)); }
};
struct Q4_1 {
  using Block = BlockQ4_1;
  static constexpr bool kMin = true;
  static int value(const Block& b, int e) { return nibble(b.qs, e); }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& b) { return nibbles_avx2(b.qs); }
};
struct Q5_1 {
  using Block = BlockQ5_1;
  static constexpr bool kMin = true;
  static int value(const Block& b, int e) { return nibble(b.qs, e) | bit4(b.qh, e); }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& b) { return _mm256_or_si256(nibbles_avx2(b.qs), bit4_avx2(b.qh)); }
};
}  // namespace blk

// The 32-blocks: 8 int32 lanes of 4 products each (lane l: values 4l..4l+3, as dot_32_scalar's lanes).
// Signed values (HasMin false, |value| <= 127): |x| * (y with x's sign), u8 x s8 pairs, |pair| <= 2 * 127 * 127.
// Unsigned values (HasMin true, 0..31): x * y directly.
template <class U>
__attribute__((target("avx2,f16c"))) void dot_32_avx2(const uint8_t* w, const uint8_t* act, size_t as, int na,
                                                      int64_t n, float* out, size_t os) {
  constexpr bool HasMin = U::kMin;
  const auto* x = reinterpret_cast<const typename U::Block*>(w);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[kMaxAct];
  float summs[kMaxAct] = {};
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / 32; ++i) {
    const __m256i qx = U::avx2(x[i]);
    const __m256i ax = HasMin ? qx : _mm256_sign_epi8(qx, qx);
    const float dx = _cvtsh_ss(x[i].d);
    float mx = 0.f;
    if constexpr (HasMin) mx = _cvtsh_ss(x[i].m);
    for (int k = 0; k < na; ++k) {
      const ActQ8_0& y = act_row<ActQ8_0>(act, as, k)[i];
      const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs));
      const __m256i sy = HasMin ? qy : _mm256_sign_epi8(qy, qx);
      const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
      acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(_mm256_set1_ps(dx * y.d), _mm256_cvtepi32_ps(p)));
      if constexpr (HasMin) summs[k] = fold_min(summs[k], mx, y);
    }
  }
  for (int k = 0; k < na; ++k) out[os * static_cast<size_t>(k)] = HasMin ? hsum_f32(acc[k]) + summs[k] : hsum_f32(acc[k]);
}

// The 256-blocks: U::avx2(block, q, s) unpacks a block once: q[g] the 32 values multiplying y[32g ..] as bytes
// (unsigned; signed where U::kFold is Signed), s[g] their scales in int16 lanes (lanes 0..7: values 0..15,
// lanes 8..15: values 16..31); it returns the 16 bsums weights U::kFold's term needs.
// sum_lanes_avx2: sum_g s[g] * (q[g] . y[32g ..]) in int32 lanes; signed q: |q| times y with q's sign.
template <bool Signed>
__attribute__((target("avx2"))) inline __m256i sum_lanes_avx2(const __m256i* q, const __m256i* ax, const __m256i* s,
                                                              const ActQ8_K& y) {
  __m256i sumi = _mm256_setzero_si256();
  for (int g = 0; g < 8; ++g) {
    const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs + 32 * g));
    const __m256i p = Signed ? _mm256_maddubs_epi16(ax[g], _mm256_sign_epi8(yv, q[g])) : _mm256_maddubs_epi16(q[g], yv);
    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s[g], p));
  }
  return sumi;
}
// sum_k w[k] * bsums[k] over the 16 groups of 16 values, in int32 lanes (w: 16 int16, |w * bsum| < 2^30).
__attribute__((target("avx2"))) inline __m256i bsums_dot(const ActQ8_K& y, __m256i w) {
  return _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.bsums)), w);
}
// Per-group weights for bsums_dot: Q2_K's 4-bit mins; Q4_K/Q5_K's 8 mins of 32-value sub-blocks (each twice);
// Q3_K's -4 * scale and Q6_K's -32 * scale (their offsets' shares, q3_K_offset and q6_K_offset negated).
__attribute__((target("avx2"))) inline __m256i q2_K_mins(const BlockQ2_K& x) {
  const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales));
  return _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0xF)));
}
__attribute__((target("avx2"))) inline __m256i q4_K_mins(const uint8_t* mn) {
  const __m128i m = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn));
  return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
}
// Q3_K's 16 scales (q3k_scale) as int16 lanes: low 4 bits from the nibbles of bytes 0..7, high 2 bits from
// bytes 8..11 (scale j: byte 8 + j % 4, bits 2 (j / 4) ..).
__attribute__((target("avx2"))) inline __m256i q3_K_scales_avx2(const uint8_t* sc) {
  const __m128i a = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc));
  const __m128i lo = _mm_and_si128(_mm_unpacklo_epi64(a, _mm_srli_epi16(a, 4)), _mm_set1_epi8(0xF));
  const __m128i h = _mm_shuffle_epi32(_mm_cvtsi32_si128(static_cast<int>(load_u32(sc + 8))), 0);
  const __m128i hi = _mm_and_si128(_mm_srlv_epi32(h, _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
  return _mm256_cvtepi8_epi16(_mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32)));
}
__attribute__((target("avx2"))) inline __m256i q3_K_offset_w(__m256i sc) {
  return _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc, 2));
}
// Q6_K's 16 scales as int16 lanes, and its offset weights from them.
__attribute__((target("avx2"))) inline __m256i q6_K_scales_avx2(const BlockQ6_K& x) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales)));
}
__attribute__((target("avx2"))) inline __m256i q6_K_offset_w(__m256i sc) {
  return _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16(sc, 5));
}
__attribute__((target("avx2"))) inline __m256i scale_pair(int s0, int s1) {
  return _mm256_setr_m128i(_mm_set1_epi16(static_cast<int16_t>(s0)), _mm_set1_epi16(static_cast<int16_t>(s1)));
}
// Q2_K / Q3_K: the 2-bit fields, q[4h + j] = bits 2j, 2j+1 of qs[32h ..].
__attribute__((target("avx2"))) inline void two_bits_avx2(const uint8_t* qs, __m256i* q) {
  const __m256i m3 = _mm256_set1_epi8(3);
  for (int h = 0; h < 2; ++h) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * h));
    for (int j = 0; j < 4; ++j) q[4 * h + j] = _mm256_and_si256(_mm256_srli_epi16(b, 2 * j), m3);
  }
}
// What a 256-block's float combination needs besides the integer sums: which fold_* term it has (Min: Q2_K,
// Q4_K, Q5_K, fold_min_K with the mins; Offset: Q3_K, Q6_K, fold_K after the values' offset; Signed: IQ4_XS,
// fold_K of signed values), its d (and dmin) widened from fp16.
enum class KFold { Min, Offset, Signed };
struct BlockFloats {
  float dx;
  __m128 dd;  // Min: (d, dmin)
};
template <class U>
__attribute__((target("avx2,f16c"))) inline BlockFloats block_floats(const typename U::Block& x) {
  if constexpr (requires { U::d(x); })  // a type whose d is not one fp16 field (the lattice i-quants)
    return {U::d(x), _mm_setzero_ps()};
  else if constexpr (U::kFold == KFold::Min)  // d and dmin are adjacent fp16 values
    return {0.f, _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(&x.d)))))};
  else
    return {_cvtsh_ss(x.d), _mm_setzero_ps()};
}
// fold_min_K with the two integer sums still spread over int32 lanes (a: sumi, b: summs) and dd = (dx, dmx):
// the same float operations, the two reductions done together.
__attribute__((target("avx2"))) inline float fold_min_K_lanes(float acc, __m128 dd, float yd, __m256i a, __m256i b) {
  const __m256i h = _mm256_hadd_epi32(a, b);
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  s = _mm_hadd_epi32(s, s);  // sumi, summs, sumi, summs
  const __m128 p = _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(yd), dd), _mm_cvtepi32_ps(s));  // (y.d*dx)*sumi, (y.d*dmx)*summs
  return acc + _mm_cvtss_f32(_mm_sub_ss(p, _mm_movehdup_ps(p)));
}
// One block's float step from its integer sum in int32 lanes (a) and the bsums weights (wb), as the type's
// fold_* helper in the portable kernels.
template <KFold F>
__attribute__((target("avx2"))) inline float fold_lanes(float acc, const BlockFloats& f, const ActQ8_K& y, __m256i a,
                                                        __m256i wb) {
  if constexpr (F == KFold::Min) return fold_min_K_lanes(acc, f.dd, y.d, a, bsums_dot(y, wb));
  else if constexpr (F == KFold::Offset) return fold_K(acc, f.dx, y, hsum_i32(_mm256_add_epi32(a, bsums_dot(y, wb))));
  else return fold_K(acc, f.dx, y, hsum_i32(a));
}

template <class U>
__attribute__((target("avx2,f16c"))) void dot_K_avx2(const uint8_t* w, const uint8_t* act, size_t as, int na,
                                                     int64_t n, float* out, size_t os) {
  constexpr bool kSigned = U::kFold == KFold::Signed;
  const auto* x = reinterpret_cast<const typename U::Block*>(w);
  float acc[kMaxAct] = {};
  for (int64_t i = 0; i < n / QK_K; ++i) {
    __m256i q[8], ax[8], s[8];
    __m256i wb;
    if constexpr (requires { U::kSplitSigns; }) {  // the type gives magnitudes (ax) and signs (q) apart
      wb = U::avx2(x[i], q, s, ax);
    } else {
      wb = U::avx2(x[i], q, s);
      if constexpr (kSigned)
        for (int g = 0; g < 8; ++g) ax[g] = _mm256_sign_epi8(q[g], q[g]);
    }
    const BlockFloats f = block_floats<U>(x[i]);
    for (int k = 0; k < na; ++k) {
      const ActQ8_K& y = act_row<ActQ8_K>(act, as, k)[i];
      acc[k] = fold_lanes<U::kFold>(acc[k], f, y, sum_lanes_avx2<kSigned>(q, kSigned ? ax : q, s, y), wb);
    }
  }
  for (int k = 0; k < na; ++k) out[os * static_cast<size_t>(k)] = acc[k];
}

// ---------------------------------------------------------------- AVX-512 VNNI
// 64 values per register: maddubs (u8 x s8 -> pairs) then vpdpwssd (x scale, accumulated in int32 lanes).

#define EDGEQ_AVX512 "avx512f,avx512bw,avx512vl,avx512vnni,avx2,f16c"
// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(), which -Wuninitialized flags.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Q4_K / Q5_K: the 8 sub-block scales (bytes 0..7) and 8 mins (bytes 8..15) of a block, as q4_K_scales unpacks
// them from the 12 packed bytes (32-bit words u0 u1 u2; reads 16 bytes: qh/qs follow the scales in the block).
__attribute__((target("avx2"))) inline __m128i q4_K_scales_mins(const uint8_t* q) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
  const __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));  // u0 u2 u1 u2
  const __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));  // u0 u0 u1 u1
  // scales 0..3: u0 & 63; 4..7: (u2 & 15) | top 2 bits of u0's bytes; mins 0..3: u1 & 63; 4..7: (u2 >> 4) | u1's top bits
  const __m128i lo = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                                   _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
  const __m128i hi = _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
  return _mm_or_si128(lo, hi);
}

__attribute__((target("avx2"))) inline __m256i y_qs(const ActQ8_0& y) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs));
}
// The 32-blocks, two per register: vpdpbusd sums the 4 products of each int32 lane (|x| or unsigned x, times
// y with x's sign), the lanes of block i then of block i + 1 are added to the 8 float lanes as in dot_32_scalar.
template <class U>
__attribute__((target(EDGEQ_AVX512))) void dot_32_avx512(const uint8_t* w, const uint8_t* act, size_t as, int na,
                                                         int64_t n, float* out, size_t os) {
  constexpr bool HasMin = U::kMin;
  const auto* x = reinterpret_cast<const typename U::Block*>(w);
  const int64_t nb = n / 32;
  __m256 acc[kMaxAct];
  float summs[kMaxAct] = {};
  for (auto& a : acc) a = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 1 < nb; i += 2) {
    const __m512i qx = _mm512_inserti64x4(_mm512_castsi256_si512(U::avx2(x[i])), U::avx2(x[i + 1]), 1);
    const __m512i ax = HasMin ? qx : _mm512_abs_epi8(qx);
    const __mmask64 neg = _mm512_movepi8_mask(qx);
    const float d0 = _cvtsh_ss(x[i].d), d1 = _cvtsh_ss(x[i + 1].d);
    float m0 = 0.f, m1 = 0.f;
    if constexpr (HasMin) m0 = _cvtsh_ss(x[i].m), m1 = _cvtsh_ss(x[i + 1].m);
    for (int k = 0; k < na; ++k) {
      const ActQ8_0* y = act_row<ActQ8_0>(act, as, k) + i;
      const __m512i qy = _mm512_inserti64x4(_mm512_castsi256_si512(y_qs(y[0])), y_qs(y[1]), 1);
      const __m512i sy = HasMin ? qy : _mm512_mask_sub_epi8(qy, neg, _mm512_setzero_si512(), qy);
      const __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ax, sy));
      const __m256 p1 = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p), 1));
      acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(_mm256_set1_ps(d0 * y[0].d), _mm512_castps512_ps256(p)));
      acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(_mm256_set1_ps(d1 * y[1].d), p1));
      if constexpr (HasMin) summs[k] = fold_min(fold_min(summs[k], m0, y[0]), m1, y[1]);
    }
  }
  if (i < nb) {  // an odd block count: the last block alone
    const __m256i qx = U::avx2(x[i]);
    const __m256i ax = HasMin ? qx : _mm256_sign_epi8(qx, qx);
    const float d0 = _cvtsh_ss(x[i].d);
    float m0 = 0.f;
    if constexpr (HasMin) m0 = _cvtsh_ss(x[i].m);
    for (int k = 0; k < na; ++k) {
      const ActQ8_0& y = act_row<ActQ8_0>(act, as, k)[i];
      const __m256i sy = HasMin ? y_qs(y) : _mm256_sign_epi8(y_qs(y), qx);
      const __m256 p = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, sy));
      acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(_mm256_set1_ps(d0 * y.d), p));
      if constexpr (HasMin) summs[k] = fold_min(summs[k], m0, y);
    }
  }
  for (int k = 0; k < na; ++k) out[os * static_cast<size_t>(k)] = HasMin ? hsum_f32(acc[k]) + summs[k] : hsum_f32(acc[k]);
}

// The 256-blocks, 64 values per register: U::avx512(block, q, s) fills q[m], the 64 values multiplying
// y[64m ..], and s[m], their scales as int16 lanes for vpdpwssd; it returns the bsums weights as U::avx2 does.
template <bool Signed>
__attribute__((target(EDGEQ_AVX512))) inline __m256i sum_lanes_avx512(const __m512i* q, const __m512i* ax,
                                                                     const __m512i* s, const ActQ8_K& y) {
  __m512i sumi = _mm512_setzero_si512();
  for (int m = 0; m < 4; ++m) {
    const __m512i yv = _mm512_loadu_si512(y.qs + 64 * m);
    // y with q's sign (AVX-512 has no vpsignb): negate where q < 0, zero where q == 0 (ax is 0 there anyway)
    const __m512i p = Signed ? _mm512_maddubs_epi16(ax[m], _mm512_mask_sub_epi8(yv, _mm512_movepi8_mask(q[m]), _mm512_setzero_si512(), yv))
                             : _mm512_maddubs_epi16(q[m], yv);
    sumi = _mm512_dpwssd_epi32(sumi, p, s[m]);
  }
  return _mm256_add_epi32(_mm512_castsi512_si256(sumi), _mm512_extracti64x4_epi64(sumi, 1));
}
template <class U>
__attribute__((target(EDGEQ_AVX512))) void dot_K_avx512(const uint8_t* w, const uint8_t* act, size_t as, int na,
                                                        int64_t n, float* out, size_t os) {
  constexpr bool kSigned = U::kFold == KFold::Signed;
  const auto* x = reinterpret_cast<const typename U::Block*>(w);
  float acc[kMaxAct] = {};
  for (int64_t i = 0; i < n / QK_K; ++i) {
    __m512i q[4], ax[4], s[4];
    const __m256i wb = U::avx512(x[i], q, s);
    if constexpr (kSigned)
      for (int m = 0; m < 4; ++m) ax[m] = _mm512_abs_epi8(q[m]);
    const BlockFloats f = block_floats<U>(x[i]);
    for (int k = 0; k < na; ++k) {
      const ActQ8_K& y = act_row<ActQ8_K>(act, as, k)[i];
      acc[k] = fold_lanes<U::kFold>(acc[k], f, y, sum_lanes_avx512<kSigned>(q, kSigned ? ax : q, s, y), wb);
    }
  }
  for (int k = 0; k < na; ++k) out[os * static_cast<size_t>(k)] = acc[k];
}
// The 16 scales of 16-value groups (int16 lanes of v) spread over four registers: 128-bit lane c of s[m] holds
// scale 4m + c (values 64m + 16c .. +15), in all its int16 lanes.
__attribute__((target(EDGEQ_AVX512))) inline void scales16_avx512(__m256i v, __m512i* s) {
  const __m512i lane = _mm512_srli_epi16(_mm512_setr_epi64(0x0003000200010000, 0x0007000600050004, 0x000B000A00090008,
                                                           0x000F000E000D000C, 0x0013001200110010, 0x0017001600150014,
                                                           0x001B001A00190018, 0x001F001E001D001C), 3);  // i / 8
  const __m512i w = _mm512_zextsi256_si512(v);
  for (int m = 0; m < 4; ++m) s[m] = _mm512_permutexvar_epi16(_mm512_add_epi16(lane, _mm512_set1_epi16(static_cast<int16_t>(4 * m))), w);
}
// int16 lanes: a in the low 256 bits, b in the high (shift counts, shuffle controls).
__attribute__((target(EDGEQ_AVX512))) inline __m512i halves16(int a, int b) {
  return _mm512_inserti64x4(_mm512_set1_epi16(static_cast<int16_t>(a)), _mm256_set1_epi16(static_cast<int16_t>(b)), 1);
}
// Q2_K / Q3_K: the 2-bit fields in value order (t[j]: bits 2j.. of all 64 qs bytes = values 32j + l, 128 + 32j + l).
__attribute__((target(EDGEQ_AVX512))) inline void two_bits_avx512(const uint8_t* qs, __m512i* q) {
  const __m512i b = _mm512_loadu_si512(qs), m3 = _mm512_set1_epi8(3);
  __m512i t[4];
  for (int j = 0; j < 4; ++j) t[j] = _mm512_and_si512(_mm512_srli_epi16(b, 2 * j), m3);
  q[0] = _mm512_shuffle_i64x2(t[0], t[1], 0x44);  // low halves: values 0..63
  q[1] = _mm512_shuffle_i64x2(t[2], t[3], 0x44);
  q[2] = _mm512_shuffle_i64x2(t[0], t[1], 0xEE);  // high halves: values 128..191
  q[3] = _mm512_shuffle_i64x2(t[2], t[3], 0xEE);
}

// ---------------------------------------------------------------- the 256-block types
// One struct per type: Block, kFold, and how its values and scales are read on each path: fold (portable:
// the block's float step from sum_groups, the definition), avx2 and avx512 (the unpacking for dot_K_avx2 /
// dot_K_avx512, giving the same integers).
namespace blk {

struct Q2_K {
  using Block = BlockQ2_K;
  static constexpr KFold kFold = KFold::Min;
  static float fold(float acc, const Block& x, const ActQ8_K& y) {
    // value e: two_bits; scales: low nibbles, mins: high ones
    const int32_t sumi = sum_groups<16>(y, [&](int c, int l) { return two_bits(x.qs, c, l); }, [&](int g) { return x.scales[g] & 0xF; });
    return fold_min_K(acc, f16_to_f32(x.d), f16_to_f32(x.dmin), y, sumi, q2_K_summs(x, y));
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s) {
    two_bits_avx2(x.qs, q);
    for (int g = 0; g < 8; ++g) s[g] = scale_pair(x.scales[2 * g] & 0xF, x.scales[2 * g + 1] & 0xF);
    return q2_K_mins(x);
  }
  static __attribute__((target(EDGEQ_AVX512))) __m256i avx512(const Block& x, __m512i* q, __m512i* s) {
    two_bits_avx512(x.qs, q);
    scales16_avx512(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales)),
                                                       _mm_set1_epi8(0xF))), s);
    return q2_K_mins(x);
  }
};

struct Q3_K {
  using Block = BlockQ3_K;
  static constexpr KFold kFold = KFold::Offset;
  static float fold(float acc, const Block& x, const ActQ8_K& y) {
    int16_t sc[16];
    q3_K_scales(x, sc);
    // value 32c + l, plus 4: the low 2 bits as Q2_K, bit 2 from hmask[l] bit c
    const int32_t sumi = sum_groups<16>(
        y, [&](int c, int l) { return two_bits(x.qs, c, l) | (((x.hmask[l] >> c) & 1) << 2); },
        [&](int g) { return sc[g]; });
    return fold_K(acc, f16_to_f32(x.d), y, sumi - q3_K_offset(sc, y));
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s) {
    const __m256i one = _mm256_set1_epi8(1);
    two_bits_avx2(x.qs, q);
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.hmask));
    for (int g = 0; g < 8; ++g)  // bit 2 of the values multiplying y[32g ..]: bit g of hmask
      q[g] = _mm256_or_si256(q[g], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, g), one), 2));
    const __m256i sc = q3_K_scales_avx2(x.scales);
    // s[g]: dword g of sc (scales 2g, 2g+1) in every dword, then int16 lanes 0..7 = scale 2g, 8..15 = 2g+1
    const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,  //
                                            2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    for (int g = 0; g < 8; ++g) s[g] = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc, _mm256_set1_epi32(g)), spread);
    return q3_K_offset_w(sc);
  }
  static __attribute__((target(EDGEQ_AVX512))) __m256i avx512(const Block& x, __m512i* q, __m512i* s) {
    const __m512i one = _mm512_set1_epi8(1);
    two_bits_avx512(x.qs, q);
    const __m512i hm = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.hmask)));
    const __m256i sc = q3_K_scales_avx2(x.scales);
    for (int m = 0; m < 4; ++m) {  // bit 2 of values 64m + l: hmask bit 2m (l < 32), 2m + 1 (l >= 32)
      q[m] = _mm512_or_si512(q[m], _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hm, halves16(2 * m, 2 * m + 1)), one), 2));
    }
    scales16_avx512(sc, s);
    return q3_K_offset_w(sc);
  }
};

// Q4_K and Q5_K: Q5_K adds a fifth bit to Q4_K's nibbles (qh), both have Q4_K's packed 6-bit scales and mins.
template <class B>
struct Q45K {
  using Block = B;
  static constexpr bool kQh = std::is_same_v<B, BlockQ5_K>;
  static constexpr KFold kFold = KFold::Min;
  static float fold(float acc, const Block& x, const ActQ8_K& y) {
    uint8_t sc[8], mn[8];
    q4_K_scales(x.scales, sc, mn);
    // value 32c + l: nibble c % 2 of qs[32 (c / 2) + l]; Q5_K: bit 4 from qh[l] bit c
    const int32_t sumi = sum_groups<32>(
        y,
        [&](int c, int l) {
          const int v = (x.qs[32 * (c / 2) + l] >> (4 * (c % 2))) & 0xF;
          if constexpr (kQh) return v | (((x.qh[l] >> c) & 1) << 4);
          else return v;
        },
        [&](int j) { return sc[j]; });
    return fold_min_K(acc, f16_to_f32(x.d), f16_to_f32(x.dmin), y, sumi, q4_K_summs(mn, y));
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    uint8_t sc[8], mn[8];
    q4_K_scales(x.scales, sc, mn);
    for (int j = 0; j < 4; ++j) {  // q[2j], q[2j + 1]: low and high nibbles of qs[32j ..]
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs + 32 * j));
      q[2 * j] = _mm256_and_si256(b, m4);
      q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(b, 4), m4);
    }
    if constexpr (kQh) {  // bit 4 of q[g]: qh bit g
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qh)), one = _mm256_set1_epi8(1);
      for (int g = 0; g < 8; ++g) q[g] = _mm256_or_si256(q[g], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, g), one), 4));
    }
    for (int j = 0; j < 8; ++j) s[j] = _mm256_set1_epi16(sc[j]);
    return q4_K_mins(mn);
  }
  static __attribute__((target(EDGEQ_AVX512))) __m256i avx512(const Block& x, __m512i* q, __m512i* s) {
    const __m512i m4 = _mm512_set1_epi8(0xF), nib = halves16(0, 4);  // low nibbles in the low half, high ones in the high
    const __m128i sm = q4_K_scales_mins(x.scales);
    const __m512i smb = _mm512_broadcast_i32x4(sm);
    for (int m = 0; m < 4; ++m) {  // q[m]: values 64m + l, low nibbles of qs[32m + l] (l < 32), then high ones
      const __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs + 32 * m)));
      q[m] = _mm512_and_si512(_mm512_srlv_epi16(b, nib), m4);
      // int16 lanes of scale 2m (low half), 2m + 1 (high half): byte shuffles of q4_K_scales_mins' bytes
      s[m] = _mm512_shuffle_epi8(smb, halves16(0x8000 | (2 * m), 0x8000 | (2 * m + 1)));
    }
    if constexpr (kQh) {  // bit 4: qh bit 2m (l < 32), 2m + 1
      const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qh)));
      const __m512i one = _mm512_set1_epi8(1);
      for (int m = 0; m < 4; ++m)
        q[m] = _mm512_or_si512(q[m], _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, halves16(2 * m, 2 * m + 1)), one), 4));
    }
    return _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));  // the mins, as q4_K_mins
  }
};
using Q4_K = Q45K<BlockQ4_K>;
using Q5_K = Q45K<BlockQ5_K>;

struct Q6_K {
  using Block = BlockQ6_K;
  static constexpr KFold kFold = KFold::Offset;
  static float fold(float acc, const Block& x, const ActQ8_K& y) {
    // value 32c + l, plus 32 (c = 4h + g): nibble g / 2 of ql[64h + 32 (g % 2) + l], bits 4-5 from qh[32h + l]
    // bits 2g, 2g + 1
    const int32_t sumi = sum_groups<16>(
        y,
        [&](int c, int l) {
          const int h = c / 4, g = c % 4;
          return ((x.ql[64 * h + 32 * (g % 2) + l] >> (4 * (g / 2))) & 0xF) | (((x.qh[32 * h + l] >> (2 * g)) & 3) << 4);
        },
        [&](int g) { return x.scales[g]; });
    return fold_K(acc, f16_to_f32(x.d), y, sumi - q6_K_offset(x, y));
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s) {
    const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {  // q[4h + g]: values 0..63 multiplying y[128h + 32g ..]
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.ql + 64 * h));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.ql + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qh + 32 * h));
      q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
      q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
      q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
      q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
    }
    for (int g = 0; g < 8; ++g) s[g] = scale_pair(x.scales[2 * g], x.scales[2 * g + 1]);
    return q6_K_offset_w(q6_K_scales_avx2(x));
  }
  static __attribute__((target(EDGEQ_AVX512))) __m256i avx512(const Block& x, __m512i* q, __m512i* s) {
    const __m512i m4 = _mm512_set1_epi8(0xF), m30 = _mm512_set1_epi8(0x30);
    const __m512i up = halves16(4, 2), down = halves16(0, 2);
    // byte shuffles spreading int16 scale c (pick_lo) or 4 + c (pick_hi) over 128-bit lane c
    const __m512i lane = _mm512_setr_epi64(0, 0, 0x0202020202020202, 0x0202020202020202, 0x0404040404040404,
                                           0x0404040404040404, 0x0606060606060606, 0x0606060606060606);
    const __m512i pick_lo = _mm512_add_epi8(lane, _mm512_set1_epi16(0x0100));
    const __m512i pick_hi = _mm512_add_epi8(pick_lo, _mm512_set1_epi8(8));
    for (int h = 0; h < 2; ++h) {  // values 128h + l: low nibbles of ql[64h + l], high bits from qh[32h + l % 32]
      const __m512i l = _mm512_loadu_si512(x.ql + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qh + 32 * h)));
      // bits 4, 5 of the values: qh bits 0-1 (l < 32), 2-3 (l >= 32); then bits 4-5, 6-7
      q[2 * h] = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_and_si512(_mm512_sllv_epi16(qh, up), m30));
      q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                     _mm512_and_si512(_mm512_srlv_epi16(qh, down), m30));
    }
    const __m256i sc = q6_K_scales_avx2(x);
    const __m512i s_lo = _mm512_broadcast_i32x4(_mm256_castsi256_si128(sc));  // scales 0..7
    const __m512i s_hi = _mm512_broadcast_i32x4(_mm256_extracti128_si256(sc, 1));
    s[0] = _mm512_shuffle_epi8(s_lo, pick_lo);  // 128-bit lane c of s[m]: scale 4m + c (values 64m + 16c ..)
    s[1] = _mm512_shuffle_epi8(s_lo, pick_hi);
    s[2] = _mm512_shuffle_epi8(s_hi, pick_lo);
    s[3] = _mm512_shuffle_epi8(s_hi, pick_hi);
    return q6_K_offset_w(sc);
  }
};

struct IQ4_XS {
  using Block = BlockIQ4_XS;
  static constexpr KFold kFold = KFold::Signed;
  static float fold(float acc, const Block& x, const ActQ8_K& y) {
    int16_t sc[8];
    iq4_xs_scales(x, sc);
    const int32_t sumi = sum_groups<32>(
        y, [&](int c, int l) { return kIq4nlValues[nibble(x.qs + 16 * c, l)]; }, [&](int j) { return sc[j]; });
    return fold_K(acc, f16_to_f32(x.d), y, sumi);
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s) {
    const __m256i table = iq4nl_table_avx2();
    int16_t sc[8];
    iq4_xs_scales(x, sc);
    for (int j = 0; j < 8; ++j) {
      q[j] = _mm256_shuffle_epi8(table, nibbles_avx2(x.qs + 16 * j));
      s[j] = _mm256_set1_epi16(sc[j]);
    }
    return _mm256_setzero_si256();
  }
  static __attribute__((target(EDGEQ_AVX512))) __m256i avx512(const Block& x, __m512i* q, __m512i* s) {
    const __m512i table = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4nlValues)));
    const __m512i m4 = _mm512_set1_epi8(0xF);
    int16_t sc[8];
    iq4_xs_scales(x, sc);
    for (int m = 0; m < 4; ++m) {  // q[m]: the signed values multiplying y[64m ..] (sub-blocks 2m, 2m+1)
      // 128-bit lanes: low nibbles of qs[32m ..+15], high ones, then the same of qs[32m + 16 ..]
      const __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs + 32 * m)));
      const __m512i lanes = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), b);
      const __m512i idx = _mm512_and_si512(_mm512_srlv_epi16(lanes, _mm512_setr_epi64(0, 0, 0x0004000400040004, 0x0004000400040004, 0, 0, 0x0004000400040004, 0x0004000400040004)), m4);
      q[m] = _mm512_shuffle_epi8(table, idx);
      s[m] = _mm512_inserti64x4(_mm512_set1_epi16(sc[2 * m]), _mm256_set1_epi16(sc[2 * m + 1]), 1);
    }
    return _mm256_setzero_si256();
  }
};

// ---- the lattice i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S)
// Every value is a signed byte (grid value with its sign; IQ1: 8 * grid value + delta sign, so ggml's two sums
// sumi + delta * sumi1 become one integer, 8 sumi + sumi1), every 16 values share an odd integer scale 2 s + 1, and
// the block's float is fold_K with d(x) = fp16 d times the type's power of two (ggml's final 0.125f / 0.25f / 1:
// a power of two commutes with every rounding, so the bits equal ggml's generic order). decode is the portable
// definition; avx2 builds the same bytes from 64-bit grid look-ups and sign masks. No AVX-512 path: the machine
// this was written on has AVX-512 without VNNI, so no gain could be measured (kernels_256_avx2).

// Sign masks for _mm256_sign_epi8: byte j is -1 where bit j of the sign byte is set, else +1.
inline constexpr std::array<uint64_t, 256> kSignMask = [] {
  std::array<uint64_t, 256> a{};
  for (int i = 0; i < 256; ++i)
    for (int j = 0; j < 8; ++j) a[i] |= static_cast<uint64_t>((i >> j) & 1 ? 0xff : 0x01) << (8 * j);
  return a;
}();
// The same for the 7 stored sign bits of IQ2_XXS, IQ2_XS and IQ3_XXS (the eighth: even parity).
inline constexpr std::array<uint64_t, 128> kSignMask7 = [] {
  std::array<uint64_t, 128> a{};
  for (uint32_t i = 0; i < 128; ++i) a[i] = kSignMask[iq_sign_byte(i)];
  return a;
}();
// Byte j of a one-byte-per-value grid entry, as a grid helper of iq_grids.h.
template <class E>
inline int grid_value(E e, int j) { return grid_u8(e, j); }

template <class U>
struct Lattice {
  static constexpr KFold kFold = KFold::Signed;
  // avx2(x, q, s, ax): ax the values' magnitudes (grid entries), q any bytes with the values' signs (+-1 masks), so
  // dot_K_avx2 needs no sign(q, q) per block
  static constexpr bool kSplitSigns = true;
  template <class B>  // B = U::Block (U is incomplete where this base is instantiated)
  static float fold(float acc, const B& x, const ActQ8_K& y) {
    int8_t q[QK_K];
    int16_t s[QK_K / 16];
    U::decode(x, q, s);
    int32_t sumi = 0;
    for (int g = 0; g < QK_K / 16; ++g) {
      int32_t t = 0;
      for (int l = 0; l < 16; ++l) t += q[16 * g + l] * y.qs[16 * g + l];
      sumi += s[g] * t;
    }
    return fold_K(acc, U::d(x), y, sumi);
  }
};
// Portable: 8 values of a grid entry with signs, and the 16-value scales.
template <class E>
inline void signed_values(E e, uint8_t signs, int n, int8_t* q) {
  for (int j = 0; j < n; ++j) q[j] = static_cast<int8_t>((signs >> j) & 1 ? -grid_value(e, j) : grid_value(e, j));
}
inline void iq1_values(uint64_t e, bool neg, int8_t* q) {
  for (int j = 0; j < 8; ++j) q[j] = static_cast<int8_t>(8 * grid_i8(e, j) + (neg ? -1 : 1));
}
// AVX2: four 8-value grid entries (magnitudes), and four 64-bit sign masks.
__attribute__((target("avx2"))) inline __m256i u64x4(uint64_t e0, uint64_t e1, uint64_t e2, uint64_t e3) {
  return _mm256_set_epi64x(static_cast<int64_t>(e3), static_cast<int64_t>(e2), static_cast<int64_t>(e1), static_cast<int64_t>(e0));
}
// Eight 4-value grid entries (IQ3) as 32 bytes.
__attribute__((target("avx2"))) inline __m256i entries32(const uint32_t* grid, const int* idx) {
  return _mm256_setr_epi32(static_cast<int>(grid[idx[0]]), static_cast<int>(grid[idx[1]]), static_cast<int>(grid[idx[2]]),
                           static_cast<int>(grid[idx[3]]), static_cast<int>(grid[idx[4]]), static_cast<int>(grid[idx[5]]),
                           static_cast<int>(grid[idx[6]]), static_cast<int>(grid[idx[7]]));
}
// IQ1: 8 * (grid value in -1, 0, 1) plus the delta signs (+-1 per byte, from deltas); never 0, so its own sign mask.
__attribute__((target("avx2"))) inline void iq1_32(__m256i g, __m256i deltas, __m256i* q, __m256i* ax) {
  *q = _mm256_add_epi8(_mm256_sign_epi8(_mm256_set1_epi8(8), g), deltas);
  *ax = _mm256_abs_epi8(*q);
}
inline int odd(int s) { return 2 * s + 1; }

struct IQ2_XXS : Lattice<IQ2_XXS> {
  using Block = BlockIQ2_XXS;
  static float d(const Block& x) { return f16_to_f32(x.d) * 0.125f; }
  static void decode(const Block& x, int8_t* q, int16_t* s) {
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t w[2];
      iq2xxs_words(x, ib, w);
      for (int l = 0; l < 4; ++l) signed_values(kIq2xxsGrid[iq2xxs_index(w, l)], iq2xxs_signs(w, l), 8, q + 32 * ib + 8 * l);
      s[2 * ib] = s[2 * ib + 1] = static_cast<int16_t>(odd(iq2xxs_scale(w)));
    }
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s, __m256i* ax) {
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t w[2];
      iq2xxs_words(x, ib, w);
      ax[ib] = u64x4(kIq2xxsGrid[w[0] & 255], kIq2xxsGrid[(w[0] >> 8) & 255], kIq2xxsGrid[(w[0] >> 16) & 255], kIq2xxsGrid[w[0] >> 24]);
      q[ib] = u64x4(kSignMask7[w[1] & 127], kSignMask7[(w[1] >> 7) & 127], kSignMask7[(w[1] >> 14) & 127], kSignMask7[(w[1] >> 21) & 127]);
      s[ib] = _mm256_set1_epi16(static_cast<int16_t>(odd(iq2xxs_scale(w))));
    }
    return _mm256_setzero_si256();
  }
};

struct IQ2_XS : Lattice<IQ2_XS> {
  using Block = BlockIQ2_XS;
  static float d(const Block& x) { return f16_to_f32(x.d) * 0.125f; }
  static void decode(const Block& x, int8_t* q, int16_t* s) {
    for (int ib = 0; ib < 8; ++ib) {
      for (int l = 0; l < 4; ++l) signed_values(kIq2xsGrid[iq2xs_index(x, ib, l)], iq2xs_signs(x, ib, l), 8, q + 32 * ib + 8 * l);
      s[2 * ib] = static_cast<int16_t>(odd(iq2x_scale(x.scales, ib, 0)));
      s[2 * ib + 1] = static_cast<int16_t>(odd(iq2x_scale(x.scales, ib, 2)));
    }
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s, __m256i* ax) {
    for (int ib = 0; ib < 8; ++ib) {
      ax[ib] = u64x4(kIq2xsGrid[iq2xs_index(x, ib, 0)], kIq2xsGrid[iq2xs_index(x, ib, 1)], kIq2xsGrid[iq2xs_index(x, ib, 2)],
                     kIq2xsGrid[iq2xs_index(x, ib, 3)]);
      q[ib] = u64x4(kSignMask7[x.qs[4 * ib] >> 9], kSignMask7[x.qs[4 * ib + 1] >> 9], kSignMask7[x.qs[4 * ib + 2] >> 9],
                    kSignMask7[x.qs[4 * ib + 3] >> 9]);
      s[ib] = scale_pair(odd(iq2x_scale(x.scales, ib, 0)), odd(iq2x_scale(x.scales, ib, 2)));
    }
    return _mm256_setzero_si256();
  }
};

struct IQ2_S : Lattice<IQ2_S> {
  using Block = BlockIQ2_S;
  static float d(const Block& x) { return f16_to_f32(x.d) * 0.125f; }
  static void decode(const Block& x, int8_t* q, int16_t* s) {
    for (int ib = 0; ib < 8; ++ib) {
      for (int l = 0; l < 4; ++l) signed_values(kIq2sGrid[iq2s_index(x, ib, l)], iq2s_signs(x, ib, l), 8, q + 32 * ib + 8 * l);
      s[2 * ib] = static_cast<int16_t>(odd(iq2x_scale(x.scales, ib, 0)));
      s[2 * ib + 1] = static_cast<int16_t>(odd(iq2x_scale(x.scales, ib, 2)));
    }
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s, __m256i* ax) {
    for (int ib = 0; ib < 8; ++ib) {
      ax[ib] = u64x4(kIq2sGrid[iq2s_index(x, ib, 0)], kIq2sGrid[iq2s_index(x, ib, 1)], kIq2sGrid[iq2s_index(x, ib, 2)],
                     kIq2sGrid[iq2s_index(x, ib, 3)]);
      q[ib] = u64x4(kSignMask[iq2s_signs(x, ib, 0)], kSignMask[iq2s_signs(x, ib, 1)], kSignMask[iq2s_signs(x, ib, 2)],
                    kSignMask[iq2s_signs(x, ib, 3)]);
      s[ib] = scale_pair(odd(iq2x_scale(x.scales, ib, 0)), odd(iq2x_scale(x.scales, ib, 2)));
    }
    return _mm256_setzero_si256();
  }
};

struct IQ3_XXS : Lattice<IQ3_XXS> {
  using Block = BlockIQ3_XXS;
  static float d(const Block& x) { return f16_to_f32(x.d) * 0.25f; }
  static void decode(const Block& x, int8_t* q, int16_t* s) {
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t w = iq3xxs_word(x, ib);
      for (int l = 0; l < 4; ++l) {
        const uint8_t signs = kIqSigns[(w >> (7 * l)) & 127];
        signed_values(kIq3xxsGrid[iq3xxs_index(x, ib, 2 * l)], signs, 4, q + 32 * ib + 8 * l);
        signed_values(kIq3xxsGrid[iq3xxs_index(x, ib, 2 * l + 1)], static_cast<uint8_t>(signs >> 4), 4, q + 32 * ib + 8 * l + 4);
      }
      s[2 * ib] = s[2 * ib + 1] = static_cast<int16_t>(odd(static_cast<int>(w >> 28)));
    }
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s, __m256i* ax) {
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t w = iq3xxs_word(x, ib);
      int idx[8];
      for (int k = 0; k < 8; ++k) idx[k] = iq3xxs_index(x, ib, k);
      ax[ib] = entries32(kIq3xxsGrid, idx);
      q[ib] = u64x4(kSignMask7[w & 127], kSignMask7[(w >> 7) & 127], kSignMask7[(w >> 14) & 127], kSignMask7[(w >> 21) & 127]);
      s[ib] = _mm256_set1_epi16(static_cast<int16_t>(odd(static_cast<int>(w >> 28))));
    }
    return _mm256_setzero_si256();
  }
};

struct IQ3_S : Lattice<IQ3_S> {
  using Block = BlockIQ3_S;
  static float d(const Block& x) { return f16_to_f32(x.d); }
  static void decode(const Block& x, int8_t* q, int16_t* s) {
    for (int ib = 0; ib < 8; ++ib) {
      for (int l = 0; l < 4; ++l) {
        const uint8_t signs = x.signs[4 * ib + l];
        signed_values(kIq3sGrid[iq3s_index(x, ib, 2 * l)], signs, 4, q + 32 * ib + 8 * l);
        signed_values(kIq3sGrid[iq3s_index(x, ib, 2 * l + 1)], static_cast<uint8_t>(signs >> 4), 4, q + 32 * ib + 8 * l + 4);
      }
      s[2 * ib] = s[2 * ib + 1] = static_cast<int16_t>(odd(iq3s_scale(x, ib)));
    }
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s, __m256i* ax) {
    for (int ib = 0; ib < 8; ++ib) {
      int idx[8];
      for (int k = 0; k < 8; ++k) idx[k] = iq3s_index(x, ib, k);
      const uint8_t* sg = x.signs + 4 * ib;
      ax[ib] = entries32(kIq3sGrid, idx);
      q[ib] = u64x4(kSignMask[sg[0]], kSignMask[sg[1]], kSignMask[sg[2]], kSignMask[sg[3]]);
      s[ib] = _mm256_set1_epi16(static_cast<int16_t>(odd(iq3s_scale(x, ib))));
    }
    return _mm256_setzero_si256();
  }
};

struct IQ1_S : Lattice<IQ1_S> {
  using Block = BlockIQ1_S;
  static float d(const Block& x) { return f16_to_f32(x.d) * 0.125f; }
  static void decode(const Block& x, int8_t* q, int16_t* s) {
    for (int ib = 0; ib < 8; ++ib) {
      for (int l = 0; l < 4; ++l) iq1_values(kIq1sGrid[iq1s_index(x, ib, l)], iq1s_delta_neg(x, ib), q + 32 * ib + 8 * l);
      s[2 * ib] = s[2 * ib + 1] = static_cast<int16_t>(odd(iq1s_scale(x, ib)));
    }
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s, __m256i* ax) {
    for (int ib = 0; ib < 8; ++ib) {
      iq1_32(u64x4(kIq1sGrid[iq1s_index(x, ib, 0)], kIq1sGrid[iq1s_index(x, ib, 1)], kIq1sGrid[iq1s_index(x, ib, 2)],
                   kIq1sGrid[iq1s_index(x, ib, 3)]),
             _mm256_set1_epi8(iq1s_delta_neg(x, ib) ? -1 : 1), q + ib, ax + ib);
      s[ib] = _mm256_set1_epi16(static_cast<int16_t>(odd(iq1s_scale(x, ib))));
    }
    return _mm256_setzero_si256();
  }
};

struct IQ1_M : Lattice<IQ1_M> {
  using Block = BlockIQ1_M;
  static float d(const Block& x) {
    uint16_t sc[4];
    iq1m_words(x, sc);
    return f16_to_f32(iq1m_d_bits(sc)) * 0.125f;
  }
  static void decode(const Block& x, int8_t* q, int16_t* s) {
    uint16_t sc[4];
    iq1m_words(x, sc);
    for (int ib = 0; ib < 8; ++ib) {
      for (int l = 0; l < 4; ++l) iq1_values(kIq1sGrid[iq1m_index(x, ib, l)], iq1m_delta_neg(x, ib, l), q + 32 * ib + 8 * l);
      s[2 * ib] = static_cast<int16_t>(odd(iq1m_scale(sc, ib, 0)));
      s[2 * ib + 1] = static_cast<int16_t>(odd(iq1m_scale(sc, ib, 2)));
    }
  }
  static __attribute__((target("avx2"))) __m256i avx2(const Block& x, __m256i* q, __m256i* s, __m256i* ax) {
    uint16_t sc[4];
    iq1m_words(x, sc);
    auto delta = [&](int ib, int l) { return static_cast<int64_t>(iq1m_delta_neg(x, ib, l) ? 0xffffffffffffffffull : 0x0101010101010101ull); };
    for (int ib = 0; ib < 8; ++ib) {
      iq1_32(u64x4(kIq1sGrid[iq1m_index(x, ib, 0)], kIq1sGrid[iq1m_index(x, ib, 1)], kIq1sGrid[iq1m_index(x, ib, 2)],
                   kIq1sGrid[iq1m_index(x, ib, 3)]),
             _mm256_set_epi64x(delta(ib, 3), delta(ib, 2), delta(ib, 1), delta(ib, 0)), q + ib, ax + ib);
      s[ib] = scale_pair(odd(iq1m_scale(sc, ib, 0)), odd(iq1m_scale(sc, ib, 2)));
    }
    return _mm256_setzero_si256();
  }
};

}  // namespace blk

// A 32-block type's three paths, for the table.
template <class U>
constexpr BlockKernels kernels_32{dot_32_scalar<U>, dot_32_avx2<U>, dot_32_avx512<U>};
// A 256-block type's three paths, for the table.
template <class U>
constexpr BlockKernels kernels_256{dot_K_scalar<U>, dot_K_avx2<U>, dot_K_avx512<U>};
// A 256-block type with portable and AVX2 paths only.
template <class U>
constexpr BlockKernels kernels_256_avx2{dot_K_scalar<U>, dot_K_avx2<U>, nullptr};
#pragma GCC diagnostic pop

// ---------------------------------------------------------------- the table

// The runtime's kernels: type, portable, AVX2, AVX-512 VNNI.
struct Registration {
  GgmlType type;
  BlockKernels kernels;
};
const Registration kKernels[] = {
    {GgmlType::Q8_0, kernels_32<blk::Q8_0>},
    {GgmlType::Q4_K, kernels_256<blk::Q4_K>},
    {GgmlType::Q6_K, kernels_256<blk::Q6_K>},
    {GgmlType::Q4_0, kernels_32<blk::Q4_0>},
    {GgmlType::Q5_K, kernels_256<blk::Q5_K>},
    {GgmlType::Q4_1, kernels_32<blk::Q4_1>},
    {GgmlType::Q5_0, kernels_32<blk::Q5_0>},
    {GgmlType::Q5_1, kernels_32<blk::Q5_1>},
    {GgmlType::Q2_K, kernels_256<blk::Q2_K>},
    {GgmlType::Q3_K, kernels_256<blk::Q3_K>},
    {GgmlType::IQ4_NL, kernels_32<blk::IQ4_NL>},
    {GgmlType::IQ4_XS, kernels_256<blk::IQ4_XS>},
    {GgmlType::IQ2_XXS, kernels_256_avx2<blk::IQ2_XXS>},
    {GgmlType::IQ2_XS, kernels_256_avx2<blk::IQ2_XS>},
    {GgmlType::IQ2_S, kernels_256_avx2<blk::IQ2_S>},
    {GgmlType::IQ3_XXS, kernels_256_avx2<blk::IQ3_XXS>},
    {GgmlType::IQ3_S, kernels_256_avx2<blk::IQ3_S>},
    {GgmlType::IQ1_S, kernels_256_avx2<blk::IQ1_S>},
    {GgmlType::IQ1_M, kernels_256_avx2<blk::IQ1_M>},
};


}  // namespace

namespace {
// Entries live in a deque (addresses stay valid as types are added); ids below kDirect are indexed directly.
constexpr uint32_t kDirect = 64;
struct Table {
  std::deque<Entry> rows;
  Entry* direct[kDirect] = {};
};

Entry* lookup(Table& tab, GgmlType t) {
  const auto id = static_cast<uint32_t>(t);
  if (id < kDirect) return tab.direct[id];
  for (Entry& e : tab.rows)
    if (e.ops->type == t) return &e;
  return nullptr;
}

void put(Table& tab, GgmlType t, const BlockKernels& k) {
  const quant::BlockOps* ops = quant::block_ops(t);
  if (!ops) fail("set block kernels: type {} has no block-ops row", static_cast<uint32_t>(t));
  if ((k.avx2 || k.avx512) && !k.scalar) fail("set block kernels: {}: a SIMD kernel needs the portable one", ggml_type_name(t));
  if (k.scalar && ops->act_rounding != ActRounding::Q8_0 && ops->act_rounding != ActRounding::Q8_K)
    fail("set block kernels: {}: kernels take Q8_0 or Q8_K activations", ggml_type_name(t));
  if (Entry* e = lookup(tab, t)) {
    e->kernels = k;
    return;
  }
  tab.rows.push_back({ops, k});
  const auto id = static_cast<uint32_t>(t);
  if (id < kDirect) tab.direct[id] = &tab.rows.back();
}

Table& table() {
  static Table tab = [] {
    Table t;
    for (const auto& r : kKernels) put(t, r.type, r.kernels);
    return t;
  }();
  return tab;
}
}  // namespace

const Entry* find(GgmlType t) {
  const Entry* e = lookup(table(), t);
  return e != nullptr && e->kernels.scalar != nullptr ? e : nullptr;
}

DotFn best(const BlockKernels& k) {
  if (cpu::avx512_vnni() && k.avx512 != nullptr) return k.avx512;
  if (cpu::avx2() && k.avx2 != nullptr) return k.avx2;
  return k.scalar;
}

const char* simd_level() { return cpu::avx512_vnni() ? "avx512vnni" : cpu::avx2() ? "avx2" : "scalar"; }

size_t act_row_bytes(ActRounding a, int64_t n) {
  switch (a) {
    case ActRounding::Q8_0: return static_cast<size_t>(n / 32) * sizeof(ActQ8_0);
    case ActRounding::Q8_K: return static_cast<size_t>(n / 256) * sizeof(ActQ8_K);
    default: return 0;
  }
}

namespace {
#pragma GCC diagnostic push  // as for the kernels above
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// quantize_act's Q8_K rows with AVX-512: the same operations per value (the largest |x| ignoring NaNs, the first
// value with that magnitude, iscale * x rounded half to even, min(127, .)), so the same bytes.
__attribute__((target(EDGEQ_AVX512))) void quantize_q8_K_avx512(const float* x, ActQ8_K* y, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 256) {
    __m512 amax = _mm512_setzero_ps();
    for (int c = 0; c < 16; ++c) amax = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + 16 * c)), amax);  // NaN: keeps amax
    const float am = _mm512_reduce_max_ps(amax);
    std::memset(&y[b], 0, sizeof(ActQ8_K));
    if (am == 0.f) continue;
    float mx = 0.f;
    const __m512 vam = _mm512_set1_ps(am);
    for (int c = 0; c < 16; ++c) {
      const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + 16 * c)), vam, _CMP_EQ_OQ);
      if (hit) {
        mx = x[16 * c + __builtin_ctz(hit)];
        break;
      }
    }
    const float iscale = -127.f / mx;
    y[b].d = 1.f / iscale;
    const __m512 vs = _mm512_set1_ps(iscale), v127 = _mm512_set1_ps(127.f);
    for (int c = 0; c < 16; ++c) {
      const __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(vs, _mm512_loadu_ps(x + 16 * c)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      const __m512i q = _mm512_cvtps_epi32(_mm512_min_ps(r, v127));  // min(r, 127): 127 when r is NaN, as std::min(127, r)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs + 16 * c), _mm512_cvtsepi32_epi8(q));
      y[b].bsums[c] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
    }
  }
}
#pragma GCC diagnostic pop

// quantize_act's Q8_0 rows with AVX2: the same operations per value (the largest |x| ignoring NaNs, d and 1/d as
// scalars, x · id rounded half to even, then min(., 127): 127 for NaN), so the same bytes.
__attribute__((target("avx2,fma,f16c"))) void quantize_q8_0_avx2(const float* x, ActQ8_0* y, int64_t nb) {
  const __m256 sign = _mm256_set1_ps(-0.f), v127 = _mm256_set1_ps(127.f);
  for (int64_t b = 0; b < nb; ++b, x += 32) {
    __m256 v[4], m = _mm256_setzero_ps();
    for (int c = 0; c < 4; ++c) {
      v[c] = _mm256_loadu_ps(x + 8 * c);
      m = _mm256_max_ps(_mm256_andnot_ps(sign, v[c]), m);  // NaN: keeps m
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
    const float d = amax / 127.f, id = amax != 0.f ? 127.f / amax : 0.f;
    y[b].d = f16_to_f32(f32_to_f16(d));
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int c = 0; c < 4; ++c)
      q[c] = _mm256_cvtps_epi32(_mm256_min_ps(
          _mm256_round_ps(_mm256_mul_ps(v[c], vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), v127));
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    // int32 -> int16 -> int8 with saturation (|q| <= 127: exact); the packs interleave 128-bit lanes, the
    // permute restores the order.
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs), _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    y[b].s = f16_to_f32(f32_to_f16(d * static_cast<float>(_mm_cvtsi128_si32(s4))));
  }
}
}  // namespace

namespace {
template <class U>
void lattice_decoder(const void* block, int8_t* q, int16_t* s) {
  U::decode(*static_cast<const typename U::Block*>(block), q, s);
}
// The lattice i-quants' decoders (the kernels' own), by type.
struct LatticeRow {
  GgmlType type;
  void (*decode)(const void* block, int8_t* q, int16_t* s);
};
const LatticeRow kLattice[] = {
    {GgmlType::IQ2_XXS, lattice_decoder<blk::IQ2_XXS>}, {GgmlType::IQ2_XS, lattice_decoder<blk::IQ2_XS>},
    {GgmlType::IQ2_S, lattice_decoder<blk::IQ2_S>},     {GgmlType::IQ3_XXS, lattice_decoder<blk::IQ3_XXS>},
    {GgmlType::IQ3_S, lattice_decoder<blk::IQ3_S>},     {GgmlType::IQ1_S, lattice_decoder<blk::IQ1_S>},
    {GgmlType::IQ1_M, lattice_decoder<blk::IQ1_M>},
};
}  // namespace

bool decode_lattice(GgmlType t, const void* block, int8_t* q, int16_t* s) {
  for (const LatticeRow& r : kLattice)
    if (r.type == t) {
      r.decode(block, q, s);
      return true;
    }
  return false;
}

void iq4_xs_block_scales(const void* block, int16_t* sc) { iq4_xs_scales(*static_cast<const BlockIQ4_XS*>(block), sc); }

void quantize_act(ActRounding a, const float* x, void* dst, int64_t n) {
  if (a == ActRounding::Q8_K && cpu::avx512_vnni()) return quantize_q8_K_avx512(x, static_cast<ActQ8_K*>(dst), n / 256);
  if (a == ActRounding::Q8_0 && cpu::avx2()) return quantize_q8_0_avx2(x, static_cast<ActQ8_0*>(dst), n / 32);
  if (a == ActRounding::Q8_0) {
    auto* y = static_cast<ActQ8_0*>(dst);
    for (int64_t b = 0; b < n / 32; ++b, x += 32) {
      const Q8_0Scale sc = q8_0_scale(x);
      y[b].d = sc.d_f16;
      int32_t sum = 0;
      for (int j = 0; j < 32; ++j) {
        y[b].qs[j] = static_cast<int8_t>(std::min(127.f, std::nearbyint(x[j] * sc.id)));  // NaN -> 127 as in Q8_K, not UB
        sum += y[b].qs[j];
      }
      y[b].s = f16_to_f32(f32_to_f16(sc.d * static_cast<float>(sum)));
    }
    return;
  }
  auto* y = static_cast<ActQ8_K*>(dst);
  for (int64_t b = 0; b < n / 256; ++b, x += 256) {
    std::memset(&y[b], 0, sizeof(ActQ8_K));
    float iscale, d;
    if (!q8_K_scale(x, &iscale, &d)) continue;
    y[b].d = d;
    for (int j = 0; j < 256; ++j) {
      y[b].qs[j] = static_cast<int8_t>(std::min(127.f, std::nearbyint(iscale * x[j])));
      y[b].bsums[j / 16] = static_cast<int16_t>(y[b].bsums[j / 16] + y[b].qs[j]);
    }
  }
}

}  // namespace edgeq::runtime::kernels

namespace edgeq::runtime {

const BlockKernels* block_kernels(GgmlType t) {
  const kernels::Entry* e = kernels::find(t);
  return e ? &e->kernels : nullptr;
}

void set_block_kernels(GgmlType t, const BlockKernels& k) { kernels::put(kernels::table(), t, k); }

}  // namespace edgeq::runtime
