// The quantization sweep behind `edgeq compare SRC -o DIR --eval TEXT`: convert the source once (an F32
// reference GGUF, or F16 when memory is short), score the reference once (perplexity and its log-probabilities
// for KL divergence), calibrate once on --calib TEXT when a method needs statistics, then for every type x
// method quantize the reference, evaluate the file against it and record one result file.
// The report (edgeq/compare/report.h) is built from the result files, so a sweep resumes where it stopped,
// and entries run elsewhere (--plan, one command per entry) merge into the same report.
//
// Layout of DIR: report.{md,json,csv}, ppl_vs_bpw.svg, kld_vs_bpw.svg, results/<TYPE>-<method>.json (one per
// finished entry), models/<TYPE>-<method>.gguf (kept with --keep), work/ (the reference GGUF, its
// log-probabilities and reference.json, the calibration statistics calibration.gguf and calibration.json;
// removed when a sweep completes unless --keep).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "edgeq/calibrate/calibrate.h"
#include "edgeq/compare/budget.h"
#include "edgeq/compare/report.h"
#include "edgeq/quant/quantize.h"

namespace edgeq::compare {

struct SweepOptions {
  std::string source;      // HF checkpoint dir, .onnx, or a GGUF (F32/F16/BF16)
  std::string out_dir;     // report directory
  std::string eval_text;   // evaluation text
  std::string calib_text;  // calibration text (calibrate/data.h formats), for methods that compute statistics
  std::string imatrix;     // llama.cpp imatrix file, for the `imatrix` method (instead of --calib)
  std::vector<std::string> types;    // mixes (llama-quantize names); empty: default_types()
  std::vector<std::string> methods;  // empty: default_methods(*this)
  // Budget entries beside the fixed mixes, one per item: "2.0G" (a file size as quantize --target-size reads it)
  // or "2.5bpw" (bits per weight). Each is the entry of type "budget-<item>" (types may name them so too).
  std::vector<std::string> budgets;
  std::vector<GgmlType> budget_types;  // the budget entries' candidate block types; empty: the budget's default
  int64_t n_ctx = 256;
  int64_t max_chunks = -1;  // < 0: all
  int64_t calib_chunks = -1;  // chunks of the calibration text (n_ctx tokens each); < 0: all
  std::string ref_type = "auto";  // reference of an HF/ONNX source: auto | f32 | f16 (choose_reference_type)
  int threads = 0;          // 0: all cores; results do not depend on it
  bool keep = false;        // keep the quantized files (DIR/models/) and DIR/work/
  // Set (e.g. by a SIGINT handler) to stop after the current step; finished entries stay in the report.
  const std::atomic<bool>* cancel = nullptr;
};

// The default sweep: F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q3_K_M, Q2_K.
const std::vector<std::string>& default_types();  // type_sets()'s "default"
// Named lists --types accepts in place of a mix: "default" and "low-bit" (the 3-bit and smaller mixes: k-quants
// and i-quants, the i-quants llama.cpp refuses without an importance matrix among them).
struct TypeSet {
  std::string name;
  std::vector<std::string> types;
};
const std::vector<TypeSet>& type_sets();
std::vector<std::string> expand_types(const std::vector<std::string>& types);  // the named lists replaced

// How weights are rounded. One row per method: a method joins the sweep by adding a row that names what it
// reads and prepares the quantize options from it. Nothing else in the sweep knows the methods.
enum class Calibration {
  None,        // nothing computed from --calib
  Importance,  // the sweep's calibration statistics (mean x², mean |x|)
  Hessian,     // ... with the inputs' Hessians XᵀX (GPTQ, AWQ's error search, auto's choice)
};
struct MethodInputs {
  std::vector<std::string> files;             // files read as given (hashed into the entry key)
  Calibration calibration = Calibration::None;  // statistics the sweep computes once from --calib TEXT
};
// What a method prepares its quantization from.
struct MethodContext {
  const SweepOptions& opt;
  const quant::QuantizeSource& reference;          // the reference GGUF, opened once
  const calibrate::CalibrationStats* stats;        // the sweep's calibration (null unless the inputs asked for it)
  std::function<void(const std::string&)> log;     // progress lines of a long preparation (may throw to cancel)
};
struct SweepMethod {
  const char* name;
  std::string description;
  bool calibrated;  // false: plain rounding. Calibration changes nothing for float types, so such methods
                    // skip F32/F16/BF16.
  // What the method reads beyond the model; throws edgeq::Error naming the missing option when one is
  // required and absent (checked before any work starts).
  std::function<MethodInputs(const SweepOptions&)> inputs;
  // Sets qo's importance / tensor hook / method record; the returned state must outlive quantize_model.
  std::function<std::shared_ptr<void>(const MethodContext&, quant::QuantizeOptions& qo)> prepare;
};
const std::vector<SweepMethod>& methods();
const SweepMethod& find_method(std::string_view name);  // throws edgeq::Error listing the methods
// rtn; plus imatrix with --imatrix FILE; plus imatrix and auto with --calib TEXT (llama.cpp's usual
// calibrated baseline, and edgeq's per-tensor choice among rtn, imatrix, awq and gptq).
std::vector<std::string> default_methods(const SweepOptions& opt);

// The reference for an HF/ONNX source. requested: "auto", "f32" or "f16". auto keeps F32 unless 1.5 x its
// size (the reference plus a quantized file of up to half of it, both mapped while an entry is evaluated)
// exceeds the available memory (mem_available bytes; 0 = unknown: F32), then F16.
struct ReferenceChoice {
  std::string outtype;  // "f32" or "f16"
  std::string reason;   // one line for the report
};
ReferenceChoice choose_reference_type(std::string_view requested, uint64_t f32_bytes, uint64_t mem_available);
// MemAvailable from /proc/meminfo in bytes, 0 when it cannot be read.
uint64_t mem_available_bytes();

struct Entry {
  std::string type;    // canonical mix name ("Q4_K_M"), or "budget-<item>" for a budget entry
  std::string method;  // "rtn"
  std::string id() const { return type + "-" + method; }
  bool budget() const { return is_budget_type(type); }
  static bool is_budget_type(std::string_view t) { return t.substr(0, 7) == "budget-"; }
};

// Budget entries (compare/budget.h's build_budget_file on the sweep's source, calibration text and n_ctx, the
// sensitivities cached where `quantize --target-size` caches them), measured like every other entry.
// The target of "budget-2.0G" / "budget-2.5bpw"; throws edgeq::Error naming the flag for anything else.
BudgetTarget budget_entry_target(std::string_view type);
// The method of the sweep's budget entries: gptq when the methods list gptq, auto or awq (the budget's
// calibrated method: auto and awq fold scales across tensors, which a budget cannot), imatrix when it is the
// only calibrated method, with --calib; rtn without --calib.
std::string budget_entry_method(const SweepOptions& opt, const std::vector<std::string>& methods);
// The budget's options for the sweep: its source, --calib text and chunks, n_ctx, threads, candidate types, the
// given method.
BudgetOptions budget_entry_options(const SweepOptions& opt, const std::string& method);

// types x methods in the given order, without pairs a method does not apply to. Validates every name and
// every method's inputs; throws edgeq::Error before any work.
std::vector<Entry> plan_entries(const SweepOptions& opt);

// Progress of a sweep, for a display.
struct SweepProgress {
  size_t entry = 0;      // 1-based entry being worked on (0 while preparing the reference)
  size_t n_entries = 0;
  std::string label;     // "Q4_K_M rtn", "reference" or "calibration"
  std::string stage;     // "convert", "load", "evaluate", "calibrate", "prepare", "quantize", "done", "skipped"
  double fraction = 0;   // of the whole sweep's remaining work at the start of this run, 0..1
  std::string detail;    // e.g. "chunk 3/12 PPL 12.3"
};
using SweepProgressFn = std::function<void(const SweepProgress&)>;

struct SweepOutcome {
  size_t n_entries = 0, n_run = 0, n_skipped = 0;
  bool interrupted = false;
  Report report;          // the finished entries (run_sweep)
  WrittenReport files;    // paths of the written report (empty for a single-entry run)
};

// Runs the sweep: every entry not yet in DIR/results with the same key is run, and the report is rewritten
// after each one (so an interruption leaves a consistent report of the finished entries).
SweepOutcome run_sweep(const SweepOptions& opt, const SweepProgressFn& progress = {});

// Runs exactly one entry and writes its result file to result_path (no report). The reference is taken from
// DIR/work when it is there for the same inputs, else made there (shared by entries on a shared disk).
SweepOutcome run_entry(const SweepOptions& opt, const Entry& entry, const std::string& result_path,
                       const SweepProgressFn& progress = {});

// One JSON line per entry: {"entry", "key", "result", "command"}, the command being the argv that runs the
// entry alone with `exe` (the edgeq binary) and writes its result file into DIR/results. Each command makes
// the reference in DIR/work if it is not there yet (run one line first when they share a disk).
std::vector<std::string> plan_lines(const SweepOptions& opt, const std::string& exe);

// The key that identifies an entry's inputs and flags: source files, the reference type, evaluation text,
// n_ctx, chunks, type, method and the method's inputs (its files; for calibrated methods the calibration
// text and --calib-chunks) as the hex of a 64-bit hash. Thread count and --keep are not part of it.
std::string entry_key(const SweepOptions& opt, const Entry& e);

}  // namespace edgeq::compare
