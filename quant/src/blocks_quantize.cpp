// Quantizers for every supported ggml block type.
//
// Every block is encoded by a search that minimises the error in the *target* metric: the plain squared
// error without an importance vector, sum_j w_j (x_j - q_j)^2 with one (w = importance + a tiny floor).
// Candidates are scored exactly as the dequantizer will reproduce them (f16-rounded scales, integer
// sub-block scales, the same f32 products), and the best one is kept:
//   * continuous scale (and min) search over a grid of inverse scales anchored on the max-abs value (both
//     signs for the asymmetric level sets) or on the min/max range, each followed by a weighted least-squares
//     fit of the scale/min for the chosen integer levels, then alternating refinement (levels <- nearest for
//     the scale, scale <- least squares for the levels); Q2_K/Q4_1/Q5_1 also try ranges that clip the
//     lowest or highest value;
//   * legacy single-scale blocks: the f16-rounded fit, its least-squares refits, the f16 neighbours of the
//     scale (and min), and llama.cpp's reference choice (max-abs / min-max scale) as one more candidate, so a
//     block is never worse than llama.cpp's round-to-nearest;
//   * k-quants: sub-block scales (and mins) quantized against the super-block scale(s), a local search of
//     each sub-block's integer scale/min (+-radius, levels re-rounded for each), and least-squares refits of
//     the super-block scale(s) given the integer structure, repeated while the error drops.
// The hot loops keep 8 accumulator lanes whatever the instruction set (portable scalar code, SSE2, AVX2; the
// candidate-parallel kernels run 8 or 16 candidates, one per lane, each repeating the scalar operations), so the
// output bytes do not depend on the machine or on how the caller splits rows across threads.
#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <vector>

#include "block_kernels.h"
#include "edgeq/base/cpu.h"
#include "edgeq/base/error.h"
#include "edgeq/quant/block_ops.h"
#include "edgeq/quant/blocks.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#define EDGEQ_QSSE2 1
#endif
// AVX2 versions of the hottest asymmetric-search loops, chosen at run time. Lane j of the 8-wide vector is
// scalar accumulator j and does the same operations in the same order (no FMA), so the bytes written do
// not depend on which path ran.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define EDGEQ_QAVX2 1
#define EDGEQ_TARGET_AVX2 __attribute__((target("avx2")))
#endif

namespace edgeq::quant {
using namespace detail;

namespace {

inline int nearest_int(float fval) {
  // Round half to even, valid for |fval| < 2^22 (callers clamp first).
  float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, 4);
  return (i & 0x007fffff) - 0x00400000;
}
inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// A set of quantization levels, ascending. Linear grids are qmin..qmin+n-1.
struct Grid {
  int n = 0;
  bool linear = true;
  int qmin = 0;
  float v[256];
  // Table grids of integer levels: lut[k - lut_base] = largest index with v[i] <= k, so the nearest level
  // to t in [k, k+1) is lut[k] or lut[k] + 1.
  int lut_base = 0, lut_n = 0;
  uint8_t lut[512] = {};
  float mid[255] = {};  // mid[i] = (v[i] + v[i+1]) / 2 (exact for integer levels); t >= mid[i] rounds up
  static Grid lin(int qmin, int qmax) {
    Grid g;
    g.n = qmax - qmin + 1;
    g.linear = true;
    g.qmin = qmin;
    for (int i = 0; i < g.n; ++i) g.v[i] = static_cast<float>(qmin + i);
    return g;
  }
  static Grid table(const int8_t* vals, int n) {
    Grid g;
    g.n = n;
    g.linear = false;
    for (int i = 0; i < n; ++i) g.v[i] = vals[i];
    for (int i = 0; i + 1 < n; ++i) g.mid[i] = 0.5f * (g.v[i] + g.v[i + 1]);
    g.lut_base = vals[0];
    g.lut_n = vals[n - 1] - vals[0] + 1;
    for (int k = 0; k < g.lut_n; ++k) {
      int i = 0;
      while (i + 1 < n && g.v[i + 1] <= static_cast<float>(k + g.lut_base)) ++i;
      g.lut[k] = static_cast<uint8_t>(i);
    }
    return g;
  }
  float lo() const { return v[0]; }
  float hi() const { return v[n - 1]; }
  // Index of the level nearest to t.
  int nearest(float t) const {
    if (linear) {
      float c = clampf(t, static_cast<float>(qmin) - 1.f, static_cast<float>(qmin + n));
      int q = nearest_int(c) - qmin;
      return q < 0 ? 0 : (q >= n ? n - 1 : q);
    }
    if (!(t > v[0])) return 0;
    if (t >= v[n - 1]) return n - 1;
    // t > v[0] = lut_base here, so truncation of the non-negative t - lut_base is floor.
    const int lo = lut[static_cast<int>(t - static_cast<float>(lut_base))];
    return t >= mid[lo] ? lo + 1 : lo;
  }
  int zero_index() const { return nearest(0.f); }
};

// ---------------------------------------------------------------------------------------------------
// Symmetric groups: value = d * level.

// The hot loops below work on 8 independent lanes (n is always a multiple of 8) so the compiler can
// vectorise them; the lanes are summed in a fixed order, so results do not depend on the machine.
constexpr float kRoundMagic = 12582912.f;  // 1.5 * 2^23: (t + M) - M rounds |t| < 2^22 half to even
constexpr int kMaxTry = 10;                 // largest grid half-width (ntry) of any encoder below
// Size of an array of n candidates for the candidate-parallel kernels: whole vectors of the widest kind.
constexpr int kPadLanes(int n) { return (n + 15) / 16 * 16; }
// Zeroes a[n, kPadLanes(n)) (cheaper than zero-initialising the whole array for every group).
inline void zero_pad(float* a, int n) {
  for (int i = n; i < kPadLanes(n); ++i) a[i] = 0.f;
}

// Nearest level of a linear grid [lo, hi] to t, as a float (NaN maps to lo).
inline float lin_level(float t, float lo, float hi) {
  t = t > lo - 1.f ? t : lo - 1.f;
  t = t < hi + 1.f ? t : hi + 1.f;
  float r = (t + kRoundMagic) - kRoundMagic;
  r = r < lo ? lo : r;
  return r > hi ? hi : r;
}
inline float sum8(const float* a) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }

#if EDGEQ_QSSE2
// SSE2 versions of the linear-grid loops: lane j of the two 4-wide vectors is scalar accumulator j, and every
// lane does the scalar code's operations in the same order (max/min reproduce the scalar selects exactly).
struct LinSse {
  __m128 lom1, hip1, lo, hi, magic;
  LinSse(float l, float h)
      : lom1(_mm_set1_ps(l - 1.f)), hip1(_mm_set1_ps(h + 1.f)), lo(_mm_set1_ps(l)), hi(_mm_set1_ps(h)),
        magic(_mm_set1_ps(kRoundMagic)) {}
  __m128 level(__m128 t) const {
    t = _mm_min_ps(_mm_max_ps(t, lom1), hip1);
    __m128 r = _mm_sub_ps(_mm_add_ps(t, magic), magic);
    return _mm_min_ps(_mm_max_ps(r, lo), hi);
  }
  void store_idx(uint8_t* dst, __m128 l0, __m128 l1) const {
    __m128i a = _mm_cvttps_epi32(_mm_sub_ps(l0, lo)), b = _mm_cvttps_epi32(_mm_sub_ps(l1, lo));
    __m128i p = _mm_packs_epi32(a, b);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(p, p));
  }
};
// Table grid (<= 16 levels): index = number of midpoints <= t, value accumulated from the level steps;
// the same result as Grid::nearest (NaN compares false everywhere: index 0, as the scalar path).
struct TabSse {
  int nm;
  __m128 mid[15], step[15], v0;
  explicit TabSse(const Grid& G) : nm(G.n - 1), v0(_mm_set1_ps(G.v[0])) {
    for (int k = 0; k < nm; ++k) {
      mid[k] = _mm_set1_ps(G.mid[k]);
      step[k] = _mm_set1_ps(G.v[k + 1] - G.v[k]);
    }
  }
  __m128 level(__m128 t, __m128i* idx) const {
    __m128 v = v0;
    __m128i c = _mm_setzero_si128();
    for (int k = 0; k < nm; ++k) {
      const __m128 m = _mm_cmpge_ps(t, mid[k]);
      v = _mm_add_ps(v, _mm_and_ps(m, step[k]));
      c = _mm_sub_epi32(c, _mm_castps_si128(m));
    }
    *idx = c;
    return v;
  }
  static void store_idx(uint8_t* dst, __m128i a, __m128i b) {
    __m128i p = _mm_packs_epi32(a, b);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(p, p));
  }
};
inline void store8(float* acc, __m128 a0, __m128 a1) {
  _mm_storeu_ps(acc, a0);
  _mm_storeu_ps(acc + 4, a1);
}
// The SSE2 error loops: 8 values a step in two halves; rec(i, x0, x1, r0, r1) stores the levels of x[i .. i+7]
// and gives their reconstructions; lane j of acc sums w * (x - r)^2 as the scalar loops' accumulator j.
template <class Rec>
inline void sse_errors(const float* x, const float* w, int n, float* acc, Rec rec) {
  __m128 a0 = _mm_setzero_ps(), a1 = _mm_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    const __m128 x0 = _mm_loadu_ps(x + i), x1 = _mm_loadu_ps(x + i + 4);
    __m128 r0, r1;
    rec(i, x0, x1, r0, r1);
    const __m128 d0 = _mm_sub_ps(x0, r0), d1 = _mm_sub_ps(x1, r1);
    a0 = _mm_add_ps(a0, _mm_mul_ps(_mm_mul_ps(_mm_loadu_ps(w + i), d0), d0));
    a1 = _mm_add_ps(a1, _mm_mul_ps(_mm_mul_ps(_mm_loadu_ps(w + i + 4), d1), d1));
  }
  store8(acc, a0, a1);
}
#endif

#if EDGEQ_QAVX2
inline bool quant_avx2() { return cpu::avx2(); }

EDGEQ_TARGET_AVX2 inline void store_idx8(uint8_t* dst, __m256i k) {
  const __m128i p = _mm_packs_epi32(_mm256_castsi256_si128(k), _mm256_extracti128_si256(k, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(p, p));
}
// lin_level(t, lo, hi) on 8 lanes (max/min reproduce the scalar selects, NaN included); *idx = level - lo.
struct LinAvx2 {
  __m256 lom1, hip1, lo, hi, magic;
  EDGEQ_TARGET_AVX2 LinAvx2(float l, float h)
      : lom1(_mm256_set1_ps(l - 1.f)), hip1(_mm256_set1_ps(h + 1.f)), lo(_mm256_set1_ps(l)), hi(_mm256_set1_ps(h)),
        magic(_mm256_set1_ps(kRoundMagic)) {}
  EDGEQ_TARGET_AVX2 __m256 level(__m256 t) const {
    t = _mm256_min_ps(_mm256_max_ps(t, lom1), hip1);
    __m256 r = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
    return _mm256_min_ps(_mm256_max_ps(r, lo), hi);
  }
  EDGEQ_TARGET_AVX2 __m256 level(__m256 t, __m256i* idx) const {
    const __m256 l = level(t);
    *idx = _mm256_cvttps_epi32(_mm256_sub_ps(l, lo));
    return l;
  }
  EDGEQ_TARGET_AVX2 void store_idx(uint8_t* dst, __m256 q) const {
    store_idx8(dst, _mm256_cvttps_epi32(_mm256_sub_ps(q, lo)));
  }
};
// Table grid (<= 16 levels) on 8 lanes, as TabSse.
struct TabAvx2 {
  int nm;
  __m256 mid[15], step[15], v0;
  EDGEQ_TARGET_AVX2 explicit TabAvx2(const Grid& G) : nm(G.n - 1), v0(_mm256_set1_ps(G.v[0])) {
    for (int k = 0; k < nm; ++k) {
      mid[k] = _mm256_set1_ps(G.mid[k]);
      step[k] = _mm256_set1_ps(G.v[k + 1] - G.v[k]);
    }
  }
  EDGEQ_TARGET_AVX2 __m256 level(__m256 t, __m256i* idx) const {
    __m256 v = v0;
    __m256i c = _mm256_setzero_si256();
    for (int k = 0; k < nm; ++k) {
      const __m256 m = _mm256_cmp_ps(t, mid[k], _CMP_GE_OQ);
      v = _mm256_add_ps(v, _mm256_and_ps(m, step[k]));
      c = _mm256_sub_epi32(c, _mm256_castps_si256(m));
    }
    *idx = c;
    return v;
  }
};

template <class Lv>
EDGEQ_TARGET_AVX2 float sym_eval_avx2(const Lv& S, const float* x, const float* w, int n, float d, float id,
                                      uint8_t* idx) {
  const __m256 vid = _mm256_set1_ps(id), vd = _mm256_set1_ps(d);
  __m256 acc = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    __m256i k;
    const __m256 l = S.level(_mm256_mul_ps(xv, vid), &k);
    store_idx8(idx + i, k);
    const __m256 dd = _mm256_sub_ps(xv, _mm256_mul_ps(vd, l));
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(w + i), dd), dd));
  }
  alignas(32) float a[8];
  _mm256_store_ps(a, acc);
  return sum8(a);
}

template <class Lv>
EDGEQ_TARGET_AVX2 void sym_levels_avx2(const Lv& S, const float* x, const float* w, int n, float iscale,
                                       uint8_t* tmp, float* sxl_out, float* sll_out) {
  const __m256 vis = _mm256_set1_ps(iscale);
  __m256 b = _mm256_setzero_ps(), c = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i), wv = _mm256_loadu_ps(w + i);
    __m256i k;
    const __m256 l = S.level(_mm256_mul_ps(xv, vis), &k);
    store_idx8(tmp + i, k);
    b = _mm256_add_ps(b, _mm256_mul_ps(_mm256_mul_ps(wv, xv), l));
    c = _mm256_add_ps(c, _mm256_mul_ps(_mm256_mul_ps(wv, l), l));
  }
  alignas(32) float bb[8], cc[8];
  _mm256_store_ps(bb, b);
  _mm256_store_ps(cc, c);
  *sxl_out = sum8(bb);
  *sll_out = sum8(cc);
}
// Dispatchers: true when the AVX2 path handled the call.
EDGEQ_TARGET_AVX2 bool sym_eval_avx2_any(const float* x, const float* w, int n, const Grid& G, float d, float id,
                                         uint8_t* idx, float* err) {
  if (G.linear) {
    *err = sym_eval_avx2(LinAvx2(G.v[0], G.v[G.n - 1]), x, w, n, d, id, idx);
    return true;
  }
  if (G.n <= 16) {
    *err = sym_eval_avx2(TabAvx2(G), x, w, n, d, id, idx);
    return true;
  }
  return false;
}
EDGEQ_TARGET_AVX2 bool sym_levels_avx2_any(const float* x, const float* w, int n, const Grid& G, float iscale,
                                           uint8_t* tmp, float* sxl, float* sll) {
  if (G.linear) {
    sym_levels_avx2(LinAvx2(G.v[0], G.v[G.n - 1]), x, w, n, iscale, tmp, sxl, sll);
    return true;
  }
  if (G.n <= 16) {
    sym_levels_avx2(TabAvx2(G), x, w, n, iscale, tmp, sxl, sll);
    return true;
  }
  return false;
}
// Candidate-parallel kernels: vector lane c evaluates candidate c on the whole group, doing exactly the
// operations of scalar accumulator j of the element-parallel loops above, in the same order (per lane:
// acc_j = ((0 + t_j) + t_{j+8}) + ..., then sum8's tree over j). So one pass scores up to W candidates
// with the bytes of W single calls. The clamp of t to [lo - 1, hi + 1] before rounding is left out: for
// t outside it the magic-number rounding still lands outside [lo, hi] (or is NaN, which max maps to lo),
// so the final clamp gives the same level.
// Written with GCC vector extensions (IEEE add/sub/mul, max/min as the SSE selects: a > b ? a : b) and
// instantiated for AVX-512 (16 lanes) and AVX2 (8 lanes); the file is compiled with -ffp-contract=off, so
// nothing is fused into an FMA. Every candidate array (inputs and outputs) holds kPadLanes(nc) floats, the
// inputs zero past nc: the kernels load and store whole vectors.
template <class V, int W>
[[gnu::always_inline]] inline void asym_eval_lanes(const float* x, const float* w, int n, float hi, const float* s,
                                                   const float* m, int nc, float* err) {
  const V zero = {};
  const V vhi = zero + hi;
  for (int c0 = 0; c0 < nc; c0 += W) {
    V vs, vm;
    std::memcpy(&vs, s + c0, sizeof vs);
    std::memcpy(&vm, m + c0, sizeof vm);
    V vid = 1.f / vs;
    vid = vs == zero ? zero : vid;  // s == 0: level 0 everywhere, as asym_eval
    V acc[8];
    for (int j = 0; j < 8; ++j) {
      V a = zero;
      for (int i = j; i < n; i += 8) {
        const V t = (x[i] - vm) * vid;
        V q = (t + kRoundMagic) - kRoundMagic;
        q = q > zero ? q : zero;
        q = q < vhi ? q : vhi;
        const V d = x[i] - (vs * q + vm);
        a = a + (w[i] * d) * d;
      }
      acc[j] = a;
    }
    const V r = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    std::memcpy(err + c0, &r, sizeof r);
  }
}

// asym_grid_avx2's sums for nc inverse scales.
template <class V, int W>
[[gnu::always_inline]] inline void asym_grid_lanes(const float* x, const float* w, int n, float hi, float lo_a,
                                                   const float* iscale, int nc, float* sl, float* sl2, float* sxl) {
  const V zero = {};
  const V vhi = zero + hi;
  for (int c0 = 0; c0 < nc; c0 += W) {
    V vis;
    std::memcpy(&vis, iscale + c0, sizeof vis);
    V a1[8], a2[8], a3[8];
    for (int j = 0; j < 8; ++j) {
      V b1 = zero, b2 = zero, b3 = zero;
      for (int i = j; i < n; i += 8) {
        const V t = (x[i] - lo_a) * vis;
        V q = (t + kRoundMagic) - kRoundMagic;
        q = q > zero ? q : zero;
        q = q < vhi ? q : vhi;
        const V wq = w[i] * q;
        b1 = b1 + wq;
        b2 = b2 + wq * q;
        b3 = b3 + wq * x[i];
      }
      a1[j] = b1;
      a2[j] = b2;
      a3[j] = b3;
    }
    const V r1 = ((a1[0] + a1[1]) + (a1[2] + a1[3])) + ((a1[4] + a1[5]) + (a1[6] + a1[7]));
    const V r2 = ((a2[0] + a2[1]) + (a2[2] + a2[3])) + ((a2[4] + a2[5]) + (a2[6] + a2[7]));
    const V r3 = ((a3[0] + a3[1]) + (a3[2] + a3[3])) + ((a3[4] + a3[5]) + (a3[6] + a3[7]));
    std::memcpy(sl + c0, &r1, sizeof r1);
    std::memcpy(sl2 + c0, &r2, sizeof r2);
    std::memcpy(sxl + c0, &r3, sizeof r3);
  }
}

// sym_levels_avx2's sums (linear grid [lo, hi]) for nc inverse scales.
template <class V, int W>
[[gnu::always_inline]] inline void sym_levels_lanes(const float* x, const float* w, int n, float lo, float hi,
                                                    const float* iscale, int nc, float* sxl, float* sll) {
  const V zero = {};
  const V vlo = zero + lo, vhi = zero + hi;
  for (int c0 = 0; c0 < nc; c0 += W) {
    V vis;
    std::memcpy(&vis, iscale + c0, sizeof vis);
    V b[8], c[8];
    for (int j = 0; j < 8; ++j) {
      V bj = zero, cj = zero;
      for (int i = j; i < n; i += 8) {
        const V t = x[i] * vis;
        V l = (t + kRoundMagic) - kRoundMagic;
        l = l > vlo ? l : vlo;
        l = l < vhi ? l : vhi;
        bj = bj + (w[i] * x[i]) * l;
        cj = cj + (w[i] * l) * l;
      }
      b[j] = bj;
      c[j] = cj;
    }
    const V rb = ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
    const V rc = ((c[0] + c[1]) + (c[2] + c[3])) + ((c[4] + c[5]) + (c[6] + c[7]));
    std::memcpy(sxl + c0, &rb, sizeof rb);
    std::memcpy(sll + c0, &rc, sizeof rc);
  }
}

typedef float V8f __attribute__((vector_size(32)));
typedef float V16f __attribute__((vector_size(64)));
#define EDGEQ_TARGET_AVX512 __attribute__((target("avx512f")))

EDGEQ_TARGET_AVX2 void asym_eval_many_avx2(const float* x, const float* w, int n, float hi, const float* s,
                                           const float* m, int nc, float* err) {
  asym_eval_lanes<V8f, 8>(x, w, n, hi, s, m, nc, err);
}
// The AVX-512 versions of the two hottest kernels spell the same lanes with intrinsics: vrndscaleps (round
// half to even) instead of the magic-number pair, which gives the same level after the clamp (for |t| < 2^22
// both are the exact rounding; beyond, both land outside [0, hi] on t's side; NaN stays NaN), and vmaxps /
// vminps, which are the selects above. GCC 12 reports the intrinsics' undefined pass-through operands as
// maybe-uninitialized (a false positive of its own headers).
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
EDGEQ_TARGET_AVX512 inline __m512 asym_level16(__m512 t, __m512 zero, __m512 vhi) {
  const __m512 q = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_min_ps(_mm512_max_ps(q, zero), vhi);
}
EDGEQ_TARGET_AVX512 inline __m512 sum8_lanes16(const __m512* a) {
  return _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])),
                       _mm512_add_ps(_mm512_add_ps(a[4], a[5]), _mm512_add_ps(a[6], a[7])));
}
EDGEQ_TARGET_AVX512 void asym_eval_many_avx512(const float* x, const float* w, int n, float hi, const float* s,
                                               const float* m, int nc, float* err) {
  const __m512 zero = _mm512_setzero_ps(), vhi = _mm512_set1_ps(hi), one = _mm512_set1_ps(1.f);
  for (int c0 = 0; c0 < nc; c0 += 16) {
    const __m512 vs = _mm512_loadu_ps(s + c0), vm = _mm512_loadu_ps(m + c0);
    const __m512 vid = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(vs, zero, _CMP_NEQ_UQ), one, vs);  // s == 0: 0
    __m512 acc[8];
    for (int j = 0; j < 8; ++j) {
      __m512 a = zero;
      for (int i = j; i < n; i += 8) {
        const __m512 xb = _mm512_set1_ps(x[i]);
        const __m512 q = asym_level16(_mm512_mul_ps(_mm512_sub_ps(xb, vm), vid), zero, vhi);
        const __m512 d = _mm512_sub_ps(xb, _mm512_add_ps(_mm512_mul_ps(vs, q), vm));
        a = _mm512_add_ps(a, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(w[i]), d), d));
      }
      acc[j] = a;
    }
    _mm512_storeu_ps(err + c0, sum8_lanes16(acc));
  }
}
EDGEQ_TARGET_AVX2 void asym_grid_many_avx2(const float* x, const float* w, int n, float hi, float lo_a,
                                           const float* iscale, int nc, float* sl, float* sl2, float* sxl) {
  asym_grid_lanes<V8f, 8>(x, w, n, hi, lo_a, iscale, nc, sl, sl2, sxl);
}
EDGEQ_TARGET_AVX512 void asym_grid_many_avx512(const float* x, const float* w, int n, float hi, float lo_a,
                                               const float* iscale, int nc, float* sl, float* sl2, float* sxl) {
  const __m512 zero = _mm512_setzero_ps(), vhi = _mm512_set1_ps(hi);
  for (int c0 = 0; c0 < nc; c0 += 16) {
    const __m512 vis = _mm512_loadu_ps(iscale + c0);
    __m512 a1[8], a2[8], a3[8];
    for (int j = 0; j < 8; ++j) {
      __m512 b1 = zero, b2 = zero, b3 = zero;
      for (int i = j; i < n; i += 8) {
        const __m512 q = asym_level16(_mm512_mul_ps(_mm512_set1_ps(x[i] - lo_a), vis), zero, vhi);
        const __m512 wq = _mm512_mul_ps(_mm512_set1_ps(w[i]), q);
        b1 = _mm512_add_ps(b1, wq);
        b2 = _mm512_add_ps(b2, _mm512_mul_ps(wq, q));
        b3 = _mm512_add_ps(b3, _mm512_mul_ps(wq, _mm512_set1_ps(x[i])));
      }
      a1[j] = b1;
      a2[j] = b2;
      a3[j] = b3;
    }
    _mm512_storeu_ps(sl + c0, sum8_lanes16(a1));
    _mm512_storeu_ps(sl2 + c0, sum8_lanes16(a2));
    _mm512_storeu_ps(sxl + c0, sum8_lanes16(a3));
  }
}
#pragma GCC diagnostic pop
EDGEQ_TARGET_AVX2 void sym_levels_many_avx2(const float* x, const float* w, int n, float lo, float hi,
                                            const float* iscale, int nc, float* sxl, float* sll) {
  sym_levels_lanes<V8f, 8>(x, w, n, lo, hi, iscale, nc, sxl, sll);
}
EDGEQ_TARGET_AVX512 void sym_levels_many_avx512(const float* x, const float* w, int n, float lo, float hi,
                                                const float* iscale, int nc, float* sxl, float* sll) {
  sym_levels_lanes<V16f, 16>(x, w, n, lo, hi, iscale, nc, sxl, sll);
}

// 0: the element-parallel paths one candidate at a time; 8 / 16: the candidate-parallel kernels.
bool g_candidate_lanes = true;  // switched only by set_quantize_candidate_lanes
inline int quant_lanes() {
  if (!g_candidate_lanes) return 0;
  const cpu::Level l = cpu::level();
  return l == cpu::Level::Avx512 ? 16 : l == cpu::Level::Avx2 ? 8 : 0;
}
#endif

// Error of a fixed (exactly representable) scale d with levels re-rounded; fills idx.
float sym_eval(const float* x, const float* w, int n, const Grid& G, float d, uint8_t* idx) {
  float acc[8] = {};
  if (d == 0.f) {
    const int z = G.zero_index();
    const float zv = 0.f * G.v[z];
    for (int i = 0; i < n; i += 8)
      for (int j = 0; j < 8; ++j) {
        idx[i + j] = static_cast<uint8_t>(z);
        float diff = x[i + j] - zv;
        acc[j] += w[i + j] * diff * diff;
      }
    return sum8(acc);
  }
  const float id = 1.f / d;
#if EDGEQ_QAVX2
  {
    float e;
    if (quant_avx2() && sym_eval_avx2_any(x, w, n, G, d, id, idx, &e)) return e;
  }
#endif
  if (G.linear) {
    const float lo = G.v[0], hi = G.v[G.n - 1];
#if EDGEQ_QSSE2
    const LinSse S(lo, hi);
    const __m128 vid = _mm_set1_ps(id), vd = _mm_set1_ps(d);
    sse_errors(x, w, n, acc, [&](int i, __m128 x0, __m128 x1, __m128& r0, __m128& r1) {
      const __m128 l0 = S.level(_mm_mul_ps(x0, vid)), l1 = S.level(_mm_mul_ps(x1, vid));
      S.store_idx(idx + i, l0, l1);
      r0 = _mm_mul_ps(vd, l0);
      r1 = _mm_mul_ps(vd, l1);
    });
#else
    for (int i = 0; i < n; i += 8)
      for (int j = 0; j < 8; ++j) {
        const float l = lin_level(x[i + j] * id, lo, hi);
        idx[i + j] = static_cast<uint8_t>(static_cast<int>(l - lo));
        float diff = x[i + j] - d * l;
        acc[j] += w[i + j] * diff * diff;
      }
#endif
  } else {
#if EDGEQ_QSSE2
    if (G.n <= 16) {
      const TabSse S(G);
      const __m128 vid = _mm_set1_ps(id), vd = _mm_set1_ps(d);
      sse_errors(x, w, n, acc, [&](int i, __m128 x0, __m128 x1, __m128& r0, __m128& r1) {
        __m128i k0, k1;
        const __m128 l0 = S.level(_mm_mul_ps(x0, vid), &k0), l1 = S.level(_mm_mul_ps(x1, vid), &k1);
        TabSse::store_idx(idx + i, k0, k1);
        r0 = _mm_mul_ps(vd, l0);
        r1 = _mm_mul_ps(vd, l1);
      });
      return sum8(acc);
    }
#endif
    for (int i = 0; i < n; i += 8)
      for (int j = 0; j < 8; ++j) {
        int k = G.nearest(x[i + j] * id);
        idx[i + j] = static_cast<uint8_t>(k);
        float diff = x[i + j] - d * G.v[k];
        acc[j] += w[i + j] * diff * diff;
      }
  }
  return sum8(acc);
}

// Levels for inverse scale iscale into tmp; returns sum w x l and sum w l^2.
inline void sym_levels(const float* x, const float* w, int n, const Grid& G, float iscale, uint8_t* tmp, float* sxl_out,
                       float* sll_out) {
#if EDGEQ_QAVX2
  if (quant_avx2() && sym_levels_avx2_any(x, w, n, G, iscale, tmp, sxl_out, sll_out)) return;
#endif
  float axl[8] = {}, all[8] = {};
  if (G.linear) {
    const float lo = G.v[0], hi = G.v[G.n - 1];
#if EDGEQ_QSSE2
    const LinSse S(lo, hi);
    const __m128 vis = _mm_set1_ps(iscale);
    __m128 b0 = _mm_setzero_ps(), b1 = _mm_setzero_ps(), c0 = _mm_setzero_ps(), c1 = _mm_setzero_ps();
    for (int i = 0; i < n; i += 8) {
      const __m128 x0 = _mm_loadu_ps(x + i), x1 = _mm_loadu_ps(x + i + 4);
      const __m128 w0 = _mm_loadu_ps(w + i), w1 = _mm_loadu_ps(w + i + 4);
      const __m128 l0 = S.level(_mm_mul_ps(x0, vis)), l1 = S.level(_mm_mul_ps(x1, vis));
      S.store_idx(tmp + i, l0, l1);
      b0 = _mm_add_ps(b0, _mm_mul_ps(_mm_mul_ps(w0, x0), l0));
      b1 = _mm_add_ps(b1, _mm_mul_ps(_mm_mul_ps(w1, x1), l1));
      c0 = _mm_add_ps(c0, _mm_mul_ps(_mm_mul_ps(w0, l0), l0));
      c1 = _mm_add_ps(c1, _mm_mul_ps(_mm_mul_ps(w1, l1), l1));
    }
    store8(axl, b0, b1);
    store8(all, c0, c1);
#else
    for (int i = 0; i < n; i += 8)
      for (int j = 0; j < 8; ++j) {
        const float l = lin_level(x[i + j] * iscale, lo, hi);
        tmp[i + j] = static_cast<uint8_t>(static_cast<int>(l - lo));
        axl[j] += w[i + j] * x[i + j] * l;
        all[j] += w[i + j] * l * l;
      }
#endif
  } else {
#if EDGEQ_QSSE2
    if (G.n <= 16) {
      const TabSse S(G);
      const __m128 vis = _mm_set1_ps(iscale);
      __m128 b0 = _mm_setzero_ps(), b1 = _mm_setzero_ps(), c0 = _mm_setzero_ps(), c1 = _mm_setzero_ps();
      for (int i = 0; i < n; i += 8) {
        const __m128 x0 = _mm_loadu_ps(x + i), x1 = _mm_loadu_ps(x + i + 4);
        const __m128 w0 = _mm_loadu_ps(w + i), w1 = _mm_loadu_ps(w + i + 4);
        __m128i k0, k1;
        const __m128 l0 = S.level(_mm_mul_ps(x0, vis), &k0), l1 = S.level(_mm_mul_ps(x1, vis), &k1);
        TabSse::store_idx(tmp + i, k0, k1);
        b0 = _mm_add_ps(b0, _mm_mul_ps(_mm_mul_ps(w0, x0), l0));
        b1 = _mm_add_ps(b1, _mm_mul_ps(_mm_mul_ps(w1, x1), l1));
        c0 = _mm_add_ps(c0, _mm_mul_ps(_mm_mul_ps(w0, l0), l0));
        c1 = _mm_add_ps(c1, _mm_mul_ps(_mm_mul_ps(w1, l1), l1));
      }
      store8(axl, b0, b1);
      store8(all, c0, c1);
      *sxl_out = sum8(axl);
      *sll_out = sum8(all);
      return;
    }
#endif
    for (int i = 0; i < n; i += 8)
      for (int j = 0; j < 8; ++j) {
        int k = G.nearest(x[i + j] * iscale);
        tmp[i + j] = static_cast<uint8_t>(k);
        const float l = G.v[k];
        axl[j] += w[i + j] * x[i + j] * l;
        all[j] += w[i + j] * l * l;
      }
  }
  *sxl_out = sum8(axl);
  *sll_out = sum8(all);
}

// sym_levels' sums for nc inverse scales (levels not kept).
void sym_levels_many(const float* x, const float* w, int n, const Grid& G, const float* iscale, int nc, float* sxl,
                     float* sll) {
#if EDGEQ_QAVX2
  if (G.linear && quant_lanes() == 16) return sym_levels_many_avx512(x, w, n, G.lo(), G.hi(), iscale, nc, sxl, sll);
  if (G.linear && quant_lanes() == 8) return sym_levels_many_avx2(x, w, n, G.lo(), G.hi(), iscale, nc, sxl, sll);
#endif
  uint8_t tmp[256];
  for (int c = 0; c < nc; ++c) sym_levels(x, w, n, G, iscale[c], tmp, &sxl[c], &sll[c]);
}

// Continuous search: the best unconstrained scale (any sign) for a group. Returns the scale; *err_out the
// error of the continuous solution. idx receives the levels.
float sym_search(const float* x, const float* w, int n, const Grid& G, int ntry, uint8_t* idx, float* err_out) {
  float amax = 0, maxv = 0, sum_wx2 = 0;
  for (int i = 0; i < n; ++i) {
    float a = std::fabs(x[i]);
    if (a > amax) { amax = a; maxv = x[i]; }
    sum_wx2 += w[i] * x[i] * x[i];
  }
  if (amax == 0.f) {
    const int z = G.zero_index();
    for (int i = 0; i < n; ++i) idx[i] = static_cast<uint8_t>(z);
    *err_out = 0;
    return 0.f;
  }
  if (ntry > kMaxTry) fail("quantize: internal error: search grid of {} steps", ntry);
  uint8_t tmp[256];
  float best_err = FLT_MAX, best_scale = 0;
  // The grid of inverse scales around both ends, scored in one batch; the first best one wins, as if tried
  // one by one.
  constexpr int kCap = kPadLanes(2 * (2 * kMaxTry + 1));
  float isc[kCap], sxl[kCap], sll[kCap];
  int nc = 0;
  for (float end : {G.lo(), G.hi()}) {
    if (end == 0.f) continue;
    const float aend = std::fabs(end);
    const float rel = std::max(0.1f / aend, 0.004f);
    for (int t = -ntry; t <= ntry; ++t) {
      float f = 1.f + rel * static_cast<float>(t);
      if (f <= 0.05f) continue;
      isc[nc++] = end * f / maxv;
    }
  }
  zero_pad(isc, nc);
  sym_levels_many(x, w, n, G, isc, nc, sxl, sll);
  int bi = -1;
  for (int c = 0; c < nc; ++c) {
    if (!(sll[c] > 0)) continue;
    float e = sum_wx2 - sxl[c] * sxl[c] / sll[c];
    if (e < best_err) {
      best_err = e;
      best_scale = sxl[c] / sll[c];
      bi = c;
    }
  }
  if (bi >= 0) {
    float a, b;
    sym_levels(x, w, n, G, isc[bi], idx, &a, &b);
  }
  auto try_iscale = [&](float iscale) {
    float sxl, sll;
    sym_levels(x, w, n, G, iscale, tmp, &sxl, &sll);
    if (!(sll > 0)) return;
    float e = sum_wx2 - sxl * sxl / sll;
    if (e < best_err) {
      best_err = e;
      best_scale = sxl / sll;
      std::memcpy(idx, tmp, static_cast<size_t>(n));
    }
  };
  if (best_err == FLT_MAX) {  // all weights zero
    best_scale = maxv / (std::fabs(G.lo()) >= std::fabs(G.hi()) ? G.lo() : G.hi());
    sym_eval(x, w, n, G, best_scale, idx);
    *err_out = 0;
    return best_scale;
  }
  for (int it = 0; it < 4 && best_scale != 0.f; ++it) {
    float before = best_err;
    try_iscale(1.f / best_scale);
    if (!(best_err < before)) break;
  }
  *err_out = std::max(best_err, 0.f);
  return best_scale;
}

// One group with its own f16 (or f32) scale: legacy Q4_0/Q5_0/Q8_0/IQ4_NL, TQ*, Q8_K. Returns the stored scale.
template <bool kF16>
float sym_block(const float* x, const float* w, int n, const Grid& G, int ntry, float ref_scale, uint8_t* idx) {
  auto rnd = [](float s) { return kF16 ? round_f16(s) : s; };
  uint8_t tmp[256];
  float e0;
  float s = sym_search(x, w, n, G, ntry, tmp, &e0);
  float best_d = rnd(s);
  float best = sym_eval(x, w, n, G, best_d, idx);
  auto consider = [&](float d) {
    d = rnd(d);
    if (!std::isfinite(d) || d == best_d) return;
    float e = sym_eval(x, w, n, G, d, tmp);
    if (e < best) {
      best = e;
      best_d = d;
      std::memcpy(idx, tmp, static_cast<size_t>(n));
    }
  };
  consider(ref_scale);
  // Least-squares refits with the rounded scale's levels, then the f16 neighbours of the best scale.
  for (int it = 0; it < 3; ++it) {
    float sxl = 0, sll = 0;
    for (int i = 0; i < n; ++i) {
      float l = G.v[idx[i]];
      sxl += w[i] * x[i] * l;
      sll += w[i] * l * l;
    }
    if (sll <= 0) break;
    float before = best;
    consider(sxl / sll);
    if (!(best < before)) break;
  }
  if (kF16 && best_d != 0.f) {
    uint16_t h = f32_to_f16(best_d);
    for (int dh : {-1, 1}) {
      uint16_t h2 = static_cast<uint16_t>(h + dh);
      if ((h2 & 0x7C00) == 0x7C00) continue;
      if ((h2 ^ h) & 0x8000) continue;
      consider(f16_to_f32(h2));
    }
  }
  return best_d;
}

// ---------------------------------------------------------------------------------------------------
// Asymmetric groups: value = s * q + m, q in 0..nmax.

#if EDGEQ_QAVX2

EDGEQ_TARGET_AVX2 float asym_eval_avx2(const float* x, const float* w, int n, float hi, float s, float m, float id,
                                       uint8_t* L) {
  const LinAvx2 S(0.f, hi);
  const __m256 vid = _mm256_set1_ps(id), vs = _mm256_set1_ps(s), vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    const __m256 q = S.level(_mm256_mul_ps(_mm256_sub_ps(xv, vm), vid));
    S.store_idx(L + i, q);
    const __m256 d = _mm256_sub_ps(xv, _mm256_add_ps(_mm256_mul_ps(vs, q), vm));
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(w + i), d), d));
  }
  alignas(32) float a[8];
  _mm256_store_ps(a, acc);
  return sum8(a);
}

EDGEQ_TARGET_AVX2 void asym_levels_avx2(const float* x, int n, float hi, float m, float id, uint8_t* L) {
  const LinAvx2 S(0.f, hi);
  const __m256 vid = _mm256_set1_ps(id), vm = _mm256_set1_ps(m);
  for (int i = 0; i < n; i += 8) S.store_idx(L + i, S.level(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vid)));
}

// asym_sums on 8 lanes: (w * l) * l and (w * l) * x, as the scalar a2, a3 terms.
EDGEQ_TARGET_AVX2 void asym_sums_avx2(const uint8_t* q, const float* x, const float* w, int n, float* sl, float* sl2,
                                      float* sxl) {
  __m256 a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    const __m256 l = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i))));
    const __m256 wl = _mm256_mul_ps(_mm256_loadu_ps(w + i), l);
    a1 = _mm256_add_ps(a1, wl);
    a2 = _mm256_add_ps(a2, _mm256_mul_ps(wl, l));
    a3 = _mm256_add_ps(a3, _mm256_mul_ps(wl, _mm256_loadu_ps(x + i)));
  }
  alignas(32) float b1[8], b2[8], b3[8];
  _mm256_store_ps(b1, a1);
  _mm256_store_ps(b2, a2);
  _mm256_store_ps(b3, a3);
  *sl = sum8(b1);
  *sl2 = sum8(b2);
  *sxl = sum8(b3);
}

// Levels q = lin_level((x - lo) * iscale, 0, hi) into L, and the weighted sums the least-squares fit needs:
// sum w*q, sum w*q*q, sum w*q*x (per-lane, then summed as sum8).
EDGEQ_TARGET_AVX2 void asym_grid_avx2(const float* x, const float* w, int n, float hi, float lo_a, float iscale,
                                      uint8_t* L, float* sl, float* sl2, float* sxl) {
  const LinAvx2 S(0.f, hi);
  const __m256 vlo = _mm256_set1_ps(lo_a), vis = _mm256_set1_ps(iscale);
  __m256 a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i), wv = _mm256_loadu_ps(w + i);
    const __m256 q = S.level(_mm256_mul_ps(_mm256_sub_ps(xv, vlo), vis));
    S.store_idx(L + i, q);
    const __m256 wq = _mm256_mul_ps(wv, q);
    a1 = _mm256_add_ps(a1, wq);
    a2 = _mm256_add_ps(a2, _mm256_mul_ps(wq, q));
    a3 = _mm256_add_ps(a3, _mm256_mul_ps(wq, xv));
  }
  alignas(32) float b1[8], b2[8], b3[8];
  _mm256_store_ps(b1, a1);
  _mm256_store_ps(b2, a2);
  _mm256_store_ps(b3, a3);
  *sl = sum8(b1);
  *sl2 = sum8(b2);
  *sxl = sum8(b3);
}
#endif

float asym_eval(const float* x, const float* w, int n, int nmax, float s, float m, uint8_t* L) {
  float acc[8] = {};
  if (s == 0.f) {
    for (int i = 0; i < n; i += 8)
      for (int j = 0; j < 8; ++j) {
        L[i + j] = 0;
        float diff = x[i + j] - (0.f * s + m);
        acc[j] += w[i + j] * diff * diff;
      }
    return sum8(acc);
  }
  const float id = 1.f / s, hi = static_cast<float>(nmax);
#if EDGEQ_QAVX2
  if (quant_avx2()) return asym_eval_avx2(x, w, n, hi, s, m, id, L);
#endif
#if EDGEQ_QSSE2
  const LinSse S(0.f, hi);
  const __m128 vid = _mm_set1_ps(id), vs = _mm_set1_ps(s), vm = _mm_set1_ps(m);
  sse_errors(x, w, n, acc, [&](int i, __m128 x0, __m128 x1, __m128& r0, __m128& r1) {
    const __m128 q0 = S.level(_mm_mul_ps(_mm_sub_ps(x0, vm), vid)), q1 = S.level(_mm_mul_ps(_mm_sub_ps(x1, vm), vid));
    S.store_idx(L + i, q0, q1);
    r0 = _mm_add_ps(_mm_mul_ps(vs, q0), vm);
    r1 = _mm_add_ps(_mm_mul_ps(vs, q1), vm);
  });
#else
  for (int i = 0; i < n; i += 8)
    for (int j = 0; j < 8; ++j) {
      const float q = lin_level((x[i + j] - m) * id, 0.f, hi);
      L[i + j] = static_cast<uint8_t>(static_cast<int>(q));
      float p = s * q;
      float diff = x[i + j] - (p + m);
      acc[j] += w[i + j] * diff * diff;
    }
#endif
  return sum8(acc);
}

// The levels asym_eval writes for (s, m), without the error.
void asym_levels(const float* x, int n, int nmax, float s, float m, uint8_t* L) {
  if (s == 0.f) {
    std::memset(L, 0, static_cast<size_t>(n));
    return;
  }
  const float id = 1.f / s, hi = static_cast<float>(nmax);
#if EDGEQ_QAVX2
  if (quant_avx2()) return asym_levels_avx2(x, n, hi, m, id, L);
#endif
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(static_cast<int>(lin_level((x[i] - m) * id, 0.f, hi)));
}

// Errors of nc candidates: err[c] = asym_eval(x, w, n, nmax, s[c], m[c], ...) (levels not kept). Arrays of
// kPadLanes(nc) floats, as every *_many function here.
void asym_eval_many(const float* x, const float* w, int n, int nmax, const float* s, const float* m, int nc,
                    float* err) {
#if EDGEQ_QAVX2
  if (quant_lanes() == 16) return asym_eval_many_avx512(x, w, n, static_cast<float>(nmax), s, m, nc, err);
  if (quant_lanes() == 8) return asym_eval_many_avx2(x, w, n, static_cast<float>(nmax), s, m, nc, err);
#endif
  uint8_t tmp[256];
  for (int c = 0; c < nc; ++c) err[c] = asym_eval(x, w, n, nmax, s[c], m[c], tmp);
}

// Weighted sums sl = sum w*q, sl2 = sum w*q*q, sxl = sum w*q*x of the levels q (per lane, then sum8).
void asym_sums(const uint8_t* q, const float* x, const float* w, int n, float* sl, float* sl2, float* sxl) {
#if EDGEQ_QAVX2
  if (quant_avx2()) return asym_sums_avx2(q, x, w, n, sl, sl2, sxl);
#endif
  float a1[8] = {}, a2[8] = {}, a3[8] = {};
  for (int i = 0; i < n; i += 8)
    for (int j = 0; j < 8; ++j) {
      const float l = q[i + j], ww = w[i + j];
      a1[j] += ww * l;
      a2[j] += ww * l * l;
      a3[j] += ww * l * x[i + j];
    }
  *sl = sum8(a1);
  *sl2 = sum8(a2);
  *sxl = sum8(a3);
}

// The sums of the levels q = lin_level((x - lo_a) * iscale[c], 0, nmax) for nc inverse scales.
void asym_grid_many(const float* x, const float* w, int n, int nmax, float lo_a, const float* iscale, int nc,
                    float* sl, float* sl2, float* sxl) {
  const float hi = static_cast<float>(nmax);
  uint8_t tmp[256];
#if EDGEQ_QAVX2
  if (quant_lanes() == 16) return asym_grid_many_avx512(x, w, n, hi, lo_a, iscale, nc, sl, sl2, sxl);
  if (quant_lanes() == 8) return asym_grid_many_avx2(x, w, n, hi, lo_a, iscale, nc, sl, sl2, sxl);
  if (quant_avx2()) {
    for (int c = 0; c < nc; ++c) asym_grid_avx2(x, w, n, hi, lo_a, iscale[c], tmp, &sl[c], &sl2[c], &sxl[c]);
    return;
  }
#endif
  for (int c = 0; c < nc; ++c) {
    for (int i = 0; i < n; ++i)
      tmp[i] = static_cast<uint8_t>(static_cast<int>(lin_level((x[i] - lo_a) * iscale[c], 0.f, hi)));
    asym_sums(tmp, x, w, n, &sl[c], &sl2[c], &sxl[c]);
  }
}

// Continuous search for (s >= 0, m); with nonpos_min the offset m is kept <= 0 (k-quants).
float asym_search(const float* x, const float* w, int n, int nmax, bool nonpos_min, int ntry, float* s_out,
                  float* m_out, uint8_t* L, bool extra_anchors) {
  float mn = x[0], mx = x[0], sw = 0, sx = 0;
  for (int i = 0; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
    sw += w[i];
    sx += w[i] * x[i];
  }
  if (nonpos_min && mn > 0) mn = 0;
  if (mx == mn) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *s_out = 0;
    *m_out = mn;
    float e = 0;
    for (int i = 0; i < n; ++i) e += w[i] * (x[i] - mn) * (x[i] - mn);
    return e;
  }
  uint8_t tmp[256];
  float best_err = FLT_MAX, best_s = (mx - mn) / static_cast<float>(nmax), best_m = mn;
  // Least-squares (s, m) for levels with weighted sums sl = sum w*q, sl2 = sum w*q*q, sxl = sum w*q*x.
  auto fit_sums = [&](float sl, float sl2, float sxl, float* s, float* m) -> bool {
    float D = sw * sl2 - sl * sl;
    if (!(D > 0)) return false;
    *s = (sw * sxl - sx * sl) / D;
    *m = (sl2 * sx - sl * sxl) / D;
    if (nonpos_min && *m > 0) {
      *m = 0;
      *s = sl2 > 0 ? sxl / sl2 : 0;
    }
    return *s > 0;
  };
  auto fit = [&](const uint8_t* q, float* s, float* m) -> bool {
    float sl, sl2, sxl;
    asym_sums(q, x, w, n, &sl, &sl2, &sxl);
    return fit_sums(sl, sl2, sxl, s, m);
  };
  auto consider = [&](float s, float m) {
    if (!(s > 0) || !std::isfinite(s) || !std::isfinite(m)) return;
    float e = asym_eval(x, w, n, nmax, s, m, tmp);
    if (e < best_err) {
      best_err = e;
      best_s = s;
      best_m = m;
      std::memcpy(L, tmp, static_cast<size_t>(n));
    }
  };
  // The start, then the least-squares fits of the levels of each grid point, scored in one batch; the first
  // best candidate wins, as if they were considered one by one.
  if (ntry > kMaxTry) fail("quantize: internal error: search grid of {} steps", ntry);
  constexpr int kCap = kPadLanes(1 + 3 * (2 * kMaxTry + 1));
  float cs[kCap], cm[kCap], ce[kCap];
  int nc = 0;
  auto add = [&](float s, float m) {
    if (!(s > 0) || !std::isfinite(s) || !std::isfinite(m)) return;
    cs[nc] = s;
    cm[nc] = m;
    ++nc;
  };
  add(best_s, best_m);
  // Grids anchored on the full range and on the ranges without the lowest / highest value (clipping an
  // outlier can lower the error of the other values).
  float mn2 = mx, mx2 = mn;
  if (extra_anchors) {
    int imn = 0, imx = 0;
    for (int i = 1; i < n; ++i) {
      if (x[i] < x[imn]) imn = i;
      if (x[i] > x[imx]) imx = i;
    }
    for (int i = 0; i < n; ++i) {
      if (i != imn) mn2 = std::min(mn2, x[i]);
      if (i != imx) mx2 = std::max(mx2, x[i]);
    }
    if (nonpos_min && mn2 > 0) mn2 = 0;
  }
  const float anchors[3][2] = {{mn, mx}, {mn2, mx}, {mn, mx2}};
  for (int a = 0; a < (extra_anchors ? 3 : 1); ++a) {
    const float lo_a = anchors[a][0], range = anchors[a][1] - anchors[a][0];
    if (!(range > 0)) continue;
    constexpr int kGridCap = kPadLanes(2 * kMaxTry + 1);
    float isc[kGridCap], sl[kGridCap], sl2[kGridCap], sxl[kGridCap];
    int ni = 0;
    for (int t = -ntry; t <= ntry; ++t) {
      float iscale = (static_cast<float>(nmax) + 0.1f * static_cast<float>(t)) / range;
      if (iscale <= 0) continue;
      isc[ni++] = iscale;
    }
    zero_pad(isc, ni);
    asym_grid_many(x, w, n, nmax, lo_a, isc, ni, sl, sl2, sxl);
    for (int k = 0; k < ni; ++k) {
      float s, m;
      if (fit_sums(sl[k], sl2[k], sxl[k], &s, &m)) add(s, m);
    }
  }
  zero_pad(cs, nc);
  zero_pad(cm, nc);
  asym_eval_many(x, w, n, nmax, cs, cm, nc, ce);
  int bi = -1;
  for (int c = 0; c < nc; ++c)
    if (ce[c] < best_err) {
      best_err = ce[c];
      bi = c;
    }
  if (bi >= 0) {
    best_s = cs[bi];
    best_m = cm[bi];
    asym_levels(x, n, nmax, best_s, best_m, L);
  }
  for (int it = 0; it < 4; ++it) {
    float before = best_err, s, m;
    uint8_t q2[256];
    std::memcpy(q2, L, static_cast<size_t>(n));
    if (!fit(q2, &s, &m)) break;
    consider(s, m);
    if (!(best_err < before)) break;
  }
  *s_out = best_s;
  *m_out = best_m;
  return best_err;
}

// Legacy Q4_1/Q5_1 block: f16 d and f16 m.
void asym_block_f16(const float* x, const float* w, int n, int nmax, int ntry, float* d_out, float* m_out,
                    uint8_t* L) {
  float s, m;
  uint8_t tmp[256];
  asym_search(x, w, n, nmax, false, ntry, &s, &m, tmp, true);
  float bd = round_f16(s), bm = round_f16(m);
  float best = asym_eval(x, w, n, nmax, bd, bm, L);
  auto consider = [&](float d, float mm) {
    d = round_f16(d);
    mm = round_f16(mm);
    if (!std::isfinite(d) || !std::isfinite(mm) || d < 0) return;
    float e = asym_eval(x, w, n, nmax, d, mm, tmp);
    if (e < best) {
      best = e;
      bd = d;
      bm = mm;
      std::memcpy(L, tmp, static_cast<size_t>(n));
    }
  };
  // llama.cpp's reference: d = (max - min) / nmax, m = min.
  {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; ++i) { mn = std::min(mn, x[i]); mx = std::max(mx, x[i]); }
    consider((mx - mn) / static_cast<float>(nmax), mn);
  }
  // Least-squares refits of (d, m) for the levels of the rounded solution.
  float sw = 0, sx = 0;
  for (int i = 0; i < n; ++i) { sw += w[i]; sx += w[i] * x[i]; }
  for (int it = 0; it < 3; ++it) {
    float sl = 0, sl2 = 0, sxl = 0;
    for (int i = 0; i < n; ++i) {
      float l = L[i];
      sl += w[i] * l; sl2 += w[i] * l * l; sxl += w[i] * l * x[i];
    }
    float D = sw * sl2 - sl * sl;
    if (!(D > 0)) break;
    float before = best;
    float d = (sw * sxl - sx * sl) / D, mm = (sl2 * sx - sl * sxl) / D;
    consider(d, mm);
    // with d fixed, the best m for the current levels
    if (sw > 0) consider(bd, (sx - bd * sl) / sw);
    if (!(best < before)) break;
  }
  // f16 neighbours of m and d
  for (int dd = -1; dd <= 1; ++dd)
    for (int dm = -1; dm <= 1; ++dm) {
      if (!dd && !dm) continue;
      uint16_t hd = static_cast<uint16_t>(f32_to_f16(bd) + dd), hm = static_cast<uint16_t>(f32_to_f16(bm) + dm);
      if ((hd & 0x7C00) == 0x7C00 || (hm & 0x7C00) == 0x7C00) continue;
      if (((hd ^ f32_to_f16(bd)) & 0x8000) || ((hm ^ f32_to_f16(bm)) & 0x8000)) continue;
      consider(f16_to_f32(hd), f16_to_f32(hm));
    }
  *d_out = bd;
  *m_out = bm;
}

// ---------------------------------------------------------------------------------------------------
// k-quants with sub-block scale and min (Q2_K, Q4_K, Q5_K): value = (d*ls)*q - (dmin*lm).

struct AsymK {
  int nsub, sub, nmax, smax, radius, ntry;
  bool extra_anchors;  // also search grids that clip the lowest/highest value of a sub-block
};

// Best integer (ls, lm) for one sub-block near (ls0, lm0) given super-block scales; returns its error.
// The chosen sub-block's (scale, offset) go to *s_out, *m_out (its levels: asym_levels).
float asymk_sub_best(const float* x, const float* w, const AsymK& P, float d, float dmin, int ls0, int lm0,
                     uint8_t* ls, uint8_t* lm, float* s_out, float* m_out, int radius) {
  // All (a, b) of the neighbourhood scored in one batch; the first best wins, as if tried one by one.
  constexpr int kMaxRadius = 2;
  if (radius > kMaxRadius) fail("quantize: internal error: neighbourhood radius {}", radius);
  constexpr int kCap = kPadLanes((2 * kMaxRadius + 1) * (2 * kMaxRadius + 1));
  float s[kCap], m[kCap], e[kCap];
  const int a_lo = std::max(ls0 - radius, 0), a_hi = std::min(ls0 + radius, P.smax);
  const int b_lo = std::max(lm0 - radius, 0), b_hi = std::min(lm0 + radius, P.smax);
  const int nb = b_hi - b_lo + 1;
  float mb[2 * kMaxRadius + 1];
  for (int b = b_lo; b <= b_hi; ++b) mb[b - b_lo] = -(dmin * static_cast<float>(b));
  int nc = 0;
  for (int a = a_lo; a <= a_hi; ++a) {
    const float dl = d * static_cast<float>(a);
    for (int k = 0; k < nb; ++k, ++nc) {
      s[nc] = dl;
      m[nc] = mb[k];
    }
  }
  zero_pad(s, nc);
  zero_pad(m, nc);
  // GCC 12 cannot see that the loops above and zero_pad write s[0, kPadLanes(nc)) and m alike.
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
  asym_eval_many(x, w, P.sub, P.nmax, s, m, nc, e);
#pragma GCC diagnostic pop
  float best = FLT_MAX;
  int bi = -1;
  for (int c = 0; c < nc; ++c)
    if (e[c] < best) {
      best = e[c];
      bi = c;
    }
  if (bi >= 0) {
    *ls = static_cast<uint8_t>(a_lo + bi / nb);
    *lm = static_cast<uint8_t>(b_lo + bi % nb);
    *s_out = s[bi];
    *m_out = m[bi];
  }
  return best;
}

struct AsymKResult {
  float d = 0, dmin = 0, err = FLT_MAX;
  uint8_t ls[16] = {}, lm[16] = {};
  float s[16] = {}, m[16] = {};  // each sub-block's d * ls and -(dmin * lm), whose levels L holds
  uint8_t L[QK_K] = {};
};

void asymk_encode(const float* x, const float* w, const AsymK& P, AsymKResult& out) {
  float sc[16], mn[16];
  uint8_t Ls[QK_K];
  float max_sc = 0, max_mn = 0;
  for (int j = 0; j < P.nsub; ++j) {
    float s, m;
    asym_search(x + j * P.sub, w + j * P.sub, P.sub, P.nmax, true, P.ntry, &s, &m, Ls + j * P.sub, P.extra_anchors);
    sc[j] = s;
    mn[j] = -m;
    max_sc = std::max(max_sc, s);
    max_mn = std::max(max_mn, -m);
  }
  out.err = FLT_MAX;
  AsymKResult cur;
  auto run = [&](float d, float dmin, const uint8_t* ls_init, const uint8_t* lm_init) {
    cur.d = round_f16(d);
    cur.dmin = round_f16(dmin);
    cur.err = 0;
    for (int j = 0; j < P.nsub; ++j) {
      int ls0, lm0;
      if (ls_init) {
        ls0 = ls_init[j];
        lm0 = lm_init[j];
      } else {
        ls0 = cur.d > 0 ? std::min(P.smax, nearest_int(clampf(sc[j] / cur.d, 0.f, 1000.f))) : 0;
        lm0 = cur.dmin > 0 ? std::min(P.smax, nearest_int(clampf(mn[j] / cur.dmin, 0.f, 1000.f))) : 0;
      }
      // Refits start from the previous integer structure: a smaller neighbourhood suffices there.
      cur.err += asymk_sub_best(x + j * P.sub, w + j * P.sub, P, cur.d, cur.dmin, ls0, lm0, &cur.ls[j], &cur.lm[j],
                                &cur.s[j], &cur.m[j], ls_init ? 1 : P.radius);
    }
    if (cur.err < out.err) {  // levels only for a run that is kept (a sub-block without a finite error never is)
      out = cur;
      for (int j = 0; j < P.nsub; ++j) asym_levels(x + j * P.sub, P.sub, P.nmax, out.s[j], out.m[j], out.L + j * P.sub);
    }
  };
  if (max_sc == 0 && max_mn == 0) {
    run(0, 0, nullptr, nullptr);
    return;
  }
  const float fs = static_cast<float>(P.smax);
  run(max_sc / fs, max_mn / fs, nullptr, nullptr);
  // Least-squares refits of (d, dmin) given the integer structure, alternating with the local search.
  for (int it = 0; it < 3; ++it) {
    double saa = 0, sab = 0, sbb = 0, sxa = 0, sxb = 0;
    for (int j = 0; j < P.nsub; ++j)
      for (int i = 0; i < P.sub; ++i) {
        const int k = j * P.sub + i;
        double a = static_cast<double>(out.ls[j]) * out.L[k], b = -static_cast<double>(out.lm[j]);
        double ww = w[k];
        saa += ww * a * a; sab += ww * a * b; sbb += ww * b * b;
        sxa += ww * x[k] * a; sxb += ww * x[k] * b;
      }
    double D = saa * sbb - sab * sab;
    float nd, ndm;
    if (D > 0) {
      nd = static_cast<float>((sxa * sbb - sxb * sab) / D);
      ndm = static_cast<float>((saa * sxb - sab * sxa) / D);
    } else if (saa > 0) {
      nd = static_cast<float>(sxa / saa);
      ndm = out.dmin;
    } else {
      break;
    }
    if (!(nd >= 0) || !(ndm >= 0) || !std::isfinite(nd) || !std::isfinite(ndm)) break;
    float before = out.err;
    uint8_t ls[16], lm[16];
    std::memcpy(ls, out.ls, 16);
    std::memcpy(lm, out.lm, 16);
    run(nd, ndm, ls, lm);
    if (!(out.err < before)) break;
  }
}

// ---------------------------------------------------------------------------------------------------
// Symmetric k-quants with signed integer sub-block scales (Q3_K, Q6_K, IQ4_XS): value = (d*ls)*level.

struct SymK {
  int nsub, sub, smin, smax, radius, ntry;
};

struct SymKResult {
  float d = 0, err = FLT_MAX;
  int ls[16] = {};
  uint8_t idx[QK_K] = {};
};

void symk_encode(const float* x, const float* w, const SymK& P, const Grid& G, SymKResult& out) {
  float sc[16];
  uint8_t tmp[QK_K];
  float amax = 0, maxs = 0;
  for (int j = 0; j < P.nsub; ++j) {
    float e;
    sc[j] = sym_search(x + j * P.sub, w + j * P.sub, P.sub, G, P.ntry, tmp + j * P.sub, &e);
    if (std::fabs(sc[j]) > amax) { amax = std::fabs(sc[j]); maxs = sc[j]; }
  }
  out.err = FLT_MAX;
  SymKResult cur;
  auto run = [&](float d, const int* ls_init) {
    cur.d = round_f16(d);
    cur.err = 0;
    for (int j = 0; j < P.nsub; ++j) {
      int l0;
      if (ls_init) l0 = ls_init[j];
      else l0 = cur.d != 0.f ? nearest_int(clampf(sc[j] / cur.d, -1000.f, 1000.f)) : 0;
      l0 = std::clamp(l0, P.smin, P.smax);
      float best = FLT_MAX;
      const int radius = ls_init ? 1 : P.radius;  // refits start from the previous integer scales
      for (int a = l0 - radius; a <= l0 + radius; ++a) {
        if (a < P.smin || a > P.smax) continue;
        const float dl = cur.d * static_cast<float>(a);
        float e = sym_eval(x + j * P.sub, w + j * P.sub, P.sub, G, dl, tmp);
        if (e < best) {
          best = e;
          cur.ls[j] = a;
          std::memcpy(cur.idx + j * P.sub, tmp, static_cast<size_t>(P.sub));
        }
      }
      cur.err += best;
    }
    if (cur.err < out.err) out = cur;
  };
  if (amax == 0.f) {
    run(0, nullptr);
    return;
  }
  run(maxs / static_cast<float>(P.smin), nullptr);
  run(maxs / static_cast<float>(P.smax), nullptr);
  for (int it = 0; it < 3; ++it) {
    double saa = 0, sxa = 0;
    for (int j = 0; j < P.nsub; ++j)
      for (int i = 0; i < P.sub; ++i) {
        const int k = j * P.sub + i;
        double a = static_cast<double>(out.ls[j]) * G.v[out.idx[k]];
        saa += w[k] * a * a;
        sxa += w[k] * x[k] * a;
      }
    if (!(saa > 0)) break;
    float nd = static_cast<float>(sxa / saa);
    if (!std::isfinite(nd)) break;
    float before = out.err;
    int ls[16];
    std::memcpy(ls, out.ls, sizeof ls);
    run(nd, ls);
    if (!(out.err < before)) break;
  }
}

// The encoders' shared steps. max_value: the first value of largest magnitude (ggml's reference quantizers take
// the scale's sign from it); max_abs: the largest magnitude.
float max_value(const float* x, int n) {
  float amax = 0, maxv = 0;
  for (int i = 0; i < n; ++i) if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); maxv = x[i]; }
  return maxv;
}
float max_abs(const float* x, int n) {
  float amax = 0;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  return amax;
}
// A 32-value block's levels L: qs[j] holds L[j] (low nibble) and L[j + 16] (high); blocks with qh (Q5_0, Q5_1)
// keep bit 4 of level e in bit e of qh.
template <class B>
void pack_32(const uint8_t* L, B* b) {
  if constexpr (requires { b->qh; }) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      b->qs[j] = static_cast<uint8_t>((L[j] & 0xF) | ((L[j + 16] & 0xF) << 4));
      qh |= static_cast<uint32_t>(L[j] >> 4) << j;
      qh |= static_cast<uint32_t>(L[j + 16] >> 4) << (j + 16);
    }
    std::memcpy(b->qh, &qh, 4);
  } else {
    for (int j = 0; j < 16; ++j) b->qs[j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}
// The symmetric 32-value types (Q4_0, Q5_0, IQ4_NL): the scale search starts from max_value / div (5 tries).
template <class B>
void enc_sym32(const float* x, const float* w, void* dst, const Grid& G, float div) {
  auto* b = static_cast<B*>(dst);
  uint8_t L[32];
  float d = sym_block<true>(x, w, 32, G, 5, max_value(x, 32) / div, L);
  store_f16(b->d, d);
  pack_32(L, b);
}
// The 32-value types with a minimum (Q4_1, Q5_1): levels 0..nmax.
template <class B>
void enc_asym32(const float* x, const float* w, void* dst, int nmax) {
  auto* b = static_cast<B*>(dst);
  uint8_t L[32];
  float d, m;
  asym_block_f16(x, w, 32, nmax, 5, &d, &m, L);
  store_f16(b->d, d);
  store_f16(b->m, m);
  pack_32(L, b);
}
// Q8_0 / Q8_1: the values (levels - 127) from a search starting at max_abs / 127 (4 tries); returns the scale.
float enc_q8_levels(const float* x, const float* w, int8_t* qs) {
  static const Grid G = Grid::lin(-127, 127);
  uint8_t L[32];
  float d = sym_block<true>(x, w, 32, G, 4, max_abs(x, 32) / 127.f, L);
  for (int j = 0; j < 32; ++j) qs[j] = static_cast<int8_t>(static_cast<int>(L[j]) - 127);
  return d;
}
// The k-quant searches, then the block's d (and dmin) stored as fp16: with mins (Q2_K, Q4_K, Q5_K) and
// symmetric (Q3_K, Q6_K, IQ4_XS).
template <class B>
B* asymk_block(const float* x, const float* w, const AsymK& P, void* dst, AsymKResult& r) {
  asymk_encode(x, w, P, r);
  auto* b = static_cast<B*>(dst);
  store_f16(b->d, r.d);
  store_f16(b->dmin, r.dmin);
  return b;
}
template <class B>
B* symk_block(const float* x, const float* w, const SymK& P, const Grid& G, void* dst, SymKResult& r) {
  symk_encode(x, w, P, G, r);
  auto* b = static_cast<B*>(dst);
  store_f16(b->d, r.d);
  return b;
}
// Q4_K / Q5_K (levels 0..NMax): 8 sub-blocks of 32 with 6-bit scales and mins; qs[32p + l] holds levels
// 64p + l (low nibble) and 64p + 32 + l (high); Q5_K keeps their bit 4 in qh[l] bits 2p and 2p + 1.
template <class B, int NMax>
void enc_q45_k(const float* x, const float* w, void* dst) {
  constexpr bool kQh = NMax > 15;
  static const AsymK P{8, 32, NMax, 63, 2, 5, false};
  AsymKResult r;
  auto* b = asymk_block<B>(x, w, P, dst, r);
  set_scale_min_k4(b->scales, r.ls, r.lm);
  if constexpr (kQh) std::memset(b->qh, 0, sizeof b->qh);
  for (int p = 0; p < 4; ++p)
    for (int l = 0; l < 32; ++l) {
      const uint8_t a = r.L[64 * p + l], c = r.L[64 * p + 32 + l];
      if constexpr (kQh) {
        b->qs[32 * p + l] = static_cast<uint8_t>((a & 0xF) | ((c & 0xF) << 4));
        b->qh[l] |= static_cast<uint8_t>(((a >> 4) << (2 * p)) | ((c >> 4) << (2 * p + 1)));
      } else {
        b->qs[32 * p + l] = static_cast<uint8_t>(a | (c << 4));
      }
    }
}
// 256 2-bit levels (TQ2_0, Q2_K): level e in bits 2 ((e % 128) / 32) of qs[32 (e / 128) + e % 32].
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  std::memset(qs, 0, QK_K / 4);
  for (int e = 0; e < QK_K; ++e) qs[(e / 128) * 32 + e % 32] |= static_cast<uint8_t>(L[e] << (2 * ((e % 128) / 32)));
}

}  // namespace

namespace detail {

// ---------------------------------------------------------------------------------------------------
// Per-type block encoders. x: block values, w: block weights (never all-zero garbage: >= tiny epsilon).

void enc_q4_0(const float* x, const float* w, void* dst) {
  static const Grid G = Grid::lin(-8, 7);
  enc_sym32<BlockQ4_0>(x, w, dst, G, -8.f);
}
void enc_q5_0(const float* x, const float* w, void* dst) {
  static const Grid G = Grid::lin(-16, 15);
  enc_sym32<BlockQ5_0>(x, w, dst, G, -16.f);
}
void enc_q8_0(const float* x, const float* w, void* dst) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  store_f16(b->d, enc_q8_levels(x, w, b->qs));
}
void enc_q8_1(const float* x, const float* w, void* dst) {
  auto* b = static_cast<BlockQ8_1*>(dst);
  const float d = enc_q8_levels(x, w, b->qs);
  store_f16(b->d, d);
  int sum = 0;
  for (int j = 0; j < 32; ++j) sum += b->qs[j];
  store_f16(b->s, d * static_cast<float>(sum));
}
void enc_q8_k(const float* x, const float* w, void* dst) {
  static const Grid G = Grid::lin(-128, 127);
  auto* b = static_cast<BlockQ8_K*>(dst);
  uint8_t L[QK_K];
  float d = sym_block<false>(x, w, QK_K, G, 2, max_value(x, QK_K) / -128.f, L);
  std::memcpy(&b->d, &d, 4);
  for (int j = 0; j < QK_K; ++j) b->qs[j] = static_cast<int8_t>(static_cast<int>(L[j]) - 128);
  for (int j = 0; j < QK_K / 16; ++j) {
    int s = 0;
    for (int i = 0; i < 16; ++i) s += b->qs[16 * j + i];
    b->bsums[j] = static_cast<int16_t>(s);
  }
}
void enc_q4_1(const float* x, const float* w, void* dst) { enc_asym32<BlockQ4_1>(x, w, dst, 15); }
void enc_q5_1(const float* x, const float* w, void* dst) { enc_asym32<BlockQ5_1>(x, w, dst, 31); }
void enc_iq4_nl(const float* x, const float* w, void* dst) {
  static const Grid G = Grid::table(kIq4nlValues, 16);
  enc_sym32<BlockIQ4_NL>(x, w, dst, G, -127.f);
}
void enc_tq2_0(const float* x, const float* w, void* dst) {
  static const Grid G = Grid::lin(-1, 1);
  auto* b = static_cast<BlockTQ2_0*>(dst);
  uint8_t L[QK_K];
  float d = sym_block<true>(x, w, QK_K, G, 10, max_abs(x, QK_K), L);
  store_f16(b->d, d);
  pack_2bit(L, b->qs);
}
void enc_tq1_0(const float* x, const float* w, void* dst) {
  static const Grid G = Grid::lin(-1, 1);
  auto* b = static_cast<BlockTQ1_0*>(dst);
  uint8_t L[QK_K];
  float d = sym_block<true>(x, w, QK_K, G, 10, max_abs(x, QK_K), L);
  store_f16(b->d, d);
  auto pack = [](int q) { return static_cast<uint8_t>((static_cast<uint16_t>(q) * 256 + 242) / 243); };
  for (int m = 0; m < 32; ++m) {
    int q = 0;
    for (int n = 0; n < 5; ++n) q = q * 3 + L[m + 32 * n];
    b->qs[m] = pack(q);
  }
  for (int m = 0; m < 16; ++m) {
    int q = 0;
    for (int n = 0; n < 5; ++n) q = q * 3 + L[160 + m + 16 * n];
    b->qs[32 + m] = pack(q);
  }
  for (int j = 0; j < 4; ++j) {
    int q = 0;
    for (int n = 0; n < 4; ++n) q = q * 3 + L[240 + j + 4 * n];
    b->qh[j] = pack(q * 3);
  }
}

void enc_q4_k(const float* x, const float* w, void* dst) { enc_q45_k<BlockQ4_K, 15>(x, w, dst); }
void enc_q5_k(const float* x, const float* w, void* dst) { enc_q45_k<BlockQ5_K, 31>(x, w, dst); }
void enc_q2_k(const float* x, const float* w, void* dst) {
  static const AsymK P{16, 16, 3, 15, 2, 5, true};
  AsymKResult r;
  auto* b = asymk_block<BlockQ2_K>(x, w, P, dst, r);
  for (int j = 0; j < 16; ++j) b->scales[j] = static_cast<uint8_t>(r.ls[j] | (r.lm[j] << 4));
  pack_2bit(r.L, b->qs);
}
void enc_q3_k(const float* x, const float* w, void* dst) {
  static const Grid G = Grid::lin(-4, 3);
  static const SymK P{16, 16, -32, 31, 2, 5};
  SymKResult r;
  auto* b = symk_block<BlockQ3_K>(x, w, P, G, dst, r);
  q3k_set_scales(b->scales, r.ls);
  std::memset(b->hmask, 0, sizeof b->hmask);
  std::memset(b->qs, 0, sizeof b->qs);
  for (int e = 0; e < QK_K; ++e) {
    const int u = r.idx[e];  // level + 4
    const int half = e / 128, s = (e % 128) / 32, l = e % 32;
    b->qs[half * 32 + l] |= static_cast<uint8_t>((u & 3) << (2 * s));
    b->hmask[l] |= static_cast<uint8_t>((u >> 2) << (e / 32));
  }
}
void enc_q6_k(const float* x, const float* w, void* dst) {
  static const Grid G = Grid::lin(-32, 31);
  static const SymK P{16, 16, -128, 127, 1, 6};
  SymKResult r;
  auto* b = symk_block<BlockQ6_K>(x, w, P, G, dst, r);
  for (int j = 0; j < 16; ++j) b->scales[j] = static_cast<int8_t>(r.ls[j]);
  std::memset(b->ql, 0, sizeof b->ql);
  std::memset(b->qh, 0, sizeof b->qh);
  for (int e = 0; e < QK_K; ++e) {
    const int u = r.idx[e];  // level + 32
    const int half = e / 128, rr = e % 128;
    b->ql[half * 64 + rr % 64] |= static_cast<uint8_t>((u & 0xF) << (4 * (rr / 64)));
    b->qh[half * 32 + rr % 32] |= static_cast<uint8_t>((u >> 4) << (2 * (rr / 32)));
  }
}
void enc_iq4_xs(const float* x, const float* w, void* dst) {
  static const Grid G = Grid::table(kIq4nlValues, 16);
  static const SymK P{8, 32, -32, 31, 2, 5};
  SymKResult r;
  auto* b = symk_block<BlockIQ4_XS>(x, w, P, G, dst, r);
  uint16_t sh = 0;
  std::memset(b->scales_l, 0, sizeof b->scales_l);
  for (int ib = 0; ib < 8; ++ib) {
    const int u = r.ls[ib] + 32;
    b->scales_l[ib / 2] |= static_cast<uint8_t>((u & 0xF) << (4 * (ib % 2)));
    sh = static_cast<uint16_t>(sh | ((u >> 4) << (2 * ib)));
    for (int j = 0; j < 16; ++j)
      b->qs[16 * ib + j] = static_cast<uint8_t>(r.idx[32 * ib + j] | (r.idx[32 * ib + 16 + j] << 4));
  }
  std::memcpy(&b->scales_h, &sh, 2);
}

void enc_f32(const float* x, const float*, void* dst, int64_t nb) {
  if (nb) std::memcpy(dst, x, static_cast<size_t>(nb) * 4);
}
void enc_f16(const float* x, const float*, void* dst, int64_t nb) {
  auto* o = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < nb; ++i) {
    const uint16_t h = f32_to_f16(x[i]);
    std::memcpy(o + 2 * i, &h, 2);
  }
}
void enc_bf16(const float* x, const float*, void* dst, int64_t nb) {
  auto* o = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < nb; ++i) {
    const uint16_t h = f32_to_bf16(x[i]);
    std::memcpy(o + 2 * i, &h, 2);
  }
}

}  // namespace detail

bool can_quantize(GgmlType t) {
  const BlockOps* ops = block_ops(t);
  return ops && ops->encode;
}

void set_quantize_candidate_lanes(bool enabled) {
#if EDGEQ_QAVX2
  g_candidate_lanes = enabled;
#else
  (void)enabled;
#endif
}

int quantize_simd_lanes() {
#if EDGEQ_QAVX2
  return quant_lanes();
#else
  return 0;
#endif
}

bool quantize_simd_active() {
#if EDGEQ_QAVX2
  return quant_avx2();
#else
  return false;
#endif
}

size_t quantize_rows(GgmlType t, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                     const float* importance) {
  const GgmlTypeInfo* info = ggml_type_info(t);
  if (!info) fail("quantize: unknown ggml type id {}", static_cast<uint32_t>(t));
  if (!can_quantize(t)) fail("quantize: type {} is not supported", info->name);
  if (nrows < 0 || n_per_row <= 0 || n_per_row % info->block_size != 0)
    fail("quantize {}: row length {} is not a positive multiple of the block size {}", info->name, n_per_row,
         info->block_size);
  const auto row_size = ggml_row_size(t, static_cast<uint64_t>(n_per_row));
  if (!row_size) fail("quantize {}: bad row length {}", info->name, n_per_row);
  uint64_t total, nel;
  if (mul_overflow_u64(*row_size, static_cast<uint64_t>(nrows), &total) ||
      mul_overflow_u64(static_cast<uint64_t>(n_per_row), static_cast<uint64_t>(nrows), &nel) ||
      nel > static_cast<uint64_t>(INT64_MAX) || total > static_cast<uint64_t>(SIZE_MAX))
    fail("quantize {}: {} rows of {} overflow", info->name, nrows, n_per_row);
  const int64_t n_el = static_cast<int64_t>(nel);
  for (int64_t i = 0; i < n_el; ++i)
    if (!std::isfinite(src[i]))
      fail("quantize {}: non-finite value {} at row {}, column {}", info->name, src[i], i / n_per_row, i % n_per_row);
  auto* out = static_cast<uint8_t*>(dst);
  // Block types get per-column weights: the importance (plus a tiny floor so all-zero groups stay well
  // defined), or 1. The plain float types ignore them.
  std::vector<float> w;
  if (info->quantized) w.assign(static_cast<size_t>(n_per_row), 1.f);
  if (importance && info->quantized) {
    double sum = 0;
    for (int64_t j = 0; j < n_per_row; ++j) {
      if (!std::isfinite(importance[j]) || importance[j] < 0)
        fail("quantize {}: importance value {} at column {} is not a finite non-negative number", info->name,
             importance[j], j);
      sum += importance[j];
    }
    const float floor = static_cast<float>(std::max(sum / static_cast<double>(n_per_row) * 1e-6, 1e-30));
    for (int64_t j = 0; j < n_per_row; ++j) w[static_cast<size_t>(j)] = importance[j] + floor;
  }
  const EncodeFn enc = block_ops(t)->encode;
  const int64_t nb = n_per_row / info->block_size;
  for (int64_t r = 0; r < nrows; ++r)
    enc(src + r * n_per_row, w.empty() ? nullptr : w.data(), out + static_cast<uint64_t>(r) * *row_size, nb);
  return static_cast<size_t>(total);
}

}  // namespace edgeq::quant
