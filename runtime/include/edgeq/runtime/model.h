// A decoder-only transformer loaded from GGUF for evaluation: architectures llama, qwen2, qwen3.
// Weights stay in the memory-mapped file (no copy); only the small norm/bias vectors are widened to f32.
// Everything is validated at load, before any compute: architecture, hyperparameters, every tensor's
// presence, shape and type (must be dequantizable). A weight may be palettized (formats/palette_layout.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "edgeq/formats/gguf.h"
#include "edgeq/runtime/matmul.h"

namespace edgeq::runtime {

enum class RopeMode { Normal, Neox };  // Normal: adjacent pairs (llama); Neox: pairs (i, i + n_rot/2)

struct ModelConfig {
  std::string arch;  // "llama", "qwen2", "qwen3"
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
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  std::vector<float> bq, bk, bv;          // qwen2 (empty otherwise)
  std::vector<float> q_norm, k_norm;      // qwen3 (empty otherwise)
  Weight wq, wk, wv, wo, w_gate, w_up, w_down;
};

class Model {
 public:
  // Opens, validates everything, throws edgeq::Error "<path>: tensor <name>: <problem>".
  static Model load(const std::string& path);
  // The same checks on a header without tensor data (GgufFile::parse_header), e.g. a file about to be
  // written: hyperparameters, every tensor's presence, shape and type. Architectures the runtime does not
  // evaluate are passed over. Throws edgeq::Error.
  static void check_header(const GgufFile& header);
  static bool supports(const std::string& arch);  // llama, qwen2, qwen3

  const ModelConfig& config() const { return cfg_; }
  const GgufFile& gguf() const { return file_; }
  const std::string& path() const { return file_.path(); }

  const Weight& token_embd() const { return tok_embd_; }
  const Weight& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  const std::vector<float>& rope_freq_factors() const { return rope_freqs_; }  // empty when absent
  const std::vector<LayerWeights>& layers() const { return layers_; }

 private:
  static Model build(GgufFile file, bool with_data);
  GgufFile file_;
  ModelConfig cfg_;
  Weight tok_embd_, output_;
  std::vector<float> output_norm_, rope_freqs_;
  std::vector<LayerWeights> layers_;
};

}  // namespace edgeq::runtime
