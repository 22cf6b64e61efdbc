// The lattice i-quants' tables (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S): ggml-common.h's grids and
// sign tables (the data, in quant/src/iq_grids.cpp) and the field decoding of their blocks (block_layout.h), the
// one copy shared by quant/'s dequantizers and encoders and runtime/'s kernels.
//
// A grid entry packs 8 (IQ1, IQ2) or 4 (IQ3) values, one per byte, value j in byte j: IQ2's magnitudes 8, 25, 43;
// IQ3's 4, 12, ..., 62; IQ1's signed -1, 0, 1 (int8). IQ2/IQ3 values carry signs from a sign byte (bit j: value j
// negative); IQ2_XXS, IQ2_XS and IQ3_XXS store 7 sign bits and the eighth makes the number of minus signs even.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>

#include "edgeq/quant/block_layout.h"

namespace edgeq::quant::layout {

extern const uint64_t kIq2xxsGrid[256];
extern const uint64_t kIq2xsGrid[512];
extern const uint64_t kIq2sGrid[1024];
extern const uint32_t kIq3xxsGrid[256];
extern const uint32_t kIq3sGrid[512];
extern const uint64_t kIq1sGrid[2048];
// IQ1S_DELTA = IQ1M_DELTA: IQ1 values are scale * (grid value +- delta).
constexpr float kIq1Delta = 0.125f;

// ggml's ksigns_iq2xs: 7 stored sign bits -> the sign byte (bit 7 set when bits 0..6 hold an odd count).
constexpr uint8_t iq_sign_byte(uint32_t s7) {
  return static_cast<uint8_t>((s7 & 127) | ((__builtin_popcount(s7 & 127) & 1) << 7));
}
inline constexpr std::array<uint8_t, 128> kIqSigns = [] {
  std::array<uint8_t, 128> a{};
  for (uint32_t i = 0; i < 128; ++i) a[i] = iq_sign_byte(i);
  return a;
}();

// Value j (0..7) of an 8-byte grid entry as unsigned (IQ2) or signed (IQ1) byte; value j (0..3) of a 4-byte one.
inline uint8_t grid_u8(uint64_t e, int j) { return static_cast<uint8_t>(e >> (8 * j)); }
inline int8_t grid_i8(uint64_t e, int j) { return static_cast<int8_t>(static_cast<uint8_t>(e >> (8 * j))); }
inline uint8_t grid_u8(uint32_t e, int j) { return static_cast<uint8_t>(e >> (8 * j)); }

// ---- field decoding, per 32-value sub-block ib (0..7) and 8-value group l (0..3) of a block; ggml's dequantizers
// define every field (ggml-quants.c dequantize_row_iq*).

// IQ2_XXS: each sub-block is two 32-bit words: word 0 holds the 4 grid indices (bytes), word 1 the 4 x 7 sign bits
// and the 4-bit scale s (value = d * (0.5 + s) / 4 * grid * sign).
inline void iq2xxs_words(const BlockIQ2_XXS& b, int ib, uint32_t* w) { std::memcpy(w, b.qs + 4 * ib, 8); }
inline int iq2xxs_index(const uint32_t* w, int l) { return static_cast<int>((w[0] >> (8 * l)) & 255); }
inline uint8_t iq2xxs_signs(const uint32_t* w, int l) { return kIqSigns[(w[1] >> (7 * l)) & 127]; }
inline int iq2xxs_scale(const uint32_t* w) { return static_cast<int>(w[1] >> 28); }

// IQ2_XS: a 16-bit word per group (9-bit index, 7 sign bits); 4-bit scales, groups 0-1 the low nibble, 2-3 the high.
inline int iq2xs_index(const BlockIQ2_XS& b, int ib, int l) { return b.qs[4 * ib + l] & 511; }
inline uint8_t iq2xs_signs(const BlockIQ2_XS& b, int ib, int l) { return kIqSigns[b.qs[4 * ib + l] >> 9]; }
inline int iq2x_scale(const uint8_t* scales, int ib, int l) { return (scales[ib] >> (4 * (l / 2))) & 0xF; }

// IQ2_S: 10-bit index (low byte in qs, 2 high bits per group in qh[ib]), a full sign byte per group (qs[32 ..]).
inline int iq2s_index(const BlockIQ2_S& b, int ib, int l) {
  return b.qs[4 * ib + l] | ((b.qh[ib] << (8 - 2 * l)) & 0x300);
}
inline uint8_t iq2s_signs(const BlockIQ2_S& b, int ib, int l) { return b.qs[QK_K / 8 + 4 * ib + l]; }

// IQ3_XXS: 8 byte indices of 4-value grid points per sub-block, then per sub-block a 32-bit word of 4 x 7 sign bits
// and the 4-bit scale s (value = d * (0.5 + s) / 2 * grid * sign).
inline uint32_t iq3xxs_word(const BlockIQ3_XXS& b, int ib) {
  uint32_t w;
  std::memcpy(&w, b.qs + QK_K / 4 + 4 * ib, 4);
  return w;
}
inline int iq3xxs_index(const BlockIQ3_XXS& b, int ib, int k) { return b.qs[8 * ib + k]; }  // k: 0..7

// IQ3_S: 9-bit indices of 4-value points (bit 8 of index k from qh[ib] bit k), a sign byte per 8 values, 4-bit
// scales s per sub-block (sub-block ib: nibble ib % 2 of scales[ib / 2]; value = d * (1 + 2 s) * grid * sign).
inline int iq3s_index(const BlockIQ3_S& b, int ib, int k) { return b.qs[8 * ib + k] | ((b.qh[ib] << (8 - k)) & 256); }
inline int iq3s_scale(const BlockIQ3_S& b, int ib) { return (b.scales[ib / 2] >> (4 * (ib % 2))) & 0xF; }

// IQ1_S: 11-bit indices (low byte in qs, 3 high bits per group in qh[ib] bits 3l..), qh[ib] bits 12-14 the 3-bit
// scale s, bit 15 the sign of the delta (value = d * (2 s + 1) * (grid + delta)).
inline int iq1s_index(const BlockIQ1_S& b, int ib, int l) { return b.qs[4 * ib + l] | (((b.qh[ib] >> (3 * l)) & 7) << 8); }
inline int iq1s_scale(const BlockIQ1_S& b, int ib) { return (b.qh[ib] >> 12) & 7; }
inline bool iq1s_delta_neg(const BlockIQ1_S& b, int ib) { return (b.qh[ib] & 0x8000) != 0; }

// IQ1_M: 11-bit indices (high 3 bits in a nibble of qh[2 ib + l / 2], bit 3 of that nibble the delta's sign); 3-bit
// scales, groups 0-1 and 2-3 of a sub-block each their own (value = d * (2 s + 1) * (grid + delta)); d is the fp16
// made of the top nibbles of the four 16-bit words of scales.
inline void iq1m_words(const BlockIQ1_M& b, uint16_t* sc) { std::memcpy(sc, b.scales, 8); }
inline uint16_t iq1m_d_bits(const uint16_t* sc) {
  return static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
}
inline int iq1m_index(const BlockIQ1_M& b, int ib, int l) {
  return b.qs[4 * ib + l] | ((b.qh[2 * ib + l / 2] << (8 - 4 * (l % 2))) & 0x700);
}
inline bool iq1m_delta_neg(const BlockIQ1_M& b, int ib, int l) { return (b.qh[2 * ib + l / 2] & (0x08 << (4 * (l % 2)))) != 0; }
inline int iq1m_scale(const uint16_t* sc, int ib, int l) { return (sc[ib / 2] >> (6 * (ib % 2) + 3 * (l / 2))) & 7; }

}  // namespace edgeq::quant::layout
