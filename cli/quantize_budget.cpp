#include "quantize_budget.h"

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "edgeq/compare/budget.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/quant/budget.h"
#include "progress.h"

namespace edgeq::cli {

namespace {
// This program's path, for the plan's commands.
std::string budget_self_exe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("edgeq") : p.string();
}
}  // namespace

void add_budget_options(CLI::App* sub, BudgetFlags& f) {
  auto* size = sub->add_option("--target-size", f.target_size,
                  "Budget mix: the file of at most SIZE bytes (and within 0.5% of it) with the lowest predicted KL "
                  "divergence, one llama.cpp block type per tensor chosen from --types by measured sensitivity "
                  "(e.g. 3620544, 3.6M, 2G, 2GiB; K/M/G powers of 1000, Ki/Mi/Gi of 1024). Needs --data");
  sub->add_option("--target-bpw", f.target_bpw, "Budget mix by bits per weight of the tensor data (llama.cpp's BPW)")
      ->excludes(size);
  sub->add_option("--types", f.types,
                  "Budget mix: candidate block types, comma-separated (default: Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0 and every "
                  "writable i-quant)");
  sub->add_option("--cache", f.cache,
                  "Budget mix: where sensitivities are cached (default $EDGEQ_CACHE/budget or ~/.cache/edgeq/budget); a "
                  "second budget of the same source, data, method and types only solves");
  sub->add_option("--budget-chunks", f.chunks,
                  "Budget mix: calibration chunks each sensitivity is measured on (default 2, spread over the text; cost is linear in it)");
  sub->add_option("--budget-shards", f.shards, "Budget mix: jobs per type (default: enough for 8 jobs)");
  sub->add_option("--calib-chunks", f.calib_chunks, "Budget mix: chunks of --data the calibration statistics use (default all)");
  sub->add_option("--ctx", f.ctx, "Budget mix: chunk length in tokens (default 256)");
  auto* plan = sub->add_option("--plan", f.plan,
                  "Budget mix: write the sensitivity jobs to FILE, one shell command per line (run them anywhere sharing "
                  "--cache, in any order), instead of running them");
  sub->add_option("--budget-job", f.job, "Budget mix: run one job of --plan (its id, e.g. Q4_K-1of1)")->excludes(plan)->excludes(size);
  sub->add_flag("--merge", f.merge,
                "Budget mix: build the file from the jobs' results only (an error names any job without a result)");
}

int run_budget(const BudgetFlags& f, const BudgetRunArgs& a, const std::string& other_flags) {
  if (!other_flags.empty()) fail("quantize: {} does not go with a budget mix (--target-size/--target-bpw/--plan)", other_flags);
  // --plan may name the target too (it is not needed to plan: the jobs are the same for every target).
  const bool has_target = !f.target_size.empty() || f.target_bpw > 0;
  if (f.plan.empty() && f.job.empty() && !has_target)
    fail("quantize: give --target-size/--target-bpw, --plan FILE or --budget-job ID");
  if (f.merge && !f.plan.empty()) fail("quantize: --merge builds the file; --plan only writes the jobs");
  if (!f.target_size.empty() && f.target_bpw > 0) fail("quantize: --target-size and --target-bpw exclude each other");
  if (f.target_bpw < 0 || f.target_bpw > 32) fail("--target-bpw {}: must be within 0..32", f.target_bpw);
  if (f.merge && f.target_size.empty() && f.target_bpw <= 0) fail("--merge builds a budget file: give --target-size or --target-bpw");
  compare::BudgetOptions o;
  o.source = a.src;
  o.data = a.data;
  o.method = a.method;
  if (!f.types.empty()) o.types = compare::parse_budget_types(f.types);
  o.cache_dir = f.cache;
  o.n_ctx = f.ctx;
  o.chunks = f.chunks;
  o.calib_chunks = f.calib_chunks;
  if (f.shards < 0 || f.shards > 4096) fail("--budget-shards {}: must be within 1..4096", f.shards);
  o.shards = static_cast<int>(f.shards);
  o.threads = a.threads;
  compare::BudgetTarget target;
  if (!f.target_size.empty()) target.bytes = quant::parse_byte_size(f.target_size, "--target-size");
  target.bpw = f.target_bpw;
  const auto jobs = compare::plan_budget_jobs(o);  // every check before any work
  if (!a.out.empty()) check_output_path(a.out);
  if (!f.plan.empty()) check_output_path(f.plan);
  if (!a.json && progress_style() != ProgressStyle::Off) o.log = [](const std::string& l) { std::fprintf(stderr, "budget: %s\n", l.c_str()); };

  if (!f.plan.empty()) {
    const auto lines = compare::budget_plan_lines(o, budget_self_exe());
    std::string text;
    for (auto& l : lines) text += l + "\n";
    AtomicOutputFile out(f.plan);
    out.write(text.data(), text.size());
    out.commit();
    std::printf("%zu jobs -> %s (cache %s); then: edgeq quantize %s -o OUT --target-size SIZE --merge (same flags)\n",
                lines.size(), f.plan.c_str(), compare::budget_work_dir(o).c_str(), a.src.c_str());
    return 0;
  }
  if (!f.job.empty()) {
    for (auto& j : jobs)
      if (j.id == f.job) {
        compare::run_budget_job(o, j);
        return 0;
      }
    std::string ids;
    for (auto& j : jobs) ids += (ids.empty() ? "" : ", ") + j.id;
    fail("--budget-job {}: not a job of this plan ({})", f.job, ids);
  }
  if (a.out.empty()) fail("quantize: no output file (-o OUT.gguf)");
  const auto r = compare::build_budget_file(o, target, a.out, a.record_metadata, f.merge);
  if (a.json) {
    nlohmann::json t = nlohmann::json::array();
    for (auto& x : r.tensors)
      t.push_back({{"name", x.name}, {"type", ggml_type_name(x.type)}, {"bytes", x.bytes}, {"predicted_kld", x.predicted_kld}});
    nlohmann::json j = {{"input", a.src},         {"output", a.out},
                        {"method", r.method},     {"file_type", r.file_type},
                        {"target_bytes", r.target_bytes}, {"target_bpw", f.target_bpw},
                        {"file_size", r.file_bytes}, {"tensor_bytes", r.tensor_bytes},
                        {"n_elements", r.n_elements}, {"bpw", r.bpw},
                        {"predicted_kld", r.predicted_kld}, {"predicted_additive_kld", r.predicted_additive_kld},
                        {"interaction", r.interaction}, {"measured_kld", r.measured_kld},
                        {"measured_kld_err", r.measured_kld_err}, {"jobs_run", r.jobs_run},
                        {"jobs_cached", r.jobs_cached}, {"seconds", r.seconds},
                        {"tensors", t}};
    std::fputs(j.dump(1).c_str(), stdout);
    std::fputc('\n', stdout);
    return 0;
  }
  std::printf("budget mix %s -> %s (%s, general.file_type %s)\n", a.src.c_str(), a.out.c_str(), r.method.c_str(),
              r.file_type.c_str());
  if (r.target_bytes) std::printf("  %-14s %llu bytes\n", "target", static_cast<unsigned long long>(r.target_bytes));
  else std::printf("  %-14s %.4f bpw\n", "target", f.target_bpw);
  std::printf("  %-14s %llu bytes, %.4f bpw\n", "file", static_cast<unsigned long long>(r.file_bytes), r.bpw);
  std::printf("  %-14s predicted %.6f (additive %.6f), measured %.6f +/- %.6f (calibration chunks)\n", "mean KLD",
              r.predicted_kld, r.predicted_additive_kld, r.measured_kld, r.measured_kld_err);
  std::printf("  %-14s", "interaction");
  for (auto& [t, f] : r.interaction) std::printf(" %s %.3f", t.c_str(), f);
  std::printf("  (all tensors at once / sum of single)\n");
  std::printf("  %-14s %zu run, %zu cached; %.1f s\n", "jobs", r.jobs_run, r.jobs_cached, r.seconds);
  std::printf("  %-32s %-7s %10s %12s\n", "tensor", "type", "bytes", "ΔKLD");
  for (auto& x : r.tensors)
    std::printf("  %-32s %-7s %10llu %12.7f\n", x.name.c_str(), ggml_type_name(x.type),
                static_cast<unsigned long long>(x.bytes), x.predicted_kld);
  return 0;
}

}  // namespace edgeq::cli
