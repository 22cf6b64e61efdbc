// The conversion plan: what a GGUF made from a checkpoint will hold, before any tensor is read.
// `edgeq convert` streams a plan into a GGUF writer; `edgeq quantize` streams the same plan through the
// quantizers in one pass (no intermediate F16 file). Tensors are loaded one at a time, on demand.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "edgeq/formats/ggml_types.h"
#include "edgeq/formats/gguf.h"

namespace edgeq::convert {

struct PlannedTensor {
  std::string name;             // GGUF name: token_embd.weight, blk.0.attn_q.weight, ...
  std::vector<uint64_t> dims;   // GGUF order: dims[0] is the row length
  GgmlType source_type;         // the checkpoint's own precision: F32, F16 or BF16
  GgmlType default_type;        // the type `convert` writes for the chosen --outtype (1-D tensors stay F32)
  // Fills dst (n_elements floats) with the tensor's values after every transformation (Q/K permutation,
  // transposes of ONNX weights). Throws edgeq::Error naming the source file and tensor on bad data
  // (NaN/Inf included).
  std::function<void(float* dst)> load_f32;
  uint64_t n_elements() const {
    uint64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
};

struct ConvertOptions {
  std::string outtype = "auto";  // auto|f32|f16|bf16|q8_0
  std::string force_pre;         // force tokenizer.ggml.pre for an unrecognised BPE pre-tokenizer
  int threads = 0;               // 0: hardware concurrency
};

struct ConvertPlan {
  std::string source;  // what was opened (directory or .onnx path)
  std::string arch;    // GGUF architecture: llama, qwen2, qwen3
  std::vector<std::pair<std::string, GgufValue>> metadata;  // general.*, <arch>.*, tokenizer.ggml.*
  std::vector<PlannedTensor> tensors;                      // in output order
  // Keeps the mapped source files alive while the plan is in use.
  std::vector<std::shared_ptr<void>> keep_alive;
};

// Opens an HF checkpoint directory (config.json + safetensors + tokenizer files) or an ONNX export
// (model.onnx, with config.json and tokenizer files beside it) and plans its GGUF.
// Throws edgeq::Error for an unknown architecture, a tensor that maps to nothing, missing config keys,
// shape mismatches or missing shards.
ConvertPlan plan_conversion(const std::string& src, const ConvertOptions& opts);

}  // namespace edgeq::convert
