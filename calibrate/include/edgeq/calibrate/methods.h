// Calibration-driven quantization methods for `edgeq quantize --method`:
//   rtn      edgeq's plain search (no importance)
//   imatrix  the importance-weighted search with mean x² from the calibration statistics, regularised as
//            mean x² + kRidge·mean(mean x²) (calibrate/gptq.h: the same ridge as GPTQ's damping)
//   awq      per-input-channel scales s = mean|x|^α (α from a grid, per matmul input, minimising the regularised
//            output error tr((W - Q)(H + kRidge·mean(diag H)·I)(W - Q)ᵀ) of all weights sharing that input),
//            weights quantized as W·diag(s) with importance mean x²/s², 1/s folded into the tensor producing the
//            input: attn_norm (q/k/v), ffn_norm (gate/up), the rows of attn_v and its bias (attn_output: with GQA
//            o's input column of query head h, dim d comes from V's row (h / (n_head / n_head_kv), d), so the
//            scales are tied across the query heads of one KV head, searched on the group's mean of mean|x|),
//            the rows of ffn_up (ffn_down: silu(gate)⊙up is linear in up's rows) - the file stays a plain
//            llama.cpp model. Then AWQ's clipping search (awq_clip_search) on every weight: ratios fitted on the
//            even calibration chunks, kept only where they lower the tensor's output error on the odd ones.
//   gptq     calibrate/gptq.h on every weight with a Hessian (damping kRidge)
//   act_order (gptq and auto only, default off): GPTQ's rounding in act-order (calibrate/gptq.h), recorded as
//            "gptq+act-order" per tensor and in the method name
//   auto     per tensor the candidate (rtn, imatrix, gptq, and with AWQ scales folded as above awq and awq+gptq;
//            no clipping) with the lowest output error on held-out activations: candidates are fitted on the even
//            calibration chunks and scored on the odd ones (rtn is a candidate, so on held-out data auto is never
//            worse than rtn); the chosen method is then applied with all chunks. Methods per tensor are recorded in
//            edgeq.quantize.tensor_methods unless --no-edgeq-metadata.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "edgeq/calibrate/calibrate.h"
#include "edgeq/base/thread_pool.h"
#include "edgeq/quant/quantize.h"

namespace edgeq::calibrate {

enum class Method { Rtn, Imatrix, Awq, Gptq, Auto };
// How a method decides each matmul input's encodings (methods.cpp); rtn and imatrix decide nothing (null).
struct MethodPlan;

// The method table: one row per method with what it needs. `quantize --method`, compare's sweep rows, the budget
// search and the CLI's help and checks read it; nothing else lists the methods.
struct MethodInfo {
  Method method;
  const char* name;     // as --method takes it
  const char* summary;  // one line: what the method does (help texts)
  bool needs_statistics;  // reads calibration statistics (all but rtn)
  bool needs_hessian;     // the statistics must hold Hessians (calibrate --hessian)
  bool takes_act_order;   // rounds with GPTQ, so --act-order applies
  bool palette_ok;        // the PAL types take it (their k-means is weighted by the importance only)
  bool folds_scales;      // changes other tensors than the one it encodes (AWQ's scales folded into norms, attn_v,
                          // ffn_up), so a tensor's error cannot be measured alone (budget mixes refuse it)
  const MethodPlan* plan;  // setup_method's decisions per matmul input; null: none (rtn, imatrix)
};
const std::vector<MethodInfo>& method_table();  // in the order users see them: rtn, imatrix, awq, gptq, auto
const MethodInfo& method_info(Method m);
std::optional<Method> parse_method(std::string_view name);
// "rtn, imatrix, awq, gptq, auto" (`sep` between the names), for errors and help.
std::string method_names(std::string_view sep = ", ");
inline const char* method_name(Method m) { return method_info(m).name; }
inline bool method_needs_hessian(Method m) { return method_info(m).needs_hessian; }
inline bool method_takes_act_order(Method m) { return method_info(m).takes_act_order; }

// The importance (mean x² per column) of every weight in the statistics, as `--imatrix` would load it.
quant::Importance importance_from_stats(const CalibrationStats& stats, const std::string& file_label);

// AWQ's folding: scales s per column of a matmul input are multiplied into the columns of the weights reading it
// and divided out of the output channels of the tensor producing it (the RMSNorm weights, or the rows of attn_v /
// ffn_up and their biases), so the float model computes the same function.
struct AwqFolds {
  std::map<std::string, std::vector<float>> divide;    // tensor -> divisor per output channel (element or row)
  std::map<std::string, std::vector<float>> multiply;  // weight -> factor per input column
};

// State behind a method's quantize hook; keep it alive until quantize_model returns.
struct MethodSetup {
  quant::Importance importance;
  std::map<std::string, std::string> tensor_methods;  // name -> chosen method
  AwqFolds awq;  // the AWQ scales folded (awq, and auto where it chose them)
  std::shared_ptr<void> state;
};

// Prepares qo (importance, tensor_hook, method name, per-tensor record) for method m. Decisions that need the
// weights (AWQ scales, auto's choice) are made here, reading src's tensors once, before anything is written.
// log: optional progress lines. act_order: GPTQ rounding in act-order (m gptq or auto, else an error). Throws
// edgeq::Error when the statistics lack what the method needs.
std::unique_ptr<MethodSetup> setup_method(Method m, const CalibrationStats& stats, const std::string& stats_label,
                                          const quant::QuantizeSource& src, quant::QuantizeOptions& qo,
                                          const std::function<void(const std::string&)>& log = {},
                                          bool act_order = false);

// AWQ's folding alone (no rounding, no clipping): with a float output type the model computes the same function
// (tested: logits unchanged).
quant::TensorHook awq_fold_hook(AwqFolds folds);

// AWQ's clipping search (auto_clip) for one weight W (rows × cols, original space), on the values the encoder
// will see, Wf = diag(1/s_row)·W·diag(s_col) (s_row, s_col: AWQ scales, null for none; imp: the importance in
// Wf's space). For each row and block of type t (blocks are encoded independently), the block's values are
// clamped to ±ratio·max|w| for each ratio of a grid (1 … 0.5), and the ratio whose encoding has the lowest block
// output error d_bᵀ H_bb d_b is kept (d the error in the original space, H ridged). The whole tensor's output
// error tr((W - Q) H_check (W - Q)ᵀ) with those ratios is then compared with unclipped encoding's (setup_method
// passes the ridged Hessians of the even chunks as H and of the odd ones as H_check): returns the ratio index per
// row and block when it is lower, else empty (no clipping). err_plain / err_clip: both errors under H_check.
// Rows are encoded and scored in fixed chunks, spread over pool when given: the same result for any pool size.
std::vector<uint8_t> awq_clip_search(GgmlType t, const float* W, const float* Wf, int64_t rows, int64_t cols,
                                     const double* H, const double* H_check, const float* imp, const float* s_col, const float* s_row,
                                     double* err_plain, double* err_clip, ThreadPool* pool = nullptr);
// Applies awq_clip_search's result to Wf in place.
void awq_apply_clip(GgmlType t, float* Wf, int64_t rows, int64_t cols, const std::vector<uint8_t>& ratio_index);

}  // namespace edgeq::calibrate
