#include "vec.h"

#include <cmath>
#include <vector>

#include "edgeq/base/half.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <climits>

#include "edgeq/base/cpu.h"

namespace edgeq::runtime::vec {
namespace {

constexpr float kLo = -87.3f, kHi = 88.3f;  // exp(kLo) is near the smallest normal float; kHi keeps 2^n finite
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;      // ln 2 in 16 bits: n · kLn2Hi is exact
constexpr float kLn2Lo = 1.428606765330187e-06f;  // ln 2 − kLn2Hi
// Taylor coefficients 1/k!, k = 7 .. 1 (|r| <= ln2/2: truncation below 1e-8 relative).
constexpr float kC[7] = {1.f / 5040, 1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f};
constexpr int kLanes = 16;

// The definition; exp8 performs the same operations on 8 lanes.
float exp1(float x) {
  const float xc = std::min(std::max(x, kLo), kHi);
  const float n = std::nearbyint(xc * kLog2e);
  float r = std::fma(n, -kLn2Hi, xc);
  r = std::fma(n, -kLn2Lo, r);
  float p = kC[0];
  for (int i = 1; i < 7; ++i) p = std::fma(p, r, kC[i]);
  p = std::fma(p, r, 1.f);
  const float res = p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return x < kLo ? 0.f : x > kHi ? INFINITY : res;
}

__attribute__((target("avx2,fma"))) inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(kLo), hi = _mm256_set1_ps(kHi);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Hi), xc);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kC[0]);
  for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kC[i]));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 res = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  res = _mm256_blendv_ps(res, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
  return _mm256_blendv_ps(res, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
}
__attribute__((target("avx2,fma"))) void softmax_avx2(float* s, int64_t n, float scale) {
  const __m256 sc = _mm256_set1_ps(scale);
  __m256 mx = _mm256_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = tail_mask(n - i);
    const __m256 v = _mm256_mul_ps(_mm256_maskload_ps(s + i, m), sc);
    _mm256_maskstore_ps(s + i, m, v);
    mx = _mm256_max_ps(mx, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, _mm256_castsi256_ps(m)));
  }
  alignas(32) float lane[kLanes];
  _mm256_store_ps(lane, mx);
  float mxs = lane[0];
  for (int l = 1; l < 8; ++l) mxs = std::max(mxs, lane[l]);
  const __m256 vm = _mm256_set1_ps(mxs);
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = tail_mask(n - i);
    const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(s + i, m), vm)), _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(s + i, m, e);
    acc[(i / 8) % 2] = _mm256_add_ps(acc[(i / 8) % 2], e);
  }
  _mm256_store_ps(lane, acc[0]);
  _mm256_store_ps(lane + 8, acc[1]);
  double sum = 0.0;
  for (int l = 0; l < kLanes; ++l) sum += lane[l];
  const __m256 inv = _mm256_set1_ps(static_cast<float>(1.0 / sum));
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = tail_mask(n - i);
    _mm256_maskstore_ps(s + i, m, _mm256_mul_ps(_mm256_maskload_ps(s + i, m), inv));
  }
}

__attribute__((target("avx2,fma"))) void swiglu_avx2(float* g, const float* u, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.f), sign = _mm256_set1_ps(-0.f);
  for (int64_t i = 0; i < n; i += 8) {
    const __m256i m = tail_mask(n - i);
    const __m256 x = _mm256_maskload_ps(g + i, m);
    const __m256 e = exp8(_mm256_xor_ps(x, sign));
    _mm256_maskstore_ps(g + i, m, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_maskload_ps(u + i, m)));
  }
}

// AVX-512: the same operations on 16 lanes (the 16 sum lanes are one register). GCC 12 reports the intrinsics'
// undefined pass-through operands as maybe-uninitialized (a false positive of its own headers).
#pragma GCC diagnostic push
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
__attribute__((target("avx512f"))) inline __m512 exp16(__m512 x) {
  const __m512 lo = _mm512_set1_ps(kLo), hi = _mm512_set1_ps(kHi);
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Hi), xc);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kC[0]);
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kC[i]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  __m512 res = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
  res = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), res, _mm512_setzero_ps());
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), res, _mm512_set1_ps(INFINITY));
}
inline __mmask16 tail16(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }

__attribute__((target("avx512f"))) void softmax_avx512(float* s, int64_t n, float scale) {
  const __m512 sc = _mm512_set1_ps(scale);
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + i), sc);
    _mm512_mask_storeu_ps(s + i, m, v);
    mx = _mm512_mask_max_ps(mx, m, mx, v);
  }
  alignas(64) float lane[kLanes];
  _mm512_store_ps(lane, mx);
  float mxs = lane[0];
  for (int l = 1; l < kLanes; ++l) mxs = std::max(mxs, lane[l]);
  const __m512 vm = _mm512_set1_ps(mxs);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + i), vm)));
    _mm512_mask_storeu_ps(s + i, m, e);
    acc = _mm512_add_ps(acc, e);
  }
  _mm512_store_ps(lane, acc);
  double sum = 0.0;
  for (int l = 0; l < kLanes; ++l) sum += lane[l];
  const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / sum));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    _mm512_mask_storeu_ps(s + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + i), inv));
  }
}

__attribute__((target("avx512f"))) void swiglu_avx512(float* g, const float* u, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail16(n - i);
    const __m512 x = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 e = exp16(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN))));
    _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i)));
  }
}

#pragma GCC diagnostic pop

bool simd() { return cpu::avx2(); }
bool avx512() { return cpu::avx512(); }

}  // namespace

void softmax(float* s, int64_t n, float scale) {
  if (n <= 0) return;
  if (simd()) return avx512() ? softmax_avx512(s, n, scale) : softmax_avx2(s, n, scale);
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    s[j] *= scale;
    mx = std::max(mx, s[j]);
  }
  float lane[kLanes] = {};
  for (int64_t j = 0; j < n; ++j) {
    s[j] = exp1(s[j] - mx);
    lane[j % kLanes] += s[j];
  }
  double sum = 0.0;
  for (int l = 0; l < kLanes; ++l) sum += lane[l];
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
}

void swiglu(float* g, const float* u, int64_t n) {
  if (simd()) return avx512() ? swiglu_avx512(g, u, n) : swiglu_avx2(g, u, n);
  for (int64_t i = 0; i < n; ++i) g[i] = (g[i] / (1.f + exp1(-g[i]))) * u[i];
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
