// A decoder-only transformer loaded from GGUF for evaluation: the architectures of the table (arch/arch.h) marked
// runtime (llama and Mixtral-style MoE, qwen2, qwen3, gemma, gemma2, phi3); their traits are copied into
// ModelConfig.
// Weights stay in the memory-mapped file (no copy); only the small norm/bias vectors are widened to f32.
// Everything is validated at load, before any compute: architecture, hyperparameters, every tensor's
// presence, shape and type (must be dequantizable). A weight may be palettized (formats/palette_layout.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "edgeq/arch/arch.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/runtime/matmul.h"

namespace edgeq::runtime {

enum class RopeMode { Normal, Neox };  // Normal: adjacent pairs (llama); Neox: pairs (i, i + n_rot/2)

struct ModelConfig {
  std::string arch;  // general.architecture
  const ::edgeq::arch::Arch* traits = nullptr;  // its table entry
  std::string name;  // general.name or the file name
  int64_t n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0;
  int64_t head_dim_k = 0, head_dim_v = 0;  // key_length / value_length
  int64_t n_vocab = 0, n_ctx_train = 0, n_rot = 0;
  float rms_eps = 1e-5f;
  float rope_base = 10000.f;
  RopeMode rope_mode = RopeMode::Normal;
  bool has_qkv_bias = false;  // qwen2
  bool has_qk_norm = false;   // qwen3
  bool tied_output = false;   // output.weight absent: token_embd reused
  int64_t n_expert = 0, n_expert_used = 0;  // <arch>.expert_count / expert_used_count (0: dense FFN)
  int64_t n_swa = 0;          // sliding window (keys older than n_swa positions masked) on swa layers; 0: none
  int64_t n_ctx_orig = 0;     // LongRoPE: rope.scaling.original_context_length (long factors beyond it)
  float embd_scale = 1.f;     // token embeddings multiplied by it (gemma: sqrt(n_embd))
  float q_scale = 1.f;        // q multiplied by it after RoPE (gemma, phi3); then kq_scale is 1
  float kq_scale = 1.f;       // the softmax's scale on Q·Kᵀ
  float attn_softcap = 0.f;   // scores = cap*tanh(scores/cap) before the softmax; 0: none
  float final_softcap = 0.f;  // logits likewise
  float rope_attn_factor = 1.f;  // multiplies RoPE's cos/sin (rope.scaling.attn_factor)
  bool swa_layer(int64_t il) const;  // whether layer il uses the sliding window
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  std::vector<float> bq, bk, bv;          // qwen2 (empty otherwise)
  std::vector<float> q_norm, k_norm;      // qwen3 (empty otherwise)
  std::vector<float> attn_post_norm, ffn_post_norm;  // gemma2 (empty otherwise)
  Weight wq, wk, wv, wo, w_gate, w_up, w_down;
  Weight wqkv;                            // fused [q; k; v] rows (phi3; wq/wk/wv empty then)
  Weight gate_inp;                        // MoE router [n_embd, n_expert] (w_gate/w_up/w_down empty then)
  std::vector<Weight> gate_exps, up_exps, down_exps;  // one 2-D view per expert of the 3-D tensors
};

class Model {
 public:
  // Opens, validates everything, throws edgeq::Error "<path>: tensor <name>: <problem>".
  static Model load(const std::string& path);
  // The same checks on a header without tensor data (GgufFile::parse_header), e.g. a file about to be
  // written: hyperparameters, every tensor's presence, shape and type. Architectures the runtime does not
  // evaluate are passed over. Throws edgeq::Error.
  static void check_header(const GgufFile& header);
  static bool supports(const std::string& arch);  // the table entry for it says runtime (arch/arch.h)

  const ModelConfig& config() const { return cfg_; }
  const GgufFile& gguf() const { return file_; }
  const std::string& path() const { return file_.path(); }

  const Weight& token_embd() const { return tok_embd_; }
  const Weight& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  const std::vector<float>& rope_freq_factors() const { return rope_freqs_; }  // empty when absent
  // LongRoPE factors for a context of n_ctx tokens per sequence (long beyond n_ctx_orig), else rope_freq_factors.
  const std::vector<float>& rope_factors_for(int64_t n_ctx) const;
  const std::vector<LayerWeights>& layers() const { return layers_; }

  // Points the weights named `name` (a GGUF tensor name; with a tied output both token_embd and output) at
  // another tensor of the same dims, e.g. one weight of a quantized file: the budget search evaluates the
  // model with one tensor replaced (compare/budget.h). The data must outlive its use; call it between
  // evaluations only. Throws edgeq::Error for an unknown name, other dims or a type the runtime cannot
  // multiply. Returns the view replaced (to put it back).
  TensorView replace_weight(const std::string& name, const TensorView& v);

 private:
  static Model build(GgufFile file, bool with_data);
  GgufFile file_;
  ModelConfig cfg_;
  Weight tok_embd_, output_;
  std::vector<float> output_norm_, rope_freqs_, rope_long_, rope_short_;
  std::vector<LayerWeights> layers_;
};

}  // namespace edgeq::runtime
