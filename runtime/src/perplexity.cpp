#include "edgeq/runtime/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "edgeq/base/error.h"
#include "edgeq/runtime/forward.h"
#include "edgeq/runtime/kld.h"

namespace edgeq::runtime {

double nll_of(const float* logits, int64_t n_vocab, int32_t tok) {
  float max_logit = logits[0];
  for (int64_t i = 1; i < n_vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum_exp = 0.0;
  for (int64_t i = 0; i < n_vocab; ++i) sum_exp += std::exp(logits[i] - max_logit);
  return -(logits[tok] - max_logit - std::log(sum_exp));
}

uint64_t hash_tokens(const int32_t* ids, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t v = static_cast<uint32_t>(ids[i]);
    for (int b = 0; b < 4; ++b) {
      h ^= (v >> (8 * b)) & 0xff;
      h *= 1099511628211ull;
    }
  }
  return h;
}

// The first weight matrix holding NaN or Inf (only looked for once the output has gone non-finite).
static std::string first_non_finite_tensor(const Model& model) {
  std::vector<const Weight*> ws = {&model.token_embd()};
  for (const auto& l : model.layers())
    for (const Weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) ws.push_back(w);
  ws.push_back(&model.output());
  std::vector<float> row;
  for (const Weight* w : ws) {
    row.resize(w->dims[0]);
    for (uint64_t r = 0; r < w->n_rows(); ++r) {
      dequantize_rows(*w, static_cast<int64_t>(r), static_cast<int64_t>(r) + 1, row.data());
      for (float x : row)
        if (!std::isfinite(x)) return fmt::format("tensor {} row {} holds {}", w->name, r, x);
    }
  }
  return "no weight is NaN or Inf; the activations overflowed";
}

int64_t text_chunks(const std::vector<int32_t>& tokens, int64_t n_ctx, int64_t n_vocab, bool add_bos, int32_t bos_id,
                    int64_t max_chunks, const std::string& context, const std::string& text) {
  if (add_bos && (bos_id < 0 || bos_id >= n_vocab)) fail("{}: BOS id {} is outside the vocabulary", context, bos_id);
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  if (n_tokens < 2 * n_ctx)
    fail("{}: the text tokenizes to only {} tokens; at least {} are needed for a context of {}", text, n_tokens,
         2 * n_ctx, n_ctx);
  for (int64_t i = 0; i < n_tokens; ++i)
    if (tokens[i] < 0 || tokens[i] >= n_vocab)
      fail("{}: token {} at position {} is outside the vocabulary (size {})", context, tokens[i], i, n_vocab);
  int64_t n_chunk = n_tokens / n_ctx;
  if (max_chunks >= 0) n_chunk = std::min(n_chunk, max_chunks);
  return n_chunk;
}

void copy_chunk(const std::vector<int32_t>& tokens, int64_t ic, int64_t n_ctx, bool add_bos, int32_t bos_id,
                int32_t* out) {
  const int32_t* src = tokens.data() + ic * n_ctx;
  std::copy(src, src + n_ctx, out);
  if (add_bos) out[0] = bos_id;
}

PerplexityResult perplexity(const Model& model, const std::vector<int32_t>& tokens, bool add_bos, int32_t bos_id,
                            const PerplexityOptions& opt) {
  const ModelConfig& c = model.config();
  const int64_t n_ctx = opt.n_ctx;
  const int64_t n_vocab = c.n_vocab;
  if (n_ctx < 4 || n_ctx > (int64_t(1) << 20)) fail("{}: perplexity: context size {} is out of range (>= 4)", model.path(), n_ctx);
  if (opt.max_chunks == 0 || opt.max_chunks < -1) fail("perplexity: --chunks {} must be >= 1", opt.max_chunks);
  if (!opt.kld_in.empty() && !opt.kld_base_out.empty()) fail("perplexity: --kld and --kld-base are exclusive");
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  int64_t n_chunk = text_chunks(tokens, n_ctx, n_vocab, add_bos, bos_id, opt.max_chunks, model.path() + ": perplexity",
                                opt.text_name.empty() ? model.path() + ": perplexity" : opt.text_name + ": perplexity");
  if (static_cast<uint64_t>(n_ctx) * static_cast<uint64_t>(n_vocab) > (uint64_t(1) << 29))  // 2 GiB of f32 logits
    fail("{}: perplexity: n_ctx {} x vocabulary {} logits is too large", model.path(), n_ctx, n_vocab);
  const int64_t first = n_ctx / 2;
  const int64_t n_scored = n_ctx - 1 - first;
  const int64_t nv = kld_row_len(n_vocab);

  std::optional<KldBaseReader> reader;
  std::optional<KldBaseWriter> writer;
  if (!opt.kld_in.empty()) {
    reader.emplace(opt.kld_in);
    const KldHeader& h = reader->header();
    if (h.n_ctx != n_ctx) fail("{}: KLD base was computed with n_ctx {}, this run uses {}", opt.kld_in, h.n_ctx, n_ctx);
    if (h.n_vocab != n_vocab) fail("{}: KLD base has a vocabulary of {}, the model {}", opt.kld_in, h.n_vocab, n_vocab);
    if (h.format == KldBaseFormat::Edgeq && (h.add_bos != 0) != add_bos)
      fail("{}: KLD base and this model disagree on adding BOS", opt.kld_in);
    if (static_cast<int64_t>(h.n_chunks) * n_ctx > n_tokens)
      fail("{}: KLD base covers {} chunks of {} tokens, the text only {} tokens (other text or tokenizer)", opt.kld_in,
           h.n_chunks, n_ctx, n_tokens);
    if (h.format == KldBaseFormat::Llama) {  // the ids themselves are stored: name the first difference
      const auto d = std::mismatch(h.tokens.begin(), h.tokens.end(), tokens.begin());
      if (d.first != h.tokens.end())
        fail("{}: KLD base was computed on different tokens (other text or tokenizer): position {} holds {}, here {}",
             opt.kld_in, d.first - h.tokens.begin(), *d.first, *d.second);
    } else if (hash_tokens(tokens.data(), static_cast<size_t>(h.n_chunks) * n_ctx) != h.tokens_hash) {
      fail("{}: KLD base was computed on different tokens (other text or tokenizer)", opt.kld_in);
    }
    n_chunk = h.n_chunks;
    if (opt.max_chunks >= 0) n_chunk = std::min<int64_t>(n_chunk, opt.max_chunks);
  } else if (!opt.kld_base_out.empty()) {
    KldHeader h;
    h.format = opt.kld_base_format;
    if (h.format == KldBaseFormat::Llama) h.tokens.assign(tokens.begin(), tokens.begin() + n_chunk * n_ctx);
    h.n_ctx = static_cast<uint32_t>(n_ctx);
    h.n_vocab = static_cast<uint32_t>(n_vocab);
    h.n_chunks = static_cast<uint32_t>(n_chunk);
    h.add_bos = add_bos ? 1 : 0;
    h.tokens_hash = hash_tokens(tokens.data(), static_cast<size_t>(n_chunk * n_ctx));
    h.model_name = c.name;
    h.model_path = model.path();
    writer.emplace(opt.kld_base_out, h);
  }

  // Chunks are evaluated kBatchTokens at a time, each in its own sequence (llama-perplexity's n_seq = n_batch /
  // n_ctx): the weights are read once per batch instead of once per chunk. Bounded by the logits' memory.
  constexpr int64_t kBatchTokens = 1024;
  constexpr uint64_t kMaxLogitBytes = uint64_t(256) << 20;
  const uint64_t chunk_logit_bytes = static_cast<uint64_t>(n_scored) * static_cast<uint64_t>(n_vocab) * sizeof(float);
  const int64_t n_seq = std::clamp<int64_t>(std::min<int64_t>(kBatchTokens / n_ctx, static_cast<int64_t>(kMaxLogitBytes / chunk_logit_bytes)),
                                            1, n_chunk);
  ContextOptions co;
  co.n_ctx = n_ctx;
  co.n_seq = n_seq;
  co.n_threads = opt.n_threads;
  co.ggml_compat = opt.ggml_compat;
  Context ctx(model, co);

  PerplexityResult res;
  res.n_tokens = n_tokens;
  res.n_chunks = n_chunk;
  res.n_ctx = n_ctx;
  HugeVector<float> batch_logits(static_cast<size_t>(n_seq * n_scored * n_vocab));
  std::vector<int32_t> chunk(static_cast<size_t>(n_ctx)), batch(static_cast<size_t>(n_seq * (n_ctx - 1)));
  std::vector<uint16_t> rows(reader || writer ? static_cast<size_t>(n_scored * nv) : 0);
  KldAccum acc;
  double nll = 0.0, nll2 = 0.0;
  int64_t count = 0;
  const auto t0 = std::chrono::steady_clock::now();

  for (int64_t ic = 0; ic < n_chunk; ++ic) {
    const int64_t is = ic % n_seq;  // the chunk's sequence in its batch
    if (is == 0) {
      // The last token's logits are never scored, so each chunk's first n_ctx-1 tokens suffice.
      const int64_t ns = std::min(n_seq, n_chunk - ic);
      for (int64_t s = 0; s < ns; ++s) {
        copy_chunk(tokens, ic + s, n_ctx, add_bos, bos_id, chunk.data());
        std::copy(chunk.begin(), chunk.end() - 1, batch.begin() + s * (n_ctx - 1));
      }
      ctx.eval_seqs(batch.data(), ns, n_ctx - 1, first, batch_logits.data());
    }
    const float* logits = batch_logits.data() + is * n_scored * n_vocab;
    const int32_t* src = tokens.data() + ic * n_ctx;
    const int32_t* target = src + first + 1;
    if (reader) {
      reader->read(rows.data(), rows.size());
      for (int64_t j = 0; j < n_scored; ++j)
        kld_accumulate(logits + j * n_vocab, n_vocab, rows.data() + j * nv, target[j], acc);
      nll = acc.sum_nll;
      nll2 = acc.sum_nll2;
      count = acc.count;
    } else {
      for (int64_t j = 0; j < n_scored; ++j) {
        const double v = writer ? log_softmax_row(logits + j * n_vocab, n_vocab, rows.data() + j * nv, target[j])
                                : nll_of(logits + j * n_vocab, n_vocab, target[j]);
        nll += v;
        nll2 += v * v;
      }
      count += n_scored;
      if (writer) writer->write(rows.data(), rows.size());
    }
    if (!std::isfinite(nll))
      fail("{}: perplexity: chunk {} gives non-finite log-probabilities: {}", model.path(), ic + 1,
           first_non_finite_tensor(model));
    const double running = std::exp(nll / static_cast<double>(count));
    res.chunk_ppl.push_back(running);
    if (opt.progress) {
      ChunkProgress p;
      p.chunk = static_cast<int>(ic + 1);
      p.n_chunks = static_cast<int>(n_chunk);
      p.ppl = running;
      p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      p.kld = reader ? acc.sum_kld / static_cast<double>(acc.count) : -1.0;
      opt.progress(p);
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.count = count;
  const double mean = nll / static_cast<double>(count);
  const double mean2 = nll2 / static_cast<double>(count);
  res.mean_nll = mean;
  res.ppl = std::exp(mean);
  const double var = mean2 - mean * mean;
  res.ppl_err = var > 0 && count > 1 ? res.ppl * std::sqrt(var / static_cast<double>(count - 1)) : 0.0;
  // A reference that guesses uniformly (flat logits: PPL equals the vocabulary size, within 5%) or whose PPL is
  // not finite makes every comparison against it meaningless ("+0.00 %"): the base is not written, the
  // evaluation is an error. A PPL far above the vocabulary size is a model that is confidently wrong (an
  // untrained model with peaked random logits, as the architecture fixtures): a real reference.
  const auto near_uniform = [n_vocab](double ppl) {
    return !std::isfinite(ppl) || std::fabs(std::log(ppl / static_cast<double>(n_vocab))) < std::log(1.05);
  };
  if (writer && near_uniform(res.ppl))
    fail("{}: as a reference its perplexity {:.1f} is near the vocabulary size {} (a uniform guess): the model is "
         "broken; no KLD base written",
         model.path(), res.ppl, n_vocab);
  if (writer) writer->finish();
  if (reader) {
    if (n_chunk == static_cast<int64_t>(reader->header().n_chunks)) reader->finish();
    KldStats s = kld_finalize(std::move(acc));
    // The same for a base read back (llama-perplexity's, or edgeq's from an older version): no comparison
    // against a reference that guesses uniformly, or whose perplexity is not finite.
    if (near_uniform(s.ppl_base))
      fail("{}: the reference log-probabilities give perplexity {:.1f}, near the vocabulary size {} (a uniform "
           "guess) or not finite: the reference model was broken; no comparison made",
           opt.kld_in, s.ppl_base, n_vocab);
    s.base_model = reader->header().model_name.empty() ? opt.kld_in : reader->header().model_name;
    res.kld = s;
  }
  return res;
}

}  // namespace edgeq::runtime
