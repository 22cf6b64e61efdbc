// The runtime's f32 matrix product for batched evaluation (prompt, perplexity, calibration): the weight tiles of
// matmul's dequantize path and attention's two products. Replaces OpenBLAS there: at these shapes (a few hundred
// rows, k = 32 .. a few thousand) OpenBLAS spends much of its time packing and in per-call overhead, and its
// kernel family depends on OPENBLAS_CORETYPE.
//
// Every element of C is one FMA chain over p = 0, 1, ..., k-1 starting from 0 (c = fma(a[p], b[p], c)), whatever
// its position, the shape of the call, the blocking or the instruction set (AVX-512, AVX2+FMA, portable std::fma; chosen by
// edgeq/base/cpu.h):
// results are bit-identical for any thread split and on every x86-64 machine.
#pragma once
#include <cstdint>

namespace edgeq::runtime::gemm {

// Columns of B come in panels of kPanel: column j of row p is at b[(j / kPanel) * panel_stride + p * ldb + j % kPanel].
// A plain row-major [k][n] matrix is panel_stride = kPanel; pack_transposed writes the packed form
// (ldb = kPanel, panel_stride = kPanel * k), which streams through the cache.
constexpr int64_t kPanel = 32;
// The k-blocking: C is reloaded between blocks of kKBlock values of p (which does not change the chains), so a
// caller may feed B one k-block at a time (accumulate = true for every block after the first).
constexpr int64_t kKBlock = 256;

struct B {
  const float* data;
  int64_t ldb;           // distance between rows p and p+1 inside a panel
  int64_t panel_stride;  // distance between panels
};

// C[i, j] = Σ_p A[i, p] · B[p, j] for i < m, j < n (C overwritten): A row-major with row stride lda, C with ldc.
// accumulate: the chains continue from C's values instead of starting from 0 (C[i, j] += ..., one chain): a
// product split at multiples of kKBlock over p gives the same bits as the whole one.
void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, B b, float* c, int64_t ldc,
          bool accumulate = false);

// rows × k row-major W (row stride ldw) into dst as the packed B = Wᵀ (ceil(rows / kPanel) · kPanel · k floats;
// columns past `rows` in the last panel are zero).
void pack_transposed(const float* w, int64_t rows, int64_t k, int64_t ldw, float* dst);
// The same from IEEE half rows (F16 weights), converted on the way (F16C, or the scalar conversion:
// same values).
void pack_transposed_f16(const uint16_t* w, int64_t rows, int64_t k, int64_t ldw, float* dst);
inline B packed(const float* dst, int64_t k) { return {dst, kPanel, kPanel * k}; }
inline int64_t packed_size(int64_t rows, int64_t k) { return (rows + kPanel - 1) / kPanel * kPanel * k; }

}  // namespace edgeq::runtime::gemm
