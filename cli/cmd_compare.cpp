// edgeq compare: which quant level and method to ship.
//   edgeq compare SRC -o DIR --eval TEXT [--types LIST] [--methods LIST] [--calib TEXT] ...   the sweep
//                                                                            (edgeq/compare/sweep.h)
//   edgeq compare SRC -o DIR --eval TEXT ... --plan                            one JSON line per entry
//   edgeq compare --merge RESULTS... -o DIR                                   the report from result files
//   edgeq compare BASE.gguf CANDIDATE.gguf... -f TEXT                          existing files, one table
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include "command.h"
#include "edgeq/compare/report.h"
#include "edgeq/compare/sweep.h"
#include "edgeq/base/error.h"
#include "edgeq/base/thread_count.h"
#include "options.h"
#include "edgeq/compare/files.h"
#include "progress.h"

namespace cmd_compare {  // named, not anonymous: cli/ compiles as a unity build

namespace cmp = edgeq::compare;

struct Opts {
  std::vector<std::string> models, merge;
  std::string text, out, calib, imatrix, result, ref_type = "auto", budget_types;
  std::vector<std::string> types, methods, budgets, budget_bpw;
  int64_t ctx = 256, chunks = -1, calib_chunks = -1;
  int threads = 0;
  bool json = false, keep = false, plan = false;
};

std::atomic<bool> g_cancel{false};
extern "C" void on_signal(int) { g_cancel.store(true); }

// SIGINT/SIGTERM stop the sweep after the current step (the report keeps the finished entries); a second
// signal kills the process as usual.
struct CancelOnSignal {
  struct sigaction old_int{}, old_term{};
  CancelOnSignal() {
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~CancelOnSignal() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};

void print_report(const cmp::Report& r, const cmp::WrittenReport& w) {
  std::fputs(cmp::render_table(r).c_str(), stdout);
  std::printf("\n%s\n\nreport: %s\n        %s\n        %s\nplots:  %s\n        %s\n", cmp::recommendation(r).c_str(),
              w.md.c_str(), w.json.c_str(), w.csv.c_str(), w.ppl_svg.c_str(), w.kld_svg.c_str());
}

std::string self_exe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("edgeq") : p.string();
}

int run_sweep_mode(const Opts& o) {
  cmp::SweepOptions so;
  so.source = o.models[0];
  so.out_dir = o.out;
  so.eval_text = o.text;
  so.calib_text = o.calib;
  so.imatrix = o.imatrix;
  so.types = o.types;
  so.methods = o.methods;
  so.budgets = o.budgets;
  if (!o.budget_types.empty()) so.budget_types = cmp::parse_budget_types(o.budget_types);
  so.n_ctx = o.ctx;
  so.max_chunks = o.chunks;
  so.calib_chunks = o.calib_chunks;
  so.ref_type = o.ref_type;
  so.threads = edgeq::resolve_threads(o.threads);
  so.keep = o.keep;
  so.cancel = &g_cancel;
  if (o.plan) {
    for (auto& line : cmp::plan_lines(so, self_exe())) std::printf("%s\n", line.c_str());
    return 0;
  }
  edgeq::cli::Progress progress("compare");
  auto show = [&](const cmp::SweepProgress& p) {
    const std::string where = p.entry ? fmt::format("[{}/{}] {}", p.entry, p.n_entries, p.label) : p.label;
    if (p.stage == "done" || p.stage == "skipped") {
      progress.note(fmt::format("{} {}", where, p.stage == "done" ? "finished" : "already measured"));
      return;
    }
    progress.update(p.fraction, fmt::format("{}: {} {}", where, p.stage, p.detail));
  };
  CancelOnSignal guard;
  if (!o.result.empty()) {
    auto entries = cmp::plan_entries(so);
    if (entries.size() != 1) edgeq::fail("compare --result: give exactly one --types and one --methods");
    auto out = cmp::run_entry(so, entries[0], o.result, show);
    if (out.interrupted) {
      std::fprintf(stderr, "compare: interrupted; %s not written\n", o.result.c_str());
      return 130;
    }
    std::printf("%s: %s\n", o.result.c_str(), out.n_skipped ? "already measured" : "written");
    return 0;
  }
  auto out = cmp::run_sweep(so, show);
  if (out.interrupted) {
    std::fprintf(stderr, "compare: interrupted; %zu of %zu entries finished%s%s\n", out.report.entries.size(),
                 out.n_entries, out.files.md.empty() ? "" : ", report: ", out.files.md.c_str());
    return 130;
  }
  print_report(out.report, out.files);
  return 0;
}

int run_legacy_mode(const Opts& o) {
  namespace rt = edgeq::runtime;
  if (o.models.size() < 2)
    edgeq::fail("compare: give a reference GGUF and candidate GGUFs, or a source with -o REPORT_DIR (see --help)");
  cmp::CompareOptions co;
  co.n_ctx = o.ctx;
  co.max_chunks = o.chunks;
  co.n_threads = edgeq::resolve_threads(o.threads);
  const size_t n = o.models.size();
  edgeq::cli::Progress progress("compare", !o.json);
  size_t current = 0;
  std::string name;
  co.on_model = [&](size_t i, const std::string& path) {
    current = i;
    name = std::filesystem::path(path).filename().string();
  };
  co.progress = [&](const rt::ChunkProgress& p) {
    progress.update((double(current) + double(p.chunk) / p.n_chunks) / double(n),
                    fmt::format("[{}/{}] {} chunk {}/{} PPL {:.4f}", current + 1, n, name, p.chunk, p.n_chunks, p.ppl));
  };
  auto rep = cmp::compare_models(o.models[0], std::vector<std::string>(o.models.begin() + 1, o.models.end()), o.text, co);
  if (o.json)
    std::printf("%s\n", cmp::compare_to_json(rep).dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  else
    std::fputs(cmp::render_compare(rep).c_str(), stdout);
  return 0;
}

std::function<int()> setup(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "compare",
      "Which quant level and method to ship: quantize a model to several types and methods and measure each against "
      "the unquantized reference (PPL, KL divergence, top-1, size, speed), with a report and plots. Or compare "
      "existing GGUFs: edgeq compare BASE.gguf CANDIDATE.gguf... -f TEXT");
  sub->footer(
      "Examples:\n"
      "  edgeq compare data/tl-8m -o report --eval data/eval.txt\n"
      "  edgeq compare model.gguf -o report --eval wiki.txt --types Q4_K_M,Q3_K_M --methods rtn,imatrix --imatrix m.imatrix\n"
      "  edgeq compare data/tl-8m -o report --eval data/eval.txt --calib calib.txt --methods rtn,imatrix,awq,gptq,auto\n"
      "  edgeq compare data/tl-8m -o report --eval data/eval.txt --calib calib.txt --budget-bpw 2.5,3.2 --budgets 4.5M\n"
      "  edgeq compare data/tl-8m -o report --eval data/eval.txt --plan > plan.jsonl   (one command per entry)\n"
      "  edgeq compare --merge report/results -o report\n"
      "  edgeq compare ref-F32.gguf q4.gguf q3.gguf -f data/eval.txt\n"
      "Rerunning a sweep skips the entries already measured with the same inputs and flags (a changed --calib text "
      "reruns the calibrated methods only); Ctrl-C keeps the finished ones in the report (exit 130). With --calib the "
      "statistics (with Hessians when awq, gptq or auto run) are computed once on the reference and kept in DIR/work.");
  sub->add_option("models", o->models,
                  "With -o: the source (HF checkpoint dir, .onnx, or an F32/F16/BF16 GGUF). Without: a reference GGUF "
                  "then the candidate GGUFs");
  sub->add_option("-o,--output", o->out, "Report directory (report.md/.json/.csv, ppl_vs_bpw.svg, kld_vs_bpw.svg)");
  sub->add_option("-f,--file,--eval", o->text, "Text to evaluate on");
  std::string sets;  // the named lists, from compare's table
  for (const auto& t : cmp::type_sets())
    sets += fmt::format("{}'{}' ({}{})", sets.empty() ? "" : ", ", t.name, fmt::join(t.types, ","),
                        t.name == "default" ? "; the default" : "");
  sub->add_option("--types", o->types,
                  "Comma-separated mixes, or a named list: " + sets +
                      ". rtn is left out for the mixes that need an importance matrix when other methods are given")
      ->allow_extra_args(false);
  std::string mnames;
  for (auto& m : cmp::methods()) mnames += fmt::format("\n    {}: {}", m.name, m.description);
  sub->add_option("--methods", o->methods,
                  "Comma-separated methods (default: rtn; plus imatrix with --imatrix; plus imatrix and auto with "
                  "--calib). Methods other than rtn skip the float types:" + mnames)
      ->allow_extra_args(false);
  sub->add_option("--budgets", o->budgets,
                  "Comma-separated file sizes (as quantize --target-size reads them: 2.0G, 3.6M, 2GiB, 3620544): one "
                  "budget entry per size (budget-SIZE), the file of at most that size (within 0.5%) with the lowest "
                  "predicted KLD, one llama.cpp block type per tensor by measured sensitivity (quantize --target-size). "
                  "Needs --calib; method gptq when the methods list gptq, auto or awq, else imatrix when listed, else "
                  "rtn; sensitivities cached as quantize caches them ($EDGEQ_CACHE). Plotted as diamonds")
      ->allow_extra_args(false);
  sub->add_option("--budget-bpw", o->budget_bpw,
                  "Comma-separated bits per weight (e.g. 2.5,3.2): one budget entry per value (budget-2.5bpw), as "
                  "--budgets but by llama.cpp's bits per weight of the tensor data")
      ->allow_extra_args(false);
  sub->add_option("--budget-types", o->budget_types,
                  "Budget entries: candidate block types, comma-separated (default: Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0 and "
                  "every writable i-quant; with rtn those written without importance data)");
  sub->add_option("--imatrix", o->imatrix,
                  "Importance matrix (llama-imatrix format) for the imatrix method (used instead of --calib for it)");
  sub->add_option("--calib", o->calib,
                  "Calibration text (plain, JSONL, optionally zstd) for imatrix, awq, gptq and auto: calibrated once on "
                  "the reference, n_ctx = --ctx, at least 2 x ctx tokens");
  sub->add_option("--calib-chunks", o->calib_chunks, "Calibrate on the first N chunks of the calibration text (default: all)")
      ->check(edgeq::cli::whole_number("--calib-chunks", 1, INT64_MAX, "a whole number >= 1"));
  sub->add_option("--ref-type", o->ref_type,
                  "Reference of an HF/ONNX source: f32, f16, or auto (default): F32 unless 1.5 x its size exceeds "
                  "MemAvailable, then F16. A float GGUF source is the reference as it is. The choice is in the report")
      ->check(CLI::IsMember({"auto", "f32", "f16"}));
  edgeq::cli::add_ctx_option(sub, o->ctx, "Context size = chunk length in tokens (default 256)");
  edgeq::cli::add_chunks_option(sub, o->chunks);
  edgeq::cli::add_threads_option(sub, o->threads, "; results do not depend on it");
  sub->add_flag("--keep", o->keep, "Keep the quantized files (DIR/models/) and the reference (DIR/work/)");
  sub->add_flag("--plan", o->plan,
                "Print one JSON line per entry with the command that runs it alone (for a job array), then exit");
  sub->add_option("--result", o->result,
                  "Run the single entry given by --types T --methods M and write its result file here (no report)");
  sub->add_option("--merge", o->merge, "Build the report in -o DIR from result files or directories of them")
      ->expected(1, -1);
  sub->add_flag("--json", o->json, "Comparing existing GGUFs: print one JSON document instead of the table");
  return [o]() {
    o->types = edgeq::cli::split_list("--types", o->types);  // "Q8_0,,Q4_0" is a usage error, not two types
    o->methods = edgeq::cli::split_list("--methods", o->methods);
    {  // budgets: checked here, before any work (a bad size or bpw is a usage error)
      std::vector<std::string> items;
      for (auto& b : edgeq::cli::split_list("--budgets", o->budgets)) items.push_back(b);
      for (auto& b : edgeq::cli::split_list("--budget-bpw", o->budget_bpw)) items.push_back(b + "bpw");
      edgeq::cli::as_usage_error([&] {
        for (auto& b : items) cmp::budget_entry_target("budget-" + b);
        if (!o->budget_types.empty()) cmp::parse_budget_types(o->budget_types);
      });
      o->budgets = items;
    }
    if (!o->merge.empty()) {
      if (o->out.empty()) edgeq::fail("compare --merge: the report directory (-o DIR) is required");
      if (!o->models.empty()) edgeq::fail("compare --merge: takes result files or directories only");
      auto r = cmp::merge_results(o->merge);
      print_report(r, cmp::write_report(r, o->out));
      return 0;
    }
    if (o->text.empty()) edgeq::fail("compare: the text to evaluate (--eval TEXT) is required");
    if (!o->out.empty()) {
      if (o->models.size() != 1) edgeq::fail("compare -o: give exactly one source model, got {}", o->models.size());
      return run_sweep_mode(*o);
    }
    if (o->plan || !o->result.empty() || o->keep || !o->types.empty() || !o->methods.empty() || !o->calib.empty() ||
        !o->imatrix.empty() || o->calib_chunks > 0 || o->ref_type != "auto" || !o->budgets.empty() ||
        !o->budget_types.empty())
      edgeq::fail("compare: --plan, --result, --keep, --types, --methods, --calib, --calib-chunks, --imatrix, "
                  "--ref-type, --budgets, --budget-bpw and --budget-types need a report directory (-o DIR)");
    return run_legacy_mode(*o);
  };
}


}  // namespace cmd_compare
