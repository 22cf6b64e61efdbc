// Tokenizers built from a GGUF vocabulary (edgeq::Vocab) that reproduce llama.cpp's (b4748) llama_tokenize,
// llama_token_to_piece and llama_detokenize token for token:
//   - "llama": SentencePiece-style BPE over scores (llm_tokenizer_spm): spaces escaped to U+2581, dummy prefix
//     space when add_space_prefix (at the start and after every special token), byte fallback <0xXX>.
//   - "gpt2":  byte-level BPE with llama.cpp's pre-tokenizer regexes per tokenizer.ggml.pre, merges by rank.
// Special tokens (control / user-defined / unknown types) are split out of the raw text before either algorithm
// (llama.cpp's tokenizer_st_partition); control and unknown ones only when parse_special is true.
// A Tokenizer is immutable after construction: all const methods may be called from several threads at once.
// Not supported (llama.cpp's other vocab types): bert (WPM), t5 (UGM), rwkv.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace edgeq {

struct Vocab;
class GgufFile;

class Tokenizer {
 public:
  enum class Kind { SPM, BPE };

  // model_name is general.name: llama.cpp changes some token attributes by model name (phi-3: rstrip after
  // special tokens). Throws edgeq::Error for an unsupported tokenizer model or pre-tokenizer, or an invalid vocab.
  explicit Tokenizer(const Vocab& vocab, std::string model_name = "");
  // Reads the vocab (Vocab::from_gguf) and general.name from a GGUF file.
  static Tokenizer from_gguf(const GgufFile& f);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // llama_tokenize(text, add_special, parse_special): add_special adds BOS (and EOS) when the vocab says so.
  // Invalid UTF-8 input throws edgeq::Error (llama.cpp throws too) for BPE vocabs; SPM accepts any bytes.
  std::vector<int32_t> tokenize(std::string_view text, bool add_special = true, bool parse_special = false) const;

  // llama_token_to_piece(id, lstrip=0, special): the bytes this token stands for. With special == false,
  // control and unknown tokens give "". Out-of-range ids throw edgeq::Error.
  std::string token_to_piece(int32_t id, bool special = true) const;
  // llama_detokenize: concatenated pieces, leading space of an SPM text removed, clean-up of spaces for BPE
  // vocabs that ask for it. remove_special drops a leading BOS / trailing EOS the vocab adds.
  std::string detokenize(const std::vector<int32_t>& ids, bool remove_special = false, bool unparse_special = false) const;

  Kind kind() const;
  size_t n_vocab() const;
  const std::string& token_text(int32_t id) const;  // the raw vocab string (throws when out of range)
  int32_t bos() const;  // -1 when none
  int32_t eos() const;
  int32_t eot() const;
  int32_t unk() const;
  int32_t pad() const;
  int32_t nl() const;   // newline token (llama.cpp's linefeed_id), -1 when none
  bool add_bos() const;
  bool add_eos() const;
  bool add_space_prefix() const;
  bool is_eog(int32_t id) const;      // end of generation: eos, eot, eom and llama.cpp's by-name list
  bool is_control(int32_t id) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Unicode helpers with llama.cpp's (unicode.cpp) semantics, exposed for tests and tools.
namespace unicode {
enum Flag : uint16_t {
  UNDEFINED = 0x0001, NUMBER = 0x0002, LETTER = 0x0004, SEPARATOR = 0x0008, ACCENT_MARK = 0x0010,
  PUNCTUATION = 0x0020, SYMBOL = 0x0040, CONTROL = 0x0080, CATEGORY_MASK = 0x00FF,
  WHITESPACE = 0x0100, LOWERCASE = 0x0200, UPPERCASE = 0x0400,
};
uint16_t cpt_flags(uint32_t cpt);  // 0 for codepoints beyond U+10FFFF
uint32_t to_lower(uint32_t cpt);   // simple lowercase mapping
// Strict UTF-8 decode as llama.cpp's unicode_cpts_from_utf8 (throws edgeq::Error on invalid input).
std::vector<uint32_t> cpts_from_utf8(std::string_view s);
void append_utf8(std::string& out, uint32_t cpt);
// GPT-2 byte <-> unicode mapping used by byte-level BPE vocabularies.
const std::string& byte_to_utf8(uint8_t b);
int utf8_to_byte(std::string_view s);  // -1 when s is not one of the 256 mapped characters
// llama.cpp's unicode_regex_split: pre-tokenize text with the given regex list (each applied to the pieces
// produced by the previous one) and return the pieces, byte-encoded (GPT-2 mapping) when byte_encode.
std::vector<std::string> regex_split(std::string_view text, const std::vector<std::string>& regexes, bool byte_encode = true);
}  // namespace unicode

}  // namespace edgeq
