#include "edgeq/compare/report.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "edgeq/compare/sweep.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/quant/policy.h"

namespace edgeq::compare {

namespace fs = std::filesystem;

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

template <typename T>
T get(const nlohmann::json& j, const char* key, const std::string& path) {
  if (!j.is_object() || !j.contains(key)) fail("{}: not an edgeq compare result (no \"{}\")", path, key);
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: \"{}\" has the wrong type", path, key);
  }
}

// A number of a result file: present, of a numeric JSON type, finite and within [lo, hi] (a result file may have
// been edited or corrupted; a tampered number must never become a report or a recommendation).
double number(const nlohmann::json& j, const char* key, const std::string& path, double lo, double hi) {
  if (!j.is_object() || !j.contains(key)) fail("{}: not an edgeq compare result (no \"{}\")", path, key);
  const auto& v = j.at(key);
  if (!v.is_number()) fail("{}: \"{}\" has the wrong type", path, key);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) fail("{}: \"{}\" = {} is out of range [{}, {}]", path, key, x, lo, hi);
  return x;
}

uint64_t count(const nlohmann::json& j, const char* key, const std::string& path, uint64_t lo, uint64_t hi) {
  if (!j.is_object() || !j.contains(key)) fail("{}: not an edgeq compare result (no \"{}\")", path, key);
  const auto& v = j.at(key);
  if (!v.is_number_unsigned()) fail("{}: \"{}\" = {} is not a non-negative integer", path, key, v.dump());
  const uint64_t x = v.get<uint64_t>();
  if (x < lo || x > hi) fail("{}: \"{}\" = {} is out of range [{}, {}]", path, key, x, lo, hi);
  return x;
}

// An optional string of a result file (absent in results of earlier versions): a string when present.
std::string optional_string(const nlohmann::json& j, const char* key, const std::string& path) {
  if (!j.contains(key)) return {};
  if (!j.at(key).is_string()) fail("{}: \"{}\" has the wrong type", path, key);
  return j.at(key).get<std::string>();
}

// A key of the sweep (keys.h's Hasher::hex: 16 lower-case hex digits).
std::string hex_key(const nlohmann::json& j, const char* key, const std::string& path) {
  std::string k = get<std::string>(j, key, path);
  if (k.size() != 16 || k.find_first_not_of("0123456789abcdef") != std::string::npos)
    fail("{}: \"{}\" = \"{}\" is not a key of 16 hex digits", path, key, k);
  return k;
}

// Tensor data (bits per weight x parameters) cannot exceed the file holding it.
void check_size(const std::string& path, const char* what, double bpw, uint64_t parameters, uint64_t file_bytes) {
  if (bpw * static_cast<double>(parameters) / 8.0 > static_cast<double>(file_bytes) * (1 + 1e-9))
    fail("{}: {} \"bits_per_weight\" {} x {} parameters is more data than \"file_bytes\" {}", path, what, bpw,
         parameters, file_bytes);
}

constexpr double kHuge = 1e300;
// KLD statistics of near-identical models come out a hair below 0 (the base's 16-bit log-probabilities):
// about -1e-6 for F16 against F32. Anything below this floor is not rounding.
constexpr double kKldFloor = -1e-3;
constexpr uint64_t kMaxBytes = uint64_t(1) << 50;  // 1 PiB: no model file is larger

size_t method_rank(const std::string& m) {
  const auto& ms = methods();
  for (size_t i = 0; i < ms.size(); ++i)
    if (m == ms[i].name) return i;
  return ms.size();
}

void write_text(const fs::path& p, const std::string& s) {
  AtomicOutputFile f(p.string());
  f.write(s.data(), s.size());
  f.commit();
}

std::string pct(double ratio) { return fmt::format("{:+.2f}", 100.0 * (ratio - 1.0)); }

}  // namespace

nlohmann::json reference_to_json(const ReferenceResult& r) {
  return {{"run_key", r.run_key},       {"source", r.source},   {"eval_text", r.eval_text},
          {"file_type", r.file_type},   {"reference_choice", r.choice}, {"file_bytes", r.file_bytes}, {"parameters", r.parameters},
          {"bits_per_weight", r.bits_per_weight}, {"ppl", r.ppl}, {"ppl_err", r.ppl_err},
          {"n_ctx", r.n_ctx},           {"n_chunks", r.n_chunks}, {"scored_tokens", r.scored},
          {"eval_seconds", r.eval_seconds}};
}

ReferenceResult reference_from_json(const nlohmann::json& j, const std::string& path) {
  ReferenceResult r;
  r.run_key = hex_key(j, "run_key", path);
  r.source = get<std::string>(j, "source", path);
  r.eval_text = get<std::string>(j, "eval_text", path);
  if (r.source.empty() || r.eval_text.empty()) fail("{}: reference \"source\" or \"eval_text\" is empty", path);
  r.file_type = get<std::string>(j, "file_type", path);
  if (r.file_type != "F32" && r.file_type != "F16" && r.file_type != "BF16")
    fail("{}: reference \"file_type\" = \"{}\" is not F32, F16 or BF16", path, r.file_type);
  r.choice = optional_string(j, "reference_choice", path);  // absent in results of earlier versions
  r.file_bytes = count(j, "file_bytes", path, 1, kMaxBytes);
  r.parameters = count(j, "parameters", path, 1, kMaxBytes);
  r.bits_per_weight = number(j, "bits_per_weight", path, 1, 64);
  r.ppl = number(j, "ppl", path, 1, kHuge);  // exp(mean NLL), NLL >= 0
  r.ppl_err = number(j, "ppl_err", path, 0, kHuge);
  r.n_ctx = static_cast<int64_t>(count(j, "n_ctx", path, 8, uint64_t(1) << 24));
  r.n_chunks = static_cast<int64_t>(count(j, "n_chunks", path, 1, uint64_t(1) << 32));
  r.scored = static_cast<int64_t>(count(j, "scored_tokens", path, 1, uint64_t(1) << 40));
  r.eval_seconds = number(j, "eval_seconds", path, 0, kHuge);
  // What the numbers must agree on: llama.cpp scores the second half of each chunk but its last token.
  if (r.scored != r.n_chunks * (r.n_ctx - 1 - r.n_ctx / 2))
    fail("{}: reference \"scored_tokens\" {} does not match {} chunks of {} ({} scored each)", path, r.scored,
         r.n_chunks, r.n_ctx, r.n_ctx - 1 - r.n_ctx / 2);
  check_size(path, "reference", r.bits_per_weight, r.parameters, r.file_bytes);
  return r;
}

static nlohmann::json entry_to_json(const EntryResult& e) {
  return {{"key", e.key},
          {"type", e.type},
          {"method", e.method},
          {"method_inputs", e.inputs},
          {"file_bytes", e.file_bytes},
          {"bits_per_weight", e.bits_per_weight},
          {"ppl", e.ppl},
          {"ppl_err", e.ppl_err},
          {"ppl_ratio", e.ppl_ratio},
          {"ppl_ratio_err", e.ppl_ratio_err},
          {"mean_kld", e.mean_kld},
          {"mean_kld_err", e.mean_kld_err},
          {"median_kld", e.median_kld},
          {"p99_kld", e.p99_kld},
          {"max_kld", e.max_kld},
          {"same_top_p_pct", e.same_top_pct},
          {"rms_dp_pct", e.rms_dp_pct},
          {"quantize_seconds", e.quantize_seconds},
          {"eval_seconds", e.eval_seconds},
          {"eval_tokens_per_second", e.eval_tokens_per_second}};
}

static nlohmann::json entry_json(const EntryResult& e) {
  nlohmann::json j = entry_to_json(e);
  if (e.is_budget())
    j["budget"] = {{"target_bytes", e.budget_target_bytes}, {"target_bpw", e.budget_target_bpw},
                   {"predicted_kld", e.predicted_kld},      {"calibration_kld", e.calib_kld},
                   {"chunks", e.budget_chunks}};
  return j;
}

nlohmann::json result_to_json(const ReferenceResult& ref, const EntryResult& e) {
  return {{"edgeq_compare_result", 1}, {"reference", reference_to_json(ref)}, {"entry", entry_json(e)}};
}

void result_from_json(const nlohmann::json& j, const std::string& path, ReferenceResult& ref, EntryResult& e) {
  if (get<int>(j, "edgeq_compare_result", path) != 1) fail("{}: unsupported result version", path);
  ref = reference_from_json(get<nlohmann::json>(j, "reference", path), path);
  const auto x = get<nlohmann::json>(j, "entry", path);
  e.key = hex_key(x, "key", path);
  e.type = get<std::string>(x, "type", path);
  e.method = get<std::string>(x, "method", path);
  e.inputs = optional_string(x, "method_inputs", path);  // absent in results of earlier versions
  e.file_bytes = count(x, "file_bytes", path, 1, kMaxBytes);
  e.bits_per_weight = number(x, "bits_per_weight", path, 0.5, 64);
  e.ppl = number(x, "ppl", path, 1, kHuge);
  e.ppl_err = number(x, "ppl_err", path, 0, kHuge);
  e.ppl_ratio = number(x, "ppl_ratio", path, 1e-300, kHuge);
  e.ppl_ratio_err = number(x, "ppl_ratio_err", path, 0, kHuge);
  e.mean_kld = number(x, "mean_kld", path, kKldFloor, kHuge);
  e.mean_kld_err = number(x, "mean_kld_err", path, 0, kHuge);
  e.median_kld = number(x, "median_kld", path, kKldFloor, kHuge);
  e.p99_kld = number(x, "p99_kld", path, kKldFloor, kHuge);
  e.max_kld = number(x, "max_kld", path, kKldFloor, kHuge);
  e.same_top_pct = number(x, "same_top_p_pct", path, 0, 100);
  e.rms_dp_pct = number(x, "rms_dp_pct", path, 0, 100);
  e.quantize_seconds = number(x, "quantize_seconds", path, 0, kHuge);
  e.eval_seconds = number(x, "eval_seconds", path, 0, kHuge);
  e.eval_tokens_per_second = number(x, "eval_tokens_per_second", path, 0, kHuge);
  // What the numbers must agree on: the type and method exist, the KLD statistics are ordered.
  if (e.is_budget()) {
    BudgetTarget t;
    try {
      t = budget_entry_target(e.type);
    } catch (const Error& err) {
      fail("{}: \"type\" = \"{}\": {}", path, e.type, err.what());
    }
    const auto b = get<nlohmann::json>(x, "budget", path);
    e.budget_target_bytes = count(b, "target_bytes", path, t.bytes, t.bytes);  // the target its name says
    e.budget_target_bpw = number(b, "target_bpw", path, t.bpw, t.bpw);
    e.predicted_kld = number(b, "predicted_kld", path, 0, kHuge);
    e.calib_kld = number(b, "calibration_kld", path, kKldFloor, kHuge);
    e.budget_chunks = static_cast<int64_t>(count(b, "chunks", path, 1, uint64_t(1) << 32));
    if (e.budget_target_bytes && e.file_bytes > e.budget_target_bytes)
      fail("{}: {} is {} bytes, over its budget of {}", path, e.type, e.file_bytes, e.budget_target_bytes);
  } else {
    try {
      e.type = quant::file_type_info(quant::parse_file_type(e.type)).name;
    } catch (const Error&) {
      fail("{}: \"type\" = \"{}\" is not a quantization type", path, e.type);
    }
  }
  if (method_rank(e.method) == methods().size()) fail("{}: \"method\" = \"{}\" is not a method", path, e.method);
  if (!(e.median_kld <= e.max_kld && e.p99_kld <= e.max_kld && e.mean_kld <= e.max_kld))
    fail("{}: the KLD statistics are inconsistent (mean {}, median {}, p99 {}, max {})", path, e.mean_kld,
         e.median_kld, e.p99_kld, e.max_kld);
  // PPL(Q)/PPL(base) is the ratio of the two perplexities over the same tokens (the base's from its 16-bit
  // log-probabilities: a relative difference of about 1e-6).
  if (std::abs(e.ppl_ratio * ref.ppl / e.ppl - 1.0) > 1e-3)
    fail("{}: \"ppl_ratio\" {} does not match \"ppl\" {} / reference \"ppl\" {}", path, e.ppl_ratio, e.ppl, ref.ppl);
  check_size(path, "entry", e.bits_per_weight, ref.parameters, e.file_bytes);
}

void sort_entries(Report& r) {
  std::stable_sort(r.entries.begin(), r.entries.end(), [](const EntryResult& a, const EntryResult& b) {
    if (a.bits_per_weight != b.bits_per_weight) return a.bits_per_weight > b.bits_per_weight;
    if (method_rank(a.method) != method_rank(b.method)) return method_rank(a.method) < method_rank(b.method);
    return a.type < b.type;
  });
}

Report merge_results(const std::vector<std::string>& paths) {
  std::vector<fs::path> files;
  for (auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<fs::path> in;
      for (auto& e : fs::directory_iterator(p))
        if (e.is_regular_file() && e.path().extension() == ".json") in.push_back(e.path());
      if (in.empty()) fail("{}: no result files (*.json) in this directory", p);
      std::sort(in.begin(), in.end());
      files.insert(files.end(), in.begin(), in.end());
    } else {
      require_regular_file(p);
      files.push_back(p);
    }
  }
  if (files.empty()) fail("compare --merge: no result files given");
  Report r;
  std::map<std::string, std::pair<std::string, EntryResult>> seen;  // type-method -> (file, result)
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string path = files[i].string();
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_text_file(path));
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not a JSON file ({})", path, e.what());
    }
    ReferenceResult ref;
    EntryResult e;
    result_from_json(j, path, ref, e);
    if (i == 0) {
      r.reference = ref;
    } else if (ref.run_key != r.reference.run_key) {
      fail("{}: measured against a different reference or text (run key {}) than {} ({})", path, ref.run_key,
           files[0].string(), r.reference.run_key);
    }
    const std::string id = e.type + "-" + e.method;
    if (auto it = seen.find(id); it != seen.end()) {
      if (it->second.second.key != e.key || it->second.second.mean_kld != e.mean_kld)
        fail("{}: {} differs from the same entry in {}", path, id, it->second.first);
      continue;
    }
    seen.emplace(id, std::make_pair(path, e));
    r.entries.push_back(e);
  }
  sort_entries(r);
  return r;
}

// bpw as the table prints it (2 decimals), so 4.9999 is in the 5-bit band where it reads "5.00"
int size_band(double bpw) { return static_cast<int>(std::floor(std::round(bpw * 100.0) / 100.0)); }

std::vector<bool> best_in_band(const Report& r) {
  std::vector<bool> best(r.entries.size(), false);
  std::map<int, size_t> pick;
  for (size_t i = 0; i < r.entries.size(); ++i) {
    const int b = size_band(r.entries[i].bits_per_weight);
    auto it = pick.find(b);
    if (it == pick.end() || r.entries[i].mean_kld < r.entries[it->second].mean_kld) pick[b] = i;
  }
  for (auto& [b, i] : pick) best[i] = true;
  return best;
}

std::string recommendation(const Report& r) {
  if (r.entries.empty()) return "No entries yet.";
  if (r.partial())
    return fmt::format("Partial report: {} of {} entries finished; no recommendation until all have run (rerun the "
                       "same command to complete it).",
                       r.entries.size(), r.n_planned);
  const EntryResult* pick = nullptr;
  for (auto& e : r.entries)
    if (e.ppl <= 1.01 * r.reference.ppl &&
        (!pick || e.bits_per_weight < pick->bits_per_weight ||
         (e.bits_per_weight == pick->bits_per_weight && e.mean_kld < pick->mean_kld)))
      pick = &e;  // the fewest bits; of equally small files, the lowest KLD
  if (pick)
    return fmt::format(
        "Recommended: {} ({}), the smallest file within 1% PPL of the reference: {:.2f} MiB, {:.2f} bpw, PPL {} %, "
        "mean KLD {:.6f}.",
        pick->type, pick->method, double(pick->file_bytes) / kMiB, pick->bits_per_weight,
        pct(pick->ppl / r.reference.ppl), pick->mean_kld);
  const EntryResult* closest = &r.entries[0];
  for (auto& e : r.entries)
    if (e.ppl < closest->ppl) closest = &e;
  return fmt::format("No file is within 1% PPL of the reference; the closest is {} ({}): {:.2f} MiB, PPL {} %.",
                     closest->type, closest->method, double(closest->file_bytes) / kMiB,
                     pct(closest->ppl / r.reference.ppl));
}

std::string render_table(const Report& r) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"type", "method", "size MiB", "bpw", "PPL", "ΔPPL %", "mean KLD", "p99 KLD", "top-1 %",
                  "quantize s", "eval tok/s", "best in band"});
  const auto& f = r.reference;
  rows.push_back({f.file_type + " (ref)", "-", fmt::format("{:.2f}", double(f.file_bytes) / kMiB),
                  fmt::format("{:.2f}", f.bits_per_weight), fmt::format("{:.4f} ± {:.4f}", f.ppl, f.ppl_err), "0",
                  "0", "0", "100", "-",
                  f.eval_seconds > 0 ? fmt::format("{:.0f}", double(f.n_chunks * f.n_ctx) / f.eval_seconds) : "-", ""});
  const auto best = best_in_band(r);
  for (size_t i = 0; i < r.entries.size(); ++i) {
    const auto& e = r.entries[i];
    rows.push_back({e.type, e.method, fmt::format("{:.2f}", double(e.file_bytes) / kMiB),
                    fmt::format("{:.2f}", e.bits_per_weight), fmt::format("{:.4f} ± {:.4f}", e.ppl, e.ppl_err),
                    pct(e.ppl / f.ppl), fmt::format("{:.6f}", e.mean_kld), fmt::format("{:.5f}", e.p99_kld),
                    fmt::format("{:.2f}", e.same_top_pct), fmt::format("{:.2f}", e.quantize_seconds),
                    fmt::format("{:.0f}", e.eval_tokens_per_second),
                    best[i] ? fmt::format("★ {} bit", size_band(e.bits_per_weight)) : ""});
  }
  // column widths in code points (the table holds a few multi-byte characters)
  auto width = [](const std::string& s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  };
  std::vector<size_t> w(rows[0].size(), 0);
  for (auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) w[c] = std::max(w[c], width(row[c]));
  std::string o;
  auto line = [&](const std::vector<std::string>& row) {
    o += "|";
    for (size_t c = 0; c < row.size(); ++c) {
      const bool left = c < 2 || c + 1 == row.size();
      const size_t pad = w[c] - width(row[c]);
      o.push_back(' ');
      if (!left) o.append(pad, ' ');
      o.append(row[c]);
      if (left) o.append(pad, ' ');
      o.append(" |");
    }
    o += "\n";
  };
  line(rows[0]);
  o += "|";
  for (size_t c = 0; c < w.size(); ++c) {  // text columns aligned left, numbers right
    const bool left = c < 2 || c + 1 == w.size();
    o.push_back(left ? ':' : '-');
    o.append(w[c], '-');
    o.append(left ? "-|" : ":|");
  }
  o += "\n";
  for (size_t i = 1; i < rows.size(); ++i) line(rows[i]);
  return o;
}

std::string render_budget_table(const Report& r) {
  std::string o;
  for (auto& e : r.entries) {
    if (!e.is_budget()) continue;
    if (o.empty())
      o = "\nBudget entries: one llama.cpp block type per tensor, chosen by measured sensitivity (`edgeq quantize "
          "--target-size`). The predicted KLD and the KLD measured on the calibration chunks it was predicted for; "
          "the table's mean KLD is on the evaluation text.\n\n"
          "| entry | method | target | file bytes | predicted KLD | calibration KLD | predicted / measured | "
          "fixed mix below | its mean KLD | budget / fixed |\n"
          "|:--|:--|--:|--:|--:|--:|--:|:--|--:|--:|\n";
    // the fixed mix of the largest size not above this file's: the one the budget has to beat
    const EntryResult* below = nullptr;
    for (auto& f : r.entries)
      if (!f.is_budget() && f.file_bytes <= e.file_bytes && (!below || f.file_bytes > below->file_bytes ||
                                                             (f.file_bytes == below->file_bytes && f.mean_kld < below->mean_kld)))
        below = &f;
    o += fmt::format("| {} | {} | {} | {} | {:.6f} | {:.6f} | {:.2f} | {} | {} | {} |\n", e.type, e.method,
                     e.budget_target_bytes ? fmt::format("{} bytes", e.budget_target_bytes)
                                           : fmt::format("{:g} bpw", e.budget_target_bpw),
                     e.file_bytes, e.predicted_kld, e.calib_kld, e.calib_kld > 0 ? e.predicted_kld / e.calib_kld : 0.0,
                     below ? below->type + " " + below->method : "-",
                     below ? fmt::format("{:.6f}", below->mean_kld) : "-",
                     below && below->mean_kld > 0 ? fmt::format("{:.2f}", e.mean_kld / below->mean_kld) : "-");
  }
  return o;
}

WrittenReport write_report(const Report& r, const std::string& dir) {
  const fs::path d(dir);
  fs::create_directories(d);
  WrittenReport w;
  w.md = (d / "report.md").string();
  w.json = (d / "report.json").string();
  w.csv = (d / "report.csv").string();
  w.ppl_svg = (d / "ppl_vs_bpw.svg").string();
  w.kld_svg = (d / "kld_vs_bpw.svg").string();
  const auto& f = r.reference;
  const auto best = best_in_band(r);

  std::string md = r.partial() ? fmt::format("> **PARTIAL REPORT: {} of {} entries finished.**\n\n", r.entries.size(),
                                             r.n_planned)
                               : std::string();
  md += fmt::format("# Quantization report: {}\n\n", fs::path(f.source).filename().string().empty()
                                                                    ? f.source
                                                                    : fs::path(f.source).filename().string());
  md += fmt::format(
      "Every file is measured against the reference ({} of `{}`) on `{}`: {} scored tokens ({} chunks of {} "
      "tokens, llama-perplexity's protocol). ΔPPL is relative to the reference's PPL; KLD is the mean KL "
      "divergence of the token distributions from the reference's; top-1 is how often both pick the same "
      "token. ★ marks the lowest mean KLD among files with the same whole number of bits per weight.\n\n",
      f.file_type, f.source, f.eval_text, f.scored, f.n_chunks, f.n_ctx);
  if (!f.choice.empty()) md += fmt::format("Reference: {}.\n\n", f.choice);
  std::vector<std::pair<std::string, std::vector<std::string>>> inputs;  // what the methods read, in order
  for (auto& e : r.entries) {
    if (e.inputs.empty()) continue;
    auto it = std::find_if(inputs.begin(), inputs.end(), [&](auto& x) { return x.first == e.inputs; });
    if (it == inputs.end()) it = inputs.insert(inputs.end(), {e.inputs, {}});
    if (std::find(it->second.begin(), it->second.end(), e.method) == it->second.end()) it->second.push_back(e.method);
  }
  for (auto& [what, ms] : inputs) md += fmt::format("Statistics for {}: {}.\n\n", fmt::join(ms, ", "), what);
  md += "**" + recommendation(r) + "**\n\n";
  md += render_table(r);
  md += render_budget_table(r);
  md += "\n![perplexity against bits per weight](ppl_vs_bpw.svg)\n\n![KL divergence against bits per weight](kld_vs_bpw.svg)\n";
  write_text(w.md, md);

  nlohmann::json j;
  j["edgeq_compare_report"] = 1;
  j["complete"] = !r.partial();
  j["n_entries_planned"] = r.partial() ? r.n_planned : r.entries.size();
  j["reference"] = reference_to_json(f);
  j["recommendation"] = recommendation(r);
  j["entries"] = nlohmann::json::array();
  for (size_t i = 0; i < r.entries.size(); ++i) {
    auto e = entry_json(r.entries[i]);
    e["size_band"] = size_band(r.entries[i].bits_per_weight);
    e["best_in_band"] = static_cast<bool>(best[i]);
    j["entries"].push_back(e);
  }
  for (bool kld : {false, true}) {
    const auto g = plot_geometry(r, kld);
    auto axis = [](const PlotAxis& a) {
      return nlohmann::json{{"min", a.min}, {"max", a.max}, {"px0", a.px0}, {"px1", a.px1}, {"log", a.log}};
    };
    j["plots"][kld ? "kld_vs_bpw.svg" : "ppl_vs_bpw.svg"] = {
        {"width", g.width}, {"height", g.height}, {"x", axis(g.x)}, {"y", axis(g.y)}};
  }
  write_text(w.json, j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");

  std::string csv =
      "type,method,file_bytes,bits_per_weight,ppl,ppl_err,ppl_ratio,mean_kld,mean_kld_err,median_kld,p99_kld,max_kld,"
      "same_top_p_pct,rms_dp_pct,size_band,best_in_band,quantize_seconds,eval_tokens_per_second\n";
  csv += fmt::format("{},reference,{},{:.6f},{:.6f},{:.6f},1,0,0,0,0,0,100,0,{},false,0,{:.1f}\n", f.file_type,
                     f.file_bytes, f.bits_per_weight, f.ppl, f.ppl_err, size_band(f.bits_per_weight),
                     f.eval_seconds > 0 ? double(f.n_chunks * f.n_ctx) / f.eval_seconds : 0.0);
  for (size_t i = 0; i < r.entries.size(); ++i) {
    const auto& e = r.entries[i];
    csv += fmt::format("{},{},{},{:.6f},{:.6f},{:.6f},{:.6f},{:.8f},{:.8f},{:.8f},{:.8f},{:.8f},{:.4f},{:.4f},{},{},{:.3f},{:.1f}\n",
                       e.type, e.method, e.file_bytes, e.bits_per_weight, e.ppl, e.ppl_err, e.ppl_ratio, e.mean_kld,
                       e.mean_kld_err, e.median_kld, e.p99_kld, e.max_kld, e.same_top_pct, e.rms_dp_pct,
                       size_band(e.bits_per_weight), best[i] ? "true" : "false", e.quantize_seconds,
                       e.eval_tokens_per_second);
  }
  write_text(w.csv, csv);
  write_text(w.ppl_svg, render_svg(r, false));
  write_text(w.kld_svg, render_svg(r, true));
  return w;
}

}  // namespace edgeq::compare
