// `edgeq inspect`: llama.cpp's legacy imatrix files (reader: imatrix.h) and, for every other path, the model and
// checkpoint report of formats/inspect_model.h (GGUF, safetensors, HF directories, ONNX).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace edgeq::quant {

// A .imatrix or .dat file, or any file whose first bytes read as a legacy imatrix header (an entry count and
// a name length in range), is described as an imatrix: entries with ncall, columns and importance statistics
// (the per-column mean of x^2, as the quantizer sees it), chunks and dataset. Anything else goes to
// edgeq::inspect_path. Throws edgeq::Error naming the file.
nlohmann::json inspect_path(const std::string& path);

// Text rendering of either report. max_rows: rows of the tensor/entry table (0 = all).
std::string render_inspection(const nlohmann::json& report, size_t max_rows = 0);

}  // namespace edgeq::quant
