// ONNX exports (torch.onnx, Llama-style decoders) as a convert TensorSource: formats/onnx.h reads the model,
// onnx_roles.h recovers each weight's HF name from the graph and loads it transposed back to HF layout.
#include "edgeq/formats/error.h"
#include "edgeq/formats/onnx.h"
#include "source.h"

namespace edgeq::convert::detail {

TensorSource open_onnx_source(const std::string& onnx_path, const OnnxLlamaShape& shape) {
  OnnxModel model = OnnxModel::open(onnx_path);
  std::vector<OnnxWeight> weights = recover_hf_weights(model, shape);
  TensorSource src;
  src.description = onnx_path;
  bool first = true;
  for (const OnnxWeight& w : weights) {
    SourceTensor s;
    s.hf_name = w.hf_name;
    s.shape = w.hf_shape;
    s.file = onnx_path;
    switch (w.onnx_dtype) {
      case onnx_dtype::FLOAT: case onnx_dtype::DOUBLE: s.type = GgmlType::F32; break;
      case onnx_dtype::FLOAT16: s.type = GgmlType::F16; break;
      case onnx_dtype::BFLOAT16: s.type = GgmlType::BF16; break;
      default: s.type = GgmlType::I32; break;  // not a float: reported by the planner
    }
    if (first) {
      src.first_type = s.type;
      first = false;
    }
    if (const OnnxTensor* t = model.find(w.onnx_name)) {
      src.total_bytes += t->nbytes;
      s.file = t->file.empty() ? onnx_path : t->file;
    }
    if (onnx_dtype_is_float(w.onnx_dtype)) {
      s.read_all = [model, w](float* dst) { load_onnx_weight(model, w, dst); };  // checks NaN/Inf itself
    }
    src.tensors.push_back(std::move(s));
  }
  return src;
}

}  // namespace edgeq::convert::detail
