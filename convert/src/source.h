// Private to convert/: the tensor source abstraction shared by the safetensors and ONNX planners.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "edgeq/convert/onnx_roles.h"
#include "edgeq/formats/ggml_types.h"
#include "edgeq/formats/source_tensor.h"

namespace edgeq::convert::detail {

// A checkpoint reader gives each weight as a SourceTensor named as in the checkpoint (HF name), dims in GGUF
// order (the HF shape reversed; the memory layout is the HF one), keep_type = source_type; a non-float tensor
// has source_type I32 and no loaders (the planner reports it if it is used).
// What a reader opened (path), its tensors in the source's own order, and the mapped files they read from.
struct TensorSource : ModelSource {
  GgmlType first_type = GgmlType::F32;  // the dtype llama.cpp's "auto" outtype looks at
  uint64_t total_bytes = 0;
};

// Opens the safetensors checkpoint in dir (single file or index + shards).
TensorSource open_safetensors_source(const std::string& dir);

// Opens an ONNX export: its weights' HF names are recovered from the graph against `shape` (from config.json).
TensorSource open_onnx_source(const std::string& onnx_path, const OnnxLlamaShape& shape);

// Checks every value is finite; throws naming the tensor and the first bad element.
void check_finite(const float* x, uint64_t n, const std::string& file, const std::string& tensor, uint64_t base_index);

}  // namespace edgeq::convert::detail
