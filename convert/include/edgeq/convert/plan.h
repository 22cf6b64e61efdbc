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
#include "edgeq/formats/source_tensor.h"

namespace edgeq::convert {

// A planned tensor is a formats SourceTensor named and shaped as in the GGUF (keep_type: the type `convert`
// writes for the chosen --outtype; 1-D tensors stay F32), its loaders applying every transformation.
using edgeq::SourceTensor;

struct ConvertOptions {
  // auto|f32|f16|bf16|q8_0. The default is f16, as convert_hf_to_gguf.py's --outtype default; "auto" is
  // its highest-fidelity mode (f16 when the first tensor is F16, else bf16).
  std::string outtype = "f16";
  std::string force_pre;         // force tokenizer.ggml.pre for an unrecognised BPE pre-tokenizer
  std::string name;              // general.name; empty: the source directory's name
  int threads = 0;               // 0: hardware concurrency
};

// The plan is a ModelSource (path: what was opened; tensors in output order; metadata: general.*, <arch>.*,
// tokenizer.ggml.*), so `quantize` streams it as it is.
struct ConvertPlan : ModelSource {
  std::string arch;    // GGUF architecture: llama, qwen2, qwen3
  std::string outtype;     // the resolved --outtype: f32, f16, bf16 or q8_0 ("auto" resolved as llama.cpp does)
  GgmlType first_source_type = GgmlType::F32;  // dtype of the checkpoint's first tensor (decides "auto")
  uint64_t source_bytes = 0;                  // bytes of tensor data in the source files
  // The architecture's ConvertLayout is HfConverter (arch.h): general.quantization_version is always written,
  // last, as llama.cpp's convert_hf_to_gguf.py does.
  bool hf_converter_layout = false;
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
