#include "edgeq/calibrate/calibrate.h"

#include <fmt/ranges.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "edgeq/arch/arch.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/base/thread_pool.h"
#include "edgeq/runtime/blas.h"
#include "edgeq/runtime/perplexity.h"

namespace edgeq::calibrate {

using runtime::MatmulInput;

const std::vector<std::string_view>& input_tensors(MatmulInput site) {
  using arch::Role;
  auto stems = [](std::initializer_list<Role> roles) {
    std::vector<std::string_view> v;
    for (Role r : roles) v.push_back(arch::gguf_stem(r));
    return v;
  };
  static const std::vector<std::string_view> qkv = stems({Role::AttnQ, Role::AttnK, Role::AttnV}),
                                             o = stems({Role::AttnOut}), gu = stems({Role::FfnGate, Role::FfnUp}),
                                             d = stems({Role::FfnDown});
  switch (site) {
    case MatmulInput::AttnQKV: return qkv;
    case MatmulInput::AttnOut: return o;
    case MatmulInput::FfnGateUp: return gu;
    case MatmulInput::FfnDown: return d;
  }
  return d;
}

std::vector<std::string> InputStats::tensor_names() const {
  if (!names.empty()) return names;
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

bool InputStats::has_hessian() const {
  if (n_expert > 0) return false;
  if (!hessian.empty()) return true;
  return hessian_file && hessian_file->find_tensor(tensor_names().front() + ".hessian") != nullptr;
}

std::vector<double> InputStats::load_hessian(bool odd) const {
  const std::vector<double>& held = odd ? hessian_odd : hessian;
  if (!held.empty() || !hessian_file) return held;
  const std::string name = tensor_names().front() + (odd ? ".hessian_odd" : ".hessian");
  const GgufTensorInfo* t = hessian_file->find_tensor(name);
  if (!t) return {};
  const uint64_t n = static_cast<uint64_t>(width) * static_cast<uint64_t>(width);
  const TensorView v = hessian_file->view(*t);
  std::vector<double> r(n);
  for (uint64_t i = 0; i < n; ++i) {
    float x;
    std::memcpy(&x, v.data + 4 * i, 4);
    if (!std::isfinite(x)) fail("{}: tensor {}: non-finite value at {}", hessian_file->path(), name, i);
    r[i] = x;
  }
  // Release the pages just read from the (read-only, file-backed) mapping: they stay in the page cache, but not
  // in this process's resident set, which would otherwise grow to the whole statistics file.
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = (reinterpret_cast<uintptr_t>(v.data) + page - 1) & ~(page - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(v.data) + 4 * n) & ~(page - 1);
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
  return r;
}

namespace {

constexpr int kSites = 4;

// Floats in an unlinked temporary file's shared mapping (the chunks' hidden states between layers): the
// kernel can write the pages out under memory pressure instead of the process holding n_tokens × n_embd floats.
class FileScratch {
 public:
  explicit FileScratch(size_t n) : bytes_(std::max<size_t>(n, 1) * sizeof(float)) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "edgeq-calibrate-XXXXXX").string();
    const int fd = ::mkstemp(tmpl.data());
    if (fd < 0) fail("{}: cannot create a temporary file: {}", tmpl, std::strerror(errno));
    ::unlink(tmpl.c_str());
    if (::ftruncate(fd, static_cast<off_t>(bytes_)) != 0) {
      const int e = errno;
      ::close(fd);
      fail("{}: cannot size the temporary file to {} bytes: {}", tmpl, bytes_, std::strerror(e));
    }
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) fail("{}: cannot map {} bytes: {}", tmpl, bytes_, std::strerror(errno));
    data_ = static_cast<float*>(p);
  }
  ~FileScratch() { ::munmap(data_, bytes_); }
  FileScratch(const FileScratch&) = delete;
  FileScratch& operator=(const FileScratch&) = delete;
  float* data() { return data_; }

 private:
  size_t bytes_;
  float* data_ = nullptr;
};

// Σx² and Σ|x| per column of n rows.
void add_rows(const float* x, int64_t n, int64_t width, int64_t ld, double* s2, double* sa) {
  for (int64_t t = 0; t < n; ++t) {
    const float* r = x + t * ld;
    for (int64_t j = 0; j < width; ++j) {
      const double v = r[j];
      s2[j] += v * v;
      sa[j] += std::fabs(v);
    }
  }
}

// llama-imatrix's collector: products over fewer than 16 rows are not counted. Hessians are accumulated
// per chunk parity (hessian: even chunks, hessian_odd: odd ones) and summed when the layer is complete.
class Collector final : public runtime::ActivationObserver {
 public:
  Collector(CalibrationStats& s, const runtime::ModelConfig& c, bool hessian, int n_threads)
      : s_(s), n_layer_(c.n_layer), hessian_(hessian), pool_(n_threads), tmp_(static_cast<size_t>(pool_.size())) {
    // Each layer's inputs. Dense: the 4 sites under their own weights' names. MoE: AttnQKV, AttnOut, the router
    // (the FfnGateUp rows feed ffn_gate_inp) and the experts' gate/up and down inputs.
    using arch::Role;
    struct Slot {
      MatmulInput site;
      std::vector<Role> roles;  // empty: the site's own weights
      bool experts;
    };
    std::vector<Slot> slots;
    if (c.n_expert > 0)
      slots = {{MatmulInput::AttnQKV, {}, false},
               {MatmulInput::AttnOut, {}, false},
               {MatmulInput::FfnGateUp, {Role::FfnGateInp}, false},
               {MatmulInput::FfnGateUp, {Role::FfnGateExps, Role::FfnUpExps}, true},
               {MatmulInput::FfnDown, {Role::FfnDownExps}, true}};
    else
      for (auto site : kInputs) slots.push_back({site, {}, false});
    per_layer_ = static_cast<int>(slots.size());
    s_.inputs_per_layer = slots.size();
    s_.inputs.resize(static_cast<size_t>(n_layer_ * per_layer_));
    const int64_t widths[kSites] = {c.n_embd, c.n_head * c.head_dim_v, c.n_embd, c.n_ff};
    for (int k = 0; k < per_layer_; ++k) {
      const int site = static_cast<int>(slots[k].site);
      (slots[k].experts ? expert_[site - 2] : dense_[site]) = k;
    }
    for (int64_t l = 0; l < n_layer_; ++l)
      for (int k = 0; k < per_layer_; ++k) {
        auto& in = s_.inputs[static_cast<size_t>(l * per_layer_ + k)];
        in.layer = l;
        in.site = slots[k].site;
        in.width = widths[static_cast<int>(in.site)];
        for (Role r : slots[k].roles)
          in.names.push_back("blk." + std::to_string(l) + "." + std::string(arch::gguf_stem(r)) + ".weight");
        if (slots[k].experts) {
          in.n_expert = c.n_expert;
          in.expert_rows.assign(static_cast<size_t>(c.n_expert), 0);
        }
        const size_t n = static_cast<size_t>(in.width * std::max<int64_t>(1, in.n_expert));
        in.sum_x2.assign(n, 0.0);
        in.sum_abs.assign(n, 0.0);
      }
  }
  // An MoE layer's expert rows: llama-imatrix's MUL_MAT_ID collection (every batch, each expert's rows on their
  // own, one call counted per evaluation).
  void observe_expert(int64_t layer, MatmulInput site, int64_t expert, int64_t n_expert, const float* x, int64_t n,
                      int64_t width, int64_t ld) override {
    const int k = static_cast<int>(site) < 2 ? -1 : expert_[static_cast<int>(site) - 2];
    if (k < 0 || layer < 0 || layer >= n_layer_) return;
    auto& in = s_.inputs[static_cast<size_t>(layer * per_layer_ + k)];
    if (in.width != width || in.n_expert != n_expert || expert < 0 || expert >= n_expert)
      fail("calibration: layer {} expert input {}x{} differs from the model's {}x{}", layer, width, n_expert, in.width, in.n_expert);
    if (expert == 0) ++in.ncall;
    in.rows += n;
    in.expert_rows[static_cast<size_t>(expert)] += n;
    add_rows(x, n, width, ld, in.sum_x2.data() + expert * width, in.sum_abs.data() + expert * width);
  }
  void observe(int64_t layer, MatmulInput site, const float* x, int64_t n, int64_t width, int64_t ld) override {
    const int k = dense_[static_cast<int>(site)];
    if (n < 16 || layer < 0 || layer >= n_layer_ || k < 0) return;
    auto& in = s_.inputs[static_cast<size_t>(layer * per_layer_ + k)];
    if (in.width != width) fail("calibration: layer {} input width {} differs from the model's {}", layer, width, in.width);
    ++in.ncall;
    in.rows += n;
    add_rows(x, n, width, ld, in.sum_x2.data(), in.sum_abs.data());
    if (hessian_) {
      const size_t W2 = static_cast<size_t>(width * width);
      if (in.hessian.empty()) {
        in.hessian.assign(W2, 0.0);
        in.hessian_odd.assign(W2, 0.0);
      }
      // XᵀX of this batch in f32, accumulated in double: the lower triangle in panels of kPanel rows
      // (X[:, i0:i1]ᵀ X[:, 0:i1]), one panel per task on the calibration's threads.
      constexpr int64_t kPanel = 64;
      double* h = odd_chunk ? in.hessian_odd.data() : in.hessian.data();
      pool_.run((width + kPanel - 1) / kPanel, [&](int64_t p, int worker) {
        const int64_t i0 = p * kPanel, i1 = std::min(width, i0 + kPanel);
        auto& t = tmp_[static_cast<size_t>(worker)];
        t.resize(static_cast<size_t>(kPanel * width));
        runtime::blas::api().sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(i1 - i0), static_cast<int>(i1),
                                   static_cast<int>(n), 1.f, x + i0, static_cast<int>(ld), x, static_cast<int>(ld), 0.f,
                                   t.data(), static_cast<int>(i1));
        for (int64_t i = i0; i < i1; ++i) {
          const float* src = t.data() + (i - i0) * i1;
          double* dst = h + i * width;
          for (int64_t j = 0; j <= i; ++j) dst[j] += src[j];
        }
      });
    }
  }
  // The layer's Hessians: all chunks (even + odd) and both completed to symmetric matrices.
  void finish_layer(int64_t layer) {
    for (int k = 0; k < per_layer_; ++k) {
      auto& in = s_.inputs[static_cast<size_t>(layer * per_layer_ + k)];
      if (in.hessian.empty()) continue;
      const int64_t W = in.width;
      for (size_t i = 0; i < in.hessian.size(); ++i) in.hessian[i] += in.hessian_odd[i];
      for (auto* hv : {&in.hessian, &in.hessian_odd})
        for (int64_t i = 0; i < W; ++i)
          for (int64_t j = i + 1; j < W; ++j) (*hv)[i * W + j] = (*hv)[j * W + i];
    }
  }
  void drop_layer(int64_t layer) {
    for (int k = 0; k < per_layer_; ++k) {
      auto& in = s_.inputs[static_cast<size_t>(layer * per_layer_ + k)];
      std::vector<double>().swap(in.hessian);
      std::vector<double>().swap(in.hessian_odd);
    }
  }

  bool odd_chunk = false;

 private:
  CalibrationStats& s_;
  int64_t n_layer_;
  int per_layer_ = kSites;
  int dense_[kSites] = {-1, -1, -1, -1};  // each dense site's input in a layer (-1: none)
  int expert_[2] = {-1, -1};              // the experts' FfnGateUp and FfnDown inputs (-1: none)
  bool hessian_;
  ThreadPool pool_;  // idle while the forward pass runs: the two never overlap
  std::vector<std::vector<float>> tmp_;  // per worker
};

}  // namespace

CalibrationStats calibrate(const runtime::Model& model, const std::vector<int32_t>& tokens, bool add_bos,
                           int32_t bos_id, const CalibrationOptions& opt) {
  const auto& c = model.config();
  // The statistics are kept per matmul input under the separate q/k/v and gate/up weights' names, experts in
  // llama.cpp's per-expert imatrix layout; fused weights (phi3) are not counted yet: refused before any work.
  if (c.traits && (c.traits->attn_fused_qkv || c.traits->ffn_fused_gate_up))
    fail("{}: calibration of '{}' is not supported yet (fused attn_qkv / ffn_up); quantize it without "
         "--imatrix/--method, or with llama-imatrix's file", model.path(), c.arch);
  const int64_t n_ctx = opt.n_ctx;
  if (n_ctx < 16 || n_ctx > (int64_t(1) << 20)) fail("{}: calibration: context size {} is out of range (>= 16)", model.path(), n_ctx);
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  const int64_t n_chunk = runtime::text_chunks(tokens, n_ctx, c.n_vocab, add_bos, bos_id, opt.max_chunks,
                                               model.path() + ": calibration",
                                               opt.datasets.empty() ? std::string("calibration")
                                                                    : fmt::format("{}", fmt::join(opt.datasets, ", ")));
  if (n_chunk < 1) fail("calibration: --chunks {} leaves nothing to evaluate", opt.max_chunks);

  CalibrationStats s;
  s.n_ctx = n_ctx;
  s.n_tokens = n_tokens;
  s.n_chunks = static_cast<int32_t>(n_chunk);
  s.datasets = opt.datasets;
  Collector col(s, c, opt.hessian, opt.n_threads);
  runtime::ContextOptions co;
  co.n_ctx = n_ctx;
  co.n_threads = opt.n_threads;
  co.observer = &col;
  runtime::Context ctx(model, co);
  const size_t E = static_cast<size_t>(c.n_embd), chunk_floats = static_cast<size_t>(n_ctx) * E;
  FileScratch hidden(static_cast<size_t>(n_chunk) * chunk_floats);
  std::vector<int32_t> chunk(static_cast<size_t>(n_ctx));
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t ic = 0; ic < n_chunk; ++ic) {
    runtime::copy_chunk(tokens, ic, n_ctx, add_bos, bos_id, chunk.data());
    ctx.embed(chunk.data(), n_ctx, hidden.data() + static_cast<size_t>(ic) * chunk_floats);
  }
  // All rows through every layer (llama-imatrix asks for every logit); the output head itself is not needed.
  const double steps = static_cast<double>(c.n_layer * n_chunk);
  for (int64_t il = 0; il < c.n_layer; ++il) {
    for (int64_t ic = 0; ic < n_chunk; ++ic) {
      col.odd_chunk = ic % 2 == 1;
      ctx.eval_layer(il, hidden.data() + static_cast<size_t>(ic) * chunk_floats, n_ctx, 0);
      if (opt.progress) {
        CalibrationProgress p;
        p.chunk = static_cast<int>(ic + 1);
        p.n_chunks = static_cast<int>(n_chunk);
        p.layer = static_cast<int>(il);
        p.n_layers = static_cast<int>(c.n_layer);
        p.done = static_cast<double>(il * n_chunk + ic + 1) / steps;
        p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        p.tokens_per_second = p.seconds > 0 ? p.done * static_cast<double>(n_chunk * n_ctx) / p.seconds : 0.0;
        opt.progress(p);
      }
    }
    col.finish_layer(il);
    if (opt.on_layer) {
      opt.on_layer(s, static_cast<size_t>(il) * s.inputs_per_layer);
      col.drop_layer(il);
    }
  }
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

CalibrationStats calibrate_to_file(const runtime::Model& model, const std::vector<int32_t>& tokens, bool add_bos,
                                   int32_t bos_id, CalibrationOptions opt, const std::string& path) {
  std::unique_ptr<StatsFileWriter> w;
  opt.on_layer = [&](const CalibrationStats& s, size_t first) {
    if (!w) w = std::make_unique<StatsFileWriter>(path, s, opt.hessian);
    for (size_t i = first; i < first + s.inputs_per_layer; ++i) w->write(s.inputs[i]);
  };
  CalibrationStats s = calibrate(model, tokens, add_bos, bos_id, opt);
  if (w) w->finish();
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

// Whether llama-imatrix would store the input: observed, and (experts) every expert routed some row; it skips an
// entry with partial data.
bool stored(const InputStats& in) {
  if (in.ncall == 0) return false;
  for (int64_t r : in.expert_rows)
    if (r == 0) return false;
  return true;
}

void write_legacy(const CalibrationStats& s, const std::string& path) {
  AtomicOutputFile out(path);
  auto i32 = [&](int32_t v) { out.write(&v, 4); };
  int32_t n = 0;
  for (const auto& in : s.inputs)
    if (stored(in)) n += static_cast<int32_t>(in.tensor_names().size());
  i32(n);
  std::vector<float> vals;
  int32_t last_call = 0;
  for (const auto& in : s.inputs) {
    if (!stored(in)) continue;
    last_call = std::max(last_call, in.ncall);
    // llama-imatrix stores (sum / count) · ncall per column (experts: per expert's column, expert after expert).
    const int64_t ne = std::max<int64_t>(1, in.n_expert);
    vals.resize(static_cast<size_t>(in.width * ne));
    for (int64_t e = 0; e < ne; ++e) {
      const double rows = static_cast<double>(in.n_expert > 0 ? in.expert_rows[static_cast<size_t>(e)] : in.rows);
      for (int64_t j = 0; j < in.width; ++j)
        vals[e * in.width + j] = static_cast<float>(in.sum_x2[e * in.width + j] / rows * static_cast<double>(in.ncall));
    }
    for (const auto& name : in.tensor_names()) {
      i32(static_cast<int32_t>(name.size()));
      out.write(name.data(), name.size());
      i32(in.ncall);
      i32(static_cast<int32_t>(vals.size()));
      out.write(vals.data(), vals.size() * sizeof(float));
    }
  }
  i32(last_call);
  const std::string ds = joined(s.datasets);
  i32(static_cast<int32_t>(ds.size()));
  out.write(ds.data(), ds.size());
  out.commit();
}

}  // namespace

StatsFileWriter::StatsFileWriter(const std::string& path, const CalibrationStats& s, bool hessians)
    : w_(path), hessians_(hessians), n_inputs_(s.inputs.size()) {
  w_.set("general.type", GgufValue("imatrix"));
  w_.set("imatrix.datasets", GgufValue::string_array(s.datasets));
  w_.set("imatrix.chunk_count", GgufValue(static_cast<uint32_t>(s.n_chunks)));
  w_.set("imatrix.chunk_size", GgufValue(static_cast<uint32_t>(s.n_ctx)));
  for (const auto& in : s.inputs) {
    const uint64_t W = static_cast<uint64_t>(in.width), NE = static_cast<uint64_t>(std::max<int64_t>(1, in.n_expert));
    const auto names = in.tensor_names();
    for (const auto& name : names) {  // llama.cpp's layout: experts as the second dimension
      w_.add_tensor(name + ".in_sum2", {W, NE}, GgmlType::F32);
      w_.add_tensor(name + ".counts", {1, NE}, GgmlType::F32);
      w_.add_tensor(name + ".in_abs", {W, NE}, GgmlType::F32);
    }
    if (hessians_ && in.n_expert == 0)
      for (const char* suffix : {".hessian", ".hessian_odd"}) w_.add_tensor(names.front() + suffix, {W, W}, GgmlType::F32);
  }
}

void StatsFileWriter::write(const InputStats& in) {
  if (next_ >= n_inputs_) fail("{}: more inputs written than declared", in.tensor_names().front());
  if (in.ncall == 0) fail("calibration: layer {} input {} was never observed", in.layer, in.tensor_names().front());
  ++next_;
  // Converted to f32 in pieces: no second copy of a Hessian.
  auto put = [&](const std::vector<double>& v) {
    constexpr size_t kPiece = size_t(1) << 16;
    for (size_t i0 = 0; i0 < v.size(); i0 += kPiece) {
      const size_t n = std::min(kPiece, v.size() - i0);
      buf_.resize(n);
      for (size_t j = 0; j < n; ++j) buf_[j] = static_cast<float>(v[i0 + j]);
      w_.write_tensor_data(buf_.data(), n * sizeof(float));
    }
  };
  std::vector<double> counts{static_cast<double>(in.rows)};
  if (in.n_expert > 0) counts.assign(in.expert_rows.begin(), in.expert_rows.end());
  for (size_t k = 0; k < in.tensor_names().size(); ++k) {
    put(in.sum_x2);
    put(counts);
    put(in.sum_abs);
  }
  if (hessians_ && in.n_expert == 0) {
    const size_t W2 = static_cast<size_t>(in.width * in.width);
    for (bool odd : {false, true}) {
      const std::vector<double>& held = odd ? in.hessian_odd : in.hessian;
      const std::vector<double> h = held.empty() ? in.load_hessian(odd) : std::vector<double>{};
      const std::vector<double>& use = held.empty() ? h : held;
      if (use.size() != W2) fail("calibration: layer {} input {} has no Hessian", in.layer, in.tensor_names().front());
      put(use);
    }
  }
}

void StatsFileWriter::finish() {
  if (next_ != n_inputs_) fail("calibration statistics: {} of {} inputs written", next_, n_inputs_);
  w_.finish();
}

void write_imatrix(const CalibrationStats& stats, const std::string& path) {
  if (!ends_with(path, ".gguf")) return write_legacy(stats, path);
  bool hessians = !stats.inputs.empty();
  for (const auto& in : stats.inputs) hessians = hessians && (in.n_expert > 0 || in.has_hessian());
  CalibrationStats observed = stats;  // the inputs seen (llama.cpp's writer leaves out the others)
  observed.inputs.clear();
  for (const auto& in : stats.inputs)
    if (in.ncall > 0) observed.inputs.push_back(in);
  StatsFileWriter w(path, observed, hessians);
  for (const auto& in : observed.inputs) w.write(in);
  w.finish();
}

CalibrationStats read_calibration_stats(const std::string& path) {
  const auto file = std::make_shared<const GgufFile>(GgufFile::open(path));
  const GgufFile& f = *file;
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
  // Layers and sites from the tensor names: "blk.N.<stem>.weight.in_sum2" for the first stem of each input; an MoE
  // layer's router (ffn_gate_inp) and experts (ffn_gate_exps + ffn_up_exps, ffn_down_exps: a column per expert).
  struct Kind {
    std::string_view stem;
    MatmulInput site;
    std::vector<arch::Role> roles;  // empty: the site's own weights
    bool experts;
    int order;  // within a layer
  };
  std::vector<Kind> kinds;
  for (int k = 0; k < kSites; ++k) kinds.push_back({input_tensors(kInputs[k]).front(), kInputs[k], {}, false, k});
  kinds.push_back({arch::gguf_stem(arch::Role::FfnGateInp), MatmulInput::FfnGateUp, {arch::Role::FfnGateInp}, false, 2});
  kinds.push_back({arch::gguf_stem(arch::Role::FfnGateExps), MatmulInput::FfnGateUp,
                   {arch::Role::FfnGateExps, arch::Role::FfnUpExps}, true, 4});
  kinds.push_back({arch::gguf_stem(arch::Role::FfnDownExps), MatmulInput::FfnDown, {arch::Role::FfnDownExps}, true, 5});
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
    for (const Kind& kind : kinds) {
      if (kind.stem != stem) continue;
      InputStats in;
      in.layer = layer;
      in.site = kind.site;
      in.width = static_cast<int64_t>(t.dims[0]);
      for (arch::Role r : kind.roles)
        in.names.push_back("blk." + std::to_string(layer) + "." + std::string(arch::gguf_stem(r)) + ".weight");
      const uint64_t NE = t.dims.size() > 1 ? t.dims[1] : 1;
      if (kind.experts ? NE < 1 || NE > 4096 : NE != 1) fail("{}: tensor {} has {} columns", path, t.name, NE);
      const std::string base = t.name.substr(0, t.name.size() - std::string_view(".in_sum2").size());
      const uint64_t W = static_cast<uint64_t>(in.width);
      in.sum_x2 = load(base + ".in_sum2", W * NE);
      const auto cnt = load(base + ".counts", NE);
      if (cnt.empty()) fail("{}: {} has no counts", path, base);
      for (double c : cnt)
        if (c < 0 || c > 1e15) fail("{}: {}.counts: {} rows", path, base, c);
      if (kind.experts) {
        in.n_expert = static_cast<int64_t>(NE);
        for (double c : cnt) in.expert_rows.push_back(static_cast<int64_t>(c)), in.rows += static_cast<int64_t>(c);
      } else {
        in.rows = static_cast<int64_t>(cnt[0]);
      }
      in.ncall = s.n_chunks;
      in.sum_abs = load(base + ".in_abs", W * NE);
      for (const char* suffix : {".hessian", ".hessian_odd"})  // shapes now, values when loaded
        if (const GgufTensorInfo* h = f.find_tensor(base + suffix); h && (h->type != GgmlType::F32 || h->n_elements() != W * W))
          fail("{}: tensor {}{} must be F32 with {} elements", path, base, suffix, W * W);
      if (!kind.experts && f.find_tensor(base + ".hessian")) in.hessian_file = file;
      found[{layer, kind.order}] = std::move(in);
    }
  }
  for (auto& [k, in] : found) s.inputs.push_back(std::move(in));
  s.inputs_per_layer = 0;
  for (const auto& in : s.inputs) s.inputs_per_layer += in.layer == s.inputs.front().layer;
  return s;
}

}  // namespace edgeq::calibrate
