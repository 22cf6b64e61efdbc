// Perplexity against llama.cpp's golden numbers (llama-perplexity b4748, n_ctx 256, tinystories-heldout.txt),
// driven by the golden token ids (llama-perplexity's own tokenization of the text).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "edgeq/formats/error.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/perplexity.h"

#include "test_helpers.h"  // EDGEQ_SANITIZED

namespace rt = edgeq::runtime;

namespace {
const std::string kShared = EDGEQ_SHARED_DIR;

nlohmann::json load_json(const std::string& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

const std::vector<int32_t>& golden_tokens(const std::string& vocab) {
  static nlohmann::json j = load_json(kShared + "/golden/tokens/heldout-tokens.json");
  static std::map<std::string, std::vector<int32_t>> cache;
  auto it = cache.find(vocab);
  if (it != cache.end()) return it->second;
  for (auto& c : j["cases"])
    if (c["vocab"] == vocab) return cache[vocab] = c["ids"].get<std::vector<int32_t>>();
  return cache[vocab];
}

const nlohmann::json& golden(const std::string& name) {
  static nlohmann::json j = load_json(kShared + "/golden/perplexity.json");
  return j["files"][name];
}

rt::PerplexityResult run(const std::string& file, const std::string& vocab, int64_t chunks, int threads = 2,
                         bool compat = true) {
  auto m = rt::Model::load(kShared + "/golden/" + file);
  rt::PerplexityOptions o;
  o.n_threads = threads;
  o.max_chunks = chunks;
  o.ggml_compat = compat;
  return rt::perplexity(m, golden_tokens(vocab), true, 1, o);
}

// Full-text PPL vs llama.cpp within `tol` (relative); under sanitizers only a prefix of 4 chunks is evaluated
// and compared with the running PPL measured by the Release build (documented here).
void check_golden(const std::string& name, const std::string& vocab, double tol, int64_t n_chunks_full,
                  double sanitized_prefix4) {
  SCOPED_TRACE(name);
  if (EDGEQ_SANITIZED) {
    auto r = run(name + ".gguf", vocab, 4);
    ASSERT_EQ(r.n_chunks, 4);
    EXPECT_NEAR(r.ppl, sanitized_prefix4, 1e-3 * sanitized_prefix4);
    return;
  }
  auto r = run(name + ".gguf", vocab, -1);
  const double g = golden(name)["ppl"].get<double>(), ge = golden(name)["ppl_err"].get<double>();
  std::printf("%s: PPL %.5f +/- %.5f (llama.cpp %.5f +/- %.5f), %lld chunks, %.2f s, after 4 chunks %.5f\n", name.c_str(), r.ppl,
              r.ppl_err, g, ge, static_cast<long long>(r.n_chunks), r.seconds, r.chunk_ppl.size() > 3 ? r.chunk_ppl[3] : 0.0);
  EXPECT_EQ(r.n_chunks, n_chunks_full);
  EXPECT_EQ(r.count, n_chunks_full * 127);
  EXPECT_NEAR(r.ppl, g, tol * g);
  EXPECT_NEAR(r.ppl_err, ge, 0.01 * ge);
  ASSERT_GE(r.chunk_ppl.size(), 4u);
  EXPECT_NEAR(r.chunk_ppl[3], sanitized_prefix4, 1e-3 * sanitized_prefix4);  // keeps the documented value honest
}

}  // namespace

TEST(Perplexity, TlF16FullTextMatchesLlamaCpp) { check_golden("tl-8m-F16", "tl-8m-F16.gguf", 0.002, 120, 39.18928); }

TEST(Perplexity, Stories260KF32MatchesLlamaCpp) {
  check_golden("stories260K-F32", "stories260K-F32.gguf", 0.002, 195, 4.52974);
}

TEST(Perplexity, TlQ8_0MatchesLlamaCpp) { check_golden("tl-8m-Q8_0", "tl-8m-F16.gguf", 0.002, 120, 39.20155); }

TEST(Perplexity, TlQ4_K_MMatchesLlamaCpp) { check_golden("tl-8m-Q4_K_M", "tl-8m-F16.gguf", 0.01, 120, 39.27191); }

TEST(Perplexity, ResultsDoNotDependOnThreadCount) {
  auto a = run("tl-8m-Q6_K.gguf", "tl-8m-F16.gguf", 2, 1);
  auto b = run("tl-8m-Q6_K.gguf", "tl-8m-F16.gguf", 2, 2);
  auto c = run("tl-8m-Q6_K.gguf", "tl-8m-F16.gguf", 2, 3);
  ASSERT_EQ(a.chunk_ppl.size(), 2u);
  EXPECT_EQ(a.chunk_ppl, b.chunk_ppl);  // bit-identical
  EXPECT_EQ(a.chunk_ppl, c.chunk_ppl);
  EXPECT_EQ(a.ppl_err, b.ppl_err);
}

TEST(Perplexity, ChunksLimitAndPlainF32Mode) {
  auto r = run("tl-8m-F16.gguf", "tl-8m-F16.gguf", 3);
  EXPECT_EQ(r.n_chunks, 3);
  EXPECT_EQ(r.count, 3 * 127);
  EXPECT_EQ(r.n_tokens, 30755);
  // Without llama.cpp's rounding emulation the numbers move only in the noise.
  auto f = run("tl-8m-F16.gguf", "tl-8m-F16.gguf", 3, 2, false);
  EXPECT_NE(f.ppl, r.ppl);
  EXPECT_NEAR(f.ppl, r.ppl, 2e-3 * r.ppl);
}

TEST(Perplexity, ProtocolErrors) {
  auto m = rt::Model::load(kShared + "/golden/stories260K-F32.gguf");
  const auto& toks = golden_tokens("stories260K-F32.gguf");
  rt::PerplexityOptions o;
  o.n_ctx = 256;
  std::vector<int32_t> few(toks.begin(), toks.begin() + 511);  // < 2 * n_ctx
  EXPECT_THROW(rt::perplexity(m, few, true, 1, o), edgeq::Error);
  std::vector<int32_t> enough(toks.begin(), toks.begin() + 512);
  auto r = rt::perplexity(m, enough, true, 1, o);
  EXPECT_EQ(r.n_chunks, 2);
  std::vector<int32_t> bad = enough;
  bad[300] = 100000;  // outside the vocabulary
  EXPECT_THROW(rt::perplexity(m, bad, true, 1, o), edgeq::Error);
  bad = enough;
  bad[255] = -1;  // the last token of a chunk is only a target, never evaluated: still checked
  EXPECT_THROW(rt::perplexity(m, bad, true, 1, o), edgeq::Error);
  o.n_ctx = 1 << 19;  // absurd context (logits of 2^18 x 4096 floats): refused before allocating
  std::vector<int32_t> many(1 << 20, 5);
  auto big = rt::Model::load(kShared + "/golden/tl-8m-Q4_0.gguf");
  EXPECT_THROW(rt::perplexity(big, many, true, 1, o), edgeq::Error);
  o.n_ctx = 2;
  EXPECT_THROW(rt::perplexity(m, enough, true, 1, o), edgeq::Error);
  o.n_ctx = 256;
  EXPECT_THROW(rt::perplexity(m, enough, true, 100000, o), edgeq::Error);  // BOS outside the vocabulary
}

TEST(Perplexity, NllMatchesLogSoftmaxDefinition) {
  const float logits[4] = {1.f, 2.f, 3.f, 0.5f};
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0) + std::exp(0.5));
  EXPECT_NEAR(rt::nll_of(logits, 4, 1), lse - 2.0, 1e-6);
  EXPECT_NEAR(rt::nll_of(logits, 4, 2), lse - 3.0, 1e-6);
}
