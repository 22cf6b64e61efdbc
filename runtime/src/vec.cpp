#include "vec.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "edgeq/base/cpu.h"
#include "edgeq/base/half.h"

namespace edgeq::runtime::vec {
namespace {

// ggml_v_expf's constants: 1.5·2^23 (round to integer by addition), log2(e), ln 2 in two parts, the polynomial.
constexpr float kShift = 0x1.8p23f, kLog2e = 0x1.715476p+0f, kLn2Hi = 0x1.62e4p-1f, kLn2Lo = 0x1.7f7d1cp-20f;
constexpr float kP0 = 0x1.0e4020p-7f, kP1 = 0x1.573e2ep-5f, kP2 = 0x1.555e66p-3f, kP3 = 0x1.fffdb6p-2f,
                kP4 = 0x1.ffffecp-1f;

__attribute__((target("avx2,fma"))) inline __m256 exp8(__m256 x) {
  const __m256 r = _mm256_set1_ps(kShift);
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), r);
  const __m256 n = _mm256_sub_ps(z, r);
  const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x));
  const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
  const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
  const __m256 an = _mm256_andnot_ps(_mm256_set1_ps(-0.f), n);
  const __m256 c = _mm256_cmp_ps(an, _mm256_set1_ps(126), _CMP_GT_OQ);
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 j = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(kP0), b, _mm256_set1_ps(kP1)), u,
                      _mm256_fmadd_ps(_mm256_set1_ps(kP2), b, _mm256_set1_ps(kP3))),
      u, _mm256_mul_ps(_mm256_set1_ps(kP4), b));
  if (!_mm256_movemask_ps(c)) return _mm256_fmadd_ps(j, k, k);
  const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                     _mm256_set1_epi32(static_cast<int>(0x82000000u)));
  const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
  const __m256 d = _mm256_cmp_ps(an, _mm256_set1_ps(192), _CMP_GT_OQ);
  return _mm256_or_ps(_mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
                      _mm256_andnot_ps(d, _mm256_or_ps(_mm256_and_ps(c, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                                                       _mm256_andnot_ps(c, _mm256_fmadd_ps(k, j, k)))));
}

// The sum of 8 values as ggml's AVX2 reductions take it: ((v0+v4)+(v2+v6))+((v1+v5)+(v3+v7)).
inline float tree8(const float* v) { return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7])); }

// v[l] = exp8(v[l] − mx), in place.
__attribute__((target("avx2,fma"))) void exp8_minus(float* v, float mx) {
  _mm256_store_ps(v, exp8(_mm256_sub_ps(_mm256_load_ps(v), _mm256_set1_ps(mx))));
}

// Groups of 8 at s[i0], i0 % 8 == 0, up to `end`: entries outside [lo, end) are 0 (masked). Returns the sum as
// soft_max accumulates it (each group's tree8 in float, added in double); s[lo, end) = exp(s − mx).
double exp_groups(float* s, int64_t lo, int64_t end, float mx) {
  double sum = 0.0;
  if (cpu::avx2()) {
    for (int64_t i = lo & ~int64_t(7); i < end; i += 8) {
      alignas(32) float v[8];
      for (int l = 0; l < 8; ++l) v[l] = i + l >= lo && i + l < end ? s[i + l] : 0.f;
      exp8_minus(v, mx);
      for (int l = 0; l < 8; ++l)
        if (i + l >= lo && i + l < end) s[i + l] = v[l];
        else v[l] = 0.f;
      sum += static_cast<double>(tree8(v));
    }
    return sum;
  }
  for (int64_t i = lo & ~int64_t(7); i < end; i += 8) {
    float v[8];
    for (int l = 0; l < 8; ++l) v[l] = i + l >= lo && i + l < end ? (s[i + l] = exp_ggml(s[i + l] - mx)) : 0.f;
    sum += static_cast<double>(tree8(v));
  }
  return sum;
}

}  // namespace

float exp_ggml(float x) {
  const float z = std::fma(x, kLog2e, kShift);
  const float n = z - kShift;
  const float b = std::fma(-n, kLn2Lo, std::fma(-n, kLn2Hi, x));
  const uint32_t e = std::bit_cast<uint32_t>(z) << 23;
  const float k = std::bit_cast<float>(e + std::bit_cast<uint32_t>(1.0f));
  const float u = b * b;
  const float j = std::fma(std::fma(std::fma(kP0, b, kP1), u, std::fma(kP2, b, kP3)), u, kP4 * b);
  const float an = std::fabs(n);
  if (!(an > 126.f)) return std::fma(k, j, k);
  const uint32_t g = n <= 0.f ? 0x82000000u : 0u;
  const float s1 = std::bit_cast<float>(g + 0x7f000000u);
  const float s2 = std::bit_cast<float>(e - g);
  if (an > 192.f) return s1 * s1;
  return std::fma(s2, j, s2) * s1;
}

void softmax(float* s, int64_t n, float scale) {
  if (n <= 0) return;
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    s[j] *= scale;
    mx = s[j] > mx ? s[j] : mx;
  }
  const int64_t n8 = n - n % 8;
  double sum = exp_groups(s, 0, n8, mx);
  for (int64_t j = n8; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);  // expf
    sum += static_cast<double>(s[j]);
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
}

void softmax_window(float* s, int64_t first, int64_t valid, float scale) {
  if (valid <= first) return;
  float mx = -INFINITY;
  for (int64_t j = first; j < valid; ++j) {
    s[j] *= scale;
    mx = s[j] > mx ? s[j] : mx;
  }
  const float inv = static_cast<float>(1.0 / exp_groups(s, first, valid, mx));
  for (int64_t j = first; j < valid; ++j) s[j] *= inv;
}

namespace {
// The attention rows once over the vector width: vec_rows.inc holds kq_row and pv_row, written with the small
// set of vector operations each SIMD level defines here (kW lanes; kPv registers of outputs per pass of pv_row).
namespace w8 {  // AVX2
using V = __m256;
constexpr int kW = 8, kPv = 1;  // 16 registers: 8 partial sums of one register of outputs
#define VEC_FN __attribute__((target("avx2,fma")))
#define VEC_TARGET VEC_FN __attribute__((always_inline)) inline
VEC_TARGET V zero() { return _mm256_setzero_ps(); }
VEC_TARGET V load(const float* p) { return _mm256_loadu_ps(p); }
VEC_TARGET V load_n(const float* p, int64_t left) { return _mm256_maskload_ps(p, tail_mask(left)); }  // 0 beyond
VEC_TARGET V set1(float x) { return _mm256_set1_ps(x); }
VEC_TARGET V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
VEC_TARGET V add(V a, V b) { return _mm256_add_ps(a, b); }
VEC_TARGET void store_range(float* p, int64_t lo, int64_t hi, V v) {  // lanes [lo, hi)
  _mm256_maskstore_ps(p, _mm256_andnot_si256(tail_mask(lo), tail_mask(hi)), v);
}
#include "vec_rows.inc"
#undef VEC_TARGET
#undef VEC_FN
}  // namespace w8
namespace w16 {  // AVX-512
using V = __m512;
constexpr int kW = 16, kPv = 2;  // 32 registers: two registers of outputs per pass
#define VEC_FN __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define VEC_TARGET VEC_FN __attribute__((always_inline)) inline
VEC_TARGET __mmask16 lanes(int64_t lo, int64_t hi) {
  const auto bits = [](int64_t n) { return n <= 0 ? 0u : n >= 16 ? 0xFFFFu : (1u << n) - 1u; };
  return static_cast<__mmask16>(bits(hi) & ~bits(lo));
}
VEC_TARGET V zero() { return _mm512_setzero_ps(); }
VEC_TARGET V load(const float* p) { return _mm512_loadu_ps(p); }
VEC_TARGET V load_n(const float* p, int64_t left) { return _mm512_maskz_loadu_ps(lanes(0, left), p); }
VEC_TARGET V set1(float x) { return _mm512_set1_ps(x); }
VEC_TARGET V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
VEC_TARGET V add(V a, V b) { return _mm512_add_ps(a, b); }
VEC_TARGET void store_range(float* p, int64_t lo, int64_t hi, V v) { _mm512_mask_storeu_ps(p, lanes(lo, hi), v); }
#include "vec_rows.inc"
#undef VEC_TARGET
#undef VEC_FN
}  // namespace w16
__attribute__((target("avx2,fma"))) void swiglu_avx2(float* g, const float* u, int64_t n8) {
  const __m256 one = _mm256_set1_ps(1.f);
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
}
}  // namespace

void kq_row(const float* q, const float* k, int64_t d, int64_t j0, int64_t j1, float* s) {
  if (cpu::avx512()) return w16::kq_row(q, k, d, j0, j1, s);
  if (cpu::avx2()) return w8::kq_row(q, k, d, j0, j1, s);
  for (int64_t j = j0; j < j1; ++j) {
    const float* kj = k + (j / 32) * 32 * d + j % 32;
    float a[8] = {};
    for (int64_t p = 0; p < d; ++p) a[p % 8] = std::fma(q[p], kj[p * 32], a[p % 8]);
    s[j] = tree8(a);
  }
}

void pv_row(const float* P, int64_t j0, int64_t j1, const float* V, int64_t ldv, int64_t d, float* out) {
  if (cpu::avx512()) return w16::pv_row(P, j0, j1, V, ldv, d, out);
  if (cpu::avx2()) return w8::pv_row(P, j0, j1, V, ldv, d, out);
  for (int64_t p = 0; p < d; ++p) {
    float a[8] = {};
    for (int64_t j = j0; j < j1; ++j) a[j % 8] = std::fma(P[j], V[j * ldv + p], a[j % 8]);
    out[p] = tree8(a);
  }
}

void swiglu(float* g, const float* u, int64_t n) {
  const int64_t n8 = n - n % 8;
  if (cpu::avx2()) {
    swiglu_avx2(g, u, n8);
  } else {
    for (int64_t i = 0; i < n8; ++i) g[i] = (g[i] / (1.f + exp_ggml(0.f - g[i]))) * u[i];
  }
  for (int64_t i = n8; i < n; ++i) g[i] = (g[i] / (1.f + std::exp(-g[i]))) * u[i];
}

namespace {
// ggml's ggml_table_gelu_f16, built the same way (ggml_gelu_f32 of every f16 value, rounded to f16).
const std::vector<uint16_t>& gelu_table() {
  static const std::vector<uint16_t> t = [] {
    std::vector<uint16_t> v(65536);
    for (uint32_t i = 0; i < 65536; ++i) {
      const float x = f16_to_f32(static_cast<uint16_t>(i));
      const float y = 0.5f * x * (1.0f + std::tanh(0.79788456080286535587989211986876f * x * (1.0f + 0.044715f * x * x)));
      v[i] = f32_to_f16(y);
    }
    return v;
  }();
  return t;
}
}  // namespace

void gelu_par(float* g, const float* u, int64_t n) {
  const auto& t = gelu_table();
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i];
    const float y = x <= -10.0f ? 0.0f : x >= 10.0f ? x : f16_to_f32(t[f32_to_f16(x)]);
    g[i] = y * u[i];
  }
}

}  // namespace edgeq::runtime::vec
