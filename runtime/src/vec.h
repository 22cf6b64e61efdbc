// Vectorised row operations of the forward pass (attention's softmax, SwiGLU) around one exp. Every path (AVX-512,
// AVX2, portable) performs the same float operations in the same order, so they return the same bits; the exp
// (x < -87.3 gives 0, x > 88.3 gives +inf) is within 2 ulp of the exact value (range reduction by ln 2 in two parts, degree-7 polynomial, 2^n by the exponent).
#pragma once
#include <cstdint>

namespace edgeq::runtime::vec {

// Softmax of s[0, n) after scaling: s[j] = exp(scale·s[j] − max) / Σ, the sum accumulated in 16 float lanes
// (element j in lane j mod 16) that are then added in double in lane order.
void softmax(float* s, int64_t n, float scale);

// g[i] = silu(g[i]) · u[i] = g[i] / (1 + exp(−g[i])) · u[i].
void swiglu(float* g, const float* u, int64_t n);

// Tests: enabled = false forces the portable path, avx512 = false the AVX2 one on an AVX-512 machine (same bits).
void set_simd(bool enabled, bool avx512 = true);

}  // namespace edgeq::runtime::vec
