#include "edgeq/formats/model_path.h"

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "edgeq/base/error.h"

namespace edgeq {

namespace fs = std::filesystem;

namespace {

bool starts_with_gguf_magic(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char m[4] = {};
  const size_t n = std::fread(m, 1, 4, f);
  std::fclose(f);
  return n == 4 && std::memcmp(m, "GGUF", 4) == 0;
}

}  // namespace

ModelPath classify_model_path(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) fail("{}: no such file or directory", path);
  ModelPath m;
  m.path = path;
  if (fs::is_directory(p, ec)) {
    m.dir = path;
    const bool has_st = fs::exists(p / "model.safetensors", ec) || fs::exists(p / "model.safetensors.index.json", ec);
    if (!has_st && fs::exists(p / "model.onnx", ec)) {
      m.kind = ModelKind::Onnx;
      m.onnx_path = (p / "model.onnx").string();
    } else {
      m.kind = ModelKind::HfCheckpoint;
    }
    return m;
  }
  if (!fs::is_regular_file(p, ec)) fail("{}: is not a regular file or a directory; refusing to read it", path);
  const std::string ext = p.extension().string();
  if (starts_with_gguf_magic(path) || ext == ".gguf") {
    m.kind = ModelKind::Gguf;
  } else if (ext == ".onnx") {
    m.kind = ModelKind::Onnx;
    m.onnx_path = path;
    m.dir = p.has_parent_path() ? p.parent_path().string() : std::string(".");
  } else if (ext == ".safetensors") {
    m.kind = ModelKind::Safetensors;
    m.dir = p.has_parent_path() ? p.parent_path().string() : std::string(".");
  } else {
    fail("{}: not a model (expected a GGUF file, a Hugging Face checkpoint directory or an .onnx file)", path);
  }
  return m;
}

}  // namespace edgeq
