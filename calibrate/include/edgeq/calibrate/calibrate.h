// Activation statistics from calibration text, collected the way llama.cpp's llama-imatrix (b4748) does:
// the text is tokenized once (BOS first when the vocab adds it), cut into n_chunk = n_tokens / n_ctx
// chunks (at least 2·n_ctx tokens are required), each chunk evaluated from an empty KV cache with its first
// token replaced by BOS. Every matmul input of every layer (not the output head) is observed before any
// activation rounding; a call is one product over a batch of >= 16 rows. Per distinct input (q/k/v share
// one, gate/up share one) it accumulates, in double: per-column sum of x² (the importance matrix), sum of
// |x| (AWQ's activation scale), the row and call counts, and optionally XᵀX (GPTQ's Hessian).
// The model is evaluated layer-major (runtime::Context::eval_layer: every chunk through layer 0, then every
// chunk through layer 1, ...; the chunks' hidden states wait in a temporary file mapping), so a layer's
// statistics are final before the next layer starts: with on_layer they are streamed out (calibrate_to_file
// writes them to the statistics file) and only one layer's Hessians are ever in memory.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "edgeq/formats/gguf.h"
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
  // An MoE layer's experts (llama.cpp's imatrix layout for ffn_*_exps): n_expert > 0, sum_x2 and sum_abs hold
  // width values per expert, expert after expert, expert_rows the rows routed to each; no Hessian.
  int64_t n_expert = 0;
  std::vector<int64_t> expert_rows;
  // The weights this input feeds when they are not the site's own (an MoE layer's router and experts).
  std::vector<std::string> names;
  std::vector<double> sum_x2, sum_abs;  // [width] ([width * n_expert] for experts)
  std::vector<double> hessian;          // [width * width] sum of x xᵀ (empty unless collected and held here)
  std::vector<double> hessian_odd;      // the same over odd-numbered chunks only (held-out half for method choice)
  // Statistics read from a file leave the Hessians there (read_calibration_stats): they are read on demand,
  // one input at a time, so memory stays bounded by one input's Hessian.
  std::shared_ptr<const GgufFile> hessian_file;
  std::vector<std::string> tensor_names() const;  // the GGUF weights this input feeds
  bool has_hessian() const;
  // The Hessian (odd: over odd chunks only; empty if not collected), from memory or from hessian_file.
  std::vector<double> load_hessian(bool odd = false) const;
};

struct CalibrationStats {
  // Layer-major, in kInputs order; an MoE layer: AttnQKV, AttnOut, the router (ffn_gate_inp), its experts' gate/up
  // (ffn_gate_exps, ffn_up_exps) and down (ffn_down_exps) inputs.
  std::vector<InputStats> inputs;
  size_t inputs_per_layer = 4;
  int32_t n_chunks = 0;            // chunks evaluated (llama-imatrix's last_call)
  int64_t n_ctx = 0;
  int64_t n_tokens = 0;
  std::vector<std::string> datasets;  // data files as given
  double seconds = 0;
  // The input feeding a weight (by GGUF tensor name), or nullptr.
  const InputStats* find(std::string_view tensor_name) const;
};

struct CalibrationProgress {
  int chunk = 0, n_chunks = 0;  // 1-based chunk just finished (through layer `layer`)
  int layer = 0, n_layers = 0;  // 0-based layer being evaluated
  double done = 0;              // fraction of the evaluation done
  double seconds = 0;           // since evaluation started
  double tokens_per_second = 0; // chunk tokens through the whole model per second
};

struct CalibrationOptions {
  int64_t n_ctx = 256;
  int64_t max_chunks = -1;  // < 0: all
  int n_threads = 1;
  bool hessian = false;  // also accumulate XᵀX per input
  std::vector<std::string> datasets;  // recorded in the statistics (data files as given)
  std::function<void(const CalibrationProgress&)> progress;  // after every chunk of every layer; may throw to cancel
  // Called when a layer's statistics are complete (stats.inputs[first, first + 4), n_chunks set); afterwards
  // calibrate() drops that layer's Hessians, so the result holds none (bounded memory). Without it the
  // Hessians stay in the result.
  std::function<void(const CalibrationStats& stats, size_t first)> on_layer;
};

// tokens: the whole text as tokenized (BOS prepended when add_bos). Throws edgeq::Error before any
// evaluation when the text is shorter than 2·n_ctx tokens or a token is outside the vocabulary.
CalibrationStats calibrate(const runtime::Model& model, const std::vector<int32_t>& tokens, bool add_bos,
                           int32_t bos_id, const CalibrationOptions& opt);

// Writes the GGUF statistics file one input at a time, in stats.inputs' order (calibrate_to_file streams a
// layer at a time through it). The tensor list is fixed up front from the inputs' widths (every input must
// have been observed when written); hessians: whether .hessian/.hessian_odd tensors are written.
class StatsFileWriter {
 public:
  StatsFileWriter(const std::string& path, const CalibrationStats& stats, bool hessians);
  void write(const InputStats& in);  // the next input; its Hessians when hessians
  void finish();                     // atomically renames into place; not calling it leaves no file

 private:
  GgufWriter w_;
  bool hessians_;
  size_t next_ = 0, n_inputs_ = 0;
  std::vector<float> buf_;
};

// calibrate() writing the GGUF statistics to path as each layer completes (the Hessians are never all in
// memory; the returned statistics hold none). Nothing appears at path unless the whole run succeeds.
CalibrationStats calibrate_to_file(const runtime::Model& model, const std::vector<int32_t>& tokens, bool add_bos,
                                   int32_t bos_id, CalibrationOptions opt, const std::string& path);

// Writes llama.cpp's imatrix: the GGUF format (general.type = imatrix, <tensor>.in_sum2 and <tensor>.counts,
// imatrix.datasets / chunk_count / chunk_size; plus edgeq's <tensor>.in_abs, and <first tensor of an
// input>.hessian and .hessian_odd when collected, which llama.cpp ignores) when the path ends in ".gguf", else the legacy
// binary format llama-quantize b4748 reads (values = mean x² · ncall; last_call; the dataset name).
// Through AtomicOutputFile: nothing appears unless complete.
void write_imatrix(const CalibrationStats& stats, const std::string& path);

// Reads what write_imatrix wrote in the GGUF format, including in_abs; the Hessians stay in the mapped file
// (InputStats::load_hessian reads them; shapes are checked here, values when loaded) (for --calib).
CalibrationStats read_calibration_stats(const std::string& path);

}  // namespace edgeq::calibrate
