// Matrix products of f32 activations with (possibly quantized) mmapped weights.
// A weight W is a GGUF tensor [in, out] (dims[0] = in = row length); y = x · Wᵀ for a batch of rows x.
// Weight types with a kernel (block_kernels below: runtime/src/kernels.cpp's kKernels lists them) are multiplied in integer arithmetic on the blocks, with activations quantized to Q8_0/Q8_K as llama.cpp does, for batches under 16 tokens
// (generation). Other weights, and larger batches, are dequantized tile by tile (quant::dequantize_row) into
// a per-thread f32 buffer, packed and multiplied with the runtime's GEMM (runtime/src/gemm.h; a task per tile on
// our thread pool). Every output element is
// computed by the same operations whatever the thread count: results are bit-identical for any --threads.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "edgeq/formats/gguf.h"
#include "edgeq/base/huge_pages.h"
#include "edgeq/base/thread_pool.h"
#include "edgeq/quant/block_ops.h"

namespace edgeq::runtime {

// The shared pool lives in formats/ (convert and quantize use it too); the runtime name stays.
using ThreadPool = edgeq::ThreadPool;

// A weight matrix as the runtime uses it: a GGUF tensor, or a palettized weight (formats/palette_layout.h), whose
// view is its index tensor with the weight's name and dims (type I8, data = the index bytes) and whose rows
// are table look-ups. Palettized weights go through dequantize + GEMM, activations rounded to f16 (their
// values are f16 table entries, so they are multiplied as F16 weights are).
struct Palette {
  int bits = 0;
  uint64_t group_rows = 0;   // rows per table
  uint64_t row_bytes = 0;    // index bytes per row
  std::vector<float> lut;    // n_groups · 2^bits entries (widened from the file's f16)
};
struct Weight : TensorView {
  Weight() = default;
  Weight(TensorView v) : TensorView(std::move(v)) {}  // NOLINT: a plain tensor is a weight
  std::shared_ptr<const Palette> palette;            // set for a palettized weight
};

// How activations are rounded before a product, to reproduce llama.cpp's CPU numerics: a column of quant's
// block-ops table (edgeq/quant/block_ops.h); act_rounding_for reads it (None for a type without a row).
using ActRounding = quant::ActRounding;
ActRounding act_rounding_for(GgmlType weight_type);
// The rounding for a weight: its type's, F16 for a palettized weight.
ActRounding act_rounding_for(const Weight& w);
// Applies the rounding in place to one row of n values (n a multiple of the block size, else no-op).
void round_activations(ActRounding r, float* x, int64_t n);

// Dot-product kernels of a weight type (ggml's vec_dot), the runtime's own table (runtime/src/kernels.cpp lists
// its kernels; the activation format is the type's block-ops row's act_rounding): out[k * out_stride] = dot
// product of one weight row (this type's blocks, n values) and activation row k (k < n_act), the activations
// already rounded to act_rounding's block format; activation row k starts at act + k * act_stride bytes. Every
// output is the same whatever n_act, and every path returns the same bits (the runtime picks the fastest).
using DotFn = void (*)(const uint8_t* weight_row, const uint8_t* act, size_t act_stride, int n_act, int64_t n,
                       float* out, size_t out_stride);
struct BlockKernels {
  DotFn scalar = nullptr;  // the portable reference; nullptr: no kernel (the runtime dequantizes instead)
  DotFn avx2 = nullptr;    // AVX2; nullptr: none
  DotFn avx512 = nullptr;  // AVX-512 VNNI (+BW/VL); nullptr: none
};
// t's kernels, or nullptr when the runtime has none.
const BlockKernels* block_kernels(GgmlType t);
// Adds or replaces t's kernels (tests and extensions; before other threads use the runtime). Throws edgeq::Error
// when t has no block-ops row, a SIMD path comes without the portable one, or the row's activations are not
// Q8_0/Q8_K.
void set_block_kernels(GgmlType t, const BlockKernels& kernels);

// Rounds n floats to the nearest f16 value in place (F16C when available; same bits as the scalar path).
void round_f16(float* x, int64_t n);

// Row stride of the rounded copies of the activations for the dequantize + GEMM path: in + 16 floats, so rows
// that would be a power of two apart (in = 2048: 8 KiB) do not map to the same L1 sets (the GEMM's micro-kernel
// reads 12 rows at once).
inline int64_t act_stride(int64_t in) { return in + 16; }

// Per-thread scratch for weight tiles.
struct MatmulScratch {
  std::vector<std::vector<float>> tiles;  // one per worker
  HugeVector<float> xr;                   // rounded activations
  HugeVector<uint8_t> xq;                 // activations as Q8_0/Q8_K blocks (quantized-kernel path)
};

// y[t, o] = sum_i x[t, i] * W[o, i] for t < n_tokens, o < out. x has row stride ldx, y row stride ldy.
// ggml_compat: round activations as llama.cpp does for this weight type.
void matmul(const Weight& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy,
            ThreadPool& pool, MatmulScratch& scratch, bool ggml_compat = true);

// matmul for an expert's rows of a mixture-of-experts FFN: llama.cpp's MUL_MAT_ID takes each row through the
// type's dot product whatever the batch, so with ggml_compat every batch size takes llama.cpp's order where it
// is reproduced (runtime/src/ggml_order.h), not only the batches of kKernelMaxTokens and more.
void matmul_expert(const Weight& w, const float* x, int64_t n_tokens, int64_t ldx, float* y, int64_t ldy,
                   ThreadPool& pool, MatmulScratch& scratch, bool ggml_compat = true);

// y_i = x · W_iᵀ (row stride: W_i's rows) for several weights reading the same activations, already rounded (no
// rounding here), on the dequantize + GEMM path, all weights' tiles in one pool run: the same bits as one matmul
// per weight with ggml_compat = false.
void matmul_dequant(std::initializer_list<std::pair<const Weight*, float*>> outs, const float* x, int64_t n_tokens,
                    int64_t ldx, ThreadPool& pool, MatmulScratch& scratch);

// Several weights multiplying the same input x (q/k/v, gate/up; at most 4), each output y with row stride = its
// weight's row count: when every one goes through a kernel (matmul_uses_kernel) with the same activation format,
// x is quantized once and one pool run covers all their rows (batch-1 decoding: fewer thread wake-ups), with
// the same results as separate matmul calls, and true is returned. Otherwise nothing is done and false returned.
bool matmul_kernels_shared(std::initializer_list<std::pair<const Weight*, float*>> outs, const float* x,
                           int64_t n_tokens, int64_t ldx, ThreadPool& pool, MatmulScratch& scratch,
                           bool ggml_compat = true);

// True when matmul sends this weight and batch through an integer dot-product kernel (ggml_compat and a
// quantized weight type with a kernel in the block-ops table below the kernels' limit, or from the limit on a
// type whose llama.cpp order of operations is reproduced: Q8_0, Q2_K..Q6_K): it then rounds the activations
// itself, so callers must not share a pre-rounded copy across weights.
bool matmul_uses_kernel(const Weight& w, int64_t n_tokens, bool ggml_compat);
// Products of fewer rows than this go through the integer kernels where one exists, larger ones through the
// dequantize + GEMM path (the two round differently).
constexpr int64_t kKernelMaxTokens = 16;

// The kernel family OpenBLAS chose ("SkylakeX", "Haswell", ...). edgeq loads OpenBLAS itself after choosing
// it from the CPU's features, because OpenBLAS 0.3.21 falls back to "Prescott" on CPUs it does not know.
std::string blas_core();

// For tests and benchmarks (not thread-safe with a product in progress): enabled=false sends quantized weights
// through dequantize + GEMM instead of the integer dot-product kernels (the SIMD level of either path is
// edgeq/base/cpu.h's set_max_level).
void set_matmul_kernels(bool enabled);

// Dequantizes rows [r0, r1) of a 2-D weight into dst (row-major, dims[0] floats per row).
void dequantize_rows(const Weight& w, int64_t r0, int64_t r1, float* dst);

}  // namespace edgeq::runtime
