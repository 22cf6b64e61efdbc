// Perplexity and KL divergence exactly as llama.cpp's llama-perplexity (b4748) computes them.
//
// Protocol: the whole text is tokenized once (BOS first when the vocab adds BOS); n_chunk = n_tokens / n_ctx
// (at least 2·n_ctx tokens are required); chunk c is tokens [c·n_ctx, (c+1)·n_ctx), evaluated from an empty
// KV cache with its first token replaced by BOS when add_bos; with first = n_ctx/2 the logits at positions
// first … n_ctx−2 are scored against the tokens at first+1 … n_ctx−1. NLL in double; PPL = exp(mean NLL),
// ± = PPL·sqrt((mean(nll²) − mean(nll)²)/(count−1)).
//
// KLD base file (--kld-base): header, then one zstd frame holding, for every chunk and scored position, the
// reference's log-probabilities over the full vocabulary in llama.cpp's 16-bit row format (2 floats scale and
// min log-prob, then n_vocab uint16 levels, padded to nv = 2·((n_vocab+1)/2)+4 uint16 per row). Header
// (little endian): "EDGEQKLD" magic, u32 version (1), u32 n_ctx, u32 n_vocab, u32 n_chunks, u32 add_bos,
// u64 FNV-1a hash of the n_chunks·n_ctx int32 token ids, u32 name length + model name, u32 path length + path.
// Bases written by llama-perplexity --kl-divergence-base are read too, and written with KldBaseFormat::Llama
// (layout in kld.h): the same rows, uncompressed, after the token ids themselves.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "edgeq/runtime/model.h"

namespace edgeq::runtime {

// The two layouts of a KLD base file (kld.h describes them).
enum class KldBaseFormat { Edgeq, Llama };

struct ChunkProgress {
  int chunk = 0;        // 1-based index of the finished chunk
  int n_chunks = 0;
  double ppl = 0;       // running PPL
  double seconds = 0;   // elapsed since the start of evaluation
  double kld = -1;      // running mean KLD (KLD mode), else -1
};

struct PerplexityOptions {
  int64_t n_ctx = 256;
  int64_t max_chunks = -1;  // --chunks; < 0: all
  int n_threads = 1;
  bool ggml_compat = true;
  std::string kld_base_out;  // write the reference log-probs here
  KldBaseFormat kld_base_format = KldBaseFormat::Edgeq;  // layout of kld_base_out (kld_in: either, by its magic)
  std::string kld_in;        // compare against this base file
  std::string text_name;     // the evaluated text's file, named in errors about the text (default: the model)
  std::function<void(const ChunkProgress&)> progress;
};

struct KldStats {
  double mean_kld = 0, mean_kld_err = 0, median_kld = 0, p90_kld = 0, p95_kld = 0, p99_kld = 0,
         p999_kld = 0, max_kld = 0, min_kld = 0;
  double same_top_pct = 0, same_top_err_pct = 0;
  double mean_dp_pct = 0, mean_dp_err_pct = 0, rms_dp_pct = 0, rms_dp_err_pct = 0, max_dp_pct = 0;
  double ppl = 0, ppl_err = 0, ppl_base = 0, ppl_base_err = 0;
  double ln_ppl_ratio = 0, ln_ppl_ratio_err = 0, ppl_ratio = 0, ppl_ratio_err = 0, cor_pct = 0;
  int64_t count = 0;
  std::string base_model;
};

struct PerplexityResult {
  double ppl = 0, ppl_err = 0;
  double mean_nll = 0;
  int64_t n_tokens = 0;   // tokens in the text (with BOS)
  int64_t n_chunks = 0;
  int64_t n_ctx = 0;
  int64_t count = 0;      // scored tokens
  double seconds = 0;     // evaluation time
  std::vector<double> chunk_ppl;  // running PPL after each chunk
  std::optional<KldStats> kld;
};

// The text set-up llama-perplexity and llama-imatrix share (perplexity here, calibrate::calibrate):
// `context` ("<model>: perplexity") prefixes the errors. Checks that the BOS id (when add_bos) and every token
// are inside the vocabulary and that the text holds at least 2·n_ctx tokens (`text` names it in that error);
// returns n_chunk = n_tokens / n_ctx, at most max_chunks (< 0: all).
int64_t text_chunks(const std::vector<int32_t>& tokens, int64_t n_ctx, int64_t n_vocab, bool add_bos, int32_t bos_id,
                    int64_t max_chunks, const std::string& context, const std::string& text);
// Chunk ic: tokens [ic·n_ctx, (ic+1)·n_ctx) into out (n_ctx ids), its first token replaced by BOS when add_bos.
void copy_chunk(const std::vector<int32_t>& tokens, int64_t ic, int64_t n_ctx, bool add_bos, int32_t bos_id,
                int32_t* out);

// tokens: the whole text as tokenized (BOS already prepended when add_bos).
PerplexityResult perplexity(const Model& model, const std::vector<int32_t>& tokens, bool add_bos,
                            int32_t bos_id, const PerplexityOptions& opt);

// llama.cpp's per-row log-softmax NLL: max, sum of expf(l - max) in double, nll = max + log(sum) - l[tok].
double nll_of(const float* logits, int64_t n_vocab, int32_t tok);

// 64-bit FNV-1a of int32 token ids (little-endian bytes).
uint64_t hash_tokens(const int32_t* ids, size_t n);

}  // namespace edgeq::runtime
