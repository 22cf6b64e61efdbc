// The F32 KL-divergence reference and the KLD base file's checks. The F32 reference is built here from the BF16
// safetensors (llama.cpp converter rules: Q/K row permutation,
// metadata and vocab copied from the F16 golden), so the test does not depend on `edgeq convert`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "edgeq/convert/convert.h"
#include "edgeq/convert/plan.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/safetensors.h"
#include "edgeq/runtime/kld.h"
#include "edgeq/runtime/matmul.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/perplexity.h"

#include "golden_check.h"
#include "test_helpers.h"  // EDGEQ_SANITIZED
#include "tl8m_reference.h"

namespace fs = std::filesystem;
namespace rt = edgeq::runtime;

namespace {
const std::string kShared = EDGEQ_SHARED_DIR;

const std::vector<int32_t>& heldout_tokens() { return edgeq::golden::heldout_tokens("tl-8m-F16.gguf"); }

// tl-8m in F32 from the BF16 safetensors; cached in the build tree (written atomically).
std::string f32_reference() {
  const fs::path dir = fs::path(EDGEQ_BINARY_DIR) / "rt-fixtures";
  const fs::path out = dir / "tl-8m-F32.gguf";
  if (fs::exists(out)) return out.string();
  fs::create_directories(dir);
  auto ref = edgeq::GgufFile::open(kShared + "/golden/tl-8m-F16.gguf");
  auto st = edgeq::SafetensorsCheckpoint::open(kShared + "/models/tl-8m");
  edgeq::GgufWriter w(out.string());
  for (const auto& [k, v] : ref.metadata()) w.set(k, v);
  w.set("general.file_type", uint32_t{0});
  for (const auto& t : ref.tensors()) w.add_tensor(t.name, t.dims, edgeq::GgmlType::F32);
  for (const auto& t : ref.tensors()) {
    uint64_t n = 1;
    for (uint64_t d : t.dims) n *= d;
    const std::vector<float> v = tl8m::reference(st, t.name, n / t.dims[0], t.dims[0], n / t.dims[0]);
    if (v.empty()) throw edgeq::Error("fixture: no safetensors tensor for " + t.name);
    w.write_tensor_data(v.data(), v.size() * sizeof(float));
  }
  w.finish();
  return out.string();
}

std::string tmp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("edgeq-kld-" + std::to_string(getpid()) + "-" + name)).string();
}

struct TmpFile {
  std::string path;
  ~TmpFile() { std::remove(path.c_str()); }
};

}  // namespace

// The F32 fixture reproduces llama.cpp's F32 conversion: its weights equal the F16 golden's wherever f16 is
// exact, and its PPL is llama.cpp's F32 PPL.
TEST(KldFixture, F32MatchesF16Golden) {
  auto f32 = rt::Model::load(f32_reference());
  auto f16 = rt::Model::load(kShared + "/golden/tl-8m-F16.gguf");
  std::vector<float> a(256), b(256);
  rt::dequantize_rows(f32.layers()[3].wq, 17, 18, a.data());
  rt::dequantize_rows(f16.layers()[3].wq, 17, 18, b.data());
  int same = 0;
  for (int i = 0; i < 256; ++i) same += std::fabs(a[i] - b[i]) <= 1e-3f * std::fabs(a[i]);
  EXPECT_GE(same, 250);  // permutation applied the same way (a wrong one would scramble the row)
}

// The project's converter (`edgeq convert --outtype f32`) writes exactly the fixture's tensors, so the KLD
// reference here is the one the brief names.
TEST(KldFixture, EqualsEdgeqConvertF32) {
  const std::string out = tmp_path("convert-f32.gguf");
  struct Rm {
    std::string p;
    ~Rm() { std::remove(p.c_str()); }
  } rm{out};
  edgeq::convert::ConvertOptions co;
  co.outtype = "f32";
  co.threads = 2;
  auto plan = edgeq::convert::plan_conversion(kShared + "/models/tl-8m", co);
  edgeq::convert::convert_to_gguf(plan, out, "f32", 2);
  auto a = edgeq::GgufFile::open(out);
  auto b = edgeq::GgufFile::open(f32_reference());
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& t : b.tensors()) {
    SCOPED_TRACE(t.name);
    const auto* u = a.find_tensor(t.name);
    ASSERT_NE(u, nullptr);
    EXPECT_EQ(u->type, edgeq::GgmlType::F32);
    ASSERT_EQ(u->dims, t.dims);
    auto va = a.view(*u), vb = b.view(t);
    ASSERT_EQ(va.nbytes, vb.nbytes);
    EXPECT_EQ(std::memcmp(va.data, vb.data, va.nbytes), 0);
  }
}

// KLD of every golden against this F32 reference, compared with llama.cpp's figures: test_perplexity_goldens.cpp.

TEST(Kld, MismatchedBaseIsRefused) {
  const auto& toks = heldout_tokens();
  TmpFile base{tmp_path("mismatch.kld")};
  auto m = rt::Model::load(kShared + "/golden/tl-8m-Q4_0.gguf");
  rt::PerplexityOptions o;
  o.n_ctx = 64;
  o.max_chunks = 2;
  o.kld_base_out = base.path;
  rt::perplexity(m, toks, true, 1, o);
  {
    rt::KldBaseReader rd(base.path);
    EXPECT_EQ(rd.header().n_ctx, 64u);
    EXPECT_EQ(rd.header().n_vocab, 4096u);
    EXPECT_EQ(rd.header().n_chunks, 2u);
  }
  o.kld_base_out.clear();
  o.kld_in = base.path;
  // Same everything: accepted, and a model against its own log-probs has ~0 divergence.
  auto same = rt::perplexity(m, toks, true, 1, o);
  ASSERT_TRUE(same.kld);
  EXPECT_LT(std::fabs(same.kld->mean_kld), 1e-4);
  EXPECT_EQ(same.kld->same_top_pct, 100.0);
  // Other context size, other text, other vocabulary size: refused.
  o.n_ctx = 128;
  EXPECT_THROW(rt::perplexity(m, toks, true, 1, o), edgeq::Error);
  o.n_ctx = 64;
  std::vector<int32_t> other(toks.begin() + 1, toks.end());
  EXPECT_THROW(rt::perplexity(m, other, true, 1, o), edgeq::Error);
  auto small = rt::Model::load(kShared + "/golden/stories260K-F32.gguf");
  EXPECT_THROW(rt::perplexity(small, toks, true, 1, o), edgeq::Error);
  // Truncated and corrupted files: a clear error, no crash.
  std::string bytes;
  {
    std::ifstream f(base.path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  TmpFile bad{tmp_path("bad.kld")};
  for (size_t cut : {size_t(5), size_t(40), bytes.size() / 2, bytes.size() - 3}) {
    std::ofstream(bad.path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(cut));
    EXPECT_THROW(rt::perplexity(m, toks, true, 1, [&] { auto p = o; p.kld_in = bad.path; return p; }()), edgeq::Error)
        << "cut at " << cut;
  }
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x5a;
  flipped[flipped.size() / 2 + 1] ^= 0x33;
  std::ofstream(bad.path, std::ios::binary).write(flipped.data(), static_cast<std::streamsize>(flipped.size()));
  try {
    auto p = o;
    p.kld_in = bad.path;
    rt::perplexity(m, toks, true, 1, p);  // zstd may or may not detect it; it must not crash
  } catch (const edgeq::Error&) {
  }
}
