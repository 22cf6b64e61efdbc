#include "edgeq/calibrate/gptq.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "edgeq/formats/error.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/runtime/blas.h"


namespace edgeq::calibrate {

namespace blas = runtime::blas;

double output_error(const float* W, const float* Q, int64_t rows, int64_t cols, const double* H) {
  // sum_r d_r·(H d_r) over blocks of rows: one symmetric matrix product per block (level 3; row by row, H was
  // read from memory once per row).
  constexpr int64_t kRows = 64;
  std::vector<double> D(static_cast<size_t>(kRows * cols)), HD(D.size());
  double total = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t m = std::min(kRows, rows - r0);
    for (int64_t i = 0; i < m * cols; ++i) D[i] = static_cast<double>(W[r0 * cols + i]) - Q[r0 * cols + i];
    blas::api().dsymm(CblasRowMajor, CblasRight, CblasUpper, static_cast<int>(m), static_cast<int>(cols), 1.0, H,
                      static_cast<int>(cols), D.data(), static_cast<int>(cols), 0.0, HD.data(), static_cast<int>(cols));
    for (int64_t i = 0; i < m * cols; ++i) total += D[i] * HD[i];
  }
  return total;
}

void block_output_errors(const float* W, const float* Q, int64_t rows, int64_t cols, const double* H, int64_t g,
                         double* out) {
  const int64_t nb = cols / g;
  std::vector<double> D(static_cast<size_t>(rows * cols)), HD(static_cast<size_t>(rows * g));
  for (int64_t i = 0; i < rows * cols; ++i) D[i] = static_cast<double>(W[i]) - Q[i];
  for (int64_t b = 0; b < nb; ++b) {
    blas::api().dsymm(CblasRowMajor, CblasRight, CblasUpper, static_cast<int>(rows), static_cast<int>(g), 1.0,
                      H + b * g * cols + b * g, static_cast<int>(cols), D.data() + b * g, static_cast<int>(cols), 0.0,
                      HD.data(), static_cast<int>(g));
    for (int64_t r = 0; r < rows; ++r) {
      double e = 0;
      for (int64_t j = 0; j < g; ++j) e += D[r * cols + b * g + j] * HD[r * g + j];
      out[r * nb + b] = e;
    }
  }
}

std::vector<double> ridge_hessian(const double* H, int64_t n, double ridge) {
  std::vector<double> R(H, H + n * n);
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += H[i * n + i];
  mean /= static_cast<double>(std::max<int64_t>(n, 1));
  for (int64_t i = 0; i < n; ++i) R[i * n + i] += ridge * mean;
  return R;
}

std::vector<float> ridge_importance(std::vector<float> v, double ridge) {
  double mean = 0;
  for (float x : v) mean += x;
  mean /= static_cast<double>(std::max<size_t>(v.size(), 1));
  for (auto& x : v) x = static_cast<float>(x + ridge * mean);
  return v;
}

namespace {
// inverse_hessian_cholesky of H with rows and columns in the order perm (nullptr: as stored), without a
// permuted copy of H.
std::vector<double> inverse_cholesky(const double* H, int64_t n64, double damp, const int64_t* perm) {
  const int n = static_cast<int>(n64);
  double mean = 0;
  for (int i = 0; i < n; ++i) mean += H[static_cast<size_t>(i) * n + i];
  mean /= n;
  if (!(mean > 0)) mean = 1;
  std::vector<double> A(static_cast<size_t>(n) * n);
  for (int attempt = 0; attempt < 8; ++attempt, damp *= 10) {
    if (perm) {
      for (int i = 0; i < n; ++i)
        for (int k = 0; k < n; ++k) A[static_cast<size_t>(i) * n + k] = H[perm[i] * n64 + perm[k]];
    } else {
      std::memcpy(A.data(), H, A.size() * sizeof(double));
    }
    for (int i = 0; i < n; ++i) {
      double& a = A[static_cast<size_t>(i) * n + i];
      if (a <= 0) a = 1;
      a += damp * mean;
    }
    int info = 0;
    // Column-major 'L' on a symmetric row-major matrix: the row-major upper factor U with A = UᵀU.
    blas::api().dpotrf("L", &n, A.data(), &n, &info);
    if (info != 0) continue;
    blas::api().dpotri("L", &n, A.data(), &n, &info);  // A^-1 in the row-major upper triangle
    if (info != 0) continue;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < i; ++j) A[static_cast<size_t>(i) * n + j] = A[static_cast<size_t>(j) * n + i];
    blas::api().dpotrf("L", &n, A.data(), &n, &info);  // A^-1 = UᵀU
    if (info != 0) continue;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < i; ++j) A[static_cast<size_t>(i) * n + j] = 0;
    return A;
  }
  fail("gptq: the Hessian cannot be factorised even with heavy damping");
}
}  // namespace

std::vector<double> inverse_hessian_cholesky(const double* H, int64_t n, double damp) {
  return inverse_cholesky(H, n, damp, nullptr);
}

namespace {

// GPTQ with act-order (gptq.h): columns in order of decreasing H_jj, every block's grid fitted up front.
void gptq_act_order(GgmlType t, const GgmlTypeInfo* ti, int levels, const float* W0, int64_t rows, int64_t cols,
                    const double* H, uint8_t* dst, double damp) {
  const int64_t g = ti->block_size;
  const uint64_t row_bytes = *ggml_row_size(t, static_cast<uint64_t>(cols));
  const uint64_t block_bytes = ti->type_size;
  // The grids: every block's scales (and mins) from the format's own search on the weights as given, with the
  // ridged diagonal of H as importance (the imatrix method's fit), before any error feedback. A block's columns
  // are visited out of order below, so its scales cannot wait for "its first column" as in the natural order.
  double mean = 0;
  for (int64_t j = 0; j < cols; ++j) mean += std::max(H[j * cols + j], 0.0);
  mean /= static_cast<double>(cols);
  std::vector<float> imp(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) imp[j] = static_cast<float>(std::max(H[j * cols + j], 0.0) + damp * mean);
  quant::quantize_rows(t, W0, dst, rows, cols, mean > 0 ? imp.data() : nullptr);
  // The order: decreasing H_jj (ties by index), U the Cholesky factor of the damped inverse of H permuted to it.
  std::vector<int64_t> perm(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) perm[j] = j;
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return H[a * cols + a] > H[b * cols + b]; });
  std::vector<double> U = inverse_cholesky(H, cols, damp, perm.data());
  std::vector<double> udiag(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) udiag[i] = U[i * cols + i];
  const std::vector<float> Uf(U.begin(), U.end());
  U = {};
  // Rows are independent (each row's errors feed only its own later columns): a chunk of rows at a time keeps
  // the level tables small. Per element the table holds the values of its codes on its block's fixed grid;
  // consecutive elements of a block that share scales (a sub-block) share one table.
  constexpr int64_t kRowChunk = 128, kBatch = 128;  // rows per chunk; columns per lazy update
  const int64_t R = std::min(rows, kRowChunk);
  std::vector<float> Wc(static_cast<size_t>(R * cols)), E(static_cast<size_t>(R * kBatch)), lv(static_cast<size_t>(levels * g)), tables;
  std::vector<uint32_t> tab(static_cast<size_t>(R * cols));
  std::vector<uint8_t> probe;
  for (int64_t r0 = 0; r0 < rows; r0 += R) {
    const int64_t m = std::min(R, rows - r0);
    tables.clear();
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t i = 0; i < cols; ++i) Wc[r * cols + i] = W0[(r0 + r) * cols + perm[i]];
      for (int64_t b0 = 0; b0 < cols; b0 += g) {
        const uint8_t* blk = dst + (r0 + r) * row_bytes + (b0 / g) * block_bytes;
        for (int k = 0; k < levels; ++k) {
          probe.assign(blk, blk + block_bytes);
          for (int64_t e = 0; e < g; ++e) quant::set_block_code(t, probe.data(), static_cast<int>(e), k);
          quant::dequantize_row(t, probe.data(), &lv[k * g], g);
        }
        for (int64_t e = 0; e < g; ++e) {
          bool same = e > 0;
          for (int k = 0; same && k < levels; ++k) same = lv[k * g + e] == lv[k * g + e - 1];
          if (!same) {
            for (int k = 0; k < levels; ++k) tables.push_back(lv[k * g + e]);
          }
          tab[r * cols + b0 + e] = static_cast<uint32_t>(tables.size() / static_cast<size_t>(levels) - 1);
        }
      }
    }
    for (int64_t i0 = 0; i0 < cols; i0 += kBatch) {
      const int64_t i1 = std::min(cols, i0 + kBatch), nbat = i1 - i0;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t j = perm[i];
        const int e = static_cast<int>(j % g);
        for (int64_t r = 0; r < m; ++r) {
          float* wr = &Wc[r * cols];
          const float w = wr[i];
          const float* gv = &tables[static_cast<size_t>(tab[r * cols + j]) * static_cast<size_t>(levels)];
          int best = 0;
          float be = std::fabs(gv[0] - w);
          for (int k = 1; k < levels; ++k)
            if (const float d = std::fabs(gv[k] - w); d < be) be = d, best = k;
          quant::set_block_code(t, dst + (r0 + r) * row_bytes + (j / g) * block_bytes, e, best);
          const float err = static_cast<float>((w - gv[best]) / udiag[i]);
          E[r * nbat + (i - i0)] = err;
          for (int64_t i2 = i + 1; i2 < i1; ++i2) wr[i2] -= err * Uf[i * cols + i2];
        }
      }
      if (i1 == cols) break;
      // W_R -= E U_BR (E already holds the errors divided by U_ii).
      blas::api().sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(cols - i1),
                        static_cast<int>(nbat), -1.f, E.data(), static_cast<int>(nbat), Uf.data() + i0 * cols + i1,
                        static_cast<int>(cols), 1.f, Wc.data() + i1, static_cast<int>(cols));
    }
  }
}

}  // namespace

void gptq_quantize(GgmlType t, const float* W0, int64_t rows, int64_t cols, const double* H, uint8_t* dst,
                   double damp, bool act_order) {
  const GgmlTypeInfo* ti = ggml_type_info(t);
  if (!ti || !ti->quantized) fail("gptq: {} is not a block type", ggml_type_name(t));
  const int64_t g = ti->block_size;
  if (cols % g) fail("gptq: row length {} is not a multiple of {}'s block size {}", cols, ti->name, g);
  if (act_order && quant::block_code_levels(t) > 0)
    return gptq_act_order(t, ti, quant::block_code_levels(t), W0, rows, cols, H, dst, damp);
  const std::vector<double> U = inverse_hessian_cholesky(H, cols, damp);
  std::vector<float> W(W0, W0 + rows * cols);
  const uint64_t row_bytes = *ggml_row_size(t, static_cast<uint64_t>(cols));
  const uint64_t block_bytes = ti->type_size;
  std::vector<float> buf(static_cast<size_t>(rows * g)), q(static_cast<size_t>(rows * g)), imp(static_cast<size_t>(g));
  std::vector<uint8_t> enc(static_cast<size_t>(rows) * block_bytes);
  std::vector<double> Uinv(static_cast<size_t>(g * g));
  std::vector<float> M, E(static_cast<size_t>(rows * g));
  const int levels = quant::block_code_levels(t);
  std::vector<float> grid(static_cast<size_t>(rows * g) * static_cast<size_t>(std::max(levels, 0))), lv(static_cast<size_t>(g));
  std::vector<uint8_t> probe;
  for (int64_t b0 = 0; b0 < cols; b0 += g) {
    // Inverse of the upper-triangular block U_FF (back substitution, column by column of the identity).
    std::fill(Uinv.begin(), Uinv.end(), 0.0);
    for (int64_t c = 0; c < g; ++c) {
      Uinv[c * g + c] = 1.0 / U[(b0 + c) * cols + b0 + c];
      for (int64_t i = c - 1; i >= 0; --i) {
        double s = 0;
        for (int64_t k = i + 1; k <= c; ++k) s += U[(b0 + i) * cols + b0 + k] * Uinv[k * g + c];
        Uinv[i * g + c] = -s / U[(b0 + i) * cols + b0 + i];
      }
    }
    // The block's error after optimal compensation is E U_FF^-1 U_FF^-T Eᵀ; its diagonal weights the search
    // (for a single column: (w - q)² / [H^-1]_jj, GPTQ's own criterion).
    for (int64_t j = 0; j < g; ++j) {
      double s = 0;
      for (int64_t k = j; k < g; ++k) s += Uinv[j * g + k] * Uinv[j * g + k];
      imp[j] = static_cast<float>(s);
    }
    for (int64_t r = 0; r < rows; ++r) std::memcpy(&buf[r * g], &W[r * cols + b0], static_cast<size_t>(g) * sizeof(float));
    quant::quantize_rows(t, buf.data(), enc.data(), rows, g, imp.data());
    if (levels > 0) {
      // The block's scales stay; its elements are re-rounded column by column on that grid, each column's
      // error (scaled by 1/U_jj) fed into the block's later columns (GPTQ proper); E collects those errors.
      for (int64_t r = 0; r < rows; ++r) {
        uint8_t* blk = &enc[r * block_bytes];
        for (int k = 0; k < levels; ++k) {
          probe.assign(blk, blk + block_bytes);
          for (int64_t e = 0; e < g; ++e) quant::set_block_code(t, probe.data(), static_cast<int>(e), k);
          quant::dequantize_row(t, probe.data(), lv.data(), g);
          for (int64_t e = 0; e < g; ++e) grid[(r * g + e) * levels + k] = lv[e];
        }
      }
      for (int64_t c = 0; c < g; ++c) {
        const int64_t j = b0 + c;
        const double ujj = U[j * cols + j];
        for (int64_t r = 0; r < rows; ++r) {
          const float w = W[r * cols + j];
          const float* gv = &grid[(r * g + c) * levels];
          int best = 0;
          float be = std::fabs(gv[0] - w);
          for (int k = 1; k < levels; ++k)
            if (const float d = std::fabs(gv[k] - w); d < be) be = d, best = k;
          quant::set_block_code(t, &enc[r * block_bytes], static_cast<int>(c), best);
          const float err = static_cast<float>((w - gv[best]) / ujj);
          E[r * g + c] = err;
          float* wr = &W[r * cols];
          for (int64_t c2 = c + 1; c2 < g; ++c2) wr[b0 + c2] -= err * static_cast<float>(U[j * cols + b0 + c2]);
        }
      }
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(dst + r * row_bytes + (b0 / g) * block_bytes, &enc[r * block_bytes], block_bytes);
      const int64_t rest = cols - b0 - g;
      if (rest == 0) break;
      // W_R -= E U_FR (E already holds the errors divided by U_jj).
      M.resize(static_cast<size_t>(g * rest));
      for (int64_t i = 0; i < g; ++i)
        for (int64_t c = 0; c < rest; ++c) M[i * rest + c] = static_cast<float>(U[(b0 + i) * cols + b0 + g + c]);
      blas::api().sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(rest),
                  static_cast<int>(g), -1.f, E.data(), static_cast<int>(g), M.data(), static_cast<int>(rest), 1.f,
                  W.data() + b0 + g, static_cast<int>(cols));
      continue;
    }
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(dst + r * row_bytes + (b0 / g) * block_bytes, &enc[r * block_bytes], block_bytes);
      quant::dequantize_row(t, &enc[r * block_bytes], &q[r * g], g);
      for (int64_t j = 0; j < g; ++j) E[r * g + j] = buf[r * g + j] - q[r * g + j];
    }
    const int64_t rest = cols - b0 - g;
    if (rest == 0) break;
    // M = U_FF^-1 U_FR (g × rest), then W_R -= E M.
    M.assign(static_cast<size_t>(g * rest), 0.f);
    for (int64_t i = 0; i < g; ++i)
      for (int64_t c = 0; c < rest; ++c) {
        double s = 0;
        for (int64_t k = i; k < g; ++k) s += Uinv[i * g + k] * U[(b0 + k) * cols + b0 + g + c];
        M[i * rest + c] = static_cast<float>(s);
      }
    blas::api().sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(rest),
                static_cast<int>(g), -1.f, E.data(), static_cast<int>(g), M.data(), static_cast<int>(rest), 1.f,
                W.data() + b0 + g, static_cast<int>(cols));
  }
}

}  // namespace edgeq::calibrate
