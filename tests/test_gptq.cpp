// GPTQ with llama.cpp block formats: on a random layer with correlated inputs, the output error
// ||X Wᵀ - X Qᵀ||² of GPTQ is below round-to-nearest (edgeq's plain search) for every block type edgeq writes,
// and the bytes are a standard block tensor (they dequantize with the normal dequantizer); so is GPTQ with
// act-order; the per-block output errors are the diagonal blocks of the output error; AWQ's clipping search
// never increases a tensor's error.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "edgeq/calibrate/gptq.h"
#include "edgeq/calibrate/methods.h"
#include "edgeq/quant/blocks.h"

using namespace edgeq;

namespace {
struct Layer {
  int64_t rows, cols, n;
  std::vector<float> W, X;
  std::vector<double> H;
};

// spread: the standard deviation of the log channel scales (how unequal the input channels' variances are).
Layer random_layer(int64_t rows, int64_t cols, int64_t n, uint32_t seed, float spread = 0.7f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  Layer L{rows, cols, n, {}, {}, {}};
  L.W.resize(static_cast<size_t>(rows * cols));
  for (auto& w : L.W) w = nd(rng) * 0.05f;
  // Inputs with correlated columns and uneven channel scales (as RMSNorm outputs of a trained model).
  const int64_t k = 24;
  std::vector<float> Z(static_cast<size_t>(n * k)), A(static_cast<size_t>(k * cols)), scale(static_cast<size_t>(cols));
  for (auto& z : Z) z = nd(rng);
  for (auto& a : A) a = nd(rng);
  for (auto& s : scale) s = std::exp(nd(rng) * spread);
  L.X.resize(static_cast<size_t>(n * cols));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < cols; ++j) {
      float v = 0.3f * nd(rng);
      for (int64_t i = 0; i < k; ++i) v += Z[t * k + i] * A[i * cols + j] * 0.3f;
      L.X[t * cols + j] = v * scale[j];
    }
  L.H.assign(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) L.H[i * cols + j] += double(L.X[t * cols + i]) * L.X[t * cols + j];
  return L;
}

std::vector<float> decode(GgmlType t, const std::vector<uint8_t>& enc, int64_t rows, int64_t cols) {
  std::vector<float> q(static_cast<size_t>(rows * cols));
  const uint64_t rb = *ggml_row_size(t, static_cast<uint64_t>(cols));
  for (int64_t r = 0; r < rows; ++r) quant::dequantize_row(t, enc.data() + r * rb, q.data() + r * cols, cols);
  return q;
}
}  // namespace

TEST(Gptq, BeatsRoundToNearestForEveryBlockType) {
  const Layer L = random_layer(32, 512, 768, 7);
  size_t n_types = 0;
  size_t count = 0;
  const GgmlTypeInfo* table = ggml_type_table(&count);
  for (size_t i = 0; i < count; ++i) {
    const GgmlType t = table[i].type;
    if (!table[i].quantized || !quant::can_quantize(t) || L.cols % table[i].block_size) continue;
    if (t == GgmlType::Q8_K) continue;  // an activation format (no weights are stored in it)
    const uint64_t rb = *ggml_row_size(t, static_cast<uint64_t>(L.cols));
    std::vector<uint8_t> rtn(rb * L.rows), gq(rb * L.rows);
    quant::quantize_rows(t, L.W.data(), rtn.data(), L.rows, L.cols, nullptr);
    calibrate::gptq_quantize(t, L.W.data(), L.rows, L.cols, L.H.data(), gq.data());
    const double e_rtn = calibrate::output_error(L.W.data(), decode(t, rtn, L.rows, L.cols).data(), L.rows, L.cols, L.H.data());
    const double e_gptq = calibrate::output_error(L.W.data(), decode(t, gq, L.rows, L.cols).data(), L.rows, L.cols, L.H.data());
    EXPECT_LT(e_gptq, e_rtn) << table[i].name;
    std::printf("%-8s rtn %.5g  gptq %.5g  (%.2fx)\n", table[i].name, e_rtn, e_gptq, e_gptq / e_rtn);
    ++n_types;
  }
  EXPECT_GE(n_types, 12u);
}

// Act-order (columns by decreasing H_jj, grids fixed up front) on a layer whose input channels' variances
// differ by orders of magnitude: below plain rounding for every type GPTQ rounds element by element (every
// writable block type), different from the natural order, and a standard block tensor: every element decodes
// to one of its block's levels, and rebuilding each block from its scales and those codes gives the same bytes.
TEST(Gptq, ActOrderBeatsRoundToNearestWithStandardBlocks) {
  const Layer L = random_layer(32, 512, 768, 13, 1.5f);
  size_t n_types = 0, count = 0;
  const GgmlTypeInfo* table = ggml_type_table(&count);
  for (size_t i = 0; i < count; ++i) {
    const GgmlType t = table[i].type;
    const int levels = quant::block_code_levels(t);
    if (levels == 0 || !quant::can_quantize(t) || L.cols % table[i].block_size) continue;
    const uint64_t rb = *ggml_row_size(t, static_cast<uint64_t>(L.cols));
    std::vector<uint8_t> rtn(rb * L.rows), nat(rb * L.rows), ao(rb * L.rows);
    quant::quantize_rows(t, L.W.data(), rtn.data(), L.rows, L.cols, nullptr);
    calibrate::gptq_quantize(t, L.W.data(), L.rows, L.cols, L.H.data(), nat.data());
    calibrate::gptq_quantize(t, L.W.data(), L.rows, L.cols, L.H.data(), ao.data(), calibrate::kRidge, true);
    const std::vector<float> q = decode(t, ao, L.rows, L.cols);
    const double e_rtn = calibrate::output_error(L.W.data(), decode(t, rtn, L.rows, L.cols).data(), L.rows, L.cols, L.H.data());
    const double e_nat = calibrate::output_error(L.W.data(), decode(t, nat, L.rows, L.cols).data(), L.rows, L.cols, L.H.data());
    const double e_ao = calibrate::output_error(L.W.data(), q.data(), L.rows, L.cols, L.H.data());
    EXPECT_LE(e_ao, e_rtn) << table[i].name;
    EXPECT_NE(ao, nat) << table[i].name;
    std::printf("%-8s rtn %.5g  gptq %.5g (%.2fx)  act-order %.5g (%.2fx)\n", table[i].name, e_rtn, e_nat, e_nat / e_rtn,
                e_ao, e_ao / e_rtn);
    const int64_t g = table[i].block_size, bb = static_cast<int64_t>(table[i].type_size);
    std::vector<float> lv(static_cast<size_t>(g)), y(static_cast<size_t>(g));
    std::vector<uint8_t> probe;
    for (int64_t blk = 0; blk < L.rows * (L.cols / g); ++blk) {
      const uint8_t* b = ao.data() + blk * bb;
      const float* v = q.data() + blk * g;
      std::vector<int> code(static_cast<size_t>(g), -1);
      for (int k = 0; k < levels; ++k) {
        probe.assign(b, b + bb);
        for (int e = 0; e < g; ++e) quant::set_block_code(t, probe.data(), e, k);
        quant::dequantize_row(t, probe.data(), lv.data(), g);
        for (int e = 0; e < g; ++e)
          if (code[e] < 0 && lv[e] == v[e]) code[e] = k;
      }
      std::vector<uint8_t> rebuilt(b, b + bb);
      for (int e = 0; e < g; ++e) {
        ASSERT_GE(code[e], 0) << table[i].name << " block " << blk << " element " << e;
        quant::set_block_code(t, rebuilt.data(), e, (code[e] + 1) % levels);
      }
      for (int e = 0; e < g; ++e) quant::set_block_code(t, rebuilt.data(), e, code[e]);
      ASSERT_EQ(rebuilt, std::vector<uint8_t>(b, b + bb)) << table[i].name << " block " << blk;
      quant::dequantize_row(t, rebuilt.data(), y.data(), g);
      for (int e = 0; e < g; ++e) ASSERT_TRUE(std::isfinite(y[e]) && y[e] == v[e]) << table[i].name;
    }
    ++n_types;
  }
  EXPECT_GE(n_types, 12u);
}

// With equal Hessian diagonals the act-order is the natural order, and with one block per row (256 columns of a
// 256-block type) the up-front grid is the one the natural order fits at the block's first column (same weights,
// same importance diag(H) + ridge): act-order's loop (its level tables, batches and feedback) then writes exactly
// the natural order's bytes.
TEST(Gptq, ActOrderInTheNaturalOrderIsPlainGptq) {
  Layer L = random_layer(64, 256, 600, 5);
  const int64_t c = L.cols;
  std::vector<double> d(static_cast<size_t>(c));
  for (int64_t i = 0; i < c; ++i) d[i] = std::sqrt(L.H[i * c + i]);
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < c; ++j) L.H[i * c + j] = i == j ? 1.0 : L.H[i * c + j] / (d[i] * d[j]);
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::IQ4_XS}) {
    const uint64_t rb = *ggml_row_size(t, static_cast<uint64_t>(c));
    std::vector<uint8_t> nat(rb * L.rows), ao(rb * L.rows);
    calibrate::gptq_quantize(t, L.W.data(), L.rows, c, L.H.data(), nat.data());
    calibrate::gptq_quantize(t, L.W.data(), L.rows, c, L.H.data(), ao.data(), calibrate::kRidge, true);
    EXPECT_EQ(ao, nat) << ggml_type_name(t);
  }
}

TEST(Gptq, OutputErrorMatchesDirectProduct) {
  const Layer L = random_layer(4, 64, 50, 3);
  std::vector<float> Q = L.W;
  for (auto& q : Q) q = std::round(q * 40.f) / 40.f;
  double direct = 0;
  for (int64_t t = 0; t < L.n; ++t)
    for (int64_t r = 0; r < L.rows; ++r) {
      double y = 0;
      for (int64_t j = 0; j < L.cols; ++j) y += double(L.X[t * L.cols + j]) * (double(L.W[r * L.cols + j]) - Q[r * L.cols + j]);
      direct += y * y;
    }
  EXPECT_NEAR(calibrate::output_error(L.W.data(), Q.data(), L.rows, L.cols, L.H.data()), direct, 1e-6 * direct);
}

// set_block_code is the exact inverse of the dequantizers' unpacking: writing back the level each element
// decodes to (found by probing every code) reproduces the block's values, and probing finds a level for each.
TEST(Gptq, BlockCodesRoundTrip) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K,
                     GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS}) {
    const GgmlTypeInfo* ti = ggml_type_info(t);
    const int n = static_cast<int>(ti->block_size), L = quant::block_code_levels(t);
    ASSERT_GT(L, 0) << ti->name;
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n)), lv(static_cast<size_t>(n));
    for (auto& v : x) v = nd(rng);
    std::vector<uint8_t> blk(ti->type_size), probe, rebuilt;
    quant::quantize_rows(t, x.data(), blk.data(), 1, n, nullptr);
    quant::dequantize_row(t, blk.data(), y.data(), n);
    std::vector<int> code(static_cast<size_t>(n), -1);
    for (int k = 0; k < L; ++k) {
      probe = blk;
      for (int e = 0; e < n; ++e) quant::set_block_code(t, probe.data(), e, k);
      quant::dequantize_row(t, probe.data(), lv.data(), n);
      for (int e = 0; e < n; ++e)
        if (code[e] < 0 && lv[e] == y[e]) code[e] = k;
    }
    rebuilt = blk;
    for (int e = 0; e < n; ++e) {
      ASSERT_GE(code[e], 0) << ti->name << " element " << e;
      quant::set_block_code(t, rebuilt.data(), e, (code[e] + 1) % L);  // scramble first
    }
    for (int e = 0; e < n; ++e) quant::set_block_code(t, rebuilt.data(), e, code[e]);
    quant::dequantize_row(t, rebuilt.data(), lv.data(), n);
    for (int e = 0; e < n; ++e) EXPECT_EQ(lv[e], y[e]) << ti->name << " element " << e;
  }
}

// The ridge (calibrate::kRidge) keeps GPTQ from over-fitting its calibration activations: with a Hessian from
// inputs that excite few directions, GPTQ at the customary 1% damping moves the rounding error into the
// directions the calibration never saw; on inputs that also excite those, the ridge's rounding has a clearly
// lower output error (measured 0.60x vs 0.76x of plain rounding for Q4_K, 0.67x vs 0.85x for Q2_K), and on
// the calibration inputs it still beats plain rounding.
TEST(Gptq, RidgeGeneralisesToOtherInputs) {
  const int64_t rows = 32, cols = 256, k = 6;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> W(static_cast<size_t>(rows * cols));
  for (auto& w : W) w = nd(rng) * 0.05f;
  std::vector<float> dirs(static_cast<size_t>(2 * k * cols));
  for (auto& d : dirs) d = nd(rng);
  // Calibration: k shared directions, tiny noise. Other text: the same k plus k new directions, more noise.
  auto hessian = [&](int64_t n, int64_t nd_used, float noise) {
    std::vector<double> H(static_cast<size_t>(cols * cols), 0.0);
    std::vector<float> x(static_cast<size_t>(cols));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t j = 0; j < cols; ++j) x[j] = noise * nd(rng);
      for (int64_t i = 0; i < nd_used; ++i) {
        const float z = nd(rng);
        for (int64_t j = 0; j < cols; ++j) x[j] += z * dirs[i * cols + j];
      }
      for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = 0; j < cols; ++j) H[i * cols + j] += double(x[i]) * x[j];
    }
    return H;
  };
  const std::vector<double> Hcal = hessian(400, k, 0.05f), Hother = hessian(400, 2 * k, 0.3f);
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q2_K}) {
    const uint64_t rb = *ggml_row_size(t, static_cast<uint64_t>(cols));
    std::vector<uint8_t> rtn(rb * rows), g01(rb * rows), gr(rb * rows);
    quant::quantize_rows(t, W.data(), rtn.data(), rows, cols, nullptr);
    calibrate::gptq_quantize(t, W.data(), rows, cols, Hcal.data(), g01.data(), 0.01);
    calibrate::gptq_quantize(t, W.data(), rows, cols, Hcal.data(), gr.data());
    auto err = [&](const std::vector<uint8_t>& e, const std::vector<double>& H) {
      return calibrate::output_error(W.data(), decode(t, e, rows, cols).data(), rows, cols, H.data());
    };
    const double rtn_o = err(rtn, Hother), g01_o = err(g01, Hother), gr_o = err(gr, Hother);
    std::printf("%s other inputs: rtn %.5g  gptq 1%% %.5g (%.2fx)  gptq ridge %.5g (%.2fx); calibration: %.2fx\n",
                ggml_type_name(t), rtn_o, g01_o, g01_o / rtn_o, gr_o, gr_o / rtn_o, err(gr, Hcal) / err(rtn, Hcal));
    EXPECT_LT(gr_o, 0.9 * g01_o) << ggml_type_name(t);  // the over-fit the ridge exists for
    EXPECT_LT(gr_o, rtn_o) << ggml_type_name(t);
    EXPECT_LT(err(gr, Hcal), err(rtn, Hcal)) << ggml_type_name(t);
  }
}

TEST(Gptq, RidgeAddsAFractionOfTheMeanDiagonal) {
  const std::vector<double> H = {4, 1, 1, 2};
  const auto R = calibrate::ridge_hessian(H.data(), 2, 0.5);
  EXPECT_EQ(R, (std::vector<double>{5.5, 1, 1, 3.5}));
  EXPECT_EQ(calibrate::ridge_importance({1.f, 3.f}, 0.5), (std::vector<float>{2.f, 4.f}));
}

// AWQ's clipping search (calibrate/methods.h) never makes a tensor's output error on the check inputs worse than
// unclipped encoding (it keeps the better one by that measure), the error it reports is the error of the clipped
// encoding, and on heavy-tailed weights with outlier input channels it does find clips that lower the error.
TEST(Gptq, AwqClippingNeverIncreasesOutputError) {
  const int64_t rows = 32, cols = 256, n = 1024;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::exponential_distribution<float> ed(1.0f);
  std::vector<float> W(static_cast<size_t>(rows * cols)), X(static_cast<size_t>(n * cols)), col(cols);
  for (auto& w : W) w = ed(rng) * (nd(rng) < 0 ? -1.0f : 1.0f) * (ed(rng) < 0.05f ? 4.0f : 1.0f);  // Laplace + outliers
  for (int64_t j = 0; j < cols; ++j) col[j] = j % 37 == 0 ? 8.0f : 0.5f + ed(rng);  // a few loud input channels
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < cols; ++j) X[i * cols + j] = nd(rng) * col[j];
  // The ratios are fitted on the first half of the inputs and checked on the second (as setup_method does).
  std::vector<double> H0(static_cast<size_t>(cols * cols)), H1(H0.size());
  for (int64_t i = 0; i < n; ++i) {
    auto& Hh = i < n / 2 ? H0 : H1;
    for (int64_t a = 0; a < cols; ++a)
      for (int64_t b = 0; b < cols; ++b) Hh[a * cols + b] += double(X[i * cols + a]) * X[i * cols + b];
  }
  const std::vector<double> H_fit = calibrate::ridge_hessian(H0.data(), cols), H = calibrate::ridge_hessian(H1.data(), cols);
  // AWQ-style scales on the columns and rows (the search must account for them).
  std::vector<float> s_col(cols), s_row(rows), imp(cols), Wf(W.size());
  for (int64_t j = 0; j < cols; ++j) s_col[j] = std::sqrt(col[j]);
  for (int64_t r = 0; r < rows; ++r) s_row[r] = 0.5f + ed(rng);
  for (int64_t j = 0; j < cols; ++j) imp[j] = static_cast<float>((H0[j * cols + j] + H1[j * cols + j]) / n) / (s_col[j] * s_col[j]);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) Wf[r * cols + j] = W[r * cols + j] * s_col[j] / s_row[r];

  // The output error of encoding V (in Wf's space), measured in the original space.
  auto error_of = [&](GgmlType t, const std::vector<float>& V) {
    const uint64_t rb = *ggml_row_size(t, cols);
    std::vector<uint8_t> enc(rb * rows);
    std::vector<float> Q(W.size());
    quant::quantize_rows(t, V.data(), enc.data(), rows, cols, imp.data());
    for (int64_t r = 0; r < rows; ++r) {
      quant::dequantize_row(t, enc.data() + r * rb, Q.data() + r * cols, cols);
      for (int64_t j = 0; j < cols; ++j) Q[r * cols + j] = Q[r * cols + j] * s_row[r] / s_col[j];
    }
    return calibrate::output_error(W.data(), Q.data(), rows, cols, H.data());
  };
  int clipped = 0;
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::IQ4_XS, GgmlType::Q4_0}) {
    double e_plain = 0, e_clip = 0;
    const auto idx = calibrate::awq_clip_search(t, W.data(), Wf.data(), rows, cols, H_fit.data(), H.data(), imp.data(), s_col.data(),
                                          s_row.data(), &e_plain, &e_clip);
    const double plain = error_of(t, Wf);
    EXPECT_NEAR(e_plain, plain, 1e-7 * plain) << ggml_type_name(t);
    std::vector<float> C = Wf;
    if (!idx.empty()) {
      ++clipped;
      ASSERT_EQ(idx.size(), static_cast<size_t>(rows * cols / ggml_type_info(t)->block_size));
      calibrate::awq_apply_clip(t, C.data(), rows, cols, idx);
      EXPECT_NE(C, Wf) << ggml_type_name(t);
      EXPECT_NEAR(e_clip, error_of(t, C), 1e-7 * plain) << ggml_type_name(t);
      EXPECT_LT(e_clip, plain) << ggml_type_name(t);
    } else {
      EXPECT_GE(e_clip, e_plain) << ggml_type_name(t);  // kept unclipped because clipping did not help
    }
    EXPECT_LE(error_of(t, C), plain) << ggml_type_name(t);  // what gets encoded is never worse
  }
  EXPECT_GE(clipped, 2);  // clipping really lowers the error (here for Q2_K, Q3_K and Q4_0, not Q4_K and IQ4_XS)
}

TEST(Gptq, BlockOutputErrorsAreTheDiagonalBlocks) {
  const Layer L = random_layer(8, 96, 200, 3);
  std::vector<float> Q(L.W);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 0.01f);
  for (auto& q : Q) q += nd(rng);
  const int64_t g = 32, nb = L.cols / g;
  std::vector<double> e(static_cast<size_t>(L.rows * nb)), Hb(L.H.size(), 0.0);
  calibrate::block_output_errors(L.W.data(), Q.data(), L.rows, L.cols, L.H.data(), g, e.data());
  for (int64_t i = 0; i < L.cols; ++i)
    for (int64_t j = 0; j < L.cols; ++j)
      if (i / g == j / g) Hb[i * L.cols + j] = L.H[i * L.cols + j];
  for (int64_t r = 0; r < L.rows; ++r) {  // row by row: output_error of one row with the block-diagonal H
    double sum = 0;
    for (int64_t b = 0; b < nb; ++b) sum += e[r * nb + b];
    const double want = calibrate::output_error(L.W.data() + r * L.cols, Q.data() + r * L.cols, 1, L.cols, Hb.data());
    EXPECT_NEAR(sum, want, 1e-9 * want) << "row " << r;
    EXPECT_GT(e[r * nb + 1], 0.0);
  }
}

// Row chunks spread over a pool: GPTQ's bytes (natural order and act-order), the error sums and AWQ's clipping
// search are the same without a pool and with pools of 1 and 3 threads (rows span several chunks and a ragged
// last one).
TEST(Gptq, SameResultForAnyPoolSize) {
  const Layer L = random_layer(200, 512, 600, 17);
  ThreadPool one(1), three(3);
  std::vector<float> Q = L.W;
  for (auto& q : Q) q = std::round(q * 40.f) / 40.f;
  const double e0 = calibrate::output_error(L.W.data(), Q.data(), L.rows, L.cols, L.H.data());
  EXPECT_GT(e0, 0.0);
  const int64_t g = 256, nb = L.cols / g;
  std::vector<double> b0(static_cast<size_t>(L.rows * nb)), b1(b0.size(), -1.0), b3(b0.size(), -1.0);
  calibrate::block_output_errors(L.W.data(), Q.data(), L.rows, L.cols, L.H.data(), g, b0.data());
  calibrate::block_output_errors(L.W.data(), Q.data(), L.rows, L.cols, L.H.data(), g, b1.data(), &one);
  calibrate::block_output_errors(L.W.data(), Q.data(), L.rows, L.cols, L.H.data(), g, b3.data(), &three);
  EXPECT_EQ(b1, b0);
  EXPECT_EQ(b3, b0);
  for (ThreadPool* p : {&one, &three})
    EXPECT_EQ(calibrate::output_error(L.W.data(), Q.data(), L.rows, L.cols, L.H.data(), p), e0);

  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::IQ4_XS, GgmlType::Q4_0}) {
    const uint64_t rb = *ggml_row_size(t, static_cast<uint64_t>(L.cols));
    for (bool act_order : {false, true}) {
      std::vector<uint8_t> a(rb * L.rows), b(a.size(), 1), c(a.size(), 2);
      calibrate::gptq_quantize(t, L.W.data(), L.rows, L.cols, L.H.data(), a.data(), calibrate::kRidge, act_order);
      calibrate::gptq_quantize(t, L.W.data(), L.rows, L.cols, L.H.data(), b.data(), calibrate::kRidge, act_order, &one);
      calibrate::gptq_quantize(t, L.W.data(), L.rows, L.cols, L.H.data(), c.data(), calibrate::kRidge, act_order, &three);
      EXPECT_EQ(b, a) << ggml_type_name(t) << (act_order ? " act-order" : "");
      EXPECT_EQ(c, a) << ggml_type_name(t) << (act_order ? " act-order" : "");
    }
    const std::vector<double> H = calibrate::ridge_hessian(L.H.data(), L.cols);
    std::vector<float> imp(static_cast<size_t>(L.cols));
    for (int64_t j = 0; j < L.cols; ++j) imp[j] = static_cast<float>(L.H[j * L.cols + j] / L.n);
    double p0 = 0, c0 = 0, p3 = 0, c3 = 0;
    const auto i0 = calibrate::awq_clip_search(t, L.W.data(), L.W.data(), L.rows, L.cols, H.data(), H.data(),
                                               imp.data(), nullptr, nullptr, &p0, &c0);
    const auto i3 = calibrate::awq_clip_search(t, L.W.data(), L.W.data(), L.rows, L.cols, H.data(), H.data(),
                                               imp.data(), nullptr, nullptr, &p3, &c3, &three);
    EXPECT_EQ(i3, i0) << ggml_type_name(t);
    EXPECT_EQ(p3, p0) << ggml_type_name(t);
    EXPECT_EQ(c3, c0) << ggml_type_name(t);
  }
}

// The lattice i-quants' GPTQ (group choices at a few block scales and re-encoded scales, the pass of least error
// kept per block): the same bytes for any pool size, and below the encoder's own rounding of the weights.
TEST(Gptq, LatticeSameResultForAnyPoolSize) {
  const Layer L = random_layer(32, 512, 600, 23);
  ThreadPool one(1), three(3);
  for (GgmlType t : {GgmlType::IQ2_XXS, GgmlType::IQ1_S, GgmlType::IQ3_S}) {
    const uint64_t rb = *ggml_row_size(t, static_cast<uint64_t>(L.cols));
    std::vector<uint8_t> a(rb * L.rows), b(a.size(), 1), c(a.size(), 2), r(a.size());
    std::vector<float> imp(static_cast<size_t>(L.cols));
    for (int64_t j = 0; j < L.cols; ++j) imp[j] = static_cast<float>(L.H[j * L.cols + j] / L.n);
    calibrate::gptq_quantize(t, L.W.data(), L.rows, L.cols, L.H.data(), a.data());
    calibrate::gptq_quantize(t, L.W.data(), L.rows, L.cols, L.H.data(), b.data(), calibrate::kRidge, false, &one);
    calibrate::gptq_quantize(t, L.W.data(), L.rows, L.cols, L.H.data(), c.data(), calibrate::kRidge, false, &three);
    EXPECT_EQ(b, a) << ggml_type_name(t);
    EXPECT_EQ(c, a) << ggml_type_name(t);
    quant::quantize_rows(t, L.W.data(), r.data(), L.rows, L.cols, imp.data());
    const double e_r = calibrate::output_error(L.W.data(), decode(t, r, L.rows, L.cols).data(), L.rows, L.cols, L.H.data());
    const double e_g = calibrate::output_error(L.W.data(), decode(t, a, L.rows, L.cols).data(), L.rows, L.cols, L.H.data());
    EXPECT_LT(e_g, 0.9 * e_r) << ggml_type_name(t);
    std::printf("%-8s imatrix %.5g  gptq %.5g  (%.2fx)\n", ggml_type_name(t), e_r, e_g, e_g / e_r);
  }
}
