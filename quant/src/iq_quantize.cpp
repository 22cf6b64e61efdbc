// Encoders of the lattice i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S).
//
// A block of 256 values is 32 units of 8 (one sign byte each); a unit is one 8-value grid point (IQ1, IQ2) or
// two 4-value points (IQ3), a "slot" each. Scale groups of 16 or 32 values share an integer sub-scale ls, and
// the block an f16 scale d; a value is db * point * sign with db = d * f(ls) (IQ1: db * (point +- delta)).
//
// For a slot with weights w and target |x| (IQ1: x), every grid point p gives the weighted error
//   E_p(s) = sum_j w_j (t_j - s g_pj)^2 = const + s (s B_p - 2 A_p),  A_p = sum_j w_j t_j g_pj, B_p = sum_j w_j g_pj^2
// at scale s, so after computing A and B for all points once, the best point at any scale is an argmin over
// lines. Sign rules are variants of the same form: with 7 stored sign bits (IQ2_XXS, IQ2_XS, IQ3_XXS) an odd
// count of negative values costs one flipped sign, and the cheapest flip for point p is the element with the
// smallest w_j |x_j| g_pj (A_p - 2 min_j w_j |x_j| g_pj, exact); IQ1's delta sign gives two (A, B) pairs.
//
// Search (llama.cpp's quantize_row_iq*_impl is the baseline: nearest-level rounding, grid neighbour lists, one
// scale sweep): every slot scores every grid point exactly at a sweep of scales around its group's max-abs
// scale; the points that win anywhere in the sweep become the slot's short candidate list. Each scale group
// then gets its best continuous scale (sweep + least-squares refits over the candidates), and the block its f16
// scale d from the largest group scale put on each upper sub-scale level, a few tries near the top level and
// least-squares refits, with every group's
// integer sub-scale chosen among the nearest three by the exact error of the points re-chosen at that scale.
// Candidates are scored with the dequantizer's own scale products (d * f(ls) in float).
//
// The wide loops run on 8 fixed lanes (GCC vector extensions; an AVX2 copy of the same operations, no FMA), so
// the bytes do not depend on the machine or the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "block_kernels.h"
#include "edgeq/base/error.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/iq_grids.h"

namespace edgeq::quant::detail {

namespace {

constexpr int kUnits = QK_K / 8;  // 32 units of 8 values per block
constexpr int kMaxPts = 2048;
constexpr int kMaxCand = 12;
constexpr int kMaxSlots = 2 * kUnits;

enum class Signs { Free, Parity, Delta };

struct IqType {
  int dim;              // values per grid point: 8 or 4
  int npts;             // grid points
  int units_per_scale;  // 8-value units sharing a sub-scale: 4 (32 values) or 2 (16 values)
  int nlevels;          // sub-scale levels (16 or 8)
  Signs signs;
  bool delta_shared;    // IQ1_S: one delta sign per scale group
  float gmax;           // largest |value| of a point (IQ1: 1 + delta)
  std::vector<float> G, G2;  // point values, point-major by dimension: G[j * npts + p]
  float (*db)(float d, int ls);
};

template <typename E>
IqType make_type(const E* grid, int npts, int dim, int ups, int nlev, Signs s, bool shared, float (*db)(float, int)) {
  IqType t{dim, npts, ups, nlev, s, shared, 0.f, {}, {}, db};
  t.G.resize(static_cast<size_t>(dim) * npts);
  t.G2.resize(t.G.size());
  for (int p = 0; p < npts; ++p)
    for (int j = 0; j < dim; ++j) {
      const float v = s == Signs::Delta ? static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(grid[p] >> (8 * j))))
                                        : static_cast<float>(static_cast<uint8_t>(grid[p] >> (8 * j)));
      t.G[static_cast<size_t>(j) * npts + p] = v;
      t.G2[static_cast<size_t>(j) * npts + p] = v * v;
      t.gmax = std::max(t.gmax, std::fabs(v));
    }
  if (s == Signs::Delta) t.gmax += kIq1Delta;
  return t;
}

// The dequantizers' scale products (iq_dequant.cpp).
float db_iq2(float d, int ls) { return d * (0.5f + static_cast<float>(ls)) * 0.25f; }
float db_iq3xxs(float d, int ls) { return d * (0.5f + static_cast<float>(ls)) * 0.5f; }
float db_iq3s(float d, int ls) { return d * static_cast<float>(1 + 2 * ls); }
float db_iq1(float d, int ls) { return d * static_cast<float>(2 * ls + 1); }

const IqType& iq2xxs() { static const IqType t = make_type(kIq2xxsGrid, 256, 8, 4, 16, Signs::Parity, false, db_iq2); return t; }
const IqType& iq2xs() { static const IqType t = make_type(kIq2xsGrid, 512, 8, 2, 16, Signs::Parity, false, db_iq2); return t; }
const IqType& iq2s() { static const IqType t = make_type(kIq2sGrid, 1024, 8, 2, 16, Signs::Free, false, db_iq2); return t; }
const IqType& iq3xxs() { static const IqType t = make_type(kIq3xxsGrid, 256, 4, 4, 16, Signs::Parity, false, db_iq3xxs); return t; }
const IqType& iq3s() { static const IqType t = make_type(kIq3sGrid, 512, 4, 4, 16, Signs::Free, false, db_iq3s); return t; }
const IqType& iq1s() { static const IqType t = make_type(kIq1sGrid, 2048, 8, 4, 8, Signs::Delta, true, db_iq1); return t; }
const IqType& iq1m() { static const IqType t = make_type(kIq1sGrid, 2048, 8, 2, 8, Signs::Delta, false, db_iq1); return t; }

// ---- the wide loops: (A, B) of every point of a slot, and the argmin of s B - 2 A.
// Internal helpers (no ABI crosses a library boundary): GCC's note that 32-byte vectors change the ABI without
// AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float V8 __attribute__((vector_size(32)));
typedef int I8v __attribute__((vector_size(32)));
inline V8 load8(const float* p) { V8 v; std::memcpy(&v, p, sizeof v); return v; }
inline void store8(float* p, V8 v) { std::memcpy(p, &v, sizeof v); }
inline V8 splat(float f) { return V8{f, f, f, f, f, f, f, f}; }

// A[p] = sum_j a[j] G[j][p], B[p] = sum_j b[j] G2[j][p] (B uses G2; with c != nullptr C[p] = sum_j c[j] G[j][p]);
// parity: M[p] = min_j a[j] G[j][p].
template <int D>
inline void point_sums_impl(const IqType& T, const float* a, const float* b, const float* c, float* A, float* B,
                            float* C, float* M) {
  const int n = T.npts;
  for (int p = 0; p < n; p += 8) {
    V8 va = splat(0.f), vb = splat(0.f), vc = splat(0.f), vm = splat(INFINITY);
    for (int j = 0; j < D; ++j) {
      const V8 g = load8(T.G.data() + static_cast<size_t>(j) * n + p);
      const V8 t = splat(a[j]) * g;
      va += t;
      vb += splat(b[j]) * load8(T.G2.data() + static_cast<size_t>(j) * n + p);
      if (c) vc += splat(c[j]) * g;
      if (M) vm = t < vm ? t : vm;
    }
    store8(A + p, va);
    store8(B + p, vb);
    if (c) store8(C + p, vc);
    if (M) store8(M + p, vm);
  }
}
// argmin_p of s B[p] - 2 A[p] (first index on ties).
inline int argmin_line_impl(const float* A, const float* B, int n, float s) {
  V8 best = splat(INFINITY);
  I8v bi = I8v{0, 0, 0, 0, 0, 0, 0, 0};
  const I8v step = I8v{8, 8, 8, 8, 8, 8, 8, 8};
  I8v idx = I8v{0, 1, 2, 3, 4, 5, 6, 7};
  const V8 vs = splat(s), two = splat(2.f);
  for (int p = 0; p < n; p += 8, idx += step) {
    const V8 v = vs * load8(B + p) - two * load8(A + p);
    const I8v lt = v < best;
    best = lt ? v : best;
    bi = lt ? idx : bi;
  }
  int r = bi[0];
  float m = best[0];
  for (int l = 1; l < 8; ++l)
    if (best[l] < m || (best[l] == m && bi[l] < r)) {
      m = best[l];
      r = bi[l];
    }
  return r;
}

void point_sums_generic(const IqType& T, const float* a, const float* b, const float* c, float* A, float* B, float* C,
                        float* M) {
  if (T.dim == 8) point_sums_impl<8>(T, a, b, c, A, B, C, M);
  else point_sums_impl<4>(T, a, b, c, A, B, C, M);
}
int argmin_generic(const float* A, const float* B, int n, float s) { return argmin_line_impl(A, B, n, s); }
#if EDGEQ_QUANT_AVX2
__attribute__((target("avx2"))) void point_sums_avx2(const IqType& T, const float* a, const float* b, const float* c,
                                                     float* A, float* B, float* C, float* M) {
  if (T.dim == 8) point_sums_impl<8>(T, a, b, c, A, B, C, M);
  else point_sums_impl<4>(T, a, b, c, A, B, C, M);
}
__attribute__((target("avx2"))) int argmin_avx2(const float* A, const float* B, int n, float s) {
  return argmin_line_impl(A, B, n, s);
}
#endif
inline void point_sums(const IqType& T, const float* a, const float* b, const float* c, float* A, float* B, float* C,
                       float* M) {
#if EDGEQ_QUANT_AVX2
  if (quantize_simd_active()) return point_sums_avx2(T, a, b, c, A, B, C, M);
#endif
  point_sums_generic(T, a, b, c, A, B, C, M);
}
inline int argmin_line(const float* A, const float* B, int n, float s) {
#if EDGEQ_QUANT_AVX2
  if (quantize_simd_active()) return argmin_avx2(A, B, n, s);
#endif
  return argmin_generic(A, B, n, s);
}

// ---- per-block state.
struct Cand {
  float A, B;
  int p;
};
struct List {
  Cand c[kMaxCand];
  int n = 0;
  void add(int p, float A, float B) {
    for (int i = 0; i < n; ++i)
      if (c[i].p == p) return;
    if (n < kMaxCand) c[n++] = {A, B, p};
  }
  // Best candidate at scale s: index, value s B - 2 A (times s: the error).
  int best(float s, float* key) const {
    int r = 0;
    float m = INFINITY;
    for (int i = 0; i < n; ++i) {
      const float v = s * c[i].B - 2.f * c[i].A;
      if (v < m) {
        m = v;
        r = i;
      }
    }
    *key = m;
    return r;
  }
};

struct Block {
  const IqType& T;
  const float* x;
  const float* w;
  int slots_per_unit;
  bool odd[kUnits];          // parity: the unit has an odd count of negative values
  List list[kMaxSlots][2];   // per slot, per variant (parity: 0 as is, 1 one sign flipped; IQ1: delta +, -)
  explicit Block(const IqType& t) : T(t) {}
};

struct Sel {
  float err = 0, sA = 0, sB = 0;
  // per slot: chosen variant and candidate
  uint8_t var[kMaxSlots];
  uint8_t cand[kMaxSlots];
};

// Best choice of the units of scale group g at scale s (s > 0): the error relative to s = 0, and the sums of the
// chosen A and B (the least-squares scale is sA / sB).
void select_group(const Block& bk, int g, float s, Sel& out) {
  const IqType& T = bk.T;
  const int spu = bk.slots_per_unit;
  const int u0 = g * T.units_per_scale, u1 = u0 + T.units_per_scale;
  auto take = [&](int slot, int v, int ci) {
    out.var[slot] = static_cast<uint8_t>(v);
    out.cand[slot] = static_cast<uint8_t>(ci);
    out.sA += bk.list[slot][v].c[ci].A;
    out.sB += bk.list[slot][v].c[ci].B;
  };
  if (T.signs == Signs::Delta && T.delta_shared) {
    float bestk = INFINITY;
    int bestv = 0;
    for (int v = 0; v < 2; ++v) {
      float k = 0;
      for (int u = u0; u < u1; ++u) {
        float kk;
        bk.list[u][v].best(s, &kk);
        k += kk;
      }
      if (k < bestk) {
        bestk = k;
        bestv = v;
      }
    }
    for (int u = u0; u < u1; ++u) {
      float kk;
      take(u, bestv, bk.list[u][bestv].best(s, &kk));
    }
    out.err += s * bestk;
    return;
  }
  for (int u = u0; u < u1; ++u) {
    if (T.signs == Signs::Free || (T.signs == Signs::Parity && spu == 1)) {
      const int v = T.signs == Signs::Parity && bk.odd[u] ? 1 : 0;
      for (int h = 0; h < spu; ++h) {
        float k;
        const int ci = bk.list[u * spu + h][v].best(s, &k);
        take(u * spu + h, v, ci);
        out.err += s * k;
      }
    } else if (T.signs == Signs::Delta) {  // IQ1_M: a delta sign per unit
      float k0, k1;
      const int c0 = bk.list[u][0].best(s, &k0), c1 = bk.list[u][1].best(s, &k1);
      if (k1 < k0) take(u, 1, c1), out.err += s * k1;
      else take(u, 0, c0), out.err += s * k0;
    } else {  // IQ3_XXS: two 4-value slots share the unit's parity; an odd unit flips one sign in one half
      const int a = 2 * u, b = a + 1;
      float ka0, kb0;
      const int ca0 = bk.list[a][0].best(s, &ka0), cb0 = bk.list[b][0].best(s, &kb0);
      if (!bk.odd[u]) {
        take(a, 0, ca0), take(b, 0, cb0);
        out.err += s * (ka0 + kb0);
      } else {
        float ka1, kb1;
        const int ca1 = bk.list[a][1].best(s, &ka1), cb1 = bk.list[b][1].best(s, &kb1);
        if (ka1 + kb0 <= ka0 + kb1) take(a, 1, ca1), take(b, 0, cb0), out.err += s * (ka1 + kb0);
        else take(a, 0, ca0), take(b, 1, cb1), out.err += s * (ka0 + kb1);
      }
    }
  }
}

// Relative to the max-abs scale; 1.72 puts the max on IQ2's middle magnitude (43 / 25).
constexpr float kSweep[] = {0.6f, 0.7f, 0.8f, 0.9f, 1.0f, 1.1f, 1.25f, 1.45f, 1.72f};

// Builds every slot's candidate lists from exact scores of all grid points over the sweep around s0[group].
void build_lists(Block& bk, const float* s0) {
  const IqType& T = bk.T;
  const int D = T.dim, n = T.npts;
  alignas(32) float A[kMaxPts], B[kMaxPts], C[kMaxPts], M[kMaxPts], A2[kMaxPts], B2[kMaxPts];
  for (int u = 0; u < kUnits; ++u) {
    int neg = 0;
    for (int j = 0; j < 8; ++j) neg += bk.x[8 * u + j] < 0.f;
    bk.odd[u] = (neg & 1) != 0;
  }
  for (int slot = 0; slot < kUnits * bk.slots_per_unit; ++slot) {
    const int u = slot / bk.slots_per_unit;
    const float* x = bk.x + slot * D;
    const float* w = bk.w + slot * D;
    const float sg = s0[u / T.units_per_scale];
    float a[8], b[8], c[8];
    for (int j = 0; j < D; ++j) {
      a[j] = T.signs == Signs::Delta ? w[j] * x[j] : w[j] * std::fabs(x[j]);
      b[j] = w[j];
    }
    List* L = bk.list[slot];
    L[0].n = L[1].n = 0;
    if (!(sg > 0.f)) {  // an all-zero group: any point
      L[0].add(0, 0.f, 1.f);
      L[1].add(0, 0.f, 1.f);
      continue;
    }
    if (T.signs == Signs::Delta) {
      float sx = 0, sw = 0;
      for (int j = 0; j < D; ++j) sx += a[j], sw += w[j], c[j] = w[j];
      point_sums(T, a, b, c, A, B, C, nullptr);  // A = sum w x g, B = sum w g^2, C = sum w g
      const float dl = kIq1Delta;
      for (int p = 0; p < n; ++p) {  // delta +: A + dl sx, B + 2 dl C + dl^2 sw; delta -: the negated dl
        A2[p] = A[p] - dl * sx;
        B2[p] = B[p] - 2.f * dl * C[p] + dl * dl * sw;
        A[p] = A[p] + dl * sx;
        B[p] = B[p] + 2.f * dl * C[p] + dl * dl * sw;
      }
      for (float t : kSweep) {
        const int p0 = argmin_line(A, B, n, sg * t), p1 = argmin_line(A2, B2, n, sg * t);
        L[0].add(p0, A[p0], B[p0]);
        L[1].add(p1, A2[p1], B2[p1]);
      }
      continue;
    }
    const bool parity = T.signs == Signs::Parity;
    point_sums(T, a, b, nullptr, A, B, nullptr, parity ? M : nullptr);
    // Variant 0 (signs as x's) is needed unless an 8-value slot must flip; variant 1 when the unit is odd.
    const bool need0 = !(parity && D == 8 && bk.odd[u]);
    const bool need1 = parity && bk.odd[u];
    if (need1)
      for (int p = 0; p < n; ++p) A2[p] = A[p] - 2.f * M[p];
    for (float t : kSweep) {
      if (need0) {
        const int p = argmin_line(A, B, n, sg * t);
        L[0].add(p, A[p], B[p]);
      }
      if (need1) {
        const int p = argmin_line(A2, B, n, sg * t);
        L[1].add(p, A2[p], B[p]);
      }
    }
  }
}

// The chosen encoding of a block.
struct Plan {
  float d = 0;
  int ls[16] = {};
  Sel sel;  // per-slot choices (select_group output merged over groups)
  float err = INFINITY;
};

// Given d (f16-exact), chooses each group's sub-scale among the nearest three to its continuous scale; returns the
// total error and fills plan (choices, sums per group in gA/gB for a refit).
float eval_d(const Block& bk, int ngroups, const float* sbest, float d, Plan& plan, float* gA, float* gB, float* gf) {
  const IqType& T = bk.T;
  float total = 0;
  for (int g = 0; g < ngroups; ++g) {
    // nearest ls: f(ls) = db / d is affine in ls; find by scanning (16 levels, cheap)
    int l0 = 0;
    float bd = INFINITY;
    for (int ls = 0; ls < T.nlevels; ++ls) {
      const float e = std::fabs(T.db(d, ls) - sbest[g]);
      if (e < bd) bd = e, l0 = ls;
    }
    Sel best;
    best.err = INFINITY;
    int bls = l0;
    for (int ls = std::max(0, l0 - 1); ls <= std::min(T.nlevels - 1, l0 + 1); ++ls) {
      const float s = T.db(d, ls);
      if (!(s > 0.f)) continue;
      Sel cur;
      select_group(bk, g, s, cur);
      if (cur.err < best.err) best = cur, bls = ls;
    }
    if (!(best.err < INFINITY)) {  // d == 0
      best.err = 0;
      select_group(bk, g, 1.f, best);
      best.err = 0;
    }
    plan.ls[g] = bls;
    const int spu = bk.slots_per_unit;
    for (int sl = g * T.units_per_scale * spu; sl < (g + 1) * T.units_per_scale * spu; ++sl) {
      plan.sel.var[sl] = best.var[sl];
      plan.sel.cand[sl] = best.cand[sl];
    }
    gA[g] = best.sA;
    gB[g] = best.sB;
    gf[g] = T.db(1.f, bls);
    total += best.err;
  }
  plan.d = d;
  plan.err = total;
  return total;
}

Plan search_block(Block& bk) {
  const IqType& T = bk.T;
  const int ngroups = kUnits / T.units_per_scale;
  const int gsize = 8 * T.units_per_scale;
  float s0[16] = {}, sbest[16] = {};
  for (int g = 0; g < ngroups; ++g) {
    float m = 0;
    for (int i = 0; i < gsize; ++i) m = std::max(m, std::fabs(bk.x[g * gsize + i]));
    s0[g] = m / T.gmax;
  }
  build_lists(bk, s0);
  // Each group's best continuous scale: the sweep, each point refit by least squares.
  float smax = 0;
  for (int g = 0; g < ngroups; ++g) {
    sbest[g] = 0;
    if (!(s0[g] > 0.f)) continue;
    float be = INFINITY;
    for (float t : kSweep) {
      float s = s0[g] * t;
      for (int it = 0; it < 2; ++it) {
        Sel c;
        select_group(bk, g, s, c);
        if (c.err < be) be = c.err, sbest[g] = s;
        if (!(c.sB > 0.f) || !(c.sA > 0.f)) break;
        s = c.sA / c.sB;
      }
    }
    smax = std::max(smax, sbest[g]);
  }
  Plan best;
  best.d = 0;
  if (!(smax > 0.f)) {
    float gA[16], gB[16], gf[16];
    eval_d(bk, ngroups, sbest, 0.f, best, gA, gB, gf);
    return best;
  }
  const float fmax = T.db(1.f, T.nlevels - 1);
  float gA[16], gB[16], gf[16];
  auto try_d = [&](float d) {
    d = round_f16(d);
    if (!(d > 0.f)) return;
    Plan p;
    float a[16], b[16], f[16];
    eval_d(bk, ngroups, sbest, d, p, a, b, f);
    if (p.err < best.err) {
      best = p;
      std::memcpy(gA, a, sizeof a);
      std::memcpy(gB, b, sizeof b);
      std::memcpy(gf, f, sizeof f);
    }
  };
  // The largest group scale on each of the upper sub-scale levels (the block's exact d when it has one), and
  // near the top level.
  for (int l = T.nlevels - 1; l >= T.nlevels / 2; --l) try_d(smax / T.db(1.f, l));
  for (float t : {0.96f, 0.92f, 1.04f}) try_d(smax / fmax * t);
  for (int it = 0; it < 2; ++it) {  // least-squares d for the chosen sub-scales and points
    double num = 0, den = 0;
    for (int g = 0; g < ngroups; ++g) num += double(gf[g]) * gA[g], den += double(gf[g]) * gf[g] * gB[g];
    if (!(den > 0) || !(num > 0)) break;
    const float prev = best.err;
    try_d(static_cast<float>(num / den));
    if (!(best.err < prev)) break;
  }
  return best;
}

// A block's fields, unpacked: the f16 scale, the sub-scales, every slot's point, every unit's sign byte (the
// full byte, parity included) and delta sign (IQ1).
struct Packed {
  float d = 0;
  int ls[16] = {};
  int idx[kMaxSlots] = {};
  uint8_t signs[kUnits] = {};
  bool delta_neg[kUnits] = {};
};

Packed code(const Block& bk, const Plan& pl) {
  const IqType& T = bk.T;
  Packed c;
  c.d = pl.d;
  std::memcpy(c.ls, pl.ls, sizeof c.ls);
  const int D = T.dim, n = T.npts;
  for (int u = 0; u < kUnits; ++u) {
    uint8_t sb = 0;
    for (int j = 0; j < 8; ++j) sb |= static_cast<uint8_t>((bk.x[8 * u + j] < 0.f) << j);
    c.signs[u] = sb;
  }
  for (int slot = 0; slot < kUnits * bk.slots_per_unit; ++slot) {
    const int u = slot / bk.slots_per_unit, h = slot % bk.slots_per_unit;
    const int v = pl.sel.var[slot];
    const int p = bk.list[slot][v].c[pl.sel.cand[slot]].p;
    c.idx[slot] = p;
    if (T.signs == Signs::Delta) {
      c.delta_neg[u] = v == 1;
    } else if (T.signs == Signs::Parity && v == 1) {  // flip the cheapest element of this slot
      int kb = 0;
      float m = INFINITY;
      for (int j = 0; j < D; ++j) {
        const float t = bk.w[slot * D + j] * std::fabs(bk.x[slot * D + j]) * T.G[static_cast<size_t>(j) * n + p];
        if (t < m) m = t, kb = j;
      }
      c.signs[u] ^= static_cast<uint8_t>(1u << (h * D + kb));
    }
  }
  return c;
}

// ---- packing, per type (the inverse of iq_grids.h's field decoding).
void pack_iq2_xxs(const Packed& c, void* dst) {
  auto* b = static_cast<BlockIQ2_XXS*>(dst);
  store_f16(b->d, c.d);
  for (int ib = 0; ib < 8; ++ib) {
    uint32_t q[2] = {0, 0};
    for (int l = 0; l < 4; ++l) {
      q[0] |= static_cast<uint32_t>(c.idx[4 * ib + l]) << (8 * l);
      q[1] |= static_cast<uint32_t>(c.signs[4 * ib + l] & 127) << (7 * l);
    }
    q[1] |= static_cast<uint32_t>(c.ls[ib]) << 28;
    std::memcpy(b->qs + 4 * ib, q, 8);
  }
}
void unpack_iq2_xxs(const void* src, Packed& c) {
  const auto& b = *static_cast<const BlockIQ2_XXS*>(src);
  c.d = load_f16(b.d);
  for (int ib = 0; ib < 8; ++ib) {
    uint32_t w[2];
    iq2xxs_words(b, ib, w);
    c.ls[ib] = iq2xxs_scale(w);
    for (int l = 0; l < 4; ++l) c.idx[4 * ib + l] = iq2xxs_index(w, l), c.signs[4 * ib + l] = iq2xxs_signs(w, l);
  }
}

void pack_iq2_xs(const Packed& c, void* dst) {
  auto* b = static_cast<BlockIQ2_XS*>(dst);
  store_f16(b->d, c.d);
  for (int u = 0; u < kUnits; ++u) {
    const uint16_t q = static_cast<uint16_t>(c.idx[u] | ((c.signs[u] & 127) << 9));
    std::memcpy(&b->qs[u], &q, 2);
  }
  for (int ib = 0; ib < 8; ++ib) b->scales[ib] = static_cast<uint8_t>(c.ls[2 * ib] | (c.ls[2 * ib + 1] << 4));
}
void unpack_iq2_xs(const void* src, Packed& c) {
  const auto& b = *static_cast<const BlockIQ2_XS*>(src);
  c.d = load_f16(b.d);
  for (int ib = 0; ib < 8; ++ib) {
    c.ls[2 * ib] = iq2x_scale(b.scales, ib, 0), c.ls[2 * ib + 1] = iq2x_scale(b.scales, ib, 2);
    for (int l = 0; l < 4; ++l) c.idx[4 * ib + l] = iq2xs_index(b, ib, l), c.signs[4 * ib + l] = iq2xs_signs(b, ib, l);
  }
}

void pack_iq2_s(const Packed& c, void* dst) {
  auto* b = static_cast<BlockIQ2_S*>(dst);
  std::memset(b, 0, sizeof *b);
  store_f16(b->d, c.d);
  for (int u = 0; u < kUnits; ++u) {
    b->qs[u] = static_cast<uint8_t>(c.idx[u] & 255);
    b->qh[u / 4] |= static_cast<uint8_t>((c.idx[u] >> 8) << (2 * (u % 4)));
    b->qs[QK_K / 8 + u] = c.signs[u];
  }
  for (int ib = 0; ib < 8; ++ib) b->scales[ib] = static_cast<uint8_t>(c.ls[2 * ib] | (c.ls[2 * ib + 1] << 4));
}
void unpack_iq2_s(const void* src, Packed& c) {
  const auto& b = *static_cast<const BlockIQ2_S*>(src);
  c.d = load_f16(b.d);
  for (int ib = 0; ib < 8; ++ib) {
    c.ls[2 * ib] = iq2x_scale(b.scales, ib, 0), c.ls[2 * ib + 1] = iq2x_scale(b.scales, ib, 2);
    for (int l = 0; l < 4; ++l) c.idx[4 * ib + l] = iq2s_index(b, ib, l), c.signs[4 * ib + l] = iq2s_signs(b, ib, l);
  }
}

void pack_iq3_xxs(const Packed& c, void* dst) {
  auto* b = static_cast<BlockIQ3_XXS*>(dst);
  store_f16(b->d, c.d);
  for (int ib = 0; ib < 8; ++ib) {
    uint32_t word = static_cast<uint32_t>(c.ls[ib]) << 28;
    for (int k = 0; k < 8; ++k) b->qs[8 * ib + k] = static_cast<uint8_t>(c.idx[8 * ib + k]);
    for (int l = 0; l < 4; ++l) word |= static_cast<uint32_t>(c.signs[4 * ib + l] & 127) << (7 * l);
    std::memcpy(b->qs + QK_K / 4 + 4 * ib, &word, 4);
  }
}
void unpack_iq3_xxs(const void* src, Packed& c) {
  const auto& b = *static_cast<const BlockIQ3_XXS*>(src);
  c.d = load_f16(b.d);
  for (int ib = 0; ib < 8; ++ib) {
    const uint32_t w = iq3xxs_word(b, ib);
    c.ls[ib] = static_cast<int>(w >> 28);
    for (int k = 0; k < 8; ++k) c.idx[8 * ib + k] = iq3xxs_index(b, ib, k);
    for (int l = 0; l < 4; ++l) c.signs[4 * ib + l] = kIqSigns[(w >> (7 * l)) & 127];
  }
}

void pack_iq3_s(const Packed& c, void* dst) {
  auto* b = static_cast<BlockIQ3_S*>(dst);
  std::memset(b, 0, sizeof *b);
  store_f16(b->d, c.d);
  for (int ib = 0; ib < 8; ++ib) {
    for (int k = 0; k < 8; ++k) {
      b->qs[8 * ib + k] = static_cast<uint8_t>(c.idx[8 * ib + k] & 255);
      b->qh[ib] |= static_cast<uint8_t>((c.idx[8 * ib + k] >> 8) << k);
    }
    for (int l = 0; l < 4; ++l) b->signs[4 * ib + l] = c.signs[4 * ib + l];
    b->scales[ib / 2] |= static_cast<uint8_t>(c.ls[ib] << (4 * (ib % 2)));
  }
}
void unpack_iq3_s(const void* src, Packed& c) {
  const auto& b = *static_cast<const BlockIQ3_S*>(src);
  c.d = load_f16(b.d);
  for (int ib = 0; ib < 8; ++ib) {
    c.ls[ib] = iq3s_scale(b, ib);
    for (int k = 0; k < 8; ++k) c.idx[8 * ib + k] = iq3s_index(b, ib, k);
    for (int l = 0; l < 4; ++l) c.signs[4 * ib + l] = b.signs[4 * ib + l];
  }
}

void pack_iq1_s(const Packed& c, void* dst) {
  auto* b = static_cast<BlockIQ1_S*>(dst);
  store_f16(b->d, c.d);
  for (int ib = 0; ib < 8; ++ib) {
    uint16_t h = static_cast<uint16_t>(c.ls[ib] << 12);
    if (c.delta_neg[4 * ib]) h |= 0x8000;
    for (int l = 0; l < 4; ++l) {
      b->qs[4 * ib + l] = static_cast<uint8_t>(c.idx[4 * ib + l] & 255);
      h |= static_cast<uint16_t>((c.idx[4 * ib + l] >> 8) << (3 * l));
    }
    std::memcpy(&b->qh[ib], &h, 2);
  }
}
void unpack_iq1_s(const void* src, Packed& c) {
  const auto& b = *static_cast<const BlockIQ1_S*>(src);
  c.d = load_f16(b.d);
  for (int ib = 0; ib < 8; ++ib) {
    c.ls[ib] = iq1s_scale(b, ib);
    for (int l = 0; l < 4; ++l) c.idx[4 * ib + l] = iq1s_index(b, ib, l), c.delta_neg[4 * ib + l] = iq1s_delta_neg(b, ib);
  }
}

void pack_iq1_m(const Packed& c, void* dst) {
  auto* b = static_cast<BlockIQ1_M*>(dst);
  std::memset(b, 0, sizeof *b);
  uint16_t sc[4] = {0, 0, 0, 0};
  for (int ib = 0; ib < 8; ++ib) {
    for (int l = 0; l < 4; ++l) {
      const int u = 4 * ib + l;
      b->qs[u] = static_cast<uint8_t>(c.idx[u] & 255);
      const int nib = ((c.idx[u] >> 8) & 7) | (c.delta_neg[u] ? 8 : 0);
      b->qh[2 * ib + l / 2] |= static_cast<uint8_t>(nib << (4 * (l % 2)));
    }
    sc[ib / 2] |= static_cast<uint16_t>(c.ls[2 * ib] << (6 * (ib % 2)));
    sc[ib / 2] |= static_cast<uint16_t>(c.ls[2 * ib + 1] << (6 * (ib % 2) + 3));
  }
  const uint16_t dbits = f32_to_f16(c.d);
  for (int k = 0; k < 4; ++k) sc[k] |= static_cast<uint16_t>(((dbits >> (4 * k)) & 0xF) << 12);
  std::memcpy(b->scales, sc, 8);
}
void unpack_iq1_m(const void* src, Packed& c) {
  const auto& b = *static_cast<const BlockIQ1_M*>(src);
  uint16_t sc[4];
  iq1m_words(b, sc);
  c.d = f16_to_f32(iq1m_d_bits(sc));
  for (int ib = 0; ib < 8; ++ib)
    for (int l = 0; l < 4; ++l) {
      const int u = 4 * ib + l;
      if (l % 2 == 0) c.ls[u / 2] = iq1m_scale(sc, ib, l);
      c.idx[u] = iq1m_index(b, ib, l);
      c.delta_neg[u] = iq1m_delta_neg(b, ib, l);
    }
}

// One table: each lattice type's grid description, packer and unpacker.
struct Codec {
  GgmlType type;
  const IqType& (*grid)();
  void (*pack)(const Packed&, void*);
  void (*unpack)(const void*, Packed&);
  DequantizeFn dequantize;
};
const Codec kCodecs[] = {
    {GgmlType::IQ2_XXS, iq2xxs, pack_iq2_xxs, unpack_iq2_xxs, deq_iq2_xxs},
    {GgmlType::IQ2_XS, iq2xs, pack_iq2_xs, unpack_iq2_xs, deq_iq2_xs},
    {GgmlType::IQ2_S, iq2s, pack_iq2_s, unpack_iq2_s, deq_iq2_s},
    {GgmlType::IQ3_XXS, iq3xxs, pack_iq3_xxs, unpack_iq3_xxs, deq_iq3_xxs},
    {GgmlType::IQ3_S, iq3s, pack_iq3_s, unpack_iq3_s, deq_iq3_s},
    {GgmlType::IQ1_S, iq1s, pack_iq1_s, unpack_iq1_s, deq_iq1_s},
    {GgmlType::IQ1_M, iq1m, pack_iq1_m, unpack_iq1_m, deq_iq1_m},
};
const Codec* codec(GgmlType t) {
  for (const Codec& c : kCodecs)
    if (c.type == t) return &c;
  return nullptr;
}

template <GgmlType Type>
void enc_block(const float* x, const float* w, void* dst) {
  const Codec& c = *codec(Type);
  Block bk(c.grid());
  bk.x = x;
  bk.w = w;
  // The weights also grow with |x| (llama.cpp's sqrt(sigma2 + x^2) factor, sigma2 = 2 mean x^2 of the block): at
  // these bit rates the plain weighted error zeroes too many large weights. tl-8m with the golden imatrix, mean
  // KLD with plain weights / with the factor: IQ1_S 0.0934 / 0.0757 (llama.cpp's encoder 0.0701), IQ2_XS
  // 0.0329 / 0.0323 (llama.cpp 0.0352).
  float wm[QK_K];
  float sx2 = 0;
  for (int i = 0; i < QK_K; ++i) sx2 += x[i] * x[i];
  const float sigma2 = 2.f * sx2 / QK_K;
  for (int i = 0; i < QK_K; ++i) wm[i] = w[i] * std::sqrt(sigma2 + x[i] * x[i]);
  bk.w = wm;
  bk.slots_per_unit = 8 / bk.T.dim;
  c.pack(code(bk, search_block(bk)), dst);
}

// Best point(s) and signs of unit u for targets x, weights w at the fixed scale db (> 0); IQ1: delta_fixed >= 0
// keeps that delta sign (IQ1_S: shared with the sub-block's other units), -1 lets it choose.
void choose_unit(const IqType& T, const float* x, const float* w, float db, int delta_fixed, Packed& c, int u) {
  const int D = T.dim, n = T.npts, spu = 8 / D;
  alignas(32) float A[kMaxPts], B[kMaxPts], C[kMaxPts], M[kMaxPts];
  uint8_t sb = 0;
  for (int j = 0; j < 8; ++j) sb |= static_cast<uint8_t>((x[j] < 0.f) << j);
  const bool odd = (__builtin_popcount(sb) & 1) != 0;
  int best_idx[2] = {0, 0}, flip_slot = -1;
  float key[2][2] = {{INFINITY, INFINITY}, {INFINITY, INFINITY}};  // [slot][variant]
  int arg[2][2] = {{0, 0}, {0, 0}};
  for (int h = 0; h < spu; ++h) {
    const float* xs = x + h * D;
    const float* ws = w + h * D;
    float a[8], b[8], cc[8];
    for (int j = 0; j < D; ++j) {
      a[j] = T.signs == Signs::Delta ? ws[j] * xs[j] : ws[j] * std::fabs(xs[j]);
      b[j] = ws[j];
      cc[j] = ws[j];
    }
    if (T.signs == Signs::Delta) {
      float sx = 0, sw = 0;
      for (int j = 0; j < D; ++j) sx += a[j], sw += ws[j];
      point_sums(T, a, b, cc, A, B, C, nullptr);
      float bestk = INFINITY;
      for (int v = 0; v < 2; ++v) {
        if (delta_fixed >= 0 && v != delta_fixed) continue;
        const float dl = v ? -kIq1Delta : kIq1Delta;
        for (int p = 0; p < n; ++p) {
          const float Ap = A[p] + dl * sx, Bp = B[p] + 2.f * dl * C[p] + dl * dl * sw;
          const float k = db * Bp - 2.f * Ap;
          if (k < bestk) bestk = k, best_idx[0] = p, c.delta_neg[u] = v == 1;
        }
      }
      c.idx[u] = best_idx[0];
      return;
    }
    const bool parity = T.signs == Signs::Parity;
    point_sums(T, a, b, nullptr, A, B, nullptr, parity ? M : nullptr);
    for (int v = 0; v < (parity && odd ? 2 : 1); ++v) {
      if (v == 1)
        for (int p = 0; p < n; ++p) A[p] -= 2.f * M[p];
      const int p = argmin_line(A, B, n, db);
      arg[h][v] = p;
      key[h][v] = db * B[p] - 2.f * A[p];
    }
  }
  if (T.signs == Signs::Parity && odd) {
    if (spu == 1) flip_slot = 0, best_idx[0] = arg[0][1];
    else if (key[0][1] + key[1][0] <= key[0][0] + key[1][1]) flip_slot = 0, best_idx[0] = arg[0][1], best_idx[1] = arg[1][0];
    else flip_slot = 1, best_idx[0] = arg[0][0], best_idx[1] = arg[1][1];
  } else {
    best_idx[0] = arg[0][0], best_idx[1] = arg[1][0];
  }
  for (int h = 0; h < spu; ++h) c.idx[u * spu + h] = best_idx[h];
  if (flip_slot >= 0) {
    const int p = best_idx[flip_slot];
    int kb = 0;
    float m = INFINITY;
    for (int j = 0; j < D; ++j) {
      const float t = w[flip_slot * D + j] * std::fabs(x[flip_slot * D + j]) * T.G[static_cast<size_t>(j) * n + p];
      if (t < m) m = t, kb = j;
    }
    sb ^= static_cast<uint8_t>(1u << (flip_slot * D + kb));
  }
  c.signs[u] = sb;
}

}  // namespace

void enc_iq2_xxs(const float* x, const float* w, void* dst) { enc_block<GgmlType::IQ2_XXS>(x, w, dst); }
void enc_iq2_xs(const float* x, const float* w, void* dst) { enc_block<GgmlType::IQ2_XS>(x, w, dst); }
void enc_iq2_s(const float* x, const float* w, void* dst) { enc_block<GgmlType::IQ2_S>(x, w, dst); }
void enc_iq3_xxs(const float* x, const float* w, void* dst) { enc_block<GgmlType::IQ3_XXS>(x, w, dst); }
void enc_iq3_s(const float* x, const float* w, void* dst) { enc_block<GgmlType::IQ3_S>(x, w, dst); }
void enc_iq1_s(const float* x, const float* w, void* dst) { enc_block<GgmlType::IQ1_S>(x, w, dst); }
void enc_iq1_m(const float* x, const float* w, void* dst) { enc_block<GgmlType::IQ1_M>(x, w, dst); }

}  // namespace edgeq::quant::detail

namespace edgeq::quant {

void set_block_group(GgmlType t, void* block, int group, const float* x, const float* w, float* y) {
  using namespace detail;
  const Codec* c = codec(t);
  if (!c || group < 0 || group >= kUnits) fail("set_block_group: {} has no group {}", ggml_type_name(t), group);
  const IqType& T = c->grid();
  Packed p;
  c->unpack(block, p);
  const float db = T.db(p.d, p.ls[group / T.units_per_scale]);
  if (db > 0.f) {
    const int fixed = T.signs == Signs::Delta && T.delta_shared ? (p.delta_neg[group] ? 1 : 0) : -1;
    choose_unit(T, x, w, db, fixed, p, group);
    c->pack(p, block);
  }
  float all[QK_K];
  c->dequantize(block, all, 1);
  std::memcpy(y, all + 8 * group, 8 * sizeof(float));
}

void scale_block_d(GgmlType t, void* block, float factor) {
  using namespace detail;
  const Codec* c = codec(t);
  if (!c) fail("scale_block_d: {} is not a lattice i-quant", ggml_type_name(t));
  Packed p;
  c->unpack(block, p);
  p.d = round_f16(p.d * factor);
  c->pack(p, block);
}

}  // namespace edgeq::quant
