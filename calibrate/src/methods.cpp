#include "edgeq/calibrate/methods.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <iterator>
#include <limits>

#include "edgeq/arch/arch.h"
#include "edgeq/calibrate/gptq.h"
#include "edgeq/base/error.h"
#include "edgeq/base/thread_count.h"
#include "edgeq/quant/blocks.h"

namespace edgeq::calibrate {

using runtime::MatmulInput;

const MethodInfo& method_info(Method m) {
  for (const auto& i : method_table())
    if (i.method == m) return i;
  fail("unknown quantization method {}", static_cast<int>(m));
}

std::optional<Method> parse_method(std::string_view name) {
  for (const auto& i : method_table())
    if (name == i.name) return i.method;
  return std::nullopt;
}

std::string method_names(std::string_view sep) {
  std::string s;
  for (const auto& i : method_table()) s += (s.empty() ? "" : std::string(sep)) + i.name;
  return s;
}

quant::Importance importance_from_stats(const CalibrationStats& stats, const std::string& file_label) {
  quant::Importance imp;
  imp.info.file = file_label;
  std::string ds;
  for (const auto& d : stats.datasets) ds += (ds.empty() ? "" : ",") + d;
  imp.info.dataset = ds;
  imp.info.chunks_count = stats.n_chunks;
  for (const auto& in : stats.inputs) {
    if (in.rows <= 0) continue;
    // Experts: one vector per expert, expert after expert (llama.cpp's layout; quantize takes slice e's part).
    // An expert no row reached leaves the whole tensor without importance, as llama-imatrix leaves it out.
    const int64_t ne = std::max<int64_t>(1, in.n_expert);
    std::vector<float> v(static_cast<size_t>(in.width * ne));
    bool complete = true;
    for (int64_t e = 0; e < ne; ++e) {
      const int64_t rows = in.n_expert > 0 ? in.expert_rows[static_cast<size_t>(e)] : in.rows;
      complete = complete && rows > 0;
      for (int64_t j = 0; j < in.width && rows > 0; ++j)
        v[e * in.width + j] = static_cast<float>(in.sum_x2[e * in.width + j] / static_cast<double>(rows));
    }
    if (!complete) continue;
    for (const auto& n : in.tensor_names()) imp.data.emplace(n, v);
  }
  imp.info.entries_count = static_cast<int32_t>(imp.data.size());
  return imp;
}

namespace {

enum class Rounding { Rtn, Imatrix, Gptq };
struct Choice {
  Rounding r = Rounding::Imatrix;
  bool scaled = false;
  bool act_order = false;  // GPTQ's columns in act-order (only with r == Gptq)
};
std::string choice_name(Choice c) {
  const std::string gptq = c.act_order ? "gptq+act-order" : "gptq";
  if (c.scaled) return c.r == Rounding::Gptq ? "awq+" + gptq : "awq";
  return c.r == Rounding::Rtn ? "rtn" : c.r == Rounding::Gptq ? gptq : "imatrix";
}

// Q = diag(s_row)·dequantize(enc)·diag(1/s_col) (either scale null: none), rows spread over pool.
void dequantize_rows(GgmlType t, const uint8_t* enc, int64_t rows, int64_t cols, const float* s_col,
                     const float* s_row, float* Q, ThreadPool& pool) {
  const uint64_t rb = *ggml_row_size(t, static_cast<uint64_t>(cols));
  constexpr int64_t kRows = 64;
  pool.run((rows + kRows - 1) / kRows, [&](int64_t c, int) {
    for (int64_t r = c * kRows; r < std::min(rows, (c + 1) * kRows); ++r) {
      float* q = Q + r * cols;
      quant::dequantize_row(t, enc + r * rb, q, cols);
      if (s_row)
        for (int64_t j = 0; j < cols; ++j) q[j] *= s_row[r];
      if (s_col)
        for (int64_t j = 0; j < cols; ++j) q[j] /= s_col[j];
    }
  });
}

// AWQ's scaled space, the one place it is written: the weights W·diag(s) (each row r also divided by d_r when d
// is given: W_rj · (s_j / d_r); s null: 1) and, when imp is given, the importance imp / s² per column (in place).
void to_scaled_space(float* W, int64_t rows, int64_t cols, const float* s, const float* d, float* imp) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) W[r * cols + j] *= (s ? s[j] : 1.0f) / (d ? d[r] : 1.0f);
  if (imp && s)
    for (int64_t j = 0; j < cols; ++j) imp[j] /= s[j] * s[j];
}

// Encodes W (rows × cols) with a choice: s (optional) scales the columns, imp is mean x² per column (original
// space), H the Hessian for GPTQ (original space). Writes the blocks to dst and, when Q is given, the
// effective dequantized weights in the original space (Q / s). take_H: H handed over instead (GPTQ scales and
// factorises it in its own memory: one n × n matrix, not three).
void encode(GgmlType t, const float* W, int64_t rows, int64_t cols, Choice c, const double* H, const float* imp,
            const float* s, uint8_t* dst, float* Q, ThreadPool& pool, std::vector<double>* take_H = nullptr) {
  const bool scaled = c.scaled && s;
  std::vector<float> Ws(W, W + rows * cols), imps;
  const float* use_imp = imp;
  if (scaled) {
    if (imp) imps.assign(imp, imp + cols);
    to_scaled_space(Ws.data(), rows, cols, s, nullptr, imp ? imps.data() : nullptr);
    use_imp = imp ? imps.data() : nullptr;
  }
  if (c.r != Rounding::Gptq) {
    quant::quantize_rows_parallel(t, Ws.data(), dst, rows, cols, c.r == Rounding::Rtn ? nullptr : use_imp, pool);
  } else if (!take_H && !scaled) {
    gptq_quantize(t, Ws.data(), rows, cols, H, dst, kRidge, c.act_order, &pool);
  } else {
    // GPTQ factorises this matrix in place: the handed-over H or a copy, in AWQ's space (H_ij / (s_i s_j)).
    std::vector<double> Hg = take_H ? std::move(*take_H) : std::vector<double>(H, H + cols * cols);
    if (scaled)
      for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = 0; j < cols; ++j) Hg[i * cols + j] /= double(s[i]) * s[j];
    gptq_quantize(t, Ws.data(), rows, cols, std::move(Hg), dst, kRidge, c.act_order, &pool);
  }
  if (!Q) return;
  dequantize_rows(t, dst, rows, cols, scaled ? s : nullptr, nullptr, Q, pool);
}

struct Weight {
  std::string name;
  GgmlType type;
  int64_t rows = 0, cols = 0;
  std::vector<float> W;
};

struct Hessians {
  std::vector<double> all, fit, eval;  // all chunks (with_all); fit: even chunks (or all), eval: odd chunks (or all) (split)
  std::vector<float> imp_fit, imp_all;
};

// The importance (mean x², ridged) alone, without reading any Hessian.
Hessians importance_only(const InputStats& in) {
  Hessians h;
  h.imp_all.resize(static_cast<size_t>(in.width));
  for (int64_t j = 0; j < in.width; ++j)
    h.imp_all[j] = static_cast<float>(in.sum_x2[j] / std::max<double>(1, static_cast<double>(in.rows)));
  h.imp_all = ridge_importance(std::move(h.imp_all));
  return h;
}

// With the Hessian of all chunks (AWQ's scale search reads nothing else).
Hessians with_all(const InputStats& in) {
  Hessians h = importance_only(in);
  h.all = in.load_hessian();
  return h;
}

// With the Hessians of the even (fit) and odd (eval) chunks, read from the statistics file on demand: one
// input's at a time in memory, two n × n copies (fit is formed in place of all).
Hessians split(const InputStats& in) {
  Hessians h = importance_only(in);
  h.fit = in.load_hessian();
  std::vector<double> odd = in.load_hessian(true);
  const size_t n = h.fit.size();
  if (odd.size() == n) {
    for (size_t i = 0; i < n; ++i) h.fit[i] -= odd[i];
    h.eval = std::move(odd);
  } else {
    h.eval = h.fit;
  }
  h.imp_fit.resize(static_cast<size_t>(in.width));
  for (int64_t j = 0; j < in.width; ++j) h.imp_fit[j] = static_cast<float>(std::max(h.fit[j * in.width + j], 0.0));
  h.imp_fit = ridge_importance(std::move(h.imp_fit));
  return h;
}

double candidate_error(const Weight& w, Choice c, const double* H_fit, const float* imp_fit, const float* s,
                       const double* H_eval, ThreadPool& pool) {
  std::vector<uint8_t> enc(*ggml_row_size(w.type, static_cast<uint64_t>(w.cols)) * static_cast<uint64_t>(w.rows));
  std::vector<float> Q(w.W.size());
  encode(w.type, w.W.data(), w.rows, w.cols, c, H_fit, imp_fit, s, enc.data(), Q.data(), pool);
  return output_error(w.W.data(), Q.data(), w.rows, w.cols, H_eval, &pool);
}

// At most this many rows of a weight (evenly spaced) score AWQ's scale candidates: rows are rounded
// independently, so the error of a row sample is exact for those rows; the search's cost then stops growing with
// the output dimension (tl-8m's weights, at most 768 rows, are scored whole).
constexpr int64_t kSearchRows = 1024;

Weight row_sample(const Weight& w) {
  if (w.rows <= kSearchRows) return w;
  Weight r{w.name, w.type, kSearchRows, w.cols, std::vector<float>(static_cast<size_t>(kSearchRows * w.cols))};
  for (int64_t i = 0; i < kSearchRows; ++i)
    std::memcpy(r.W.data() + i * w.cols, w.W.data() + (i * w.rows / kSearchRows) * w.cols,
                static_cast<size_t>(w.cols) * sizeof(float));
  return r;
}

// AWQ's scale search for the weights sharing one input: s = xa^α normalised by sqrt(max·min), xa the mean |x|
// per column (tied columns carry equal values), α on a grid of 0, 0.1 … 1; the α with the lowest summed output
// error (imatrix-weighted rounding, on a row sample of each weight). Empty when α = 0 wins.
std::vector<float> search_scales(const std::vector<Weight>& ws_all, std::vector<float> xa, const double* H,
                                 const float* imp, double* best_err, ThreadPool& pool) {
  std::vector<Weight> ws;
  for (const auto& w : ws_all) ws.push_back(row_sample(w));
  double mx = 0;
  for (float v : xa) mx = std::max(mx, double(v));
  for (auto& v : xa) v = std::max(v, static_cast<float>(mx * 1e-4 + 1e-12));
  const size_t n = xa.size();
  std::vector<float> best, s(n);
  double best_e = std::numeric_limits<double>::infinity();
  for (int a = 0; a <= 10; ++a) {
    const double alpha = a / 10.0;
    double lo = std::numeric_limits<double>::infinity(), hi = 0;
    for (size_t j = 0; j < n; ++j) {
      s[j] = static_cast<float>(std::pow(double(xa[j]), alpha));
      lo = std::min(lo, double(s[j]));
      hi = std::max(hi, double(s[j]));
    }
    const double norm = std::sqrt(lo * hi);
    for (auto& v : s) v = static_cast<float>(v / norm);
    double e = 0;
    for (const auto& w : ws) e += candidate_error(w, {Rounding::Imatrix, a > 0}, H, imp, s.data(), H, pool);
    if (e < best_e) {
      best_e = e;
      best = a > 0 ? s : std::vector<float>{};
    }
  }
  *best_err = best_e;
  return best;
}

// Where AWQ's inverse scales go (one table): for each matmul input, the tensor that produces it linearly per
// channel, whose output channels are divided by the scales the input's weights are multiplied by.
//   attn_norm, ffn_norm: the RMSNorm weights; element j feeds column j of q/k/v, gate/up.
//   attn_v: o's input for query head h, dim d is a softmax-weighted sum over positions of V's row (kv(h), d), with
//     kv(h) = h / (n_head / n_head_kv) (GQA: consecutive query heads share a KV head, as in ggml's broadcast and
//     the runtime). Dividing V's row (g, d) (and its bias, qwen2) by s divides o's input columns (h, d) of every
//     query head h of group g, so o's column scales are tied across the heads of a group: their mean |x| is
//     averaged over the group before the search.
//   ffn_up: down's input is silu(gate) ⊙ up, linear in up's rows (needs a separate gate: SwiGLU).
// The tensors are roles of the architecture table (arch/): their GGUF names come from it.
struct FoldTarget {
  MatmulInput site;
  arch::Role target;                // "blk.N.<stem>.weight" (and .bias when present)
  bool per_kv_head;                 // o's input: columns tied across the query heads of a KV head
  std::optional<arch::Role> needs;  // a tensor that must exist for the folding to be exact
};
const FoldTarget kFoldTargets[] = {
    {MatmulInput::AttnQKV, arch::Role::AttnNorm, false, std::nullopt},
    {MatmulInput::AttnOut, arch::Role::AttnV, true, std::nullopt},
    {MatmulInput::FfnGateUp, arch::Role::FfnNorm, false, std::nullopt},
    {MatmulInput::FfnDown, arch::Role::FfnUp, false, arch::Role::FfnGate},
};

struct Fold {
  std::vector<std::string> targets;  // tensors whose output channels are divided (weight, and its bias if any)
  std::vector<int64_t> channel;      // input column -> target output channel
  int64_t n_channels = 0;
};

// The folding of one input's scales, when the source has what it needs (else nullopt: the input keeps s = 1).
std::optional<Fold> resolve_fold(const InputStats& in, const quant::QuantizeSource& src,
                                 const std::map<std::string, size_t>& by_name, const quant::ModelParams& p) {
  const FoldTarget* ft = nullptr;
  for (const auto& f : kFoldTargets)
    if (f.site == in.site) ft = &f;
  if (!ft) return std::nullopt;
  // Present, and handed to the quantize hook (its values loadable as f32).
  auto tensor = [&](const std::string& name) -> const SourceTensor* {
    auto it = by_name.find(name);
    if (it == by_name.end()) return nullptr;
    const SourceTensor& t = src.tensors[it->second];
    const GgmlTypeInfo* ti = ggml_type_info(t.source_type);
    if (!t.load_f32 || !ti || (ti->quantized && !quant::can_dequantize(t.source_type))) return nullptr;
    return &t;
  };
  if (ft->needs && !tensor(arch::gguf_name(*ft->needs, in.layer))) return std::nullopt;
  Fold f;
  f.channel.resize(static_cast<size_t>(in.width));
  f.n_channels = in.width;
  for (int64_t c = 0; c < in.width; ++c) f.channel[c] = c;
  if (ft->per_kv_head) {
    if (p.n_head <= 0 || p.n_head_kv <= 0 || p.n_head % p.n_head_kv != 0 || in.width % p.n_head != 0)
      return std::nullopt;
    const int64_t hd = in.width / p.n_head, group = p.n_head / p.n_head_kv;
    f.n_channels = p.n_head_kv * hd;
    for (int64_t c = 0; c < in.width; ++c) f.channel[c] = (c / hd / group) * hd + c % hd;
  }
  const auto* w = tensor(arch::gguf_name(ft->target, in.layer));
  if (!w) return std::nullopt;
  const uint64_t nc = static_cast<uint64_t>(f.n_channels);
  // A norm: one element per channel; a weight: one row per channel.
  if (w->dims != std::vector<uint64_t>{nc} && (w->dims.size() != 2 || w->dims[1] != nc)) return std::nullopt;
  f.targets.push_back(w->name);
  if (w->dims.size() == 2) {
    const std::string bias = arch::gguf_name(ft->target, in.layer, "bias");
    if (by_name.count(bias)) {
      const auto* b = tensor(bias);
      if (!b || b->dims != std::vector<uint64_t>{nc}) return std::nullopt;
      f.targets.push_back(bias);
    }
  }
  return f;
}

// Mean |x| per column, averaged over the columns that share a target channel.
std::vector<float> tied_mean_abs(const InputStats& in, const Fold& f) {
  std::vector<double> sum(static_cast<size_t>(f.n_channels)), cnt(sum.size());
  for (int64_t c = 0; c < in.width; ++c) {
    sum[f.channel[c]] += in.sum_abs[c] / std::max<double>(1, static_cast<double>(in.rows));
    cnt[f.channel[c]] += 1;
  }
  std::vector<float> xa(static_cast<size_t>(in.width));
  for (int64_t c = 0; c < in.width; ++c) xa[c] = static_cast<float>(sum[f.channel[c]] / cnt[f.channel[c]]);
  return xa;
}

struct State {
  const CalibrationStats* stats = nullptr;
  bool act_order = false;  // GPTQ rounding (gptq, auto's gptq candidates) in act-order
  std::map<std::string, Choice> choice;
  AwqFolds folds;  // divide: output channels of norms / V / up (and biases); multiply: weight columns
  std::map<std::string, std::vector<uint8_t>> clip;  // weight -> clip ratio index per row and block
  std::map<std::string, std::vector<float>> imp_all;
  std::vector<float> imp_buf;
  std::unique_ptr<ThreadPool> pool;  // the hook's encoding (made on first use, with the quantize's threads)
};

const std::vector<float>* find_scales(const std::map<std::string, std::vector<float>>& m, const std::string& name) {
  auto it = m.find(name);
  return it == m.end() ? nullptr : &it->second;
}

// Divides the output channels of a tensor (elements of a vector, rows of a matrix) by s.
void divide_channels(quant::TensorHookArgs& a, const std::vector<float>& s) {
  const auto n = static_cast<int64_t>(s.size());
  if (a.nrows * a.n_per_row == n) {
    for (int64_t j = 0; j < n; ++j) a.values[j] /= s[j];
  } else if (a.nrows == n) {
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < a.n_per_row; ++j) a.values[r * a.n_per_row + j] /= s[r];
  } else {
    fail("awq: {} does not match its scales", a.name);
  }
}

// The hook's values into AWQ's scaled space (imp, when given, too).
void multiply_columns(quant::TensorHookArgs& a, const std::vector<float>& s, float* imp = nullptr) {
  if (static_cast<int64_t>(s.size()) != a.n_per_row) fail("awq: {} does not match its scales", a.name);
  to_scaled_space(a.values, a.nrows, a.n_per_row, s.data(), nullptr, imp);
}

// What a method decides for the weights sharing one matmul input (ws, in order): each weight's encoding, the
// input's AWQ column scales (empty: none), and the importance the hook encodes with.
struct InputPlan {
  std::vector<Choice> choice;
  std::vector<float> scales;
  std::vector<float> imp_all;
};
struct PlanArgs {
  const InputStats& in;
  const std::vector<Weight>& ws;
  const std::optional<Fold>& fold;  // where the input's scales can be folded (AWQ), if anywhere
  bool act_order;
  ThreadPool& pool;
};

// gptq: every weight through GPTQ with its input's Hessian (read when the weight is encoded).
InputPlan plan_gptq(const PlanArgs& a) {
  InputPlan p;
  p.imp_all = importance_only(a.in).imp_all;
  p.choice.assign(a.ws.size(), Choice{Rounding::Gptq, false, a.act_order});
  return p;
}

// awq: the scale search where the scales fold (Hessian of all chunks), imatrix rounding in the scaled space.
InputPlan plan_awq(const PlanArgs& a) {
  Hessians h = a.fold ? with_all(a.in) : importance_only(a.in);
  InputPlan p;
  if (a.fold) {
    double e = 0;
    p.scales = search_scales(a.ws, tied_mean_abs(a.in, *a.fold), ridge_hessian(std::move(h.all), a.in.width).data(),
                             h.imp_all.data(), &e, a.pool);
  }
  p.choice.assign(a.ws.size(), Choice{Rounding::Imatrix, !p.scales.empty()});
  p.imp_all = std::move(h.imp_all);
  return p;
}

// auto: per weight the candidate of least output error, fitted on the even chunks and scored on the odd ones;
// the scaled candidates (awq, awq+gptq) as a whole input against the plain ones.
InputPlan plan_auto(const PlanArgs& a) {
  const Hessians h = split(a.in);
  const auto& ws = a.ws;
  const bool act_order = a.act_order;
  ThreadPool& pool = a.pool;
  InputPlan p;
  double plain_total = 0;
  std::vector<Choice> plain(ws.size());
  for (size_t i = 0; i < ws.size(); ++i) {
    double best = std::numeric_limits<double>::infinity();
    for (Rounding r : {Rounding::Rtn, Rounding::Imatrix, Rounding::Gptq}) {
      const Choice c{r, false, act_order && r == Rounding::Gptq};
      const double e = candidate_error(ws[i], c, h.fit.data(), h.imp_fit.data(), nullptr, h.eval.data(), pool);
      if (e < best) best = e, plain[i] = c;
    }
    plain_total += best;
  }
  p.choice = plain;
  if (a.fold) {
    double fit_err = 0;
    std::vector<float> s = search_scales(ws, tied_mean_abs(a.in, *a.fold), ridge_hessian(h.fit.data(), a.in.width).data(),
                                         h.imp_fit.data(), &fit_err, pool);
    if (!s.empty()) {
      double scaled_total = 0;
      std::vector<Choice> scaled(ws.size());
      for (size_t i = 0; i < ws.size(); ++i) {
        double best = std::numeric_limits<double>::infinity();
        for (Rounding r : {Rounding::Imatrix, Rounding::Gptq}) {
          const Choice c{r, true, act_order && r == Rounding::Gptq};
          const double e = candidate_error(ws[i], c, h.fit.data(), h.imp_fit.data(), s.data(), h.eval.data(), pool);
          if (e < best) best = e, scaled[i] = c;
        }
        scaled_total += best;
      }
      if (scaled_total < plain_total) {
        p.choice = scaled;
        p.scales = std::move(s);
      }
    }
  }
  p.imp_all = h.imp_all;
  return p;
}

}  // namespace

// A method's decisions (methods.h's MethodPlan): per matmul input, and whether AWQ's clipping search follows.
struct MethodPlan {
  InputPlan (*plan_input)(const PlanArgs&);
  bool clip;
};

namespace {
const MethodPlan kGptqPlan{plan_gptq, false};
const MethodPlan kAwqPlan{plan_awq, true};
const MethodPlan kAutoPlan{plan_auto, false};
}  // namespace

std::unique_ptr<MethodSetup> setup_method(Method m, const CalibrationStats& stats, const std::string& stats_label,
                                          const quant::QuantizeSource& src, quant::QuantizeOptions& qo,
                                          const std::function<void(const std::string&)>& log, bool act_order) {
  if (act_order && !method_takes_act_order(m))
    fail("act-order applies to --method gptq and auto, not {}", method_name(m));
  auto setup = std::make_unique<MethodSetup>();
  auto st = std::make_shared<State>();
  st->stats = &stats;
  st->act_order = act_order;
  setup->state = st;
  setup->importance = importance_from_stats(stats, stats_label);
  qo.method = std::string("edgeq-") + method_name(m) + (act_order ? "+act-order" : "");
  const MethodInfo& info = method_info(m);
  if (!info.needs_statistics) {  // rtn
    qo.importance = nullptr;
    return setup;
  }
  if (setup->importance.data.empty()) fail("{}: the calibration statistics hold no importance data", stats_label);
  for (auto& [name, v] : setup->importance.data) v = ridge_importance(std::move(v));
  qo.importance = &setup->importance;
  const MethodPlan* mp = info.plan;
  if (!mp) return setup;  // imatrix: the importance is all
  for (const auto& in : stats.inputs)  // (experts have none: they are rounded with their importance)
    if (info.needs_hessian && in.rows > 0 && in.n_expert == 0 && !in.has_hessian())
      fail("{}: --method {} needs Hessians: run `edgeq calibrate --hessian` (or quantize with --data)", stats_label,
           method_name(m));

  // The searches below encode and score whole weights: row chunks side by side on qo.threads threads.
  ThreadPool pool(resolve_threads(qo.threads));
  // Which tensors get which type, and where their values come from.
  const quant::QuantizePlan plan = quant::plan_quantize(src, qo);
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < src.tensors.size(); ++i) by_name.emplace(src.tensors[i].name, i);
  std::map<std::string, std::pair<size_t, GgmlType>> planned;
  for (const auto& p : plan.tensors) {
    const auto& t = src.tensors[p.source_index];
    const GgmlTypeInfo* ti = ggml_type_info(p.decision.type);
    if (p.decision.quantize && ti && ti->quantized && t.dims.size() == 2 && t.dims[0] % ti->block_size == 0 && t.load_f32)
      planned.emplace(t.name, std::make_pair(p.source_index, p.decision.type));
  }
  auto load = [&](const std::string& name) -> std::optional<Weight> {
    auto it = planned.find(name);
    if (it == planned.end()) return std::nullopt;
    const auto& t = src.tensors[it->second.first];
    Weight w{name, it->second.second, static_cast<int64_t>(t.dims[1]), static_cast<int64_t>(t.dims[0]), {}};
    w.W.resize(static_cast<size_t>(w.rows * w.cols));
    t.load_f32(w.W.data());
    for (float v : w.W)
      if (!std::isfinite(v)) fail("{}: tensor {}: non-finite value", src.path, name);
    return w;
  };
  AwqFolds& folds = st->folds;

  for (const auto& in : stats.inputs) {
    if (in.rows <= 0) continue;
    std::vector<Weight> ws;
    for (const auto& n : in.tensor_names())
      if (auto w = load(n); w && w->cols == in.width) ws.push_back(std::move(*w));
    if (ws.empty()) continue;
    const std::optional<Fold> fold =
        ws.size() == in.tensor_names().size() ? resolve_fold(in, src, by_name, plan.params) : std::nullopt;
    const InputPlan ip = mp->plan_input({in, ws, fold, act_order, pool});
    for (size_t i = 0; i < ws.size(); ++i) st->choice[ws[i].name] = ip.choice[i];
    if (!ip.scales.empty()) {
      std::vector<float> per_channel(static_cast<size_t>(fold->n_channels));
      for (int64_t c = 0; c < in.width; ++c) per_channel[fold->channel[c]] = ip.scales[c];
      for (const auto& t : fold->targets) folds.divide[t] = per_channel;
      for (const auto& w : ws) folds.multiply[w.name] = ip.scales;
    }
    for (const auto& w : ws) st->imp_all[w.name] = ip.imp_all;
  }

  // AWQ's clipping, once every scale (also the row scales of V and up, from later inputs) is known: the ratios
  // are chosen on the even chunks and kept only if they lower the output error on the odd ones.
  for (const auto& in : stats.inputs) {
    if (!mp->clip || in.rows <= 0) continue;
    std::vector<double> H_fit, H_check;
    for (const auto& name : in.tensor_names()) {
      auto w = load(name);
      if (!w || w->cols != in.width || !st->choice.count(name)) continue;
      if (H_fit.empty()) {
        Hessians hh = split(in);
        H_fit = ridge_hessian(std::move(hh.fit), in.width);
        H_check = ridge_hessian(std::move(hh.eval), in.width);
      }
      const std::vector<float>* sc = find_scales(folds.multiply, name);
      const std::vector<float>* rd = find_scales(folds.divide, name);
      std::vector<float> Wf = w->W, imp = st->imp_all.at(name);
      to_scaled_space(Wf.data(), w->rows, w->cols, sc ? sc->data() : nullptr, rd ? rd->data() : nullptr, imp.data());
      double e0 = 0, e1 = 0;
      auto idx = awq_clip_search(w->type, w->W.data(), Wf.data(), w->rows, w->cols, H_fit.data(), H_check.data(),
                                 imp.data(), sc ? sc->data() : nullptr, rd ? rd->data() : nullptr, &e0, &e1, &pool);
      if (log)
        log(fmt::format("awq clip {}: held-out output error {:.4g} -> {:.4g}{}", name, e0, e1,
                        idx.empty() ? " (kept unclipped)" : ""));
      if (!idx.empty()) st->clip[name] = std::move(idx);
    }
  }
  if (log)
    for (const auto& in : stats.inputs) {
      std::string line = fmt::format("{} layer {}:", method_name(m), in.layer);
      bool any = false;
      for (const auto& n : in.tensor_names())
        if (auto c = st->choice.find(n); c != st->choice.end()) {
          line += " " + n + "=" + choice_name(c->second) + (st->clip.count(n) ? "+clip" : "");
          any = true;
        }
      if (any) log(line);
    }

  setup->awq = folds;
  std::vector<std::string> record;
  for (const auto& [name, c] : st->choice) {
    setup->tensor_methods[name] = choice_name(c);
    record.push_back(name + "=" + choice_name(c));
  }
  qo.extra_metadata.emplace_back("edgeq.quantize.tensor_methods", GgufValue::string_array(record));

  State* s = st.get();
  qo.tensor_hook = [s](quant::TensorHookArgs& a) -> quant::HookResult {
    quant::HookResult res = quant::HookResult::Untouched;
    if (const auto* d = find_scales(s->folds.divide, a.name)) {
      divide_channels(a, *d);
      res = quant::HookResult::Modified;
    }
    auto ci = s->choice.find(a.name);
    if (ci == s->choice.end() || !a.quantize) return res;
    const Choice c = ci->second;
    const InputStats* in = s->stats->find(a.name);
    const std::vector<float>& imp = s->imp_all.at(a.name);
    const std::vector<float>* sc = find_scales(s->folds.multiply, a.name);
    if (c.r != Rounding::Imatrix) {
      std::vector<double> H = c.r == Rounding::Gptq ? in->load_hessian() : std::vector<double>{};
      if (!s->pool) s->pool = std::make_unique<ThreadPool>(std::max(1, a.threads));
      encode(a.type, a.values, a.nrows, a.n_per_row, c, nullptr, imp.data(), sc ? sc->data() : nullptr, a.dst,
             nullptr, *s->pool, H.empty() ? nullptr : &H);
      a.importance = c.r == Rounding::Rtn ? nullptr : imp.data();
      return quant::HookResult::Encoded;
    }
    // Importance-weighted rounding with the standard (threaded) encoder: scale the columns, divide the
    // importance, clip.
    s->imp_buf = imp;
    if (c.scaled && sc) multiply_columns(a, *sc, s->imp_buf.data());
    if (auto cl = s->clip.find(a.name); cl != s->clip.end()) awq_apply_clip(a.type, a.values, a.nrows, a.n_per_row, cl->second);
    a.importance = s->imp_buf.data();
    return quant::HookResult::Modified;
  };
  return setup;
}
namespace {
constexpr float kClipRatios[] = {1.0f, 0.975f, 0.95f, 0.925f, 0.9f, 0.875f, 0.85f, 0.8f, 0.75f, 0.7f, 0.6f, 0.5f};

}  // namespace

void awq_apply_clip(GgmlType t, float* W, int64_t rows, int64_t cols, const std::vector<uint8_t>& idx) {
  const int64_t g = ggml_type_info(t)->block_size, nb = cols / g;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const float ratio = kClipRatios[idx[r * nb + b]];
      if (ratio == 1.0f) continue;
      float* x = W + r * cols + b * g;
      float amax = 0;
      for (int64_t j = 0; j < g; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float lim = ratio * amax;
      for (int64_t j = 0; j < g; ++j) x[j] = std::clamp(x[j], -lim, lim);
    }
}

namespace {
// Encodes Wf (with importance imp) and writes the effective weights in the original space into Q.
void encode_original(GgmlType t, const float* Wf, int64_t rows, int64_t cols, const float* imp,
                     const float* s_col, const float* s_row, float* Q, ThreadPool& pool) {
  const uint64_t rb = *ggml_row_size(t, static_cast<uint64_t>(cols));
  std::vector<uint8_t> enc(rb * static_cast<uint64_t>(rows));
  quant::quantize_rows_parallel(t, Wf, enc.data(), rows, cols, imp, pool);
  dequantize_rows(t, enc.data(), rows, cols, s_col, s_row, Q, pool);
}

}  // namespace

std::vector<uint8_t> awq_clip_search(GgmlType t, const float* W, const float* Wf, int64_t rows, int64_t cols,
                                     const double* H, const double* H_check, const float* imp, const float* s_col, const float* s_row,
                                     double* err_plain, double* err_clip, ThreadPool* pool_arg) {
  std::unique_ptr<ThreadPool> own;
  if (!pool_arg) own = std::make_unique<ThreadPool>(1);
  ThreadPool& pool = pool_arg ? *pool_arg : *own;
  const int64_t g = ggml_type_info(t)->block_size, nb = cols / g;
  const size_t n = static_cast<size_t>(rows * cols);
  std::vector<float> Wc(n), Q(n);
  std::vector<double> e(static_cast<size_t>(rows * nb)), best(e.size(), std::numeric_limits<double>::infinity());
  std::vector<uint8_t> idx(e.size(), 0), cand(e.size());
  for (size_t k = 0; k < std::size(kClipRatios); ++k) {
    Wc.assign(Wf, Wf + n);
    std::fill(cand.begin(), cand.end(), static_cast<uint8_t>(k));
    awq_apply_clip(t, Wc.data(), rows, cols, cand);
    encode_original(t, Wc.data(), rows, cols, imp, s_col, s_row, Q.data(), pool);
    if (k == 0) *err_plain = output_error(W, Q.data(), rows, cols, H_check, &pool);
    block_output_errors(W, Q.data(), rows, cols, H, g, e.data(), &pool);
    for (size_t i = 0; i < e.size(); ++i)
      if (e[i] < best[i]) best[i] = e[i], idx[i] = static_cast<uint8_t>(k);
  }
  Wc.assign(Wf, Wf + n);
  awq_apply_clip(t, Wc.data(), rows, cols, idx);
  encode_original(t, Wc.data(), rows, cols, imp, s_col, s_row, Q.data(), pool);
  *err_clip = output_error(W, Q.data(), rows, cols, H_check, &pool);
  if (!(*err_clip < *err_plain)) return {};
  return idx;
}

quant::TensorHook awq_fold_hook(AwqFolds folds) {
  auto f = std::make_shared<AwqFolds>(std::move(folds));
  return [f](quant::TensorHookArgs& a) -> quant::HookResult {
    quant::HookResult res = quant::HookResult::Untouched;
    if (const auto* d = find_scales(f->divide, a.name)) {
      divide_channels(a, *d);
      res = quant::HookResult::Modified;
    }
    if (const auto* m = find_scales(f->multiply, a.name)) {
      multiply_columns(a, *m);
      res = quant::HookResult::Modified;
    }
    return res;
  };
}

const std::vector<MethodInfo>& method_table() {
  static const std::vector<MethodInfo> t = {
      {Method::Rtn, "rtn", "round to nearest: each block's scales searched for the least squared error, no statistics",
       false, false, false, true, false, nullptr},
      {Method::Imatrix, "imatrix",
       "importance-weighted search: llama.cpp's importance matrix (mean x^2 per input column)", true, false, false,
       true, false, nullptr},
      {Method::Awq, "awq",
       "AWQ: per-channel activation scales folded into the norms and the rows of attn_v and ffn_up, clipping where "
       "it lowers the output error, then imatrix",
       true, true, false, false, true, &kAwqPlan},
      {Method::Gptq, "gptq", "GPTQ: rounding errors fed forward through each input's Hessian", true, true, true, false,
       false, &kGptqPlan},
      {Method::Auto, "auto",
       "per tensor the lowest output error on held-out calibration chunks among rtn, imatrix, gptq and awq", true,
       true, true, false, true, &kAutoPlan},
  };
  return t;
}

}  // namespace edgeq::calibrate
