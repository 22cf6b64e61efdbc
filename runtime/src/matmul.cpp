#include "edgeq/runtime/matmul.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>

#include "edgeq/base/cpu.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/ggml_types.h"
#include "edgeq/base/half.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/palette.h"
#include "edgeq/runtime/blas.h"
#include "gemm.h"
#include "ggml_order.h"
#include "kernels.h"

namespace edgeq::runtime {

// ---------------------------------------------------------------- activation rounding

ActRounding act_rounding_for(GgmlType t) {
  const quant::BlockOps* ops = quant::block_ops(t);
  return ops ? ops->act_rounding : ActRounding::None;
}

ActRounding act_rounding_for(const Weight& w) { return w.palette ? ActRounding::F16 : act_rounding_for(w.type); }

namespace {
// Round half to even (ggml's nearest_int / _mm256_round_ps(NEAREST)). nearbyint, not the magic-number add:
// the compiler may fuse "iscale * x + magic" into an FMA, which rounds differently from ggml.
inline float round_even(float v) { return std::nearbyint(v); }

// F16C conversions give the same bits as the scalar IEEE round-to-nearest-even ones (and as ggml's).
__attribute__((target("avx2,f16c"))) void round_f16_f16c(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_ps(x + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
}

// The Q8_0 / Q8_K activation blocks' values (kernels.h's q8_0_scale / q8_K_scale: the formats' one definition),
// in place: what the integer kernels multiply, as floats for the dequantize + GEMM path.
template <int Dummy>
inline void q8_0_rows(float* x, int64_t n) {
  for (int64_t b = 0; b < n; b += 32) {
    float* v = x + b;
    const kernels::Q8_0Scale sc = kernels::q8_0_scale(v);
    for (int j = 0; j < 32; ++j) v[j] = sc.d_f16 * round_even(v[j] * sc.id);
  }
}
template <int Dummy>
inline void q8_k_rows(float* x, int64_t n) {
  for (int64_t b = 0; b < n; b += 256) {
    float* v = x + b;
    float iscale, d;
    if (!kernels::q8_K_scale(v, &iscale, &d)) {
      for (int j = 0; j < 256; ++j) v[j] = 0.f;
      continue;
    }
    for (int j = 0; j < 256; ++j) v[j] = d * std::min(127.f, round_even(iscale * v[j]));
  }
}
__attribute__((target("avx2,fma"))) void q8_0_avx2(float* x, int64_t n) { q8_0_rows<1>(x, n); }
__attribute__((target("avx2,fma"))) void q8_k_avx2(float* x, int64_t n) { q8_k_rows<1>(x, n); }
}  // namespace

void round_f16(float* x, int64_t n) {
  if (cpu::avx2()) return round_f16_f16c(x, n);
  for (int64_t i = 0; i < n; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
}

void round_activations(ActRounding r, float* x, int64_t n) {
  switch (r) {
    case ActRounding::None: return;
    case ActRounding::F16: round_f16(x, n); return;
    case ActRounding::Q8_0:
      if (n % 32) return;
      return cpu::avx2() ? q8_0_avx2(x, n) : q8_0_rows<0>(x, n);
    case ActRounding::Q8_K:
      if (n % 256) return;
      return cpu::avx2() ? q8_k_avx2(x, n) : q8_k_rows<0>(x, n);
  }
}

// ---------------------------------------------------------------- dequantization of weight rows

void dequantize_rows(const Weight& w, int64_t r0, int64_t r1, float* dst) {
  const int64_t ne0 = static_cast<int64_t>(w.dims[0]);
  if (const Palette* p = w.palette.get()) {
    const uint64_t k = uint64_t{1} << p->bits;
    for (int64_t r = r0; r < r1; ++r, dst += ne0)
      quant::palette_decode_row(w.data + static_cast<uint64_t>(r) * p->row_bytes,
                                p->lut.data() + (static_cast<uint64_t>(r) / p->group_rows) * k, p->bits, dst, ne0);
    return;
  }
  const uint64_t rb = w.row_bytes();
  const uint8_t* src = w.data + static_cast<uint64_t>(r0) * rb;
  if (w.type == GgmlType::F32) {
    std::memcpy(dst, src, static_cast<size_t>(r1 - r0) * ne0 * sizeof(float));
    return;
  }
  for (int64_t r = r0; r < r1; ++r, src += rb, dst += ne0) quant::dequantize_row(w.type, src, dst, ne0);
}

// ---------------------------------------------------------------- matmul

namespace {
constexpr int64_t kTileRows = 64;
bool g_use_kernels = true;
}  // namespace

void set_matmul_kernels(bool enabled) { g_use_kernels = enabled; }

std::string blas_core() { return blas::core(); }

namespace {
const kernels::Entry* kernel_for(const Weight& w, int64_t n_tokens, bool ggml_compat) {
  if (!ggml_compat || !g_use_kernels || n_tokens >= kKernelMaxTokens || w.palette) return nullptr;
  const kernels::Entry* k = kernels::find(w.type);
  if (k == nullptr || static_cast<int64_t>(w.dims[0]) % (k->ops->act_rounding == ActRounding::Q8_0 ? 32 : 256) != 0)
    return nullptr;
  return k;
}
}  // namespace

namespace {
// Batches of kKernelMaxTokens and more in llama.cpp's order of operations (ggml_order.h) where it is reproduced.
bool ggml_order_for(const Weight& w, int64_t n_tokens, bool ggml_compat) {
  return ggml_compat && n_tokens >= kKernelMaxTokens && ggml_order::supported(w);
}
}  // namespace

bool matmul_uses_kernel(const Weight& w, int64_t n_tokens, bool ggml_compat) {
  return kernel_for(w, n_tokens, ggml_compat) != nullptr || ggml_order_for(w, n_tokens, ggml_compat);
}

namespace {
struct TileJob {
  const Weight* w;
  float* y;
  int64_t ldy;
};
// y = x · Wᵀ for every job on the dequantize + GEMM path, the jobs' tiles in one pool run. Each task takes a tile
// of kTileRows weight rows and walks it in k-blocks of gemm::kKBlock columns: the block's weights are converted
// (F32, F16: straight from the mapping into the packed layout; block types: the block's stretch of each row
// dequantized first) and packed transposed (gemm.h), then multiplied with every token, continuing C's chains.
// Everything a block touches (64 KiB of packed weights) stays in the core's cache, and the chains are the same
// as one product over the whole row. Palettized rows decode whole, once per tile.
void gemm_tiles(const TileJob* jobs, size_t n_jobs, const float* x, int64_t n_tokens, int64_t ldx, ThreadPool& pool,
                MatmulScratch& scratch) {
  if (static_cast<int>(scratch.tiles.size()) < pool.size()) scratch.tiles.resize(pool.size());
  std::vector<int64_t> first(n_jobs + 1, 0);  // first task of each job
  for (size_t j = 0; j < n_jobs; ++j) first[j + 1] = first[j] + (static_cast<int64_t>(jobs[j].w->n_rows()) + kTileRows - 1) / kTileRows;
  pool.run(first[n_jobs], [&](int64_t task, int worker) {
    const size_t j = static_cast<size_t>(std::upper_bound(first.begin(), first.end(), task) - first.begin()) - 1;
    const Weight& w = *jobs[j].w;
    const int64_t in = static_cast<int64_t>(w.dims[0]);
    const int64_t r0 = (task - first[j]) * kTileRows;
    const int64_t rows = std::min(static_cast<int64_t>(w.n_rows()), r0 + kTileRows) - r0;
    const uint64_t rb = w.row_bytes();
    const uint8_t* src = w.data + static_cast<uint64_t>(r0) * rb;
    const GgmlTypeInfo* ti = ggml_type_info(w.type);
    const bool whole = w.palette != nullptr || gemm::kKBlock % ti->block_size != 0;  // rows decoded once
    auto& buf = scratch.tiles[worker];
    const int64_t kb = std::min(gemm::kKBlock, in);
    const size_t rows_size = w.type == GgmlType::F32 || w.type == GgmlType::F16 ? 0 : static_cast<size_t>(kTileRows * (whole ? in : kb));
    // The tile's results gather in C (row stride kTileRows) and are copied out at the end: the output rows are
    // often 8 KiB apart (2048 floats), which would put a micro-tile's rows into the same L1 sets.
    const size_t c_size = static_cast<size_t>(n_tokens * kTileRows);
    buf.resize(rows_size + static_cast<size_t>(gemm::packed_size(kTileRows, kb)) + c_size);
    float* packed = buf.data() + rows_size;
    float* C = packed + gemm::packed_size(kTileRows, kb);
    if (whole) dequantize_rows(w, r0, r0 + rows, buf.data());
    // Byte offset in a row of column p (a block boundary).
    auto offset = [&](int64_t p) { return static_cast<uint64_t>(p / ti->block_size) * ti->type_size; };
    for (int64_t p0 = 0; p0 < in; p0 += gemm::kKBlock) {
      const int64_t kc = std::min(gemm::kKBlock, in - p0);
      if (whole) {
        gemm::pack_transposed(buf.data() + p0, rows, kc, in, packed);
      } else if (w.type == GgmlType::F32) {
        gemm::pack_transposed(reinterpret_cast<const float*>(src) + p0, rows, kc, in, packed);
      } else if (w.type == GgmlType::F16) {
        gemm::pack_transposed_f16(reinterpret_cast<const uint16_t*>(src) + p0, rows, kc, in, packed);
      } else {  // a k-block starts on a block boundary
        for (int64_t r = 0; r < rows; ++r) quant::dequantize_row(w.type, src + r * rb + offset(p0), buf.data() + r * kc, kc);
        gemm::pack_transposed(buf.data(), rows, kc, kc, packed);
      }
      if (!whole && p0 + kc < in) {  // the next block's weights travel to L2 while this one's product runs
        const uint64_t off = offset(p0 + kc), len = offset(std::min(gemm::kKBlock, in - p0 - kc));
        for (int64_t r = 0; r < rows; ++r)
          for (uint64_t b = 0; b < len; b += 64) _mm_prefetch(reinterpret_cast<const char*>(src + r * rb + off + b), _MM_HINT_T1);
      }
      gemm::gemm(n_tokens, rows, kc, x + p0, ldx, gemm::packed(packed, kc), C, kTileRows, p0 > 0);
    }
    for (int64_t t = 0; t < n_tokens; ++t)
      std::memcpy(jobs[j].y + t * jobs[j].ldy + r0, C + t * kTileRows, static_cast<size_t>(rows) * sizeof(float));
  });
}

// The kernel path for weights sharing one input (all with kernel k's activation format): the input is quantized
// once, then one pool run covers every weight's row tiles, one integer dot product per (token, row); each result
// is computed whole by one thread, so the split over threads does not change it.
void kernel_products(const kernels::Entry& k, std::initializer_list<std::pair<const Weight*, float*>> outs,
                     const int64_t* ldy, const float* x, int64_t n_tokens, int64_t ldx, ThreadPool& pool,
                     MatmulScratch& scratch) {
  const int64_t in = static_cast<int64_t>(outs.begin()->first->dims[0]);
  const size_t arb = kernels::act_row_bytes(k.ops->act_rounding, in);
  scratch.xq.resize(static_cast<size_t>(n_tokens) * arb);
  pool.run(n_tokens, [&](int64_t t, int) {
    kernels::quantize_act(k.ops->act_rounding, x + t * ldx, scratch.xq.data() + t * arb, in);
  });
  constexpr size_t kMaxOuts = 4;
  struct Job {
    const Weight* w;
    float* y;
    int64_t ldy, rows, first_tile;
    kernels::DotFn dot;
  } jobs[kMaxOuts];
  size_t n_jobs = 0;
  int64_t n_tiles = 0;
  for (const auto& o : outs) {
    const int64_t rows = static_cast<int64_t>(o.first->n_rows());
    const kernels::Entry* ko = kernels::find(o.first->type);
    jobs[n_jobs] = {o.first, o.second, ldy[n_jobs], rows, n_tiles, kernels::best(ko->kernels)};
    n_tiles += (rows + kTileRows - 1) / kTileRows;
    ++n_jobs;
  }
  pool.run(n_tiles, [&](int64_t tile, int) {
    size_t j = 0;
    while (j + 1 < n_jobs && tile >= jobs[j + 1].first_tile) ++j;
    const Job& jb = jobs[j];
    const uint64_t rb = jb.w->row_bytes();
    const int64_t r0 = (tile - jb.first_tile) * kTileRows;
    const int64_t r1 = std::min(jb.rows, r0 + kTileRows);
    for (int64_t t = 0; t < n_tokens; t += kernels::kMaxAct) {
      const int na = static_cast<int>(std::min<int64_t>(kernels::kMaxAct, n_tokens - t));
      const uint8_t* a = scratch.xq.data() + t * arb;
      for (int64_t r = r0; r < r1; ++r)
        jb.dot(jb.w->data + static_cast<uint64_t>(r) * rb, a, arb, na, in, jb.y + t * jb.ldy + r, static_cast<size_t>(jb.ldy));
    }
  });
}
}  // namespace

bool matmul_kernels_shared(std::initializer_list<std::pair<const Weight*, float*>> outs, const float* x,
                           int64_t n_tokens, int64_t ldx, ThreadPool& pool, MatmulScratch& scratch, bool ggml_compat) {
  if (outs.size() == 0 || outs.size() > 4 || n_tokens <= 0) return false;
  const kernels::Entry* k0 = nullptr;
  int64_t ldy[4];
  size_t i = 0;
  for (const auto& o : outs) {
    const kernels::Entry* k = kernel_for(*o.first, n_tokens, ggml_compat);
    if (k == nullptr || (k0 != nullptr && (k->ops->act_rounding != k0->ops->act_rounding || o.first->dims[0] != outs.begin()->first->dims[0])))
      return false;
    k0 = k;
    ldy[i++] = static_cast<int64_t>(o.first->n_rows());
  }
  kernel_products(*k0, outs, ldy, x, n_tokens, ldx, pool, scratch);
  return true;
}

void matmul(const Weight& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy,
            ThreadPool& pool, MatmulScratch& scratch, bool ggml_compat) {
  const int64_t out = static_cast<int64_t>(w.n_rows());
  if (n_tokens <= 0 || out <= 0) return;

  // Quantized weights with a dot-product kernel (kernels.h): activations quantized to Q8_0/Q8_K blocks as
  // llama.cpp does, then integer dot products (kernel_products).
  // Used below kKernelMaxTokens tokens (generation, short prompts): there they beat dequantize + sgemm by 1.5-6x;
  // for larger batches the GEMM on dequantized tiles is faster (tl-8m perplexity: OpenBLAS sgemm already took the
  // same time as the kernels).
  if (const kernels::Entry* k = kernel_for(w, n_tokens, ggml_compat)) {
    kernel_products(*k, {{&w, y}}, &ldy, x, n_tokens, ldx, pool, scratch);
    return;
  }
  // Larger batches of the types whose llama.cpp order is reproduced: that order (the activations' and the KV
  // cache's roundings turn last-bit differences into rounding steps, see ggml_order.h).
  if (ggml_order_for(w, n_tokens, ggml_compat)) {
    ggml_order::matmul(w, x, n_tokens, ldx, y, ldy, pool, scratch);
    return;
  }

  const int64_t in = static_cast<int64_t>(w.dims[0]);
  const float* xs = x;
  int64_t ldxs = ldx;
  const ActRounding r = ggml_compat ? act_rounding_for(w) : ActRounding::None;
  if (r != ActRounding::None) {
    ldxs = act_stride(in);
    scratch.xr.resize(static_cast<size_t>(n_tokens * ldxs));
    pool.run(n_tokens, [&](int64_t t, int) {
      std::memcpy(scratch.xr.data() + t * ldxs, x + t * ldx, static_cast<size_t>(in) * sizeof(float));
      round_activations(r, scratch.xr.data() + t * ldxs, in);
    });
    xs = scratch.xr.data();
  }

  const TileJob job{&w, y, ldy};
  gemm_tiles(&job, 1, xs, n_tokens, ldxs, pool, scratch);
}

void matmul_expert(const Weight& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy,
                   ThreadPool& pool, MatmulScratch& scratch, bool ggml_compat) {
  if (ggml_compat && n_tokens > 0 && ggml_order::supported(w)) return ggml_order::matmul(w, x, n_tokens, ldx, y, ldy, pool, scratch);
  matmul(w, x, n_tokens, ldx, y, ldy, pool, scratch, ggml_compat);
}

void matmul_dequant(std::initializer_list<std::pair<const Weight*, float*>> outs, const float* x, int64_t n_tokens,
                    int64_t ldx, ThreadPool& pool, MatmulScratch& scratch) {
  std::vector<TileJob> jobs;
  for (const auto& o : outs) jobs.push_back({o.first, o.second, static_cast<int64_t>(o.first->n_rows())});
  gemm_tiles(jobs.data(), jobs.size(), x, n_tokens, ldx, pool, scratch);
}

}  // namespace edgeq::runtime
