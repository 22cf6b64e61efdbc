// HF tokenizer files -> edgeq::Vocab: SentencePiece tokenizer.model (own protobuf reader), byte-level BPE
// tokenizer.json (Qwen3's real file), special tokens, chat template, pre-tokenizer recognition, hostile files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/hf_tokenizer.h"
#include "edgeq/formats/vocab.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace edgeq;

namespace {

const std::string kShared = EDGEQ_SHARED_DIR;

struct TempDir {
  fs::path p;
  TempDir() {
    static int n = 0;
    p = fs::temp_directory_path() / ("edgeq-test-hftok-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    fs::remove_all(p);
    fs::create_directories(p);
  }
  ~TempDir() { fs::remove_all(p); }
};

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

std::string read_bytes(const fs::path& p) { return edgeq::test::read_text(p.string()); }

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const edgeq::Error& e) {
    return e.what();
  }
  return "<no error>";
}

const Vocab& qwen3_vocab() {
  static Vocab v = load_tokenizer_json(kShared + "/tokenizers/qwen3/tokenizer.json");
  return v;
}

}  // namespace

// ---- SentencePiece ---------------------------------------------------------------------------------------

TEST(HfTokenizer, SentencePieceMatchesGoldenVocab) {
  // tokenizer.model pieces/scores/types equal what llama.cpp's converter wrote into the goldens.
  struct Case {
    const char* model;
    const char* golden;
  } cases[] = {{"/models/tl-8m/tokenizer.model", "/golden/tl-8m-F16.gguf"},
               {"/models/stories260K/tokenizer.model", "/golden/stories260K-F32.gguf"}};
  for (auto& c : cases) {
    SentencePieceInfo info;
    Vocab v = load_sentencepiece_model(kShared + c.model, std::nullopt, &info);
    auto g = GgufFile::open(kShared + c.golden);
    Vocab want = Vocab::from_gguf(g);
    EXPECT_EQ(v.model, "llama");
    EXPECT_EQ(v.pre, "default");
    ASSERT_EQ(v.tokens.size(), want.tokens.size()) << c.model;
    EXPECT_EQ(v.tokens, want.tokens) << c.model;
    EXPECT_EQ(v.token_types, want.token_types) << c.model;
    ASSERT_EQ(v.scores.size(), want.scores.size());
    for (size_t i = 0; i < v.scores.size(); ++i) ASSERT_EQ(v.scores[i], want.scores[i]) << c.model << " " << i;
    EXPECT_EQ(info.unk_id, 0);
    EXPECT_EQ(info.bos_id, 1);
    EXPECT_EQ(info.eos_id, 2);
  }
  SentencePieceInfo info;
  Vocab tl = load_sentencepiece_model(kShared + "/models/tl-8m/tokenizer.model", std::nullopt, &info);
  EXPECT_EQ(info.model_type, 2);  // BPE (TRAINED.md)
  EXPECT_TRUE(info.byte_fallback);
  EXPECT_TRUE(info.add_dummy_prefix);
  EXPECT_FALSE(info.remove_extra_whitespaces);
  EXPECT_EQ(tl.tokens[3], "<0x00>");
  EXPECT_EQ(tl.token_types[3], static_cast<int32_t>(TokenType::BYTE));
  EXPECT_EQ(tl.tokens[258], "<0xFF>");
}

TEST(HfTokenizer, SentencePiecePadsToConfigVocabSize) {
  Vocab v = load_sentencepiece_model(kShared + "/models/stories260K/tokenizer.model", 515);
  ASSERT_EQ(v.tokens.size(), 515u);
  EXPECT_EQ(v.tokens[512], "[PAD512]");
  EXPECT_EQ(v.token_types[514], static_cast<int32_t>(TokenType::UNUSED));
  EXPECT_EQ(v.scores[513], -10000.0f);
  EXPECT_NE(error_of([] { load_sentencepiece_model(kShared + "/models/stories260K/tokenizer.model", 100); }).find("vocab_size"),
            std::string::npos);
}

TEST(HfTokenizer, HostileSentencePieceFiles) {
  std::string good = read_bytes(kShared + "/models/stories260K/tokenizer.model");
  auto parse = [](const std::string& s) {
    return parse_sentencepiece_model(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "bad.model");
  };
  // every truncation is either an error or a valid prefix (never a crash)
  for (size_t n : {size_t(1), size_t(2), size_t(7), good.size() / 3, good.size() - 1}) {
    try {
      parse(good.substr(0, n));
    } catch (const edgeq::Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad.model"), std::string::npos) << e.what();
    }
  }
  EXPECT_NE(error_of([&] { parse(std::string("\x0a\xff\xff\xff\xff\x0f", 6)); }).find("runs past"), std::string::npos);
  EXPECT_NE(error_of([&] { parse(std::string("\x0b", 1)); }).find("wire type"), std::string::npos);  // group
  EXPECT_NE(error_of([&] { parse(std::string("\x0a\x05\x0a\x01" "a\x18\x09", 7)); }).find("unknown type 9"), std::string::npos);
  EXPECT_NE(error_of([&] { parse(std::string("\x0a\x02\x18\x01", 4)); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([&] { parse(std::string("\x0a\x03\x0a\x01" "a", 5) + std::string(11, '\xff')); }).find("bad.model"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse(std::string()); }).find("no pieces"), std::string::npos);
  EXPECT_NE(error_of([&] { parse(std::string("{\"not\": \"a proto\"}")); }).find("bad.model"), std::string::npos);
}

// ---- tokenizer.json (Qwen3) ---------------------------------------------------------------------------------

TEST(HfTokenizer, Qwen3TokenizerJson) {
  const Vocab& v = qwen3_vocab();
  auto j = nlohmann::json::parse(std::ifstream(kShared + "/tokenizers/qwen3/tokenizer.json"));
  const auto& vocab = j["model"]["vocab"];
  const auto& added = j["added_tokens"];
  EXPECT_EQ(v.model, "gpt2");
  EXPECT_EQ(v.pre, "qwen2");
  ASSERT_EQ(v.tokens.size(), vocab.size() + added.size());
  ASSERT_EQ(v.tokens.size(), 151669u);
  EXPECT_TRUE(v.scores.empty());
  size_t normal = 0;
  for (auto t : v.token_types) normal += t == static_cast<int32_t>(TokenType::NORMAL);
  EXPECT_EQ(normal, 151643u);
  for (auto& [tok, id] : vocab.items()) {
    ASSERT_EQ(v.tokens[id.get<size_t>()], tok);
  }
  // every added token: CONTROL when special or looking special (<|...|>), USER_DEFINED otherwise
  size_t control = 0, user = 0;
  for (auto& a : added) {
    size_t id = a["id"].get<size_t>();
    std::string c = a["content"].get<std::string>();
    EXPECT_EQ(v.tokens[id], c);
    bool looks = c.rfind("<|", 0) == 0 && c.size() >= 4 && c.compare(c.size() - 2, 2, "|>") == 0;
    int32_t want = (a["special"].get<bool>() || looks) ? 3 : 4;
    EXPECT_EQ(v.token_types[id], want) << c;
    (want == 3 ? control : user)++;
  }
  EXPECT_EQ(control, 20u);  // 14 special + 6 <|fim_*|>, <|repo_name|>, <|file_sep|>
  EXPECT_EQ(user, 6u);      // <tool_call> </tool_call> <tool_response> </tool_response> <think> </think>
  EXPECT_EQ(v.tokens[0], "!");
  EXPECT_EQ(v.tokens[220], "\xc4\xa0");  // "Ġ"
  EXPECT_EQ(v.token_types[151657], static_cast<int32_t>(TokenType::USER_DEFINED));  // <tool_call>
  EXPECT_EQ(v.token_types[151659], static_cast<int32_t>(TokenType::CONTROL));       // <|fim_prefix|>, special=false
  // merges: the [a, b] pair form joined with a space
  ASSERT_EQ(v.merges.size(), 151387u);
  EXPECT_EQ(v.merges[0], "\xc4\xa0 \xc4\xa0");
  EXPECT_EQ(v.merges[2], "i n");
  EXPECT_EQ(v.merges.back(), "\xc3\xa2\xc2\xbd \xc4\xb9");  // ["â½", "Ĺ"]
}

TEST(HfTokenizer, Qwen3SpecialTokensAndChatTemplate) {
  TempDir td;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(fs::path(kShared) / "tokenizers/qwen3" / f, td.p / f);
  // config.json supplies ids tokenizer_config.json does not name (bos_token is null there)
  write_text(td.p / "config.json", R"({"bos_token_id": 151643, "eos_token_id": 151643})");
  Vocab w = load_hf_vocab(td.p.string(), false, 151936);
  EXPECT_EQ(w.bos_id, 151643);  // config.json
  EXPECT_EQ(w.eos_id, 151645);  // eos_token <|im_end|>: tokenizer_config.json wins over config.json
  EXPECT_EQ(w.pad_id, 151643);  // pad_token <|endoftext|>
  EXPECT_EQ(w.unk_id, -1);
  EXPECT_EQ(w.add_bos, false);
  EXPECT_FALSE(w.add_eos.has_value());
  auto tc = nlohmann::json::parse(std::ifstream(td.p / "tokenizer_config.json"));
  ASSERT_TRUE(w.chat_template.has_value());
  EXPECT_EQ(*w.chat_template, tc["chat_template"].get<std::string>());
  EXPECT_GT(w.chat_template->size(), 4000u);
  ASSERT_EQ(w.tokens.size(), 151936u);  // padded to config vocab_size
  EXPECT_EQ(w.tokens[151935], "[PAD151935]");
  EXPECT_EQ(w.token_types[151700], static_cast<int32_t>(TokenType::UNUSED));
  // Vocab round trip through GGUF metadata keeps everything
  GgufWriter gw((td.p / "v.gguf").string());
  w.to_gguf(gw);
  gw.finish();
  Vocab back = Vocab::from_gguf(GgufFile::open((td.p / "v.gguf").string()));
  EXPECT_EQ(back.tokens, w.tokens);
  EXPECT_EQ(back.merges, w.merges);
  EXPECT_EQ(back.pre, "qwen2");
  EXPECT_EQ(back.chat_template, w.chat_template);
}

TEST(HfTokenizer, PreTokenizerRecognition) {
  EXPECT_EQ(identify_bpe_pre(R"({"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true})"), "gpt-2");
  EXPECT_EQ(identify_bpe_pre(R"({"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},
      {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}]})"),
            "smollm");
  EXPECT_EQ(identify_bpe_pre(R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
      "behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]})"),
            "llama-bpe");
  EXPECT_EQ(identify_bpe_pre(R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
      "behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":false,"use_regex":false}]})"),
            "qwen2");  // Qwen3's tokenizer.json pre_tokenizer (the whole file is checked in Qwen3TokenizerJson)
  EXPECT_EQ(identify_bpe_pre(R"({"type":"Whitespace"})"), std::nullopt);
  EXPECT_EQ(identify_bpe_pre("not json"), std::nullopt);
}

namespace {
std::string tiny_bpe_json(const std::string& pre, const std::string& merges = R"(["a b", ["c d", "e"]])") {
  return R"({"added_tokens":[{"id":5,"content":"<s>","special":true},{"id":6,"content":"my▁tok","special":false}],
    "pre_tokenizer":)" + pre + R"(, "model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2,"c d":3,"e":4},"merges":)" + merges + "}}";
}
}  // namespace

TEST(HfTokenizer, TinyBpeMergesAddedTokensAndForcedPre) {
  TempDir td;
  write_text(td.p / "tokenizer.json", tiny_bpe_json(R"({"type":"ByteLevel","add_prefix_space":false,"use_regex":true})"));
  Vocab v = load_tokenizer_json((td.p / "tokenizer.json").string());
  ASSERT_EQ(v.tokens.size(), 7u);
  EXPECT_EQ(v.pre, "gpt-2");
  EXPECT_EQ(v.merges, (std::vector<std::string>{"a b", "c\xc4\xa0" "d e"}));  // space inside a pair part -> U+0120
  EXPECT_EQ(v.token_types[5], static_cast<int32_t>(TokenType::CONTROL));
  EXPECT_EQ(v.token_types[6], static_cast<int32_t>(TokenType::USER_DEFINED));
  EXPECT_EQ(v.tokens[6], "my tok");  // user-defined: U+2581 pre-normalised to a space

  std::string rx = R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\p{L}+|weird"},"behavior":"Isolated"},)"
                   R"({"type":"ByteLevel","use_regex":false}]})";
  write_text(td.p / "tokenizer.json", tiny_bpe_json(rx));
  std::string e = error_of([&] { load_tokenizer_json((td.p / "tokenizer.json").string()); });
  EXPECT_NE(e.find("\\p{L}+|weird"), std::string::npos) << e;
  EXPECT_NE(e.find("--pre"), std::string::npos) << e;
  Vocab f = load_tokenizer_json((td.p / "tokenizer.json").string(), std::nullopt, "falcon");
  EXPECT_EQ(f.pre, "falcon");
}

TEST(HfTokenizer, HostileTokenizerJson) {
  TempDir td;
  auto path = (td.p / "tokenizer.json").string();
  const std::string gpt2 = R"({"type":"ByteLevel","use_regex":true})";
  struct Case {
    std::string text, needle;
  } cases[] = {
      {"{not json", "not valid JSON"},
      {"[]", "not a tokenizer.json"},
      {R"({"model":{"type":"Unigram","vocab":[]}})", "Unigram"},
      {R"({"model":{"type":"BPE","vocab":{"a":-1}},"pre_tokenizer":)" + gpt2 + "}", "out of range"},
      {R"({"model":{"type":"BPE","vocab":{"a":99999999999}},"pre_tokenizer":)" + gpt2 + "}", "out of range"},
      {R"({"model":{"type":"BPE","vocab":{"a":0,"b":0}},"pre_tokenizer":)" + gpt2 + "}", "id 0 is used by both"},
      {R"({"model":{"type":"BPE","vocab":{"a":16000000}},"pre_tokenizer":)" + gpt2 + "}", "sparse"},
      {R"({"model":{"type":"BPE","vocab":{"a":"x"}},"pre_tokenizer":)" + gpt2 + "}", "non-integer"},
      {R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[["a"]]},"pre_tokenizer":)" + gpt2 + "}", "merge 0"},
      {R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[7]},"pre_tokenizer":)" + gpt2 + "}", "merge 0"},
      {R"({"model":{"type":"BPE","vocab":{}},"pre_tokenizer":)" + gpt2 + "}", "empty vocabulary"},
      {R"({"added_tokens":[{"id":"x","content":"a"}],"model":{"type":"BPE","vocab":{"a":0}}})", "added_tokens"},
      {R"({"model":{"type":"BPE","vocab":{"a":0}},"pre_tokenizer":null})", "unrecognised BPE pre-tokenizer"},
  };
  for (auto& c : cases) {
    write_text(path, c.text);
    std::string e = error_of([&] { load_tokenizer_json(path); });
    EXPECT_NE(e.find(c.needle), std::string::npos) << c.text << " -> " << e;
    EXPECT_NE(e.find("tokenizer.json"), std::string::npos) << e;
  }
  // a config vocab_size smaller than the ids in the file
  write_text(path, R"({"model":{"type":"BPE","vocab":{"a":0,"b":9}},"pre_tokenizer":)" + gpt2 + "}");
  EXPECT_NE(error_of([&] { load_tokenizer_json(path, 5); }).find("vocab_size"), std::string::npos);
  // holes become [PAD<i>] UNUSED
  Vocab v = load_tokenizer_json(path);
  ASSERT_EQ(v.tokens.size(), 10u);
  EXPECT_EQ(v.tokens[4], "[PAD4]");
  EXPECT_EQ(v.token_types[4], static_cast<int32_t>(TokenType::UNUSED));
}

TEST(HfTokenizer, LlamaPrefersSentencePieceAndReadsSpecialIds) {
  // stories260K has tokenizer.model and tokenizer.json: LlamaForCausalLM takes the SentencePiece model.
  Vocab v = load_hf_vocab(kShared + "/models/stories260K", true, 512);
  EXPECT_EQ(v.model, "llama");
  EXPECT_EQ(v.tokens.size(), 512u);
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.unk_id, 0);
  EXPECT_EQ(v.add_bos, true);
  EXPECT_EQ(v.add_eos, false);
  // tl-8m has no tokenizer.json: ids from tokenizer_config.json's tokens and config.json
  Vocab t = load_hf_vocab(kShared + "/models/tl-8m", true, 4096);
  EXPECT_EQ(t.unk_id, 0);
  EXPECT_EQ(t.bos_id, 1);
  EXPECT_EQ(t.eos_id, 2);
  EXPECT_EQ(t.pad_id, -1);
  TempDir td;
  EXPECT_NE(error_of([&] { load_hf_vocab(td.p.string(), true, std::nullopt); }).find("no tokenizer.model or tokenizer.json"),
            std::string::npos);
}
