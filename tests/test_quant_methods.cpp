// Calibration methods on tl-8m: AWQ's folding (into the norms, V's rows and up's rows) leaves the float model's
// logits unchanged, AWQ's clipping never increases a tensor's output error, and awq / gptq / auto
// write standard block files the runtime loads, with the per-tensor methods recorded (or not, with
// --no-edgeq-metadata) and auto choosing among its candidates.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "edgeq/calibrate/calibrate.h"
#include "edgeq/calibrate/gptq.h"
#include "edgeq/calibrate/methods.h"
#include "edgeq/convert/convert.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/quantize.h"
#include "edgeq/runtime/forward.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/tokenizer.h"
#include "test_helpers.h"

using namespace edgeq;
using edgeq::test::shared;
using edgeq::test::TempDir;
namespace cal = edgeq::calibrate;

namespace {
struct Fixture {
  TempDir dir;
  std::string f32;
  cal::CalibrationStats stats;
  Fixture() {
    f32 = dir.file("tl-8m-f32.gguf");
    convert::ConvertOptions co;
    co.outtype = "f32";
    convert::convert_to_gguf(convert::plan_conversion(shared("models/tl-8m"), co), f32, "f32", 2);
    const auto model = runtime::Model::load(f32);
    const auto tok = Tokenizer::from_gguf(model.gguf());
    const auto tokens = tok.tokenize(read_text_file(shared("text/calib.txt")), true, false);
    cal::CalibrationOptions o;
    o.n_ctx = 128;
    o.max_chunks = EDGEQ_SANITIZED ? 4 : 16;
    o.n_threads = 2;
    o.hessian = true;
    stats = cal::calibrate(model, tokens, tok.add_bos(), tok.bos(), o);
    stats.datasets = {"calib.txt"};
  }
};
Fixture& fx() {
  static Fixture f;
  return f;
}

std::vector<float> logits(const std::string& path, const std::vector<int32_t>& toks) {
  const auto m = runtime::Model::load(path);
  runtime::ContextOptions co;
  co.n_ctx = 64;
  co.n_threads = 2;
  co.ggml_compat = false;  // plain f32: the folding must be exact up to f32 rounding
  runtime::Context ctx(m, co);
  std::vector<float> out(toks.size() * static_cast<size_t>(m.config().n_vocab));
  ctx.eval(toks.data(), static_cast<int64_t>(toks.size()), 0, out.data());
  return out;
}
}  // namespace

TEST(QuantMethods, AwqFoldingLeavesFloatLogitsUnchanged) {
  auto& f = fx();
  auto src = quant::open_gguf_source(f.f32);
  quant::QuantizeOptions qo;
  qo.policy.ftype = quant::parse_file_type("Q4_0");
  qo.threads = 2;
  auto setup = cal::setup_method(cal::Method::Awq, f.stats, "stats", src, qo);
  const auto& awq = setup->awq;
  // Every kind of folding is exercised: the norms (q/k/v, gate/up), V's rows (o's input, GQA 8/4: o's scales
  // tied across the two query heads of a KV head) and up's rows (down's input), with scales far from 1.
  std::map<std::string, double> spread;  // target kind -> largest max/min of its scales
  for (const auto& [n, s] : awq.divide) {
    const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
    const std::string kind = n.substr(n.find('.', 4) + 1);
    spread[kind] = std::max(spread[kind], double(*hi / *lo));
  }
  for (const char* kind : {"attn_norm.weight", "attn_v.weight", "ffn_norm.weight", "ffn_up.weight"}) {
    ASSERT_TRUE(spread.count(kind)) << kind;
    EXPECT_GT(spread[kind], 1.2) << kind;
  }
  for (const auto& [n, s] : awq.multiply) {
    if (n.find("attn_output") == std::string::npos) continue;
    ASSERT_EQ(s.size(), 256u);  // 8 heads of 32; head h reads KV head h / 2
    for (size_t c = 0; c < s.size(); ++c) EXPECT_EQ(s[c], s[(c / 64) * 64 + c % 32]) << n << " column " << c;
    const auto& v = awq.divide.at(n.substr(0, n.find("attn_output")) + "attn_v.weight");
    ASSERT_EQ(v.size(), 128u);
    for (size_t c = 0; c < s.size(); ++c) EXPECT_EQ(s[c], v[(c / 64) * 32 + c % 32]);
  }

  quant::QuantizeOptions fo;
  fo.policy.ftype = quant::parse_file_type("F32");
  fo.threads = 2;
  fo.tensor_hook = cal::awq_fold_hook(awq);
  const std::string folded = f.dir.file("folded.gguf");
  quant::quantize_model(src, folded, fo);

  const auto model = runtime::Model::load(f.f32);
  const auto tok = Tokenizer::from_gguf(model.gguf());
  auto toks = tok.tokenize("Once upon a time, there was a little girl named Lily. She liked to play outside.", true, false);
  const auto a = logits(f.f32, toks), b = logits(folded, toks);
  ASSERT_EQ(a.size(), b.size());
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(a[i] - b[i])));
    max_abs = std::max(max_abs, double(std::fabs(a[i])));
  }
  EXPECT_LT(max_diff, 1e-4 * max_abs) << "max diff " << max_diff << " of " << max_abs;
  // The folded file really differs: the folded tensors are divided by the scales.
  const auto fm = runtime::Model::load(folded);
  const GgufFile orig = GgufFile::open(f.f32);
  for (const auto& [name, sc] : awq.divide) {
    const auto a0 = orig.view(name), a1 = fm.gguf().view(name);
    EXPECT_NE(std::memcmp(a0.data, a1.data, a0.nbytes), 0) << name;
  }
}

TEST(QuantMethods, MethodsWriteStandardFilesAndRecordChoices) {
  auto& f = fx();
  auto src = quant::open_gguf_source(f.f32);
  // k-quant mixes in the normal build; the fast Q4_0 under the sanitizers.
  const char* mix = EDGEQ_SANITIZED ? "Q4_0" : "Q3_K_M";
  for (cal::Method m : {cal::Method::Gptq, cal::Method::Auto}) {
    quant::QuantizeOptions qo;
    qo.policy.ftype = quant::parse_file_type(mix);
    qo.threads = 2;
    auto setup = cal::setup_method(m, f.stats, "stats.gguf", src, qo);
    EXPECT_EQ(setup->tensor_methods.size(), 56u) << cal::method_name(m);
    const std::string out = f.dir.file(std::string(cal::method_name(m)) + ".gguf");
    const auto rep = quant::quantize_model(src, out, qo);
    if (m != cal::Method::Auto) {
      EXPECT_EQ(rep.n_with_importance, 56u);
    }
    const auto model = runtime::Model::load(out);  // loads as a plain model
    const GgufValue* v = model.gguf().find("edgeq.quantize.tensor_methods");
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->as_array().items.size(), 56u);
    std::set<std::string> kinds;
    for (const auto& [n, k] : setup->tensor_methods) kinds.insert(k);
    if (m == cal::Method::Gptq) {
      EXPECT_EQ(kinds, std::set<std::string>{"gptq"});
    }
    if (m == cal::Method::Auto) {
      EXPECT_GE(kinds.size(), 2u);  // a real per-tensor choice
    }
  }
  // Without edgeq metadata: no record.
  quant::QuantizeOptions qo;
  qo.policy.ftype = quant::parse_file_type(mix);
  qo.record_method = false;
  auto setup = cal::setup_method(cal::Method::Gptq, f.stats, "stats.gguf", src, qo);
  const std::string out = f.dir.file("plain.gguf");
  quant::quantize_model(src, out, qo);
  EXPECT_EQ(GgufFile::open(out).find("edgeq.quantize.tensor_methods"), nullptr);
  EXPECT_EQ(GgufFile::open(out).find("edgeq.quantize.method"), nullptr);
}

// AWQ's clipping search never makes a tensor's output error worse than unclipped encoding (it keeps the better
// one by that measure), the error it reports is the error of the clipped encoding, and on heavy-tailed
// weights with outlier input channels it does find clips that lower the error. A random layer, so it is fast.
TEST(QuantMethods, AwqClippingNeverIncreasesOutputError) {
  const int64_t rows = 24, cols = 512, n = 768;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::exponential_distribution<float> ed(1.0f);
  std::vector<float> W(static_cast<size_t>(rows * cols)), X(static_cast<size_t>(n * cols)), col(cols);
  for (auto& w : W) w = ed(rng) * (nd(rng) < 0 ? -1.0f : 1.0f) * (ed(rng) < 0.05f ? 4.0f : 1.0f);  // Laplace + outliers
  for (int64_t j = 0; j < cols; ++j) col[j] = j % 37 == 0 ? 8.0f : 0.5f + ed(rng);  // a few loud input channels
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < cols; ++j) X[i * cols + j] = nd(rng) * col[j];
  std::vector<double> H0(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t a = 0; a < cols; ++a)
      for (int64_t b = 0; b < cols; ++b) H0[a * cols + b] += double(X[i * cols + a]) * X[i * cols + b];
  const std::vector<double> H = cal::ridge_hessian(H0.data(), cols);
  // AWQ-style scales on the columns and rows (the search must account for them).
  std::vector<float> s_col(cols), s_row(rows), imp(cols), Wf(W.size());
  for (int64_t j = 0; j < cols; ++j) s_col[j] = std::sqrt(col[j]);
  for (int64_t r = 0; r < rows; ++r) s_row[r] = 0.5f + ed(rng);
  for (int64_t j = 0; j < cols; ++j) imp[j] = static_cast<float>(H[j * cols + j] / n) / (s_col[j] * s_col[j]);
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
    return cal::output_error(W.data(), Q.data(), rows, cols, H.data());
  };
  int clipped = 0;
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::IQ4_XS, GgmlType::Q4_0}) {
    double e_plain = 0, e_clip = 0;
    const auto idx = cal::awq_clip_search(t, W.data(), Wf.data(), rows, cols, H.data(), imp.data(), s_col.data(),
                                          s_row.data(), &e_plain, &e_clip);
    const double plain = error_of(t, Wf);
    EXPECT_NEAR(e_plain, plain, 1e-7 * plain) << ggml_type_name(t);
    std::vector<float> C = Wf;
    if (!idx.empty()) {
      ++clipped;
      ASSERT_EQ(idx.size(), static_cast<size_t>(rows * cols / ggml_type_info(t)->block_size));
      cal::awq_apply_clip(t, C.data(), rows, cols, idx);
      EXPECT_NE(C, Wf) << ggml_type_name(t);
      EXPECT_NEAR(e_clip, error_of(t, C), 1e-7 * plain) << ggml_type_name(t);
      EXPECT_LT(e_clip, plain) << ggml_type_name(t);
    } else {
      EXPECT_GE(e_clip, e_plain) << ggml_type_name(t);  // kept unclipped because clipping did not help
    }
    EXPECT_LE(error_of(t, C), plain) << ggml_type_name(t);  // what gets encoded is never worse
  }
  EXPECT_GE(clipped, 3);  // clipping really lowers the error for most types
}
