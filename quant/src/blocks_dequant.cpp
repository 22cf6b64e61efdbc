// Scalar reference dequantizers for every supported ggml block type. The arithmetic follows gguf-py's
// dequantizers (f16 -> f32 first, then f32 products in the same order) so results match bit for bit.
#include <cstring>

#include "block_kernels.h"
#include "edgeq/base/error.h"
#include "edgeq/quant/block_ops.h"
#include "edgeq/quant/blocks.h"

namespace edgeq::quant {
using namespace detail;

namespace {
template <typename B>
const B* blocks(const void* src) {
  return static_cast<const B*>(src);
}
}  // namespace

namespace detail {

void deq_f32(const void* src, float* y, int64_t nb) {
  if (nb) std::memcpy(y, src, static_cast<size_t>(nb) * 4);
}
void deq_f16(const void* src, float* y, int64_t nb) {
  auto* s = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < nb; ++i) { uint16_t h; std::memcpy(&h, s + 2 * i, 2); y[i] = f16_to_f32(h); }
}
void deq_bf16(const void* src, float* y, int64_t nb) {
  auto* s = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < nb; ++i) { uint16_t h; std::memcpy(&h, s + 2 * i, 2); y[i] = bf16_to_f32(h); }
}
void deq_q4_0(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ4_0>(src);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(b[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>((b[i].qs[j] & 0xF) - 8);
      y[j + 16] = d * static_cast<float>((b[i].qs[j] >> 4) - 8);
    }
  }
}
void deq_q4_1(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ4_1>(src);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(b[i].d), m = load_f16(b[i].m);
    for (int j = 0; j < 16; ++j) {
      float p0 = d * static_cast<float>(b[i].qs[j] & 0xF);
      float p1 = d * static_cast<float>(b[i].qs[j] >> 4);
      y[j] = p0 + m;
      y[j + 16] = p1 + m;
    }
  }
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void deq_q5_0(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ5_0>(src);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(b[i].d);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      int q0 = (b[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4);
      int q1 = (b[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      y[j] = d * static_cast<float>(q0 - 16);
      y[j + 16] = d * static_cast<float>(q1 - 16);
    }
  }
}
void deq_q5_1(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ5_1>(src);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(b[i].d), m = load_f16(b[i].m);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < 16; ++j) {
      int q0 = (b[i].qs[j] & 0xF) | (((qh >> j) & 1) << 4);
      int q1 = (b[i].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
      float p0 = d * static_cast<float>(q0), p1 = d * static_cast<float>(q1);
      y[j] = p0 + m;
      y[j + 16] = p1 + m;
    }
  }
}
void deq_q8_0(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ8_0>(src);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(b[i].d);
    for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(b[i].qs[j]);
  }
}
void deq_q8_1(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ8_1>(src);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(b[i].d);
    for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(b[i].qs[j]);
  }
}
void deq_q2_k(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ2_K>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d), dmin = load_f16(b[i].dmin);
    const uint8_t* q = b[i].qs;
    int is = 0;
    for (int n = 0; n < QK_K; n += 128) {
      int shift = 0;
      for (int j = 0; j < 4; ++j) {
        for (int half = 0; half < 2; ++half) {
          uint8_t sc = b[i].scales[is++];
          float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
          for (int l = 0; l < 16; ++l) {
            float p = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3);
            *y++ = p - ml;
          }
        }
        shift += 2;
      }
      q += 32;
    }
  }
}
void deq_q3_k(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ3_K>(src);
  for (int64_t i = 0; i < nb; ++i, y += QK_K) {
    const float d = load_f16(b[i].d);
    for (int g = 0; g < 16; ++g) {  // 16 groups of 16 elements, one scale each
      const int e0 = 16 * g, half = e0 / 128, s = (e0 % 128) / 32, l0 = e0 % 32, bit = e0 / 32;
      const float dl = d * static_cast<float>(q3k_scale(b[i].scales, g));
      const uint8_t* qs = b[i].qs + half * 32;
      for (int l = l0; l < l0 + 16; ++l) {
        int q = ((qs[l] >> (2 * s)) & 3) - (((b[i].hmask[l] >> bit) & 1) ? 0 : 4);
        y[e0 + l - l0] = dl * static_cast<float>(q);
      }
    }
  }
}
void deq_q4_k(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ4_K>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d), dmin = load_f16(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int j = 0; j < 8; j += 2) {
      uint8_t sc, m;
      get_scale_min_k4(j, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      get_scale_min_k4(j + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) { float p = d1 * static_cast<float>(q[l] & 0xF); *y++ = p - m1; }
      for (int l = 0; l < 32; ++l) { float p = d2 * static_cast<float>(q[l] >> 4); *y++ = p - m2; }
      q += 32;
    }
  }
}
void deq_q5_k(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ5_K>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d), dmin = load_f16(b[i].dmin);
    const uint8_t* ql = b[i].qs;
    const uint8_t* qh = b[i].qh;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < 8; j += 2) {
      uint8_t sc, m;
      get_scale_min_k4(j, b[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      get_scale_min_k4(j + 1, b[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) {
        float p = d1 * static_cast<float>((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0));
        *y++ = p - m1;
      }
      for (int l = 0; l < 32; ++l) {
        float p = d2 * static_cast<float>((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0));
        *y++ = p - m2;
      }
      ql += 32;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
}
void deq_q6_k(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ6_K>(src);
  for (int64_t i = 0; i < nb; ++i, y += QK_K) {
    const float d = load_f16(b[i].d);
    for (int g = 0; g < 16; ++g) {
      const int e0 = 16 * g, half = e0 / 128, r0 = e0 % 128, nib = r0 / 64, s = r0 / 32;
      const float dl = d * static_cast<float>(b[i].scales[g]);
      const uint8_t* ql = b[i].ql + half * 64 + r0 % 64;
      const uint8_t* qh = b[i].qh + half * 32 + r0 % 32;
      for (int l = 0; l < 16; ++l) {
        int q = (((ql[l] >> (4 * nib)) & 0xF) | (((qh[l] >> (2 * s)) & 3) << 4)) - 32;
        y[e0 + l] = dl * static_cast<float>(q);
      }
    }
  }
}
void deq_q8_k(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockQ8_K>(src);
  for (int64_t i = 0; i < nb; ++i, y += QK_K) {
    float d;
    std::memcpy(&d, &b[i].d, 4);
    for (int j = 0; j < QK_K; ++j) y[j] = d * static_cast<float>(b[i].qs[j]);
  }
}
void deq_iq4_nl(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockIQ4_NL>(src);
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(b[i].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>(kIq4nlValues[b[i].qs[j] & 0xF]);
      y[j + 16] = d * static_cast<float>(kIq4nlValues[b[i].qs[j] >> 4]);
    }
  }
}
void deq_iq4_xs(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockIQ4_XS>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    uint16_t sh;
    std::memcpy(&sh, &b[i].scales_h, 2);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      int ls = ((b[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4);
      const float dl = d * static_cast<float>(ls - 32);
      const uint8_t* qs = b[i].qs + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        y[j] = dl * static_cast<float>(kIq4nlValues[qs[j] & 0xF]);
        y[j + 16] = dl * static_cast<float>(kIq4nlValues[qs[j] >> 4]);
      }
    }
  }
}
void deq_tq1_0(const void* src, float* y, int64_t nb) {
  static constexpr uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};
  auto* b = blocks<BlockTQ1_0>(src);
  auto trit = [](uint8_t q) { return static_cast<int>((static_cast<uint16_t>(q) * 3) >> 8) - 1; };
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int n = 0; n < 5; ++n)
      for (int m = 0; m < 32; ++m) *y++ = d * static_cast<float>(trit(static_cast<uint8_t>(b[i].qs[m] * pow3[n])));
    for (int n = 0; n < 5; ++n)
      for (int m = 0; m < 16; ++m)
        *y++ = d * static_cast<float>(trit(static_cast<uint8_t>(b[i].qs[32 + m] * pow3[n])));
    for (int n = 0; n < 4; ++n)
      for (int j = 0; j < 4; ++j) *y++ = d * static_cast<float>(trit(static_cast<uint8_t>(b[i].qh[j] * pow3[n])));
  }
}
void deq_tq2_0(const void* src, float* y, int64_t nb) {
  auto* b = blocks<BlockTQ2_0>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int j = 0; j < 64; j += 32)
      for (int l = 0; l < 4; ++l)
        for (int m = 0; m < 32; ++m) *y++ = d * static_cast<float>(((b[i].qs[j + m] >> (2 * l)) & 3) - 1);
  }
}

const BlockOps& dequantizable_row(GgmlType t, int64_t n) {
  const BlockOps* ops = block_ops(t);
  if (!ops || !ops->dequantize) {
    if (!ggml_type_info(t)) fail("dequantize: unknown ggml type id {}", static_cast<uint32_t>(t));
    fail("dequantize: type {} is not supported", ggml_type_name(t));
  }
  if (n < 0 || n % ops->info->block_size != 0)
    fail("dequantize {}: {} elements is not a multiple of the block size {}", ops->info->name, n,
         ops->info->block_size);
  return *ops;
}

}  // namespace detail

bool can_dequantize(GgmlType t) {
  const BlockOps* ops = block_ops(t);
  return ops && ops->dequantize;
}

void dequantize_row_scalar(GgmlType t, const void* src, float* dst, int64_t n) {
  const BlockOps& ops = dequantizable_row(t, n);
  ops.dequantize(src, dst, n / ops.info->block_size);
}

double weighted_sq_error(const float* a, const float* b, int64_t n, const float* w) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    s += (w ? static_cast<double>(w[i]) : 1.0) * d * d;
  }
  return s;
}

}  // namespace edgeq::quant
