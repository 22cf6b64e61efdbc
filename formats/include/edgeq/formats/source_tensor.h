// The one tensor type every model source hands out: the checkpoint readers (safetensors, ONNX), the conversion
// plan (convert/plan.h) and the quantizer's sources (a GGUF file, or a plan) all describe a tensor with it, so
// nothing copies fields between look-alike structs. Tensors are loaded on demand, one at a time.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "edgeq/formats/ggml_types.h"
#include "edgeq/formats/gguf.h"

namespace edgeq {

struct SourceTensor {
  // The GGUF name (blk.0.attn_q.weight) once planned; a checkpoint reader gives the checkpoint's own name.
  std::string name;
  std::vector<uint64_t> dims;                // GGUF order: dims[0] is the row length (innermost)
  GgmlType source_type = GgmlType::F32;      // how the source stores it (GGUF: its type; HF/ONNX: F32/F16/BF16)
  GgmlType keep_type = GgmlType::F32;        // the type written when the tensor is not quantized
  std::string file;                          // the file holding it, for messages
  // Bytes of the tensor in keep_type when the source holds exactly those (a GGUF source); else null.
  const uint8_t* raw = nullptr;
  uint64_t raw_nbytes = 0;
  // Fills dst (n_elements floats) with the tensor's values after every transformation (Q/K permutation, ONNX
  // transposes). Throws edgeq::Error naming the file and tensor on bad data (NaN/Inf included).
  std::function<void(float* dst)> load_f32;
  // Optional: fills dst (nrows * dims[0] floats) with rows [row0, row0 + nrows) of the same values, so a consumer
  // can stream a large tensor in slabs. Empty when only load_f32 exists.
  std::function<void(uint64_t row0, uint64_t nrows, float* dst)> load_rows;
  // Optional: drops the source pages of this tensor from memory once consumed (a later load reads them again).
  std::function<void()> release;
  // A palettized weight of a GGUF source (formats/palette_layout.h), decoded through its tables: source_type and
  // keep_type are F16 (every value is an f16 table entry), raw is null.
  bool palettized = false;

  uint64_t n_elements() const {
    uint64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
  uint64_t row_length() const { return dims.empty() ? 1 : dims[0]; }
  uint64_t n_rows() const { return row_length() ? n_elements() / row_length() : 0; }
};

// A model as a list of tensors plus its GGUF metadata: what `quantize` reads, and the base of convert's plan.
struct ModelSource {
  std::string path;  // what was opened, for messages
  std::vector<std::pair<std::string, GgufValue>> metadata;
  std::vector<SourceTensor> tensors;
  std::vector<std::shared_ptr<void>> keep_alive;  // mapped files the loaders read from
};

}  // namespace edgeq
