#include "gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>

#include "edgeq/base/cpu.h"
#include "edgeq/base/half.h"
#include "vec.h"

namespace edgeq::runtime::gemm {
namespace {

// One micro-tile: rows i < MR of A against up to kPanel columns of one panel, p in [0, kc); acc: continue the
// chains held in C (the previous p-block's values), else start them from 0.
using Kernel = void (*)(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                        int ncols, bool acc);

// The micro-kernel once over the vector width: gemm_tile.inc holds it, written with the few vector operations
// each SIMD level defines here (kW lanes; masks for a panel's last columns).
namespace avx512 {  // MR rows x 32 columns per tile (two registers per row)
#define GEMM_FN __attribute__((target("avx512f")))
#define GEMM_OP GEMM_FN __attribute__((always_inline)) inline
using V = __m512;
using M = __mmask16;
constexpr int kW = 16;
GEMM_OP M mask(int64_t left) { return static_cast<M>(left >= 16 ? 0xFFFFu : left <= 0 ? 0u : (1u << left) - 1u); }
GEMM_OP V zero() { return _mm512_setzero_ps(); }
GEMM_OP V load_m(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
GEMM_OP V bcast(const float* p) { return _mm512_set1_ps(*p); }
GEMM_OP V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
GEMM_OP void store_m(float* p, M m, V v) { _mm512_mask_storeu_ps(p, m, v); }
#include "gemm_tile.inc"
#undef GEMM_OP
#undef GEMM_FN
}  // namespace avx512
constexpr int kMr512 = 12;

namespace avx2 {  // MR rows x 16 columns per tile: a 32-column panel in two tiles
#define GEMM_FN __attribute__((target("avx2,fma")))
#define GEMM_OP GEMM_FN __attribute__((always_inline)) inline
using V = __m256;
using M = __m256i;
constexpr int kW = 8;
GEMM_OP M mask(int64_t left) { return vec::tail_mask(left); }
GEMM_OP V zero() { return _mm256_setzero_ps(); }
GEMM_OP V load_m(const float* p, M m) { return _mm256_maskload_ps(p, m); }
GEMM_OP V bcast(const float* p) { return _mm256_broadcast_ss(p); }
GEMM_OP V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
GEMM_OP void store_m(float* p, M m, V v) { _mm256_maskstore_ps(p, m, v); }
#include "gemm_tile.inc"
#undef GEMM_OP
#undef GEMM_FN
}  // namespace avx2
constexpr int kMr256 = 6;

// The definition: the same chains with std::fma.
template <int MR>
void kernel_portable(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc,
                     int ncols, bool acc) {
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < ncols; ++j) {
      float s = acc ? c[i * ldc + j] : 0.f;
      for (int64_t p = 0; p < kc; ++p) s = std::fma(a[i * lda + p], b[p * ldb + j], s);
      c[i * ldc + j] = s;
    }
}

template <int... I>
constexpr auto table512(std::integer_sequence<int, I...>) {
  return std::array<Kernel, sizeof...(I)>{avx512::kernel<I + 1>...};
}
template <int... I>
constexpr auto table256(std::integer_sequence<int, I...>) {
  return std::array<Kernel, sizeof...(I)>{avx2::kernel<I + 1>...};
}
const auto kAvx512 = table512(std::make_integer_sequence<int, kMr512>{});
const auto kAvx2 = table256(std::make_integer_sequence<int, kMr256>{});

struct Path {
  const Kernel* kernels;  // kernels[r - 1] handles r rows
  int mr;
};
constexpr Kernel kPortable[1] = {kernel_portable<1>};
Path path() {
  if (cpu::avx512()) return {kAvx512.data(), kMr512};
  if (cpu::avx2()) return {kAvx2.data(), kMr256};
  return {kPortable, 1};
}

}  // namespace

void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, B b, float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (accumulate) return;
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.f);
    return;
  }
  const Path p = path();
  // Rows of A in blocks of kMBlock: a block's kKBlock-wide slice of A (240 KiB) stays in L2 while it meets
  // every panel.
  constexpr int64_t kMBlock = 240;
  for (int64_t ib = 0; ib < m; ib += kMBlock)
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const float* bp = b.data + (j0 / kPanel) * b.panel_stride;
    const int nc = static_cast<int>(std::min(kPanel, n - j0));
    for (int64_t p0 = 0; p0 < k; p0 += kKBlock) {
      const int64_t kc = std::min(kKBlock, k - p0);
      for (int64_t i0 = ib; i0 < std::min(m, ib + kMBlock); i0 += p.mr) {
        const int64_t mr = std::min<int64_t>(p.mr, m - i0);
        p.kernels[mr - 1](kc, a + i0 * lda + p0, lda, bp + p0 * b.ldb, b.ldb, c + i0 * ldc + j0, ldc, nc,
                         accumulate || p0 > 0);
      }
    }
  }
}

namespace {
// Rows 0 .. 8 of w (row stride ldw), 8 columns p .. p+8 at a time, transposed in registers into the panel at d;
// returns how many leading columns it did. T: float, or uint16_t for IEEE halves converted by F16C, which equals
// the scalar conversion (f16_to_f32) for every half but signalling NaNs, which it quiets: a NaN weight gives NaN
// products either way.
template <typename T>
__attribute__((target("avx2,f16c"))) int64_t transpose8(const T* w, int64_t ldw, int64_t k, float* d) {
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) {
    __m256 r[8], t[8], u[8];
    for (int i = 0; i < 8; ++i) {
      if constexpr (sizeof(T) == 2)
        r[i] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i * ldw + p)));
      else
        r[i] = _mm256_loadu_ps(w + i * ldw + p);
    }
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
      u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {
      _mm256_storeu_ps(d + (p + i) * kPanel, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
      _mm256_storeu_ps(d + (p + i + 4) * kPanel, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
    }
  }
  return p;
}

// Shared skeleton: Fast(rows j..j+8) returns how many leading columns it transposed; Get(j, p) converts one value.
template <typename Fast, typename Get>
void pack_with(int64_t rows, int64_t k, float* dst, bool fast_ok, Fast fast, Get get) {
  for (int64_t j0 = 0; j0 < rows; j0 += kPanel) {
    float* d = dst + (j0 / kPanel) * kPanel * k;
    const int64_t nc = std::min(kPanel, rows - j0);
    if (nc < kPanel) std::memset(d, 0, static_cast<size_t>(kPanel * k) * sizeof(float));
    int64_t j = 0;
    if (fast_ok)
      for (; j + 8 <= nc; j += 8) {
        for (int64_t p = fast(j0 + j, d + j); p < k; ++p)
          for (int i = 0; i < 8; ++i) d[p * kPanel + j + i] = get(j0 + j + i, p);
      }
    for (; j < nc; ++j)
      for (int64_t p = 0; p < k; ++p) d[p * kPanel + j] = get(j0 + j, p);
  }
}
}  // namespace

void pack_transposed(const float* w, int64_t rows, int64_t k, int64_t ldw, float* dst) {
  pack_with(rows, k, dst, cpu::avx2(), [&](int64_t j, float* d) { return transpose8(w + j * ldw, ldw, k, d); },
            [&](int64_t j, int64_t p) { return w[j * ldw + p]; });
}

void pack_transposed_f16(const uint16_t* w, int64_t rows, int64_t k, int64_t ldw, float* dst) {
  pack_with(rows, k, dst, cpu::avx2(), [&](int64_t j, float* d) { return transpose8(w + j * ldw, ldw, k, d); },
            [&](int64_t j, int64_t p) { return f16_to_f32(w[j * ldw + p]); });
}

}  // namespace edgeq::runtime::gemm
