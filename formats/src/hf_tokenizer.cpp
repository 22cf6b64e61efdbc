// Hugging Face tokenizer files -> edgeq::Vocab (see hf_tokenizer.h for the rules followed).
#include "edgeq/formats/hf_tokenizer.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "edgeq/base/error.h"
#include "edgeq/formats/mapped_file.h"

namespace edgeq {

namespace {

constexpr uint64_t kMaxVocab = 1ull << 24;  // 16.7M tokens: far above any real vocabulary

// ---- protobuf wire format ----------------------------------------------------------------------------
struct PbReader {
  const uint8_t* p;
  const uint8_t* end;
  const std::string* name;
  const uint8_t* base;

  bool done() const { return p >= end; }
  uint64_t offset() const { return static_cast<uint64_t>(p - base); }

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (p >= end) fail("{}: truncated protobuf varint at byte {}", *name, offset());
      uint8_t b = *p++;
      if (shift == 63 && (b & 0x7e)) fail("{}: protobuf varint overflows 64 bits at byte {}", *name, offset());
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("{}: protobuf varint longer than 10 bytes at byte {}", *name, offset());
  }
  uint32_t fixed32() {
    if (end - p < 4) fail("{}: truncated protobuf fixed32 at byte {}", *name, offset());
    uint32_t v;
    std::memcpy(&v, p, 4);
    p += 4;
    return v;
  }
  PbReader sub() {
    uint64_t n = varint();
    if (n > static_cast<uint64_t>(end - p))
      fail("{}: protobuf length {} at byte {} runs past the end of its message", *name, n, offset());
    PbReader r{p, p + n, name, base};
    p += n;
    return r;
  }
  void skip(uint32_t wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1:
        if (end - p < 8) fail("{}: truncated protobuf fixed64 at byte {}", *name, offset());
        p += 8;
        break;
      case 2: sub(); break;
      case 5: fixed32(); break;
      default: fail("{}: unsupported protobuf wire type {} at byte {}", *name, wire, offset());
    }
  }
};

void expect_wire(PbReader& r, uint32_t wire, uint32_t want, const char* what) {
  if (wire != want) fail("{}: protobuf field {} has wire type {}, expected {} at byte {}", *r.name, what, wire, want, r.offset());
}

// ---- small helpers ------------------------------------------------------------------------------------
nlohmann::json read_json(const std::string& path) {
  MappedFile m(path);
  if (m.size() > (1ull << 30)) fail("{}: JSON file too large ({} bytes)", path, m.size());
  try {
    return nlohmann::json::parse(m.data(), m.data() + m.size());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
}

// Whether an optional tokenizer file is present; a present one that is not a regular file (a FIFO, a
// device) is an error, never silently skipped.
bool is_file(const std::filesystem::path& p) {
  std::error_code ec;
  const auto st = std::filesystem::status(p, ec);
  if (ec || st.type() == std::filesystem::file_type::not_found) return false;
  if (st.type() != std::filesystem::file_type::regular)
    fail("{}: is not a regular file; refusing to read it", p.string());
  return true;
}

bool does_token_look_special(const std::string& t) {
  auto starts = [&](const char* s) { return t.rfind(s, 0) == 0; };
  auto ends = [&](const char* s) {
    size_t n = std::strlen(s);
    return t.size() >= n && t.compare(t.size() - n, n, s) == 0;
  };
  if (t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]") return true;
  if (starts("<|") && ends("|>")) return true;
  if (starts("<\xef\xbd\x9c") && ends("\xef\xbd\x9c>")) return true;  // <｜ ... ｜> (deepseek)
  if (starts("<unused") && ends(">")) return true;
  return false;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
  return s;
}

const char* kSpmSpace = "\xe2\x96\x81";  // U+2581
}  // namespace

// ---- SentencePiece -----------------------------------------------------------------------------------
Vocab parse_sentencepiece_model(const uint8_t* data, uint64_t size, const std::string& name, std::optional<uint64_t> n_vocab,
                                SentencePieceInfo* info_out) {
  SentencePieceInfo info;
  Vocab v;
  v.model = "llama";
  v.pre = "default";
  PbReader r{data, data + size, &name, data};
  bool have_trainer_spec = false;
  uint64_t trained_vocab = 0;  // trainer_spec.vocab_size: how many pieces the model was trained with
  while (!r.done()) {
    uint64_t tag = r.varint();
    uint32_t field = static_cast<uint32_t>(tag >> 3), wire = static_cast<uint32_t>(tag & 7);
    if (field == 0) fail("{}: protobuf field number 0 at byte {}", name, r.offset());
    if (field == 1) {  // SentencePiece
      expect_wire(r, wire, 2, "pieces");
      PbReader pr = r.sub();
      std::string piece;
      bool have_piece = false;
      float score = 0.0f;
      uint64_t type = 1;
      while (!pr.done()) {
        uint64_t t = pr.varint();
        uint32_t f = static_cast<uint32_t>(t >> 3), w = static_cast<uint32_t>(t & 7);
        if (f == 1) {
          expect_wire(pr, w, 2, "piece");
          PbReader s = pr.sub();
          piece.assign(reinterpret_cast<const char*>(s.p), static_cast<size_t>(s.end - s.p));
          have_piece = true;
        } else if (f == 2) {
          expect_wire(pr, w, 5, "score");
          uint32_t b = pr.fixed32();
          std::memcpy(&score, &b, 4);
        } else if (f == 3) {
          expect_wire(pr, w, 0, "type");
          type = pr.varint();
        } else {
          pr.skip(w);
        }
      }
      size_t id = v.tokens.size();
      if (!have_piece || piece.empty()) fail("{}: piece {} is empty", name, id);
      if (type < 1 || type > 6) fail("{}: piece {} ('{}') has unknown type {}", name, id, piece, type);
      if (id >= kMaxVocab) fail("{}: more than {} pieces", name, kMaxVocab);
      TokenType tt = TokenType::NORMAL;  // SentencePieceProcessor's predicates: USER_DEFINED counts as NORMAL
      if (type == 2) tt = TokenType::UNKNOWN;
      else if (type == 3) tt = TokenType::CONTROL;
      else if (type == 5) tt = TokenType::UNUSED;
      else if (type == 6) tt = TokenType::BYTE;
      v.tokens.push_back(std::move(piece));
      v.scores.push_back(score);
      v.token_types.push_back(static_cast<int32_t>(tt));
    } else if (field == 2) {  // TrainerSpec
      expect_wire(r, wire, 2, "trainer_spec");
      have_trainer_spec = true;
      PbReader tr = r.sub();
      while (!tr.done()) {
        uint64_t t = tr.varint();
        uint32_t f = static_cast<uint32_t>(t >> 3), w = static_cast<uint32_t>(t & 7);
        if (w == 0 && (f == 3 || f == 4 || f == 35 || f == 40 || f == 41 || f == 42 || f == 43)) {
          int64_t x = static_cast<int64_t>(tr.varint());
          if (f == 3) info.model_type = static_cast<int32_t>(x);
          else if (f == 4) trained_vocab = static_cast<uint64_t>(x);
          else if (f == 35) info.byte_fallback = x != 0;
          else if (f == 40) info.unk_id = static_cast<int32_t>(x);
          else if (f == 41) info.bos_id = static_cast<int32_t>(x);
          else if (f == 42) info.eos_id = static_cast<int32_t>(x);
          else info.pad_id = static_cast<int32_t>(x);
        } else {
          tr.skip(w);
        }
      }
    } else if (field == 3) {  // NormalizerSpec
      expect_wire(r, wire, 2, "normalizer_spec");
      PbReader nr = r.sub();
      while (!nr.done()) {
        uint64_t t = nr.varint();
        uint32_t f = static_cast<uint32_t>(t >> 3), w = static_cast<uint32_t>(t & 7);
        if (w == 0 && (f == 3 || f == 4)) {
          bool b = nr.varint() != 0;
          if (f == 3) info.add_dummy_prefix = b;
          else info.remove_extra_whitespaces = b;
        } else {
          nr.skip(w);
        }
      }
    } else {
      r.skip(wire);
    }
  }
  if (v.tokens.empty()) fail("{}: no pieces: not a SentencePiece model", name);
  if (trained_vocab > v.tokens.size())
    fail("{}: holds {} pieces but its trainer_spec declares {}: the file is truncated or corrupt", name,
         v.tokens.size(), trained_vocab);
  if (n_vocab) {
    if (*n_vocab > kMaxVocab) fail("{}: vocab_size {} is larger than the limit {}", name, *n_vocab, kMaxVocab);
    if (*n_vocab < v.tokens.size())
      fail("{}: the model has {} pieces but config.json's vocab_size is {}", name, v.tokens.size(), *n_vocab);
    // Padding up to the model's vocabulary ([PAD<i>], as llama.cpp's converter) only when the file is whole:
    // its trainer_spec must be present and agree with its pieces. A file cut between two records parses as
    // fewer pieces and would otherwise turn half the vocabulary into [PAD].
    if (*n_vocab > v.tokens.size() && (!have_trainer_spec || trained_vocab != v.tokens.size()))
      fail("{}: has only {} pieces for a model vocabulary of {} and {}: the file is truncated or not this model's "
           "tokenizer", name, v.tokens.size(), *n_vocab,
           have_trainer_spec ? fmt::format("its trainer_spec declares {}", trained_vocab) : std::string("no trainer_spec"));
    for (uint64_t i = v.tokens.size(); i < *n_vocab; ++i) {
      v.tokens.push_back(fmt::format("[PAD{}]", i));
      v.scores.push_back(-10000.0f);
      v.token_types.push_back(static_cast<int32_t>(TokenType::UNUSED));
    }
  }
  if (info_out) *info_out = info;
  return v;
}

Vocab load_sentencepiece_model(const std::string& path, std::optional<uint64_t> n_vocab, SentencePieceInfo* info) {
  MappedFile m(path);
  return parse_sentencepiece_model(m.data(), m.size(), path, n_vocab, info);
}

// ---- tokenizer.json ----------------------------------------------------------------------------------
namespace {

// Known pre-tokenizer split regexes (tokenizer.json text) and llama.cpp's name for them.
struct KnownRegex {
  const char* regex;
  const char* pre;
};
const KnownRegex kKnownRegexes[] = {
    // Llama 3 / 3.1 / 3.2
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "llama-bpe"},
    // Qwen2 / Qwen2.5 / Qwen3
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
     "qwen2"},
    // GPT-2's regex written out as a Split
    {"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", "gpt-2"},
};

void flatten_pre(const nlohmann::json& j, std::vector<const nlohmann::json*>& out, int depth) {
  if (depth > 8) fail("pre_tokenizer nested too deeply");
  if (!j.is_object()) return;
  auto it = j.find("type");
  if (it != j.end() && it->is_string() && *it == "Sequence") {
    auto p = j.find("pretokenizers");
    if (p != j.end() && p->is_array())
      for (auto& e : *p) flatten_pre(e, out, depth + 1);
    return;
  }
  out.push_back(&j);
}

std::string jtype(const nlohmann::json& j) {
  auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}
bool jbool(const nlohmann::json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : dflt;
}

// Returns the recognised name, or nullopt and a description of what was seen.
std::optional<std::string> identify_pre(const nlohmann::json& pre, std::string* seen) {
  std::vector<const nlohmann::json*> parts;
  flatten_pre(pre, parts, 0);
  std::string desc;
  for (auto* p : parts) {
    if (!desc.empty()) desc += ", ";
    std::string t = jtype(*p);
    desc += t.empty() ? "?" : t;
    if (t == "Split") {
      auto pat = p->find("pattern");
      if (pat != p->end() && pat->is_object()) {
        if (pat->contains("Regex") && (*pat)["Regex"].is_string()) desc += " regex '" + (*pat)["Regex"].get<std::string>() + "'";
        else if (pat->contains("String") && (*pat)["String"].is_string()) desc += " string '" + (*pat)["String"].get<std::string>() + "'";
      }
    }
  }
  if (seen) *seen = desc.empty() ? "none" : desc;
  if (parts.size() == 1 && jtype(*parts[0]) == "ByteLevel" && jbool(*parts[0], "use_regex", true) &&
      !jbool(*parts[0], "add_prefix_space", false))
    return "gpt-2";
  if (parts.size() == 2 && jtype(*parts[0]) == "Digits" && jbool(*parts[0], "individual_digits", false) &&
      jtype(*parts[1]) == "ByteLevel" && jbool(*parts[1], "use_regex", true))
    return "smollm";
  if (parts.size() == 2 && jtype(*parts[0]) == "Split" && jtype(*parts[1]) == "ByteLevel" &&
      !jbool(*parts[1], "use_regex", true)) {
    auto pat = parts[0]->find("pattern");
    if (pat != parts[0]->end() && pat->is_object() && pat->contains("Regex") && (*pat)["Regex"].is_string()) {
      std::string rx = (*pat)["Regex"].get<std::string>();
      for (auto& k : kKnownRegexes)
        if (rx == k.regex) return std::string(k.pre);
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> identify_bpe_pre(const std::string& pre_tokenizer_json) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(pre_tokenizer_json);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
  return identify_pre(j, nullptr);
}

namespace {
Vocab tokenizer_json_to_vocab(const nlohmann::json& j, const std::string& path, std::optional<uint64_t> n_vocab,
                              const std::string& force_pre) {
  if (!j.is_object()) fail("{}: not a tokenizer.json (top level is not an object)", path);
  auto mit = j.find("model");
  if (mit == j.end() || !mit->is_object()) fail("{}: no 'model' object", path);
  const auto& model = *mit;
  std::string mtype = jtype(model);
  if (mtype.empty() && model.contains("merges")) mtype = "BPE";
  if (mtype != "BPE") fail("{}: tokenizer model type '{}' is not supported (only byte-level BPE)", path, mtype);
  auto vit = model.find("vocab");
  if (vit == model.end() || !vit->is_object()) fail("{}: model.vocab is not an object", path);

  std::map<uint64_t, std::string> by_id;
  for (auto& [tok, idj] : vit->items()) {
    if (!idj.is_number_integer() && !idj.is_number_unsigned()) fail("{}: vocab entry '{}' has a non-integer id", path, tok);
    int64_t id = idj.get<int64_t>();
    if (id < 0 || static_cast<uint64_t>(id) >= kMaxVocab) fail("{}: vocab entry '{}' has id {} out of range", path, tok, id);
    auto [it, inserted] = by_id.emplace(static_cast<uint64_t>(id), tok);
    if (!inserted) fail("{}: id {} is used by both '{}' and '{}'", path, id, it->second, tok);
  }
  struct Added {
    std::string content;
    bool special;
  };
  std::map<uint64_t, Added> added;
  auto ait = j.find("added_tokens");
  if (ait != j.end() && !ait->is_null()) {
    if (!ait->is_array()) fail("{}: added_tokens is not an array", path);
    for (auto& a : *ait) {
      if (!a.is_object() || !a.contains("id") || !a.contains("content") || !a["content"].is_string() ||
          !(a["id"].is_number_integer() || a["id"].is_number_unsigned()))
        fail("{}: malformed added_tokens entry {}", path, a.dump().substr(0, 120));
      int64_t id = a["id"].get<int64_t>();
      if (id < 0 || static_cast<uint64_t>(id) >= kMaxVocab) fail("{}: added token '{}' has id {} out of range", path, a["content"].get<std::string>(), id);
      added[static_cast<uint64_t>(id)] = Added{a["content"].get<std::string>(), jbool(a, "special", false)};
      by_id[static_cast<uint64_t>(id)] = a["content"].get<std::string>();
    }
  }
  if (by_id.empty()) fail("{}: empty vocabulary", path);
  uint64_t size = by_id.rbegin()->first + 1;
  // Holes become "[PAD<i>]" tokens; a hostile file must not make us allocate millions of them.
  if (!n_vocab && size > 2 * by_id.size() + 1024)
    fail("{}: token ids are sparse (largest id {} for {} tokens)", path, size - 1, by_id.size());
  if (n_vocab) {
    if (*n_vocab > kMaxVocab) fail("{}: vocab_size {} is larger than the limit {}", path, *n_vocab, kMaxVocab);
    if (size > *n_vocab) fail("{}: token id {} is not below config.json's vocab_size {}", path, size - 1, *n_vocab);
    size = *n_vocab;
  }

  Vocab v;
  v.model = "gpt2";
  v.tokens.resize(size);
  v.token_types.resize(size);
  for (uint64_t i = 0; i < size; ++i) {
    auto it = by_id.find(i);
    if (it == by_id.end()) {
      v.tokens[i] = fmt::format("[PAD{}]", i);
      v.token_types[i] = static_cast<int32_t>(TokenType::UNUSED);
      continue;
    }
    auto ad = added.find(i);
    if (ad != added.end()) {
      std::string tok = ad->second.content;
      if (ad->second.special || does_token_look_special(tok)) {
        v.token_types[i] = static_cast<int32_t>(TokenType::CONTROL);
      } else {
        tok = replace_all(tok, kSpmSpace, " ");  // pre-normalize user-defined spaces
        v.token_types[i] = static_cast<int32_t>(TokenType::USER_DEFINED);
      }
      v.tokens[i] = std::move(tok);
    } else {
      v.tokens[i] = it->second;
      v.token_types[i] = static_cast<int32_t>(TokenType::NORMAL);
    }
  }

  auto mg = model.find("merges");
  if (mg != model.end() && !mg->is_null()) {
    if (!mg->is_array()) fail("{}: model.merges is not an array", path);
    v.merges.reserve(mg->size());
    size_t k = 0;
    for (auto& m : *mg) {
      if (m.is_string()) {
        v.merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        auto enc = [](const std::string& s) { return replace_all(s, " ", "\xc4\xa0"); };  // ' ' -> U+0120
        v.merges.push_back(enc(m[0].get<std::string>()) + " " + enc(m[1].get<std::string>()));
      } else {
        fail("{}: merge {} is neither \"a b\" nor [\"a\", \"b\"]", path, k);
      }
      ++k;
    }
  }

  if (!force_pre.empty()) {
    v.pre = force_pre;
  } else {
    std::string seen;
    auto pt = j.find("pre_tokenizer");
    std::optional<std::string> pre = pt != j.end() ? identify_pre(*pt, &seen) : std::nullopt;
    if (!pre) fail("{}: unrecognised BPE pre-tokenizer ({}); pass --pre NAME to force tokenizer.ggml.pre", path, seen.empty() ? "none" : seen);
    v.pre = *pre;
  }
  return v;
}

using AddedList = std::vector<std::pair<std::string, int64_t>>;

AddedList added_tokens_of(const nlohmann::json& j) {
  AddedList added;
  if (j.is_object() && j.contains("added_tokens") && j["added_tokens"].is_array())
    for (auto& a : j["added_tokens"])
      if (a.is_object() && a.contains("content") && a["content"].is_string() && a.contains("id") && a["id"].is_number_integer())
        added.emplace_back(a["content"].get<std::string>(), a["id"].get<int64_t>());
  return added;
}

void apply_special_vocab_impl(Vocab& v, const std::string& dir, const AddedList* json_added, bool b4748 = false);
}  // namespace

Vocab load_tokenizer_json(const std::string& path, std::optional<uint64_t> n_vocab, const std::string& force_pre) {
  return tokenizer_json_to_vocab(read_json(path), path, n_vocab, force_pre);
}

// ---- SpecialVocab ------------------------------------------------------------------------------------
void apply_special_vocab(Vocab& v, const std::string& dir) { apply_special_vocab_impl(v, dir, nullptr); }

namespace {
void apply_special_vocab_impl(Vocab& v, const std::string& dir, const AddedList* json_added, bool b4748) {
  namespace fs = std::filesystem;
  fs::path d(dir);
  // content -> id candidates, in gguf-py's lookup order (first match wins)
  AddedList added;
  bool have_tokenizer_json = false;
  if (json_added) {
    have_tokenizer_json = true;
    added = *json_added;
  } else if (is_file(d / "tokenizer.json")) {
    have_tokenizer_json = true;
    added = added_tokens_of(read_json((d / "tokenizer.json").string()));
  }
  nlohmann::json tc, stm;
  if (is_file(d / "tokenizer_config.json")) {
    tc = read_json((d / "tokenizer_config.json").string());
    if (!tc.is_object()) fail("{}: not a JSON object", (d / "tokenizer_config.json").string());
  }
  if (!b4748 && is_file(d / "special_tokens_map.json")) {
    stm = read_json((d / "special_tokens_map.json").string());
    if (!stm.is_object()) stm = nlohmann::json();
  }
  if (!b4748 && !have_tokenizer_json && tc.is_object() && tc.contains("added_tokens_decoder") && tc["added_tokens_decoder"].is_object()) {
    for (auto& [k, e] : tc["added_tokens_decoder"].items()) {
      if (!e.is_object() || !e.contains("content") || !e["content"].is_string()) continue;
      char* endp = nullptr;
      long long id = std::strtoll(k.c_str(), &endp, 10);
      if (k.empty() || *endp != '\0' || id < 0) fail("{}: added_tokens_decoder key '{}' is not a token id", (d / "tokenizer_config.json").string(), k);
      added.emplace_back(e["content"].get<std::string>(), static_cast<int64_t>(id));
    }
  }
  const int64_t n = static_cast<int64_t>(v.tokens.size());
  auto content_of = [](const nlohmann::json& obj, const std::string& key) -> std::optional<std::string> {
    if (!obj.is_object()) return std::nullopt;
    auto it = obj.find(key);
    if (it == obj.end()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
    return std::nullopt;
  };
  struct Slot {
    const char* typ;
    int64_t* id;
  };
  Slot slots[] = {{"bos", &v.bos_id}, {"eos", &v.eos_id}, {"unk", &v.unk_id}, {"sep", &v.sep_id}, {"pad", &v.pad_id}};
  auto set_id = [&](int64_t* slot, int64_t id, const char* typ) {
    if (id < 0) fail("{}: invalid id {} for special token type {}", dir, id, typ);
    if (id < n && *slot < 0) *slot = id;
  };
  for (auto& s : slots) {
    std::string key = std::string(s.typ) + "_token";
    if (tc.is_object()) {
      auto add = tc.find("add_" + key);
      if (add != tc.end() && add->is_boolean()) {
        if (std::string(s.typ) == "bos") v.add_bos = add->get<bool>();
        if (std::string(s.typ) == "eos") v.add_eos = add->get<bool>();
      }
    }
    std::optional<std::string> content = content_of(tc, key);
    if (!content && !(tc.is_object() && tc.contains(key))) content = content_of(stm, key);
    if (!content) continue;
    std::optional<int64_t> id;
    for (auto& [c, i] : added)
      if (c == *content) {
        id = i;
        break;
      }
    if (!id && !have_tokenizer_json && !b4748)  // no added-token table: the SentencePiece pieces themselves
      for (int64_t i = 0; i < n; ++i)
        if (v.tokens[static_cast<size_t>(i)] == *content) {
          id = i;
          break;
        }
    if (id) set_id(s.id, *id, s.typ);
  }
  if (is_file(d / "config.json")) {
    auto cfg = read_json((d / "config.json").string());
    if (cfg.is_object())
      for (auto& s : slots) {
        auto it = cfg.find(std::string(s.typ) + "_token_id");
        if (it != cfg.end() && it->is_number_integer()) set_id(s.id, it->get<int64_t>(), s.typ);
      }
  }
  if (b4748 && tc.is_object()) {
    auto sp = tc.find("add_prefix_space");
    if (sp != tc.end() && sp->is_boolean()) v.add_space_prefix = sp->get<bool>();
  }
  if (tc.is_object()) {
    auto ct = tc.find("chat_template");
    if (ct != tc.end()) {
      if (ct->is_string()) {
        v.chat_template = ct->get<std::string>();
      } else if (ct->is_array()) {
        for (auto& e : *ct)
          if (e.is_object() && e.contains("name") && e["name"] == "default" && e.contains("template") && e["template"].is_string())
            v.chat_template = e["template"].get<std::string>();
      }
    }
  }
}

}  // namespace

Vocab load_hf_vocab_b4748_spm(const std::string& dir, std::optional<uint64_t> n_vocab, bool phi3_added_tokens) {
  namespace fs = std::filesystem;
  const fs::path d(dir);
  if (!is_file(d / "tokenizer.model")) fail("{}: tokenizer.model not found", (d / "tokenizer.model").string());
  Vocab v = load_sentencepiece_model((d / "tokenizer.model").string(), n_vocab);
  const auto n = static_cast<int64_t>(v.tokens.size());
  auto set = [&](int64_t id, std::string tok, TokenType tt) {
    if (id < 0 || id >= n) return;  // out of range: ignored, as llama.cpp does
    auto i = static_cast<size_t>(id);
    v.tokens[i] = std::move(tok);
    v.scores[i] = -1000.0f;
    v.token_types[i] = static_cast<int32_t>(tt);
  };
  if (is_file(d / "added_tokens.json")) {
    const std::string path = (d / "added_tokens.json").string();
    auto aj = read_json(path);
    if (!aj.is_object()) fail("{}: not a JSON object", path);
    for (auto& [tok, idj] : aj.items()) {
      if (!idj.is_number_integer()) fail("{}: token '{}' has a non-integer id", path, tok);
      set(idj.get<int64_t>(), tok, TokenType::USER_DEFINED);
    }
  }
  // One added-token entry (tokenizer_config.json's added_tokens_decoder or tokenizer.json's added_tokens).
  auto added = [&](int64_t id, const nlohmann::json& e) {
    if (!e.is_object() || !e.contains("content") || !e["content"].is_string()) return;
    std::string tok = e["content"].get<std::string>();
    const bool special = jbool(e, "special", false);
    if (phi3_added_tokens) return set(id, tok, special ? TokenType::CONTROL : TokenType::USER_DEFINED);
    if (special || does_token_look_special(tok)) return set(id, tok, TokenType::CONTROL);
    set(id, replace_all(tok, kSpmSpace, " "), TokenType::USER_DEFINED);
  };
  if (is_file(d / "tokenizer_config.json")) {
    const std::string path = (d / "tokenizer_config.json").string();
    auto tc = read_json(path);
    if (tc.is_object() && tc.contains("added_tokens_decoder") && tc["added_tokens_decoder"].is_object())
      for (auto& [k, e] : tc["added_tokens_decoder"].items()) {
        char* endp = nullptr;
        long long id = std::strtoll(k.c_str(), &endp, 10);
        if (k.empty() || *endp != '\0' || id < 0) fail("{}: added_tokens_decoder key '{}' is not a token id", path, k);
        added(static_cast<int64_t>(id), e);
      }
  }
  if (phi3_added_tokens && is_file(d / "tokenizer.json")) {
    const std::string path = (d / "tokenizer.json").string();
    auto tj = read_json(path);
    if (tj.is_object() && tj.contains("added_tokens") && tj["added_tokens"].is_array())
      for (auto& e : tj["added_tokens"]) {
        if (!e.is_object() || !e.contains("id") || !e["id"].is_number_integer())
          fail("{}: an added_tokens entry has no integer id", path);
        added(e["id"].get<int64_t>(), e);
      }
  }
  apply_special_vocab_impl(v, dir, nullptr, /*b4748=*/true);
  return v;
}

Vocab load_hf_vocab(const std::string& dir, bool prefer_sentencepiece, std::optional<uint64_t> n_vocab, const std::string& force_pre) {
  namespace fs = std::filesystem;
  fs::path d(dir);
  Vocab v;
  if (prefer_sentencepiece && is_file(d / "tokenizer.model")) {
    v = load_sentencepiece_model((d / "tokenizer.model").string(), n_vocab);
    // added_tokens.json: user-defined tokens (llama.cpp's _create_vocab_sentencepiece)
    if (is_file(d / "added_tokens.json")) {
      auto aj = read_json((d / "added_tokens.json").string());
      if (!aj.is_object()) fail("{}: not a JSON object", (d / "added_tokens.json").string());
      for (auto& [tok, idj] : aj.items()) {
        if (!idj.is_number_integer()) fail("{}: token '{}' has a non-integer id", (d / "added_tokens.json").string(), tok);
        int64_t id = idj.get<int64_t>();
        if (id < 0 || id >= static_cast<int64_t>(v.tokens.size())) continue;  // ignored as llama.cpp does
        v.tokens[static_cast<size_t>(id)] = tok;
        v.scores[static_cast<size_t>(id)] = -1000.0f;
        v.token_types[static_cast<size_t>(id)] = static_cast<int32_t>(TokenType::USER_DEFINED);
      }
    }
    // tokenizer_config.json added_tokens_decoder: tokens that replace a piece or fill an unused slot.
    // Entries repeating the SentencePiece piece at that id keep the piece's own type and score (as the
    // reference conversions in ../shared/golden have them).
    if (is_file(d / "tokenizer_config.json")) {
      auto tc = read_json((d / "tokenizer_config.json").string());
      if (tc.is_object() && tc.contains("added_tokens_decoder") && tc["added_tokens_decoder"].is_object()) {
        for (auto& [k, e] : tc["added_tokens_decoder"].items()) {
          if (!e.is_object() || !e.contains("content") || !e["content"].is_string()) continue;
          char* endp = nullptr;
          long long id = std::strtoll(k.c_str(), &endp, 10);
          if (k.empty() || *endp != '\0' || id < 0)
            fail("{}: added_tokens_decoder key '{}' is not a token id", (d / "tokenizer_config.json").string(), k);
          if (id >= static_cast<long long>(v.tokens.size())) continue;
          auto i = static_cast<size_t>(id);
          std::string tok = e["content"].get<std::string>();
          if (tok == v.tokens[i] && v.token_types[i] != static_cast<int32_t>(TokenType::UNUSED)) continue;
          if (jbool(e, "special", false) || does_token_look_special(tok)) {
            v.token_types[i] = static_cast<int32_t>(TokenType::CONTROL);
          } else {
            tok = replace_all(tok, kSpmSpace, " ");
            v.token_types[i] = static_cast<int32_t>(TokenType::USER_DEFINED);
          }
          v.scores[i] = -1000.0f;
          v.tokens[i] = std::move(tok);
        }
      }
    }
  } else if (is_file(d / "tokenizer.json")) {
    std::string path = (d / "tokenizer.json").string();
    nlohmann::json j = read_json(path);
    v = tokenizer_json_to_vocab(j, path, n_vocab, force_pre);
    AddedList added = added_tokens_of(j);
    j = nlohmann::json();
    apply_special_vocab_impl(v, dir, &added);
    return v;
  } else if (is_file(d / "tokenizer.model")) {
    fail("{}: this architecture takes a byte-level BPE tokenizer.json, found only tokenizer.model", dir);
  } else {
    fail("{}: no tokenizer.model or tokenizer.json", dir);
  }
  apply_special_vocab(v, dir);
  return v;
}

}  // namespace edgeq
