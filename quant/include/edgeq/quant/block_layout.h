// The ggml block layouts (ggml-common.h) and their small bit-packing helpers: the one copy shared by quant/'s
// codecs (blocks_*.cpp) and runtime/'s integer dot-product kernels.
#pragma once
#include <cstdint>
#include <cstring>

#include "edgeq/base/half.h"

namespace edgeq::quant::layout {

constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

// qk: elements per block (ggml's QK4_0, QK_K, ...).
#pragma pack(push, 1)
struct BlockQ4_0 { static constexpr int qk = 32; uint16_t d; uint8_t qs[16]; };
struct BlockQ4_1 { static constexpr int qk = 32; uint16_t d, m; uint8_t qs[16]; };
struct BlockQ5_0 { static constexpr int qk = 32; uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { static constexpr int qk = 32; uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ8_0 { static constexpr int qk = 32; uint16_t d; int8_t qs[32]; };
struct BlockQ8_1 { static constexpr int qk = 32; uint16_t d, s; int8_t qs[32]; };
struct BlockQ2_K { static constexpr int qk = QK_K; uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; uint16_t d, dmin; };
struct BlockQ3_K { static constexpr int qk = QK_K; uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { static constexpr int qk = QK_K; uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; };
struct BlockQ5_K { static constexpr int qk = QK_K; uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; };
struct BlockQ6_K { static constexpr int qk = QK_K; uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; };
struct BlockQ8_K { static constexpr int qk = QK_K; float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; };
struct BlockIQ4_NL { static constexpr int qk = 32; uint16_t d; uint8_t qs[16]; };
struct BlockIQ4_XS { static constexpr int qk = QK_K; uint16_t d; uint16_t scales_h; uint8_t scales_l[QK_K / 64]; uint8_t qs[QK_K / 2]; };
struct BlockTQ1_0 { static constexpr int qk = QK_K; uint8_t qs[(QK_K - 4 * QK_K / 64) / 5]; uint8_t qh[QK_K / 64]; uint16_t d; };
struct BlockTQ2_0 { static constexpr int qk = QK_K; uint8_t qs[QK_K / 4]; uint16_t d; };
// The lattice i-quants (their grids and sign tables: edgeq/quant/iq_grids.h). 8-value groups on a grid point
// with 7 sign bits (the eighth sign makes the count of minus signs even) or an explicit sign byte.
struct BlockIQ2_XXS { static constexpr int qk = QK_K; uint16_t d; uint16_t qs[QK_K / 8]; };
struct BlockIQ2_XS { static constexpr int qk = QK_K; uint16_t d; uint16_t qs[QK_K / 8]; uint8_t scales[QK_K / 32]; };
struct BlockIQ2_S { static constexpr int qk = QK_K; uint16_t d; uint8_t qs[QK_K / 4]; uint8_t qh[QK_K / 32]; uint8_t scales[QK_K / 32]; };
struct BlockIQ3_XXS { static constexpr int qk = QK_K; uint16_t d; uint8_t qs[3 * QK_K / 8]; };
struct BlockIQ3_S { static constexpr int qk = QK_K; uint16_t d; uint8_t qs[QK_K / 4]; uint8_t qh[QK_K / 32]; uint8_t signs[QK_K / 8]; uint8_t scales[QK_K / 64]; };
struct BlockIQ1_S { static constexpr int qk = QK_K; uint16_t d; uint8_t qs[QK_K / 8]; uint16_t qh[QK_K / 32]; };
// IQ1_M has no d field: its fp16 scale is spread over the top nibbles of the four 16-bit words of scales.
struct BlockIQ1_M { static constexpr int qk = QK_K; uint8_t qs[QK_K / 8]; uint8_t qh[QK_K / 16]; uint8_t scales[QK_K / 32]; };
#pragma pack(pop)

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136 && sizeof(BlockTQ1_0) == 54 &&
              sizeof(BlockTQ2_0) == 66);
static_assert(sizeof(BlockIQ2_XXS) == 66 && sizeof(BlockIQ2_XS) == 74 && sizeof(BlockIQ2_S) == 82 &&
              sizeof(BlockIQ3_XXS) == 98 && sizeof(BlockIQ3_S) == 110 && sizeof(BlockIQ1_S) == 50 &&
              sizeof(BlockIQ1_M) == 56);

inline constexpr int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// Little-endian loads (the blocks are byte arrays; x86/ARM hosts are little-endian, checked in CMake-free way).
inline float load_f16(const uint16_t& h) {
  uint16_t v;
  std::memcpy(&v, &h, 2);
  return f16_to_f32(v);
}
inline void store_f16(uint16_t& h, float f) {
  uint16_t v = f32_to_f16(f);
  std::memcpy(&h, &v, 2);
}
inline float round_f16(float f) { return f16_to_f32(f32_to_f16(f)); }

// Q4_K / Q5_K 6-bit packed scales and mins (get_scale_min_k4).
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}
inline void set_scale_min_k4(uint8_t* q, const uint8_t* ls, const uint8_t* lm) {
  std::memset(q, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      q[j] = ls[j];
      q[j + 4] = lm[j];
    } else {
      q[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
      q[j - 4] |= ((ls[j] >> 4) << 6);
      q[j - 0] |= ((lm[j] >> 4) << 6);
    }
  }
}
// Q3_K 6-bit signed scales (stored +32), 16 of them in 12 bytes.
inline int q3k_scale(const uint8_t* s, int j) {
  int lo = (j < 8) ? (s[j] & 0xF) : (s[j - 8] >> 4);
  int hi = (s[8 + (j % 4)] >> (2 * (j / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}
inline void q3k_set_scales(uint8_t* s, const int* sc /*16 values in [-32,31]*/) {
  std::memset(s, 0, 12);
  for (int j = 0; j < 16; ++j) {
    int l = sc[j] + 32;
    if (j < 8) s[j] |= (l & 0xF); else s[j - 8] |= (l & 0xF) << 4;
    s[8 + (j % 4)] |= ((l >> 4) & 3) << (2 * (j / 4));
  }
}

}  // namespace edgeq::quant::layout
