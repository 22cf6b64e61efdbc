#include <gtest/gtest.h>

#include <iomanip>

#include "edgeq/base/error.h"
#include "edgeq/compare/files.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/tokenizer.h"
#include "test_helpers.h"

using namespace edgeq;
using edgeq::test::shared;

TEST(Compare, TableAgreesWithDirectRunsAndOrdersQuantLevels) {
  compare::CompareOptions o;
  o.max_chunks = 3;
  o.n_threads = 2;
  std::vector<std::string> seen;
  o.on_model = [&](size_t, const std::string& p) { seen.push_back(p); };
  const std::string base = shared("golden/tl-8m-F16.gguf");
  const std::string text = shared("text/tinystories-heldout.txt");
  auto rep = compare::compare_models(base, {shared("golden/tl-8m-Q8_0.gguf"), shared("golden/tl-8m-Q2_K.gguf")}, text, o);
  ASSERT_EQ(rep.candidates.size(), 2u);
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(rep.n_chunks, 3);
  EXPECT_EQ(rep.scored, 3 * 127);

  // the base row is exactly a perplexity run of the base model
  auto model = runtime::Model::load(base);
  auto tok = Tokenizer::from_gguf(model.gguf());
  auto bytes = edgeq::test::read_file(text);
  auto ids = tok.tokenize(std::string(bytes.begin(), bytes.end()), true, false);
  runtime::PerplexityOptions po;
  po.max_chunks = 3;
  po.n_threads = 2;
  auto direct = runtime::perplexity(model, ids, tok.add_bos(), tok.bos(), po);
  // compare writes the reference log-probabilities while scoring the base, and that path takes the log-sum-exp
  // in float as llama.cpp's log_softmax does, so the base PPL agrees with a plain run to ~1e-8, not bit for bit
  EXPECT_NEAR(rep.base.result.ppl, direct.ppl, 1e-6 * direct.ppl) << std::setprecision(17) << rep.base.result.ppl;
  EXPECT_EQ(rep.base.file_type, "F16");
  EXPECT_EQ(rep.base.file_bytes, 16889248u);
  EXPECT_EQ(rep.base.parameters, 8392960u);

  auto& q8 = rep.candidates[0];
  auto& q2 = rep.candidates[1];
  EXPECT_EQ(q8.file_type, "Q8_0");
  EXPECT_EQ(q2.file_type, "Q2_K");
  EXPECT_EQ(q8.file_bytes, 9024992u);
  ASSERT_TRUE(q8.result.kld && q2.result.kld);
  // Q8_0 is nearly lossless, Q2_K is not: KLD, top-1 agreement and size order accordingly
  EXPECT_GT(q8.result.kld->mean_kld, 0.0);
  EXPECT_LT(q8.result.kld->mean_kld * 10, q2.result.kld->mean_kld);
  EXPECT_GT(q8.result.kld->same_top_pct, q2.result.kld->same_top_pct);
  EXPECT_GT(q8.bits_per_weight, q2.bits_per_weight);
  // PPL(base) in KLD mode comes from the stored 16-bit log-probabilities (llama.cpp's format): close, not exact
  EXPECT_NEAR(q8.result.kld->ppl_base, rep.base.result.ppl, 1e-5 * rep.base.result.ppl);

  auto j = compare::compare_to_json(rep);
  EXPECT_EQ(j["candidates"].size(), 2u);
  EXPECT_EQ(j["candidates"][1]["file_type"], "Q2_K");
  auto table = compare::render_compare(rep);
  EXPECT_NE(table.find("tl-8m-Q2_K.gguf"), std::string::npos);
  EXPECT_NE(table.find("Q8_0"), std::string::npos);
}

TEST(Compare, RefusesADifferentVocabulary) {
  compare::CompareOptions o;
  o.max_chunks = 2;
  try {
    compare::compare_models(shared("golden/stories260K-F32.gguf"), {shared("golden/tl-8m-Q8_0.gguf")},
                            shared("text/tinystories-heldout.txt"), o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tl-8m-Q8_0.gguf"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vocabulary"), std::string::npos) << e.what();
  }
}
