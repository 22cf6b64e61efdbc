// One model input (model_input.h) and the adapter from a ConvertPlan (HF / ONNX) to the quantization pipeline's
// source (quantize_source.h).
#include "edgeq/convert/model_input.h"

#include "edgeq/base/error.h"
#include "edgeq/convert/convert.h"
#include "edgeq/convert/quantize_source.h"
#include "edgeq/formats/gguf.h"

#include <string_view>
#include <unordered_map>

namespace edgeq::convert {

quant::QuantizeSource quantize_source_from_plan(ConvertPlan plan) {
  return std::move(static_cast<ModelSource&>(plan));  // a plan is a model source; its tensors are used as they are
}

ModelInput ModelInput::open(const std::string& path) {
  ModelPath w = classify_model_path(path);
  if (w.kind == ModelKind::Safetensors)
    fail("{}: a single .safetensors file; give the checkpoint directory (config.json and tokenizer beside it)", path);
  return ModelInput(std::move(w));
}

ConvertPlan ModelInput::plan(const ConvertOptions& opts) const {
  if (is_gguf()) fail("{}: is a GGUF file; expected a Hugging Face checkpoint directory or a .onnx file", path());
  return plan_conversion(path(), opts);
}

quant::QuantizeSource ModelInput::quantize_source(int threads) const {
  if (is_gguf()) return quant::open_gguf_source(path());
  ConvertOptions opts;
  opts.outtype = "auto";
  opts.threads = threads;
  return quantize_source_from_plan(plan(opts));
}

std::string ModelInput::float_type(std::string_view need) const {
  if (!is_gguf()) fail("{}: not a GGUF file", path());
  const GgufFile g = GgufFile::open(path());
  GgmlType widest = GgmlType::F16;
  for (auto& t : g.tensors()) {
    if (t.type != GgmlType::F32 && t.type != GgmlType::F16 && t.type != GgmlType::BF16)
      fail("{}: tensor {} is {}; {}", path(), t.name, ggml_type_name(t.type), need);
    if (t.dims.size() >= 2 && t.type != GgmlType::F16) widest = t.type;
  }
  return widest == GgmlType::F32 ? "f32" : widest == GgmlType::BF16 ? "bf16" : "f16";
}

quant::QuantizeSource open_quantize_source(const std::string& path, int threads) {
  return ModelInput::open(path).quantize_source(threads);
}

std::string ModelInput::runtime_gguf(const std::string& dest, int threads) const {
  if (is_gguf()) return path();
  ConvertOptions opts;
  opts.outtype = "f32";
  opts.threads = threads;
  convert_to_gguf(plan(opts), dest, "f32", threads);
  return dest;
}

void ModelInput::read_values_from(quant::QuantizeSource& src, const std::string& f32_gguf) {
  if (src.path == f32_gguf) return;
  quant::QuantizeSource g = quant::open_gguf_source(f32_gguf);
  std::unordered_map<std::string_view, const SourceTensor*> by_name;
  for (const auto& t : g.tensors) by_name.emplace(t.name, &t);
  for (const auto& t : src.tensors) {  // all or nothing
    auto it = by_name.find(t.name);
    if (t.raw || it == by_name.end() || it->second->dims != t.dims || it->second->source_type != GgmlType::F32) return;
  }
  for (auto& t : src.tensors) {
    const SourceTensor& f = *by_name.at(t.name);
    t.load_f32 = f.load_f32;
    t.load_rows = f.load_rows;
    t.release = {};
  }
  src.keep_alive.insert(src.keep_alive.end(), g.keep_alive.begin(), g.keep_alive.end());
}

}  // namespace edgeq::convert
