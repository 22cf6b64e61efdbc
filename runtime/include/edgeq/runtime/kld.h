// KL-divergence building blocks: llama.cpp's 16-bit log-probability rows, the zstd-compressed base file,
// and the statistics llama-perplexity --kl-divergence prints. Used by perplexity(); exposed for tests.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "edgeq/formats/mapped_file.h"
#include "edgeq/runtime/perplexity.h"

namespace edgeq::runtime {

// uint16 values per row: 2 floats (scale, min log-prob) + n_vocab levels, padded as llama.cpp does.
inline int64_t kld_row_len(int64_t n_vocab) { return 2 * ((n_vocab + 1) / 2) + 4; }

// Fills one row from logits (llama.cpp's log_softmax with uint16 output); returns the NLL of tok.
double log_softmax_row(const float* logits, int64_t n_vocab, uint16_t* row, int32_t tok);

struct KldAccum {
  double sum_nll = 0, sum_nll2 = 0, sum_nll_base = 0, sum_nll_base2 = 0, sum_nll_nll_base = 0;
  double sum_kld = 0, sum_kld2 = 0, sum_p_diff = 0, sum_p_diff2 = 0, sum_p_diff4 = 0;
  float max_p_diff = 0;
  int64_t n_same_top = 0, count = 0;
  std::vector<float> kld_values, p_diff_values;
};

// Compares one row of logits with a base row (llama.cpp's definitions) and accumulates.
void kld_accumulate(const float* logits, int64_t n_vocab, const uint16_t* base_row, int32_t tok, KldAccum& acc);
KldStats kld_finalize(KldAccum acc);  // sorts the value lists; count must be >= 1

// Two on-disk layouts of the same rows:
//  Edgeq: "EDGEQKLD" header (perplexity.h), then the rows in one zstd frame.
//  Llama: llama-perplexity --kl-divergence-base (b4748), uncompressed, native little endian:
//         "_logits_", int32 n_ctx, int32 n_vocab, int32 n_chunk, int32 tokens[n_chunk·n_ctx] (as tokenized, BOS
//         not substituted), then per chunk (n_ctx − 1 − n_ctx/2) rows of kld_row_len(n_vocab) uint16.
//         It names no model and no add_bos flag; the stored tokens take the place of the hash.
// (KldBaseFormat is declared in perplexity.h, whose options select it.)

struct KldHeader {
  KldBaseFormat format = KldBaseFormat::Edgeq;
  uint32_t version = 1;  // Edgeq layout only
  uint32_t n_ctx = 0, n_vocab = 0, n_chunks = 0, add_bos = 0;  // add_bos: Edgeq layout only
  uint64_t tokens_hash = 0;  // of the n_chunks·n_ctx tokens (computed from the stored ids for the Llama layout)
  std::string model_name, model_path;  // empty for the Llama layout
  std::vector<int32_t> tokens;  // Llama layout: the stored n_chunks·n_ctx token ids (the writer needs them too)
};

// True when `path` is an existing regular file that does not start like a KLD base file: writing a base
// there would destroy something else (a model, a text). Reads 8 bytes; the file is not kept as an input.
bool exists_and_not_kld_base(const std::string& path);

class KldBaseWriter {
 public:
  KldBaseWriter(const std::string& path, const KldHeader& h);
  ~KldBaseWriter();
  void write(const uint16_t* data, size_t n);  // n uint16 values
  void finish();                               // flushes the zstd frame and renames the file into place

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class KldBaseReader {
 public:
  explicit KldBaseReader(const std::string& path);  // either layout, told apart by the magic; validates the header
  ~KldBaseReader();
  const KldHeader& header() const;
  void read(uint16_t* dst, size_t n);  // next n uint16 values; throws when the data ends early or is corrupt
  void finish();  // after the last value: checks the frame ends (checksum verified) with nothing after it

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgeq::runtime
