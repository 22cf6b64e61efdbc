// Adapter from a ConvertPlan (HF / ONNX) to the quantization pipeline's source (see quantize_source.h).
#include "edgeq/convert/quantize_source.h"

#include <cstdio>
#include <filesystem>

#include "edgeq/base/error.h"

namespace edgeq::convert {

namespace {

bool has_gguf_magic(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char m[4] = {};
  const size_t n = std::fread(m, 1, 4, f);
  std::fclose(f);
  return n == 4 && m[0] == 'G' && m[1] == 'G' && m[2] == 'U' && m[3] == 'F';
}

}  // namespace

quant::QuantizeSource quantize_source_from_plan(ConvertPlan plan) {
  return std::move(static_cast<ModelSource&>(plan));  // a plan is a model source; its tensors are used as they are
}

quant::QuantizeSource open_quantize_source(const std::string& path, int threads) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail("{}: no such file or directory", path);
  // A .gguf name with a bad magic gets the GGUF reader's own error, not "expected a checkpoint".
  if (has_gguf_magic(path) || std::filesystem::path(path).extension() == ".gguf") return quant::open_gguf_source(path);
  ConvertOptions opts;
  opts.outtype = "auto";
  opts.threads = threads;
  return quantize_source_from_plan(plan_conversion(path, opts));
}

}  // namespace edgeq::convert
