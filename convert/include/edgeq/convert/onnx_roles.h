// Recovery of Hugging Face weight names from a torch.onnx export of a Llama-style decoder, whose linear
// weights are called "onnx::MatMul_N" and stored transposed ([in, out]). Roles come from the data flow
// (norm -> 3 projections -> RoPE/attention -> o_proj -> residual; norm -> gate (SiLU) * up -> down;
// final norm -> lm_head); node and initializer names that carry HF paths are cross-checked against it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "edgeq/formats/onnx.h"

namespace edgeq::convert {

// Model hyper-parameters the role recovery checks shapes against (from the HF config.json beside the model, read by plan_conversion).
struct OnnxLlamaShape {
  uint64_t hidden_size = 0;
  uint64_t intermediate_size = 0;
  uint64_t n_layers = 0;
  uint64_t n_heads = 0;
  uint64_t n_kv_heads = 0;  // 0: same as n_heads
  uint64_t head_dim = 0;    // 0: hidden_size / n_heads
  uint64_t vocab_size = 0;
  bool tie_word_embeddings = false;
};

// One weight of the HF checkpoint, found in the ONNX graph.
struct OnnxWeight {
  std::string hf_name;             // "model.layers.3.self_attn.q_proj.weight"
  std::string onnx_name;           // the initializer: "onnx::MatMul_1759" or the HF name itself
  std::vector<uint64_t> hf_shape;  // HF layout: [out, in] for linear weights, [n] for norms
  bool transposed = false;         // the initializer is stored as the transpose of hf_shape
  int32_t onnx_dtype = 0;
};

// Names every weight by its role: model.embed_tokens.weight,
// model.layers.N.{input_layernorm,post_attention_layernorm}.weight,
// model.layers.N.self_attn.{q,k,v,o}_proj.weight (and .bias when present),
// model.layers.N.mlp.{gate,up,down}_proj.weight, model.norm.weight, lm_head.weight (absent when tied).
// Every role must be found exactly once with the shape `cfg` implies, else edgeq::Error naming what is
// missing, duplicated or mis-shaped. Order: embedding, then per layer input_layernorm, q, k, v, o,
// post_attention_layernorm, gate, up, down, then model.norm, lm_head.
std::vector<OnnxWeight> recover_hf_weights(const OnnxModel& model, const OnnxLlamaShape& cfg);

// Writes the weight's values as f32 in HF layout (transposing back with a blocked transpose when
// w.transposed). Values are converted exactly (f32 copied bit for bit, f16/bf16 widened).
// Throws edgeq::Error naming the file and tensor for a non-float initializer, a size mismatch or NaN/Inf.
void load_onnx_weight(const OnnxModel& model, const OnnxWeight& w, float* dst);

// The shape role recovery checks against, from an HF config.json (plan_conversion's reader: the one place
// config.json is parsed). Throws edgeq::Error naming the file for missing/bad keys.
OnnxLlamaShape onnx_shape_from_config(const std::string& config_path);

}  // namespace edgeq::convert
