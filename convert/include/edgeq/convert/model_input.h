// One model input: what a path names (formats/model_path.h decides: GGUF, HF checkpoint, ONNX export) and what
// the commands make of it: a quantization source, a conversion plan, or a GGUF the runtime evaluates. quantize,
// calibrate, compare (sweep, budget) and the CLI open their models here and nowhere else.
#pragma once
#include <string>
#include <string_view>

#include "edgeq/convert/plan.h"
#include "edgeq/formats/model_path.h"
#include "edgeq/quant/quantize.h"

namespace edgeq::convert {

class ModelInput {
 public:
  // Classifies path (one-line errors naming it). A single .safetensors file is refused here as convert refuses
  // it: a model needs its config.json and tokenizer, so give the checkpoint directory.
  static ModelInput open(const std::string& path);

  const std::string& path() const { return where_.path; }
  const ModelPath& where() const { return where_; }
  bool is_gguf() const { return where_.is_gguf(); }

  // An HF checkpoint's or ONNX export's plan (throws for a GGUF).
  ConvertPlan plan(const ConvertOptions& opts) const;
  // A GGUF as it is; a checkpoint through plan() with --outtype auto (the type unquantized tensors keep, as
  // `convert` then `quantize` would), converted tensor by tensor as the quantizer streams it.
  quant::QuantizeSource quantize_source(int threads) const;
  // A GGUF source's float type, "f32", "f16" or "bf16" (its widest matrix type); a quantized tensor is a one-line
  // error naming the file and the tensor, followed by `need` (why a float source is needed).
  std::string float_type(std::string_view need) const;
  // The GGUF the runtime evaluates: the source itself when it is a GGUF, else its F32 conversion written to
  // dest (the caller owns dest and removes it).
  std::string runtime_gguf(const std::string& dest, int threads) const;
  // A checkpoint's quantize source (quantize_source()) reading its values from runtime_gguf()'s F32 conversion
  // of the same checkpoint instead of the checkpoint: a command that converted it for the runtime (calibration)
  // then reads the checkpoint once. Names, types and metadata stay the plan's; the values are the same floats.
  // A GGUF source, or a conversion that does not hold every tensor of src at its shape, leaves src as it is.
  static void read_values_from(quant::QuantizeSource& src, const std::string& f32_gguf);

 private:
  explicit ModelInput(ModelPath w) : where_(std::move(w)) {}
  ModelPath where_;
};

}  // namespace edgeq::convert
