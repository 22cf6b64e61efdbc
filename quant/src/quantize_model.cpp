// The quantization pipeline (see quantize.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <future>
#include <numeric>
#include <set>

#include "edgeq/base/error.h"
#include "edgeq/base/finite.h"
#include "edgeq/base/half.h"
#include "edgeq/formats/palette_layout.h"
#include "edgeq/base/thread_count.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/imatrix.h"
#include "edgeq/quant/palette.h"
#include "edgeq/quant/quantize.h"

namespace edgeq::quant {

namespace {

using Clock = std::chrono::steady_clock;

bool is_float_type(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

bool is_quantized(GgmlType t) {
  auto* i = ggml_type_info(t);
  return i && i->quantized;
}

// Whether the tensor's encoder takes an importance vector (quantized blocks and palettes; not float types).
bool takes_importance(const TypeDecision& d) { return d.quantize && (is_quantized(d.type) || d.palette_bits > 0); }

std::string type_label(const TypeDecision& d) {
  return d.palette_bits > 0 ? fmt::format("PAL{}", d.palette_bits) : std::string(ggml_type_name(d.type));
}

uint64_t checked_elements(const std::string& src, const std::string& name, const std::vector<uint64_t>& dims) {
  uint64_t n = 1;
  for (auto d : dims)
    if (mul_overflow_u64(n, d, &n)) fail("{}: tensor {}: element count overflows", src, name);
  return n;
}

uint64_t tensor_bytes(const std::string& src, const std::string& name, GgmlType t, const std::vector<uint64_t>& dims) {
  const uint64_t ne0 = dims.empty() ? 1 : dims[0];
  auto row = ggml_row_size(t, ne0);
  if (!row) fail("{}: tensor {}: row length {} does not fit type {}", src, name, ne0, ggml_type_name(t));
  uint64_t rows = 1, out = 0;
  for (size_t i = 1; i < dims.size(); ++i)
    if (mul_overflow_u64(rows, dims[i], &rows)) fail("{}: tensor {}: size overflows", src, name);
  if (mul_overflow_u64(*row, rows, &out)) fail("{}: tensor {}: size overflows", src, name);
  return out;
}

// What the pipeline knows of one tensor's rows while it loads, checks and encodes them.
struct RowJob {
  const std::string& path;  // the source, for messages
  const SourceTensor& t;
  GgmlType type;             // the output type
  uint64_t ne0 = 0, ne1 = 0;  // row length; rows per slice (experts: one importance vector per slice)
  uint64_t row_bytes = 0;     // of an output row
  const std::vector<float>* per_slice = nullptr;  // the importance: ne0 values per slice, or null
  const std::string& f16_hint;                    // what to do when a value exceeds F16's range
};

// Rows [r0, r0 + nr) of j.t, x and y pointing at row r0's values and output bytes: each work item loads its
// rows into x (load), checks them (NaN/Inf anywhere; beyond F16's range when the output is F16, where they
// would become Inf) and encodes them into y (when y is given). Work items are fixed row ranges, so the bytes
// never depend on the pool's size; an error is the lowest failing item's (the first bad row in order).
void encode_rows(const RowJob& j, bool load, float* x, uint8_t* y, uint64_t r0, uint64_t nr, ThreadPool& pool) {
  constexpr uint64_t kTaskElements = 1 << 16;
  constexpr float kF16Limit = 65520.0f;  // the smallest magnitude F16 rounds to Inf
  const uint64_t chunk = std::max<uint64_t>(static_cast<uint64_t>(quantize_chunk_rows(static_cast<int64_t>(j.ne0))),
                                            (kTaskElements + j.ne0 - 1) / j.ne0);
  pool.run(static_cast<int64_t>((nr + chunk - 1) / chunk), [&](int64_t c, int) {
    const uint64_t a = static_cast<uint64_t>(c) * chunk, n = std::min(chunk, nr - a);
    float* p = x + a * j.ne0;
    if (load) j.t.load_rows(r0 + a, n, p);
    check_finite_rows(j.path, j.t.name, p, r0 + a, n, j.ne0);
    if (j.type == GgmlType::F16)
      for (uint64_t i = 0; i < n * j.ne0; ++i)
        if (std::fabs(p[i]) >= kF16Limit)
          fail("{}: tensor {}: value {} at row {}, column {} exceeds F16's range (max 65504); {}", j.path, j.t.name,
               p[i], r0 + a + i / j.ne0, i % j.ne0, j.f16_hint);
    if (!y) return;
    for (uint64_t r = a; r < a + n;) {  // runs of rows within one slice (one importance vector)
      const uint64_t row = r0 + r, slice = row / j.ne1, end = std::min(a + n, (slice + 1) * j.ne1 - r0);
      const float* imp = j.per_slice ? j.per_slice->data() + slice * j.ne0 : nullptr;
      quantize_rows(j.type, x + r * j.ne0, y + r * j.row_bytes, static_cast<int64_t>(end - r),
                    static_cast<int64_t>(j.ne0), imp);
      r = end;
    }
  });
}

// Writes tensor data on a second thread while the next tensor (or slab) is loaded and encoded: the writer gets
// the same calls in the same order, one at a time. It owns two output buffers: buffer() is the one no write is
// reading, and write_buffer() hands it to the writer. A buffer handed to write() must stay unchanged until the
// next write() or wait() returns.
class BackgroundWriter {
 public:
  explicit BackgroundWriter(GgufWriter& w) : w_(w) {}
  ~BackgroundWriter() {
    if (pending_.valid()) pending_.wait();  // unwinding: the error that got us here is the one to report
  }
  BackgroundWriter(const BackgroundWriter&) = delete;
  BackgroundWriter& operator=(const BackgroundWriter&) = delete;
  void write(const uint8_t* a, size_t na, const uint8_t* b = nullptr, size_t nb = 0) {
    wait();
    pending_ = std::async(std::launch::async, [this, a, na, b, nb] {
      w_.write_tensor_data(a, na);
      if (b) w_.write_tensor_data(b, nb);
    });
  }
  std::vector<uint8_t>& buffer(size_t n) {
    bufs_[cur_].resize(n);
    return bufs_[cur_];
  }
  // Writes the buffer's bytes [0, na), then [na, na + nb) as a second tensor when nb > 0.
  void write_buffer(size_t na, size_t nb = 0) {
    const uint8_t* p = bufs_[cur_].data();
    cur_ ^= 1;
    write(p, na, nb ? p + na : nullptr, nb);
  }
  void wait() {
    if (pending_.valid()) pending_.get();
  }
  void release_buffers() { bufs_[0] = bufs_[1] = {}; }

 private:
  GgufWriter& w_;
  std::future<void> pending_;
  std::vector<uint8_t> bufs_[2];
  int cur_ = 0;
};

// Which route a tensor takes through the pipeline, and what every route needs, derived once per tensor.
struct TensorRoute {
  const SourceTensor& t;
  const TypeDecision& d;
  uint64_t n, ne0, nrows, ne1, slices;
  bool raw_copy;   // the kept type, and the source holds its bytes: they are written as they are
  bool check;      // the values are loaded and checked (all but raw bytes the pipeline cannot decode)
  bool hook;       // the calibration hook sees the values
  bool by_rows;    // the source loads row ranges
  bool whole;      // the whole tensor is loaded at once (the hook, a palette, or a source without row loads)
  const std::vector<float>* imv;  // the standard encoders' importance: ne0 values per slice, or null
};

// The pipeline's steps for one tensor: load (whole, or slab by slab), check, encode by the decision's route,
// hand the bytes to the background writer.
class TensorEncoder {
 public:
  TensorEncoder(const QuantizeSource& src, const QuantizeOptions& opts, ThreadPool& pool, int threads,
                BackgroundWriter& bw)
      : src_(src), opts_(opts), pool_(pool), threads_(threads), bw_(bw) {}

  // Writes t as d decides; returns whether an importance vector drove its encoding.
  bool write(const SourceTensor& t, const TypeDecision& d) {
    const TensorRoute x = route(t, d);
    if (!x.whole) {  // streamed: a slab of rows at a time, so memory stays near one slab
      if (x.check) stream(x, !x.raw_copy);
      if (x.raw_copy) copy_raw(x);
      return !x.raw_copy && x.imv != nullptr;
    }
    // Checked as loaded where the values go elsewhere than the row encoder (which checks the rows it encodes).
    load_whole(x, x.hook || d.palette_bits > 0 || x.raw_copy);
    if (x.hook) {
      const float* imp = nullptr;
      if (run_hook(x, &imp) != HookResult::Untouched) return imp != nullptr;
    }
    if (d.palette_bits > 0) return palettize_whole(x);
    if (x.raw_copy) {
      copy_raw(x);
      return false;
    }
    auto& out = bw_.buffer(d.nbytes);
    encode_rows(job(x), false, f32_.data(), out.data(), 0, x.nrows, pool_);
    bw_.write_buffer(out.size());
    return x.imv != nullptr;
  }
  void release() { f32_ = {}; }

 private:
  TensorRoute route(const SourceTensor& t, const TypeDecision& d) const {
    const uint64_t n = t.n_elements(), ne0 = t.row_length(), nrows = n / ne0;
    const uint64_t ne1 = t.dims.size() > 1 ? t.dims[1] : 1;
    TensorRoute x{t, d, n, ne0, nrows, ne1, nrows / ne1, false, false, false, false, false, nullptr};
    // Every float or quantized tensor's values are checked for NaN/Inf, also those copied unchanged.
    x.raw_copy = !d.quantize && t.raw && t.keep_type == t.source_type;
    const bool loadable = t.load_f32 && (is_float_type(t.source_type) ||
                                         (is_quantized(t.source_type) && can_dequantize(t.source_type)));
    x.check = loadable || !x.raw_copy;
    if (x.check && !t.load_f32) fail("{}: tensor {}: the source cannot provide its values", src_.path, t.name);
    x.hook = opts_.tensor_hook && loadable && d.palette_bits == 0;
    x.by_rows = t.load_rows && nrows > 1;
    x.whole = x.check && (x.hook || d.palette_bits > 0 || !x.by_rows);
    // One importance vector per slice (experts: llama.cpp's ne[2]); a vector of the wrong size is ignored, as
    // llama-quantize does (only token_embd gets this far).
    if (opts_.importance && takes_importance(d)) {
      auto it = opts_.importance->data.find(t.name);
      if (it != opts_.importance->data.end() && it->second.size() == ne0 * x.slices) x.imv = &it->second;
    }
    return x;
  }

  // The row encoder's view of the tensor; check_only: the values are checked against a float type's range only
  // (copied bytes, a palette's input).
  RowJob job(const TensorRoute& x, bool check_only = false) const {
    const uint64_t row_bytes = x.d.palette_bits > 0 ? 0 : x.d.nbytes / x.nrows;
    return RowJob{src_.path, x.t, check_only ? GgmlType::F32 : x.d.type, x.ne0, x.ne1, row_bytes, x.imv,
                  opts_.f16_range_hint};
  }

  // The whole tensor into f32_; check: also checked (row ranges loaded and checked side by side when the source
  // loads rows; without check the tensor only comes here when it cannot, see route()).
  void load_whole(const TensorRoute& x, bool check) {
    if (x.n > (uint64_t{1} << 33)) fail("{}: tensor {}: too large ({} elements)", src_.path, x.t.name, x.n);
    f32_.resize(x.n);
    if (!x.by_rows) x.t.load_f32(f32_.data());
    if (check)
      encode_rows(job(x, x.d.palette_bits > 0 || x.raw_copy), x.by_rows, f32_.data(), nullptr, 0, x.nrows, pool_);
  }

  // Slab by slab: loaded, checked and (encode) encoded and written.
  void stream(const TensorRoute& x, bool encode) {
    const uint64_t slab = std::min(x.nrows, std::max<uint64_t>(1, kSlabElements / x.ne0));
    f32_.resize(slab * x.ne0);
    const RowJob j = job(x, !encode);
    for (uint64_t r = 0; r < x.nrows; r += slab) {
      const uint64_t nr = std::min(slab, x.nrows - r);
      if (!encode) {
        encode_rows(j, true, f32_.data(), nullptr, r, nr, pool_);
        continue;
      }
      auto& out = bw_.buffer(nr * j.row_bytes);
      encode_rows(j, true, f32_.data(), out.data(), r, nr, pool_);
      bw_.write_buffer(out.size());
      if (x.t.release) x.t.release();  // drop the consumed source pages now: RSS stays near one slab
    }
  }

  // The calibration hook on the loaded values: it encodes them itself, rewrites them (then encoded here with
  // the hook's importance for every row), or leaves them.
  HookResult run_hook(const TensorRoute& x, const float** imp) {
    const float* base_imp = x.imv && x.slices == 1 ? x.imv->data() : nullptr;
    auto& out = bw_.buffer(x.d.nbytes);
    TensorHookArgs ha{x.t.name, x.d.type, x.d.quantize, f32_.data(), static_cast<int64_t>(x.nrows),
                      static_cast<int64_t>(x.ne0), base_imp, out.data(), threads_};
    const HookResult hooked = opts_.tensor_hook(ha);
    *imp = ha.importance;
    if (hooked == HookResult::Modified)
      quantize_rows_parallel(x.d.type, f32_.data(), out.data(), static_cast<int64_t>(x.nrows),
                             static_cast<int64_t>(x.ne0), ha.importance, pool_);
    if (hooked != HookResult::Untouched) bw_.write_buffer(out.size());
    return hooked;
  }

  // One palettization over all rows (groups of output rows; per-slice importance only for 2-D weights), written
  // as two tensors, index then table.
  bool palettize_whole(const TensorRoute& x) {
    const TypeDecision& d = x.d;
    auto& out = bw_.buffer(d.nbytes);
    const uint64_t idx_bytes = palette::index_row_bytes(x.ne0, d.palette_bits) * x.nrows;
    std::vector<uint16_t> lut(d.palette_groups << d.palette_bits);
    const bool with_imp = x.imv && x.slices == 1;
    palettize(f32_.data(), static_cast<int64_t>(x.nrows), static_cast<int64_t>(x.ne0),
              with_imp ? x.imv->data() : nullptr, d.palette_bits, static_cast<int64_t>(opts_.policy.palette_group),
              out.data(), lut.data(), pool_);
    std::memcpy(out.data() + idx_bytes, lut.data(), lut.size() * sizeof(uint16_t));
    bw_.write_buffer(idx_bytes, out.size() - idx_bytes);
    return with_imp;
  }

  void copy_raw(const TensorRoute& x) {
    if (x.t.raw_nbytes != x.d.nbytes) fail("{}: tensor {}: size mismatch", src_.path, x.t.name);
    bw_.write(x.t.raw, x.t.raw_nbytes);
    if (x.t.release) bw_.wait();  // the source's bytes stay until written
  }

  const QuantizeSource& src_;
  const QuantizeOptions& opts_;
  ThreadPool& pool_;
  int threads_;
  BackgroundWriter& bw_;
  std::vector<float> f32_;
};

}  // namespace

void quantize_rows_parallel(GgmlType t, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                            const float* importance, ThreadPool& pool) {
  const uint64_t row_bytes = *ggml_row_size(t, static_cast<uint64_t>(n_per_row));
  const int64_t chunk = quantize_chunk_rows(n_per_row);
  pool.run((nrows + chunk - 1) / chunk, [&](int64_t c, int) {
    const int64_t r0 = c * chunk;
    const int64_t nr = std::min(chunk, nrows - r0);
    quantize_rows(t, src + r0 * n_per_row, static_cast<uint8_t*>(dst) + static_cast<uint64_t>(r0) * row_bytes, nr,
                  n_per_row, importance);
  });
}

int64_t quantize_chunk_rows(int64_t n_per_row) {
  // As llama.cpp: work items of at least 32*512 elements.
  constexpr int64_t kMinChunk = 32 * 512;
  if (n_per_row <= 0) return 1;
  return n_per_row >= kMinChunk ? 1 : (kMinChunk + n_per_row - 1) / n_per_row;
}

QuantizeSource open_gguf_source(const std::string& path) {
  auto file = std::make_shared<GgufFile>(GgufFile::open(path));
  QuantizeSource src;
  src.path = path;
  src.metadata = file->metadata();
  src.keep_alive.push_back(file);
  const auto pal = std::make_shared<std::vector<palette::PalTensor>>(palette::palettized_tensors(*file));
  src.keep_alive.push_back(pal);
  std::set<std::string_view> parts;
  for (const auto& p : *pal) parts.insert(p.lut->name);
  for (const auto& info : file->tensors()) {
    if (parts.count(info.name)) continue;
    if (info.name.ends_with(palette::kIndexSuffix)) {
      const palette::PalTensor* p = nullptr;
      for (const auto& q : *pal)
        if (q.index == &info) p = &q;
      SourceTensor t;
      t.name = p->name;
      t.dims = p->dims;
      t.source_type = GgmlType::F16;
      t.keep_type = GgmlType::F16;
      t.palettized = true;
      t.file = path;
      const uint8_t* idx = file->view(*p->index).data;
      const uint8_t* lut = file->view(*p->lut).data;
      const int bits = p->bits;
      const uint64_t ne0 = p->dims[0], group_rows = p->group_rows, rows = p->n_elements() / ne0;
      const uint64_t rb = palette::index_row_bytes(ne0, bits), k = uint64_t{1} << bits;
      t.load_f32 = [idx, lut, bits, ne0, group_rows, rows, rb, k](float* dst) {
        std::vector<float> table(k);
        for (uint64_t r = 0; r < rows; ++r) {
          if (r % group_rows == 0) {
            const uint8_t* g = lut + (r / group_rows) * k * 2;
            for (uint64_t j = 0; j < k; ++j) table[j] = f16_to_f32(static_cast<uint16_t>(g[2 * j] | g[2 * j + 1] << 8));
          }
          palette_decode_row(idx + r * rb, table.data(), bits, dst + r * ne0, static_cast<int64_t>(ne0));
        }
      };
      src.tensors.push_back(std::move(t));
      continue;
    }
    SourceTensor t;
    t.name = info.name;
    t.dims = info.dims;
    t.source_type = info.type;
    t.keep_type = info.type;
    t.file = path;
    TensorView v = file->view(info);
    t.raw = v.data;
    t.raw_nbytes = v.nbytes;
    const GgmlType type = info.type;
    const uint8_t* data = v.data;
    const uint64_t nbytes = v.nbytes;
    const uint64_t ne0 = info.dims.empty() ? 1 : info.dims[0];
    const uint64_t n = checked_elements(path, info.name, info.dims);
    std::string name = info.name;
    t.load_rows = [path, name, type, data, nbytes, ne0, n](uint64_t row0, uint64_t nr, float* dst) {
      if (!can_dequantize(type))
        fail("{}: tensor {}: cannot convert type {} to f32", path, name, ggml_type_name(type));
      auto rb = ggml_row_size(type, ne0);
      if (!rb || ne0 == 0) fail("{}: tensor {}: bad row length {} for {}", path, name, ne0, ggml_type_name(type));
      const uint64_t rows = n / ne0;
      if (rows * *rb != nbytes) fail("{}: tensor {}: size mismatch", path, name);
      if (row0 > rows || nr > rows - row0) fail("{}: tensor {}: rows {}+{} of {}", path, name, row0, nr, rows);
      for (uint64_t r = 0; r < nr; ++r)
        dequantize_row(type, data + (row0 + r) * *rb, dst + r * ne0, static_cast<int64_t>(ne0));
    };
    t.load_f32 = [load = t.load_rows, ne0, n](float* dst) { load(0, n / ne0, dst); };
    src.tensors.push_back(std::move(t));
  }
  return src;
}

Importance load_importance(const std::string& path) {
  auto im = ImatrixFile::open(path);
  Importance out;
  out.info.file = path;
  out.info.dataset = im.dataset();
  out.info.chunks_count = im.last_call();
  for (const auto& e : im.entries()) out.data.emplace(e.name, e.values);
  out.info.entries_count = static_cast<int32_t>(out.data.size());
  for (const auto& [name, v] : out.data)
    for (float x : v)
      if (!std::isfinite(x)) fail("{}: entry {}: non-finite importance value", path, name);
  return out;
}

QuantizePlan plan_quantize(const QuantizeSource& src, const QuantizeOptions& opts) {
  QuantizePlan plan;
  try {
    plan.params = ModelParams::from_metadata(src.metadata);
  } catch (const Error& e) {
    fail("{}: {}", src.path, e.what());  // the source's metadata: name its file
  }

  {
    std::set<std::string_view> seen;
    for (const auto& t : src.tensors)
      if (!seen.insert(t.name).second) fail("{}: duplicate tensor {}", src.path, t.name);
  }

  std::vector<size_t> order(src.tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return llama_tensor_order_less(src.tensors[a].name, src.tensors[b].name);
  });

  std::vector<TensorShape> shapes;
  shapes.reserve(order.size());
  for (size_t i : order) {
    const auto& t = src.tensors[i];
    if (t.dims.empty() || t.dims.size() > 4) fail("{}: tensor {}: {} dimensions", src.path, t.name, t.dims.size());
    for (auto dim : t.dims)
      if (dim == 0) fail("{}: tensor {}: has a zero dimension", src.path, t.name);
    checked_elements(src.path, t.name, t.dims);
    shapes.push_back({t.name, t.dims, t.keep_type});
  }

  PolicyOptions po = opts.policy;
  po.has_imatrix = opts.importance != nullptr;
  std::vector<TypeDecision> dec;
  try {
    dec = choose_types(plan.params, shapes, po);
  } catch (const Error& e) {
    fail("{}: {}", src.path, e.what());
  }

  for (size_t k = 0; k < order.size(); ++k) {
    const auto& t = src.tensors[order[k]];
    const auto& d = dec[k];
    plan.bytes_before += t.raw ? t.raw_nbytes : tensor_bytes(src.path, t.name, t.source_type, t.dims);
    plan.bytes_after += d.nbytes;
    const bool needs_encode = d.quantize || !t.raw || t.keep_type != t.source_type;
    if (needs_encode) {
      if (!t.load_f32) fail("{}: tensor {}: the source cannot provide its values", src.path, t.name);
      if (d.quantize && is_quantized(t.source_type) && !opts.allow_requantize)
        fail("{}: tensor {}: already quantized as {}; converting it to {} needs --allow-requantize",
             src.path, t.name, ggml_type_name(t.source_type), type_label(d));
      if (d.palette_bits > 0 && t.palettized && !opts.allow_requantize)
        fail("{}: tensor {}: already palettized; palettizing it again as {} needs --allow-requantize", src.path,
             t.name, type_label(d));
      if (d.palette_bits == 0 && is_quantized(d.type) && !can_quantize(d.type))
        fail("{}: tensor {}: edgeq cannot write type {} yet", src.path, t.name, ggml_type_name(d.type));
      if (d.palette_bits == 0 && !is_quantized(d.type) && !is_float_type(d.type))
        fail("{}: tensor {}: cannot write type {}", src.path, t.name, ggml_type_name(d.type));
    }
    if (!opts.tensor_hook && tensor_needs_importance(po.ftype, t.name, d.type) &&
        !(opts.importance && opts.importance->data.count(t.name)))
      fail("{}: tensor {}: {} without an importance matrix gives garbage (llama-quantize refuses it too): give "
           "--imatrix FILE, or --data TEXT to calibrate first",
           src.path, t.name, ggml_type_name(d.type));
    if (opts.importance && takes_importance(d)) {
      auto it = opts.importance->data.find(t.name);
      if (it != opts.importance->data.end()) {
        const uint64_t ne0 = t.dims[0];
        uint64_t ne2 = 1;  // slices: experts (llama.cpp: ne[2]); product of the outer dims here
        for (size_t i = 2; i < t.dims.size(); ++i) ne2 *= t.dims[i];
        if (it->second.size() != ne0 * ne2 && t.name != "token_embd.weight")
          fail("{}: tensor {}: imatrix has {} values, the tensor needs {} ({})", src.path, t.name,
               it->second.size(), ne0 * ne2, opts.importance->info.file);
      }
    }
    plan.tensors.push_back({order[k], d});
  }
  if (const int bits = file_type_info(po.ftype).palette_bits; bits > 0) {
    bool any = false;
    for (const auto& p : plan.tensors) any |= p.decision.palette_bits > 0;
    if (!any)
      fail("{}: no tensor can be palettized as PAL{} (2-D weights whose rows pack into whole bytes)", src.path, bits);
  }
  return plan;
}

std::string quantize_method_string(const QuantizeOptions& opts) {
  if (!opts.record_method) return {};
  std::string m = fmt::format("{} {}{}{}", opts.method, file_type_info(opts.policy.ftype).name,
                              opts.importance ? " imatrix" : "", opts.policy.pure ? " pure" : "");
  if (!opts.policy.tensor_types.empty()) m += fmt::format(" overrides={}", opts.policy.tensor_types.size());
  return m;
}

QuantizeReport quantize_model(const QuantizeSource& src, const std::string& out_path, const QuantizeOptions& opts) {
  QuantizePlan plan = plan_quantize(src, opts);
  if (plan.tensors.empty()) fail("{}: no tensors to write", src.path);
  auto metadata = quantized_metadata(src.metadata, opts.policy.ftype, opts.importance ? &opts.importance->info : nullptr,
                                     quantize_method_string(opts));
  if (const int bits = file_type_info(opts.policy.ftype).palette_bits; bits > 0) {
    metadata.emplace_back(palette::kBitsKey, GgufValue(static_cast<uint32_t>(bits)));
    metadata.emplace_back(palette::kGroupKey, GgufValue(static_cast<uint32_t>(opts.policy.palette_group)));
  }
  if (opts.record_method) metadata.insert(metadata.end(), opts.extra_metadata.begin(), opts.extra_metadata.end());
  QuantizeReport rep = write_gguf(src, plan, metadata, out_path, opts);
  rep.bytes_before = plan.bytes_before;
  return rep;
}

QuantizeReport write_gguf(const QuantizeSource& src, const QuantizePlan& plan,
                          const std::vector<std::pair<std::string, GgufValue>>& metadata, const std::string& out_path,
                          const QuantizeOptions& opts) {
  const auto t_start = Clock::now();
  const int threads = resolve_threads(opts.threads);
  ThreadPool pool(threads);

  QuantizeReport rep;
  rep.ftype = opts.policy.ftype;
  rep.threads = threads;
  rep.n_tensors = plan.tensors.size();
  rep.bytes_before = plan.bytes_before;
  rep.bytes_after = plan.bytes_after;

  GgufWriter w(out_path, opts.split);
  for (const auto& [k, v] : metadata) w.set(k, v);
  for (const auto& p : plan.tensors) {
    const auto& t = src.tensors[p.source_index];
    const auto& d = p.decision;
    if (d.palette_bits > 0) {
      w.add_tensor(t.name + std::string(palette::kIndexSuffix), palette::index_dims(t.dims, d.palette_bits), GgmlType::I8);
      w.add_tensor(t.name + std::string(palette::kLutSuffix), palette::lut_dims(d.palette_bits, d.palette_groups),
                   GgmlType::F16);
    } else {
      w.add_tensor(t.name, t.dims, d.type);
    }
  }
  rep.outputs = w.output_paths();
  rep.output = rep.outputs.front();
  w.check_outputs();  // every file of a split set: none replaces an input
  if (opts.check_output) {
    const std::string header = w.header_bytes();
    opts.check_output(GgufFile::parse_header(reinterpret_cast<const uint8_t*>(header.data()), header.size(), out_path));
  }

  BackgroundWriter bw(w);
  TensorEncoder enc(src, opts, pool, threads, bw);
  for (size_t k = 0; k < plan.tensors.size(); ++k) {
    const auto tt = Clock::now();
    const auto& p = plan.tensors[k];
    const auto& t = src.tensors[p.source_index];
    const auto& d = p.decision;
    rep.n_elements += t.n_elements();

    TensorProgress prog;
    prog.index = k;
    prog.count = plan.tensors.size();
    prog.name = t.name;
    prog.dims = t.dims;
    prog.from = t.source_type;
    prog.to = d.type;
    prog.quantized = d.quantize;
    prog.fallback = d.fallback;
    prog.palette_bits = d.palette_bits;
    prog.bytes_before = t.raw ? t.raw_nbytes : tensor_bytes(src.path, t.name, t.source_type, t.dims);
    prog.bytes_after = d.nbytes;
    prog.has_importance = enc.write(t, d);

    if (d.quantize) ++rep.n_quantized;
    if (d.fallback) ++rep.n_fallback;
    if (prog.has_importance) ++rep.n_with_importance;
    ++rep.type_counts[type_label(d)];
    prog.seconds = std::chrono::duration<double>(Clock::now() - tt).count();
    if (t.release) t.release();
    if (opts.on_tensor) opts.on_tensor(prog);
  }
  bw.wait();
  w.finish();
  enc.release();
  bw.release_buffers();
  rep.file_size = 0;
  for (const auto& p : rep.outputs) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(p, ec);
    if (ec) {  // a device or FIFO
      rep.file_size = w.expected_file_size();
      break;
    }
    rep.file_size += n;
  }
  rep.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  return rep;
}

}  // namespace edgeq::quant
