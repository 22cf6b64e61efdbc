// Where each element's integer code lives inside an encoded block (the inverse of the dequantizers' unpacking),
// so that a method can keep a block's scales and choose every element's level itself (GPTQ).
#include "edgeq/quant/block_layout.h"
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

int block_code_levels(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q4_K: case GgmlType::IQ4_NL: case GgmlType::IQ4_XS: return 16;
    case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q5_K: return 32;
    case GgmlType::Q8_0: return 255;  // int8 -127 … 127, as ggml writes
    case GgmlType::Q2_K: return 4;
    case GgmlType::Q3_K: return 8;
    case GgmlType::Q6_K: return 64;
    default: return 0;
  }
}

void set_block_code(GgmlType t, void* block, int e, int code) {
  auto* p = static_cast<uint8_t*>(block);
  switch (t) {
    case GgmlType::Q4_0: set_nibble(reinterpret_cast<BlockQ4_0*>(p)->qs[e % 16], e / 16, code); return;
    case GgmlType::Q4_1: set_nibble(reinterpret_cast<BlockQ4_1*>(p)->qs[e % 16], e / 16, code); return;
    case GgmlType::IQ4_NL: set_nibble(reinterpret_cast<BlockIQ4_NL*>(p)->qs[e % 16], e / 16, code); return;
    case GgmlType::Q5_0: case GgmlType::Q5_1: {
      uint8_t* qh = t == GgmlType::Q5_0 ? reinterpret_cast<BlockQ5_0*>(p)->qh : reinterpret_cast<BlockQ5_1*>(p)->qh;
      uint8_t* qs = t == GgmlType::Q5_0 ? reinterpret_cast<BlockQ5_0*>(p)->qs : reinterpret_cast<BlockQ5_1*>(p)->qs;
      set_nibble(qs[e % 16], e / 16, code & 0xF);
      set_bits(qh[e / 8], e % 8, 1, code >> 4);
      return;
    }
    case GgmlType::Q8_0: reinterpret_cast<BlockQ8_0*>(p)->qs[e] = static_cast<int8_t>(code - 127); return;
    case GgmlType::Q2_K: set_bits(reinterpret_cast<BlockQ2_K*>(p)->qs[32 * (e / 128) + e % 32], 2 * ((e % 128) / 32), 2, code); return;
    case GgmlType::Q3_K: {
      auto* b = reinterpret_cast<BlockQ3_K*>(p);
      set_bits(b->qs[32 * (e / 128) + e % 32], 2 * ((e % 128) / 32), 2, code & 3);
      set_bits(b->hmask[e % 32], e / 32, 1, code >> 2);
      return;
    }
    case GgmlType::Q4_K: set_nibble(reinterpret_cast<BlockQ4_K*>(p)->qs[32 * (e / 64) + e % 32], (e % 64) / 32, code); return;
    case GgmlType::Q5_K: {
      auto* b = reinterpret_cast<BlockQ5_K*>(p);
      set_nibble(b->qs[32 * (e / 64) + e % 32], (e % 64) / 32, code & 0xF);
      set_bits(b->qh[e % 32], 2 * (e / 64) + (e % 64) / 32, 1, code >> 4);
      return;
    }
    case GgmlType::Q6_K: {
      auto* b = reinterpret_cast<BlockQ6_K*>(p);
      const int half = e / 128, r0 = e % 128;
      set_nibble(b->ql[64 * half + r0 % 64], r0 / 64, code & 0xF);
      set_bits(b->qh[32 * half + r0 % 32], 2 * (r0 / 32), 2, code >> 4);
      return;
    }
    case GgmlType::IQ4_XS: set_nibble(reinterpret_cast<BlockIQ4_XS*>(p)->qs[16 * (e / 32) + e % 16], (e % 32) / 16, code); return;
    default: return;
  }
}

}  // namespace edgeq::quant
