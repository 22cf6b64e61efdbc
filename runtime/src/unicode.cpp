// Unicode support for the tokenizers, with llama.cpp's (unicode.cpp, b4748) semantics:
//  - codepoint category flags (tables in unicode_data.cpp), strict UTF-8 decoding, GPT-2 byte <-> unicode map;
//  - regex_split = llama.cpp's unicode_regex_split: hand-written splitters for the GPT-2 and Llama-3 patterns,
//    and for every other pattern the same trick llama.cpp uses with std::regex, done with PCRE2 here:
//      * a pattern using \p{L} \p{N} \p{P} runs on a "collapsed" text where every non-ASCII codepoint is one
//        byte standing for its category (0xD1 number, 0xD2 letter, 0xD3 punctuation, 0x0B whitespace, 0xD0
//        other) and the categories in the pattern become [\xD2A-Za-z] etc. — so \p{L} only knows llama.cpp's
//        categories and \s only ASCII whitespace (plus the 0x0B stand-in), exactly as llama.cpp;
//      * a pattern without categories runs on the codepoints (PCRE2 UTF mode, no UCP) with non-ASCII whitespace
//        replaced by 0x0B (std::wregex in llama.cpp).
//    Each pattern splits the pieces produced by the previous one; unmatched stretches become pieces too.
#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "edgeq/base/error.h"
#include "edgeq/runtime/tokenizer.h"

namespace edgeq::unicode {

namespace data {
extern const std::pair<uint32_t, uint16_t> kRanges[];
extern const uint32_t kRangesCount;
extern const uint32_t kWhitespace[];
extern const uint32_t kWhitespaceCount;
extern const std::pair<uint32_t, uint32_t> kLower[];
extern const uint32_t kLowerCount;
}  // namespace data

namespace {

constexpr uint32_t kMaxCodepoint = 0x110000;

struct FlagTable {
  std::vector<uint16_t> bmp;  // flags of U+0000..U+FFFF
  FlagTable() : bmp(0x10000, 0) {
    for (uint32_t i = 0; i < data::kRangesCount; ++i) {
      uint32_t lo = data::kRanges[i].first;
      uint32_t hi = i + 1 < data::kRangesCount ? data::kRanges[i + 1].first : kMaxCodepoint;
      for (uint32_t c = lo; c < hi && c < 0x10000; ++c) bmp[c] = data::kRanges[i].second;
    }
    for (uint32_t i = 0; i < data::kWhitespaceCount; ++i) bmp[data::kWhitespace[i]] |= WHITESPACE;
    for (uint32_t i = 0; i < data::kLowerCount; ++i) {
      if (data::kLower[i].second < 0x10000) bmp[data::kLower[i].second] |= LOWERCASE;
      if (data::kLower[i].first < 0x10000) bmp[data::kLower[i].first] |= UPPERCASE;
    }
  }
};

const FlagTable& flag_table() {
  static const FlagTable t;
  return t;
}

uint16_t flags_astral(uint32_t cpt) {
  // binary search the range table (ranges are sorted by start)
  const auto* begin = data::kRanges;
  const auto* end = data::kRanges + data::kRangesCount;
  const auto* it = std::upper_bound(begin, end, cpt, [](uint32_t c, const std::pair<uint32_t, uint16_t>& r) { return c < r.first; });
  uint16_t f = it == begin ? 0 : (it - 1)->second;
  // case flags outside the BMP
  const auto* lb = data::kLower;
  const auto* le = data::kLower + data::kLowerCount;
  const auto* l = std::lower_bound(lb, le, cpt, [](const std::pair<uint32_t, uint32_t>& p, uint32_t c) { return p.first < c; });
  if (l != le && l->first == cpt) f |= UPPERCASE;
  return f;
}

}  // namespace

uint16_t cpt_flags(uint32_t cpt) {
  if (cpt < 0x10000) return flag_table().bmp[cpt];
  if (cpt >= kMaxCodepoint) return 0;
  return flags_astral(cpt);
}

uint32_t to_lower(uint32_t cpt) {
  const auto* lb = data::kLower;
  const auto* le = data::kLower + data::kLowerCount;
  const auto* l = std::lower_bound(lb, le, cpt, [](const std::pair<uint32_t, uint32_t>& p, uint32_t c) { return p.first < c; });
  return (l != le && l->first == cpt) ? l->second : cpt;
}

std::vector<uint32_t> cpts_from_utf8(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  auto cont = [&](size_t k) { return k < n && (p[k] & 0xC0) == 0x80; };
  while (i < n) {
    unsigned char c = p[i];
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && cont(i + 1)) {
      cp = (uint32_t(c & 0x1F) << 6) | (p[i + 1] & 0x3F);
      i += 2;
    } else if ((c & 0xF0) == 0xE0 && cont(i + 1) && cont(i + 2)) {
      cp = (uint32_t(c & 0x0F) << 12) | (uint32_t(p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
      i += 3;
    } else if ((c & 0xF8) == 0xF0 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
      cp = (uint32_t(c & 0x07) << 18) | (uint32_t(p[i + 1] & 0x3F) << 12) | (uint32_t(p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
      i += 4;
    } else {
      fail("invalid UTF-8 in text at byte {}", i);
    }
    if (cp >= kMaxCodepoint) fail("invalid UTF-8 in text at byte {}: codepoint beyond U+10FFFF", i);
    out.push_back(cp);
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < kMaxCodepoint) {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    fail("invalid codepoint U+{:X}", cp);
  }
}

namespace {

struct ByteMap {
  std::array<std::string, 256> to_utf8;
  std::map<std::string, int, std::less<>> from_utf8;
  ByteMap() {
    std::array<bool, 256> direct{};
    for (int c = 0x21; c <= 0x7E; ++c) direct[c] = true;
    for (int c = 0xA1; c <= 0xAC; ++c) direct[c] = true;
    for (int c = 0xAE; c <= 0xFF; ++c) direct[c] = true;
    uint32_t next = 256;
    for (int c = 0; c < 256; ++c) {
      uint32_t cp = direct[c] ? static_cast<uint32_t>(c) : next++;
      append_utf8(to_utf8[c], cp);
      from_utf8.emplace(to_utf8[c], c);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

}  // namespace

const std::string& byte_to_utf8(uint8_t b) { return byte_map().to_utf8[b]; }

int utf8_to_byte(std::string_view s) {
  const auto& m = byte_map().from_utf8;
  auto it = m.find(s);
  return it == m.end() ? -1 : it->second;
}

namespace {

// ---- hand-written splitters (llama.cpp's unicode_regex_split_custom_gpt2 / _llama3) ----

constexpr uint32_t kOutOfRange = 0xFFFFFFFF;

struct Span {
  const std::vector<uint32_t>& cpts;
  size_t ini, end;
  uint32_t cpt(size_t pos) const { return (ini <= pos && pos < end) ? cpts[pos] : kOutOfRange; }
  uint16_t flags(size_t pos) const { return (ini <= pos && pos < end) ? cpt_flags(cpts[pos]) : 0; }
};

// 's|'t|'re|'ve|'m|'ll|'d at pos (lower-cased first when fold: llama3's (?i:...)): its length in codepoints, or 0.
size_t contraction(const Span& s, size_t pos, bool fold) {
  if (s.cpt(pos) != '\'' || pos + 1 >= s.end) return 0;
  auto c = [&](size_t p) { return fold ? to_lower(s.cpt(p)) : s.cpt(p); };
  const uint32_t n1 = c(pos + 1);
  if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') return 2;
  if (pos + 2 < s.end) {
    const uint32_t n2 = c(pos + 2);
    if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) return 3;
  }
  return 0;
}

// The splitters' frame: split(span, add) for each offset's span of cpts, where add(end) records the piece from
// the previous piece's end to end (when not empty) and returns its length.
template <typename Split>
void split_spans(const std::vector<uint32_t>& cpts, const std::vector<size_t>& offsets, std::vector<size_t>& out,
                 Split split) {
  size_t start = 0;
  for (size_t offset : offsets) {
    const Span s{cpts, start, start + offset};
    start += offset;
    size_t prev_end = s.ini;
    auto add = [&](size_t end) -> size_t {
      size_t len = end - prev_end;
      if (len > 0) out.push_back(len);
      prev_end = end;
      return len;
    };
    split(s, add);
  }
}

bool f_letter(uint16_t f) { return f & LETTER; }
bool f_number(uint16_t f) { return f & NUMBER; }
bool f_space(uint16_t f) { return f & WHITESPACE; }

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void split_gpt2(const std::vector<uint32_t>& cpts, const std::vector<size_t>& offsets, std::vector<size_t>& out) {
  split_spans(cpts, offsets, out, [](const Span& s, auto& add) {
    for (size_t pos = s.ini; pos < s.end;) {
      const uint32_t cpt = s.cpt(pos);
      const uint16_t flags = s.flags(pos);
      if (const size_t n = contraction(s, pos, false)) {
        pos += add(pos + n);
        continue;
      }
      uint16_t f2 = (cpt == ' ' ? s.flags(pos + 1) : flags);
      if (f_letter(f2)) {
        pos += (cpt == ' ');
        while (f_letter(f2)) f2 = s.flags(++pos);
        add(pos);
        continue;
      }
      if (f_number(f2)) {
        pos += (cpt == ' ');
        while (f_number(f2)) f2 = s.flags(++pos);
        add(pos);
        continue;
      }
      auto other = [](uint16_t f) { return !(f_space(f) || f_letter(f) || f_number(f)) && f != 0; };
      if (other(f2)) {
        pos += (cpt == ' ');
        while (other(f2)) f2 = s.flags(++pos);
        add(pos);
        continue;
      }
      size_t nws = 0;
      while (f_space(s.flags(pos + nws))) nws++;
      if (nws > 1 && s.cpt(pos + nws) != kOutOfRange) {  // \s+(?!\S)
        pos += nws - 1;
        add(pos);
        continue;
      }
      if (nws > 0) {  // \s+
        pos += nws;
        add(pos);
        continue;
      }
      add(++pos);  // no match
    }
  });
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
void split_llama3(const std::vector<uint32_t>& cpts, const std::vector<size_t>& offsets, std::vector<size_t>& out) {
  split_spans(cpts, offsets, out, [](const Span& s, auto& add) {
    for (size_t pos = s.ini; pos < s.end;) {
      const uint32_t cpt = s.cpt(pos);
      const uint16_t flags = s.flags(pos);
      if (const size_t n = contraction(s, pos, true)) {
        pos += add(pos + n);
        continue;
      }
      if (!(cpt == '\r' || cpt == '\n' || f_number(flags))) {
        if (f_letter(flags) || f_letter(s.flags(pos + 1))) {
          pos++;
          while (f_letter(s.flags(pos))) pos++;
          add(pos);
          continue;
        }
      }
      if (f_number(flags)) {
        size_t ini = pos;
        while (f_number(s.flags(pos))) {
          if (++pos - ini >= 3) {
            add(pos);
            ini = pos;
          }
        }
        add(pos);
        continue;
      }
      uint16_t f2 = (cpt == ' ' ? s.flags(pos + 1) : flags);
      auto other = [](uint16_t f) { return !(f_space(f) || f_letter(f) || f_number(f)); };
      if (other(f2) && flags != 0) {  // llama.cpp tests the first codepoint's flags here, not f2's
        pos += (cpt == ' ');
        while (other(f2) && f2 != 0) f2 = s.flags(++pos);
        uint32_t c2 = s.cpt(pos);
        while (c2 == '\r' || c2 == '\n') c2 = s.cpt(++pos);
        add(pos);
        continue;
      }
      size_t nws = 0, last_rn = 0;
      while (f_space(s.flags(pos + nws))) {
        uint32_t c2 = s.cpt(pos + nws);
        if (c2 == '\r' || c2 == '\n') last_rn = pos + nws + 1;
        nws++;
      }
      if (last_rn > 0) {  // \s*[\r\n]+
        pos = last_rn;
        add(pos);
        continue;
      }
      if (nws > 1 && s.cpt(pos + nws) != kOutOfRange) {  // \s+(?!\S)
        pos += nws - 1;
        add(pos);
        continue;
      }
      if (nws > 0) {
        pos += nws;
        add(pos);
        continue;
      }
      add(++pos);
    }
  });
}

const char* const kGpt2Regex = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const char* const kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kLlama3RegexAdapted =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// ---- PCRE2 ----

struct Pcre {
  pcre2_code* code = nullptr;
  ~Pcre() {
    if (code) pcre2_code_free(code);
  }
};

const pcre2_code* compile_cached(const std::string& pattern, uint32_t options) {
  static std::mutex mu;
  static std::map<std::pair<std::string, uint32_t>, std::unique_ptr<Pcre>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(pattern, options);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second->code;
  int err = 0;
  PCRE2_SIZE erroff = 0;
  auto p = std::make_unique<Pcre>();
  p->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &err, &erroff, nullptr);
  if (!p->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail("pre-tokenizer regex '{}': {} at offset {}", pattern, reinterpret_cast<const char*>(msg), erroff);
  }
  pcre2_jit_compile(p->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  const pcre2_code* code = p->code;
  cache.emplace(std::move(key), std::move(p));
  return code;
}

struct MatchData {
  pcre2_match_data* md;
  explicit MatchData(const pcre2_code* code) : md(pcre2_match_data_create_from_pattern(code, nullptr)) {
    if (!md) fail("out of memory (regex match data)");
  }
  ~MatchData() { pcre2_match_data_free(md); }
};

// Splits each piece (lengths in codepoints) of `subject` by `code` like std::regex_iterator does in llama.cpp.
// byte_of_cpt maps codepoint index -> byte offset (size n+1); cpt_of_byte the reverse (empty: identity).
void split_pcre(const pcre2_code* code, const std::string& subject, const std::vector<size_t>& byte_of_cpt,
                const std::vector<uint32_t>& cpt_of_byte, bool utf, const std::vector<size_t>& offsets, std::vector<size_t>& out) {
  MatchData m(code);
  const auto* base = reinterpret_cast<PCRE2_SPTR>(subject.data());
  auto b_of = [&](size_t c) { return byte_of_cpt.empty() ? c : byte_of_cpt[c]; };
  auto c_of = [&](size_t b) -> size_t { return cpt_of_byte.empty() ? b : cpt_of_byte[b]; };
  size_t start = 0;
  for (size_t offset : offsets) {
    const size_t sb = b_of(start), eb = b_of(start + offset);
    const size_t len = eb - sb;
    size_t pos = 0, prev = 0;  // bytes relative to sb
    while (pos <= len) {
      int rc = pcre2_match(code, base + sb, len, pos, utf ? PCRE2_NO_UTF_CHECK : 0, m.md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        fail("pre-tokenizer regex match failed: {}", reinterpret_cast<const char*>(msg));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.md);
      size_t ms = ov[0], me = ov[1];
      if (ms > prev) out.push_back(c_of(sb + ms) - c_of(sb + prev));
      if (me > ms) out.push_back(c_of(sb + me) - c_of(sb + ms));
      prev = me;
      if (me == ms) {  // empty match: step over one character
        if (me >= len) break;
        pos = me + 1;
        if (utf)
          while (pos < len && (subject[sb + pos] & 0xC0) == 0x80) pos++;
        continue;
      }
      pos = me;
    }
    if (prev < len) out.push_back(c_of(eb) - c_of(sb + prev));
    start += offset;
  }
}

bool uses_category(const std::string& re) {
  return re.find("\\p{N}") != std::string::npos || re.find("\\p{L}") != std::string::npos || re.find("\\p{P}") != std::string::npos;
}

// llama.cpp's rewrite of a pattern for the collapsed text.
std::string collapse_regex(const std::string& re) {
  auto cat = [](char c) -> std::string {
    switch (c) {
      case 'N': return std::string("\xD1") + "0-9";
      case 'L': return std::string("\xD2") + "A-Za-z";
      case 'P': return std::string("\xD3") + "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}";
    }
    return {};
  };
  std::string out;
  bool inside = false;
  for (size_t i = 0; i < re.size(); ++i) {
    if (re[i] == '[' && (i == 0 || re[i - 1] != '\\')) {
      out += '[';
      inside = true;
      continue;
    }
    if (inside && re[i] == ']' && re[i - 1] != '\\') {
      out += ']';
      inside = false;
      continue;
    }
    if (re[i] == '\\' && i + 4 < re.size() && re[i + 1] == 'p' && re[i + 2] == '{' && re[i + 4] == '}') {
      std::string c = cat(re[i + 3]);
      if (!c.empty()) {
        if (!inside) out += '[';
        out += c;
        if (!inside) out += ']';
        i += 4;
        continue;
      }
    }
    out += re[i];
  }
  return out;
}

}  // namespace

std::vector<std::string> regex_split(std::string_view text, const std::vector<std::string>& regexes, bool byte_encode) {
  const std::vector<uint32_t> cpts = cpts_from_utf8(text);
  std::vector<size_t> offsets = {cpts.size()};
  if (cpts.empty()) return {};

  bool need_collapse = false;
  for (const auto& re : regexes) need_collapse |= uses_category(re);
  std::string collapsed;
  if (need_collapse) {
    collapsed.resize(cpts.size());
    for (size_t i = 0; i < cpts.size(); ++i) {
      if (cpts[i] < 128) {
        collapsed[i] = static_cast<char>(cpts[i]);
        continue;
      }
      uint16_t f = cpt_flags(cpts[i]);
      uint16_t c = f & CATEGORY_MASK;
      if (f & WHITESPACE) collapsed[i] = '\x0B';
      else if (c == NUMBER) collapsed[i] = '\xD1';
      else if (c == LETTER) collapsed[i] = '\xD2';
      else if (c == PUNCTUATION) collapsed[i] = '\xD3';
      else collapsed[i] = '\xD0';
    }
  }
  // the codepoint text for patterns without categories (built on first use)
  std::string wide;
  std::vector<size_t> byte_of_cpt;
  std::vector<uint32_t> cpt_of_byte;

  for (const auto& re : regexes) {
    std::vector<size_t> next;
    next.reserve(offsets.size() * 2);
    if (re == kGpt2Regex) {
      split_gpt2(cpts, offsets, next);
    } else if (re == kLlama3Regex || re == kLlama3RegexAdapted) {
      split_llama3(cpts, offsets, next);
    } else if (uses_category(re)) {
      for (unsigned char ch : re)
        if (ch >= 128) fail("pre-tokenizer regex '{}' has both unicode categories and non-ASCII characters (not supported, as in llama.cpp)", re);
      const pcre2_code* code = compile_cached(collapse_regex(re), PCRE2_DOLLAR_ENDONLY);
      split_pcre(code, collapsed, {}, {}, false, offsets, next);
    } else {
      if (wide.empty()) {
        byte_of_cpt.resize(cpts.size() + 1);
        for (size_t i = 0; i < cpts.size(); ++i) {
          byte_of_cpt[i] = wide.size();
          uint32_t c = cpts[i];
          if (c > 0x7F && (cpt_flags(c) & WHITESPACE)) c = 0x0B;
          if (c >= 0xD800 && c <= 0xDFFF) c = 0xFFFD;  // same UTF-8 length; PCRE2 rejects surrogates
          append_utf8(wide, c);
        }
        byte_of_cpt[cpts.size()] = wide.size();
        cpt_of_byte.assign(wide.size() + 1, 0);
        for (size_t i = 0; i <= cpts.size(); ++i) cpt_of_byte[byte_of_cpt[i]] = static_cast<uint32_t>(i);
      }
      const pcre2_code* code = compile_cached(re, PCRE2_UTF | PCRE2_DOLLAR_ENDONLY);
      split_pcre(code, wide, byte_of_cpt, cpt_of_byte, true, offsets, next);
    }
    offsets = std::move(next);
  }

  std::vector<std::string> words;
  words.reserve(offsets.size());
  size_t start = 0;
  std::string utf8;
  for (size_t len : offsets) {
    utf8.clear();
    for (size_t i = start; i < start + len; ++i) append_utf8(utf8, cpts[i]);
    start += len;
    if (!byte_encode) {
      words.push_back(utf8);
      continue;
    }
    std::string enc;
    enc.reserve(utf8.size() * 2);
    for (unsigned char c : utf8) enc += byte_to_utf8(c);
    words.push_back(std::move(enc));
  }
  return words;
}

}  // namespace edgeq::unicode
