// Vectorised row operations of the forward pass around one exp: attention's softmax and its two products,
// SwiGLU, GELU. They reproduce llama.cpp's CPU backend (the AVX2 build that made the goldens) bit for bit:
// ggml_v_expf's exp (a degree-5 polynomial after range reduction by ln 2 in two parts), soft_max's grouping of
// the sum, the tinyBLAS order of the f16 attention products. Every path (AVX2, portable) performs the same float
// operations in the same order, so they return the same bits; AVX-512 CPUs take the AVX2 path (llama.cpp's
// AVX2 build is the reference).
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

// ggml_v_expf of one value (what each AVX2 lane computes): within 1.5 ulp; x > 88.38 gives +inf, x < -103.97 0.
float exp_ggml(float x);

// Softmax of s[0, n) as ggml's soft_max row: s[j] = exp(scale·s[j] − max) / Σ. The exponentials of s[0, n − n mod 8)
// in groups of 8, each group summed in float as ((e0+e4)+(e2+e6))+((e1+e5)+(e3+e7)) and the group sums added
// in double; the last n mod 8 by expf (the C library's) and added one by one; then times (float)(1 / Σ).
void softmax(float* s, int64_t n, float scale);

// Attention's softmax of a row of which only [first, valid) is unmasked: as softmax over llama.cpp's padded KV row
// (its length a multiple of 32: no tail), groups of 8 aligned to s[0], masked entries counting as exp = 0.
// s[first, valid) is replaced by the probabilities; nothing else is written.
void softmax_window(float* s, int64_t first, int64_t valid, float scale);

// Scores s[j] = q · k_j for keys j in [j0, j1) of a key block stored as gemm.h's packed form (key j, component p
// at k[(j / 32) · 32 · d + p · 32 + j % 32]), as tinyBLAS computes an f16 product: 8 partial sums (component
// p in sum p mod 8, fused multiply-adds in order of p), added as ((0+4)+(2+6))+((1+5)+(3+7)). d % 8 == 0.
void kq_row(const float* q, const float* k, int64_t d, int64_t j0, int64_t j1, float* s);

// out[p] = Σ_j P[j] · V[j][p] for j in [j0, j1), p < d (V rows ldv apart), the same tinyBLAS order over j
// (term j in partial sum j mod 8, in order of j); terms outside [j0, j1) are zero in llama.cpp's padded row
// (P = 0) and leave the sums unchanged.
void pv_row(const float* P, int64_t j0, int64_t j1, const float* V, int64_t ldv, int64_t d, float* out);

// g[i] = silu(g[i]) · u[i] as ggml_vec_silu_f32: x / (1 + exp_ggml(−x)) in groups of 8, the last n mod 8 with expf.
void swiglu(float* g, const float* u, int64_t n);

// g[i] = gelu(g[i]) · u[i] with ggml's GELU (GGML_GELU_FP16): x <= -10 gives 0, x >= 10 gives x, otherwise the
// f16 table entry f16(0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))) at f16(x).
void gelu_par(float* g, const float* u, int64_t n);

}  // namespace edgeq::runtime::vec
