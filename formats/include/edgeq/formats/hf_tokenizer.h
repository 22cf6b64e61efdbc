// Hugging Face tokenizer files -> edgeq::Vocab, following llama.cpp's converter (convert_hf_to_gguf.py, b4748):
//  - tokenizer.model (SentencePiece ModelProto, parsed with a small protobuf wire-format reader) -> model "llama";
//  - tokenizer.json (byte-level BPE) -> model "gpt2" with merges and tokenizer.ggml.pre recognised from the
//    pre-tokenizer structure/regex;
//  - special token ids, add_bos/add_eos and the chat template as gguf-py's SpecialVocab reads them from
//    tokenizer.json / tokenizer_config.json / special_tokens_map.json / config.json.
// Every file is treated as hostile: sizes, ids and types are validated, errors are one line naming the file.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "edgeq/formats/vocab.h"

namespace edgeq {

// What a SentencePiece model file holds besides its pieces (not all of it goes to GGUF).
struct SentencePieceInfo {
  int32_t model_type = 1;  // trainer_spec.model_type: 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR
  bool byte_fallback = false;
  bool add_dummy_prefix = true;           // normalizer_spec.add_dummy_prefix
  bool remove_extra_whitespaces = true;   // normalizer_spec.remove_extra_whitespaces
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;  // trainer_spec ids
};

// Parses a SentencePiece tokenizer.model: tokens, scores and types as llama.cpp's converter writes them
// (USER_DEFINED pieces become NORMAL, as SentencePieceProcessor's Is* predicates classify them).
// `n_vocab` (config.json vocab_size) pads with "[PAD<i>]" UNUSED tokens (score -10000) when larger than the
// piece count; smaller is an error. Sets model = "llama", pre = "default". No special ids (see apply_special_vocab).
Vocab load_sentencepiece_model(const std::string& path, std::optional<uint64_t> n_vocab = std::nullopt,
                               SentencePieceInfo* info = nullptr);
Vocab parse_sentencepiece_model(const uint8_t* data, uint64_t size, const std::string& name,
                                std::optional<uint64_t> n_vocab = std::nullopt, SentencePieceInfo* info = nullptr);

// Recognises tokenizer.ggml.pre from a tokenizer.json pre_tokenizer (JSON text of the "pre_tokenizer" value):
// "llama-bpe", "qwen2", "gpt-2", "smollm", ...; nullopt when unrecognised.
std::optional<std::string> identify_bpe_pre(const std::string& pre_tokenizer_json);

// Parses a byte-level BPE tokenizer.json: vocab + added tokens (CONTROL when special or looking special
// like "<|...|>", USER_DEFINED otherwise), merges (both "a b" and ["a","b"] forms; spaces inside a pair
// part are encoded as U+0120 like gguf-py), model = "gpt2", pre identified (or `force_pre` when not empty;
// an unrecognised pre-tokenizer without force_pre is an error naming the regex).
// `n_vocab` pads missing ids with "[PAD<i>]" UNUSED tokens. Also loads the added tokens' ids used by
// apply_special_vocab. No special ids are set here.
Vocab load_tokenizer_json(const std::string& path, std::optional<uint64_t> n_vocab = std::nullopt,
                          const std::string& force_pre = "");

// gguf-py SpecialVocab: bos/eos/unk/sep/pad ids from tokenizer_config.json's <typ>_token (looked up among
// tokenizer.json's added_tokens, or tokenizer_config.json's added_tokens_decoder when there is no
// tokenizer.json; special_tokens_map.json is consulted when tokenizer_config.json has no entry), then
// config.json's <typ>_token_id; add_bos/add_eos from tokenizer_config.json; chat_template from
// tokenizer_config.json (a list of named templates: the one named "default"). Ids >= vocab size are ignored.
void apply_special_vocab(Vocab& v, const std::string& dir);

// The whole tokenizer of an HF checkpoint directory, as llama.cpp's converter builds it for `arch_model`
// ("llama" prefers tokenizer.model and falls back to tokenizer.json; "gpt2" uses tokenizer.json).
// `n_vocab`: config.json's vocab_size when known.
Vocab load_hf_vocab(const std::string& dir, bool prefer_sentencepiece, std::optional<uint64_t> n_vocab,
                    const std::string& force_pre = "");

// The SentencePiece path exactly as llama.cpp b4748's convert_hf_to_gguf.py takes it (the layout of the arch
// goldens; the rules above follow the gguf-py that wrote tl-8m's golden):
//  - every added_tokens_decoder entry replaces its id, also when it repeats the piece there;
//  - phi3_added_tokens (Phi3MiniModel.set_vocab): those entries and tokenizer.json's added_tokens are CONTROL
//    only when "special", otherwise USER_DEFINED, no U+2581 replacement; else (_create_vocab_sentencepiece)
//    CONTROL when special or looking special, USER_DEFINED with U+2581 turned into spaces;
//  - special ids (SpecialVocab of b4748) only from tokenizer.json's added tokens and config.json's
//    <typ>_token_id (never from the pieces, added_tokens_decoder or special_tokens_map.json);
//  - add_space_prefix from tokenizer_config.json's add_prefix_space when it is a boolean.
// Needs tokenizer.model; n_vocab pads with [PAD<i>] as above.
Vocab load_hf_vocab_b4748_spm(const std::string& dir, std::optional<uint64_t> n_vocab, bool phi3_added_tokens);

}  // namespace edgeq
