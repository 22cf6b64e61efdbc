#include "edgeq/compare/sweep.h"

#include <fmt/ranges.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "edgeq/calibrate/calibrate.h"
#include "edgeq/calibrate/data.h"
#include "edgeq/calibrate/methods.h"
#include "edgeq/compare/report.h"
#include "keys.h"
#include "edgeq/convert/convert.h"
#include "edgeq/convert/model_input.h"
#include "edgeq/convert/plan.h"
#include "edgeq/base/error.h"
#include "edgeq/base/thread_count.h"
#include "edgeq/formats/text_input.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/quant/budget.h"
#include "edgeq/quant/policy.h"
#include "edgeq/compare/files.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/perplexity.h"
#include "edgeq/runtime/tokenizer.h"

namespace edgeq::compare {

namespace fs = std::filesystem;

namespace {

// Bumped when a change makes earlier results incomparable (part of every key).
constexpr int kResultVersion = 1;

// Thrown from progress callbacks when the sweep is cancelled; caught by run_sweep / run_entry.
struct Cancelled {};

// The reference as decided before any work: the source GGUF as given, or a conversion of an HF/ONNX source
// to the chosen type (its plan kept for the conversion).
struct ReferencePlan {
  ReferenceChoice choice;
  std::shared_ptr<convert::ConvertPlan> plan;  // null for a GGUF source
};

ReferencePlan plan_reference(const SweepOptions& opt) {
  const std::string& req = opt.ref_type;
  if (req != "auto" && req != "f32" && req != "f16") fail("compare: --ref-type {}: must be auto, f32 or f16", req);
  ReferencePlan rp;
  const convert::ModelInput source = convert::ModelInput::open(opt.source);
  if (source.is_gguf()) {
    const std::string type = source.float_type("the reference must be a float GGUF (F32, F16 or BF16)");
    if (req != "auto" && req != type)
      fail("compare: --ref-type {}: {} is a {} GGUF, used as it is (convert it, or give the HF checkpoint)", req,
           opt.source, type == "f32" ? "F32" : type == "bf16" ? "BF16" : "F16");
    rp.choice = {type, "the source GGUF as given"};
    return rp;
  }
  convert::ConvertOptions co;
  co.outtype = "f32";
  co.threads = opt.threads;
  rp.plan = std::make_shared<convert::ConvertPlan>(source.plan(co));
  uint64_t f32_bytes = 0;
  for (auto& t : rp.plan->tensors) f32_bytes += 4 * t.n_elements();
  rp.choice = choose_reference_type(req, f32_bytes, req == "auto" ? mem_available_bytes() : 0);
  return rp;
}

// Hashes of the inputs, computed once per run.
struct Keys {
  ReferencePlan ref;
  std::string run;    // source + reference type + eval text + n_ctx + chunks
  std::string calib;  // source + reference type + calibration text + n_ctx + calibration chunks (when given)
  std::map<std::string, std::string> method_inputs;
  std::map<std::string, std::string> budget;  // method -> the budget's sensitivity key and candidate types
  Calibration calibration = Calibration::None;  // the most any entry's method needs
};

Keys make_keys(const SweepOptions& opt, const std::vector<Entry>& entries) {
  Keys k;
  k.ref = plan_reference(opt);
  const std::string source = hash_source(opt.source);
  Hasher h;
  h.i64(kResultVersion);
  h.str(source);
  h.str(k.ref.choice.outtype);
  h.str(hash_text(opt.eval_text));
  h.i64(opt.n_ctx);
  h.i64(opt.max_chunks < 0 ? -1 : opt.max_chunks);
  k.run = h.hex();
  if (!opt.calib_text.empty()) {
    Hasher c;
    c.i64(kResultVersion);
    c.str(source);
    c.str(k.ref.choice.outtype);
    c.str(opt.calib_text);  // the path too: it is recorded in the files (quantize.imatrix.file)
    c.str(hash_text(opt.calib_text));
    c.i64(opt.n_ctx);
    c.i64(opt.calib_chunks < 0 ? -1 : opt.calib_chunks);
    k.calib = c.hex();
  }
  for (auto& e : entries) {
    if (k.method_inputs.count(e.method)) continue;
    const MethodInputs in = find_method(e.method).inputs(opt);
    Hasher m;
    m.str(e.method);
    for (auto& f : in.files) m.str(hash_file(f));
    if (in.calibration != Calibration::None) m.str(k.calib);
    k.method_inputs[e.method] = m.hex();
    k.calibration = std::max(k.calibration, in.calibration);
  }
  for (auto& e : entries) {  // a budget entry's file depends on its sensitivities' inputs (the cache's key)
    if (!e.budget() || k.budget.count(e.method)) continue;
    const BudgetOptions bo = budget_entry_options(opt, e.method);
    Hasher b;
    b.str(fs::path(budget_work_dir(bo)).filename().string());
    for (auto& j : plan_budget_jobs(bo)) b.str(j.id);  // the candidate types
    k.budget[e.method] = b.hex();
  }
  return k;
}

std::string key_of(const Keys& k, const Entry& e) {
  Hasher h;
  h.str(k.run);
  h.str(e.type);
  h.str(k.method_inputs.at(e.method));
  if (auto it = k.budget.find(e.method); e.budget() && it != k.budget.end()) h.str(it->second);
  return h.hex();
}

int thread_count(int t) { return resolve_threads(t); }  // the one --threads rule (base/thread_count.h)

// The sweep's progress arithmetic: units of work (1 per entry to run, 1 for the reference and 1 for the
// calibration when a run needs them). report() is also where a cancel request is noticed.
struct Tracker {
  const SweepOptions& opt;
  const SweepProgressFn& fn;
  size_t n_entries = 0;
  double units_total = 1, units_done = 0;
  void report(size_t entry, const std::string& label, const std::string& stage, double within,
              const std::string& detail = {}) {
    if (opt.cancel && opt.cancel->load()) throw Cancelled{};
    if (!fn) return;
    SweepProgress p;
    p.entry = entry;
    p.n_entries = n_entries;
    p.label = label;
    p.stage = stage;
    p.fraction = std::min(1.0, (units_done + within) / units_total);
    p.detail = detail;
    fn(p);
  }
};

fs::path work_dir(const SweepOptions& o) { return fs::path(o.out_dir) / "work"; }
fs::path results_dir(const SweepOptions& o) { return fs::path(o.out_dir) / "results"; }
fs::path models_dir(const SweepOptions& o) { return fs::path(o.out_dir) / "models"; }

void write_json_file(const fs::path& path, const nlohmann::json& j) {
  AtomicOutputFile f(path.string());
  const std::string s = j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  f.write(s.data(), s.size());
  f.commit();
}

// Reads one of the sweep's own files (DIR/work/*.json, result files), which a rerun with other inputs
// rewrites: it is not protected as an input of this process (formats/mapped_file.h).
std::optional<nlohmann::json> read_json_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  std::string text = read_text_file(path.string());
  forget_input_file(path.string());
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a JSON file ({})", path.string(), e.what());
  }
}

// What the entries of one run share, each made or loaded once: the reference (found in DIR/work for the same
// run key, or made there), the reference model with its tokenizer and the tokenized evaluation text, the
// reference opened as the quantization source, and the calibration statistics.
class Session {
 public:
  Session(const SweepOptions& opt, const Keys& keys, Tracker& tr) : opt_(opt), keys_(keys), tr_(tr) {}

  // Makes the reference and, when a method needs them, the calibration statistics. Units of work: one each
  // (counted in the tracker's total by the caller through units_needed()).
  void prepare() {
    prepare_reference();
    load();
    if (keys_.calibration != Calibration::None) prepare_calibration();
  }
  static double units_needed(const Keys& keys) { return keys.calibration != Calibration::None ? 2.0 : 1.0; }

  const ReferenceResult& reference() const { return result_; }

  // Quantizes the reference for one entry, evaluates it against the reference, writes the result file.
  void run_one(const Entry& e, const std::string& key, const fs::path& result_path, size_t index) {
    const std::string label = e.type + " " + e.method;
    const SweepMethod& m = find_method(e.method);
    tr_.report(index, label, "prepare", 0);
    fs::create_directories(models_dir(opt_));
    const fs::path qpath = models_dir(opt_) / (e.id() + ".gguf");
    struct RemoveUnlessKept {  // the quantized file goes when the entry ends (or fails), unless --keep; only
      fs::path p;              // once this run has written it (a refused output is someone else's file)
      bool keep, written = false;
      ~RemoveUnlessKept() {
        std::error_code ec;
        if (written && !keep) fs::remove(p, ec);
      }
    } cleanup{qpath, opt_.keep};
    double quantize_seconds = 0;
    std::optional<BudgetResult> budget;
    if (e.budget()) {  // the budget's sensitivities (cached), its solve and its file
      BudgetOptions bo = budget_entry_options(opt_, e.method);
      seed_budget_cache(bo);
      bo.log = [&](const std::string& line) { tr_.report(index, label, "budget", 0, line); };
      budget = build_budget_file(bo, budget_entry_target(e.type), qpath.string(), true, false);
      quantize_seconds = budget->seconds;
    } else {
      quant::QuantizeOptions qo;
      qo.policy.ftype = quant::parse_file_type(e.type);
      qo.threads = opt_.threads;
      const MethodContext ctx{opt_, *src_, m.inputs(opt_).calibration != Calibration::None ? &stats_ : nullptr,
                              [&](const std::string& line) { tr_.report(index, label, "prepare", 0, line); }};
      const auto t0 = std::chrono::steady_clock::now();
      const std::shared_ptr<void> state = m.prepare(ctx, qo);  // AWQ scales, auto's choices: part of quantize time
      const double prepare_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      qo.on_tensor = [&](const quant::TensorProgress& p) {
        tr_.report(index, label, "quantize", 0.25 * double(p.index + 1) / double(p.count),
                   fmt::format("tensor {}/{}", p.index + 1, p.count));
      };
      const auto qr = quant::quantize_model(*src_, qpath.string(), qo);
      quantize_seconds = prepare_seconds + qr.seconds;
    }
    cleanup.written = true;

    const auto model = runtime::Model::load(qpath.string());
    runtime::PerplexityOptions po = perplexity_options();
    po.kld_in = kld_;
    po.progress = [&](const runtime::ChunkProgress& p) {
      tr_.report(index, label, "evaluate", 0.25 + 0.75 * double(p.chunk) / double(p.n_chunks),
                 fmt::format("chunk {}/{} PPL {:.4f} KLD {:.5f}", p.chunk, p.n_chunks, p.ppl, p.kld));
    };
    const auto row = describe_model(model);
    const auto pr = runtime::perplexity(model, eval_tokens_, tok_->add_bos(), tok_->bos(), po);
    const auto& k = *pr.kld;
    EntryResult r;
    r.key = key;
    r.type = e.type;
    r.method = e.method;
    r.inputs = budget ? describe_budget_inputs(*budget) : describe_inputs(m);
    if (budget) {
      r.budget_target_bytes = budget->target_bytes;
      r.budget_target_bpw = budget_entry_target(e.type).bpw;
      r.predicted_kld = budget->predicted_kld;
      r.calib_kld = budget->measured_kld;
      r.budget_chunks = budget_entry_options(opt_, e.method).chunks;
    }
    r.file_bytes = row.file_bytes;
    r.bits_per_weight = row.bits_per_weight;
    r.ppl = pr.ppl;
    r.ppl_err = pr.ppl_err;
    r.ppl_ratio = k.ppl_ratio;
    r.ppl_ratio_err = k.ppl_ratio_err;
    r.mean_kld = k.mean_kld;
    r.mean_kld_err = k.mean_kld_err;
    r.median_kld = k.median_kld;
    r.p99_kld = k.p99_kld;
    r.max_kld = k.max_kld;
    r.same_top_pct = k.same_top_pct;
    r.rms_dp_pct = k.rms_dp_pct;
    r.quantize_seconds = quantize_seconds;
    r.eval_seconds = pr.seconds;
    r.eval_tokens_per_second = pr.seconds > 0 ? double(pr.n_chunks * pr.n_ctx) / pr.seconds : 0.0;
    fs::create_directories(result_path.parent_path().empty() ? fs::path(".") : result_path.parent_path());
    write_json_file(result_path, result_to_json(result_, r));
    tr_.units_done += 1;
    tr_.report(index, label, "done", 0);
  }

 private:
  // What a method read, for the report: its files, and the calibration it used.
  std::string describe_inputs(const SweepMethod& m) const {
    const MethodInputs in = m.inputs(opt_);
    std::vector<std::string> parts;
    for (auto& f : in.files) parts.push_back(fmt::format("`{}`", f));
    if (in.calibration != Calibration::None)
      parts.push_back(fmt::format("`{}` ({} chunks of {} tokens)", opt_.calib_text, stats_.n_chunks, stats_.n_ctx));
    return fmt::format("{}", fmt::join(parts, ", "));
  }

  // The budget's cache starts from what this sweep already made when it is the same: the F32 reference (an
  // HF/ONNX source converted to F32) and the calibration statistics (same text, chunks and n_ctx, computed on that
  // reference, with Hessians when the budget's method needs them). Linked, or copied across file systems.
  void seed_budget_cache(const BudgetOptions& bo) const {
    if (!keys_.ref.plan || keys_.ref.choice.outtype != "f32") return;  // a GGUF source is read as it is
    const fs::path dir = budget_work_dir(bo);
    std::error_code ec;
    fs::create_directories(dir, ec);
    auto seed = [&](const fs::path& from, const fs::path& to) {
      if (fs::exists(to, ec) || !fs::exists(from, ec)) return;
      const fs::path tmp = to.string() + fmt::format(".seed.{}", ::getpid());
      fs::create_hard_link(from, tmp, ec);
      if (ec) fs::copy_file(from, tmp, ec);
      if (!ec) fs::rename(tmp, to, ec);
      if (ec) fs::remove(tmp, ec);
    };
    seed(gguf_, dir / "reference.gguf");
    const auto cm = calibrate::parse_method(bo.method);
    const bool need_hessian = cm && calibrate::method_needs_hessian(*cm);
    if (cm && *cm != calibrate::Method::Rtn && keys_.calibration != Calibration::None &&
        (keys_.calibration == Calibration::Hessian || !need_hessian))
      seed(work_dir(opt_) / "calibration.gguf", dir / "calibration.gguf");
  }

  // What a budget entry read: the calibration text and the chunks its sensitivities are scored on.
  std::string describe_budget_inputs(const BudgetResult& b) const {
    const BudgetOptions bo = budget_entry_options(opt_, b.method);
    return fmt::format("`{}` (budget: sensitivities on {} chunks of {} tokens)", opt_.calib_text, bo.chunks, bo.n_ctx);
  }

  runtime::PerplexityOptions perplexity_options() const {
    runtime::PerplexityOptions po;
    po.n_ctx = opt_.n_ctx;
    po.max_chunks = opt_.max_chunks;
    po.n_threads = thread_count(opt_.threads);
    return po;
  }

  // The reference GGUF and its result: reused from DIR/work for the same run key, else converted (unless the
  // source is a float GGUF) and scored once, writing its log-probabilities.
  void prepare_reference() {
    const fs::path work = work_dir(opt_);
    fs::create_directories(work);
    kld_ = (work / "reference.kld").string();
    const bool gguf_source = !keys_.ref.plan;
    gguf_ = gguf_source ? opt_.source : (work / "reference.gguf").string();
    const fs::path ref_json = work / "reference.json";
    if (auto j = read_json_file(ref_json)) {
      const ReferenceResult r = reference_from_json(*j, ref_json.string());
      std::error_code ec;
      if (r.run_key == keys_.run && fs::exists(kld_, ec) && fs::exists(gguf_, ec)) {
        result_ = r;
        tr_.units_done += 1;
        tr_.report(0, "reference", "skipped", 0);
        return;
      }
    }
    if (!gguf_source) {
      const std::string& outtype = keys_.ref.choice.outtype;
      tr_.report(0, "reference", "convert", 0, outtype);
      convert::convert_to_gguf(*keys_.ref.plan, gguf_, outtype, opt_.threads, [&](const convert::ConvertProgress& p) {
        tr_.report(0, "reference", "convert", 0.2 * double(p.index + 1) / double(p.count),
                   fmt::format("{} tensor {}/{}", outtype, p.index + 1, p.count));
      });
    }
    load();
    runtime::PerplexityOptions po = perplexity_options();
    po.kld_base_out = kld_;
    po.progress = [&](const runtime::ChunkProgress& p) {
      tr_.report(0, "reference", "evaluate", 0.2 + 0.8 * double(p.chunk) / double(p.n_chunks),
                 fmt::format("chunk {}/{} PPL {:.4f}", p.chunk, p.n_chunks, p.ppl));
    };
    const auto row = describe_model(*model_);
    const auto pr = runtime::perplexity(*model_, eval_tokens_, tok_->add_bos(), tok_->bos(), po);
    auto& r = result_;
    r.run_key = keys_.run;
    r.source = opt_.source;
    r.eval_text = opt_.eval_text;
    r.file_type = row.file_type;
    r.choice = keys_.ref.choice.reason;
    r.file_bytes = row.file_bytes;
    r.parameters = row.parameters;
    r.bits_per_weight = row.bits_per_weight;
    r.ppl = pr.ppl;
    r.ppl_err = pr.ppl_err;
    r.n_ctx = pr.n_ctx;
    r.n_chunks = pr.n_chunks;
    r.scored = pr.count;
    r.eval_seconds = pr.seconds;
    write_json_file(ref_json, reference_to_json(r));
    tr_.units_done += 1;
  }

  // The reference model, its tokenizer, the evaluation tokens and the quantization source: once per run.
  void load() {
    if (model_) return;
    model_.emplace(runtime::Model::load(gguf_));
    tok_.emplace(Tokenizer::from_gguf(model_->gguf()));
    eval_tokens_ = tok_->tokenize(read_text_input(opt_.eval_text), true, false);
    src_.emplace(quant::open_gguf_source(gguf_));
    tr_.report(0, "reference", "load", 0, fmt::format("{} evaluation tokens", eval_tokens_.size()));
  }

  // The calibration statistics: reused from DIR/work for the same calibration key (with Hessians when
  // needed), else computed on the reference model and written there. Entries always read them back from
  // the file, so a sweep and entries run alone (--plan) quantize from the same numbers.
  void prepare_calibration() {
    const bool hessian = keys_.calibration == Calibration::Hessian;
    const fs::path path = work_dir(opt_) / "calibration.gguf";
    const fs::path meta = work_dir(opt_) / "calibration.json";
    std::error_code ec;
    if (auto j = read_json_file(meta); j && j->value("key", "") == keys_.calib && (j->value("hessian", false) || !hessian) &&
                                       fs::exists(path, ec)) {
      tr_.units_done += 1;
      tr_.report(0, "calibration", "skipped", 0);
    } else {
      const std::string text = calibrate::load_calibration_text({opt_.calib_text});
      const std::vector<int32_t> tokens = tok_->tokenize(text, true, false);
      calibrate::CalibrationOptions co;
      co.n_ctx = opt_.n_ctx;
      co.max_chunks = opt_.calib_chunks;
      co.n_threads = thread_count(opt_.threads);
      co.hessian = hessian;
      co.datasets = {opt_.calib_text};
      co.progress = [&](const calibrate::CalibrationProgress& p) {
        tr_.report(0, "calibration", "calibrate", p.done,
                   fmt::format("layer {}/{} chunk {}/{}{}", p.layer + 1, p.n_layers, p.chunk, p.n_chunks,
                               hessian ? " with Hessians" : ""));
      };
      tr_.report(0, "calibration", "calibrate", 0, fmt::format("{} tokens", tokens.size()));
      const calibrate::CalibrationStats s =
          calibrate::calibrate_to_file(*model_, tokens, tok_->add_bos(), tok_->bos(), co, path.string());
      write_json_file(meta, {{"key", keys_.calib}, {"hessian", hessian}, {"calib_text", opt_.calib_text},
                             {"n_ctx", s.n_ctx}, {"n_chunks", s.n_chunks}, {"seconds", s.seconds}});
      tr_.units_done += 1;
    }
    stats_ = calibrate::read_calibration_stats(path.string());
  }

  const SweepOptions& opt_;
  const Keys& keys_;
  Tracker& tr_;
  ReferenceResult result_;
  std::string gguf_, kld_;  // the reference model and its log-probabilities
  std::optional<runtime::Model> model_;
  std::optional<Tokenizer> tok_;
  std::vector<int32_t> eval_tokens_;
  std::optional<quant::QuantizeSource> src_;
  calibrate::CalibrationStats stats_;
};

// The finished result of an entry in path, when it has this key.
std::optional<std::pair<ReferenceResult, EntryResult>> finished(const fs::path& path, const std::string& key) {
  auto j = read_json_file(path);
  if (!j) return std::nullopt;
  ReferenceResult ref;
  EntryResult e;
  result_from_json(*j, path.string(), ref, e);
  if (e.key != key) return std::nullopt;
  return std::make_pair(ref, e);
}

void check_common(const SweepOptions& opt) {
  if (opt.out_dir.empty()) fail("compare: an output directory (-o) is required");
  if (opt.eval_text.empty()) fail("compare: an evaluation text (--eval) is required");
  if (opt.n_ctx < 8) fail("compare: --ctx {}: must be at least 8", opt.n_ctx);
  if (opt.max_chunks == 0) fail("compare: --chunks 0: must be at least 1 (or omitted for all)");
  std::error_code ec;
  if (fs::exists(opt.out_dir, ec) && !fs::is_directory(opt.out_dir, ec))
    fail("{}: exists and is not a directory", opt.out_dir);
  if (opt.calib_chunks == 0) fail("compare: --calib-chunks 0: must be at least 1 (or omitted for all)");
  // The texts are inputs: one that is also a file this sweep writes is refused before any work.
  for (const std::string& text : {opt.eval_text, opt.calib_text}) {
    if (text.empty() || text == "-") continue;
    for (const char* out : {"report.md", "report.json", "report.csv", "ppl_vs_bpw.svg", "kld_vs_bpw.svg"})
      if (fs::equivalent(text, fs::path(opt.out_dir) / out, ec))
        fail("{}: is an output of this sweep ({}/{}); refusing to read it as a text", text, opt.out_dir, out);
    const fs::path parent = fs::weakly_canonical(fs::path(text).parent_path(), ec);
    for (const fs::path& d : {results_dir(opt), work_dir(opt), models_dir(opt)})
      if (!ec && parent == fs::weakly_canonical(d, ec))
        fail("{}: lies in the sweep's own folder {}; refusing to read it as a text", text, d.string());
  }
  read_text_input(opt.eval_text);  // readable ("-", a pipe, zstd: kept for the later read)
  if (!opt.calib_text.empty()) calibrate::load_calibration_text({opt.calib_text});  // readable, valid format
}

// A row of calibrate's method table as a sweep method. Statistics are computed once by the sweep from --calib TEXT;
// a method that reads only the importance (no Hessians) also takes llama.cpp's importance matrix (--imatrix FILE).
SweepMethod sweep_row(const calibrate::MethodInfo& info) {
  const calibrate::Method cm = info.method;
  const bool imatrix_file_ok = info.needs_statistics && !info.needs_hessian;
  std::string description = info.summary;
  if (info.needs_statistics)
    description += imatrix_file_ok ? ", from --imatrix FILE or computed from --calib TEXT" : ", from --calib TEXT";
  return {info.name, description, info.needs_statistics,
          [cm, imatrix_file_ok](const SweepOptions& o) {
            const auto& i = calibrate::method_info(cm);
            if (!i.needs_statistics) return MethodInputs{};
            if (imatrix_file_ok && !o.imatrix.empty()) return MethodInputs{{o.imatrix}, Calibration::None};
            if (o.calib_text.empty())
              fail("compare: method {} needs {}", i.name,
                   imatrix_file_ok ? "--calib TEXT or --imatrix FILE (an importance matrix from llama-imatrix)"
                                   : "a calibration text (--calib TEXT)");
            return MethodInputs{{}, i.needs_hessian ? Calibration::Hessian : Calibration::Importance};
          },
          [cm](const MethodContext& c, quant::QuantizeOptions& qo) -> std::shared_ptr<void> {
            if (!calibrate::method_info(cm).needs_statistics) return {};
            if (!c.stats) {  // llama.cpp's importance matrix file
              auto imp = std::make_shared<quant::Importance>(quant::load_importance(c.opt.imatrix));
              qo.importance = imp.get();
              return imp;
            }
            return calibrate::setup_method(cm, *c.stats, c.opt.calib_text, c.reference, qo, c.log);
          }};
}

}  // namespace

const std::vector<std::string>& default_types() { return type_sets().front().types; }

const std::vector<TypeSet>& type_sets() {
  static const std::vector<TypeSet> t = {
      {"default", {"F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"}},
      {"low-bit",
       {"Q3_K_S", "IQ3_M", "IQ3_S", "IQ3_XS", "IQ3_XXS", "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS",
        "IQ1_M", "IQ1_S"}},
  };
  return t;
}

std::vector<std::string> expand_types(const std::vector<std::string>& types) {
  std::vector<std::string> out;
  for (const auto& t : types) {
    const TypeSet* set = nullptr;
    for (const auto& s : type_sets())
      if (s.name == t) set = &s;
    if (set) out.insert(out.end(), set->types.begin(), set->types.end());
    else out.push_back(t);
  }
  return out;
}

const std::vector<SweepMethod>& methods() {
  static const std::vector<SweepMethod> m = [] {
    std::vector<SweepMethod> v;
    for (const auto& info : calibrate::method_table()) v.push_back(sweep_row(info));
    return v;
  }();
  return m;
}

const SweepMethod& find_method(std::string_view name) {
  std::string names;
  for (auto& m : methods()) {
    if (name == m.name) return m;
    names += std::string(names.empty() ? "" : ", ") + m.name;
  }
  fail("compare: unknown method '{}' (methods: {})", name, names);
}

std::vector<std::string> default_methods(const SweepOptions& opt) {
  std::vector<std::string> m = {"rtn"};
  if (!opt.imatrix.empty() || !opt.calib_text.empty()) m.push_back("imatrix");
  if (!opt.calib_text.empty()) m.push_back("auto");
  return m;
}

// The reason is part of the report, so it holds nothing that changes between runs (the available memory
// does): a resumed sweep and entries run alone write the same reference.
ReferenceChoice choose_reference_type(std::string_view requested, uint64_t f32_bytes, uint64_t mem_available) {
  auto size = [](uint64_t b) {
    return b >= (1ull << 30) ? fmt::format("{:.2f} GiB", double(b) / double(1ull << 30))
                             : fmt::format("{:.1f} MiB", double(b) / double(1ull << 20));
  };
  if (requested == "f32" || requested == "f16")
    return {std::string(requested), fmt::format("{}, as asked (--ref-type {})", requested == "f32" ? "F32" : "F16", requested)};
  if (requested != "auto") fail("compare: --ref-type {}: must be auto, f32 or f16", requested);
  if (mem_available == 0) return {"f32", "F32 (auto: the available memory is unknown)"};
  const uint64_t need = f32_bytes + f32_bytes / 2;
  if (need <= mem_available)
    return {"f32", fmt::format("F32 (auto: 1.5 x its {} fits in the available memory)", size(f32_bytes))};
  return {"f16", fmt::format("F16 (auto: 1.5 x the F32 size, {}, exceeds the available memory)", size(f32_bytes))};
}

uint64_t mem_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t value = 0;
  std::string unit;
  while (f >> key >> value) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return value * 1024;  // kB
  }
  return 0;
}

std::vector<Entry> plan_entries(const SweepOptions& opt) {
  const auto types = expand_types(opt.types.empty() ? default_types() : opt.types);
  const auto ms = opt.methods.empty() ? default_methods(opt) : opt.methods;
  std::vector<Entry> out;
  std::vector<std::string> budgets;  // "budget-<item>", from --budgets/--budget-bpw and budget types
  for (auto& b : opt.budgets) budgets.push_back("budget-" + b);
  for (auto& t : types)
    if (Entry::is_budget_type(t)) budgets.push_back(t);
  bool reads_calib = !budgets.empty();  // names and required inputs, before any work
  for (auto& mname : ms) reads_calib |= find_method(mname).inputs(opt).calibration != Calibration::None;
  if (!opt.calib_text.empty() && !reads_calib)
    fail("compare: --calib {}: none of the methods ({}) reads a calibration text", opt.calib_text, fmt::join(ms, ", "));
  for (auto& t : types) {
    if (Entry::is_budget_type(t)) continue;
    const auto& info = quant::file_type_info(quant::parse_file_type(t));
    const bool is_float = info.default_type == GgmlType::F32 || info.default_type == GgmlType::F16 ||
                          info.default_type == GgmlType::BF16;
    for (auto& mname : ms) {
      const SweepMethod& m = find_method(mname);
      if (m.calibrated && is_float) continue;
      // Mixes llama.cpp refuses to write without an importance matrix get no plain-rounding entry, unless it is
      // the only method asked for (then quantize's refusal says what to give).
      if (!m.calibrated && quant::mix_needs_importance(info.ftype) && ms.size() > 1) continue;
      Entry e{info.name, m.name};
      for (auto& x : out)
        if (x.id() == e.id()) fail("compare: {} {} is listed twice", e.type, e.method);
      out.push_back(e);
    }
  }
  if (!budgets.empty()) {
    if (opt.calib_text.empty())
      fail("compare: budget entries need a calibration text to measure sensitivities on (--calib TEXT)");
    const std::string method = budget_entry_method(opt, ms);
    plan_budget_jobs(budget_entry_options(opt, method));  // the budget's own checks (source, method, data)
    for (auto& b : budgets) {
      budget_entry_target(b);
      Entry e{b, method};
      for (auto& x : out)
        if (x.id() == e.id()) fail("compare: budget {} is listed twice", b.substr(7));
      out.push_back(e);
    }
  }
  if (out.empty()) fail("compare: no entries to run (the methods given do not apply to the types given)");
  return out;
}

BudgetTarget budget_entry_target(std::string_view type) {
  if (!Entry::is_budget_type(type)) fail("compare: {} is not a budget entry (budget-SIZE or budget-Nbpw)", type);
  const std::string item(type.substr(7));
  BudgetTarget t;
  if (item.size() > 3 && item.compare(item.size() - 3, 3, "bpw") == 0) {
    const std::string num = item.substr(0, item.size() - 3);
    // digits with at most one point: the item names files (results/budget-2.5bpw-gptq.json)
    const bool plain = std::count(num.begin(), num.end(), '.') <= 1 &&
                       std::all_of(num.begin(), num.end(), [](char c) { return c == '.' || (c >= '0' && c <= '9'); }) &&
                       std::any_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; });
    t.bpw = plain ? std::stod(num) : -1;
    if (!(t.bpw > 0 && t.bpw <= 32)) fail("--budget-bpw {}: a number of bits per weight within (0, 32]", num);
    return t;
  }
  t.bytes = quant::parse_byte_size(item, "--budgets");
  return t;
}

std::string budget_entry_method(const SweepOptions&, const std::vector<std::string>& ms) {
  auto has = [&](const char* m) { return std::find(ms.begin(), ms.end(), m) != ms.end(); };
  if (has("gptq") || has("auto") || has("awq")) return "gptq";
  if (has("imatrix")) return "imatrix";
  return "rtn";
}

BudgetOptions budget_entry_options(const SweepOptions& opt, const std::string& method) {
  BudgetOptions bo;
  bo.source = opt.source;
  if (!opt.calib_text.empty()) bo.data = {opt.calib_text};
  bo.method = method;
  bo.n_ctx = opt.n_ctx;
  bo.calib_chunks = opt.calib_chunks;
  bo.threads = opt.threads;
  bo.types = opt.budget_types;
  return bo;
}

std::string entry_key(const SweepOptions& opt, const Entry& e) { return key_of(make_keys(opt, {e}), e); }

// Whether p is one of the files the user gave (the source, the texts, the imatrix): clean-up never removes one.
bool is_user_input(const SweepOptions& opt, const fs::path& p) {
  std::error_code ec;
  for (const std::string& in : {opt.source, opt.eval_text, opt.calib_text, opt.imatrix})
    if (!in.empty() && fs::equivalent(p, in, ec)) return true;
  return false;
}

SweepOutcome run_sweep(const SweepOptions& opt, const SweepProgressFn& progress) {
  check_common(opt);
  const auto entries = plan_entries(opt);
  const Keys keys = make_keys(opt, entries);
  SweepOutcome out;
  out.n_entries = entries.size();
  fs::create_directories(results_dir(opt));

  Report report;
  bool have_ref = false;
  std::vector<std::pair<size_t, std::string>> todo;  // entry index, key
  std::vector<size_t> skipped;
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::string key = key_of(keys, entries[i]);
    if (auto done = finished(results_dir(opt) / (entries[i].id() + ".json"), key)) {
      report.reference = done->first;
      have_ref = true;
      report.entries.push_back(done->second);
      ++out.n_skipped;
      skipped.push_back(i);
    } else {
      todo.emplace_back(i, key);
    }
  }
  report.n_planned = entries.size();  // a report written before the last entry is partial (report.h)
  auto write = [&] {
    if (!have_ref) return;
    sort_entries(report);
    out.files = write_report(report, opt.out_dir);
    out.report = report;
  };
  Tracker tr{opt, progress, entries.size()};
  Keys todo_keys = keys;  // the calibration only when an entry still to run needs it
  todo_keys.calibration = Calibration::None;
  for (auto& [i, key] : todo)
    todo_keys.calibration = std::max(todo_keys.calibration, find_method(entries[i].method).inputs(opt).calibration);
  tr.units_total = double(todo.size()) + (todo.empty() ? 0.0 : Session::units_needed(todo_keys));
  try {
    for (size_t i : skipped) tr.report(i + 1, entries[i].type + " " + entries[i].method, "skipped", 0);
    if (!todo.empty()) {
      Session session(opt, todo_keys, tr);
      session.prepare();
      report.reference = session.reference();
      have_ref = true;
      for (auto& [i, key] : todo) {
        const fs::path rp = results_dir(opt) / (entries[i].id() + ".json");
        session.run_one(entries[i], key, rp, i + 1);
        ReferenceResult r;
        EntryResult e;
        result_from_json(*read_json_file(rp), rp.string(), r, e);
        report.entries.push_back(e);
        ++out.n_run;
        write();
      }
    }
  } catch (const Cancelled&) {
    out.interrupted = true;
    write();
    return out;
  }
  write();
  if (!opt.keep) {  // complete: the reference is no longer needed. Only files the sweep made are removed
    std::error_code ec;  // (and the folders when that leaves them empty), never anything else in DIR.
    for (auto f : {"reference.gguf", "reference.kld", "reference.json", "calibration.gguf", "calibration.json"})
      if (!is_user_input(opt, work_dir(opt) / f)) fs::remove(work_dir(opt) / f, ec);
    fs::remove(work_dir(opt), ec);
    fs::remove(models_dir(opt), ec);
  }
  return out;
}

SweepOutcome run_entry(const SweepOptions& opt, const Entry& entry, const std::string& result_path,
                       const SweepProgressFn& progress) {
  check_common(opt);
  SweepOptions one = opt;
  one.types = {entry.type};
  one.methods = {entry.method};
  const auto entries = plan_entries(one);
  const Keys keys = make_keys(one, entries);
  const std::string key = key_of(keys, entries[0]);
  SweepOutcome out;
  out.n_entries = 1;
  if (finished(result_path, key)) {
    out.n_skipped = 1;
    return out;
  }
  Tracker tr{opt, progress, 1};
  tr.units_total = 1 + Session::units_needed(keys);
  try {
    Session session(opt, keys, tr);
    session.prepare();
    session.run_one(entries[0], key, result_path, 1);
    out.n_run = 1;
  } catch (const Cancelled&) {
    out.interrupted = true;
  }
  return out;
}

std::vector<std::string> plan_lines(const SweepOptions& opt, const std::string& exe) {
  check_common(opt);
  const auto entries = plan_entries(opt);
  const Keys keys = make_keys(opt, entries);
  std::vector<std::string> lines;
  const std::string cwd = fs::current_path().string();
  for (auto& e : entries) {
    const std::string result = (results_dir(opt) / (e.id() + ".json")).string();
    std::vector<std::string> cmd = {exe,     "compare", opt.source, "-o",        opt.out_dir, "--eval", opt.eval_text,
                                    "--ctx", std::to_string(opt.n_ctx), "--types", e.type, "--methods", e.method};
    if (opt.max_chunks > 0) cmd.insert(cmd.end(), {"--chunks", std::to_string(opt.max_chunks)});
    if (opt.threads > 0) cmd.insert(cmd.end(), {"--threads", std::to_string(opt.threads)});
    if (!opt.imatrix.empty()) cmd.insert(cmd.end(), {"--imatrix", opt.imatrix});
    // the calibration text only for the entries that read it (an rtn entry alone refuses an unread --calib)
    const bool reads_calib = e.budget() || find_method(e.method).inputs(opt).calibration != Calibration::None;
    if (reads_calib && !opt.calib_text.empty()) cmd.insert(cmd.end(), {"--calib", opt.calib_text});
    if (reads_calib && opt.calib_chunks > 0) cmd.insert(cmd.end(), {"--calib-chunks", std::to_string(opt.calib_chunks)});
    if (opt.ref_type != "auto") cmd.insert(cmd.end(), {"--ref-type", opt.ref_type});
    if (e.budget() && !opt.budget_types.empty()) {
      std::string list;
      for (GgmlType t : opt.budget_types) list += std::string(list.empty() ? "" : ",") + ggml_type_name(t);
      cmd.insert(cmd.end(), {"--budget-types", list});
    }
    if (opt.keep) cmd.push_back("--keep");
    cmd.insert(cmd.end(), {"--result", result});
    nlohmann::json j = {{"entry", e.id()}, {"key", key_of(keys, e)}, {"cwd", cwd}, {"result", result}, {"command", cmd}};
    lines.push_back(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  return lines;
}

}  // namespace edgeq::compare
