// The block-type operations table: one row per ggml type edgeq knows how to handle, like ggml's type_traits.
// formats/ggml_types.h is the base table (id, name, elements and bytes per block); a row here adds what quant/
// does with the type (the runtime keeps its dot-product kernels in its own table, edgeq/runtime/matmul.h). Every predicate (can_dequantize, can_quantize, has_simd_dequantize, the types
// a user may request) and every list is derived from these rows: adding a block type is one row here plus the
// functions it names (and one row in formats' table when the type is new to ggml_types).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "edgeq/formats/ggml_types.h"

namespace edgeq::quant {

// How activations are rounded before a product with weights of a type, to reproduce llama.cpp's CPU
// numerics (ggml's vec_dot_type): None for F32 (and BF16, kept f32), F16 for F16, Q8_0 (fp16 scale,
// 32-blocks) for the legacy types and IQ4_NL, Q8_K (256-blocks) for k-quants and the IQ 256-block types.
enum class ActRounding { None, F16, Q8_0, Q8_K };

// nblocks blocks of src (the type's bytes) -> nblocks * block_size floats.
using DequantizeFn = void (*)(const void* src, float* dst, int64_t nblocks);
// nblocks * block_size floats of x -> nblocks blocks at dst. w: one weight per element (> 0), or nullptr
// for the plain float types, which ignore it.
using EncodeFn = void (*)(const float* x, const float* w, void* dst, int64_t nblocks);
// A block's integer codes with its scales kept (the grid GPTQ rounds on): writes element e's code (0 .. levels-1)
// into an encoded block, the inverse of the dequantizer's unpacking.
using SetCodeFn = void (*)(void* block, int element, int code);
struct BlockCodes {
  int levels = 0;           // codes an element can take; 0: no per-element codes
  SetCodeFn set = nullptr;  // non-null exactly when levels > 0
  // Lattice i-quants: codes are chosen per group of this many consecutive elements (a sign byte and its grid
  // point(s); set_block_group in blocks.h), 0 for other types.
  int group = 0;
};

// Whether quantize refuses the type for a tensor without importance (llama-quantize b4748's "missing importance
// matrix ... in a very low-bit quantization": IQ1_S, IQ2_XXS, IQ2_XS, IQ2_S always, IQ1_M but for token_embd and
// output).

struct BlockOps {
  GgmlType type;
  DequantizeFn dequantize = nullptr;       // portable reference path; nullptr: cannot dequantize
  DequantizeFn dequantize_simd = nullptr;  // AVX2+F16C path, bit-identical to dequantize; nullptr: none
  EncodeFn encode = nullptr;               // quantizer; nullptr: cannot quantize
  ActRounding act_rounding = ActRounding::None;
  bool writable = false;  // a user may ask quantize for it (tensor-type overrides); implies encode != nullptr
  // The type llama-quantize uses instead when a row length is not a multiple of this type's block size (it
  // falls back once more to F16 when that type's blocks do not fit either).
  GgmlType shape_fallback = GgmlType::F16;
  // llama.cpp b4748 refuses to write the type without importance data for the tensor (llama_model_quantize_impl:
  // IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S; IQ1_M except token_embd/output; quant::tensor_needs_importance applies it).
  bool needs_importance = false;
  BlockCodes codes{};
  // Filled when the row is installed: the formats row of `type` (never nullptr in an installed row).
  const GgmlTypeInfo* info = nullptr;
};

// The row for t, or nullptr when edgeq has none. dequantize_row takes dequantize_simd at
// edgeq/base/cpu.h's level Avx2 and above.
const BlockOps* block_ops(GgmlType t);
// Every row, in table order (built-in rows first, in id order, then registered ones).
std::vector<const BlockOps*> block_ops_rows();
// The types a user may request (writable rows), in table order.
std::vector<GgmlType> writable_types();

// Adds a block type: `info` becomes a row of formats' ggml table (unless it is already there, equal) and `ops`
// a row here. For tests and extensions; call before other threads use quant/. Throws edgeq::Error when the id
// or name is taken by a different type, or the row is inconsistent (writable without an encoder).
void register_block_type(const GgmlTypeInfo& info, const BlockOps& ops);

}  // namespace edgeq::quant
