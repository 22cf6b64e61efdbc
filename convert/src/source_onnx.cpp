// ONNX exports as a convert TensorSource (placeholder until the ONNX reader lands in formats/).
#include "edgeq/formats/error.h"
#include "source.h"

namespace edgeq::convert::detail {

TensorSource open_onnx_source(const std::string& onnx_path, const std::string&) {
  fail("{}: ONNX conversion is not available in this build yet", onnx_path);
}

}  // namespace edgeq::convert::detail
