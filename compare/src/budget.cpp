#include "edgeq/compare/budget.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "edgeq/calibrate/calibrate.h"
#include "edgeq/calibrate/data.h"
#include "edgeq/calibrate/methods.h"
#include "edgeq/convert/convert.h"
#include "edgeq/convert/model_input.h"
#include "edgeq/convert/plan.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/base/thread_count.h"
#include "edgeq/quant/block_ops.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/budget.h"
#include "edgeq/quant/policy.h"
#include "edgeq/quant/quantize.h"
#include "edgeq/runtime/forward.h"
#include <memory>
#include "edgeq/runtime/kld.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/perplexity.h"
#include "edgeq/runtime/tokenizer.h"
#include "keys.h"

namespace edgeq::compare {

namespace {

// Bumped when a change makes cached sensitivities incomparable (part of the key).
constexpr int kBudgetVersion = 1;

calibrate::Method budget_method(const BudgetOptions& opt) {
  const std::string name = opt.method.empty() ? (opt.data.empty() ? "rtn" : "gptq") : opt.method;
  std::string ok;  // the methods whose error is measured one tensor at a time
  for (const auto& i : calibrate::method_table())
    if (!i.folds_scales) ok += (ok.empty() ? "" : ", ") + std::string(i.name);
  const auto m = calibrate::parse_method(name);
  if (!m) fail("--method {}: unknown (a budget takes {})", name, ok);
  if (calibrate::method_info(*m).folds_scales)
    fail("--method {}: a budget mix combines tensors measured one at a time, and {} folds scales across tensors "
         "(norms, attn_v, ffn_up); use {}",
         name, name, ok);
  if (calibrate::method_info(*m).needs_statistics && opt.data.empty()) fail("--method {} needs calibration text (--data FILE)", name);
  return *m;
}

// The candidates; by default without rtn the types llama.cpp refuses to write without importance data.
std::vector<GgmlType> types_of(const BudgetOptions& opt) {
  if (!opt.types.empty()) return opt.types;
  std::vector<GgmlType> out = default_budget_types();
  if (budget_method(opt) == calibrate::Method::Rtn)
    std::erase_if(out, [](GgmlType t) { return quant::block_ops(t) && quant::block_ops(t)->needs_importance; });
  return out;
}

int shards_of(const BudgetOptions& opt) {
  if (opt.shards > 0) return opt.shards;
  const int n = static_cast<int>(types_of(opt).size());
  return std::max(1, (8 + n - 1) / n);
}

std::string budget_key(const BudgetOptions& opt) {
  Hasher h;
  h.i64(kBudgetVersion);
  h.str(hash_source(opt.source));
  for (auto& d : opt.data) h.str(hash_text(d));  // of the text read: "-", a pipe or zstd hash what was read
  h.str(calibrate::method_name(budget_method(opt)));
  h.i64(opt.n_ctx);
  h.i64(opt.chunks);
  h.i64(opt.calib_chunks);
  return h.hex();
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  AtomicOutputFile f(path.string());
  const std::string s = j.dump(1) + "\n";
  f.write(s.data(), s.size());
  f.commit();
}

std::optional<nlohmann::json> read_json(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  std::string text = read_text_file(path.string());
  forget_input_file(path.string());  // the cache's own file, rewritten by other runs
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a JSON file ({})", path.string(), e.what());
  }
}

void say(const BudgetOptions& opt, const std::string& line) {
  if (opt.log) opt.log(line);
}

// The reference (the source itself when it is a float GGUF, else its F32 conversion in the cache).
std::string ensure_reference(const BudgetOptions& opt, const fs::path& dir) {
  const convert::ModelInput source = convert::ModelInput::open(opt.source);
  if (source.is_gguf()) {
    source.float_type("a budget needs a float source (F32, F16 or BF16)");
    return opt.source;
  }
  const fs::path ref = dir / "reference.gguf";
  std::error_code ec;
  if (!fs::exists(ref, ec)) {
    say(opt, "converting the source to an F32 reference");
    source.runtime_gguf(ref.string(), opt.threads);
  }
  return ref.string();
}

struct Calib {
  std::vector<int32_t> tokens;  // the calibration text, tokenized once (BOS first when the vocab adds it)
  std::optional<calibrate::CalibrationStats> stats;
};

Calib ensure_calibration(const BudgetOptions& opt, const fs::path& dir, const runtime::Model& ref,
                         const Tokenizer& tok, calibrate::Method m) {
  Calib c;
  const std::string text = calibrate::load_calibration_text(opt.data);
  c.tokens = tok.tokenize(text, true, false);
  if (m == calibrate::Method::Rtn) return c;
  const fs::path path = dir / "calibration.gguf";
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    say(opt, fmt::format("calibrating on {} tokens{}", c.tokens.size(), m == calibrate::Method::Gptq ? " with Hessians" : ""));
    calibrate::CalibrationOptions co;
    co.n_ctx = opt.n_ctx;
    co.max_chunks = opt.calib_chunks;
    co.n_threads = resolve_threads(opt.threads);
    co.hessian = calibrate::method_needs_hessian(m);
    co.datasets = opt.data;
    calibrate::calibrate_to_file(ref, c.tokens, tok.add_bos(), tok.bos(), co, path.string());
  }
  c.stats = calibrate::read_calibration_stats(path.string());
  return c;
}

// The KLD of a model against the reference on fixed chunks of the calibration text (llama-perplexity's scored
// positions and KLD definition).
class KldProbe {
 public:
  KldProbe(const BudgetOptions& opt, runtime::Model& ref, const Tokenizer& tok, const std::vector<int32_t>& tokens)
      : opt_(opt), ref_(ref) {
    const auto& c = ref.config();
    n_vocab_ = c.n_vocab;
    n_layer_ = c.n_layer;
    const int64_t n_chunk = runtime::text_chunks(tokens, opt.n_ctx, c.n_vocab, tok.add_bos(), tok.bos(), -1,
                                                 ref.path() + ": budget", "the calibration text");
    const int64_t k = std::min<int64_t>(std::max<int64_t>(opt.chunks, 1), n_chunk);
    chunks_.resize(static_cast<size_t>(k * opt.n_ctx));
    for (int64_t i = 0; i < k; ++i)  // spread over the text (calibration files often change domain midway)
      runtime::copy_chunk(tokens, i * n_chunk / k, opt.n_ctx, tok.add_bos(), tok.bos(), chunks_.data() + i * opt.n_ctx);
    n_chunks_ = k;
    first_ = opt.n_ctx / 2;
    per_chunk_ = opt.n_ctx - 1 - first_;
    row_len_ = runtime::kld_row_len(n_vocab_);
    n_seq_ = std::min<int64_t>(n_chunks_, std::max<int64_t>(1, 1024 / opt_.n_ctx));
    ctx_ = make_context(ref_);
    base_.resize(static_cast<size_t>(n_chunks_ * per_chunk_ * row_len_));
    // The reference once: its log-probabilities, and every layer's input rows (replayed from the replaced
    // weight's layer on).
    const size_t rows = static_cast<size_t>(n_seq_ * opt_.n_ctx * c.n_embd);
    for (int64_t c0 = 0; c0 < n_chunks_; c0 += n_seq_) {
      hidden_.emplace_back(rows * static_cast<size_t>(n_layer_));
      std::vector<float> emb(rows);
      const int64_t ns = std::min(n_seq_, n_chunks_ - c0);
      ctx_->embed(chunks_.data() + c0 * opt_.n_ctx, ns * opt_.n_ctx, emb.data());
      run(*ctx_, c0, ns, 0, emb.data(), hidden_.back().data(), [&](int64_t chunk, int64_t j, const float* logits, int32_t next) {
        runtime::log_softmax_row(logits, n_vocab_, row(chunk, j), next);
      });
    }
  }

  int64_t n_chunks() const { return n_chunks_; }

  // Mean KLD (and its standard error) of the reference with the weight `replaced` changed, against the reference
  // rows: only the layers from the weight's on are evaluated again.
  std::pair<double, double> kld_replaced(const std::string& replaced) {
    int64_t il0 = n_layer_ - 1;  // output.weight: the last layer (it compacts the logit rows), then the head
    bool embed = replaced == "token_embd.weight";
    if (embed) il0 = 0;
    else if (replaced.rfind("blk.", 0) == 0) il0 = std::stoll(replaced.substr(4));
    runtime::KldAccum acc;
    auto f = [&](int64_t chunk, int64_t j, const float* logits, int32_t next) {
      runtime::kld_accumulate(logits, n_vocab_, row(chunk, j), next, acc);
    };
    const size_t rows = static_cast<size_t>(n_seq_ * opt_.n_ctx * ref_.config().n_embd);
    std::vector<float> emb(embed ? rows : 0);
    for (size_t b = 0; b < hidden_.size(); ++b) {
      const int64_t c0 = static_cast<int64_t>(b) * n_seq_;
      const int64_t ns = std::min(n_seq_, n_chunks_ - c0);
      const float* x = hidden_[b].data() + static_cast<size_t>(il0) * rows;
      if (embed) {
        ctx_->embed(chunks_.data() + c0 * opt_.n_ctx, ns * opt_.n_ctx, emb.data());
        x = emb.data();
      }
      run(*ctx_, c0, ns, il0, x, nullptr, f);
    }
    const auto s = runtime::kld_finalize(std::move(acc));
    return {s.mean_kld, s.mean_kld_err};
  }

  // Mean KLD (and its standard error) of another model with the reference's shape.
  std::pair<double, double> kld(const runtime::Model& model) {
    runtime::KldAccum acc;
    auto ctx = make_context(model);
    const size_t rows = static_cast<size_t>(n_seq_ * opt_.n_ctx * model.config().n_embd);
    std::vector<float> emb(rows);
    for (int64_t c0 = 0; c0 < n_chunks_; c0 += n_seq_) {
      const int64_t ns = std::min(n_seq_, n_chunks_ - c0);
      ctx->embed(chunks_.data() + c0 * opt_.n_ctx, ns * opt_.n_ctx, emb.data());
      run(*ctx, c0, ns, 0, emb.data(), nullptr, [&](int64_t chunk, int64_t j, const float* logits, int32_t next) {
        runtime::kld_accumulate(logits, n_vocab_, row(chunk, j), next, acc);
      });
    }
    const auto s = runtime::kld_finalize(std::move(acc));
    return {s.mean_kld, s.mean_kld_err};
  }

 private:
  uint16_t* row(int64_t chunk, int64_t j) { return base_.data() + (chunk * per_chunk_ + j) * row_len_; }

  std::unique_ptr<runtime::Context> make_context(const runtime::Model& model) const {
    runtime::ContextOptions co;
    co.n_ctx = opt_.n_ctx;
    co.n_threads = resolve_threads(opt_.threads);
    co.n_seq = n_seq_;
    return std::make_unique<runtime::Context>(model, co);
  }

  template <class F>
  void run(runtime::Context& ctx, int64_t c0, int64_t ns, int64_t il0, const float* x, float* save, F&& f) {
    const int64_t rows = opt_.n_ctx - first_;
    logits_.resize(static_cast<size_t>(n_seq_ * rows * n_vocab_));
    const int32_t* toks = chunks_.data() + c0 * opt_.n_ctx;
    ctx.eval_seqs_from(il0, x, ns, opt_.n_ctx, first_, logits_.data(), save);
    for (int64_t s = 0; s < ns; ++s)
      for (int64_t j = 0; j < per_chunk_; ++j)
        f(c0 + s, j, logits_.data() + (s * rows + j) * n_vocab_, toks[s * opt_.n_ctx + first_ + 1 + j]);
  }

  const BudgetOptions& opt_;
  runtime::Model& ref_;
  int64_t n_vocab_ = 0, n_layer_ = 0, n_chunks_ = 0, first_ = 0, per_chunk_ = 0, row_len_ = 0, n_seq_ = 1;
  std::unique_ptr<runtime::Context> ctx_;
  std::vector<int32_t> chunks_;
  std::vector<uint16_t> base_;
  std::vector<std::vector<float>> hidden_;  // per batch of chunks: the rows entering each layer
  std::vector<float> logits_;
};

// Escapes a tensor name for an exact-match override regex.
std::string exact_regex(const std::string& name) {
  std::string r = "^";
  for (char ch : name) {
    if (std::string_view(".[]{}()*+?^$|\\").find(ch) != std::string_view::npos) r += '\\';
    r += ch;
  }
  return r + "$";
}

std::vector<std::string> quantizable_names(const quant::QuantizeSource& src) {
  std::vector<std::string> names;
  for (auto& t : src.tensors)
    if (quant::tensor_is_quantizable(t.name, t.dims, false)) names.push_back(t.name);
  std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    return quant::llama_tensor_order_less(a, b);
  });
  return names;
}

// Everything a job or a build needs, made or loaded once.
struct Session {
  const BudgetOptions& opt;
  calibrate::Method method;
  fs::path dir;
  std::string ref_path;
  runtime::Model ref;
  Tokenizer tok;
  Calib calib;
  quant::QuantizeSource src;
  std::unique_ptr<KldProbe> probe;

  explicit Session(const BudgetOptions& o, const fs::path& d, calibrate::Method m, const std::string& rp)
      : opt(o), method(m), dir(d), ref_path(rp), ref(runtime::Model::load(rp)), tok(Tokenizer::from_gguf(ref.gguf())),
        calib(ensure_calibration(o, d, ref, tok, m)), src(quant::open_gguf_source(rp)) {
    probe = std::make_unique<KldProbe>(o, ref, tok, calib.tokens);
  }

  // Quantize options for the given per-tensor types (every other tensor keeps its source type), with the method.
  std::shared_ptr<void> prepare(quant::QuantizeOptions& qo, const std::map<std::string, GgmlType>& types) {
    qo.policy.ftype = quant::FileType::MOSTLY_Q8_0;
    for (auto& [name, t] : types) qo.policy.tensor_types.push_back({exact_regex(name), t});
    for (auto& t : src.tensors)  // the policy's other quantizable tensors keep their type (norms are never quantized)
      if (!types.count(t.name) && quant::tensor_is_quantizable(t.name, t.dims, false))
        qo.policy.tensor_types.push_back({exact_regex(t.name), t.keep_type});
    qo.threads = opt.threads;
    if (!calib.stats) return nullptr;
    return std::shared_ptr<void>(
        calibrate::setup_method(method, *calib.stats, opt.data.front(), src, qo, [&](const std::string& l) { say(opt, l); }));
  }
};

fs::path sens_dir(const fs::path& dir) { return dir / "sens"; }
fs::path job_result(const fs::path& dir, const BudgetJob& j) { return sens_dir(dir) / (j.id + ".json"); }

bool job_done(const fs::path& dir, const BudgetJob& j, const std::string& key) {
  const auto r = read_json(job_result(dir, j));
  return r && r->value("key", "") == key;
}

void run_job(Session& s, const BudgetJob& job, const std::string& key) {
  const auto names = quantizable_names(s.src);
  std::map<std::string, GgmlType> types;
  for (size_t i = 0; i < names.size(); ++i)
    if (static_cast<int>(i % static_cast<size_t>(job.n_shards)) == job.shard) types[names[i]] = job.type;
  fs::create_directories(s.dir / "work");
  fs::create_directories(sens_dir(s.dir));
  const fs::path qpath = s.dir / "work" / (job.id + "." + std::to_string(::getpid()) + ".gguf");
  struct Remove {
    fs::path p;
    ~Remove() {
      std::error_code ec;
      fs::remove(p, ec);
    }
  } cleanup{qpath};
  ScopedRemoveOnSignal on_signal(qpath.string());
  const auto t0 = std::chrono::steady_clock::now();
  nlohmann::json tensors = nlohmann::json::object();
  {
    // A type llama.cpp refuses without importance data is no option for a tensor the statistics do not cover
    // (tl-8m's output.weight as IQ2_XXS): it is left out of the job, so the solver never offers it.
    std::erase_if(types, [&](const auto& nt) {
      return quant::tensor_needs_importance(quant::FileType::MOSTLY_Q8_0, nt.first, nt.second) &&
             !(s.calib.stats && s.calib.stats->find(nt.first));
    });
  }
  {
    quant::QuantizeOptions qo;
    auto state = s.prepare(qo, types);
    qo.record_method = false;
    qo.on_tensor = [&](const quant::TensorProgress& p) {
      if (types.count(p.name))
        tensors[p.name] = {{"type", ggml_type_name(p.to)}, {"bytes", p.bytes_after}};
    };
    say(s.opt, fmt::format("job {}: quantizing {} tensors", job.id, types.size()));
    quant::quantize_model(s.src, qpath.string(), qo);
  }
  const runtime::Model q = runtime::Model::load(qpath.string());
  size_t done = 0;
  for (auto& [name, t] : types) {
    const TensorView v = q.gguf().view(name);
    const TensorView old = s.ref.replace_weight(name, v);
    std::pair<double, double> k;
    try {
      k = s.probe->kld_replaced(name);
    } catch (...) {
      s.ref.replace_weight(name, old);
      throw;
    }
    s.ref.replace_weight(name, old);
    tensors[name]["kld"] = k.first;
    tensors[name]["kld_err"] = k.second;
    say(s.opt, fmt::format("job {}: [{}/{}] {} {} KLD {:.6f}", job.id, ++done, types.size(), name,
                           ggml_type_name(job.type), k.first));
  }
  // Additivity check: the shard's tensors all replaced at once, against the sum of their single effects.
  std::vector<std::pair<std::string, TensorView>> olds;
  double sum = 0;
  for (auto& [name, t] : types) {
    olds.emplace_back(name, s.ref.replace_weight(name, q.gguf().view(name)));
    sum += tensors[name]["kld"].get<double>();
  }
  std::pair<double, double> joint;
  try {
    joint = s.probe->kld(s.ref);
  } catch (...) {
    for (auto& [name, v] : olds) s.ref.replace_weight(name, v);
    throw;
  }
  for (auto& [name, v] : olds) s.ref.replace_weight(name, v);
  say(s.opt, fmt::format("job {}: all {} tensors at once KLD {:.6f}, sum of single {:.6f}", job.id, types.size(),
                         joint.first, sum));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_json(job_result(s.dir, job), {{"key", key},
                                      {"joint_kld", joint.first},
                                      {"sum_kld", sum},
                                      {"job", job.id},
                                      {"type", ggml_type_name(job.type)},
                                      {"chunks", s.probe->n_chunks()},
                                      {"seconds", secs},
                                      {"tensors", tensors}});
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,+@%") ==
                        std::string::npos)
    return s;
  std::string r = "'";
  for (char c : s) {
    if (c == '\'') r += "'\\''";
    else r += c;
  }
  return r + "'";
}

// llama.cpp's general.file_type for a mix: the named mix whose base type holds most of the quantized weights
// (the _M variant when there is one).
quant::FileType file_type_for(const std::map<GgmlType, uint64_t>& weights_by_type) {
  GgmlType best = GgmlType::Q8_0;
  uint64_t most = 0;
  for (auto& [t, b] : weights_by_type)
    if (b > most) {
      most = b;
      best = t;
    }
  std::optional<quant::FileType> pick;
  for (auto& fi : quant::file_types()) {
    if (fi.palette_bits > 0 || fi.default_type != best) continue;
    if (!pick || std::string_view(fi.name).ends_with("_M")) pick = fi.ftype;
  }
  if (pick) return *pick;
  if (best == GgmlType::F16) return quant::FileType::MOSTLY_F16;
  if (best == GgmlType::BF16) return quant::FileType::MOSTLY_BF16;
  if (best == GgmlType::F32) return quant::FileType::ALL_F32;
  return quant::FileType::MOSTLY_Q8_0;
}

struct HeaderProbe {
  uint64_t data_offset = 0;
};

}  // namespace

std::vector<GgmlType> default_budget_types() {
  std::vector<GgmlType> out = {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                               GgmlType::Q8_0};
  for (GgmlType t : quant::writable_types()) {
    const std::string_view n = ggml_type_name(t);
    if (n.starts_with("IQ") && std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  }
  return out;
}

std::string default_budget_cache() {
  if (const char* e = std::getenv("EDGEQ_CACHE"); e && *e) return (fs::path(e) / "budget").string();
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return (fs::path(x) / "edgeq" / "budget").string();
  if (const char* h = std::getenv("HOME"); h && *h) return (fs::path(h) / ".cache" / "edgeq" / "budget").string();
  return (fs::temp_directory_path() / "edgeq-budget").string();
}

std::vector<GgmlType> parse_budget_types(const std::string& list) {
  std::vector<GgmlType> out;
  size_t p = 0;
  while (p <= list.size()) {
    const size_t q = std::min(list.find(',', p), list.size());
    const std::string name = list.substr(p, q - p);
    if (name.empty()) fail("--types {}: an empty type name", list);
    GgmlType t;
    try {
      t = quant::parse_tensor_type(name);
    } catch (const Error& e) {
      fail("--types {}: {}", list, e.what());
    }
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
    p = q + 1;
  }
  return out;
}

std::vector<BudgetJob> plan_budget_jobs(const BudgetOptions& opt) {
  std::error_code ec;
  if (!fs::exists(opt.source, ec)) fail("{}: no such file or directory", opt.source);
  (void)budget_method(opt);
  for (auto& d : opt.data) (void)read_text_input(d);  // readable ("-", a pipe, zstd: kept for the later read)
  if (opt.chunks < 1) fail("--budget-chunks {}: at least 1", opt.chunks);
  if (opt.n_ctx < 8) fail("--ctx {}: too small", opt.n_ctx);
  if (opt.data.empty() && opt.chunks > 0 && budget_method(opt) == calibrate::Method::Rtn)
    fail("a budget needs calibration text to measure sensitivities on (--data FILE)");
  const int n = shards_of(opt);
  std::vector<BudgetJob> jobs;
  for (GgmlType t : types_of(opt))
    for (int k = 0; k < n; ++k)
      jobs.push_back({fmt::format("{}-{}of{}", ggml_type_name(t), k + 1, n), t, k, n});
  return jobs;
}

std::string budget_work_dir(const BudgetOptions& opt) {
  const std::string cache = opt.cache_dir.empty() ? default_budget_cache() : opt.cache_dir;
  return (fs::path(cache) / budget_key(opt)).string();
}

void run_budget_job(const BudgetOptions& opt, const BudgetJob& job) {
  const auto m = budget_method(opt);
  const fs::path dir = budget_work_dir(opt);
  const std::string key = budget_key(opt);
  if (job_done(dir, job, key)) return;
  fs::create_directories(dir);
  Session s(opt, dir, m, ensure_reference(opt, dir));
  run_job(s, job, key);
}

std::vector<std::string> budget_plan_lines(const BudgetOptions& opt, const std::string& exe) {
  const auto jobs = plan_budget_jobs(opt);
  std::error_code ec;
  const std::string dir = fs::absolute(opt.cache_dir.empty() ? default_budget_cache() : opt.cache_dir).string();
  std::vector<std::string> lines;
  for (auto& j : jobs) {
    std::vector<std::string> cmd = {fs::absolute(exe).string(), "quantize", fs::absolute(opt.source).string(),
                                    "--budget-job", j.id, "--cache", dir, "--method",
                                    calibrate::method_name(budget_method(opt))};
    for (auto& d : opt.data) {
      if (!fs::is_regular_file(d, ec))
        fail("{}: --data for a plan must be a regular file (its jobs read it again); save the text to a file", d);
      cmd.insert(cmd.end(), {"--data", fs::absolute(d).string()});
    }
    std::string types;
    for (GgmlType t : types_of(opt)) types += std::string(types.empty() ? "" : ",") + ggml_type_name(t);
    cmd.insert(cmd.end(), {"--types", types, "--ctx", std::to_string(opt.n_ctx), "--budget-chunks",
                           std::to_string(opt.chunks), "--budget-shards", std::to_string(shards_of(opt))});
    if (opt.calib_chunks > 0) cmd.insert(cmd.end(), {"--calib-chunks", std::to_string(opt.calib_chunks)});
    if (opt.threads > 0) cmd.insert(cmd.end(), {"--threads", std::to_string(opt.threads)});
    cmd.push_back("--quiet");
    std::string line;
    for (auto& c : cmd) {
      if (!line.empty()) line.push_back(' ');
      line.append(shell_quote(c));
    }
    lines.push_back(line);
  }
  return lines;
}

BudgetResult build_budget_file(const BudgetOptions& opt, const BudgetTarget& target, const std::string& out,
                               bool record_metadata, bool merge_only) {
  const auto t_start = std::chrono::steady_clock::now();
  const auto m = budget_method(opt);
  const auto jobs = plan_budget_jobs(opt);
  const fs::path dir = budget_work_dir(opt);
  const std::string key = budget_key(opt);
  BudgetResult res;
  res.method = calibrate::method_name(m);
  std::vector<const BudgetJob*> missing;
  for (auto& j : jobs)
    if (!job_done(dir, j, key)) missing.push_back(&j);
  if (merge_only && !missing.empty()) {
    std::string ids;
    for (auto* j : missing) ids += (ids.empty() ? "" : ", ") + j->id;
    fail("{}: {} of {} budget jobs have no result ({}): run their --plan lines first", dir.string(), missing.size(),
         jobs.size(), ids);
  }
  fs::create_directories(dir);
  Session s(opt, dir, m, ensure_reference(opt, dir));
  for (auto* j : missing) {
    say(opt, fmt::format("budget job {} ({} of {} to run)", j->id, ++res.jobs_run, missing.size()));
    run_job(s, *j, key);
  }
  res.jobs_cached = jobs.size() - missing.size();

  // The measured options of every quantizable tensor.
  struct Opt {
    GgmlType type;
    uint64_t bytes;
    double kld;
  };
  std::map<std::string, std::vector<Opt>> measured;
  // Interaction per type: the KLD of a job's tensors all at once over the sum of their single ΔKLD (each job
  // measures both). The costs are the single ΔKLD times their type's factor.
  std::map<GgmlType, std::pair<double, double>> joint_sum;
  for (auto& j : jobs) {
    const auto r = read_json(job_result(dir, j));
    if (!r) fail("{}: missing", job_result(dir, j).string());
    joint_sum[j.type].first += r->value("joint_kld", 0.0);
    joint_sum[j.type].second += r->value("sum_kld", 0.0);
    for (auto& [name, v] : (*r)["tensors"].items()) {
      const auto t = ggml_type_from_name(v.at("type").get<std::string>());
      if (!t) fail("{}: unknown type {}", job_result(dir, j).string(), v.at("type").get<std::string>());
      auto& list = measured[name];
      const Opt o{*t, v.at("bytes").get<uint64_t>(), std::max(0.0, v.at("kld").get<double>())};
      // A fallback type can repeat another candidate: keep one (the lower measured KLD).
      auto it = std::find_if(list.begin(), list.end(), [&](const Opt& x) { return x.type == o.type; });
      if (it == list.end()) list.push_back(o);
      else if (o.kld < it->kld) *it = o;
    }
  }
  const auto names = quantizable_names(s.src);
  std::vector<quant::BudgetGroup> groups;
  uint64_t fixed = 0, n_elements = 0;
  for (auto& t : s.src.tensors) {
    n_elements += t.n_elements();
    if (!measured.count(t.name)) fixed += *ggml_row_size(t.keep_type, t.dims[0]) * (t.n_elements() / t.dims[0]);
  }
  for (auto& n : names) {
    if (!measured.count(n)) fail("{}: no sensitivity measured for tensor {}", dir.string(), n);
    quant::BudgetGroup g;
    g.name = n;
    for (auto& o : measured[n]) {
      const auto& js = joint_sum[o.type];
      const double factor = js.first > 0 && js.second > 0 ? js.first / js.second : 1.0;
      g.options.push_back({o.type, o.bytes, o.kld * factor});
      res.additive_kld_by_name[n][o.type] = o.kld;
    }
    groups.push_back(std::move(g));
  }

  // Tensor data bytes allowed, then the file size with the header: solved again with less room while over.
  const uint64_t al = 32;
  auto padded = [&](uint64_t b) { return (b + al - 1) / al * al; };
  uint64_t header_guess = 0;
  quant::BudgetSolution sol;
  std::map<std::string, GgmlType> types;
  std::vector<std::pair<std::string, GgufValue>> meta;
  double predicted = 0;
  auto make_meta = [&](double measured_kld) {
    meta.clear();
    std::vector<std::string> tt;
    std::vector<float> kk;
    for (size_t g = 0; g < groups.size(); ++g) {
      tt.push_back(groups[g].name + "=" + ggml_type_name(groups[g].options[sol.choice[g]].type));
      kk.push_back(static_cast<float>(groups[g].options[sol.choice[g]].cost));
    }
    meta.push_back({"edgeq.budget.target_bytes", GgufValue(static_cast<uint64_t>(target.bytes))});
    meta.push_back({"edgeq.budget.target_bpw", GgufValue(static_cast<float>(target.bpw))});
    meta.push_back({"edgeq.budget.predicted_kld", GgufValue(static_cast<float>(predicted))});
    meta.push_back({"edgeq.budget.measured_kld", GgufValue(static_cast<float>(measured_kld))});
    meta.push_back({"edgeq.budget.chunks", GgufValue(static_cast<uint32_t>(s.probe->n_chunks()))});
    meta.push_back({"edgeq.budget.tensor_types", GgufValue::string_array(tt)});
    meta.push_back({"edgeq.budget.tensor_kld", GgufValue::float_array(kk)});
  };
  auto options_for = [&](quant::QuantizeOptions& qo) {
    auto state = s.prepare(qo, types);
    std::map<GgmlType, uint64_t> by_type;
    for (size_t g = 0; g < groups.size(); ++g) {  // weights per type (bytes back to elements)
      const auto& o = groups[g].options[sol.choice[g]];
      const auto* ti = ggml_type_info(o.type);
      by_type[o.type] += ti && ti->type_size ? o.bytes / ti->type_size * ti->block_size : o.bytes;
    }
    qo.policy.ftype = file_type_for(by_type);
    qo.record_method = record_metadata;
    qo.method = std::string("budget ") + calibrate::method_name(m);
    if (record_metadata) qo.extra_metadata = meta;
    return state;
  };
  auto header_bytes = [&]() {  // the header of the file as it would be written now (nothing is written)
    quant::QuantizeOptions qo;
    auto state = options_for(qo);
    HeaderProbe hp;
    qo.check_output = [&](const GgufFile& h) {
      hp.data_offset = h.data_offset();
      throw hp;
    };
    try {
      quant::quantize_model(s.src, (dir / "work" / fmt::format("header.{}.gguf", ::getpid())).string(), qo);
    } catch (const HeaderProbe& p) {
      return p.data_offset;
    }
    fail("budget: the header probe wrote a file");
  };
  fs::create_directories(dir / "work");
  uint64_t fixed_padded = 0;
  for (auto& t : s.src.tensors)
    if (!measured.count(t.name)) fixed_padded += padded(*ggml_row_size(t.keep_type, t.dims[0]) * (t.n_elements() / t.dims[0]));
  const uint64_t target_bytes =
      target.bytes ? target.bytes
                   : 0;  // bpw: a bound on tensor bytes instead (below)
  const uint64_t tensor_budget_bpw =
      target.bytes ? 0 : static_cast<uint64_t>(std::floor(target.bpw * double(n_elements) / 8.0));
  {  // the header's size with the smallest types (type names in the metadata change it by a few bytes per tensor)
    sol.choice.assign(groups.size(), 0);
    for (size_t g = 0; g < groups.size(); ++g) types[groups[g].name] = groups[g].options[0].type;
    make_meta(0);
    header_guess = header_bytes() + 8 * groups.size();
  }
  uint64_t slack = 0;  // extra room lost to the header and padding
  // A file's tensors are padded to the alignment: the solve for a file size counts padded bytes.
  std::vector<quant::BudgetGroup> solve_groups = groups;
  if (target_bytes)
    for (auto& g : solve_groups)
      for (auto& o : g.options) o.bytes = padded(o.bytes);
  auto apply = [&](const quant::BudgetSolution& x) {
    sol = x;
    predicted = 0;
    types.clear();
    for (size_t g = 0; g < groups.size(); ++g) {
      types[groups[g].name] = groups[g].options[sol.choice[g]].type;
      predicted += groups[g].options[sol.choice[g]].cost;
    }
    make_meta(0);
  };
  std::optional<quant::BudgetSolution> best;
  for (int iter = 0; iter < 8; ++iter) {
    uint64_t budget;
    if (target_bytes) {
      const uint64_t reserved = header_guess + fixed_padded + slack;
      if (reserved >= target_bytes) fail("--target-size {}: smaller than the file's header and unquantized tensors", target_bytes);
      budget = target_bytes - reserved;
    } else {
      if (tensor_budget_bpw <= fixed) fail("--target-bpw {}: below the unquantized tensors' share", target.bpw);
      budget = tensor_budget_bpw - fixed;
    }
    apply(quant::solve_budget(solve_groups, budget));
    if (!target_bytes) {
      best = sol;
      break;
    }
    const uint64_t hdr = header_bytes();
    uint64_t size = hdr + fixed_padded;
    for (size_t g = 0; g < groups.size(); ++g) size += padded(groups[g].options[sol.choice[g]].bytes);
    if (size <= target_bytes) {
      if (!best || sol.cost < best->cost) best = sol;
      if (hdr == header_guess) break;  // exact: the room is used
      header_guess = hdr;
    } else if (hdr != header_guess) {
      header_guess = hdr;
    } else {
      slack += size - target_bytes;
    }
  }
  if (!best) fail("--target-size {}: could not fit the file", target_bytes);
  apply(*best);
  {
    uint64_t size = target_bytes ? header_bytes() + fixed_padded : 0;
    for (size_t g = 0; g < groups.size(); ++g) size += padded(groups[g].options[sol.choice[g]].bytes);
    res.file_bytes = size;
  }

  // Write the mix, measure it on the calibration chunks, then write the output with the measured figure:
  // the second write copies the first one's encoded tensors, so the bytes measured are the bytes shipped.
  const fs::path mix = dir / "work" / fmt::format("mix.{}.gguf", ::getpid());
  struct Remove {
    fs::path p;
    ~Remove() {
      std::error_code ec;
      fs::remove(p, ec);
    }
  } cleanup{mix};
  ScopedRemoveOnSignal on_signal(mix.string());
  {
    quant::QuantizeOptions qo;
    auto state = options_for(qo);
    qo.record_method = false;
    say(opt, "writing the mix");
    quant::quantize_model(s.src, mix.string(), qo);
  }
  const runtime::Model mm = runtime::Model::load(mix.string());
  const auto k = s.probe->kld(mm);
  res.measured_kld = k.first;
  res.measured_kld_err = k.second;
  make_meta(res.measured_kld);
  quant::QuantizeReport rep;
  {
    quant::QuantizeOptions qo;
    auto state = options_for(qo);
    const GgufFile& mf = mm.gguf();
    qo.tensor_hook = [&](quant::TensorHookArgs& a) {
      if (!a.quantize) return quant::HookResult::Untouched;
      const TensorView v = mf.view(a.name);
      if (v.type != a.type) fail("{}: tensor {} not in the mix as {}", mix.string(), a.name, ggml_type_name(a.type));
      std::memcpy(a.dst, v.data, v.nbytes);
      return quant::HookResult::Encoded;
    };
    rep = quant::quantize_model(s.src, out, qo);
  }
  res.target_bytes = target.bytes;
  res.file_bytes = rep.file_size;
  res.tensor_bytes = rep.bytes_after;
  res.n_elements = rep.n_elements;
  res.bpw = rep.bpw_after();
  res.predicted_kld = predicted;
  for (auto& [t, js] : joint_sum)
    res.interaction[std::string(ggml_type_name(t))] = js.second > 0 ? js.first / js.second : 1.0;
  for (size_t g = 0; g < groups.size(); ++g)
    res.predicted_additive_kld += res.additive_kld_by_name[groups[g].name][groups[g].options[sol.choice[g]].type];
  res.file_type = quant::file_type_info(rep.ftype).name;
  std::map<std::string, size_t> gi;
  for (size_t g = 0; g < groups.size(); ++g) gi[groups[g].name] = g;
  for (auto& t : s.src.tensors) {
    BudgetTensor bt;
    bt.name = t.name;
    if (auto it = gi.find(t.name); it != gi.end()) {
      const auto& o = groups[it->second].options[sol.choice[it->second]];
      bt.type = o.type;
      bt.bytes = o.bytes;
      bt.predicted_kld = o.cost;
      bt.quantizable = true;
    } else {
      bt.type = t.keep_type;
      bt.bytes = *ggml_row_size(t.keep_type, t.dims[0]) * (t.n_elements() / t.dims[0]);
    }
    res.tensors.push_back(bt);
  }
  std::sort(res.tensors.begin(), res.tensors.end(),
            [](const BudgetTensor& a, const BudgetTensor& b) { return quant::llama_tensor_order_less(a.name, b.name); });
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return res;
}

}  // namespace edgeq::compare
