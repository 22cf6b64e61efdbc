#include "edgeq/calibrate/methods.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "edgeq/calibrate/gptq.h"
#include "edgeq/formats/error.h"
#include "edgeq/quant/blocks.h"

namespace edgeq::calibrate {

using runtime::MatmulInput;

std::optional<Method> parse_method(std::string_view name) {
  for (Method m : {Method::Rtn, Method::Imatrix, Method::Awq, Method::Gptq, Method::Auto})
    if (name == method_name(m)) return m;
  return std::nullopt;
}

const char* method_name(Method m) {
  switch (m) {
    case Method::Rtn: return "rtn";
    case Method::Imatrix: return "imatrix";
    case Method::Awq: return "awq";
    case Method::Gptq: return "gptq";
    case Method::Auto: return "auto";
  }
  return "?";
}

bool method_needs_hessian(Method m) { return m == Method::Awq || m == Method::Gptq || m == Method::Auto; }

quant::Importance importance_from_stats(const CalibrationStats& stats, const std::string& file_label) {
  quant::Importance imp;
  imp.info.file = file_label;
  std::string ds;
  for (const auto& d : stats.datasets) ds += (ds.empty() ? "" : ",") + d;
  imp.info.dataset = ds;
  imp.info.chunks_count = stats.n_chunks;
  for (const auto& in : stats.inputs) {
    if (in.rows <= 0) continue;
    std::vector<float> v(static_cast<size_t>(in.width));
    for (int64_t j = 0; j < in.width; ++j) v[j] = static_cast<float>(in.sum_x2[j] / static_cast<double>(in.rows));
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
};
std::string choice_name(Choice c) {
  if (c.scaled) return c.r == Rounding::Gptq ? "awq+gptq" : "awq";
  return c.r == Rounding::Rtn ? "rtn" : c.r == Rounding::Gptq ? "gptq" : "imatrix";
}

// Encodes W (rows × cols) with a choice: s (optional) scales the columns, imp is mean x² per column (original
// space), H the Hessian for GPTQ (original space). Writes the blocks to dst and, when Q is given, the
// effective dequantized weights in the original space (Q / s).
void encode(GgmlType t, const float* W, int64_t rows, int64_t cols, Choice c, const double* H, const float* imp,
            const float* s, uint8_t* dst, float* Q) {
  std::vector<float> Ws(W, W + rows * cols), imps;
  std::vector<double> Hs;
  const float* use_imp = imp;
  const double* use_H = H;
  if (c.scaled && s) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) Ws[r * cols + j] *= s[j];
    imps.resize(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) imps[j] = imp[j] / (s[j] * s[j]);
    use_imp = imps.data();
    if (c.r == Rounding::Gptq) {
      Hs.resize(static_cast<size_t>(cols * cols));
      for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = 0; j < cols; ++j) Hs[i * cols + j] = H[i * cols + j] / (double(s[i]) * s[j]);
      use_H = Hs.data();
    }
  }
  if (c.r == Rounding::Gptq)
    gptq_quantize(t, Ws.data(), rows, cols, use_H, dst);
  else
    quant::quantize_rows(t, Ws.data(), dst, rows, cols, c.r == Rounding::Rtn ? nullptr : use_imp);
  if (!Q) return;
  const uint64_t rb = *ggml_row_size(t, static_cast<uint64_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    quant::dequantize_row(t, dst + r * rb, Q + r * cols, cols);
    if (c.scaled && s)
      for (int64_t j = 0; j < cols; ++j) Q[r * cols + j] /= s[j];
  }
}

struct Weight {
  std::string name;
  GgmlType type;
  int64_t rows = 0, cols = 0;
  std::vector<float> W;
};

struct Hessians {
  std::vector<double> all, fit, eval;  // all chunks; fit: even chunks (or all), eval: odd chunks (or all)
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

// One input's Hessians as well (read from the statistics file on demand: one input's at a time in memory).
Hessians split(const InputStats& in) {
  Hessians h = importance_only(in);
  h.all = in.load_hessian();
  std::vector<double> odd = in.load_hessian(true);
  const size_t n = h.all.size();
  if (odd.size() == n) {
    h.fit.resize(n);
    for (size_t i = 0; i < n; ++i) h.fit[i] = h.all[i] - odd[i];
    h.eval = std::move(odd);
  } else {
    h.fit = h.all;
    h.eval = h.all;
  }
  h.imp_fit.resize(static_cast<size_t>(in.width));
  for (int64_t j = 0; j < in.width; ++j) h.imp_fit[j] = static_cast<float>(std::max(h.fit[j * in.width + j], 0.0));
  h.imp_fit = ridge_importance(std::move(h.imp_fit));
  return h;
}

double candidate_error(const Weight& w, Choice c, const double* H_fit, const float* imp_fit, const float* s,
                       const double* H_eval) {
  std::vector<uint8_t> enc(*ggml_row_size(w.type, static_cast<uint64_t>(w.cols)) * static_cast<uint64_t>(w.rows));
  std::vector<float> Q(w.W.size());
  encode(w.type, w.W.data(), w.rows, w.cols, c, H_fit, imp_fit, s, enc.data(), Q.data());
  return output_error(w.W.data(), Q.data(), w.rows, w.cols, H_eval);
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

// AWQ's scale search for the weights sharing one input: s = mean|x|^α normalised by sqrt(max·min), α on a grid
// of 0, 0.1 … 1; the α with the lowest summed output error (imatrix-weighted rounding, on a row sample of
// each weight). Empty when α = 0 wins.
std::vector<float> search_scales(const std::vector<Weight>& ws_all, const InputStats& in, const double* H,
                                 const float* imp, double* best_err) {
  std::vector<Weight> ws;
  for (const auto& w : ws_all) ws.push_back(row_sample(w));
  std::vector<float> xa(static_cast<size_t>(in.width));
  double mx = 0;
  for (int64_t j = 0; j < in.width; ++j) {
    xa[j] = static_cast<float>(in.sum_abs[j] / std::max<double>(1, static_cast<double>(in.rows)));
    mx = std::max(mx, double(xa[j]));
  }
  for (auto& v : xa) v = std::max(v, static_cast<float>(mx * 1e-4 + 1e-12));
  std::vector<float> best, s(static_cast<size_t>(in.width));
  double best_e = std::numeric_limits<double>::infinity();
  for (int a = 0; a <= 10; ++a) {
    const double alpha = a / 10.0;
    double lo = std::numeric_limits<double>::infinity(), hi = 0;
    for (int64_t j = 0; j < in.width; ++j) {
      s[j] = static_cast<float>(std::pow(double(xa[j]), alpha));
      lo = std::min(lo, double(s[j]));
      hi = std::max(hi, double(s[j]));
    }
    const double norm = std::sqrt(lo * hi);
    for (auto& v : s) v = static_cast<float>(v / norm);
    double e = 0;
    for (const auto& w : ws) e += candidate_error(w, {Rounding::Imatrix, a > 0}, H, imp, s.data(), H);
    if (e < best_e) {
      best_e = e;
      best = a > 0 ? s : std::vector<float>{};
    }
  }
  *best_err = best_e;
  return best;
}

struct State {
  const CalibrationStats* stats = nullptr;
  std::map<std::string, Choice> choice;
  std::map<std::string, std::vector<float>> norm_scales;  // norm tensor name -> s (divide the norm by it)
  std::map<std::string, const std::vector<float>*> weight_scales;
  std::map<std::string, std::vector<float>> imp_all;
  std::vector<float> imp_buf;
};

const char* norm_for(MatmulInput site) {
  return site == MatmulInput::AttnQKV ? "attn_norm" : site == MatmulInput::FfnGateUp ? "ffn_norm" : nullptr;
}

}  // namespace

std::unique_ptr<MethodSetup> setup_method(Method m, const CalibrationStats& stats, const std::string& stats_label,
                                          const quant::QuantizeSource& src, quant::QuantizeOptions& qo,
                                          const std::function<void(const std::string&)>& log) {
  auto setup = std::make_unique<MethodSetup>();
  auto st = std::make_shared<State>();
  st->stats = &stats;
  setup->state = st;
  setup->importance = importance_from_stats(stats, stats_label);
  qo.method = std::string("edgeq-") + method_name(m);
  if (m == Method::Rtn) {
    qo.importance = nullptr;
    return setup;
  }
  if (setup->importance.data.empty()) fail("{}: the calibration statistics hold no importance data", stats_label);
  for (auto& [name, v] : setup->importance.data) v = ridge_importance(std::move(v));
  qo.importance = &setup->importance;
  if (m == Method::Imatrix) return setup;
  for (const auto& in : stats.inputs)
    if (in.rows > 0 && !in.has_hessian())
      fail("{}: --method {} needs Hessians: run `edgeq calibrate --hessian` (or quantize with --data)", stats_label,
           method_name(m));

  // Which tensors get which type, and where their values come from.
  const quant::QuantizePlan plan = quant::plan_quantize(src, qo);
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

  for (const auto& in : stats.inputs) {
    if (in.rows <= 0) continue;
    std::vector<Weight> ws;
    for (const auto& n : in.tensor_names())
      if (auto w = load(n); w && w->cols == in.width) ws.push_back(std::move(*w));
    if (ws.empty()) continue;
    const bool foldable = norm_for(in.site) != nullptr && ws.size() == in.tensor_names().size();
    // Hessians only where this method reads them here (gptq's are read per tensor when it is encoded).
    const Hessians h = m == Method::Auto || (m == Method::Awq && foldable) ? split(in) : importance_only(in);
    const std::string norm = "blk." + std::to_string(in.layer) + "." + (foldable ? norm_for(in.site) : "") + ".weight";
    if (m == Method::Gptq) {
      for (const auto& w : ws) st->choice[w.name] = {Rounding::Gptq, false};
    } else if (m == Method::Awq) {
      double e = 0;
      std::vector<float> s =
          foldable ? search_scales(ws, in, ridge_hessian(h.all.data(), in.width).data(), h.imp_all.data(), &e)
                   : std::vector<float>{};
      for (const auto& w : ws) st->choice[w.name] = {Rounding::Imatrix, !s.empty()};
      if (!s.empty()) st->norm_scales[norm] = std::move(s);
    } else {  // auto: fit on even chunks, score on odd ones
      double plain_total = 0;
      std::vector<Choice> plain(ws.size());
      for (size_t i = 0; i < ws.size(); ++i) {
        double best = std::numeric_limits<double>::infinity();
        for (Rounding r : {Rounding::Rtn, Rounding::Imatrix, Rounding::Gptq}) {
          const double e = candidate_error(ws[i], {r, false}, h.fit.data(), h.imp_fit.data(), nullptr, h.eval.data());
          if (e < best) best = e, plain[i] = {r, false};
        }
        plain_total += best;
      }
      std::vector<Choice> pick = plain;
      if (foldable) {
        double fit_err = 0;
        std::vector<float> s =
            search_scales(ws, in, ridge_hessian(h.fit.data(), in.width).data(), h.imp_fit.data(), &fit_err);
        if (!s.empty()) {
          double scaled_total = 0;
          std::vector<Choice> scaled(ws.size());
          for (size_t i = 0; i < ws.size(); ++i) {
            double best = std::numeric_limits<double>::infinity();
            for (Rounding r : {Rounding::Imatrix, Rounding::Gptq}) {
              const double e = candidate_error(ws[i], {r, true}, h.fit.data(), h.imp_fit.data(), s.data(), h.eval.data());
              if (e < best) best = e, scaled[i] = {r, true};
            }
            scaled_total += best;
          }
          if (scaled_total < plain_total) {
            pick = scaled;
            st->norm_scales[norm] = std::move(s);
          }
        }
      }
      for (size_t i = 0; i < ws.size(); ++i) st->choice[ws[i].name] = pick[i];
    }
    if (auto it = st->norm_scales.find(norm); it != st->norm_scales.end())
      for (const auto& w : ws) st->weight_scales[w.name] = &it->second;
    for (const auto& w : ws) st->imp_all[w.name] = h.imp_all;
    if (log) {
      std::string line = fmt::format("{} layer {}:", method_name(m), in.layer);
      for (const auto& w : ws) line += " " + w.name + "=" + choice_name(st->choice[w.name]);
      log(line);
    }
  }

  setup->awq_scales = st->norm_scales;
  std::vector<std::string> record;
  for (const auto& [name, c] : st->choice) {
    setup->tensor_methods[name] = choice_name(c);
    record.push_back(name + "=" + choice_name(c));
  }
  qo.extra_metadata.emplace_back("edgeq.quantize.tensor_methods", GgufValue::string_array(record));

  State* s = st.get();
  qo.tensor_hook = [s](quant::TensorHookArgs& a) -> quant::HookResult {
    if (auto it = s->norm_scales.find(a.name); it != s->norm_scales.end()) {
      const auto& sc = it->second;
      if (a.n_per_row * a.nrows != static_cast<int64_t>(sc.size())) fail("awq: {} does not match its scales", a.name);
      for (size_t j = 0; j < sc.size(); ++j) a.values[j] /= sc[j];
      return quant::HookResult::Modified;
    }
    auto ci = s->choice.find(a.name);
    if (ci == s->choice.end() || !a.quantize) return quant::HookResult::Untouched;
    const Choice c = ci->second;
    const InputStats* in = s->stats->find(a.name);
    const std::vector<float>& imp = s->imp_all.at(a.name);
    const float* sc = nullptr;
    if (auto wi = s->weight_scales.find(a.name); wi != s->weight_scales.end()) sc = wi->second->data();
    if (c.r == Rounding::Gptq || !c.scaled) {
      const std::vector<double> H = c.r == Rounding::Gptq ? in->load_hessian() : std::vector<double>{};
      encode(a.type, a.values, a.nrows, a.n_per_row, c, H.empty() ? nullptr : H.data(), imp.data(), sc, a.dst, nullptr);
      a.importance = c.r == Rounding::Rtn ? nullptr : imp.data();
      return quant::HookResult::Encoded;
    }
    // AWQ with the standard (threaded) encoder: scale the columns, divide the importance.
    for (int64_t r = 0; r < a.nrows; ++r)
      for (int64_t j = 0; j < a.n_per_row; ++j) a.values[r * a.n_per_row + j] *= sc[j];
    s->imp_buf.resize(imp.size());
    for (size_t j = 0; j < imp.size(); ++j) s->imp_buf[j] = imp[j] / (sc[j] * sc[j]);
    a.importance = s->imp_buf.data();
    return quant::HookResult::Modified;
  };
  return setup;
}

quant::TensorHook awq_fold_hook(std::map<std::string, std::vector<float>> norm_scales) {
  // Weight name -> the norm whose scales it takes.
  std::map<std::string, std::string> reader;
  for (const auto& [norm, sc] : norm_scales)
    for (MatmulInput site : kInputs) {
      const char* nn = norm_for(site);
      if (!nn) continue;
      const std::string suffix = std::string(".") + nn + ".weight";
      if (!norm.ends_with(suffix)) continue;
      const std::string prefix = norm.substr(0, norm.size() - suffix.size() + 1);
      for (auto stem : input_tensors(site)) reader[prefix + std::string(stem) + ".weight"] = norm;
    }
  auto scales = std::make_shared<std::map<std::string, std::vector<float>>>(std::move(norm_scales));
  return [scales, reader](quant::TensorHookArgs& a) -> quant::HookResult {
    if (auto it = scales->find(a.name); it != scales->end()) {
      for (size_t j = 0; j < it->second.size(); ++j) a.values[j] /= it->second[j];
      return quant::HookResult::Modified;
    }
    auto r = reader.find(a.name);
    if (r == reader.end()) return quant::HookResult::Untouched;
    const auto& sc = scales->at(r->second);
    if (static_cast<int64_t>(sc.size()) != a.n_per_row) fail("awq: {} does not match its scales", a.name);
    for (int64_t i = 0; i < a.nrows; ++i)
      for (int64_t j = 0; j < a.n_per_row; ++j) a.values[i * a.n_per_row + j] *= sc[j];
    return quant::HookResult::Modified;
  };
}

}  // namespace edgeq::calibrate
