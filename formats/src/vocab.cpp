// Vocab <-> GGUF tokenizer.ggml.* metadata. Reading validates everything a tokenizer later indexes with
// (array lengths, ids, token types); writing follows gguf-py's order and value types (llama.cpp's converter).
#include "edgeq/formats/vocab.h"

#include <string_view>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"

namespace edgeq {

namespace {

// No real vocabulary comes near these; they keep a hostile file from making us build huge tables.
constexpr size_t kMaxTokens = size_t{1} << 24;
constexpr size_t kMaxMerges = size_t{1} << 24;
constexpr size_t kMaxTokenBytes = size_t{1} << 16;

const GgufArray* find_array(const GgufFile& f, std::string_view key, GgufType elem, bool required) {
  const GgufValue* v = f.find(key);
  if (!v) {
    if (required) fail("{}: key {}: missing", f.path(), key);
    return nullptr;
  }
  if (v->type() != GgufType::ARRAY) fail("{}: key {}: expected an array, found {}", f.path(), key, gguf_type_name(v->type()));
  const GgufArray& a = v->as_array();
  if (a.elem_type != elem && !a.items.empty())
    fail("{}: key {}: expected an array of {}, found an array of {}", f.path(), key, gguf_type_name(elem), gguf_type_name(a.elem_type));
  return &a;
}

std::optional<bool> get_bool(const GgufFile& f, std::string_view key) {
  const GgufValue* v = f.find(key);
  if (!v) return std::nullopt;
  if (v->type() != GgufType::BOOL) fail("{}: key {}: expected bool, found {}", f.path(), key, gguf_type_name(v->type()));
  return std::get<bool>(v->v);
}

int64_t get_id(const GgufFile& f, std::string_view key, size_t n_tokens) {
  const GgufValue* v = f.find(key);
  if (!v) return -1;
  if (!v->is_integer()) fail("{}: key {}: expected an integer token id, found {}", f.path(), key, gguf_type_name(v->type()));
  // UINT64 values beyond int64 are out of range anyway
  if (v->type() == GgufType::UINT64 && std::get<uint64_t>(v->v) >= n_tokens)
    fail("{}: key {}: token id {} out of range (vocabulary has {} tokens)", f.path(), key, std::get<uint64_t>(v->v), n_tokens);
  int64_t id = v->as_int();
  if (id < 0 || static_cast<uint64_t>(id) >= n_tokens)
    fail("{}: key {}: token id {} out of range (vocabulary has {} tokens)", f.path(), key, id, n_tokens);
  return id;
}

}  // namespace

Vocab Vocab::from_gguf(const GgufFile& f) {
  Vocab v;
  const GgufValue* model = f.find("tokenizer.ggml.model");
  if (!model) fail("{}: key tokenizer.ggml.model: missing (the file has no tokenizer)", f.path());
  if (model->type() != GgufType::STRING) fail("{}: key tokenizer.ggml.model: expected string, found {}", f.path(), gguf_type_name(model->type()));
  v.model = model->as_string();
  if (v.model.empty()) fail("{}: key tokenizer.ggml.model: empty", f.path());
  if (const GgufValue* pre = f.find("tokenizer.ggml.pre")) {
    if (pre->type() != GgufType::STRING) fail("{}: key tokenizer.ggml.pre: expected string, found {}", f.path(), gguf_type_name(pre->type()));
    v.pre = pre->as_string();
  }

  const GgufArray* tokens = find_array(f, "tokenizer.ggml.tokens", GgufType::STRING, true);
  const size_t n = tokens->items.size();
  if (n == 0) fail("{}: key tokenizer.ggml.tokens: empty token list", f.path());
  if (n > kMaxTokens) fail("{}: key tokenizer.ggml.tokens: {} tokens (at most {} supported)", f.path(), n, kMaxTokens);
  v.tokens.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& s = tokens->items[i].as_string();
    if (s.empty()) fail("{}: key tokenizer.ggml.tokens: token {} is empty", f.path(), i);
    if (s.size() > kMaxTokenBytes) fail("{}: key tokenizer.ggml.tokens: token {} is {} bytes long", f.path(), i, s.size());
    v.tokens.push_back(s);
  }

  if (const GgufArray* scores = find_array(f, "tokenizer.ggml.scores", GgufType::FLOAT32, false)) {
    if (scores->items.size() != n)
      fail("{}: key tokenizer.ggml.scores: {} scores for {} tokens", f.path(), scores->items.size(), n);
    v.scores.reserve(n);
    for (const auto& s : scores->items) v.scores.push_back(std::get<float>(s.v));
  }
  if (const GgufArray* types = find_array(f, "tokenizer.ggml.token_type", GgufType::INT32, false)) {
    if (types->items.size() != n)
      fail("{}: key tokenizer.ggml.token_type: {} token types for {} tokens", f.path(), types->items.size(), n);
    v.token_types.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      int32_t t = std::get<int32_t>(types->items[i].v);
      if (t < 0 || t > static_cast<int32_t>(TokenType::BYTE))
        fail("{}: key tokenizer.ggml.token_type: token {} has invalid type {}", f.path(), i, t);
      v.token_types.push_back(t);
    }
  }
  if (const GgufArray* merges = find_array(f, "tokenizer.ggml.merges", GgufType::STRING, false)) {
    if (merges->items.size() > kMaxMerges)
      fail("{}: key tokenizer.ggml.merges: {} merges (at most {} supported)", f.path(), merges->items.size(), kMaxMerges);
    v.merges.reserve(merges->items.size());
    for (const auto& m : merges->items) v.merges.push_back(m.as_string());
  }
  if (v.model == "gpt2" && v.merges.empty()) fail("{}: key tokenizer.ggml.merges: missing for a BPE (gpt2) vocabulary", f.path());

  v.bos_id = get_id(f, "tokenizer.ggml.bos_token_id", n);
  v.eos_id = get_id(f, "tokenizer.ggml.eos_token_id", n);
  v.unk_id = get_id(f, "tokenizer.ggml.unknown_token_id", n);
  v.pad_id = get_id(f, "tokenizer.ggml.padding_token_id", n);
  v.sep_id = get_id(f, "tokenizer.ggml.seperator_token_id", n);
  v.eot_id = get_id(f, "tokenizer.ggml.eot_token_id", n);
  v.eom_id = get_id(f, "tokenizer.ggml.eom_token_id", n);
  v.add_bos = get_bool(f, "tokenizer.ggml.add_bos_token");
  v.add_eos = get_bool(f, "tokenizer.ggml.add_eos_token");
  v.add_space_prefix = get_bool(f, "tokenizer.ggml.add_space_prefix");
  v.remove_extra_whitespaces = get_bool(f, "tokenizer.ggml.remove_extra_whitespaces");
  if (const GgufValue* ct = f.find("tokenizer.chat_template")) {
    if (ct->type() != GgufType::STRING) fail("{}: key tokenizer.chat_template: expected string, found {}", f.path(), gguf_type_name(ct->type()));
    v.chat_template = ct->as_string();
  }
  return v;
}

// gguf-py order: convert_hf_to_gguf's set_vocab writes model, pre, tokens, scores, token types (and for some
// SentencePiece models add_space_prefix / remove_extra_whitespaces), then SpecialVocab.add_to_gguf writes
// merges, the special token ids (bos, eos, unk, sep, pad), add_bos / add_eos and the chat template.
std::vector<std::pair<std::string, GgufValue>> Vocab::to_metadata() const {
  if (model.empty()) fail("vocab: tokenizer model is empty");
  if (tokens.empty()) fail("vocab: no tokens");
  const size_t n = tokens.size();
  if (!scores.empty() && scores.size() != n) fail("vocab: {} scores for {} tokens", scores.size(), n);
  if (!token_types.empty() && token_types.size() != n) fail("vocab: {} token types for {} tokens", token_types.size(), n);
  auto id_ok = [&](int64_t id, const char* what) {
    if (id >= static_cast<int64_t>(n)) fail("vocab: {} token id {} out of range ({} tokens)", what, id, n);
  };
  std::vector<std::pair<std::string, GgufValue>> kv;
  kv.emplace_back("tokenizer.ggml.model", GgufValue(model));
  if (!pre.empty()) kv.emplace_back("tokenizer.ggml.pre", GgufValue(pre));
  kv.emplace_back("tokenizer.ggml.tokens", GgufValue::string_array(tokens));
  if (!scores.empty()) kv.emplace_back("tokenizer.ggml.scores", GgufValue::float_array(scores));
  if (!token_types.empty()) kv.emplace_back("tokenizer.ggml.token_type", GgufValue::int32_array(token_types));
  if (add_space_prefix) kv.emplace_back("tokenizer.ggml.add_space_prefix", GgufValue(*add_space_prefix));
  if (remove_extra_whitespaces) kv.emplace_back("tokenizer.ggml.remove_extra_whitespaces", GgufValue(*remove_extra_whitespaces));
  if (!merges.empty()) kv.emplace_back("tokenizer.ggml.merges", GgufValue::string_array(merges));
  const std::pair<const char*, int64_t> ids[] = {
      {"tokenizer.ggml.bos_token_id", bos_id},     {"tokenizer.ggml.eos_token_id", eos_id},
      {"tokenizer.ggml.unknown_token_id", unk_id}, {"tokenizer.ggml.seperator_token_id", sep_id},
      {"tokenizer.ggml.padding_token_id", pad_id}, {"tokenizer.ggml.eot_token_id", eot_id},
      {"tokenizer.ggml.eom_token_id", eom_id},
  };
  for (const auto& [key, id] : ids) {
    if (id < 0) continue;
    id_ok(id, key);
    kv.emplace_back(key, GgufValue(static_cast<uint32_t>(id)));
  }
  if (add_bos) kv.emplace_back("tokenizer.ggml.add_bos_token", GgufValue(*add_bos));
  if (add_eos) kv.emplace_back("tokenizer.ggml.add_eos_token", GgufValue(*add_eos));
  if (chat_template) kv.emplace_back("tokenizer.chat_template", GgufValue(*chat_template));
  return kv;
}

void Vocab::to_gguf(GgufWriter& w) const {
  for (auto& [k, v] : to_metadata()) w.set(k, std::move(v));
}

}  // namespace edgeq
