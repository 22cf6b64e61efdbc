// Vectorised row operations of the forward pass (attention's softmax, SwiGLU) around one exp. Every path (AVX-512,
// AVX2, portable) performs the same float operations in the same order, so they return the same bits; the exp
// (x < -87.3 gives 0, x > 88.3 gives +inf) is within 2 ulp of the exact value (range reduction by ln 2 in two parts, degree-7 polynomial, 2^n by the exponent).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace edgeq::runtime::vec {

// AVX2 lane mask for the first min(left, 8) of 8 floats (none when left <= 0): maskload/maskstore of a row's tail.
__attribute__((target("avx2"))) inline __m256i tail_mask(int64_t left) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(left, 0, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Softmax of s[0, n) after scaling: s[j] = exp(scale·s[j] − max) / Σ, the sum accumulated in 16 float lanes
// (element j in lane j mod 16) that are then added in double in lane order.
void softmax(float* s, int64_t n, float scale);

// g[i] = silu(g[i]) · u[i] = g[i] / (1 + exp(−g[i])) · u[i].
void swiglu(float* g, const float* u, int64_t n);

// g[i] = gelu(g[i]) · u[i] with ggml's GELU (GGML_GELU_FP16): x <= -10 gives 0, x >= 10 gives x, otherwise the
// f16 table entry f16(0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))) at f16(x).
void gelu_par(float* g, const float* u, int64_t n);

}  // namespace edgeq::runtime::vec
