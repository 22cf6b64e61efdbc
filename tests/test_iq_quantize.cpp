// Encoders of the lattice i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S): against llama-quantize's
// own choices on tl-8m (golden files, same weights and imatrix), round trip through the dequantizers, portable and
// SIMD paths write the same bytes, hostile input.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "edgeq/base/cpu.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/safetensors.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/imatrix.h"
#include "test_helpers.h"
#include "tl8m_reference.h"

using edgeq::GgmlType;
namespace q = edgeq::quant;

namespace {

const std::string kShared = EDGEQ_SHARED_DIR;
const GgmlType kLattice[] = {GgmlType::IQ1_S,  GgmlType::IQ1_M,   GgmlType::IQ2_XXS, GgmlType::IQ2_XS,
                             GgmlType::IQ2_S,  GgmlType::IQ3_XXS, GgmlType::IQ3_S};

std::vector<float> dequant(GgmlType t, const std::vector<uint8_t>& q, int64_t rows, int64_t n) {
  std::vector<float> y(static_cast<size_t>(rows * n));
  const size_t rb = q.size() / static_cast<size_t>(rows);
  for (int64_t r = 0; r < rows; ++r) q::dequantize_row(t, q.data() + r * rb, y.data() + r * n, n);
  return y;
}
std::vector<uint8_t> encode(GgmlType t, const std::vector<float>& x, int64_t rows, int64_t n, const float* imp) {
  std::vector<uint8_t> out(*edgeq::ggml_row_size(t, static_cast<uint64_t>(n)) * static_cast<size_t>(rows));
  q::quantize_rows(t, x.data(), out.data(), rows, n, imp);
  return out;
}
double werr(const std::vector<float>& a, const std::vector<float>& b, int64_t n, const float* imp) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    e += (imp ? imp[i % static_cast<size_t>(n)] : 1.0) * d * d;
  }
  return e;
}

}  // namespace

// llama-quantize wrote the golden files from the same weights with the same imatrix: on a slice of rows of three
// tensors per type (the first three of the type in a golden file), edgeq's encoding has a lower importance-weighted
// squared error than llama.cpp's, although both encoders weight by importance * sqrt(sigma2 + x^2), not by the
// importance alone. Measured ratios (edgeq / llama.cpp, summed over the slices): IQ1_S 0.868, IQ1_M 0.860,
// IQ2_XXS 0.922, IQ2_XS 0.911, IQ2_S 0.935, IQ3_XXS 0.947, IQ3_S 0.907; the bounds leave a small margin.
TEST(IqQuantize, BeatsLlamaQuantizeOnTheGoldenWeights) {
  const auto st = edgeq::SafetensorsFile::open(kShared + "/models/tl-8m/model.safetensors");
  const auto im = q::ImatrixFile::open(kShared + "/golden/tl-8m.imatrix");
  struct Case { const char* file; GgmlType type; double bound; };
  const Case cases[] = {{"IQ1_S", GgmlType::IQ1_S, 0.90},     {"IQ1_M", GgmlType::IQ1_M, 0.89},
                        {"IQ2_XXS", GgmlType::IQ2_XXS, 0.95}, {"IQ2_XS", GgmlType::IQ2_XS, 0.94},
                        {"IQ3_XXS", GgmlType::IQ2_S, 0.96},     {"IQ3_XXS", GgmlType::IQ3_XXS, 0.97},
                        {"IQ3_S", GgmlType::IQ3_S, 0.93}};
  const int64_t kRows = EDGEQ_SANITIZED ? 8 : 32;
  for (const Case& c : cases) {
    const auto file = edgeq::GgufFile::open(kShared + "/golden/tl-8m-" + c.file + "-imat.gguf");
    double ours = 0, theirs = 0;
    int used = 0;
    for (const auto& info : file.tensors()) {  // the first three tensors of the type (IQ2_S: in IQ3_XXS's mix)
      if (info.type != c.type || used == 3) continue;
      const std::string& name = info.name;
      const auto view = file.view(name);
      const int64_t n = static_cast<int64_t>(view.dims[0]);
      const auto* imp = im.importance(name);
      if (!imp) continue;  // token_embd: no imatrix entry
      const auto ref = tl8m::reference(st, name, view.dims[1], static_cast<uint64_t>(n), kRows);
      ASSERT_EQ(ref.size(), static_cast<size_t>(kRows * n)) << name;
      ASSERT_EQ(imp->size(), static_cast<size_t>(n)) << name;
      std::vector<uint8_t> gold(view.data, view.data + view.row_bytes() * kRows);
      const auto yg = dequant(c.type, gold, kRows, n);
      const auto ye = dequant(c.type, encode(c.type, ref, kRows, n, imp->data()), kRows, n);
      theirs += werr(yg, ref, n, imp->data());
      ours += werr(ye, ref, n, imp->data());
      ++used;
    }
    ASSERT_EQ(used, 3) << c.file;
    const double ratio = ours / theirs;
    std::printf("%-8s edgeq / llama.cpp weighted error: %.4f\n", edgeq::ggml_type_name(c.type), ratio);
    EXPECT_LT(ratio, c.bound) << c.file;
  }
}

// Random rows (heavy-tailed, with importance) round-trip: the dequantized values are finite and close (relative
// weighted error below a bound per type), the portable and SIMD paths write the same bytes, zero rows give zeros.
TEST(IqQuantize, RoundTripAndSameBytesOnEveryPath) {
  std::mt19937 rng(11);
  std::student_t_distribution<float> dist(4.f);
  std::uniform_real_distribution<float> wd(0.1f, 2.f);
  const int64_t rows = 4, n = 512;
  std::vector<float> x(rows * n), imp(n);
  for (auto& v : x) v = 0.02f * dist(rng);
  for (auto& v : imp) v = wd(rng);
  const std::pair<GgmlType, double> bounds[] = {{GgmlType::IQ1_S, 0.5},   {GgmlType::IQ1_M, 0.45},
                                                {GgmlType::IQ2_XXS, 0.3}, {GgmlType::IQ2_XS, 0.25},
                                                {GgmlType::IQ2_S, 0.22},  {GgmlType::IQ3_XXS, 0.12},
                                                {GgmlType::IQ3_S, 0.1}};
  double norm = 0;
  for (size_t i = 0; i < x.size(); ++i) norm += imp[i % n] * double(x[i]) * x[i];
  for (const auto& [t, bound] : bounds) {
    const auto a = encode(t, x, rows, n, imp.data());
    const auto y = dequant(t, a, rows, n);
    for (float v : y) ASSERT_TRUE(std::isfinite(v));
    const double rel = werr(y, x, n, imp.data()) / norm;
    EXPECT_LT(rel, bound) << edgeq::ggml_type_name(t);
    edgeq::cpu::set_max_level(edgeq::cpu::Level::Portable);
    const auto b = encode(t, x, rows, n, imp.data());
    edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx512);
    EXPECT_EQ(a, b) << edgeq::ggml_type_name(t);
    // Without importance too (plain squared error).
    const auto c = encode(t, x, rows, n, nullptr);
    EXPECT_LT(werr(dequant(t, c, rows, n), x, n, nullptr) / werr(std::vector<float>(x.size(), 0.f), x, n, nullptr),
              bound * 1.2) << edgeq::ggml_type_name(t);
    const std::vector<float> z(static_cast<size_t>(n), 0.f);
    for (float v : dequant(t, encode(t, z, 1, n, imp.data()), 1, n)) EXPECT_EQ(v, 0.f) << edgeq::ggml_type_name(t);
  }
}

TEST(IqQuantize, RefusesNonFiniteInput) {
  for (GgmlType t : kLattice) {
    std::vector<float> x(256, 0.5f);
    x[77] = NAN;
    EXPECT_THROW(encode(t, x, 1, 256, nullptr), edgeq::Error) << edgeq::ggml_type_name(t);
    x[77] = INFINITY;
    EXPECT_THROW(encode(t, x, 1, 256, nullptr), edgeq::Error) << edgeq::ggml_type_name(t);
  }
}

// GPTQ's group access: set_block_group re-chooses one 8-value group at the block's kept scales, exactly. Given the
// original values back it never raises the group's weighted error (the encoder's choice is among its candidates),
// the block's other groups and scales do not change, and y is the group's dequantized values.
TEST(IqQuantize, SetBlockGroupIsExactAtKeptScales) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 0.03f);
  std::uniform_real_distribution<float> wd(0.2f, 3.f);
  std::vector<float> x(256), w(256), other(256);
  for (auto& v : x) v = nd(rng);
  for (auto& v : w) v = wd(rng);
  for (auto& v : other) v = nd(rng);
  for (GgmlType t : kLattice) {
    ASSERT_EQ(q::block_code_group(t), 8);
    auto blk = encode(t, x, 1, 256, w.data());
    const auto y0 = dequant(t, blk, 1, 256);
    int improved = 0;
    for (int g = 0; g < 32; ++g) {
      // Targets far from the block's values: the group moves, the rest of the block stays.
      auto b2 = blk;
      float y[8];
      q::set_block_group(t, b2.data(), g, &other[8 * g], &w[8 * g], y);
      const auto y2 = dequant(t, b2, 1, 256);
      for (int i = 0; i < 256; ++i)
        if (i / 8 != g) {
          ASSERT_EQ(y2[i], y0[i]) << edgeq::ggml_type_name(t) << " group " << g;
        }
      for (int j = 0; j < 8; ++j) ASSERT_EQ(y[j], y2[8 * g + j]);
      double e_old = 0, e_new = 0;
      for (int j = 0; j < 8; ++j) {
        e_old += w[8 * g + j] * std::pow(double(y0[8 * g + j]) - other[8 * g + j], 2);
        e_new += w[8 * g + j] * std::pow(double(y[j]) - other[8 * g + j], 2);
      }
      EXPECT_LE(e_new, e_old * (1 + 1e-6)) << edgeq::ggml_type_name(t) << " group " << g;
      improved += e_new < e_old * 0.999;
      // The original values back: no worse than the encoder's own choice.
      auto b3 = blk;
      q::set_block_group(t, b3.data(), g, &x[8 * g], &w[8 * g], y);
      double e_enc = 0, e_set = 0;
      for (int j = 0; j < 8; ++j) {
        e_enc += w[8 * g + j] * std::pow(double(y0[8 * g + j]) - x[8 * g + j], 2);
        e_set += w[8 * g + j] * std::pow(double(y[j]) - x[8 * g + j], 2);
      }
      EXPECT_LE(e_set, e_enc * (1 + 1e-5) + 1e-12) << edgeq::ggml_type_name(t) << " group " << g;
    }
    EXPECT_GE(improved, 24) << edgeq::ggml_type_name(t);
  }
}

// llama-quantize refuses IQ1_S, IQ2_XXS, IQ2_XS and IQ2_S (IQ1_M: but token_embd and output) for a tensor without
// importance; `edgeq quantize` says the same in one line, writes nothing, and with the imatrix writes the file.
TEST(IqQuantize, QuantizeRefusesVeryLowBitsWithoutImportance) {
  const std::string exe = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
  if (!std::filesystem::exists(exe)) GTEST_SKIP() << exe << " not built";
  edgeq::test::TempDir tmp;
  const std::string src = kShared + "/golden/tl-8m-F16.gguf", out = tmp.file("o.gguf");
  const std::string base = "EDGEQ_PROGRESS=0 '" + exe + "' quantize '" + src + "' -o '" + out + "' --type F16 --threads 2 ";
  auto r = edgeq::test::run_shell(base + "--tensor-type 'blk\\.3\\.ffn_up=IQ2_XS'");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("tensor blk.3.ffn_up.weight: IQ2_XS without an importance matrix"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
  if (!EDGEQ_SANITIZED) {  // IQ1_M's exception, as llama-quantize (a 1M-value IQ1 tensor: skipped under ASan)
    r = edgeq::test::run_shell(base + "--tensor-type 'token_embd=IQ1_M'");
    EXPECT_EQ(r.code, 0) << r.err;
  }
  r = edgeq::test::run_shell(base + "--tensor-type 'blk\\.3\\.ffn_up=IQ2_XS' --imatrix '" + kShared + "/golden/tl-8m.imatrix'");
  EXPECT_EQ(r.code, 0) << r.err;
  const auto f = edgeq::GgufFile::open(out);
  int iq = 0;
  for (const auto& t : f.tensors()) iq += t.type == GgmlType::IQ2_XS;
  EXPECT_EQ(iq, 1);
}
