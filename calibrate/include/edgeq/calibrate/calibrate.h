// Activation statistics from calibration text, collected the way llama.cpp's llama-imatrix (b4748) does:
// the text is tokenized once (BOS first when the vocab adds it), cut into n_chunk = n_tokens / n_ctx
// chunks (at least 2·n_ctx tokens are required), each chunk evaluated from an empty KV cache with its first
// token replaced by BOS. Every matmul input of every layer (not the output head) is observed before any
// activation rounding; a call is one product over a batch of >= 16 rows. Per distinct input (q/k/v share
// one, gate/up share one) it accumulates, in double: per-column sum of x² (the importance matrix), sum of
// |x| (AWQ's activation scale), the row and call counts, and optionally XᵀX (GPTQ's Hessian).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "edgeq/runtime/forward.h"
#include "edgeq/runtime/model.h"

namespace edgeq::calibrate {

// The weights fed by each matmul input, as GGUF name stems ("blk.N.<stem>.weight"); one table.
const std::vector<std::string_view>& input_tensors(runtime::MatmulInput site);
constexpr runtime::MatmulInput kInputs[] = {runtime::MatmulInput::AttnQKV, runtime::MatmulInput::AttnOut,
                                            runtime::MatmulInput::FfnGateUp, runtime::MatmulInput::FfnDown};

struct InputStats {
  int64_t layer = 0;
  runtime::MatmulInput site = runtime::MatmulInput::AttnQKV;
  int64_t width = 0;   // columns (the weights' row length)
  int32_t ncall = 0;   // products observed
  int64_t rows = 0;    // activation rows (tokens) observed
  std::vector<double> sum_x2, sum_abs;  // [width]
  std::vector<double> hessian;          // [width * width] sum of x xᵀ (empty unless collected)
  std::vector<double> hessian_odd;      // the same over odd-numbered chunks only (held-out half for method choice)
  std::vector<std::string> tensor_names() const;  // the GGUF weights this input feeds
};

struct CalibrationStats {
  std::vector<InputStats> inputs;  // layer-major, in kInputs order
  int32_t n_chunks = 0;            // chunks evaluated (llama-imatrix's last_call)
  int64_t n_ctx = 0;
  int64_t n_tokens = 0;
  std::vector<std::string> datasets;  // data files as given
  double seconds = 0;
  // The input feeding a weight (by GGUF tensor name), or nullptr.
  const InputStats* find(std::string_view tensor_name) const;
};

struct CalibrationProgress {
  int chunk = 0, n_chunks = 0;  // 1-based chunk just finished
  double seconds = 0;           // since evaluation started
  double tokens_per_second = 0;
};

struct CalibrationOptions {
  int64_t n_ctx = 256;
  int64_t max_chunks = -1;  // < 0: all
  int n_threads = 1;
  bool hessian = false;  // also accumulate XᵀX per input
  std::function<void(const CalibrationProgress&)> progress;  // after every chunk; may throw to cancel
};

// tokens: the whole text as tokenized (BOS prepended when add_bos). Throws edgeq::Error before any
// evaluation when the text is shorter than 2·n_ctx tokens or a token is outside the vocabulary.
CalibrationStats calibrate(const runtime::Model& model, const std::vector<int32_t>& tokens, bool add_bos,
                           int32_t bos_id, const CalibrationOptions& opt);

// Writes llama.cpp's imatrix: the GGUF format (general.type = imatrix, <tensor>.in_sum2 and <tensor>.counts,
// imatrix.datasets / chunk_count / chunk_size; plus edgeq's <tensor>.in_abs, and <first tensor of an
// input>.hessian and .hessian_odd when collected, which llama.cpp ignores) when the path ends in ".gguf", else the legacy
// binary format llama-quantize b4748 reads (values = mean x² · ncall; last_call; the dataset name).
// Through AtomicOutputFile: nothing appears unless complete.
void write_imatrix(const CalibrationStats& stats, const std::string& path);

// Reads what write_imatrix wrote in the GGUF format, including in_abs and hessians (for --calib).
CalibrationStats read_calibration_stats(const std::string& path);

}  // namespace edgeq::calibrate
