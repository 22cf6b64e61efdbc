// Forward pass with a KV cache: evaluate a batch of tokens at consecutive positions after the cached ones.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <utility>
#include <vector>

#include "edgeq/runtime/matmul.h"
#include "edgeq/runtime/model.h"

namespace edgeq::runtime {

// The distinct f32 inputs of a layer's weight products (one input feeds several weights).
enum class MatmulInput { AttnQKV, AttnOut, FfnGateUp, FfnDown };

// Sees every matmul input of the forward pass as computed, before any activation rounding: for the layer's
// `site`, n rows of `width` floats at x with row stride ld (the same values llama.cpp's eval callback gets
// as src1 of its MUL_MAT nodes). Called on the evaluating thread; the rows stay valid only during the call.
class ActivationObserver {
 public:
  virtual ~ActivationObserver() = default;
  virtual void observe(int64_t layer, MatmulInput site, const float* x, int64_t n, int64_t width, int64_t ld) = 0;
  // An MoE layer's expert products (llama.cpp's MUL_MAT_ID): for site FfnGateUp (the rows routed to the expert,
  // input of ffn_gate_exps / ffn_up_exps) and FfnDown (input of ffn_down_exps), called once per expert
  // 0 .. n_expert - 1 in order on every evaluation, n = 0 for an expert no row chose. The dense FfnGateUp
  // observation of an MoE layer is the router's input (ffn_gate_inp).
  virtual void observe_expert(int64_t /*layer*/, MatmulInput /*site*/, int64_t /*expert*/, int64_t /*n_expert*/,
                              const float* /*x*/, int64_t /*n*/, int64_t /*width*/, int64_t /*ld*/) {}
};

struct ContextOptions {
  int64_t n_ctx = 256;  // KV cache capacity (tokens)
  int n_threads = 1;
  // Reproduce llama.cpp's CPU numerics (f16 KV cache, activations rounded to the weight's dot-product type,
  // f16 attention probabilities). false: plain f32 everywhere.
  bool ggml_compat = true;
  ActivationObserver* observer = nullptr;  // optional, not owned (calibration)
  int64_t n_seq = 1;  // sequences eval_seqs evaluates side by side; the cache holds n_ctx tokens for each
};

class Context {
 public:
  Context(const Model& model, const ContextOptions& opt);
  ~Context();

  const Model& model() const { return model_; }
  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return opt_.n_ctx; }
  int n_threads() const { return pool_.size(); }
  void clear() { n_past_ = 0; }  // empties the KV cache

  // Evaluates tokens[0..n) at positions n_past..n_past+n-1 and appends them to the cache.
  // Logits are produced for the last n - first_logit tokens (rows first_logit..n-1), written to
  // logits[(i - first_logit) * n_vocab ...]. first_logit == n: no logits. Throws on a bad token id or
  // when the cache would overflow.
  void eval(const int32_t* tokens, int64_t n, int64_t first_logit, float* logits);

  // Evaluates n_seq independent sequences of len tokens (tokens seq-major, n_seq <= options' n_seq,
  // len <= n_ctx), each from position 0 in its own cache slot, in one batch: every weight is read once for all
  // of them (as llama-perplexity's n_seq = n_batch / n_ctx). Logits for rows first_logit..len-1 of each
  // sequence, seq-major. Each sequence's numbers equal clear() + eval() of it alone (the products' chains do not
  // depend on the batch; sequences eval would treat differently, with fewer than kKernelMaxTokens logit rows or
  // longer than a micro-batch, are evaluated one by one). The cache is empty afterwards.
  void eval_seqs(const int32_t* tokens, int64_t n_seq, int64_t len, int64_t first_logit, float* logits);

  // Layer-major evaluation (calibration streams its statistics one layer at a time): embed writes the token
  // embeddings of tokens[0..n) to x (n × n_embd); eval_layer runs layer il in place on x for n tokens at
  // positions pos0..pos0+n-1, attending to this layer's cached keys/values of positions < pos0 and caching its
  // own. embed followed by eval_layer(0..n_layer-1, pos0 = 0) computes exactly what eval does from an empty
  // cache (same micro-batches, same observer calls); n_past is not changed.
  void embed(const int32_t* tokens, int64_t n, float* x);
  void eval_layer(int64_t il, float* x, int64_t n, int64_t pos0);

  // eval_seqs from layer il0 on: hidden holds the n_seq·len rows entering layer il0 (embed's output for il0 = 0)
  // and is not changed; save (optional) receives the rows entering each layer il0..n_layer-1, one n_seq·len·n_embd
  // block per layer. From the embeddings the logits equal eval_seqs' when eval_seqs batches the sequences (it
  // does unless len - first_logit < kKernelMaxTokens); len <= 512. The budget search (compare/budget.h) replays
  // only the layers after a replaced weight.
  void eval_seqs_from(int64_t il0, const float* hidden, int64_t n_seq, int64_t len, int64_t first_logit, float* logits,
                      float* save = nullptr);

 private:
  // Micro-batches of at most kMaxBatch tokens bound the activation buffers (as llama.cpp's n_ubatch).
  static constexpr int64_t kMaxBatch = 512;
  void check_tokens(const int32_t* tokens, int64_t n) const;  // throws on an id outside the vocabulary
  void prepare(int64_t n, int64_t pos_end);  // buffers for n rows, rope tables up to pos_end
  // x_'s n rows (sequences of seq_len_ rows) through layer il, in place. r0 > 0: after attention only rows
  // r0.. of each sequence go on, compacted to the front of x_ (the last layer: the rows that give logits).
  void layer(int64_t il, int64_t n, int64_t pos0, int64_t r0);
  void attention(int64_t il, int64_t n, int64_t pos0);
  // The FFN of nr rows of h_ (normed) into tmp_: dense GLU (fused gate|up or not) or the experts.
  void ffn(int64_t il, int64_t nr);
  void moe_ffn(int64_t il, int64_t nr);
  int64_t seq_len_ = 0;  // rows per sequence in the current batch (n for a single sequence)
  // Embeds n tokens (sequences of seq_len_ at positions n_past_..), all layers, logits.
  void run_batch(const int32_t* tokens, int64_t n, int64_t first_logit, float* logits);
  // The final norm and the output matrix over the logit rows the last layer left at the front of x_.
  void head(int64_t n, int64_t first_logit, float* logits);
  const Model& model_;
  ContextOptions opt_;
  ThreadPool pool_;
  MatmulScratch scratch_;
  int64_t n_past_ = 0;
  // vcache_: [layer][seq][pos][n_head_kv · head_dim_v]; kcache_: [layer][seq][KV head][pos / 32][head_dim_k]
  // [pos % 32], each head's keys transposed in runtime/src/gemm.h's packed form, the layout attention's Q·Kᵀ reads.
  HugeVector<float> kcache_, vcache_;
  int64_t k_layer_size() const;  // one sequence's keys of one layer
  float* kslot(int64_t il, int64_t seq) { return kcache_.data() + static_cast<size_t>(il * opt_.n_seq + seq) * k_layer_size(); }
  float* vslot(int64_t il, int64_t seq);
  HugeVector<float> x_, h_, q_, k_, v_, att_, ff_gate_, ff_up_, tmp_, xr_, qkv_;
  // MoE: router probabilities, per expert the rows routed to it (gathered input, gate, up, down outputs).
  std::vector<float> moe_probs_, moe_w_;
  std::vector<int32_t> moe_sel_;
  HugeVector<float> moe_x_, moe_g_, moe_u_, moe_d_;
  // y_i = x · W_iᵀ for several weights sharing the input; the activation rounding is done once when the
  // weights share a rounding type.
  void matmul_shared(const float* x, int64_t n, int64_t ld, std::initializer_list<std::pair<const Weight*, float*>> outs);
  std::vector<std::vector<float>> scores_;  // per worker
  std::vector<float> rope_cos_, rope_sin_;   // [pos][n_rot/2], filled lazily
  int64_t rope_filled_ = 0;
  void ensure_rope(int64_t upto);
};

}  // namespace edgeq::runtime
