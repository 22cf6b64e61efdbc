// What a model path names: a GGUF file, a Hugging Face checkpoint directory, an ONNX export or a single
// .safetensors file. Decided here once for every command: convert, quantize, calibrate, compare, inspect and the
// CLI's output checks read this rule and no other.
#pragma once
#include <string>

namespace edgeq {

enum class ModelKind { Gguf, HfCheckpoint, Onnx, Safetensors };

struct ModelPath {
  ModelKind kind = ModelKind::Gguf;
  std::string path;       // as given
  std::string dir;        // HF checkpoint / ONNX export: the directory holding config.json and the tokenizer files
  std::string onnx_path;  // ONNX: the model file (the path itself, or DIR/model.onnx)
  bool is_gguf() const { return kind == ModelKind::Gguf; }
  // An HF checkpoint or ONNX export: what convert (and so quantize, calibrate, compare) reads through a plan.
  bool is_checkpoint() const { return kind == ModelKind::HfCheckpoint || kind == ModelKind::Onnx; }
};

// The rule: a directory is an HF checkpoint, or an ONNX export when it holds model.onnx and no safetensors
// weights; a regular file starting with the GGUF magic is a GGUF; otherwise the extension decides (.onnx,
// .safetensors, and .gguf, whose reader then reports the bad magic). A missing path, a path that is neither a
// regular file nor a directory (a FIFO, a device), and any other file are one-line errors naming the path.
// Reads at most the first 4 bytes of a file.
ModelPath classify_model_path(const std::string& path);

}  // namespace edgeq
