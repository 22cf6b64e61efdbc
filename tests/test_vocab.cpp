// Vocab::from_gguf / to_gguf: a round trip through GgufWriter reproduces llama.cpp's tokenizer metadata (keys,
// GGUF value types, values, order) for the golden models and llama.cpp's vocab files; hostile metadata is
// rejected with an error naming the file and key.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <type_traits>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/vocab.h"

namespace {

const std::string kShared = EDGEQ_SHARED_DIR;

std::string tmp_path(const std::string& name) {
  return (::testing::TempDir().empty() ? std::string("/tmp/") : ::testing::TempDir()) + "edgeq_vocab_" +
         std::to_string(::getpid()) + "_" + name + ".gguf";
}

bool same_value(const edgeq::GgufValue& a, const edgeq::GgufValue& b) {
  if (a.type() != b.type()) return false;
  if (a.type() == edgeq::GgufType::ARRAY) {
    const auto& x = a.as_array();
    const auto& y = b.as_array();
    if (x.elem_type != y.elem_type || x.items.size() != y.items.size()) return false;
    for (size_t i = 0; i < x.items.size(); ++i)
      if (!same_value(x.items[i], y.items[i])) return false;
    return true;
  }
  if (a.type() == edgeq::GgufType::FLOAT32) {  // bitwise: scores may hold -inf or NaN
    float fa = std::get<float>(a.v), fb = std::get<float>(b.v);
    return std::memcmp(&fa, &fb, sizeof fa) == 0;
  }
  return std::visit(
      [&](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, edgeq::GgufArray>) return false;  // handled above
        else return x == std::get<T>(b.v);
      },
      a.v);
}

std::vector<std::pair<std::string, const edgeq::GgufValue*>> tokenizer_keys(const edgeq::GgufFile& f) {
  std::vector<std::pair<std::string, const edgeq::GgufValue*>> out;
  for (const auto& [k, v] : f.metadata())
    if (k.rfind("tokenizer.", 0) == 0) out.emplace_back(k, &v);
  return out;
}

void round_trip(const std::string& path, bool check_order) {
  SCOPED_TRACE(path);
  auto in = edgeq::GgufFile::open(path);
  edgeq::Vocab v = edgeq::Vocab::from_gguf(in);
  const std::string out_path = tmp_path("rt");
  {
    edgeq::GgufWriter w(out_path);
    v.to_gguf(w);
    w.finish();
  }
  auto out = edgeq::GgufFile::open(out_path);
  auto a = tokenizer_keys(in);
  auto b = tokenizer_keys(out);
  ASSERT_EQ(a.size(), b.size());
  if (check_order) {
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first) << "key #" << i;
      if (a[i].first == b[i].first) {
        EXPECT_EQ(a[i].second->type(), b[i].second->type()) << a[i].first;
        EXPECT_TRUE(same_value(*a[i].second, *b[i].second)) << a[i].first;
      }
    }
  } else {
    for (const auto& [k, val] : a) {
      const edgeq::GgufValue* o = out.find(k);
      ASSERT_NE(o, nullptr) << k;
      EXPECT_EQ(val->type(), o->type()) << k;
      EXPECT_TRUE(same_value(*val, *o)) << k;
    }
  }
  std::remove(out_path.c_str());
}

TEST(Vocab, RoundTripGoldens) {
  round_trip(kShared + "/golden/tl-8m-F16.gguf", true);
  round_trip(kShared + "/golden/stories260K-F32.gguf", true);
}

// to_metadata is the list to_gguf writes: the golden's tokenizer keys, in order, with equal values.
TEST(Vocab, ToMetadataListsTheGoldenKeysInOrder) {
  for (const char* g : {"/golden/tl-8m-F16.gguf", "/golden/stories260K-F32.gguf"}) {
    SCOPED_TRACE(g);
    auto in = edgeq::GgufFile::open(kShared + g);
    const auto md = edgeq::Vocab::from_gguf(in).to_metadata();
    const auto want = tokenizer_keys(in);
    ASSERT_EQ(md.size(), want.size());
    for (size_t i = 0; i < md.size(); ++i) {
      EXPECT_EQ(md[i].first, want[i].first) << "key #" << i;
      if (md[i].first == want[i].first) {
        EXPECT_TRUE(same_value(md[i].second, *want[i].second)) << md[i].first;
      }
    }
  }
}

TEST(Vocab, RoundTripLlamaCppVocabs) {
  for (const char* name : {"llama-spm", "gpt-2", "phi-3", "deepseek-llm"}) round_trip(kShared + "/vocab/ggml-vocab-" + name + ".gguf", true);
  // falcon's file comes from an old converter that wrote eos_token_id before bos_token_id; gguf-py writes
  // bos first. Keys, types and values must still be identical.
  round_trip(kShared + "/vocab/ggml-vocab-falcon.gguf", false);
}

TEST(Vocab, ReadsGoldenValues) {
  auto f = edgeq::GgufFile::open(kShared + "/golden/tl-8m-F16.gguf");
  edgeq::Vocab v = edgeq::Vocab::from_gguf(f);
  EXPECT_EQ(v.model, "llama");
  EXPECT_EQ(v.pre, "default");
  ASSERT_EQ(v.size(), 4096u);
  EXPECT_EQ(v.tokens[0], "<unk>");
  EXPECT_EQ(v.tokens[3], "<0x00>");
  EXPECT_EQ(v.token_types[0], static_cast<int32_t>(edgeq::TokenType::UNKNOWN));
  EXPECT_EQ(v.token_types[1], static_cast<int32_t>(edgeq::TokenType::CONTROL));
  EXPECT_EQ(v.token_types[3], static_cast<int32_t>(edgeq::TokenType::BYTE));
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.unk_id, 0);
  EXPECT_EQ(v.pad_id, -1);
  EXPECT_EQ(v.add_bos, std::optional<bool>(true));
  EXPECT_EQ(v.add_eos, std::optional<bool>(false));
  EXPECT_FALSE(v.add_space_prefix.has_value());

  auto g = edgeq::GgufFile::open(kShared + "/vocab/ggml-vocab-gpt-2.gguf");
  edgeq::Vocab b = edgeq::Vocab::from_gguf(g);
  EXPECT_EQ(b.model, "gpt2");
  EXPECT_EQ(b.pre, "gpt-2");
  EXPECT_EQ(b.size(), 50257u);
  EXPECT_EQ(b.merges.size(), 50000u);
  EXPECT_EQ(b.merges[0], "\xC4\xA0 t");  // "Ġ t"
  EXPECT_TRUE(b.scores.empty());
  EXPECT_EQ(b.bos_id, 50256);
}

// Writes a vocab-only GGUF whose tokenizer metadata is `v` plus `extra` (raw keys, possibly hostile).
std::string write_vocab_file(const std::string& name, const std::vector<std::pair<std::string, edgeq::GgufValue>>& kv) {
  const std::string p = tmp_path(name);
  edgeq::GgufWriter w(p);
  for (const auto& [k, v] : kv) w.set(k, v);
  w.finish();
  return p;
}

std::vector<std::pair<std::string, edgeq::GgufValue>> small_spm() {
  return {
      {"tokenizer.ggml.model", edgeq::GgufValue("llama")},
      {"tokenizer.ggml.tokens", edgeq::GgufValue::string_array({"<unk>", "<s>", "</s>", "a", "b"})},
      {"tokenizer.ggml.scores", edgeq::GgufValue::float_array({0, 0, 0, -1, -2})},
      {"tokenizer.ggml.token_type", edgeq::GgufValue::int32_array({2, 3, 3, 1, 1})},
      {"tokenizer.ggml.bos_token_id", edgeq::GgufValue(uint32_t{1})},
  };
}

void expect_error(const std::vector<std::pair<std::string, edgeq::GgufValue>>& kv, const std::string& needle) {
  const std::string p = write_vocab_file("bad", kv);
  auto f = edgeq::GgufFile::open(p);
  try {
    edgeq::Vocab::from_gguf(f);
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const edgeq::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_NE(msg.find(p), std::string::npos) << "error must name the file: " << msg;
  }
  std::remove(p.c_str());
}

TEST(Vocab, ValidSmallVocabLoads) {
  const std::string p = write_vocab_file("ok", small_spm());
  auto f = edgeq::GgufFile::open(p);
  edgeq::Vocab v = edgeq::Vocab::from_gguf(f);
  EXPECT_EQ(v.size(), 5u);
  EXPECT_EQ(v.bos_id, 1);
  std::remove(p.c_str());
}

TEST(Vocab, HostileMetadataIsRejected) {
  auto kv = small_spm();
  kv[4].second = edgeq::GgufValue(uint32_t{5});  // bos id == n_tokens
  expect_error(kv, "tokenizer.ggml.bos_token_id");

  kv = small_spm();
  kv.emplace_back("tokenizer.ggml.eos_token_id", edgeq::GgufValue(int32_t{-3}));
  expect_error(kv, "tokenizer.ggml.eos_token_id");

  kv = small_spm();
  kv.emplace_back("tokenizer.ggml.padding_token_id", edgeq::GgufValue(uint64_t{1} << 40));
  expect_error(kv, "tokenizer.ggml.padding_token_id");

  kv = small_spm();
  kv[1].second = edgeq::GgufValue::string_array({"<unk>", "", "</s>", "a", "b"});
  expect_error(kv, "token 1 is empty");

  kv = small_spm();
  kv[2].second = edgeq::GgufValue::float_array({0, 0, 0});
  expect_error(kv, "tokenizer.ggml.scores");

  kv = small_spm();
  kv[3].second = edgeq::GgufValue::int32_array({2, 3, 3, 1, 99});
  expect_error(kv, "tokenizer.ggml.token_type");

  kv = small_spm();
  kv[1].second = edgeq::GgufValue::int32_array({1, 2, 3});
  expect_error(kv, "tokenizer.ggml.tokens");

  kv = small_spm();
  kv[0].second = edgeq::GgufValue(uint32_t{7});
  expect_error(kv, "tokenizer.ggml.model");

  kv = small_spm();
  kv[0].second = edgeq::GgufValue("gpt2");  // BPE without merges
  expect_error(kv, "tokenizer.ggml.merges");

  kv = small_spm();
  kv.erase(kv.begin() + 1);
  expect_error(kv, "tokenizer.ggml.tokens");
}

TEST(Vocab, ToGgufRejectsInconsistentVocab) {
  edgeq::Vocab v;
  v.model = "llama";
  v.tokens = {"a", "b"};
  v.scores = {0.0f};
  edgeq::GgufWriter w(tmp_path("unused"));
  EXPECT_THROW(v.to_gguf(w), edgeq::Error);
  v.scores.clear();
  v.bos_id = 2;
  EXPECT_THROW(v.to_gguf(w), edgeq::Error);
}

}  // namespace
