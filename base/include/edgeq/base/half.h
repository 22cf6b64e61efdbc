// IEEE half and bfloat16 conversions, bit-exact with ggml's (round to nearest even; NaN kept quiet).
#pragma once
#include <cstdint>
#include <cstring>

namespace edgeq {

inline float bits_to_f32(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }
uint16_t f32_to_bf16(float f);  // as ggml_compute_fp32_to_bf16: NaN -> quiet, else round to nearest even

void f16_to_f32_row(const uint16_t* src, float* dst, int64_t n);
void f32_to_f16_row(const float* src, uint16_t* dst, int64_t n);
void bf16_to_f32_row(const uint16_t* src, float* dst, int64_t n);
void f32_to_bf16_row(const float* src, uint16_t* dst, int64_t n);

}  // namespace edgeq
