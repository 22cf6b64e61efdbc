// Unicode helpers and the pre-tokenizer split: codepoint categories as llama.cpp defines them, the GPT-2 byte
// map, and the hand-written GPT-2 / Llama-3 splitters agreeing with the general PCRE2 path on the same regex.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/runtime/tokenizer.h"

namespace {

namespace u = edgeq::unicode;
const std::string kShared = EDGEQ_SHARED_DIR;

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(Unicode, Categories) {
  EXPECT_EQ(u::cpt_flags('a') & u::CATEGORY_MASK, u::LETTER);
  EXPECT_EQ(u::cpt_flags('7') & u::CATEGORY_MASK, u::NUMBER);
  EXPECT_EQ(u::cpt_flags('!') & u::CATEGORY_MASK, u::PUNCTUATION);
  EXPECT_EQ(u::cpt_flags('$') & u::CATEGORY_MASK, u::SYMBOL);
  EXPECT_EQ(u::cpt_flags(' ') & u::CATEGORY_MASK, u::SEPARATOR);
  EXPECT_TRUE(u::cpt_flags(' ') & u::WHITESPACE);
  EXPECT_TRUE(u::cpt_flags('\n') & u::WHITESPACE);
  EXPECT_EQ(u::cpt_flags('\n') & u::CATEGORY_MASK, u::CONTROL);
  EXPECT_EQ(u::cpt_flags(0x00BD) & u::CATEGORY_MASK, u::NUMBER);   // ½ is No
  EXPECT_EQ(u::cpt_flags(0x0663) & u::CATEGORY_MASK, u::NUMBER);   // Arabic-Indic three
  EXPECT_EQ(u::cpt_flags(0x6771) & u::CATEGORY_MASK, u::LETTER);   // 東
  EXPECT_EQ(u::cpt_flags(0x0301) & u::CATEGORY_MASK, u::ACCENT_MARK);
  EXPECT_EQ(u::cpt_flags(0x2260) & u::CATEGORY_MASK, u::SYMBOL);   // ≠
  EXPECT_EQ(u::cpt_flags(0x1F916) & u::CATEGORY_MASK, u::SYMBOL);  // 🤖
  EXPECT_EQ(u::cpt_flags(0x3002) & u::CATEGORY_MASK, u::PUNCTUATION);
  EXPECT_TRUE(u::cpt_flags(0x3000) & u::WHITESPACE);
  EXPECT_TRUE(u::cpt_flags(0x00A0) & u::WHITESPACE);
  EXPECT_EQ(u::cpt_flags(0x0378), u::UNDEFINED);  // unassigned
  EXPECT_EQ(u::cpt_flags(0x110000), 0);
  EXPECT_EQ(u::to_lower('S'), uint32_t('s'));
  EXPECT_EQ(u::to_lower(0x0130), 0x69u);  // İ -> i
  EXPECT_EQ(u::to_lower(0x41F), 0x43Fu);  // П -> п
}

TEST(Unicode, ByteMapAndUtf8) {
  EXPECT_EQ(u::byte_to_utf8(' '), "\xC4\xA0");  // Ġ
  EXPECT_EQ(u::byte_to_utf8('\n'), "\xC4\x8A");
  EXPECT_EQ(u::byte_to_utf8('a'), "a");
  for (int b = 0; b < 256; ++b) EXPECT_EQ(u::utf8_to_byte(u::byte_to_utf8(static_cast<uint8_t>(b))), b);
  EXPECT_EQ(u::utf8_to_byte("\xE2\x82\xAC"), -1);
  EXPECT_EQ(u::cpts_from_utf8("a\xC3\xA9\xF0\x9F\xA4\x96"), (std::vector<uint32_t>{'a', 0xE9, 0x1F916}));
  EXPECT_THROW(u::cpts_from_utf8("\xE6\x9D"), edgeq::Error);
  EXPECT_THROW(u::cpts_from_utf8("\xF8\x88\x80\x80\x80"), edgeq::Error);
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "|" + x;
  return s;
}

// The hand-written splitters are selected by the exact regex string; wrapping the same regex in (?:...) sends
// it through the general PCRE2 path on the collapsed text. Both must split identically.
TEST(Unicode, CustomSplittersAgreeWithRegexPath) {
  const std::string gpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
  const std::string llama3 =
      "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  std::vector<std::string> texts = {
      read_text(kShared + "/text/tokenizer-sample.txt"),
      read_text(kShared + "/text/tinystories-heldout-head.txt"),
      "  leading and trailing  \n\n  x\t\t\ny  ",
      "It's 'S 'LL 'Re don't 12345678 ٣٤٥ ½x",
  };
  for (const auto& t : texts) {
    auto a = u::regex_split(t, {llama3}, false);
    auto b = u::regex_split(t, {"(?:" + llama3 + ")"}, false);
    EXPECT_EQ(join(a), join(b));
    // the GPT-2 pattern without the trailing \s+ alternative leaves some whitespace unmatched: pieces still agree
    auto c = u::regex_split(t, {gpt2}, false);
    auto d = u::regex_split(t, {"(?:" + gpt2 + ")"}, false);
    EXPECT_EQ(join(c), join(d));
  }
  // pieces always concatenate back to the text
  std::string cat;
  for (const auto& p : u::regex_split(texts[0], {llama3}, false)) cat += p;
  EXPECT_EQ(cat, texts[0]);
  EXPECT_EQ(join(u::regex_split("Hello world's 2024", {llama3}, false)), "|Hello| world|'s| |202|4");
  EXPECT_EQ(join(u::regex_split("a  b", {gpt2}, true)), "|a|\xC4\xA0|\xC4\xA0" "b");
}

}  // namespace
