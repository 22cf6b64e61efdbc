// `edgeq tokenize`: ids equal llama-tokenize's goldens (--ids, --json, --no-bos, --no-parse-special) and errors
// are one line with a non-zero exit.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
const std::string kShared = EDGEQ_SHARED_DIR;

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class TokenizeProgram : public ::testing::Test {
 protected:
  std::string exe = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
  std::string tmp = (fs::temp_directory_path() / ("edgeq_tokcli_" + std::to_string(::getpid()))).string();
  void SetUp() override {
    if (!fs::exists(exe)) GTEST_SKIP() << exe << " not built";
    fs::create_directories(tmp);
  }
  void TearDown() override { fs::remove_all(tmp); }
  int run(const std::string& args, std::string* out, std::string* err) {
    const std::string so = tmp + "/out", se = tmp + "/err";
    const std::string cmd = "EDGEQ_PROGRESS=0 '" + exe + "' tokenize " + args + " >'" + so + "' 2>'" + se + "'";
    int st = std::system(cmd.c_str());
    *out = read_all(so);
    *err = read_all(se);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  static std::vector<int32_t> golden(const std::string& file, const std::string& vocab, const std::string& text, bool bos, bool special) {
    auto j = nlohmann::json::parse(read_all(kShared + "/golden/tokens/" + file));
    for (const auto& c : j["cases"])
      if (c["vocab"] == vocab && c["text"] == text && c["add_bos"] == bos && c.value("parse_special", true) == special)
        return c["ids"].get<std::vector<int32_t>>();
    ADD_FAILURE() << "no golden case " << vocab << " " << text;
    return {};
  }
};

TEST_F(TokenizeProgram, IdsMatchLlamaTokenize) {
  std::string out, err;
  ASSERT_EQ(run("'" + kShared + "/golden/tl-8m-F16.gguf' -f '" + kShared + "/text/tinystories-heldout.txt' --ids", &out, &err), 0) << err;
  EXPECT_EQ(nlohmann::json::parse(out).get<std::vector<int32_t>>(),
            golden("heldout-tokens.json", "tl-8m-F16.gguf", "tinystories-heldout.txt", true, true));

  const std::string ds = "'" + kShared + "/vocab/ggml-vocab-deepseek-llm.gguf' -f '" + kShared + "/text/tokenizer-sample.txt'";
  ASSERT_EQ(run(ds + " --ids --no-bos --no-parse-special", &out, &err), 0) << err;
  EXPECT_EQ(nlohmann::json::parse(out).get<std::vector<int32_t>>(),
            golden("vocab-tokens.json", "ggml-vocab-deepseek-llm.gguf", "tokenizer-sample.txt", false, false));

  ASSERT_EQ(run(ds + " --json", &out, &err), 0) << err;
  auto j = nlohmann::json::parse(out);
  const auto want = golden("vocab-tokens.json", "ggml-vocab-deepseek-llm.gguf", "tokenizer-sample.txt", true, true);
  EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), want);
  EXPECT_EQ(j["n_tokens"].get<size_t>(), want.size());
  ASSERT_EQ(j["pieces"].size(), want.size());
  EXPECT_EQ(j["pieces"][1], "Once");

  ASSERT_EQ(run("'" + kShared + "/golden/tl-8m-F16.gguf' -p 'Hello world'", &out, &err), 0) << err;
  EXPECT_EQ(out, "     1 -> '<s>'\n   477 -> ' H'\n   323 -> 'el'\n   540 -> 'lo'\n  2571 -> ' world'\n");
}

TEST_F(TokenizeProgram, Errors) {
  std::string out, err;
  EXPECT_EQ(run("'" + tmp + "/missing.gguf' -p x", &out, &err), 1);
  EXPECT_EQ(err.rfind("edgeq: error: ", 0), 0u) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_TRUE(out.empty());

  EXPECT_NE(run("'" + kShared + "/golden/tl-8m-F16.gguf'", &out, &err), 0);  // no -p / -f
  EXPECT_NE(err.find("-p"), std::string::npos) << err;

  // a GGUF without tokenizer metadata
  {
    std::ofstream f(tmp + "/empty.gguf", std::ios::binary);
    const char hdr[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    f.write(hdr, sizeof hdr);
  }
  EXPECT_EQ(run("'" + tmp + "/empty.gguf' -p x", &out, &err), 1);
  EXPECT_NE(err.find("tokenizer.ggml.model"), std::string::npos) << err;
}

}  // namespace
