// Describes a model file or checkpoint: GGUF file, safetensors file, HF checkpoint directory, or ONNX model (a .onnx
// file, or a directory with model.onnx and no safetensors weights, as convert reads it). llama.cpp imatrix files,
// whose reader lives in quant/, are described by quant/inspect.h, which hands everything else to this one.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace edgeq {

// A structured description (format, version, metadata, tensors with type/shape/bytes/bits per weight,
// parameter count, sizes, type histogram, and for directories the config summary; for ONNX the IR/opset/producer,
// node count, and the initializers with their storage and data files). Throws edgeq::Error.
nlohmann::json inspect_path(const std::string& path);

// Human-readable rendering of inspect_path's result. max_tensors: rows of the tensor table (0 = all).
std::string render_inspection(const nlohmann::json& report, size_t max_tensors = 0);

}  // namespace edgeq
