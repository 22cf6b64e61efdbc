// Portable dequantizers of the lattice i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S): the float
// operations of ggml's dequantize_row_iq* in the same order (the scale's product, then times the grid value, then
// the sign), so the values are ggml's bit for bit; and their AVX2 versions (the same operations). Fields are
// decoded by edgeq/quant/iq_grids.h.
#include "block_kernels.h"
#include "edgeq/quant/iq_grids.h"

#if EDGEQ_QUANT_AVX2
#include <immintrin.h>
#endif

namespace edgeq::quant::detail {

namespace {
template <typename B>
const B* blocks(const void* src) {
  return static_cast<const B*>(src);
}
// The n values of a grid entry (magnitudes) with signs from bits sign_bit0.. of signs, times scale db: ggml's
// db * grid[j] * (+-1.f).
template <typename Entry>
inline void signed_group(float db, Entry e, uint8_t signs, int sign_bit0, int n, float* y) {
  for (int j = 0; j < n; ++j)
    y[j] = db * static_cast<float>(grid_u8(e, j)) * ((signs >> (sign_bit0 + j)) & 1 ? -1.f : 1.f);
}
// IQ1: dl * (grid value + delta), the sum exact in float.
inline void iq1_group(float dl, uint64_t e, float delta, float* y) {
  for (int j = 0; j < 8; ++j) y[j] = dl * (static_cast<float>(grid_i8(e, j)) + delta);
}
}  // namespace

void deq_iq2_xxs(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ2_XXS>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t w[2];
      iq2xxs_words(b[i], ib, w);
      const float db = d * (0.5f + static_cast<float>(iq2xxs_scale(w))) * 0.25f;
      for (int l = 0; l < 4; ++l, y += 8) signed_group(db, kIq2xxsGrid[iq2xxs_index(w, l)], iq2xxs_signs(w, l), 0, 8, y);
    }
  }
}

void deq_iq2_xs(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ2_XS>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib)
      for (int l = 0; l < 4; ++l, y += 8) {
        const float db = d * (0.5f + static_cast<float>(iq2x_scale(b[i].scales, ib, l))) * 0.25f;
        signed_group(db, kIq2xsGrid[iq2xs_index(b[i], ib, l)], iq2xs_signs(b[i], ib, l), 0, 8, y);
      }
  }
}

void deq_iq2_s(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ2_S>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib)
      for (int l = 0; l < 4; ++l, y += 8) {
        const float db = d * (0.5f + static_cast<float>(iq2x_scale(b[i].scales, ib, l))) * 0.25f;
        signed_group(db, kIq2sGrid[iq2s_index(b[i], ib, l)], iq2s_signs(b[i], ib, l), 0, 8, y);
      }
  }
}

void deq_iq3_xxs(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ3_XXS>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t w = iq3xxs_word(b[i], ib);
      const float db = d * (0.5f + static_cast<float>(w >> 28)) * 0.5f;
      for (int l = 0; l < 4; ++l, y += 8) {
        const uint8_t signs = kIqSigns[(w >> (7 * l)) & 127];
        signed_group(db, kIq3xxsGrid[iq3xxs_index(b[i], ib, 2 * l)], signs, 0, 4, y);
        signed_group(db, kIq3xxsGrid[iq3xxs_index(b[i], ib, 2 * l + 1)], signs, 4, 4, y + 4);
      }
    }
  }
}

void deq_iq3_s(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ3_S>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      const float db = d * static_cast<float>(1 + 2 * iq3s_scale(b[i], ib));
      for (int l = 0; l < 4; ++l, y += 8) {
        const uint8_t signs = b[i].signs[4 * ib + l];
        signed_group(db, kIq3sGrid[iq3s_index(b[i], ib, 2 * l)], signs, 0, 4, y);
        signed_group(db, kIq3sGrid[iq3s_index(b[i], ib, 2 * l + 1)], signs, 4, 4, y + 4);
      }
    }
  }
}

void deq_iq1_s(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ1_S>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      const float dl = d * static_cast<float>(2 * iq1s_scale(b[i], ib) + 1);
      const float delta = iq1s_delta_neg(b[i], ib) ? -kIq1Delta : kIq1Delta;
      for (int l = 0; l < 4; ++l, y += 8) iq1_group(dl, kIq1sGrid[iq1s_index(b[i], ib, l)], delta, y);
    }
  }
}

void deq_iq1_m(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ1_M>(src);
  for (int64_t i = 0; i < nb; ++i) {
    uint16_t sc[4];
    iq1m_words(b[i], sc);
    const float d = f16_to_f32(iq1m_d_bits(sc));
    for (int ib = 0; ib < 8; ++ib)
      for (int l = 0; l < 4; ++l, y += 8) {
        const float dl = d * static_cast<float>(2 * iq1m_scale(sc, ib, l) + 1);
        iq1_group(dl, kIq1sGrid[iq1m_index(b[i], ib, l)], iq1m_delta_neg(b[i], ib, l) ? -kIq1Delta : kIq1Delta, y);
      }
  }
}

#if EDGEQ_QUANT_AVX2
// AVX2 + F16C: the same float operations per value (db * grid value, times +-1.f; IQ1: dl * (grid value + delta)),
// eight values at a time, so the bits equal the portable dequantizers'.
namespace {
// db * (8 grid values, bytes of e) * (bit j of signs ? -1.f : 1.f)
EDGEQ_AVX2 inline void signed8(float* y, __m256 db, uint64_t e, uint32_t signs) {
  const __m256 g = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(e))));
  const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i neg = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(signs)), bits), bits);
  const __m256 sgn = _mm256_blendv_ps(_mm256_set1_ps(1.f), _mm256_set1_ps(-1.f), _mm256_castsi256_ps(neg));
  _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_mul_ps(db, g), sgn));
}
// dl * (8 grid values in -1, 0, 1 + delta)
EDGEQ_AVX2 inline void iq1_8(float* y, __m256 dl, uint64_t e, float delta) {
  const __m256 g = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(e))));
  _mm256_storeu_ps(y, _mm256_mul_ps(dl, _mm256_add_ps(g, _mm256_set1_ps(delta))));
}
inline uint64_t pair(uint32_t lo, uint32_t hi) { return lo | (static_cast<uint64_t>(hi) << 32); }
}  // namespace

EDGEQ_AVX2 void avx2_iq2_xxs(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ2_XXS>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t w[2];
      iq2xxs_words(b[i], ib, w);
      const __m256 db = _mm256_set1_ps(d * (0.5f + static_cast<float>(iq2xxs_scale(w))) * 0.25f);
      for (int l = 0; l < 4; ++l, y += 8) signed8(y, db, kIq2xxsGrid[iq2xxs_index(w, l)], iq2xxs_signs(w, l));
    }
  }
}

EDGEQ_AVX2 void avx2_iq2_xs(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ2_XS>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib)
      for (int l = 0; l < 4; ++l, y += 8) {
        const __m256 db = _mm256_set1_ps(d * (0.5f + static_cast<float>(iq2x_scale(b[i].scales, ib, l))) * 0.25f);
        signed8(y, db, kIq2xsGrid[iq2xs_index(b[i], ib, l)], iq2xs_signs(b[i], ib, l));
      }
  }
}

EDGEQ_AVX2 void avx2_iq2_s(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ2_S>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib)
      for (int l = 0; l < 4; ++l, y += 8) {
        const __m256 db = _mm256_set1_ps(d * (0.5f + static_cast<float>(iq2x_scale(b[i].scales, ib, l))) * 0.25f);
        signed8(y, db, kIq2sGrid[iq2s_index(b[i], ib, l)], iq2s_signs(b[i], ib, l));
      }
  }
}

EDGEQ_AVX2 void avx2_iq3_xxs(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ3_XXS>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t w = iq3xxs_word(b[i], ib);
      const __m256 db = _mm256_set1_ps(d * (0.5f + static_cast<float>(w >> 28)) * 0.5f);
      for (int l = 0; l < 4; ++l, y += 8)
        signed8(y, db, pair(kIq3xxsGrid[iq3xxs_index(b[i], ib, 2 * l)], kIq3xxsGrid[iq3xxs_index(b[i], ib, 2 * l + 1)]),
                kIqSigns[(w >> (7 * l)) & 127]);
    }
  }
}

EDGEQ_AVX2 void avx2_iq3_s(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ3_S>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      const __m256 db = _mm256_set1_ps(d * static_cast<float>(1 + 2 * iq3s_scale(b[i], ib)));
      for (int l = 0; l < 4; ++l, y += 8)
        signed8(y, db, pair(kIq3sGrid[iq3s_index(b[i], ib, 2 * l)], kIq3sGrid[iq3s_index(b[i], ib, 2 * l + 1)]),
                b[i].signs[4 * ib + l]);
    }
  }
}

EDGEQ_AVX2 void avx2_iq1_s(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ1_S>(src);
  for (int64_t i = 0; i < nb; ++i) {
    const float d = load_f16(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      const __m256 dl = _mm256_set1_ps(d * static_cast<float>(2 * iq1s_scale(b[i], ib) + 1));
      const float delta = iq1s_delta_neg(b[i], ib) ? -kIq1Delta : kIq1Delta;
      for (int l = 0; l < 4; ++l, y += 8) iq1_8(y, dl, kIq1sGrid[iq1s_index(b[i], ib, l)], delta);
    }
  }
}

EDGEQ_AVX2 void avx2_iq1_m(const void* src, float* y, int64_t nb) {
  const auto* b = blocks<BlockIQ1_M>(src);
  for (int64_t i = 0; i < nb; ++i) {
    uint16_t sc[4];
    iq1m_words(b[i], sc);
    const float d = f16_to_f32(iq1m_d_bits(sc));
    for (int ib = 0; ib < 8; ++ib)
      for (int l = 0; l < 4; ++l, y += 8) {
        const __m256 dl = _mm256_set1_ps(d * static_cast<float>(2 * iq1m_scale(sc, ib, l) + 1));
        iq1_8(y, dl, kIq1sGrid[iq1m_index(b[i], ib, l)], iq1m_delta_neg(b[i], ib, l) ? -kIq1Delta : kIq1Delta);
      }
  }
}
#endif

}  // namespace edgeq::quant::detail
