// The conversion plan: what a GGUF made from a checkpoint will hold, before any tensor is read.
// `edgeq convert` streams a plan into a GGUF writer; `edgeq quantize` streams the same plan through the
// quantizers in one pass (no intermediate F16 file). Tensors are loaded one at a time, on demand.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
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
  // Optional (edgeq extension): fills dst (nrows * dims[0] floats) with rows [row0, row0 + nrows) of the
  // same values, so a consumer can stream a large tensor in slabs. Empty when only load_f32 exists.
  std::function<void(uint64_t row0, uint64_t nrows, float* dst)> load_rows;
  // Optional: drops the source pages of this tensor from memory once it is consumed (madvise DONTNEED on
  // the mapped bytes; a later load still works, it reads them again).
  std::function<void()> release;
  uint64_t n_elements() const {
    uint64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
};

struct ConvertOptions {
  // auto|f32|f16|bf16|q8_0. The default is f16, as convert_hf_to_gguf.py's --outtype default; "auto" is
  // its highest-fidelity mode (f16 when the first tensor is F16, else bf16).
  std::string outtype = "f16";
  std::string force_pre;         // force tokenizer.ggml.pre for an unrecognised BPE pre-tokenizer
  std::string name;              // general.name; empty: the source directory's name
  int threads = 0;               // 0: hardware concurrency
};

struct ConvertPlan {
  std::string source;  // what was opened (directory or .onnx path)
  std::string arch;    // GGUF architecture: llama, qwen2, qwen3
  std::vector<std::pair<std::string, GgufValue>> metadata;  // general.*, <arch>.*, tokenizer.ggml.*
  std::vector<PlannedTensor> tensors;                      // in output order
  std::string outtype;     // the resolved --outtype: f32, f16, bf16 or q8_0 ("auto" resolved as llama.cpp does)
  GgmlType first_source_type = GgmlType::F32;  // dtype of the checkpoint's first tensor (decides "auto")
  uint64_t source_bytes = 0;                  // bytes of tensor data in the source files
  // Keeps the mapped source files alive while the plan is in use.
  std::vector<std::shared_ptr<void>> keep_alive;
};

// Where a checkpoint's parts are: `src` is an HF checkpoint directory (safetensors; a directory holding only
// model.onnx is an ONNX export) or a .onnx file (config.json and tokenizer files beside it).
struct CheckpointLocation {
  std::string dir;        // holds config.json and the tokenizer files
  std::string onnx_path;  // the ONNX model; empty for a safetensors checkpoint
};
// Throws edgeq::Error for a missing path or anything else.
CheckpointLocation locate_checkpoint(const std::string& src);

// Opens an HF checkpoint directory (config.json + safetensors + tokenizer files) or an ONNX export
// (model.onnx, with config.json and tokenizer files beside it) and plans its GGUF.
// Throws edgeq::Error for an unknown architecture, a tensor that maps to nothing, missing config keys,
// shape mismatches or missing shards.
ConvertPlan plan_conversion(const std::string& src, const ConvertOptions& opts);

// The type `convert --outtype <outtype>` writes for a tensor (llama.cpp's converter rules): 1-D tensors,
// "*_norm.weight" and anything not ending in ".weight" stay F32; 2-D weights take the outtype; q8_0 falls back
// to F16 for rows that are not a multiple of 32. outtype must be resolved (not "auto").
GgmlType output_type_for(const std::string& gguf_name, const std::vector<uint64_t>& dims, const std::string& outtype);
// llama_ftype for general.file_type: f32 0, f16 1, q8_0 7, bf16 32.
uint32_t file_type_for(const std::string& outtype);
// Resolves "auto" from the first tensor's dtype as convert_hf_to_gguf.py does: F16 -> "f16", otherwise "bf16".
// Other values are checked and returned; an unknown outtype is an error.
std::string resolve_outtype(const std::string& outtype, GgmlType first_source_type);

}  // namespace edgeq::convert
