// Budget mixes: `edgeq quantize SRC -o OUT --target-size SIZE | --target-bpw B` writes the llama.cpp file of at most
// SIZE bytes (and within 0.5% of it) with the lowest predicted KL divergence, one standard block type per tensor.
//
// Sensitivity: for every quantizable tensor t and candidate type T, ΔKLD(t, T) is the mean KL divergence (llama-
// perplexity's definition, scored positions n_ctx/2 … n_ctx-2 of each chunk) of the reference model with t alone
// quantized to T by the method, measured with edgeq's runtime on `chunks` chunks spread evenly over the
// calibration text. The file's KLD is predicted as Σ_t ΔKLD(t, T_t) · r(T_t), r(T) being the measured interaction
// of type T (every job also measures its tensors all at once: r = joint KLD / Σ single ΔKLD over T's jobs), and
// quant/budget.h's multiple-choice knapsack picks the types minimising it.
//
// Jobs: the measurements split into independent jobs, one per (type, shard of the tensors); each writes its own
// result file in the cache directory (sens/<TYPE>-<k>of<n>.json) and makes the reference and the calibration
// statistics there first if they are missing, so they run in any order, anywhere the cache directory is shared.
// A budget then costs only the solve and one write. Layout of the cache: <cache>/<key>/ with reference.gguf
// (the source as F32, unless it is a float GGUF itself), calibration.gguf, sens/*.json, work/ (temporary).
// The key hashes the source files, the calibration files, the method, n_ctx, chunks and calib_chunks.
//
// Methods: rtn, imatrix and gptq quantize each tensor from its own statistics, so a tensor's bytes in the final mix
// equal those it was measured with. awq and auto fold scales across tensors (norms, attn_v, ffn_up) and are refused.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "edgeq/formats/ggml_types.h"

namespace edgeq::compare {

struct BudgetOptions {
  std::string source;             // HF checkpoint dir, .onnx, or a float GGUF
  std::vector<std::string> data;  // calibration text files (calibrate/data.h); required unless method is rtn
  std::string method;             // rtn | imatrix | gptq; empty: gptq with data, rtn without
  std::vector<GgmlType> types;    // candidate types; empty: default_budget_types() (with rtn: those llama.cpp
                                  // writes without importance data)
  std::string cache_dir;          // empty: default_budget_cache()
  int64_t n_ctx = 256;
  int64_t chunks = 2;         // calibration chunks the sensitivities (and the reported measured KLD) are scored on
  int64_t calib_chunks = -1;  // chunks the calibration statistics use (< 0: all)
  int shards = 0;             // jobs per type; 0: enough for at least 8 jobs
  int threads = 0;
  std::function<void(const std::string&)> log;  // progress lines (optional)
};

// The default candidates: the k-quants Q2_K…Q6_K, Q8_0 and every writable i-quant of the block table.
std::vector<GgmlType> default_budget_types();
// $EDGEQ_CACHE or $XDG_CACHE_HOME/edgeq or ~/.cache/edgeq, then /budget.
std::string default_budget_cache();
// "Q4_K,Q6_K,IQ4_XS" -> types (each must be writable); throws edgeq::Error naming --types.
std::vector<GgmlType> parse_budget_types(const std::string& list);

struct BudgetJob {
  std::string id;  // "Q4_K-1of2"
  GgmlType type;
  int shard = 0, n_shards = 1;
};

// Validates the options (source present, method allowed, data present when needed) and lists the jobs; no work.
std::vector<BudgetJob> plan_budget_jobs(const BudgetOptions& opt);
// The cache directory of these options (<cache>/<key>).
std::string budget_work_dir(const BudgetOptions& opt);
// Runs one job (skipped when its result file exists for the same key).
void run_budget_job(const BudgetOptions& opt, const BudgetJob& job);
// One shell command per job (absolute paths, quoted for sh): `exe quantize SRC --budget-job ID …`. Any of them runs
// anywhere sharing the cache directory's file system, in any order or all at once.
std::vector<std::string> budget_plan_lines(const BudgetOptions& opt, const std::string& exe);

struct BudgetTensor {
  std::string name;
  GgmlType type;
  uint64_t bytes = 0;
  double predicted_kld = 0;  // ΔKLD of this tensor alone at this type (0 for tensors kept as they are)
  bool quantizable = false;
};
struct BudgetResult {
  uint64_t target_bytes = 0, file_bytes = 0, tensor_bytes = 0, n_elements = 0;
  double bpw = 0;
  double predicted_kld = 0;  // Σ over tensors of ΔKLD × its type's interaction factor
  double predicted_additive_kld = 0;      // Σ ΔKLD (the plain additive model)
  std::map<std::string, double> interaction;  // type -> KLD of all tensors at once / Σ single ΔKLD
  std::map<std::string, std::map<GgmlType, double>> additive_kld_by_name;  // tensor -> type -> ΔKLD measured
  double measured_kld = 0;   // the written mix on the same calibration chunks
  double measured_kld_err = 0;
  std::string file_type;      // general.file_type's name
  std::string method;
  std::vector<BudgetTensor> tensors;  // in file order
  size_t jobs_run = 0, jobs_cached = 0;
  double seconds = 0;
};

struct BudgetTarget {
  uint64_t bytes = 0;  // file size; or
  double bpw = 0;      // bits per weight of the tensor data (llama.cpp's BPW)
};

// Runs the missing jobs (none when merge_only: then a missing job is an error naming it), solves for the target
// and writes `out` (AtomicOutputFile) with the per-tensor types; record_metadata: edgeq.budget.* keys (target,
// predicted and measured KLD, each tensor's type and ΔKLD) and edgeq.quantize.method.
BudgetResult build_budget_file(const BudgetOptions& opt, const BudgetTarget& target, const std::string& out,
                               bool record_metadata, bool merge_only);

}  // namespace edgeq::compare
