// Qwen3's byte-level BPE (pre-tokenizer "qwen2") vs reference ids from an independent implementation
// (../shared/tokenizers/qwen3/reference-ids.json: transformers.js port, add_special_tokens = false; added
// tokens such as <|im_start|> are always split out, i.e. parse_special = true).
// The Vocab is built here straight from tokenizer.json (vocab, merges, added tokens) the way llama.cpp's
// converter types them: added tokens are CONTROL when "special" or when they look like <|...|>, else
// USER_DEFINED. This keeps the test independent of the converter's HF reader.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "edgeq/formats/hf_tokenizer.h"
#include "edgeq/formats/vocab.h"
#include "edgeq/runtime/tokenizer.h"
#include "test_helpers.h"

namespace {

const std::string kShared = EDGEQ_SHARED_DIR;

using edgeq::test::read_text;

edgeq::Vocab build_qwen3_vocab() {
  auto j = nlohmann::json::parse(read_text(kShared + "/tokenizers/qwen3/tokenizer.json"));
  edgeq::Vocab v;
  v.model = "gpt2";
  v.pre = "qwen2";
  const auto& vocab = j["model"]["vocab"];
  size_t n = 0;
  for (const auto& [tok, id] : vocab.items()) n = std::max<size_t>(n, id.get<size_t>() + 1);
  for (const auto& a : j["added_tokens"]) n = std::max<size_t>(n, a["id"].get<size_t>() + 1);
  v.tokens.assign(n, "");
  v.token_types.assign(n, static_cast<int32_t>(edgeq::TokenType::NORMAL));
  for (const auto& [tok, id] : vocab.items()) v.tokens[id.get<size_t>()] = tok;
  for (const auto& a : j["added_tokens"]) {
    const size_t id = a["id"];
    const std::string content = a["content"];
    v.tokens[id] = content;
    const bool looks_special = content.size() >= 4 && content.rfind("<|", 0) == 0 && content.substr(content.size() - 2) == "|>";
    v.token_types[id] = static_cast<int32_t>(a["special"].get<bool>() || looks_special ? edgeq::TokenType::CONTROL
                                                                                          : edgeq::TokenType::USER_DEFINED);
  }
  for (size_t i = 0; i < n; ++i)
    if (v.tokens[i].empty()) throw std::runtime_error("tokenizer.json leaves id " + std::to_string(i) + " unassigned");
  for (const auto& m : j["model"]["merges"]) {
    if (m.is_string()) v.merges.push_back(m.get<std::string>());
    else v.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  v.eos_id = 151645;  // <|im_end|> (tokenizer_config.json eos_token)
  v.pad_id = 151643;  // <|endoftext|>
  v.add_bos = false;
  return v;
}

const edgeq::Vocab& qwen3_vocab() {
  static const edgeq::Vocab v = build_qwen3_vocab();
  return v;
}

TEST(TokenizerQwen3, MatchesReferenceIds) {
  const edgeq::Vocab& v = qwen3_vocab();
  ASSERT_EQ(v.size(), 151669u);
  ASSERT_EQ(v.merges.size(), 151387u);
  const edgeq::Tokenizer tok(v);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_TRUE(tok.is_eog(151645));

  auto ref = nlohmann::json::parse(read_text(kShared + "/tokenizers/qwen3/reference-ids.json"));
  int whole = 0, lines = 0;
  for (const auto& c : ref["cases"]) {
    const std::string name = c["text"];
    SCOPED_TRACE(name);
    if (c.contains("ids")) {
      const std::string text = read_text(kShared + "/text/" + name);
      const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
      const std::vector<int32_t> got = tok.tokenize(text, false, true);
      EXPECT_EQ(got, want);
      std::string cat;
      for (int32_t id : got) cat += tok.token_to_piece(id);
      EXPECT_EQ(cat, text);
      ++whole;
    }
    if (c.contains("per_line")) {
      for (const auto& l : c["per_line"]) {
        const std::string line = l["line"];
        SCOPED_TRACE(line);
        EXPECT_EQ(tok.tokenize(line, false, true), l["ids"].get<std::vector<int32_t>>());
        ++lines;
      }
    }
  }
  EXPECT_EQ(whole, 2);
  EXPECT_EQ(lines, 61);
}


// The same through the converter's reader (formats/hf_tokenizer): pre-tokenizer identified from the regex,
// added-token types, special ids from tokenizer_config.json.
TEST(TokenizerQwen3, ThroughHfTokenizerReader) {
  const std::string dir = kShared + "/tokenizers/qwen3";
  edgeq::Vocab hv = edgeq::load_tokenizer_json(dir + "/tokenizer.json");
  edgeq::apply_special_vocab(hv, dir);
  EXPECT_EQ(hv.model, "gpt2");
  EXPECT_EQ(hv.pre, "qwen2");
  const edgeq::Vocab& v = qwen3_vocab();
  ASSERT_EQ(hv.tokens, v.tokens);
  EXPECT_EQ(hv.merges, v.merges);
  EXPECT_EQ(hv.token_types, v.token_types);
  const edgeq::Tokenizer tok(hv);
  auto ref = nlohmann::json::parse(read_text(kShared + "/tokenizers/qwen3/reference-ids.json"));
  int checked = 0;
  for (const auto& c : ref["cases"]) {
    if (!c.contains("ids")) continue;
    const std::string name = c["text"];
    SCOPED_TRACE(name);
    EXPECT_EQ(tok.tokenize(read_text(kShared + "/text/" + name), false, true), c["ids"].get<std::vector<int32_t>>());
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

}  // namespace
