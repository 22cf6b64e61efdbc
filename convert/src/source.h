// Private to convert/: the tensor source abstraction shared by the safetensors and ONNX planners.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "edgeq/convert/onnx_roles.h"
#include "edgeq/formats/ggml_types.h"

namespace edgeq::convert::detail {

// One weight of the HF checkpoint, in HF layout (shape outermost first: [out, in] for linear weights).
struct SourceTensor {
  std::string hf_name;
  std::vector<uint64_t> shape;
  GgmlType type = GgmlType::F32;  // the source precision (F32, F16, BF16)
  std::string file;               // for error messages
  // Rows of the HF layout (row = shape[0] index for 2-D, the whole vector counts as 1 row for 1-D):
  // src_rows[i] is written to dst + i * row_len. Empty when only whole loads exist.
  std::function<void(const uint64_t* src_rows, uint64_t n, float* dst)> read_rows;
  std::function<void(float* dst)> read_all;  // the whole tensor, HF layout
  std::function<void()> release;             // drop source pages (may be empty)
};

struct TensorSource {
  std::string description;  // what was opened, for messages
  std::vector<SourceTensor> tensors;  // in the source's own order
  GgmlType first_type = GgmlType::F32;  // the dtype llama.cpp's "auto" outtype looks at
  uint64_t total_bytes = 0;
  std::vector<std::shared_ptr<void>> keep_alive;
};

// Opens the safetensors checkpoint in dir (single file or index + shards).
TensorSource open_safetensors_source(const std::string& dir);

// Opens an ONNX export: its weights' HF names are recovered from the graph against `shape` (from config.json).
TensorSource open_onnx_source(const std::string& onnx_path, const OnnxLlamaShape& shape);

// Checks every value is finite; throws naming the tensor and the first bad element.
void check_finite(const float* x, uint64_t n, const std::string& file, const std::string& tensor, uint64_t base_index);

}  // namespace edgeq::convert::detail
