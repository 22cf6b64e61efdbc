// Where each element's integer code lives inside an encoded block (the inverse of the dequantizers' unpacking),
// so that a method can keep a block's scales and choose every element's level itself (GPTQ). The functions are
// the block-ops table's codes column (block_ops.cpp); the lookups below read the table.
#include <cstring>

#include "block_kernels.h"
#include "edgeq/base/error.h"
#include "edgeq/quant/block_layout.h"
#include "edgeq/quant/block_ops.h"
#include "edgeq/quant/blocks.h"

namespace edgeq::quant {

using namespace layout;

namespace {
void set_nibble(uint8_t& b, int high, int v) { b = high ? static_cast<uint8_t>((b & 0x0F) | (v << 4)) : static_cast<uint8_t>((b & 0xF0) | v); }
void set_bits(uint8_t& b, int shift, int width, int v) {
  const int mask = ((1 << width) - 1) << shift;
  b = static_cast<uint8_t>((b & ~mask) | ((v << shift) & mask));
}

}  // namespace

namespace detail {
void code_q4_0(void* p, int e, int code) { set_nibble(static_cast<BlockQ4_0*>(p)->qs[e % 16], e / 16, code); }
void code_q4_1(void* p, int e, int code) { set_nibble(static_cast<BlockQ4_1*>(p)->qs[e % 16], e / 16, code); }
void code_iq4_nl(void* p, int e, int code) { set_nibble(static_cast<BlockIQ4_NL*>(p)->qs[e % 16], e / 16, code); }
template <class B>
void code_q5(B* b, int e, int code) {
  set_nibble(b->qs[e % 16], e / 16, code & 0xF);
  set_bits(b->qh[e / 8], e % 8, 1, code >> 4);
}
void code_q5_0(void* p, int e, int code) { code_q5(static_cast<BlockQ5_0*>(p), e, code); }
void code_q5_1(void* p, int e, int code) { code_q5(static_cast<BlockQ5_1*>(p), e, code); }
void code_q8_0(void* p, int e, int code) { static_cast<BlockQ8_0*>(p)->qs[e] = static_cast<int8_t>(code - 127); }
void code_q2_k(void* p, int e, int code) {
  set_bits(static_cast<BlockQ2_K*>(p)->qs[32 * (e / 128) + e % 32], 2 * ((e % 128) / 32), 2, code);
}
void code_q3_k(void* p, int e, int code) {
  auto* b = static_cast<BlockQ3_K*>(p);
  set_bits(b->qs[32 * (e / 128) + e % 32], 2 * ((e % 128) / 32), 2, code & 3);
  set_bits(b->hmask[e % 32], e / 32, 1, code >> 2);
}
void code_q4_k(void* p, int e, int code) {
  set_nibble(static_cast<BlockQ4_K*>(p)->qs[32 * (e / 64) + e % 32], (e % 64) / 32, code);
}
void code_q5_k(void* p, int e, int code) {
  auto* b = static_cast<BlockQ5_K*>(p);
  set_nibble(b->qs[32 * (e / 64) + e % 32], (e % 64) / 32, code & 0xF);
  set_bits(b->qh[e % 32], 2 * (e / 64) + (e % 64) / 32, 1, code >> 4);
}
void code_q6_k(void* p, int e, int code) {
  auto* b = static_cast<BlockQ6_K*>(p);
  const int half = e / 128, r0 = e % 128;
  set_nibble(b->ql[64 * half + r0 % 64], r0 / 64, code & 0xF);
  set_bits(b->qh[32 * half + r0 % 32], 2 * (r0 / 32), 2, code >> 4);
}
void code_iq4_xs(void* p, int e, int code) {
  set_nibble(static_cast<BlockIQ4_XS*>(p)->qs[16 * (e / 32) + e % 16], (e % 32) / 16, code);
}
}  // namespace detail

int block_code_levels(GgmlType t) {
  const BlockOps* r = block_ops(t);
  return r ? r->codes.levels : 0;
}

int block_code_group(GgmlType t) {
  const BlockOps* r = block_ops(t);
  return r ? r->codes.group : 0;
}

void set_block_code(GgmlType t, void* block, int e, int code) {
  const BlockOps* r = block_ops(t);
  if (!r || !r->codes.set) fail("set_block_code: {} has no per-element codes", ggml_type_name(t));
  r->codes.set(block, e, code);
}

constexpr size_t kMaxProbeBytes = 512;  // above every block type with codes (Q6_K's 210 bytes is the largest)

void block_level_values(GgmlType t, const void* block, float* values) {
  const BlockOps* r = block_ops(t);
  if (!r || !r->codes.set) fail("block_level_values: {} has no per-element codes", ggml_type_name(t));
  const int g = static_cast<int>(r->info->block_size);
  alignas(16) uint8_t probe[kMaxProbeBytes];  // a copy of the block (GPTQ calls this per block: no allocation)
  if (r->info->type_size > sizeof probe) fail("block_level_values: {}'s blocks exceed {} bytes", r->info->name, sizeof probe);
  for (int k = 0; k < r->codes.levels; ++k) {
    std::memcpy(probe, block, r->info->type_size);
    for (int e = 0; e < g; ++e) r->codes.set(probe, e, k);
    r->dequantize(probe, values + static_cast<size_t>(k) * static_cast<size_t>(g), 1);
  }
}

}  // namespace edgeq::quant
