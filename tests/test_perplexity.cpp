// The perplexity protocol (llama-perplexity b4748's: n_ctx 256, tinystories-heldout.txt, second half of each chunk
// scored), driven by the golden token ids (llama-perplexity's own tokenization of the text): short runs, thread
// invariance, options and errors. The full-text figures of every golden file are test_perplexity_goldens.cpp's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/perplexity.h"

#include "golden_check.h"
#include "test_helpers.h"  // EDGEQ_SANITIZED

namespace rt = edgeq::runtime;

namespace {
const std::string kShared = EDGEQ_SHARED_DIR;

using edgeq::golden::heldout_tokens;

rt::PerplexityResult run(const std::string& file, const std::string& vocab, int64_t chunks, int threads = 2,
                         bool compat = true) {
  auto m = rt::Model::load(kShared + "/golden/" + file);
  rt::PerplexityOptions o;
  o.n_threads = threads;
  o.max_chunks = chunks;
  o.ggml_compat = compat;
  return rt::perplexity(m, heldout_tokens(vocab), true, 1, o);
}

// The running PPL after the first 4 chunks, against the value a full-text run printed when its final PPL matched
// llama.cpp's golden (the full-text comparison of every golden, at golden_check.h's tolerances, is
// Golden.MatchesLlamaCpp in test_perplexity_goldens.cpp; running it here too would double the CI's longest tests).
// Short enough for the sanitizer build, which leaves test_perplexity_goldens out.
void check_prefix(const std::string& name, const std::string& vocab, double prefix4) {
  SCOPED_TRACE(name);
  auto r = run(name + ".gguf", vocab, 4);
  ASSERT_EQ(r.n_chunks, 4);
  ASSERT_EQ(r.chunk_ppl.size(), 4u);
  EXPECT_NEAR(r.chunk_ppl[3], r.ppl, 1e-9 * r.ppl);  // the running figure after the last chunk is the result
  EXPECT_NEAR(r.ppl, prefix4, 1e-3 * prefix4);
  EXPECT_GT(r.ppl_err, 0.0);
}

}  // namespace

TEST(Perplexity, TlF16FirstChunks) { check_prefix("tl-8m-F16", "tl-8m-F16.gguf", 39.18928); }

TEST(Perplexity, Stories260KF32FirstChunks) { check_prefix("stories260K-F32", "stories260K-F32.gguf", 4.52974); }

TEST(Perplexity, TlQ8_0FirstChunks) { check_prefix("tl-8m-Q8_0", "tl-8m-F16.gguf", 39.20155); }

TEST(Perplexity, TlQ4_K_MFirstChunks) { check_prefix("tl-8m-Q4_K_M", "tl-8m-F16.gguf", 39.27191); }

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
  const auto& toks = heldout_tokens("stories260K-F32.gguf");
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
