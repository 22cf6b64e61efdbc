// Describes a model file or checkpoint: GGUF file, safetensors file, or HF checkpoint directory.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace edgeq {

// A structured description (format, version, metadata, tensors with type/shape/bytes/bits per weight,
// parameter count, sizes, type histogram, and for HF directories the config summary). Throws edgeq::Error.
nlohmann::json inspect_path(const std::string& path);

// Human-readable rendering of inspect_path's result. max_tensors: rows of the tensor table (0 = all).
std::string render_inspection(const nlohmann::json& report, size_t max_tensors = 0);

}  // namespace edgeq
