// Results of a quantization sweep and the report made from them: report.md (one table, the best entry of
// each size band marked, a one-line recommendation), report.json, report.csv, and two SVG plots
// (perplexity and log-scale KL divergence against bits per weight, one line per method; budget entries as a
// line of their own with diamond markers).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace edgeq::compare {

// The reference every entry is measured against (the source as F32 or F16, or a float GGUF as given).
struct ReferenceResult {
  std::string run_key;    // hash of the source files, evaluation text, n_ctx and chunks
  std::string source;     // as given
  std::string eval_text;  // as given
  std::string file_type;  // F32 / F16 / BF16
  std::string choice;     // why this type (compare::choose_reference_type's reason)
  uint64_t file_bytes = 0, parameters = 0;
  double bits_per_weight = 0;
  double ppl = 0, ppl_err = 0;
  int64_t n_ctx = 0, n_chunks = 0, scored = 0;
  double eval_seconds = 0;  // timing (not compared between runs)
};

struct EntryResult {
  std::string key;  // entry_key(): inputs and flags
  std::string type, method;
  std::string inputs;  // what the method read: "" (rtn), the imatrix file, or the calibration text and chunks
  uint64_t file_bytes = 0;
  double bits_per_weight = 0;
  double ppl = 0, ppl_err = 0, ppl_ratio = 0, ppl_ratio_err = 0;
  double mean_kld = 0, mean_kld_err = 0, median_kld = 0, p99_kld = 0, max_kld = 0;
  double same_top_pct = 0, rms_dp_pct = 0;
  double quantize_seconds = 0, eval_seconds = 0, eval_tokens_per_second = 0;  // timings
  // Budget entries (type "budget-<item>"): the target, and the budget's predicted KLD against the KLD it measured
  // on its calibration chunks (the table's mean KLD is on the evaluation text, like every entry's).
  uint64_t budget_target_bytes = 0;  // 0: a bits-per-weight target
  double budget_target_bpw = 0;
  double predicted_kld = 0, calib_kld = 0;
  int64_t budget_chunks = 0;
  bool is_budget() const { return type.rfind("budget-", 0) == 0; }
};

nlohmann::json reference_to_json(const ReferenceResult& r);
ReferenceResult reference_from_json(const nlohmann::json& j, const std::string& path);  // throws edgeq::Error

// One result file: the reference and one entry.
nlohmann::json result_to_json(const ReferenceResult& ref, const EntryResult& e);
void result_from_json(const nlohmann::json& j, const std::string& path, ReferenceResult& ref, EntryResult& e);

struct Report {
  ReferenceResult reference;
  std::vector<EntryResult> entries;  // sorted: more bits per weight first, then by method table order
  // Entries the sweep planned; more than entries.size() marks a partial report (interrupted, or written
  // between entries): it says so at its top and in the JSON ("complete": false) and recommends nothing.
  // 0: not known (a merge of result files), taken as complete.
  size_t n_planned = 0;
  bool partial() const { return n_planned > entries.size(); }
};

// Reads result files (paths of files, or directories whose *.json files are read) into a report. Every
// file must share one reference (the same run key); an entry seen twice must agree. Throws edgeq::Error.
Report merge_results(const std::vector<std::string>& paths);
void sort_entries(Report& r);

// Size band of an entry: whole bits per weight (floor of bpw). The marked entry of a band has the lowest
// mean KL divergence in it.
int size_band(double bits_per_weight);
std::vector<bool> best_in_band(const Report& r);
// "smallest file within 1% PPL of the reference" (or the closest when none is), as one line of text.
std::string recommendation(const Report& r);

// The table printed by `edgeq compare` and embedded in report.md (Markdown, columns padded to line up).
std::string render_table(const Report& r);

// report.md's table of the budget entries (empty without): target, predicted against calibration-measured KLD,
// and the fixed mix of the largest size not above each budget file with the ratio of their mean KLD.
std::string render_budget_table(const Report& r);

struct WrittenReport {
  std::string md, json, csv, ppl_svg, kld_svg;
};
// Writes the five report files into dir (each via a temp file + rename). Timings are reported but a rerun
// with the same results writes the same files apart from them.
WrittenReport write_report(const Report& r, const std::string& dir);

// The plots. Geometry (plot area in pixels and axis ranges) is recorded in report.json's "plots" so a
// rendering can be checked against the data.
struct PlotAxis {
  double min = 0, max = 1;  // data range (log10 values when log)
  double px0 = 0, px1 = 1;  // pixel positions of min and max
  bool log = false;
  double to_px(double v) const;  // v in data units (not log10)
};
struct PlotGeometry {
  int width = 0, height = 0;
  PlotAxis x, y;
};
PlotGeometry plot_geometry(const Report& r, bool kld);
std::string render_svg(const Report& r, bool kld);
// Colour of a method's points and line (#rrggbb), fixed by its row in methods().
std::string method_colour(const std::string& method);

}  // namespace edgeq::compare
