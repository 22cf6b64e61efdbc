#include "edgeq/calibrate/gptq.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "edgeq/base/error.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/quantize.h"
#include "edgeq/runtime/blas.h"


namespace edgeq::calibrate {

namespace blas = runtime::blas;

namespace {

// The level of a grid (gv: the values of codes 0 .. levels-1 for one element) nearest w, the lowest on ties:
// both GPTQ orders round each column with it.
int nearest_level(const float* gv, int levels, float w) {
  int best = 0;
  float be = std::fabs(gv[0] - w);
  for (int k = 1; k < levels; ++k)
    if (const float d = std::fabs(gv[k] - w); d < be) be = d, best = k;
  return best;
}

// GPTQ's step for one element: the level of its grid gv nearest the error-updated weight w, written as element
// e's code in blk; returns the error (w - value) / u_jj that is fed into the later columns (both orders).
float round_element(GgmlType t, uint8_t* blk, int e, const float* gv, int levels, float w, double ujj) {
  const int best = nearest_level(gv, levels, w);
  quant::set_block_code(t, blk, e, best);
  return static_cast<float>((w - gv[best]) / ujj);
}
// Rows per work item of the error sums (fixed, so every sum is the same for any pool size).
constexpr int64_t kErrRows = 64;

void run_chunks(ThreadPool* pool, int64_t n, const std::function<void(int64_t task, int worker)>& fn) {
  if (pool) {
    pool->run(n, fn);
  } else {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
  }
}
int pool_size(const ThreadPool* pool) { return pool ? pool->size() : 1; }

// fn(r0, m, d, worker) for each chunk of kErrRows rows, d = W - Q of rows [r0, r0 + m) in double (row-major,
// m × cols, the worker's buffer).
void diff_chunks(const float* W, const float* Q, int64_t rows, int64_t cols, ThreadPool* pool,
                 const std::function<void(int64_t r0, int64_t m, double* d, int worker)>& fn) {
  std::vector<std::vector<double>> D(static_cast<size_t>(pool_size(pool)));
  run_chunks(pool, (rows + kErrRows - 1) / kErrRows, [&](int64_t c, int worker) {
    const int64_t r0 = c * kErrRows, m = std::min(kErrRows, rows - r0);
    std::vector<double>& d = D[worker];
    d.resize(static_cast<size_t>(kErrRows * cols));
    for (int64_t i = 0; i < m * cols; ++i) d[i] = static_cast<double>(W[r0 * cols + i]) - Q[r0 * cols + i];
    fn(r0, m, d.data(), worker);
  });
}
}  // namespace

double output_error(const float* W, const float* Q, int64_t rows, int64_t cols, const double* H, ThreadPool* pool) {
  // sum_r d_r·(H d_r) over blocks of rows: one symmetric matrix product per block (level 3; row by row, H was
  // read from memory once per row). Each block's sum is formed on its own and the sums added in block order.
  std::vector<double> part(static_cast<size_t>((rows + kErrRows - 1) / kErrRows));
  std::vector<std::vector<double>> HD(static_cast<size_t>(pool_size(pool)));
  diff_chunks(W, Q, rows, cols, pool, [&](int64_t r0, int64_t m, double* d, int worker) {
    std::vector<double>& hd = HD[worker];
    hd.resize(static_cast<size_t>(kErrRows * cols));
    blas::api().dsymm(CblasRowMajor, CblasRight, CblasUpper, static_cast<int>(m), static_cast<int>(cols), 1.0, H,
                      static_cast<int>(cols), d, static_cast<int>(cols), 0.0, hd.data(), static_cast<int>(cols));
    double s = 0;
    for (int64_t i = 0; i < m * cols; ++i) s += d[i] * hd[i];
    part[r0 / kErrRows] = s;
  });
  double total = 0;
  for (double s : part) total += s;
  return total;
}

void block_output_errors(const float* W, const float* Q, int64_t rows, int64_t cols, const double* H, int64_t g,
                         double* out, ThreadPool* pool) {
  const int64_t nb = cols / g;
  std::vector<std::vector<double>> HD(static_cast<size_t>(pool_size(pool)));
  diff_chunks(W, Q, rows, cols, pool, [&](int64_t r0, int64_t m, double* d, int worker) {
    std::vector<double>& hd = HD[worker];
    hd.resize(static_cast<size_t>(kErrRows * g));
    for (int64_t b = 0; b < nb; ++b) {
      blas::api().dsymm(CblasRowMajor, CblasRight, CblasUpper, static_cast<int>(m), static_cast<int>(g), 1.0,
                        H + b * g * cols + b * g, static_cast<int>(cols), d + b * g, static_cast<int>(cols), 0.0,
                        hd.data(), static_cast<int>(g));
      for (int64_t r = 0; r < m; ++r) {
        double e = 0;
        for (int64_t j = 0; j < g; ++j) e += d[r * cols + b * g + j] * hd[r * g + j];
        out[(r0 + r) * nb + b] = e;
      }
    }
  });
}

std::vector<double> ridge_hessian(std::vector<double> H, int64_t n, double ridge) {
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += H[i * n + i];
  mean /= static_cast<double>(std::max<int64_t>(n, 1));
  for (int64_t i = 0; i < n; ++i) H[i * n + i] += ridge * mean;
  return H;
}

std::vector<double> ridge_hessian(const double* H, int64_t n, double ridge) {
  return ridge_hessian(std::vector<double>(H, H + n * n), n, ridge);
}

std::vector<float> ridge_importance(std::vector<float> v, double ridge) {
  double mean = 0;
  for (float x : v) mean += x;
  mean /= static_cast<double>(std::max<size_t>(v.size(), 1));
  for (auto& x : v) x = static_cast<float>(x + ridge * mean);
  return v;
}

namespace {
// A (n × n row-major, H with its diagonal damped) -> the upper Cholesky factor U of A^-1 in A's upper triangle,
// zeros below. LAPACK's column-major 'L' routines on a row-major matrix read and write its upper triangle only,
// so A's strictly lower triangle keeps H's values until the factor is complete (the in-place variant restores
// H from it for another attempt). False when a factorisation fails.
bool factor_inverse(std::vector<double>& A, int n) {
  int info = 0;
  // Column-major 'L' on a symmetric row-major matrix: the row-major upper factor U with A = UᵀU.
  blas::api().dpotrf("L", &n, A.data(), &n, &info);
  if (info != 0) return false;
  blas::api().dpotri("L", &n, A.data(), &n, &info);  // A^-1 in the row-major upper triangle
  if (info != 0) return false;
  blas::api().dpotrf("L", &n, A.data(), &n, &info);  // A^-1 = UᵀU
  if (info != 0) return false;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < i; ++j) A[static_cast<size_t>(i) * n + j] = 0;
  return true;
}

void damp_diagonal(std::vector<double>& A, int n, const double* diag, double damp, double mean) {
  for (int i = 0; i < n; ++i) A[static_cast<size_t>(i) * n + i] = (diag[i] <= 0 ? 1.0 : diag[i]) + damp * mean;
}

double diagonal_mean(const double* diag, int n) {
  double mean = 0;
  for (int i = 0; i < n; ++i) mean += diag[i];
  mean /= n;
  return mean > 0 ? mean : 1;
}

[[noreturn]] void fail_factorise() { fail("gptq: the Hessian cannot be factorised even with heavy damping"); }

// inverse_hessian_cholesky of H with rows and columns in the order perm, without a permuted copy of H.
std::vector<double> inverse_cholesky_permuted(const double* H, int64_t n64, double damp, const int64_t* perm) {
  const int n = static_cast<int>(n64);
  std::vector<double> diag(static_cast<size_t>(n)), A(static_cast<size_t>(n) * n);
  for (int i = 0; i < n; ++i) diag[i] = H[perm[i] * n64 + perm[i]];
  const double mean = diagonal_mean(diag.data(), n);
  for (int attempt = 0; attempt < 8; ++attempt, damp *= 10) {
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < n; ++k) A[static_cast<size_t>(i) * n + k] = H[perm[i] * n64 + perm[k]];
    damp_diagonal(A, n, diag.data(), damp, mean);
    if (factor_inverse(A, n)) return A;
  }
  fail_factorise();
}
}  // namespace

std::vector<double> inverse_hessian_cholesky(std::vector<double> A, int64_t n64, double damp) {
  const int n = static_cast<int>(n64);
  std::vector<double> diag(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) diag[i] = A[static_cast<size_t>(i) * n + i];
  const double mean = diagonal_mean(diag.data(), n);
  for (int attempt = 0; attempt < 8; ++attempt, damp *= 10) {
    if (attempt > 0)  // H again: its upper triangle from the untouched lower one
      for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) A[static_cast<size_t>(i) * n + j] = A[static_cast<size_t>(j) * n + i];
    damp_diagonal(A, n, diag.data(), damp, mean);
    if (factor_inverse(A, n)) return A;
  }
  fail_factorise();
}

std::vector<double> inverse_hessian_cholesky(const double* H, int64_t n, double damp) {
  return inverse_hessian_cholesky(std::vector<double>(H, H + n * n), n, damp);
}

namespace {

// GPTQ with act-order (gptq.h): columns in order of decreasing H_jj, every block's grid fitted up front.
void gptq_act_order(GgmlType t, const GgmlTypeInfo* ti, int levels, const float* W0, int64_t rows, int64_t cols,
                    const double* H, uint8_t* dst, double damp, ThreadPool* pool) {
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
  if (pool)
    quant::quantize_rows_parallel(t, W0, dst, rows, cols, mean > 0 ? imp.data() : nullptr, *pool);
  else
    quant::quantize_rows(t, W0, dst, rows, cols, mean > 0 ? imp.data() : nullptr);
  // The order: decreasing H_jj (ties by index), U the Cholesky factor of the damped inverse of H permuted to it.
  std::vector<int64_t> perm(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) perm[j] = j;
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return H[a * cols + a] > H[b * cols + b]; });
  std::vector<double> U = inverse_cholesky_permuted(H, cols, damp, perm.data());
  std::vector<double> udiag(static_cast<size_t>(cols));
  for (int64_t i = 0; i < cols; ++i) udiag[i] = U[i * cols + i];
  const std::vector<float> Uf(U.begin(), U.end());
  U = {};
  // Rows are independent (each row's errors feed only its own later columns): a chunk of rows at a time keeps
  // the level tables small. Per element the table holds the values of its codes on its block's fixed grid;
  // consecutive elements of a block that share scales (a sub-block) share one table.
  // Chunks run side by side on the pool, each with its worker's buffers.
  constexpr int64_t kRowChunk = 128, kBatch = 128;  // rows per chunk; columns per lazy update
  const int64_t R = std::min(rows, kRowChunk);
  struct Scratch {
    std::vector<float> Wc, E, lv, tables;
    std::vector<uint32_t> tab;
  };
  std::vector<Scratch> scratch(static_cast<size_t>(pool_size(pool)));
  run_chunks(pool, (rows + R - 1) / R, [&](int64_t chunk, int worker) {
    const int64_t r0 = chunk * R;
    const int64_t m = std::min(R, rows - r0);
    Scratch& sc = scratch[worker];
    sc.Wc.resize(static_cast<size_t>(R * cols));
    sc.E.resize(static_cast<size_t>(R * kBatch));
    sc.lv.resize(static_cast<size_t>(levels * g));
    sc.tab.resize(static_cast<size_t>(R * cols));
    std::vector<float>& Wc = sc.Wc;
    std::vector<float>& E = sc.E;
    std::vector<float>& lv = sc.lv;
    std::vector<float>& tables = sc.tables;
    std::vector<uint32_t>& tab = sc.tab;
    tables.clear();
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t i = 0; i < cols; ++i) Wc[r * cols + i] = W0[(r0 + r) * cols + perm[i]];
      for (int64_t b0 = 0; b0 < cols; b0 += g) {
        quant::block_level_values(t, dst + (r0 + r) * row_bytes + (b0 / g) * block_bytes, lv.data());
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
          const float err = round_element(t, dst + (r0 + r) * row_bytes + (j / g) * block_bytes, e, gv, levels, w, udiag[i]);
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
  });
}

}  // namespace

namespace {
const GgmlTypeInfo* gptq_type(GgmlType t, int64_t cols) {
  const GgmlTypeInfo* ti = ggml_type_info(t);
  if (!ti || !ti->quantized) fail("gptq: {} is not a block type", ggml_type_name(t));
  if (cols % ti->block_size)
    fail("gptq: row length {} is not a multiple of {}'s block size {}", cols, ti->name, ti->block_size);
  return ti;
}

// Multiples of a lattice block's f16 scale GPTQ tries (the first, 1, is the encoder's own choice).
constexpr float kLatticeScaleTries[] = {1.f, 0.94f, 1.06f, 0.88f, 1.12f};
// Re-encodings of a lattice block for the targets its best pass left (at most; stops when no better).
constexpr int kLatticeRefits = 2;

// GPTQ in the natural column order, U the factor from inverse_hessian_cholesky.
void gptq_natural(GgmlType t, const GgmlTypeInfo* ti, const float* W0, int64_t rows, int64_t cols,
                  const std::vector<double>& U, uint8_t* dst, ThreadPool* pool) {
  const int64_t g = ti->block_size;
  std::vector<float> W(W0, W0 + rows * cols);
  const uint64_t row_bytes = *ggml_row_size(t, static_cast<uint64_t>(cols));
  const uint64_t block_bytes = ti->type_size;
  const int levels = quant::block_code_levels(t);
  const int group = quant::block_code_group(t);  // lattice types: codes chosen per group of columns
  std::vector<float> imp(static_cast<size_t>(g)), gimp(static_cast<size_t>(g)), M, E(static_cast<size_t>(rows * g));
  std::vector<double> Uinv(static_cast<size_t>(g * g));
  // Rows are independent (a row's errors feed only its own later columns): each block of columns is rounded in
  // chunks of rows side by side on the pool, each chunk with its worker's buffers. The update of the later
  // columns is one product over all rows, as OpenBLAS's sgemm may round a row differently in a smaller product.
  constexpr int64_t kRows = 64;
  struct Scratch {
    std::vector<float> buf, q, grid, lv;
    std::vector<uint8_t> enc, probe;
  };
  std::vector<Scratch> scratch(static_cast<size_t>(pool_size(pool)));
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
      // Within a group of columns chosen jointly, the same criterion restricted to the group (the group's
      // diagonal block of U_FF^-1 is the inverse of U's diagonal block).
      if (group > 0) {
        double sg = 0;
        for (int64_t k = j; k < (j / group + 1) * group; ++k) sg += Uinv[j * g + k] * Uinv[j * g + k];
        gimp[j] = static_cast<float>(sg);
      }
    }
    // The update of the later columns, W_R -= E M (E holds a chunk's errors): with code access the errors are
    // already divided by U_jj and M = U_FR; without, E = W_F - Q_F and M = U_FF^-1 U_FR.
    const int64_t rest = cols - b0 - g;
    M.assign(static_cast<size_t>(g * rest), 0.f);
    for (int64_t i = 0; i < g; ++i)
      for (int64_t c = 0; c < rest; ++c) {
        if (levels > 0 || group > 0) {
          M[i * rest + c] = static_cast<float>(U[(b0 + i) * cols + b0 + g + c]);
        } else {
          double s = 0;
          for (int64_t k = i; k < g; ++k) s += Uinv[i * g + k] * U[(b0 + k) * cols + b0 + g + c];
          M[i * rest + c] = static_cast<float>(s);
        }
      }
    run_chunks(pool, (rows + kRows - 1) / kRows, [&](int64_t chunk, int worker) {
      const int64_t r0 = chunk * kRows, m = std::min(kRows, rows - r0);
      Scratch& sc = scratch[worker];
      sc.buf.resize(static_cast<size_t>(kRows * g));
      sc.q.resize(sc.buf.size());
      float* Ec = E.data() + r0 * g;
      sc.enc.resize(static_cast<size_t>(kRows) * block_bytes);
      sc.lv.resize(static_cast<size_t>(g));
      sc.grid.resize(static_cast<size_t>(kRows * g) * static_cast<size_t>(std::max(levels, 0)));
      float* Wr = W.data() + r0 * cols;
      for (int64_t r = 0; r < m; ++r)
        std::memcpy(&sc.buf[r * g], &Wr[r * cols + b0], static_cast<size_t>(g) * sizeof(float));
      quant::quantize_rows(t, sc.buf.data(), sc.enc.data(), m, g, imp.data());
      if (levels > 0) {
        // The block's scales stay; its elements are re-rounded column by column on that grid, each column's
        // error (scaled by 1/U_jj) fed into the block's later columns (GPTQ proper); E collects those errors.
        sc.lv.resize(static_cast<size_t>(levels * g));
        for (int64_t r = 0; r < m; ++r) {
          quant::block_level_values(t, &sc.enc[r * block_bytes], sc.lv.data());
          for (int k = 0; k < levels; ++k)
            for (int64_t e = 0; e < g; ++e) sc.grid[(r * g + e) * levels + k] = sc.lv[k * g + e];
        }
        for (int64_t c = 0; c < g; ++c) {
          const int64_t j = b0 + c;
          const double ujj = U[j * cols + j];
          for (int64_t r = 0; r < m; ++r) {
            float* wr = &Wr[r * cols];
            const float w = wr[j];
            const float* gv = &sc.grid[(r * g + c) * levels];
            const float err = round_element(t, &sc.enc[r * block_bytes], static_cast<int>(c), gv, levels, w, ujj);
            Ec[r * g + c] = err;
            for (int64_t c2 = c + 1; c2 < g; ++c2) wr[b0 + c2] -= err * static_cast<float>(U[j * cols + b0 + c2]);
          }
        }
        for (int64_t r = 0; r < m; ++r)
          std::memcpy(dst + (r0 + r) * row_bytes + (b0 / g) * block_bytes, &sc.enc[r * block_bytes], block_bytes);
      } else if (group > 0) {
        // Lattice types: the block's scales stay; each group of columns gets the grid point(s) and signs nearest
        // its error-updated weights (exactly, weighted by the group's criterion), then its columns' errors are fed
        // forward one by one (dividing by U_jj), as if each column had been rounded to the chosen value. The pass
        // is run at a few multiples of the block's f16 scale (the encoder chose it before any error feedback) and
        // the one of least GPTQ error (the sum of the squared fed-forward errors, the objective) is kept.
        float qv[8];
        sc.q.resize(static_cast<size_t>(g));  // the block's targets before the pass
        sc.probe.resize(block_bytes);
        std::vector<float>& best_w = sc.lv;   // the best pass's updated targets
        std::vector<float> best_e(static_cast<size_t>(g)), gw(static_cast<size_t>(g));
        for (int64_t r = 0; r < m; ++r) {
          float* wr = &Wr[r * cols];
          uint8_t* blk = &sc.enc[r * block_bytes];
          std::memcpy(sc.q.data(), &wr[b0], static_cast<size_t>(g) * sizeof(float));
          std::vector<uint8_t> best_blk(blk, blk + block_bytes);
          double best_err = INFINITY;
          // The group choice's weights: the criterion times the encoders' sqrt(sigma2 + x^2) (sigma2 = 2 mean x^2 of
          // the block's targets), as in quantize_rows: tl-8m IQ2_XXS mean KLD 0.02745 with the plain criterion,
          // 0.02627 with the factor (calibration on calib.txt; 0.03839 / 0.03829 calibrated on its prose half and
          // evaluated on its code half).
          double sx2 = 0;
          for (int64_t c = 0; c < g; ++c) sx2 += static_cast<double>(sc.q[c]) * sc.q[c];
          const float sigma2 = static_cast<float>(2.0 * sx2 / static_cast<double>(g));
          for (int64_t c = 0; c < g; ++c) gw[c] = gimp[c] * std::sqrt(sigma2 + sc.q[c] * sc.q[c]);
          // One pass at the block's scales in probe: the total GPTQ error; the best pass is kept.
          auto pass = [&]() {
            std::memcpy(&wr[b0], sc.q.data(), static_cast<size_t>(g) * sizeof(float));
            double tot = 0;
            for (int64_t c0 = 0; c0 < g && tot < best_err; c0 += group) {
              quant::set_block_group(t, sc.probe.data(), static_cast<int>(c0 / group), &wr[b0 + c0], &gw[c0], qv);
              for (int64_t c = c0; c < c0 + group; ++c) {
                const int64_t j = b0 + c;
                const float err = static_cast<float>((wr[j] - qv[c - c0]) / U[j * cols + j]);
                Ec[r * g + c] = err;
                tot += static_cast<double>(err) * err;
                for (int64_t c2 = c + 1; c2 < g; ++c2) wr[b0 + c2] -= err * static_cast<float>(U[j * cols + b0 + c2]);
              }
            }
            if (tot < best_err) {
              best_err = tot;
              best_blk.assign(sc.probe.begin(), sc.probe.end());
              best_w.assign(&wr[b0], &wr[b0] + g);
              best_e.assign(&Ec[r * g], &Ec[r * g] + g);
            }
          };
          for (const float f : kLatticeScaleTries) {
            std::memcpy(sc.probe.data(), blk, block_bytes);
            if (f != 1.f) quant::scale_block_d(t, sc.probe.data(), f);
            pass();
          }
          // The encoder's scales for the targets as the best pass left them (every column's target after the
          // feedback of the block's earlier columns): the scales the pass itself would have wanted.
          for (int it = 0; it < kLatticeRefits; ++it) {
            const double prev = best_err;
            quant::quantize_rows(t, best_w.data(), sc.probe.data(), 1, g, imp.data());
            pass();
            if (!(best_err < prev)) break;
          }
          std::memcpy(blk, best_blk.data(), block_bytes);
          std::memcpy(&wr[b0], best_w.data(), static_cast<size_t>(g) * sizeof(float));
          std::memcpy(&Ec[r * g], best_e.data(), static_cast<size_t>(g) * sizeof(float));
        }
        for (int64_t r = 0; r < m; ++r)
          std::memcpy(dst + (r0 + r) * row_bytes + (b0 / g) * block_bytes, &sc.enc[r * block_bytes], block_bytes);
      } else {
        for (int64_t r = 0; r < m; ++r) {
          std::memcpy(dst + (r0 + r) * row_bytes + (b0 / g) * block_bytes, &sc.enc[r * block_bytes], block_bytes);
          quant::dequantize_row(t, &sc.enc[r * block_bytes], &sc.q[r * g], g);
          for (int64_t j = 0; j < g; ++j) Ec[r * g + j] = sc.buf[r * g + j] - sc.q[r * g + j];
        }
      }
    });
    if (rest == 0) break;
    blas::api().sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(rest),
                      static_cast<int>(g), -1.f, E.data(), static_cast<int>(g), M.data(), static_cast<int>(rest), 1.f,
                      W.data() + b0 + g, static_cast<int>(cols));
  }
}

}  // namespace

void gptq_quantize(GgmlType t, const float* W0, int64_t rows, int64_t cols, const double* H, uint8_t* dst,
                   double damp, bool act_order, ThreadPool* pool) {
  const GgmlTypeInfo* ti = gptq_type(t, cols);
  if (act_order && quant::block_code_levels(t) > 0)
    return gptq_act_order(t, ti, quant::block_code_levels(t), W0, rows, cols, H, dst, damp, pool);
  gptq_natural(t, ti, W0, rows, cols, inverse_hessian_cholesky(H, cols, damp), dst, pool);
}

void gptq_quantize(GgmlType t, const float* W0, int64_t rows, int64_t cols, std::vector<double> H, uint8_t* dst,
                   double damp, bool act_order, ThreadPool* pool) {
  const GgmlTypeInfo* ti = gptq_type(t, cols);
  if (H.size() != static_cast<size_t>(cols * cols)) fail("gptq: the Hessian is not {} x {}", cols, cols);
  if (act_order && quant::block_code_levels(t) > 0)
    return gptq_act_order(t, ti, quant::block_code_levels(t), W0, rows, cols, H.data(), dst, damp, pool);
  gptq_natural(t, ti, W0, rows, cols, inverse_hessian_cholesky(std::move(H), cols, damp), dst, pool);
}

}  // namespace edgeq::calibrate
