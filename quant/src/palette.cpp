// Palettization (see palette.h).
#include "edgeq/quant/palette.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "edgeq/base/error.h"
#include "edgeq/base/half.h"
#include "edgeq/formats/palette_layout.h"

namespace edgeq::quant {

namespace {

constexpr int kMaxIterations = 300;
constexpr size_t kMaxBins = 16384;  // the exact clustering's resolution (memory k·kMaxBins·4 bytes)
constexpr int kReseedIterations = 100;  // empty clusters are re-seeded only this early (so the loop ends)

// Sorted distinct values with their summed weights, and prefix sums of w, w·v, w·v² (double).
struct Histogram {
  std::vector<float> v;
  std::vector<double> pw, ps, pq;  // size m+1
  size_t m() const { return v.size(); }
  double weight(size_t a, size_t b) const { return pw[b] - pw[a]; }
  double mean(size_t a, size_t b) const { return (ps[b] - ps[a]) / (pw[b] - pw[a]); }
  double sse(size_t a, size_t b) const {
    const double w = weight(a, b);
    if (w <= 0) return 0;
    const double s = ps[b] - ps[a];
    return std::max(0.0, (pq[b] - pq[a]) - s * s / w);
  }
};

Histogram histogram(const float* x, const float* w, int64_t n) {
  std::vector<std::pair<float, float>> p(static_cast<size_t>(n));
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    p[i] = {x[i], w ? w[i] : 1.f};
    total += p[i].second;
  }
  if (!(total > 0))
    for (auto& e : p) e.second = 1.f;  // no importance anywhere: plain error
  std::sort(p.begin(), p.end());
  Histogram h;
  h.pw.push_back(0);
  h.ps.push_back(0);
  h.pq.push_back(0);
  for (size_t i = 0; i < p.size();) {
    const float v = p[i].first;
    double ws = 0;
    for (; i < p.size() && p[i].first == v; ++i) ws += p[i].second;
    h.v.push_back(v);
    h.pw.push_back(h.pw.back() + ws);
    h.ps.push_back(h.ps.back() + ws * v);
    h.pq.push_back(h.pq.back() + ws * double(v) * v);
  }
  return h;
}

// Cluster boundaries for ascending centroids: cluster j is [b[j], b[j+1]); a value at a midpoint goes to the
// lower cluster (as palette_index does).
void boundaries(const Histogram& h, const std::vector<double>& c, std::vector<size_t>& b) {
  const size_t k = c.size();
  b.assign(k + 1, 0);
  b[k] = h.m();
  for (size_t j = 0; j + 1 < k; ++j) {
    const double mid = 0.5 * (c[j] + c[j + 1]);
    b[j + 1] = static_cast<size_t>(std::upper_bound(h.v.begin(), h.v.end(), mid,
                                                    [](double a, float e) { return a < double(e); }) -
                                   h.v.begin());
  }
}

// The k centroids of the clustering of bins (bin b = distinct values [bins[b], bins[b+1])) into k runs of
// consecutive bins with the least weighted squared error: dynamic programming over runs, each layer solved by
// divide and conquer (the best split point is monotone for one-dimensional k-means). Ties: the earliest split.
std::vector<double> optimal_centroids(const Histogram& h, const std::vector<size_t>& bins, size_t k) {
  const size_t nb = bins.size() - 1;
  const double inf = std::numeric_limits<double>::infinity();
  auto cost_fn = [&](size_t a, size_t b) { return h.sse(bins[a], bins[b]); };
  std::vector<double> prev(nb + 1, inf), cur(nb + 1, inf);
  std::vector<std::vector<uint32_t>> arg(k, std::vector<uint32_t>(nb + 1, 0));
  for (size_t i = 1; i <= nb; ++i) prev[i] = cost_fn(0, i);
  struct Solver {
    const std::vector<double>& prev;
    std::vector<double>& cur;
    std::vector<uint32_t>& arg;
    const decltype(cost_fn)& cost;
    void solve(size_t lo, size_t hi, size_t ol, size_t oh) {
      while (lo <= hi) {
        const size_t mid = lo + (hi - lo) / 2;
        double best = std::numeric_limits<double>::infinity();
        size_t bt = ol;
        for (size_t t = ol; t <= std::min(mid - 1, oh); ++t) {
          const double v = prev[t] + cost(t, mid);
          if (v < best) {
            best = v;
            bt = t;
          }
        }
        cur[mid] = best;
        arg[mid] = static_cast<uint32_t>(bt);
        if (mid > lo) solve(lo, mid - 1, ol, bt);
        lo = mid + 1;  // the upper half iteratively
        ol = bt;
      }
    }
  };
  for (size_t j = 1; j < k; ++j) {
    std::fill(cur.begin(), cur.end(), inf);
    Solver{prev, cur, arg[j], cost_fn}.solve(j + 1, nb, j, nb - 1);
    std::swap(prev, cur);
  }
  std::vector<double> c(k);
  size_t i = nb;
  for (size_t j = k; j-- > 0;) {
    const size_t t = j == 0 ? 0 : arg[j][i];
    const size_t a = bins[t], b = bins[i];
    c[j] = h.weight(a, b) > 0 ? h.mean(a, b) : 0.5 * (double(h.v[a]) + h.v[b - 1]);
    i = t;
  }
  return c;
}

}  // namespace

std::vector<float> fit_palette(const float* x, const float* w, int64_t n, int bits) {
  if (!palette::valid_bits(bits)) fail("palettize: {} bits is not one of 2, 3, 4, 6, 8", bits);
  const size_t k = size_t{1} << bits;
  std::vector<float> lut(k, 0.f);
  if (n <= 0) return lut;
  const Histogram h = histogram(x, w, n);
  const size_t m = h.m();
  std::vector<double> c(k);
  if (m <= k) {
    for (size_t j = 0; j < k; ++j) c[j] = h.v[std::min(j, m - 1)];
  } else {
    // Seeds: the optimal clustering of at most kMaxBins bins of consecutive distinct values (exact when m fits).
    std::vector<size_t> bins(std::min(m, kMaxBins) + 1);
    for (size_t i = 0; i < bins.size(); ++i) bins[i] = i * m / (bins.size() - 1);
    c = optimal_centroids(h, bins, k);
    std::sort(c.begin(), c.end());
    std::vector<size_t> bd, prev;
    for (int it = 0; it < kMaxIterations; ++it) {
      boundaries(h, c, bd);
      if (bd == prev) break;
      prev = bd;
      std::vector<size_t> empty;
      for (size_t j = 0; j < k; ++j) {
        if (h.weight(bd[j], bd[j + 1]) > 0) c[j] = h.mean(bd[j], bd[j + 1]);
        else empty.push_back(j);
      }
      if (it < kReseedIterations) {
        // An empty cluster moves to the upper part of the cluster with the largest error (each cluster is split
        // at most once per iteration).
        std::vector<bool> split(k, false);
        for (size_t e : empty) {
          size_t worst = k;
          double worst_sse = 0;
          for (size_t j = 0; j < k; ++j) {
            const double s = !split[j] && bd[j + 1] - bd[j] >= 2 ? h.sse(bd[j], bd[j + 1]) : 0.0;
            if (s > worst_sse) {
              worst_sse = s;
              worst = j;
            }
          }
          if (worst == k) break;
          split[worst] = true;
          const size_t a = bd[worst], z = bd[worst + 1];
          size_t t = static_cast<size_t>(std::upper_bound(h.v.begin() + a, h.v.begin() + z, c[worst],
                                                          [](double q, float e2) { return q < double(e2); }) -
                                         h.v.begin());
          t = std::clamp(t, a + 1, z - 1);
          if (h.weight(t, z) > 0 && h.weight(a, t) > 0) {
            c[e] = h.mean(t, z);
            c[worst] = h.mean(a, t);
          } else {
            c[e] = h.v[z - 1];
          }
        }
        if (!empty.empty()) prev.clear();
      }
      std::sort(c.begin(), c.end());
    }
  }
  for (size_t j = 0; j < k; ++j) lut[j] = f16_to_f32(f32_to_f16(static_cast<float>(c[j])));
  std::sort(lut.begin(), lut.end());
  return lut;
}

int palette_index(const float* lut, int k, float v) {
  int j = static_cast<int>(std::lower_bound(lut, lut + k, v) - lut);
  if (j == k) return k - 1;
  if (j > 0 && v - lut[j - 1] <= lut[j] - v) {
    const float lo = lut[j - 1];
    while (j > 0 && lut[j - 1] == lo) --j;  // the first of equal entries
    return j;
  }
  return j;
}

namespace {

// Rows pack `kElems` indices into `kBytes` little-endian bytes (3 bytes for 3 and 6 bits, 1 byte otherwise).
template <int B>
void encode_row(const float* x, const float* lut, uint8_t* out, int64_t n) {
  constexpr int kBytes = (B == 3 || B == 6) ? 3 : 1;
  constexpr int kElems = kBytes * 8 / B;
  constexpr int k = 1 << B;
  for (int64_t i = 0; i < n; i += kElems, out += kBytes) {
    uint32_t v = 0;
    for (int e = 0; e < kElems; ++e) v |= static_cast<uint32_t>(palette_index(lut, k, x[i + e])) << (e * B);
    for (int b = 0; b < kBytes; ++b) out[b] = static_cast<uint8_t>(v >> (8 * b));
  }
}

template <int B>
void decode_row(const uint8_t* in, const float* lut, float* dst, int64_t n) {
  constexpr int kBytes = (B == 3 || B == 6) ? 3 : 1;
  constexpr int kElems = kBytes * 8 / B;
  constexpr uint32_t kMask = (1u << B) - 1;
  for (int64_t i = 0; i < n; i += kElems, in += kBytes) {
    uint32_t v = in[0];
    if constexpr (kBytes == 3) v |= static_cast<uint32_t>(in[1]) << 8 | static_cast<uint32_t>(in[2]) << 16;
    for (int e = 0; e < kElems; ++e) dst[i + e] = lut[(v >> (e * B)) & kMask];
  }
}

void encode_row_bits(int bits, const float* x, const float* lut, uint8_t* out, int64_t n) {
  switch (bits) {
    case 2: return encode_row<2>(x, lut, out, n);
    case 3: return encode_row<3>(x, lut, out, n);
    case 4: return encode_row<4>(x, lut, out, n);
    case 6: return encode_row<6>(x, lut, out, n);
    default: return encode_row<8>(x, lut, out, n);
  }
}

}  // namespace

void palette_decode_row(const uint8_t* idx_row, const float* lut, int bits, float* dst, int64_t n) {
  switch (bits) {
    case 2: return decode_row<2>(idx_row, lut, dst, n);
    case 3: return decode_row<3>(idx_row, lut, dst, n);
    case 4: return decode_row<4>(idx_row, lut, dst, n);
    case 6: return decode_row<6>(idx_row, lut, dst, n);
    case 8: return decode_row<8>(idx_row, lut, dst, n);
    default: fail("palette: {} bits is not one of 2, 3, 4, 6, 8", bits);
  }
}

void palettize(const float* x, int64_t nrows, int64_t n_per_row, const float* importance, int bits,
               int64_t group_rows, uint8_t* idx, uint16_t* lut, ThreadPool& pool) {
  if (!palette::valid_bits(bits)) fail("palettize: {} bits is not one of 2, 3, 4, 6, 8", bits);
  if (nrows <= 0 || n_per_row <= 0 || !palette::row_fits(static_cast<uint64_t>(n_per_row), bits))
    fail("palettize: rows of {} values do not pack into whole bytes at {} bits", n_per_row, bits);
  const int64_t g = group_rows == 0 ? nrows : group_rows;
  if (g < 0 || nrows % g != 0) fail("palettize: groups of {} rows do not divide {} rows", group_rows, nrows);
  const int64_t n_groups = nrows / g;
  const int k = 1 << bits;
  std::vector<float> tables(static_cast<size_t>(n_groups * k));
  pool.run(n_groups, [&](int64_t gi, int) {
    const int64_t n = g * n_per_row;
    std::vector<float> w;
    if (importance) {
      w.resize(static_cast<size_t>(n));
      for (int64_t r = 0; r < g; ++r) std::copy(importance, importance + n_per_row, w.begin() + r * n_per_row);
    }
    auto t = fit_palette(x + gi * n, importance ? w.data() : nullptr, n, bits);
    std::copy(t.begin(), t.end(), tables.begin() + gi * k);
  });
  for (size_t i = 0; i < tables.size(); ++i) lut[i] = f32_to_f16(tables[i]);
  const uint64_t rb = palette::index_row_bytes(static_cast<uint64_t>(n_per_row), bits);
  constexpr int64_t kRowsPerTask = 16;
  pool.run((nrows + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task, int) {
    const int64_t r1 = std::min(nrows, (task + 1) * kRowsPerTask);
    for (int64_t r = task * kRowsPerTask; r < r1; ++r)
      encode_row_bits(bits, x + r * n_per_row, tables.data() + (r / g) * k, idx + static_cast<uint64_t>(r) * rb,
                      n_per_row);
  });
}

}  // namespace edgeq::quant
