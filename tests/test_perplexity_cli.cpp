// `edgeq perplexity` and `edgeq generate` end to end: text and --json output, the --kld-base/--kld round trip,
// one-line errors with exit code 1.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "test_helpers.h"

namespace fs = std::filesystem;

namespace {
const std::string kShared = EDGEQ_SHARED_DIR;
const std::string kEdgeq = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
const std::string kText = kShared + "/text/tinystories-heldout.txt";

using Run = edgeq::test::CmdResult;

Run run(const std::string& args) { return edgeq::test::run_shell("EDGEQ_PROGRESS=0 " + kEdgeq + " " + args); }

bool have_cli() { return fs::exists(kEdgeq); }
}  // namespace

TEST(PerplexityCli, TextAndJson) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  const std::string model = kShared + "/golden/tl-8m-Q4_K_M.gguf";
  auto t = run("perplexity " + model + " -f " + kText + " --chunks 2 -t 2");
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("Final estimate: PPL = "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("30755 tokens"), std::string::npos) << t.out;  // tokenized like llama-perplexity
  auto j = run("perplexity " + model + " -f " + kText + " --chunks 2 -t 1 --json");
  ASSERT_EQ(j.code, 0) << j.err;
  auto d = nlohmann::json::parse(j.out);
  EXPECT_EQ(d["n_chunks"], 2);
  EXPECT_EQ(d["scored_tokens"], 254);
  EXPECT_EQ(d["n_tokens"], 30755);
  char expect[64];
  std::snprintf(expect, sizeof expect, "Final estimate: PPL = %.4f +/- %.5f", d["ppl"].get<double>(), d["ppl_err"].get<double>());
  EXPECT_NE(t.out.find(expect), std::string::npos) << t.out << " vs " << expect;  // 1 and 2 threads agree
  EXPECT_TRUE(j.err.empty()) << j.err;  // nothing on stderr with --json
}

TEST(PerplexityCli, KldRoundTripAndMismatch) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  const std::string base = (fs::temp_directory_path() / ("edgeq-pcli-" + std::to_string(getpid()) + ".kld")).string();
  auto b = run("perplexity " + kShared + "/golden/tl-8m-F16.gguf -f " + kText + " --chunks 2 --ctx 128 --kld-base " + base);
  ASSERT_EQ(b.code, 0) << b.err;
  ASSERT_TRUE(fs::exists(base));
  auto k = run("perplexity " + kShared + "/golden/tl-8m-Q2_K.gguf -f " + kText + " --ctx 128 --kld " + base + " --json");
  ASSERT_EQ(k.code, 0) << k.err;
  auto d = nlohmann::json::parse(k.out);
  EXPECT_EQ(d["n_chunks"], 2);
  EXPECT_GT(d["kld"]["mean_kld"].get<double>(), 0.005);  // Q2_K vs F16: clearly non-zero
  EXPECT_LT(d["kld"]["mean_kld"].get<double>(), 0.2);
  EXPECT_GT(d["kld"]["same_top_p_pct"].get<double>(), 60.0);
  EXPECT_NEAR(d["kld"]["ppl"].get<double>(), d["ppl"].get<double>(), 1e-3 * d["ppl"].get<double>());
  // Different context: refused with one line naming the file.
  auto bad = run("perplexity " + kShared + "/golden/tl-8m-Q2_K.gguf -f " + kText + " --ctx 256 --kld " + base);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("edgeq: error: " + base + ": KLD base was computed with n_ctx 128"), std::string::npos) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  // Both modes at once is a usage error.
  auto both = run("perplexity " + kShared + "/golden/tl-8m-Q2_K.gguf -f " + kText + " --kld " + base + " --kld-base x");
  EXPECT_EQ(both.code, 2);
  std::remove(base.c_str());
  // A failed --kld-base run leaves no file behind.
  auto few = run("perplexity " + kShared + "/golden/tl-8m-F16.gguf -f " + kShared +
                 "/text/tinystories-heldout-head.txt --ctx 4096 --kld-base " + base);
  EXPECT_EQ(few.code, 1);
  EXPECT_NE(few.err.find("tokens"), std::string::npos) << few.err;
  EXPECT_FALSE(fs::exists(base));
}

TEST(PerplexityCli, Errors) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  auto r = run("perplexity /nonexistent/model.gguf -f " + kText);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("edgeq: error: ", 0), 0u) << r.err;
  r = run("perplexity " + kShared + "/golden/tl-8m-F16.gguf -f /nonexistent.txt");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/nonexistent.txt"), std::string::npos) << r.err;
  r = run("perplexity --help");
  EXPECT_EQ(r.code, 0);
  for (const char* flag : {"--ctx", "--chunks", "--threads", "--kld-base", "--kld", "--json", "--exact-f32"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
}

TEST(GenerateCli, GreedyStories260K) {
  if (!have_cli()) GTEST_SKIP() << "edgeq not built";
  auto g = nlohmann::json::parse(std::ifstream(kShared + "/golden/generate.json"));
  for (const auto& c : g["cases"]) {
    auto r = run("generate " + kShared + "/golden/" + c["model"].get<std::string>() + " -p \"Once upon a time\" -n 32");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.out, c["output_text"].get<std::string>() + "\n");
    auto j = run("generate " + kShared + "/golden/" + c["model"].get<std::string>() + " -p \"Once upon a time\" -n 32 --json");
    ASSERT_EQ(j.code, 0) << j.err;
    auto d = nlohmann::json::parse(j.out);
    auto ids = d["prompt_ids"].get<std::vector<int>>();
    for (int id : d["ids"].get<std::vector<int>>()) ids.push_back(id);
    EXPECT_EQ(ids, c["ids_of_output_text_with_bos"].get<std::vector<int>>());
  }
  auto s1 = run("generate " + kShared + "/golden/stories260K-F32.gguf -p Hello -n 20 --temp 0.8 --seed 7");
  auto s2 = run("generate " + kShared + "/golden/stories260K-F32.gguf -p Hello -n 20 --temp 0.8 --seed 7");
  EXPECT_EQ(s1.out, s2.out);
  auto h = run("generate --help");
  for (const char* flag : {"--prompt", "--n-predict", "--temp", "--top-k", "--top-p", "--seed", "--json"})
    EXPECT_NE(h.out.find(flag), std::string::npos) << flag;
}
