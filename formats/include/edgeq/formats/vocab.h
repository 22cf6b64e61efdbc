// A tokenizer vocabulary as GGUF stores it (tokenizer.ggml.*). Filled from a GGUF file's metadata, or from
// Hugging Face tokenizer files by the converter, written back to GGUF metadata; the runtime's tokenizers
// are built from it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "edgeq/formats/gguf.h"

namespace edgeq {

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t { UNDEFINED = 0, NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

struct Vocab {
  std::string model;  // tokenizer.ggml.model: "llama" (SentencePiece), "gpt2" (byte-level BPE), ...
  std::string pre;    // tokenizer.ggml.pre: "default", "llama-bpe", "qwen2", "gpt-2", "deepseek-llm", "falcon", "smollm", ...
  std::vector<std::string> tokens;
  std::vector<float> scores;        // empty when the file has none
  std::vector<int32_t> token_types; // TokenType values; empty when the file has none
  std::vector<std::string> merges;  // BPE merges "a b"; empty for SentencePiece
  int64_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1, sep_id = -1, eot_id = -1, eom_id = -1;
  std::optional<bool> add_bos, add_eos, add_space_prefix, remove_extra_whitespaces;
  std::optional<std::string> chat_template;

  // Reads tokenizer.ggml.* from a GGUF file; throws edgeq::Error naming the file and key when inconsistent
  // (array lengths differ, ids out of range, missing tokens).
  static Vocab from_gguf(const GgufFile& f);
  // Writes tokenizer.ggml.* keys in llama.cpp's converter order.
  // The tokenizer.ggml.* keys in gguf-py's order (what to_gguf sets). Throws edgeq::Error when inconsistent.
  std::vector<std::pair<std::string, GgufValue>> to_metadata() const;
  void to_gguf(GgufWriter& w) const;
  size_t size() const { return tokens.size(); }
};

}  // namespace edgeq
