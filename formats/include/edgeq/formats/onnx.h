// ONNX model reader: initializers (inline raw/typed data or external data files, zero-copy where the bytes
// are raw little-endian) and recovery of Hugging Face weight names from a torch.onnx export of a Llama-style
// decoder, whose linear weights are called "onnx::MatMul_N" and stored transposed ([in, out]).
//
// The protobuf types stay inside the library: this header exposes plain structs only.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace edgeq {

// ONNX TensorProto.DataType ids.
namespace onnx_dtype {
inline constexpr int32_t FLOAT = 1, UINT8 = 2, INT8 = 3, UINT16 = 4, INT16 = 5, INT32 = 6, INT64 = 7,
                         STRING = 8, BOOL = 9, FLOAT16 = 10, DOUBLE = 11, UINT32 = 12, UINT64 = 13,
                         COMPLEX64 = 14, COMPLEX128 = 15, BFLOAT16 = 16;
}
const char* onnx_dtype_name(int32_t dtype);    // "FLOAT", "BFLOAT16", ...; "?" for unknown ids
uint32_t onnx_dtype_size(int32_t dtype);       // bytes per element; 0 for STRING and unknown ids
bool onnx_dtype_is_float(int32_t dtype);       // FLOAT, FLOAT16, BFLOAT16, DOUBLE: convertible to f32

enum class OnnxStorage { Raw, Typed, External, None };

struct OnnxTensor {
  std::string name;
  int32_t onnx_dtype = 0;
  std::vector<uint64_t> dims;  // as stored, outermost first
  // Little-endian element bytes, n_elements() * onnx_dtype_size(). Points into the mmapped external data
  // file (External); for raw_data (Raw) into the mmapped model file when it came from open(), or into the
  // parser's own copy after parse() (the caller's buffer need not outlive the model); or into a buffer
  // converted from the typed fields float_data/int32_data/int64_data/... (Typed).
  // nullptr with nbytes 0 for STRING tensors.
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  OnnxStorage storage = OnnxStorage::None;
  std::string file;     // the file holding the bytes: the model itself, or the external data file
  uint64_t offset = 0;  // byte offset inside `file`: External data, and Raw data viewed in the mapped model
  uint64_t n_elements() const;
};

// Model hyper-parameters the role recovery checks shapes against (from the HF config.json beside the model).
struct OnnxLlamaShape {
  uint64_t hidden_size = 0;
  uint64_t intermediate_size = 0;
  uint64_t n_layers = 0;
  uint64_t n_heads = 0;
  uint64_t n_kv_heads = 0;  // 0: same as n_heads
  uint64_t head_dim = 0;    // 0: hidden_size / n_heads
  uint64_t vocab_size = 0;
  bool tie_word_embeddings = false;
  // Reads hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
  // head_dim, vocab_size, tie_word_embeddings; throws edgeq::Error naming the file for missing/bad keys.
  static OnnxLlamaShape from_config_json(const std::string& path);
};

// One weight of the HF checkpoint, found in the ONNX graph.
struct OnnxWeight {
  std::string hf_name;             // "model.layers.3.self_attn.q_proj.weight"
  std::string onnx_name;           // the initializer: "onnx::MatMul_1759" or the HF name itself
  std::vector<uint64_t> hf_shape;  // HF layout: [out, in] for linear weights, [n] for norms
  bool transposed = false;         // the initializer is stored as the transpose of hf_shape
  int32_t onnx_dtype = 0;
};

struct OnnxLimits {
  uint64_t max_model_bytes = (1ull << 31) - 1;  // protobuf cannot parse more than 2 GiB
  int recursion_limit = 64;                     // nested messages (subgraphs)
  uint32_t max_rank = 16;
};

class OnnxModel {
 public:
  // Opens model.onnx; external data files are resolved relative to its directory, each mapped once.
  // Throws edgeq::Error naming the file (and tensor) on malformed input.
  static OnnxModel open(const std::string& path, const OnnxLimits& limits = {});
  // Parses an in-memory model. `name` appears in error messages. External data is resolved against
  // `base_dir`; with an empty base_dir any external-data initializer is an error (fuzzing, tests).
  static OnnxModel parse(const uint8_t* data, size_t size, const std::string& name,
                         const std::string& base_dir = {}, const OnnxLimits& limits = {});

  const std::string& path() const;
  int64_t ir_version() const;
  int64_t opset_version() const;  // the default ("ai.onnx") domain's opset, 0 if none
  const std::string& producer_name() const;
  size_t n_nodes() const;

  const std::vector<OnnxTensor>& initializers() const;
  const OnnxTensor* find(std::string_view name) const;

  // Converts a float initializer (FLOAT, FLOAT16, BFLOAT16, DOUBLE) to f32 in its stored layout.
  void tensor_to_f32(const OnnxTensor& t, float* dst) const;

  // Walks the graph and names every weight by its role: model.embed_tokens.weight,
  // model.layers.N.{input_layernorm,post_attention_layernorm}.weight,
  // model.layers.N.self_attn.{q,k,v,o}_proj.weight (and .bias when present),
  // model.layers.N.mlp.{gate,up,down}_proj.weight, model.norm.weight, lm_head.weight (absent when tied).
  // Roles come from the data flow (norm -> 3 projections -> RoPE/attention -> o_proj -> residual;
  // norm -> gate (SiLU) * up -> down; final norm -> lm_head); node and initializer names that carry HF paths
  // are cross-checked against it. Every role must be found exactly once with the shape `cfg` implies,
  // else edgeq::Error naming what is missing, duplicated or mis-shaped.
  // Order: embedding, then per layer input_layernorm, q, k, v, o, post_attention_layernorm, gate, up, down,
  // then model.norm, lm_head.
  std::vector<OnnxWeight> recover_hf_weights(const OnnxLlamaShape& cfg) const;

  // Writes the weight's values as f32 in HF layout (transposing back with a blocked transpose when
  // w.transposed). Values are converted exactly (f32 copied bit for bit, f16/bf16 widened).
  // Throws edgeq::Error naming the file and tensor for a non-float initializer, a size mismatch or NaN/Inf.
  void load_f32(const OnnxWeight& w, float* dst) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;  // copies share the parsed model and the mapped files
};

}  // namespace edgeq
