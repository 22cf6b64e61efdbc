#include "edgeq/calibrate/calibrate.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>

#include "edgeq/formats/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/runtime/blas.h"
#include "edgeq/runtime/perplexity.h"

namespace edgeq::calibrate {

using runtime::MatmulInput;

const std::vector<std::string_view>& input_tensors(MatmulInput site) {
  static const std::vector<std::string_view> qkv{"attn_q", "attn_k", "attn_v"}, o{"attn_output"},
      gu{"ffn_gate", "ffn_up"}, d{"ffn_down"};
  switch (site) {
    case MatmulInput::AttnQKV: return qkv;
    case MatmulInput::AttnOut: return o;
    case MatmulInput::FfnGateUp: return gu;
    case MatmulInput::FfnDown: return d;
  }
  return d;
}

std::vector<std::string> InputStats::tensor_names() const {
  std::vector<std::string> r;
  for (auto stem : input_tensors(site)) r.push_back("blk." + std::to_string(layer) + "." + std::string(stem) + ".weight");
  return r;
}

const InputStats* CalibrationStats::find(std::string_view tensor_name) const {
  for (const auto& in : inputs)
    for (const auto& n : in.tensor_names())
      if (n == tensor_name) return &in;
  return nullptr;
}

namespace {

constexpr int kSites = 4;

// llama-imatrix's collector: products over fewer than 16 rows are not counted.
class Collector final : public runtime::ActivationObserver {
 public:
  Collector(CalibrationStats& s, int64_t n_layer, bool hessian) : s_(s), n_layer_(n_layer), hessian_(hessian) {
    s_.inputs.resize(static_cast<size_t>(n_layer * kSites));
    for (int64_t l = 0; l < n_layer; ++l)
      for (int k = 0; k < kSites; ++k) {
        auto& in = s_.inputs[static_cast<size_t>(l * kSites + k)];
        in.layer = l;
        in.site = kInputs[k];
      }
  }
  void observe(int64_t layer, MatmulInput site, const float* x, int64_t n, int64_t width, int64_t ld) override {
    if (n < 16 || layer < 0 || layer >= n_layer_) return;
    auto& in = s_.inputs[static_cast<size_t>(layer * kSites + static_cast<int>(site))];
    if (in.width == 0) {
      in.width = width;
      in.sum_x2.assign(static_cast<size_t>(width), 0.0);
      in.sum_abs.assign(static_cast<size_t>(width), 0.0);
      if (hessian_) {
        in.hessian.assign(static_cast<size_t>(width * width), 0.0);
        in.hessian_odd.assign(static_cast<size_t>(width * width), 0.0);
      }
    } else if (in.width != width) {
      fail("calibration: layer {} input width changed from {} to {}", layer, in.width, width);
    }
    ++in.ncall;
    in.rows += n;
    double* s2 = in.sum_x2.data();
    double* sa = in.sum_abs.data();
    for (int64_t t = 0; t < n; ++t) {
      const float* r = x + t * ld;
      for (int64_t j = 0; j < width; ++j) {
        const double v = r[j];
        s2[j] += v * v;
        sa[j] += std::fabs(v);
      }
    }
    if (hessian_) {
      // XᵀX of this batch in f32 (lower triangle, symmetric rank-k update), accumulated in double.
      tmp_.assign(static_cast<size_t>(width * width), 0.f);
      runtime::blas::api().ssyrk(CblasRowMajor, CblasLower, CblasTrans, static_cast<int>(width), static_cast<int>(n), 1.f, x,
                  static_cast<int>(ld), 0.f, tmp_.data(), static_cast<int>(width));
      for (double* h : {in.hessian.data(), odd_chunk ? in.hessian_odd.data() : nullptr})
        if (h)
          for (int64_t i = 0; i < width; ++i)
            for (int64_t j = 0; j <= i; ++j) h[i * width + j] += tmp_[static_cast<size_t>(i * width + j)];
    }
  }

 private:
  CalibrationStats& s_;
  int64_t n_layer_;
  bool hessian_;
  std::vector<float> tmp_;

 public:
  bool odd_chunk = false;
};

}  // namespace

CalibrationStats calibrate(const runtime::Model& model, const std::vector<int32_t>& tokens, bool add_bos,
                           int32_t bos_id, const CalibrationOptions& opt) {
  const auto& c = model.config();
  const int64_t n_ctx = opt.n_ctx;
  if (n_ctx < 16 || n_ctx > (int64_t(1) << 20)) fail("{}: calibration: context size {} is out of range (>= 16)", model.path(), n_ctx);
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  const int64_t n_chunk = runtime::text_chunks(tokens, n_ctx, c.n_vocab, add_bos, bos_id, opt.max_chunks,
                                               model.path() + ": calibration", "calibration");
  if (n_chunk < 1) fail("calibration: --chunks {} leaves nothing to evaluate", opt.max_chunks);

  CalibrationStats s;
  s.n_ctx = n_ctx;
  s.n_tokens = n_tokens;
  Collector col(s, c.n_layer, opt.hessian);
  runtime::ContextOptions co;
  co.n_ctx = n_ctx;
  co.n_threads = opt.n_threads;
  co.observer = &col;
  runtime::Context ctx(model, co);
  std::vector<int32_t> chunk(static_cast<size_t>(n_ctx));
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t ic = 0; ic < n_chunk; ++ic) {
    runtime::copy_chunk(tokens, ic, n_ctx, add_bos, bos_id, chunk.data());
    ctx.clear();
    col.odd_chunk = ic % 2 == 1;
    // All rows through every layer (llama-imatrix asks for every logit); the output head itself is not needed.
    ctx.eval(chunk.data(), n_ctx, 0, nullptr);
    s.n_chunks = static_cast<int32_t>(ic + 1);
    if (opt.progress) {
      CalibrationProgress p;
      p.chunk = static_cast<int>(ic + 1);
      p.n_chunks = static_cast<int>(n_chunk);
      p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      p.tokens_per_second = p.seconds > 0 ? static_cast<double>((ic + 1) * n_ctx) / p.seconds : 0.0;
      opt.progress(p);
    }
  }
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Complete the symmetric Hessians.
  for (auto& in : s.inputs)
    for (auto* hv : {&in.hessian, &in.hessian_odd})
      if (!hv->empty())
        for (int64_t i = 0; i < in.width; ++i)
          for (int64_t j = i + 1; j < in.width; ++j) (*hv)[i * in.width + j] = (*hv)[j * in.width + i];
  return s;
}

// ---------------------------------------------------------------------------------------------------------

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string joined(const std::vector<std::string>& v) {
  std::string r;
  for (const auto& x : v) r += (r.empty() ? "" : ",") + x;
  return r;
}

void write_legacy(const CalibrationStats& s, const std::string& path) {
  AtomicOutputFile out(path);
  auto i32 = [&](int32_t v) { out.write(&v, 4); };
  int32_t n = 0;
  for (const auto& in : s.inputs)
    if (in.ncall > 0) n += static_cast<int32_t>(input_tensors(in.site).size());
  i32(n);
  std::vector<float> vals;
  int32_t last_call = 0;
  for (const auto& in : s.inputs) {
    if (in.ncall == 0) continue;
    last_call = std::max(last_call, in.ncall);
    // llama-imatrix stores (sum / count) · ncall per column.
    vals.resize(static_cast<size_t>(in.width));
    for (int64_t j = 0; j < in.width; ++j)
      vals[j] = static_cast<float>(in.sum_x2[j] / static_cast<double>(in.rows) * static_cast<double>(in.ncall));
    for (const auto& name : in.tensor_names()) {
      i32(static_cast<int32_t>(name.size()));
      out.write(name.data(), name.size());
      i32(in.ncall);
      i32(static_cast<int32_t>(in.width));
      out.write(vals.data(), vals.size() * sizeof(float));
    }
  }
  i32(last_call);
  const std::string ds = joined(s.datasets);
  i32(static_cast<int32_t>(ds.size()));
  out.write(ds.data(), ds.size());
  out.commit();
}

void write_gguf(const CalibrationStats& s, const std::string& path) {
  GgufWriter w(path);
  w.set("general.type", GgufValue("imatrix"));
  w.set("imatrix.datasets", GgufValue::string_array(s.datasets));
  w.set("imatrix.chunk_count", GgufValue(static_cast<uint32_t>(s.n_chunks)));
  w.set("imatrix.chunk_size", GgufValue(static_cast<uint32_t>(s.n_ctx)));
  struct Item {
    std::string name;
    std::vector<uint64_t> dims;
    std::function<void(std::vector<float>&)> fill;
  };
  std::vector<Item> items;
  for (const auto& in : s.inputs) {
    if (in.ncall == 0) continue;
    const uint64_t W = static_cast<uint64_t>(in.width);
    const auto names = in.tensor_names();
    for (const auto& name : names) {
      items.push_back({name + ".in_sum2", {W, 1}, [&in](std::vector<float>& v) {
                         v.resize(in.sum_x2.size());
                         for (size_t j = 0; j < v.size(); ++j) v[j] = static_cast<float>(in.sum_x2[j]);
                       }});
      items.push_back({name + ".counts", {1, 1}, [&in](std::vector<float>& v) { v.assign(1, static_cast<float>(in.rows)); }});
      items.push_back({name + ".in_abs", {W, 1}, [&in](std::vector<float>& v) {
                         v.resize(in.sum_abs.size());
                         for (size_t j = 0; j < v.size(); ++j) v[j] = static_cast<float>(in.sum_abs[j]);
                       }});
    }
    for (const auto& [suffix, hv] : {std::pair<const char*, const std::vector<double>*>{".hessian", &in.hessian},
                                     {".hessian_odd", &in.hessian_odd}})
      if (!hv->empty())
        items.push_back({names.front() + suffix, {W, W}, [hv](std::vector<float>& v) {
                           v.resize(hv->size());
                           for (size_t j = 0; j < v.size(); ++j) v[j] = static_cast<float>((*hv)[j]);
                         }});
  }
  for (const auto& it : items) w.add_tensor(it.name, it.dims, GgmlType::F32);
  std::vector<float> buf;
  for (const auto& it : items) {
    it.fill(buf);
    w.write_tensor_data(buf.data(), buf.size() * sizeof(float));
  }
  w.finish();
}

}  // namespace

void write_imatrix(const CalibrationStats& stats, const std::string& path) {
  if (ends_with(path, ".gguf"))
    write_gguf(stats, path);
  else
    write_legacy(stats, path);
}

CalibrationStats read_calibration_stats(const std::string& path) {
  const GgufFile f = GgufFile::open(path);
  if (f.get_string("general.type").value_or("") != "imatrix") fail("{}: not an imatrix GGUF (general.type is not imatrix)", path);
  CalibrationStats s;
  s.n_chunks = static_cast<int32_t>(f.get_int("imatrix.chunk_count").value_or(0));
  s.n_ctx = f.get_int("imatrix.chunk_size").value_or(0);
  if (const GgufValue* d = f.find("imatrix.datasets"); d && d->type() == GgufType::ARRAY)
    for (const auto& it : d->as_array().items) s.datasets.push_back(it.as_string());
  auto load = [&](const std::string& name, uint64_t n) -> std::vector<double> {
    const GgufTensorInfo* t = f.find_tensor(name);
    if (!t) return {};
    if (t->type != GgmlType::F32 || t->n_elements() != n)
      fail("{}: tensor {} must be F32 with {} elements", path, name, n);
    const TensorView v = f.view(*t);
    std::vector<double> r(n);
    for (uint64_t i = 0; i < n; ++i) {
      float x;
      std::memcpy(&x, v.data + 4 * i, 4);
      if (!std::isfinite(x)) fail("{}: tensor {}: non-finite value at {}", path, name, i);
      r[i] = x;
    }
    return r;
  };
  // Layers and sites from the tensor names: "blk.N.<stem>.weight.in_sum2" for the first stem of each input.
  std::map<std::pair<int64_t, int>, InputStats> found;
  for (const auto& t : f.tensors()) {
    if (!ends_with(t.name, ".weight.in_sum2") || t.name.rfind("blk.", 0) != 0) continue;
    const size_t dot = t.name.find('.', 4);
    if (dot == std::string::npos) continue;
    int64_t layer = -1;
    try {
      layer = std::stoll(t.name.substr(4, dot - 4));
    } catch (...) {
      continue;
    }
    const std::string stem = t.name.substr(dot + 1, t.name.size() - dot - 1 - std::string_view(".weight.in_sum2").size());
    for (int k = 0; k < kSites; ++k) {
      if (input_tensors(kInputs[k]).front() != stem) continue;
      InputStats in;
      in.layer = layer;
      in.site = kInputs[k];
      in.width = static_cast<int64_t>(t.dims[0]);
      const std::string base = t.name.substr(0, t.name.size() - std::string_view(".in_sum2").size());
      const uint64_t W = static_cast<uint64_t>(in.width);
      in.sum_x2 = load(base + ".in_sum2", W);
      const auto cnt = load(base + ".counts", 1);
      if (cnt.empty()) fail("{}: {} has no counts", path, base);
      in.rows = static_cast<int64_t>(cnt[0]);
      in.ncall = s.n_chunks;
      in.sum_abs = load(base + ".in_abs", W);
      in.hessian = load(base + ".hessian", W * W);
      in.hessian_odd = load(base + ".hessian_odd", W * W);
      found[{layer, k}] = std::move(in);
    }
  }
  for (auto& [k, in] : found) s.inputs.push_back(std::move(in));
  return s;
}

}  // namespace edgeq::calibrate
