// llama.cpp-compatible tokenizers (see tokenizer.h). The behaviour follows llama.cpp b4748's llama-vocab.cpp:
// vocabulary loading rules (defaults per model type, flags per pre-tokenizer, token attributes, special-token
// detection by text), special-token partitioning, the SentencePiece bigram merge and the byte-level BPE merge
// (priority orders included), token_to_piece and detokenize with its space clean-up.
#include "edgeq/runtime/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <functional>
#include <queue>
#include <set>
#include <string_view>
#include <unordered_map>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/vocab.h"

namespace edgeq {

namespace {

// llama_token_attr
enum Attr : uint32_t {
  A_UNDEFINED = 0, A_UNKNOWN = 1 << 0, A_UNUSED = 1 << 1, A_NORMAL = 1 << 2, A_CONTROL = 1 << 3,
  A_USER_DEFINED = 1 << 4, A_BYTE = 1 << 5, A_NORMALIZED = 1 << 6, A_LSTRIP = 1 << 7, A_RSTRIP = 1 << 8,
};

struct StrHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using StrMap = std::unordered_map<std::string, int32_t, StrHash, std::equal_to<>>;

// Pre-tokenizer regexes per tokenizer.ggml.pre (llama.cpp's llm_tokenizer_bpe constructor).
const char* const kGpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const char* const kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kPoro = " ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+";
const char* const kCjk = "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+";

struct PreSpec {
  std::vector<std::string> regexes;
  bool clean_spaces = true, ignore_merges = false, force_add_bos = false, no_bos = false;
};

PreSpec pre_spec(const std::string& pre) {
  PreSpec s;
  auto is = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (pre == n) return true;
    return false;
  };
  const std::vector<std::string> starcoder = {"\\p{N}", kGpt2};
  if (pre.empty() || pre == "default") {
    s.regexes = {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"};
  } else if (is({"llama3", "llama-v3", "llama-bpe", "falcon3"})) {
    s.regexes = {kLlama3};
    s.ignore_merges = s.force_add_bos = true;
  } else if (pre == "deepseek-llm") {
    s.regexes = {
        "[\r\n]",
        "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373"
        "\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F"
        "\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77"
        "\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D"
        "\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4"
        "\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139"
        "\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D"
        "\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A"
        "\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2"
        "\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+",
        "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+",
        "\\s+$",
        kCjk,
        "\\p{N}+",
    };
    s.clean_spaces = false;
  } else if (pre == "deepseek-coder") {
    s.regexes = {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", kCjk, "\\p{N}"};
    s.clean_spaces = false;
  } else if (pre == "deepseek-v3") {
    s.regexes = {
        "\\p{N}{1,3}",
        "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    };
    s.clean_spaces = false;
  } else if (pre == "falcon") {
    s.regexes = {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"};
  } else if (is({"mpt", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en", "jina-v2-es", "jina-v2-de",
                 "jina-v2-code", "roberta-bpe", "olmo", "jais"})) {
    s.regexes = {kGpt2};
  } else if (is({"starcoder", "refact", "codeshell", "exaone", "minerva-7b"})) {
    s.regexes = starcoder;
  } else if (is({"command-r", "smollm"})) {
    s.regexes = starcoder;
    s.clean_spaces = false;
  } else if (pre == "qwen2") {
    s.regexes = {kQwen2};
    s.clean_spaces = false;
  } else if (is({"stablelm2", "megrez"})) {
    s.regexes = {kQwen2};
  } else if (is({"dbrx", "smaug-bpe"})) {
    s.regexes = {kLlama3};
  } else if (pre == "poro-chat") {
    s.regexes = {kPoro};
    s.clean_spaces = false;
  } else if (is({"bloom", "gpt3-finnish"})) {
    s.regexes = {kPoro};
  } else if (pre == "chatglm-bpe") {
    s.regexes = {kLlama3};
    s.no_bos = true;
  } else if (pre == "viking") {
    s.regexes = {kPoro, "\\p{N}"};
    s.clean_spaces = false;
  } else if (pre == "tekken") {
    s.regexes = {
        "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"};
    s.clean_spaces = false;
    s.ignore_merges = s.force_add_bos = true;
  } else if (pre == "chameleon") {
    s.regexes = {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
                 "[\\p{P}!-/:-@\\[-`{-~]", kGpt2};
    s.force_add_bos = true;
    s.clean_spaces = false;
  } else {
    fail("unknown pre-tokenizer type '{}' (tokenizer.ggml.pre)", pre);
  }
  return s;
}

size_t utf8_len(char c) {
  static const size_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return lookup[static_cast<uint8_t>(c) >> 4];
}

bool c_isspace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (;;) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

const std::string kSpaceEsc = "\xE2\x96\x81";  // U+2581

}  // namespace

struct Tokenizer::Impl {
  Kind kind = Kind::SPM;
  std::string pre;
  std::vector<std::string> text;
  std::vector<float> score;
  std::vector<uint32_t> attr;
  StrMap to_id;
  StrMap bpe_rank;  // "left right" -> rank
  std::vector<std::string> regexes;
  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, pad = -1, nl = -1;
  bool add_space_prefix = false, add_bos = false, add_eos = false, ignore_merges = false, clean_spaces = false;
  std::vector<int32_t> special_cache;   // control / user-defined / unknown ids, longest text first
  std::vector<std::string> piece_cache; // token_to_piece(id, special = true)
  std::set<int32_t> eog;

  int32_t find(std::string_view s) const {
    auto it = to_id.find(s);
    return it == to_id.end() ? -1 : it->second;
  }

  int32_t byte_to_token(uint8_t ch) const {
    static const char* hex = "0123456789ABCDEF";
    const char buf[7] = {'<', '0', 'x', hex[ch >> 4], hex[ch & 15], '>', 0};
    int32_t id = find(std::string_view(buf, 6));
    if (id >= 0) return id;
    const char b2[1] = {static_cast<char>(ch)};
    id = find(std::string_view(b2, 1));
    if (id >= 0) return id;
    fail("tokenizer: vocabulary has no token for byte 0x{:02X} (no <0x{:02X}> byte token)", ch, ch);
  }

  struct Fragment {
    int32_t token;  // -1: raw text [off, off + len)
    size_t off, len;
  };

  // llama.cpp's tokenizer_st_partition
  std::vector<Fragment> partition(std::string_view raw, bool parse_special) const {
    std::vector<Fragment> frags;
    if (raw.empty()) return frags;
    frags.push_back({-1, 0, raw.size()});
    std::vector<Fragment> next;
    for (int32_t id : special_cache) {
      const uint32_t a = attr[id];
      if (!parse_special && (a & (A_CONTROL | A_UNKNOWN))) continue;
      const std::string& t = text[id];
      next.clear();
      bool any = false;
      for (const Fragment& f : frags) {
        if (f.token >= 0) {
          next.push_back(f);
          continue;
        }
        size_t off = f.off, len = f.len;
        for (;;) {
          size_t match = raw.substr(0, off + len).find(t, off);
          if (match == std::string_view::npos) break;
          any = true;
          if (match > off) {
            size_t left_len = match - off;
            if (a & A_LSTRIP)
              while (left_len > 0 && c_isspace(raw[off + left_len - 1])) left_len--;
            if (left_len > 0) next.push_back({-1, off, left_len});
          }
          next.push_back({id, 0, 0});
          size_t roff = match + t.size();
          size_t rlen = off + len - roff;
          if (a & A_RSTRIP)
            while (rlen > 0 && c_isspace(raw[roff])) {
              roff++;
              rlen--;
            }
          off = roff;
          len = rlen;
          if (len == 0) break;
        }
        if (len > 0) next.push_back({-1, off, len});
      }
      if (any) frags.swap(next);
    }
    return frags;
  }

  // llm_tokenizer_spm_session::tokenize
  void spm(const std::string& s, std::vector<int32_t>& out) const {
    struct Sym {
      int prev, next;
      size_t off, n;
    };
    struct Bigram {
      int left, right;
      float score;
      size_t size;
    };
    struct Cmp {  // top = highest score, then leftmost
      bool operator()(const Bigram& l, const Bigram& r) const { return l.score < r.score || (l.score == r.score && l.left > r.left); }
    };
    std::vector<Sym> syms;
    syms.reserve(s.size());
    for (size_t off = 0; off < s.size();) {
      size_t n = std::min(utf8_len(s[off]), s.size() - off);
      int idx = static_cast<int>(syms.size());
      syms.push_back({idx - 1, off + n == s.size() ? -1 : idx + 1, off, n});
      off += n;
    }
    std::priority_queue<Bigram, std::vector<Bigram>, Cmp> q;
    auto try_add = [&](int l, int r) {
      if (l == -1 || r == -1) return;
      std::string_view t(s.data() + syms[l].off, syms[l].n + syms[r].n);
      int32_t id = find(t);
      if (id < 0) return;
      q.push({l, r, score[id], t.size()});
    };
    for (int i = 1; i < static_cast<int>(syms.size()); ++i) try_add(i - 1, i);
    while (!q.empty()) {
      Bigram b = q.top();
      q.pop();
      Sym& L = syms[b.left];
      Sym& R = syms[b.right];
      if (L.n == 0 || R.n == 0 || L.n + R.n != b.size) continue;
      L.n += R.n;
      R.n = 0;
      L.next = R.next;
      if (R.next >= 0) syms[R.next].prev = b.left;
      try_add(L.prev, b.left);
      try_add(b.left, L.next);
    }
    if (syms.empty()) return;
    for (int i = 0; i != -1; i = syms[i].next) {
      std::string_view t(s.data() + syms[i].off, syms[i].n);
      int32_t id = find(t);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      for (char c : t) out.push_back(byte_to_token(static_cast<uint8_t>(c)));
    }
  }

  int bpe_rank_of(std::string& key, std::string_view l, std::string_view r) const {
    key.assign(l);
    key += ' ';
    key += r;
    auto it = bpe_rank.find(key);
    return it == bpe_rank.end() ? -1 : it->second;
  }

  // llm_tokenizer_bpe_session::tokenize
  void bpe(std::string_view fragment, std::vector<int32_t>& out) const {
    const std::vector<std::string> words = unicode::regex_split(fragment, regexes, true);
    struct Sym {
      int prev, next;
      size_t off, n;
    };
    struct Bigram {
      int left, right;
      int rank;
      std::string text;
    };
    struct Cmp {  // top = lowest rank, then leftmost
      bool operator()(const Bigram& l, const Bigram& r) const { return l.rank > r.rank || (l.rank == r.rank && l.left > r.left); }
    };
    std::string key;
    for (const std::string& w : words) {
      std::vector<Sym> syms;
      std::priority_queue<Bigram, std::vector<Bigram>, Cmp> q;
      if (ignore_merges && find(w) >= 0) {
        out.push_back(find(w));
        continue;
      }
      for (size_t off = 0; off < w.size();) {
        size_t n = std::min(utf8_len(w[off]), w.size() - off);
        int idx = static_cast<int>(syms.size());
        syms.push_back({idx - 1, off + n == w.size() ? -1 : idx + 1, off, n});
        off += n;
      }
      auto sv = [&](int i) { return std::string_view(w.data() + syms[i].off, syms[i].n); };
      auto add = [&](int l, int r) {
        if (l == -1 || r == -1) return;
        int rank = bpe_rank_of(key, sv(l), sv(r));
        if (rank < 0) return;
        std::string t(sv(l));
        t += sv(r);
        q.push({l, r, rank, std::move(t)});
      };
      for (int i = 1; i < static_cast<int>(syms.size()); ++i) add(i - 1, i);
      while (!q.empty()) {
        Bigram b = q.top();
        q.pop();
        Sym& L = syms[b.left];
        Sym& R = syms[b.right];
        if (L.n == 0 || R.n == 0) continue;
        if (L.n + R.n != b.text.size() || std::string_view(w.data() + L.off, L.n + R.n) != b.text) continue;
        L.n += R.n;
        R.n = 0;
        L.next = R.next;
        if (R.next >= 0) syms[R.next].prev = b.left;
        add(L.prev, b.left);
        add(b.left, L.next);
      }
      for (size_t i = 0; i < syms.size(); ++i) {
        if (syms[i].n == 0) continue;
        std::string_view t = sv(static_cast<int>(i));
        int32_t id = find(t);
        if (id >= 0) {
          out.push_back(id);
          continue;
        }
        for (char c : t) {  // llama.cpp: single bytes of the encoded text, when they happen to be tokens
          int32_t b = find(std::string_view(&c, 1));
          if (b >= 0) out.push_back(b);
        }
      }
    }
  }

  std::vector<int32_t> tokenize(std::string_view raw, bool add_special, bool parse_special) const {
    std::vector<int32_t> out;
    const std::vector<Fragment> frags = partition(raw, parse_special);
    if (kind == Kind::SPM) {
      bool prev_special = true;
      if (add_special && add_bos) {
        if (bos < 0) fail("tokenizer: the vocabulary adds BOS but has no BOS token");
        out.push_back(bos);
      }
      for (const Fragment& f : frags) {
        if (f.token >= 0) {
          out.push_back(f.token);
          prev_special = true;
          continue;
        }
        std::string t;
        if (add_space_prefix && prev_special) t = " ";
        t.append(raw.substr(f.off, f.len));
        replace_all(t, " ", kSpaceEsc);
        spm(t, out);
        prev_special = false;
      }
      if (add_special && add_eos) {
        if (eos < 0) fail("tokenizer: the vocabulary adds EOS but has no EOS token");
        out.push_back(eos);
      }
    } else {
      if (add_special && add_bos) {
        if (bos < 0) fail("tokenizer: the vocabulary adds BOS but has no BOS token");
        out.push_back(bos);
      }
      for (const Fragment& f : frags) {
        if (f.token >= 0) out.push_back(f.token);
        else bpe(raw.substr(f.off, f.len), out);
      }
      if (add_special && add_eos) {
        if (eos < 0) fail("tokenizer: the vocabulary adds EOS but has no EOS token");
        out.push_back(eos);
      }
    }
    return out;
  }

  // llama.cpp's token_to_piece without the cache (used to build it)
  std::string piece_uncached(int32_t id) const {
    const uint32_t a = attr[id];
    const std::string& t = text[id];
    if (a & (A_UNKNOWN | A_CONTROL | A_USER_DEFINED)) return t;
    if (kind == Kind::SPM) {
      if (a & A_NORMAL) {
        std::string r = t;
        replace_all(r, kSpaceEsc, " ");
        return r;
      }
      if (a & A_BYTE) {
        // "<0xXX>"
        if (t.size() < 5) return {};
        unsigned v = 0;
        for (size_t i = 3; i < 5; ++i) {
          char c = t[i];
          v <<= 4;
          if (c >= '0' && c <= '9') v |= c - '0';
          else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
          else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
          else return {};
        }
        return std::string(1, static_cast<char>(v));
      }
      return {};
    }
    if (a & A_NORMAL) {  // llama_decode_text
      std::string r;
      std::vector<uint32_t> cpts;
      try {
        cpts = unicode::cpts_from_utf8(t);
      } catch (const Error&) {
        return t;
      }
      std::string u;
      for (uint32_t c : cpts) {
        u.clear();
        unicode::append_utf8(u, c);
        int b = unicode::utf8_to_byte(u);
        if (b >= 0) {
          r += static_cast<char>(b);
        } else {
          r += "[UNK_BYTE_0x";
          for (unsigned char x : u) r += fmt::format("{:02x}", x);
          r += t + "]";
        }
      }
      return r;
    }
    return {};
  }
};

Tokenizer::Tokenizer(const Vocab& v, std::string model_name) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const size_t n = v.tokens.size();
  if (n == 0) fail("tokenizer: empty vocabulary");
  if (n > (size_t{1} << 30)) fail("tokenizer: vocabulary of {} tokens is too large", n);
  if (!v.scores.empty() && v.scores.size() != n) fail("tokenizer: {} scores for {} tokens", v.scores.size(), n);
  if (!v.token_types.empty() && v.token_types.size() != n) fail("tokenizer: {} token types for {} tokens", v.token_types.size(), n);
  const int32_t nt = static_cast<int32_t>(n);
  auto in_range = [&](int64_t id) { return id >= 0 && id < nt; };

  if (v.model == "llama") {
    m.kind = Kind::SPM;
    m.bos = 1;
    m.eos = 2;
    m.unk = 0;
    m.add_space_prefix = true;
    m.add_bos = true;
  } else if (v.model == "gpt2") {
    m.kind = Kind::BPE;
    m.bos = 11;
    m.eos = 11;
    m.pre = v.pre;
    PreSpec ps = pre_spec(v.pre);
    m.regexes = std::move(ps.regexes);
    m.clean_spaces = ps.clean_spaces;
    m.ignore_merges = ps.ignore_merges;
    m.add_bos = ps.force_add_bos;
    if (ps.no_bos) m.bos = -1;
    if (v.merges.empty()) fail("tokenizer: BPE vocabulary without merges");
    m.bpe_rank.reserve(v.merges.size());
    for (size_t i = 0; i < v.merges.size(); ++i) {
      const std::string& w = v.merges[i];
      size_t pos = w.find(' ', 1);
      if (pos == std::string::npos) continue;  // llama.cpp ranks it as ("", ""), which never matches
      m.bpe_rank.emplace(w, static_cast<int>(i));
    }
  } else {
    fail("tokenizer: unsupported tokenizer model '{}' (supported: llama, gpt2)", v.model);
  }
  if (v.add_space_prefix) m.add_space_prefix = *v.add_space_prefix;

  m.text.resize(n);
  m.score.assign(n, 0.0f);
  m.attr.assign(n, A_NORMAL);
  m.to_id.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::string w = v.tokens[i];
    if (w.empty()) w = "[EMPTY_" + std::to_string(i) + "]";
    auto [it, inserted] = m.to_id.emplace(w, static_cast<int32_t>(i));
    if (!inserted) fail("tokenizer: token {} duplicates token {} ('{}')", i, it->second, w.size() > 64 ? w.substr(0, 64) + "..." : w);
    m.text[i] = std::move(w);
    if (!v.scores.empty()) m.score[i] = v.scores[i];
    if (!v.token_types.empty()) {
      switch (static_cast<TokenType>(v.token_types[i])) {
        case TokenType::UNKNOWN: m.attr[i] = A_UNKNOWN; break;
        case TokenType::UNUSED: m.attr[i] = A_UNUSED; break;
        case TokenType::NORMAL: m.attr[i] = A_NORMAL; break;
        case TokenType::CONTROL: m.attr[i] = A_CONTROL; break;
        case TokenType::USER_DEFINED: m.attr[i] = A_USER_DEFINED; break;
        case TokenType::BYTE: m.attr[i] = A_BYTE; break;
        default: m.attr[i] = A_UNDEFINED; break;
      }
    }
  }
  for (int32_t* d : {&m.bos, &m.eos, &m.unk})
    if (!in_range(*d)) *d = -1;

  // explicit special ids (llama.cpp ignores out-of-range ones with a warning; Vocab::from_gguf rejects them)
  auto set_id = [&](int64_t id, int32_t& dst) {
    if (id >= 0 && in_range(id)) dst = static_cast<int32_t>(id);
  };
  set_id(v.bos_id, m.bos);
  set_id(v.eos_id, m.eos);
  set_id(v.eot_id, m.eot);
  set_id(v.eom_id, m.eom);
  set_id(v.unk_id, m.unk);
  set_id(v.pad_id, m.pad);
  if (v.add_bos) m.add_bos = *v.add_bos;
  if (v.add_eos) m.add_eos = *v.add_eos;

  // newline token
  if (m.kind == Kind::SPM) {
    int32_t id = m.find("<0x0A>");
    if (id < 0) id = m.find("\n");
    m.nl = id >= 0 ? id : m.pad;
  }

  // special tokens recognised by their text (llama.cpp's workaround), forced to CONTROL
  auto by_name = [&](std::initializer_list<const char*> names) {
    int32_t best = -1;
    for (const char* nm : names) {
      int32_t id = m.find(nm);
      if (id >= 0 && (best < 0 || id < best)) best = id;
    }
    return best;
  };
  auto make_control = [&](int32_t id) {
    if (id >= 0) m.attr[id] |= A_CONTROL;
  };
  if (m.eot < 0) {
    m.eot = by_name({"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
                     "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"});
    make_control(m.eot);
  }
  if (m.eom < 0) {
    m.eom = by_name({"<|eom_id|>"});
    make_control(m.eom);
  }
  const int32_t fim_pre = by_name({"<|fim_prefix|>", "<fim-prefix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", "<PRE>"});
  const int32_t fim_suf = by_name({"<|fim_suffix|>", "<fim-suffix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>", "<SUF>"});
  const int32_t fim_mid = by_name({"<|fim_middle|>", "<fim-middle>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", "<MID>"});
  const int32_t fim_pad = by_name({"<|fim_pad|>", "<fim-pad>", "<PAD>"});
  const int32_t fim_rep = by_name({"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"});
  const int32_t fim_sep = by_name({"<|file_sep|>"});
  for (int32_t id : {fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep}) make_control(id);
  for (int32_t id : {fim_pad, fim_rep, fim_sep})
    if (id >= 0) m.eog.insert(id);
  for (const char* nm : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>"}) {
    int32_t id = m.find(nm);
    if (id >= 0) {
      m.eog.insert(id);
      make_control(id);
    }
  }
  for (int32_t id : {m.eos, m.eot, m.eom})
    if (id >= 0) m.eog.insert(id);

  // special tokens cache: longest first (std::sort with llama.cpp's comparator, so ties order the same way)
  for (int32_t id = 0; id < nt; ++id)
    if (m.attr[id] & (A_CONTROL | A_USER_DEFINED | A_UNKNOWN)) m.special_cache.push_back(id);
  std::sort(m.special_cache.begin(), m.special_cache.end(),
            [&](int32_t a, int32_t b) { return m.text[a].size() > m.text[b].size(); });

  // token to piece cache
  m.piece_cache.resize(n);
  for (int32_t id = 0; id < nt; ++id) m.piece_cache[id] = m.piece_uncached(id);

  // per-model token attributes (llama.cpp sets these by name)
  std::transform(model_name.begin(), model_name.end(), model_name.begin(), [](unsigned char c) { return std::tolower(c); });
  auto contains_any = [](const std::string& s, std::initializer_list<const char*> subs) {
    for (const char* x : subs)
      if (s.find(x) != std::string::npos) return true;
    return false;
  };
  auto set_attr = [&](const char* tok, uint32_t a, bool on) {
    int32_t id = m.find(tok);
    if (id < 0) return;
    m.attr[id] = on ? (m.attr[id] | a) : (m.attr[id] & ~a);
  };
  if (contains_any(m.pre, {"jina-v2-de", "jina-v2-es", "jina-v2-code"})) {
    set_attr("<mask>", A_LSTRIP, true);
  } else if (contains_any(model_name, {"phi-3", "phi3"})) {
    for (int32_t id : m.special_cache) m.attr[id] |= A_RSTRIP;
    set_attr("</s>", A_RSTRIP, true);
    for (const char* t : {"<unk>", "<s>", "<|endoftext|>"}) set_attr(t, A_RSTRIP, false);
  }

  if (m.kind == Kind::BPE) {
    std::vector<int32_t> ids = m.tokenize("\xC4\x8A", false, false);
    m.nl = ids.empty() ? m.pad : ids[0];
  }
}

Tokenizer Tokenizer::from_gguf(const GgufFile& f) {
  Vocab v = Vocab::from_gguf(f);
  std::string name;
  if (const GgufValue* n = f.find("general.name"); n && n->type() == GgufType::STRING) name = n->as_string();
  try {
    return Tokenizer(v, name);
  } catch (const Error& e) {
    fail("{}: {}", f.path(), e.what());
  }
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::tokenize(std::string_view text, bool add_special, bool parse_special) const {
  return impl_->tokenize(text, add_special, parse_special);
}

std::string Tokenizer::token_to_piece(int32_t id, bool special) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->text.size()) fail("token id {} out of range (vocabulary has {} tokens)", id, impl_->text.size());
  if (!special && (impl_->attr[id] & (A_UNKNOWN | A_CONTROL))) return {};
  return impl_->piece_cache[id];
}

std::string Tokenizer::detokenize(const std::vector<int32_t>& ids, bool remove_special, bool unparse_special) const {
  const Impl& m = *impl_;
  size_t first = 0, last = ids.size();
  bool remove_space = m.add_space_prefix;
  if (remove_special && m.add_bos && last > first && ids[first] == m.bos) {
    remove_space = false;
    first++;
  }
  if (remove_special && m.add_eos && last > first && ids[last - 1] == m.eos) last--;
  std::string s;
  for (size_t i = first; i < last; ++i) {
    std::string p = token_to_piece(ids[i], unparse_special);
    size_t skip = (remove_space && !p.empty() && p[0] == ' ') ? 1 : 0;
    s.append(p, skip, std::string::npos);
    remove_space = false;
  }
  if (!m.clean_spaces || s.empty()) return s;

  // llama.cpp's three in-place clean-up passes, on the same buffer
  int32_t total = static_cast<int32_t>(s.size());
  char* text = s.data();
  {  // " ?", " !", " .", " ," -> drop the space
    const int32_t t1 = total;
    total = 1;
    for (int32_t i = 1; i < t1; ++i) {
      const char x = text[i];
      if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) total--;
      text[total++] = x;
    }
  }
  {  // " ' " -> "'"
    const int32_t t2 = total;
    total = 1;
    for (int32_t i = 1; i < t2; ++i) {
      const char x = text[i];
      if (x == '\'' && i + 1 < t2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
        total--;
        text[++i] = '\0';
      }
      text[total++] = x;
    }
  }
  {  // " 's", " 'm", " 're", " 've" -> drop the space
    const int32_t t3 = total;
    total = 1;
    for (int32_t i = 1; i < t3; ++i) {
      const char x = text[i];
      if (text[i - 1] == ' ' && x == '\'' && i + 1 < t3) {
        const char x1 = text[i + 1];
        if (x1 == 's' || x1 == 'm') {
          total--;
        } else if (i + 2 < t3) {
          const char x2 = text[i + 2];
          if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) total--;
        }
      }
      text[total++] = x;
    }
  }
  s.resize(total);
  return s;
}

Tokenizer::Kind Tokenizer::kind() const { return impl_->kind; }
size_t Tokenizer::n_vocab() const { return impl_->text.size(); }
const std::string& Tokenizer::token_text(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->text.size()) fail("token id {} out of range (vocabulary has {} tokens)", id, impl_->text.size());
  return impl_->text[id];
}
int32_t Tokenizer::bos() const { return impl_->bos; }
int32_t Tokenizer::eos() const { return impl_->eos; }
int32_t Tokenizer::eot() const { return impl_->eot; }
int32_t Tokenizer::unk() const { return impl_->unk; }
int32_t Tokenizer::pad() const { return impl_->pad; }
int32_t Tokenizer::nl() const { return impl_->nl; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
bool Tokenizer::add_eos() const { return impl_->add_eos; }
bool Tokenizer::add_space_prefix() const { return impl_->add_space_prefix; }
bool Tokenizer::is_eog(int32_t id) const { return id >= 0 && impl_->eog.count(id) > 0; }
bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->attr.size() && (impl_->attr[id] & A_CONTROL);
}

}  // namespace edgeq
