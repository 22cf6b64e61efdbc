// The block-ops table (see block_ops.h): one row per type, the only place that lists what edgeq can do with it.
#include "edgeq/quant/block_ops.h"

#include <deque>
#include <iterator>

#include "block_kernels.h"
#include "edgeq/base/error.h"
#include "edgeq/quant/blocks.h"

namespace edgeq::quant {
using namespace detail;

namespace {

using T = GgmlType;
using A = ActRounding;
constexpr bool W = true;  // writable: a user may request it
constexpr bool I = true;  // needs importance data (llama.cpp refuses the type without it)

// type, portable dequantizer, SIMD dequantizer, encoder, activation rounding (ggml's vec_dot_type), writable,
// shape fallback (llama.cpp b4748's replacement when a row length is not a multiple of the block size; F16
// when not given), needs importance (llama.cpp refuses the type without an importance matrix), codes (levels
// per element and their writer, or the lattice group size: GPTQ's grid).
const BlockOps kBuiltin[] = {
    {T::F32, deq_f32, nullptr, enc_f32, A::None, W},
    {T::F16, deq_f16, EDGEQ_SIMD(avx2_f16), enc_f16, A::F16, W},
    {T::BF16, deq_bf16, EDGEQ_SIMD(avx2_bf16), enc_bf16, A::None, W},
    {T::Q4_0, deq_q4_0, EDGEQ_SIMD(avx2_q4_0), each_block<enc_q4_0, BlockQ4_0>, A::Q8_0, W, T::F16, false, {16, code_q4_0}},
    {T::Q4_1, deq_q4_1, EDGEQ_SIMD(avx2_q4_1), each_block<enc_q4_1, BlockQ4_1>, A::Q8_0, W, T::F16, false, {16, code_q4_1}},
    {T::Q5_0, deq_q5_0, EDGEQ_SIMD(avx2_q5_0), each_block<enc_q5_0, BlockQ5_0>, A::Q8_0, W, T::F16, false, {32, code_q5_0}},
    {T::Q5_1, deq_q5_1, EDGEQ_SIMD(avx2_q5_1), each_block<enc_q5_1, BlockQ5_1>, A::Q8_0, W, T::F16, false, {32, code_q5_1}},
    {T::Q8_0, deq_q8_0, EDGEQ_SIMD(avx2_q8_0), each_block<enc_q8_0, BlockQ8_0>, A::Q8_0, W, T::F16, false, {255, code_q8_0}},
    {T::Q8_1, deq_q8_1, nullptr, each_block<enc_q8_1, BlockQ8_1>, A::None, false},
    {T::Q2_K, deq_q2_k, EDGEQ_SIMD(avx2_q2_k), each_block<enc_q2_k, BlockQ2_K>, A::Q8_K, W, T::IQ4_NL, false, {4, code_q2_k}},
    {T::Q3_K, deq_q3_k, EDGEQ_SIMD(avx2_q3_k), each_block<enc_q3_k, BlockQ3_K>, A::Q8_K, W, T::IQ4_NL, false, {8, code_q3_k}},
    {T::Q4_K, deq_q4_k, EDGEQ_SIMD(avx2_q4_k), each_block<enc_q4_k, BlockQ4_K>, A::Q8_K, W, T::Q5_0, false, {16, code_q4_k}},
    {T::Q5_K, deq_q5_k, EDGEQ_SIMD(avx2_q5_k), each_block<enc_q5_k, BlockQ5_K>, A::Q8_K, W, T::Q5_1, false, {32, code_q5_k}},
    {T::Q6_K, deq_q6_k, EDGEQ_SIMD(avx2_q6_k), each_block<enc_q6_k, BlockQ6_K>, A::Q8_K, W, T::Q8_0, false, {64, code_q6_k}},
    {T::Q8_K, deq_q8_k, nullptr, each_block<enc_q8_k, BlockQ8_K>, A::None, false},
    {T::IQ2_XXS, deq_iq2_xxs, EDGEQ_SIMD(avx2_iq2_xxs), each_block<enc_iq2_xxs, BlockIQ2_XXS>, A::Q8_K, W, T::IQ4_NL, I, {0, nullptr, 8}},
    {T::IQ2_XS, deq_iq2_xs, EDGEQ_SIMD(avx2_iq2_xs), each_block<enc_iq2_xs, BlockIQ2_XS>, A::Q8_K, W, T::IQ4_NL, I, {0, nullptr, 8}},
    {T::IQ3_XXS, deq_iq3_xxs, EDGEQ_SIMD(avx2_iq3_xxs), each_block<enc_iq3_xxs, BlockIQ3_XXS>, A::Q8_K, W, T::IQ4_NL, false, {0, nullptr, 8}},
    {T::IQ1_S, deq_iq1_s, EDGEQ_SIMD(avx2_iq1_s), each_block<enc_iq1_s, BlockIQ1_S>, A::Q8_K, W, T::IQ4_NL, I, {0, nullptr, 8}},
    {T::IQ4_NL, deq_iq4_nl, EDGEQ_SIMD(avx2_iq4_nl), each_block<enc_iq4_nl, BlockIQ4_NL>, A::Q8_0, W, T::F16, false, {16, code_iq4_nl}},
    {T::IQ3_S, deq_iq3_s, EDGEQ_SIMD(avx2_iq3_s), each_block<enc_iq3_s, BlockIQ3_S>, A::Q8_K, W, T::IQ4_NL, false, {0, nullptr, 8}},
    {T::IQ2_S, deq_iq2_s, EDGEQ_SIMD(avx2_iq2_s), each_block<enc_iq2_s, BlockIQ2_S>, A::Q8_K, W, T::IQ4_NL, I, {0, nullptr, 8}},
    {T::IQ4_XS, deq_iq4_xs, EDGEQ_SIMD(avx2_iq4_xs), each_block<enc_iq4_xs, BlockIQ4_XS>, A::Q8_K, W, T::IQ4_NL, false, {16, code_iq4_xs}},
    {T::IQ1_M, deq_iq1_m, EDGEQ_SIMD(avx2_iq1_m), each_block<enc_iq1_m, BlockIQ1_M>, A::Q8_K, W, T::IQ4_NL, I, {0, nullptr, 8}},
    {T::TQ1_0, deq_tq1_0, nullptr, each_block<enc_tq1_0, BlockTQ1_0>, A::None, false, T::Q4_0},
    {T::TQ2_0, deq_tq2_0, nullptr, each_block<enc_tq2_0, BlockTQ2_0>, A::None, false, T::Q4_0},
};

// Rows live in a deque (addresses stay valid as rows are registered); ids below kDirect are indexed directly.
constexpr uint32_t kDirect = 64;
struct Table {
  std::deque<BlockOps> rows;
  BlockOps* direct[kDirect] = {};
};

void check_row(const Table& tab, const BlockOps& row, const char* name) {
  if (row.writable && !row.encode) fail("block ops {}: writable without an encoder", name);
  if (row.dequantize_simd && !row.dequantize) fail("block ops {}: a SIMD dequantizer needs the portable one", name);
  if ((row.codes.levels > 0) != (row.codes.set != nullptr) || (row.codes.set && !row.dequantize))
    fail("block ops {}: codes need their levels, their writer and a dequantizer", name);
  for (const BlockOps& r : tab.rows)
    if (r.type == row.type) fail("block ops {}: the type already has a row", name);
}

void install(Table& tab, const BlockOps& ops) {
  BlockOps row = ops;
  row.info = ggml_type_info(row.type);
  if (!row.info) fail("block ops: type id {} is not in the ggml type table", static_cast<uint32_t>(row.type));
  check_row(tab, row, row.info->name);
  tab.rows.push_back(row);
  const auto id = static_cast<uint32_t>(row.type);
  if (id < kDirect) tab.direct[id] = &tab.rows.back();
}

Table& table() {
  static Table tab = [] {
    Table t;
    for (const BlockOps& ops : kBuiltin) install(t, ops);
    return t;
  }();
  return tab;
}

BlockOps* find(GgmlType t) {
  Table& tab = table();
  const auto id = static_cast<uint32_t>(t);
  if (id < kDirect) return tab.direct[id];
  for (BlockOps& r : tab.rows)
    if (r.type == t) return &r;
  return nullptr;
}

}  // namespace

const BlockOps* block_ops(GgmlType t) { return find(t); }

std::vector<const BlockOps*> block_ops_rows() {
  std::vector<const BlockOps*> out;
  for (const BlockOps& r : table().rows) out.push_back(&r);
  return out;
}

std::vector<GgmlType> writable_types() {
  std::vector<GgmlType> out;
  for (const BlockOps& r : table().rows)
    if (r.writable) out.push_back(r.type);
  return out;
}

void register_block_type(const GgmlTypeInfo& info, const BlockOps& ops) {
  if (ops.type != info.type)
    fail("register block type {}: the ops row is for type id {}", info.name ? info.name : "?",
         static_cast<uint32_t>(ops.type));
  check_row(table(), ops, info.name ? info.name : "?");  // before the formats row is added
  register_ggml_type(info);
  install(table(), ops);
}

}  // namespace edgeq::quant
