// Tokenizer vs llama.cpp b4748's llama-tokenize ids (../shared/golden/tokens): every recorded case must match
// token for token. Also: token_to_piece / detokenize round trips, Qwen3 (tokenizer.json) vs reference ids,
// hostile input.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/vocab.h"
#include "edgeq/runtime/tokenizer.h"
#include "test_helpers.h"

namespace {

const std::string kShared = EDGEQ_SHARED_DIR;

using edgeq::test::read_text;

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_text(path)); }

const edgeq::Tokenizer& tokenizer_for(const std::string& path) {
  static std::map<std::string, std::unique_ptr<edgeq::Tokenizer>> cache;
  auto& t = cache[path];
  if (!t) t = std::make_unique<edgeq::Tokenizer>(edgeq::Tokenizer::from_gguf(edgeq::GgufFile::open(path)));
  return *t;
}

std::string describe_mismatch(const edgeq::Tokenizer& tok, const std::vector<int32_t>& got, const std::vector<int32_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  std::ostringstream ss;
  ss << "sizes " << got.size() << " vs " << want.size() << ", first difference at " << i << ":";
  for (size_t k = i; k < i + 4; ++k) {
    ss << " [";
    if (k < got.size()) ss << got[k] << " '" << tok.token_to_piece(got[k]) << "'";
    ss << " | ";
    if (k < want.size() && want[k] >= 0 && static_cast<size_t>(want[k]) < tok.n_vocab()) {
      ss << want[k] << " '" << tok.token_to_piece(want[k]) << "'";
    }
    ss << "]";
  }
  return ss.str();
}

// Runs every case of a llama-tokenize golden file; returns the number of cases checked.
int run_cases(const std::string& json_file, const std::string& vocab_dir) {
  auto j = read_json(kShared + "/golden/tokens/" + json_file);
  int n = 0;
  for (const auto& c : j["cases"]) {
    const std::string vocab = c["vocab"];
    const std::string text_name = c["text"];
    const bool add_bos = c["add_bos"];
    const bool parse_special = c.value("parse_special", true);
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE(vocab + " " + text_name + " add_bos=" + std::to_string(add_bos) + " parse_special=" + std::to_string(parse_special));
    const auto& tok = tokenizer_for(kShared + vocab_dir + vocab);
    const std::string text = read_text(kShared + "/text/" + text_name);
    // llama-tokenize: add_special = model adds BOS && !--no-bos
    std::vector<int32_t> got = tok.tokenize(text, add_bos, parse_special);
    EXPECT_EQ(got, want) << describe_mismatch(tok, got, want);
    if (c.contains("n_tokens")) {
      EXPECT_EQ(got.size(), c["n_tokens"].get<size_t>());
    }
    ++n;
  }
  return n;
}

TEST(TokenizerGolden, LlamaCppVocabFiles) {
  // llama-spm, phi-3 (SPM); gpt-2, deepseek-llm, falcon (BPE): two texts x BOS x special parsing
  EXPECT_EQ(run_cases("vocab-tokens.json", "/vocab/"), 40);
}

TEST(TokenizerGolden, Models) {
  // tl-8m and stories260K (SPM with byte fallback), read from the golden GGUFs
  EXPECT_EQ(run_cases("model-tokens.json", "/golden/"), 16);
}

TEST(TokenizerGolden, HeldoutAsPerplexityTokenizesIt) {
  EXPECT_EQ(run_cases("heldout-tokens.json", "/golden/"), 2);
  const auto& tok = tokenizer_for(kShared + "/golden/tl-8m-F16.gguf");
  EXPECT_EQ(tok.tokenize(read_text(kShared + "/text/tinystories-heldout.txt"), true, false).size(), 30755u);
}

TEST(Tokenizer, SpecialIdsAndFlags) {
  const auto& tl = tokenizer_for(kShared + "/golden/tl-8m-F16.gguf");
  EXPECT_EQ(tl.kind(), edgeq::Tokenizer::Kind::SPM);
  EXPECT_EQ(tl.n_vocab(), 4096u);
  EXPECT_EQ(tl.bos(), 1);
  EXPECT_EQ(tl.eos(), 2);
  EXPECT_EQ(tl.unk(), 0);
  EXPECT_TRUE(tl.add_bos());
  EXPECT_FALSE(tl.add_eos());
  EXPECT_TRUE(tl.add_space_prefix());
  EXPECT_TRUE(tl.is_eog(2));
  EXPECT_FALSE(tl.is_eog(1));
  EXPECT_EQ(tl.token_text(tl.nl()), "<0x0A>");
  EXPECT_EQ(tl.tokenize("", true, true), std::vector<int32_t>{1});
  EXPECT_TRUE(tl.tokenize("", false, true).empty());

  const auto& g2 = tokenizer_for(kShared + "/vocab/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(g2.kind(), edgeq::Tokenizer::Kind::BPE);
  EXPECT_EQ(g2.bos(), 50256);
  EXPECT_FALSE(g2.add_bos());
  EXPECT_TRUE(g2.is_eog(50256));
  EXPECT_GE(g2.nl(), 0);  // llama.cpp: first token of tokenize("\u010A") -- not "\n" itself, a known quirk
  // "<|endoftext|>" is split out only with special parsing
  EXPECT_EQ(g2.tokenize("<|endoftext|>", false, true), std::vector<int32_t>{50256});
  EXPECT_GT(g2.tokenize("<|endoftext|>", false, false).size(), 1u);
}

TEST(Tokenizer, PiecesAndDetokenize) {
  const std::string sample = read_text(kShared + "/text/tokenizer-sample.txt");
  const std::string heldout_head = read_text(kShared + "/text/tinystories-heldout-head.txt");
  // SPM with byte fallback: detokenize(tokenize(x)) == x (the dummy prefix space is removed again)
  for (const char* m : {"/golden/tl-8m-F16.gguf", "/golden/stories260K-F32.gguf", "/vocab/ggml-vocab-llama-spm.gguf"}) {
    SCOPED_TRACE(m);
    const auto& tok = tokenizer_for(kShared + m);
    for (const std::string* text : {&sample, &heldout_head}) {
      auto ids = tok.tokenize(*text, true, false);
      ASSERT_EQ(ids[0], tok.bos());
      // llama.cpp keeps the dummy-prefix space when a leading BOS is removed, and strips it otherwise
      EXPECT_EQ(tok.detokenize(ids, true, false), " " + *text);
      EXPECT_EQ(tok.detokenize(std::vector<int32_t>(ids.begin() + 1, ids.end()), true, false), *text);
      std::string cat;
      for (size_t i = 1; i < ids.size(); ++i) cat += tok.token_to_piece(ids[i]);
      EXPECT_EQ(cat, " " + *text);
    }
  }
  // byte-level BPE: pieces concatenate to the text exactly; deepseek-llm does no space clean-up
  for (const char* m : {"/vocab/ggml-vocab-gpt-2.gguf", "/vocab/ggml-vocab-deepseek-llm.gguf", "/vocab/ggml-vocab-falcon.gguf"}) {
    SCOPED_TRACE(m);
    const auto& tok = tokenizer_for(kShared + m);
    auto ids = tok.tokenize(sample, false, false);
    std::string cat;
    for (int32_t id : ids) cat += tok.token_to_piece(id);
    EXPECT_EQ(cat, sample);
  }
  const auto& ds = tokenizer_for(kShared + "/vocab/ggml-vocab-deepseek-llm.gguf");
  EXPECT_EQ(ds.detokenize(ds.tokenize(sample, true, false), true, false), sample);
  // gpt-2 cleans " ," " ." " 's" etc. like llama.cpp's clean_up_tokenization_spaces
  const auto& g2 = tokenizer_for(kShared + "/vocab/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(g2.detokenize(g2.tokenize("a , b . c 's d 'll", false, false)), "a, b. c's d 'll");
  // control tokens vanish without unparse_special
  EXPECT_EQ(g2.detokenize({50256}, false, false), "");
  EXPECT_EQ(g2.detokenize({50256}, false, true), "<|endoftext|>");
  EXPECT_THROW(g2.token_to_piece(50257), edgeq::Error);
  EXPECT_THROW(g2.token_to_piece(-1), edgeq::Error);
}

// phi-3: llama.cpp strips whitespace after special tokens when general.name says phi-3 (its vocab file's name
// is "Phi3"); the text after a special token then gets the SentencePiece dummy prefix space.
TEST(Tokenizer, Phi3RstripByModelName) {
  auto f = edgeq::GgufFile::open(kShared + "/vocab/ggml-vocab-phi-3.gguf");
  const auto& phi = tokenizer_for(kShared + "/vocab/ggml-vocab-phi-3.gguf");
  const std::vector<int32_t> user = phi.tokenize("<|user|>", false, true);
  const std::vector<int32_t> end = phi.tokenize("<|end|>", false, true);
  ASSERT_EQ(user.size(), 1u);
  ASSERT_EQ(end.size(), 1u);
  EXPECT_EQ(phi.token_text(user[0]), "<|user|>");
  EXPECT_TRUE(phi.is_eog(end[0]));  // <|end|> is an end-of-generation token by name
  std::vector<int32_t> want = user;
  for (int32_t id : phi.tokenize("Hello", false, false)) want.push_back(id);  // " Hello" with the dummy prefix
  want.push_back(end[0]);
  EXPECT_EQ(phi.tokenize("<|user|>\n  Hello<|end|>\n", false, true), want);
  // the same vocab under another name keeps the whitespace
  const edgeq::Tokenizer plain(edgeq::Vocab::from_gguf(f), "some-model");
  const auto ids = plain.tokenize("<|user|>\n  Hello<|end|>\n", false, true);
  EXPECT_NE(ids, want);
  EXPECT_EQ(plain.detokenize(ids, false, true), "<|user|> \n  Hello<|end|> \n");
}

// llama-bpe (Llama 3): ignore_merges (a whole pre-token that is in the vocab is one token) and BOS by default.
TEST(Tokenizer, LlamaBpeIgnoreMergesAndBos) {
  edgeq::Vocab v;
  v.model = "gpt2";
  v.pre = "llama-bpe";
  v.tokens = {"a", "b", "c", "ab", "abc", "<|begin_of_text|>", "\xC4\xA0", "\xC4\xA0" "a"};
  v.token_types = {1, 1, 1, 1, 1, 3, 1, 1};
  v.merges = {"a b", "\xC4\xA0 a"};
  v.bos_id = 5;
  const edgeq::Tokenizer l3(v);
  EXPECT_TRUE(l3.add_bos());
  EXPECT_EQ(l3.tokenize("abc", true, false), (std::vector<int32_t>{5, 4}));
  EXPECT_EQ(l3.tokenize("abc a", false, false), (std::vector<int32_t>{4, 7}));
  v.pre = "gpt-2";
  const edgeq::Tokenizer g2(v);
  EXPECT_FALSE(g2.add_bos());
  EXPECT_EQ(g2.tokenize("abc", true, false), (std::vector<int32_t>{3, 2}));
  EXPECT_EQ(g2.tokenize("<|begin_of_text|>abc", false, true), (std::vector<int32_t>{5, 3, 2}));
}

TEST(Tokenizer, HostileInput) {
  const auto& g2 = tokenizer_for(kShared + "/vocab/ggml-vocab-gpt-2.gguf");
  EXPECT_THROW(g2.tokenize(std::string("abc\xC3", 4), false, false), edgeq::Error);  // truncated UTF-8
  EXPECT_THROW(g2.tokenize(std::string("\x80x", 2), false, false), edgeq::Error);
  // SPM takes any bytes (byte fallback)
  const auto& tl = tokenizer_for(kShared + "/golden/tl-8m-F16.gguf");
  auto ids = tl.tokenize(std::string("\xFF\x80", 2), false, false);
  EXPECT_EQ(tl.detokenize(ids), std::string("\xFF\x80", 2));
  // a vocab with unknown model / pre-tokenizer, or duplicate tokens
  edgeq::Vocab v;
  v.model = "wordpiece";
  v.tokens = {"a", "b"};
  EXPECT_THROW(edgeq::Tokenizer t(v), edgeq::Error);
  v.model = "gpt2";
  v.pre = "no-such-pre";
  v.merges = {"a b"};
  EXPECT_THROW(edgeq::Tokenizer t(v), edgeq::Error);
  v.model = "llama";
  v.tokens = {"a", "a"};
  EXPECT_THROW(edgeq::Tokenizer t(v), edgeq::Error);
}

}  // namespace
