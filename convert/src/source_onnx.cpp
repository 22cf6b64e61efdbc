// ONNX exports (torch.onnx, Llama-style decoders) as a convert TensorSource: formats/onnx.h reads the model,
// onnx_roles.h recovers each weight's HF name from the graph and loads it transposed back to HF layout.
#include "edgeq/base/error.h"
#include "edgeq/formats/onnx.h"
#include "source.h"

namespace edgeq::convert::detail {

TensorSource open_onnx_source(const std::string& onnx_path, const OnnxLlamaShape& shape) {
  OnnxModel model = OnnxModel::open(onnx_path);
  std::vector<OnnxWeight> weights = recover_hf_weights(model, shape);
  TensorSource src;
  src.path = onnx_path;
  bool first = true;
  for (const OnnxWeight& w : weights) {
    SourceTensor s;
    s.name = w.hf_name;
    s.dims.assign(w.hf_shape.rbegin(), w.hf_shape.rend());
    s.file = onnx_path;
    switch (w.onnx_dtype) {
      case onnx_dtype::FLOAT: case onnx_dtype::DOUBLE: s.source_type = GgmlType::F32; break;
      case onnx_dtype::FLOAT16: s.source_type = GgmlType::F16; break;
      case onnx_dtype::BFLOAT16: s.source_type = GgmlType::BF16; break;
      default: s.source_type = GgmlType::I32; break;  // not a float: reported by the planner
    }
    s.keep_type = s.source_type;
    if (first) {
      src.first_type = s.source_type;
      first = false;
    }
    if (const OnnxTensor* t = model.find(w.onnx_name)) {
      src.total_bytes += t->nbytes;
      s.file = t->file.empty() ? onnx_path : t->file;
    }
    if (onnx_dtype_is_float(w.onnx_dtype)) {
      s.load_f32 = [model, w](float* dst) { load_onnx_weight(model, w, dst); };  // checks NaN/Inf itself
    }
    src.tensors.push_back(std::move(s));
  }
  return src;
}

}  // namespace edgeq::convert::detail
