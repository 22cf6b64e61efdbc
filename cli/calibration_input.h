// Wiring shared by `calibrate` and `quantize --data`: a model file the runtime can evaluate (an HF checkpoint
// or ONNX model is converted to a temporary F32 GGUF, removed afterwards) and a calibration run over data files.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "edgeq/formats/mapped_file.h"
#include "edgeq/calibrate/calibrate.h"
#include "edgeq/calibrate/methods.h"
#include "edgeq/quant/quantize.h"

namespace edgeq::cli {

class RuntimeModelFile {
 public:
  RuntimeModelFile(const std::string& src, int threads);  // converts when src is not a GGUF
  ~RuntimeModelFile();
  RuntimeModelFile(const RuntimeModelFile&) = delete;
  RuntimeModelFile& operator=(const RuntimeModelFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool temporary_ = false;
  std::unique_ptr<ScopedRemoveOnSignal> on_signal_;  // the converted temp model goes on Ctrl-C too
};

// Loads the data, tokenizes it with the model's vocab and runs calibration (progress lines when enabled;
// Ctrl-C cancels with an error so that no output is written). stats_gguf non-empty: the statistics are
// streamed there layer by layer (calibrate_to_file; the result then holds no Hessians).
calibrate::CalibrationStats run_calibration(const std::string& model_src, const std::vector<std::string>& data,
                                            int64_t ctx, int64_t chunks, int threads, bool hessian,
                                            const std::string& stats_gguf = {});
// The same on a model already made runtime-ready (model_src names it in messages) and a text already read
// from the data files (a pipe can be read once).
calibrate::CalibrationStats run_calibration(const RuntimeModelFile& model, const std::string& model_src,
                                            const std::string& text, const std::vector<std::string>& data,
                                            int64_t ctx, int64_t chunks, int threads, bool hessian,
                                            const std::string& stats_gguf = {});

// `quantize --method M [--calib STATS | --data FILE...]`: loads or computes the statistics and prepares qo.
// Validates the combination before any work. Returns null when no method option was given.
struct QuantizeMethod {
  ~QuantizeMethod();
  std::string temp_stats;  // --data: the statistics file written for this run, removed afterwards
  std::unique_ptr<ScopedRemoveOnSignal> temp_on_signal;
  // --data on a checkpoint: its F32 conversion, calibrated on and then quantized from (the checkpoint is read
  // once); removed afterwards.
  std::unique_ptr<RuntimeModelFile> runtime_model;
  calibrate::CalibrationStats stats;
  std::unique_ptr<calibrate::MethodSetup> setup;
};
std::unique_ptr<QuantizeMethod> setup_quantize_method(const std::string& method, const std::string& calib,
                                                      const std::vector<std::string>& data, const std::string& src_path,
                                                      quant::QuantizeSource& src, quant::QuantizeOptions& qo,
                                                      int threads, bool act_order);
// Checks the options alone (before any file is opened); throws edgeq::Error. act_order (--act-order) needs
// --method gptq or auto.
void check_quantize_method_options(const std::string& method, const std::string& calib,
                                   const std::vector<std::string>& data, bool has_imatrix, bool act_order);

}  // namespace edgeq::cli
