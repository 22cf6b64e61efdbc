// Sources for `edgeq quantize`: a GGUF file as it is, or an HF checkpoint directory / ONNX model planned by
// plan_conversion and quantized in the same pass (each tensor is converted to f32 and quantized as it streams;
// no intermediate GGUF is written). quant/ cannot depend on convert/, so this adapter lives here.
#pragma once
#include <string>

#include "edgeq/convert/plan.h"
#include "edgeq/quant/quantize.h"

namespace edgeq::convert {

// ModelInput::open(path).quantize_source(threads) (model_input.h). Throws edgeq::Error.
quant::QuantizeSource open_quantize_source(const std::string& path, int threads = 0);

// Adapts a plan; the source keeps the plan (and its mapped files) alive.
quant::QuantizeSource quantize_source_from_plan(ConvertPlan plan);

}  // namespace edgeq::convert
