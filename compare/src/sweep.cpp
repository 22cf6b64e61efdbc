#include "edgeq/compare/sweep.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "edgeq/compare/report.h"
#include "edgeq/convert/convert.h"
#include "edgeq/convert/plan.h"
#include "edgeq/formats/error.h"
#include "edgeq/formats/thread_count.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/quant/policy.h"
#include "edgeq/runtime/compare.h"
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

struct Hasher {
  uint64_t h = 1469598103934665603ull;
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  void str(const std::string& s) {
    const uint64_t n = s.size();
    bytes(&n, sizeof n);
    bytes(s.data(), s.size());
  }
  void i64(int64_t v) { bytes(&v, sizeof v); }
  void file(const fs::path& p) {
    str(p.filename().string());
    const uint64_t size = fs::file_size(p);
    i64(static_cast<int64_t>(size));
    if (size == 0) return;
    MappedFile m(p.string());
    bytes(m.data(), m.size());
  }
  std::string hex() const { return fmt::format("{:016x}", h); }
};

bool is_gguf_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  return f.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

// Every file the source consists of: a GGUF alone; a directory's regular files; an .onnx model with the
// files beside it (external data, config, tokenizer).
std::string hash_source(const std::string& src) {
  std::error_code ec;
  Hasher h;
  std::vector<fs::path> files;
  if (fs::is_directory(src, ec)) {
    for (auto& e : fs::directory_iterator(src)) if (e.is_regular_file()) files.push_back(e.path());
  } else if (is_gguf_file(src)) {
    files.push_back(src);
  } else if (fs::is_regular_file(src, ec)) {
    fs::path dir = fs::path(src).parent_path();
    if (dir.empty()) dir = ".";
    for (auto& e : fs::directory_iterator(dir)) if (e.is_regular_file()) files.push_back(e.path());
  } else {
    fail("{}: no such file or directory", src);
  }
  std::sort(files.begin(), files.end());
  for (auto& f : files) h.file(f);
  return h.hex();
}

std::string hash_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) fail("{}: no such file", path);
  Hasher h;
  h.file(path);
  return h.hex();
}

// Hashes of the inputs, computed once per run.
struct Keys {
  std::string run;  // source + eval text + n_ctx + chunks
  std::map<std::string, std::string> method_inputs;
};

Keys make_keys(const SweepOptions& opt, const std::vector<Entry>& entries) {
  Keys k;
  Hasher h;
  h.i64(kResultVersion);
  h.str(hash_source(opt.source));
  h.str(hash_file(opt.eval_text));
  h.i64(opt.n_ctx);
  h.i64(opt.max_chunks < 0 ? -1 : opt.max_chunks);
  k.run = h.hex();
  for (auto& e : entries) {
    if (k.method_inputs.count(e.method)) continue;
    Hasher m;
    m.str(e.method);
    for (auto& f : find_method(e.method).inputs(opt)) m.str(hash_file(f));
    k.method_inputs[e.method] = m.hex();
  }
  return k;
}

std::string key_of(const Keys& k, const Entry& e) {
  Hasher h;
  h.str(k.run);
  h.str(e.type);
  h.str(k.method_inputs.at(e.method));
  return h.hex();
}

int thread_count(int t) { return resolve_threads(t); }  // the one --threads rule (formats/thread_count.h)

// The sweep's progress arithmetic: units of work (1 per entry to run, 1 for the reference when made).
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

struct Reference {
  ReferenceResult result;
  std::string gguf;  // the reference model
  std::string kld;   // its log-probabilities
};

void write_json_file(const fs::path& path, const nlohmann::json& j) {
  AtomicOutputFile f(path.string());
  const std::string s = j.dump(1) + "\n";
  f.write(s.data(), s.size());
  f.commit();
}

std::optional<nlohmann::json> read_json_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  try {
    return nlohmann::json::parse(read_text_file(path.string()));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a JSON file ({})", path.string(), e.what());
  }
}

// The reference: found in DIR/work for the same run key, or made there (convert to F32 unless the source is
// already a float GGUF, then score it once, writing its log-probabilities).
Reference prepare_reference(const SweepOptions& opt, const Keys& keys, Tracker& tr) {
  const fs::path work = work_dir(opt);
  fs::create_directories(work);
  Reference ref;
  ref.kld = (work / "reference.kld").string();
  const bool gguf_source = is_gguf_file(opt.source);
  ref.gguf = gguf_source ? opt.source : (work / "reference.gguf").string();
  const fs::path ref_json = work / "reference.json";
  if (auto j = read_json_file(ref_json)) {
    const ReferenceResult r = reference_from_json(*j, ref_json.string());
    std::error_code ec;
    if (r.run_key == keys.run && fs::exists(ref.kld, ec) && fs::exists(ref.gguf, ec)) {
      ref.result = r;
      tr.units_done += 1;
      tr.report(0, "reference", "skipped", 0);
      return ref;
    }
  }
  if (gguf_source) {
    GgufFile g = GgufFile::open(opt.source);
    for (auto& t : g.tensors())
      if (t.type != GgmlType::F32 && t.type != GgmlType::F16 && t.type != GgmlType::BF16)
        fail("{}: tensor {} is {}; the reference must be a float GGUF (F32, F16 or BF16)", opt.source, t.name,
             ggml_type_name(t.type));
  } else {
    convert::ConvertOptions co;
    co.outtype = "f32";
    co.threads = opt.threads;
    auto plan = convert::plan_conversion(opt.source, co);
    tr.report(0, "reference", "convert", 0);
    convert::convert_to_gguf(plan, ref.gguf, "f32", opt.threads, [&](const convert::ConvertProgress& p) {
      tr.report(0, "reference", "convert", 0.2 * double(p.index + 1) / double(p.count),
                fmt::format("tensor {}/{}", p.index + 1, p.count));
    });
  }
  const auto model = runtime::Model::load(ref.gguf);
  const auto tok = Tokenizer::from_gguf(model.gguf());
  const auto tokens = tok.tokenize(read_text_file(opt.eval_text), true, false);
  runtime::PerplexityOptions po;
  po.n_ctx = opt.n_ctx;
  po.max_chunks = opt.max_chunks;
  po.n_threads = thread_count(opt.threads);
  po.kld_base_out = ref.kld;
  po.progress = [&](const runtime::ChunkProgress& p) {
    tr.report(0, "reference", "evaluate", 0.2 + 0.8 * double(p.chunk) / double(p.n_chunks),
              fmt::format("chunk {}/{} PPL {:.4f}", p.chunk, p.n_chunks, p.ppl));
  };
  const auto row = runtime::describe_model(model);
  const auto pr = runtime::perplexity(model, tokens, tok.add_bos(), tok.bos(), po);
  auto& r = ref.result;
  r.run_key = keys.run;
  r.source = opt.source;
  r.eval_text = opt.eval_text;
  r.file_type = row.file_type;
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
  tr.units_done += 1;
  return ref;
}

// Quantizes the reference for one entry, evaluates it against the reference, writes the result file.
void run_one(const SweepOptions& opt, const Reference& ref, const Entry& e, const std::string& key,
             const fs::path& result_path, size_t index, Tracker& tr) {
  const std::string label = e.type + " " + e.method;
  const Method& m = find_method(e.method);
  tr.report(index, label, "quantize", 0);
  std::optional<quant::Importance> imp;
  if (m.uses_importance) imp = m.importance(opt, ref.gguf);
  quant::QuantizeOptions qo;
  qo.policy.ftype = quant::parse_file_type(e.type);
  qo.importance = imp ? &*imp : nullptr;
  qo.threads = opt.threads;
  qo.on_tensor = [&](const quant::TensorProgress& p) {
    tr.report(index, label, "quantize", 0.25 * double(p.index + 1) / double(p.count),
              fmt::format("tensor {}/{}", p.index + 1, p.count));
  };
  fs::create_directories(models_dir(opt));
  const fs::path qpath = models_dir(opt) / (e.id() + ".gguf");
  struct RemoveUnlessKept {  // the quantized file goes when the entry ends (or fails), unless --keep
    fs::path p;
    bool keep;
    ~RemoveUnlessKept() {
      std::error_code ec;
      if (!keep) fs::remove(p, ec);
    }
  } cleanup{qpath, opt.keep};
  const auto src = quant::open_gguf_source(ref.gguf);
  const auto qr = quant::quantize_model(src, qpath.string(), qo);

  const auto model = runtime::Model::load(qpath.string());
  const auto tok = Tokenizer::from_gguf(model.gguf());
  const auto tokens = tok.tokenize(read_text_file(opt.eval_text), true, false);
  runtime::PerplexityOptions po;
  po.n_ctx = opt.n_ctx;
  po.max_chunks = opt.max_chunks;
  po.n_threads = thread_count(opt.threads);
  po.kld_in = ref.kld;
  po.progress = [&](const runtime::ChunkProgress& p) {
    tr.report(index, label, "evaluate", 0.25 + 0.75 * double(p.chunk) / double(p.n_chunks),
              fmt::format("chunk {}/{} PPL {:.4f} KLD {:.5f}", p.chunk, p.n_chunks, p.ppl, p.kld));
  };
  const auto row = runtime::describe_model(model);
  const auto pr = runtime::perplexity(model, tokens, tok.add_bos(), tok.bos(), po);
  const auto& k = *pr.kld;
  EntryResult r;
  r.key = key;
  r.type = e.type;
  r.method = e.method;
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
  r.quantize_seconds = qr.seconds;
  r.eval_seconds = pr.seconds;
  r.eval_tokens_per_second = pr.seconds > 0 ? double(pr.n_chunks * pr.n_ctx) / pr.seconds : 0.0;
  fs::create_directories(result_path.parent_path().empty() ? fs::path(".") : result_path.parent_path());
  write_json_file(result_path, result_to_json(ref.result, r));
  tr.units_done += 1;
  tr.report(index, label, "done", 0);
}

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
  read_text_file(opt.eval_text);  // readable
}

}  // namespace

const std::vector<std::string>& default_types() {
  static const std::vector<std::string> t = {"F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"};
  return t;
}

const std::vector<Method>& methods() {
  static const std::vector<Method> m = {
      {"rtn", "round to nearest: each block's scales searched for the least squared error, no statistics", false,
       [](const SweepOptions&) { return std::vector<std::string>{}; },
       [](const SweepOptions&, const std::string&) { return std::optional<quant::Importance>{}; }},
      {"imatrix", "importance-weighted error with llama.cpp's importance matrix (--imatrix FILE)", true,
       [](const SweepOptions& o) {
         if (o.imatrix.empty()) fail("compare: method imatrix needs --imatrix FILE (an importance matrix from llama-imatrix)");
         return std::vector<std::string>{o.imatrix};
       },
       [](const SweepOptions& o, const std::string&) { return std::optional<quant::Importance>{quant::load_importance(o.imatrix)}; }},
  };
  return m;
}

const Method& find_method(std::string_view name) {
  std::string names;
  for (auto& m : methods()) {
    if (name == m.name) return m;
    names += std::string(names.empty() ? "" : ", ") + m.name;
  }
  fail("compare: unknown method '{}' (methods: {})", name, names);
}

std::vector<std::string> default_methods(const SweepOptions& opt) {
  std::vector<std::string> m = {"rtn"};
  if (!opt.imatrix.empty()) m.push_back("imatrix");
  return m;
}

std::vector<Entry> plan_entries(const SweepOptions& opt) {
  const auto& types = opt.types.empty() ? default_types() : opt.types;
  const auto ms = opt.methods.empty() ? default_methods(opt) : opt.methods;
  std::vector<Entry> out;
  bool reads_calib = false;  // names and required inputs, before any work
  for (auto& mname : ms)
    for (auto& f : find_method(mname).inputs(opt)) reads_calib |= !opt.calib_text.empty() && f == opt.calib_text;
  if (!opt.calib_text.empty() && !reads_calib)
    fail("compare: --calib {}: none of the methods ({}) reads a calibration text", opt.calib_text, fmt::join(ms, ", "));
  for (auto& t : types) {
    const auto& info = quant::file_type_info(quant::parse_file_type(t));
    const bool is_float = info.default_type == GgmlType::F32 || info.default_type == GgmlType::F16 ||
                          info.default_type == GgmlType::BF16;
    for (auto& mname : ms) {
      const Method& m = find_method(mname);
      if (m.uses_importance && is_float) continue;
      Entry e{info.name, m.name};
      for (auto& x : out)
        if (x.id() == e.id()) fail("compare: {} {} is listed twice", e.type, e.method);
      out.push_back(e);
    }
  }
  if (out.empty()) fail("compare: no entries to run (the methods given do not apply to the types given)");
  return out;
}

std::string entry_key(const SweepOptions& opt, const Entry& e) { return key_of(make_keys(opt, {e}), e); }

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
  auto write = [&] {
    if (!have_ref) return;
    sort_entries(report);
    out.files = write_report(report, opt.out_dir);
    out.report = report;
  };
  Tracker tr{opt, progress, entries.size()};
  tr.units_total = double(todo.size()) + (todo.empty() ? 0.0 : 1.0);
  try {
    for (size_t i : skipped) tr.report(i + 1, entries[i].type + " " + entries[i].method, "skipped", 0);
    if (!todo.empty()) {
      const Reference ref = prepare_reference(opt, keys, tr);
      report.reference = ref.result;
      have_ref = true;
      for (auto& [i, key] : todo) {
        const fs::path rp = results_dir(opt) / (entries[i].id() + ".json");
        run_one(opt, ref, entries[i], key, rp, i + 1, tr);
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
    for (auto f : {"reference.gguf", "reference.kld", "reference.json"}) fs::remove(work_dir(opt) / f, ec);
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
  tr.units_total = 2;
  try {
    const Reference ref = prepare_reference(opt, keys, tr);
    run_one(opt, ref, entries[0], key, result_path, 1, tr);
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
    if (!opt.calib_text.empty()) cmd.insert(cmd.end(), {"--calib", opt.calib_text});
    if (opt.keep) cmd.push_back("--keep");
    cmd.insert(cmd.end(), {"--result", result});
    nlohmann::json j = {{"entry", e.id()}, {"key", key_of(keys, e)}, {"cwd", cwd}, {"result", result}, {"command", cmd}};
    lines.push_back(j.dump());
  }
  return lines;
}

}  // namespace edgeq::compare
