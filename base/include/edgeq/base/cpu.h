// The one CPU probe and the one SIMD-level override. Every run-time dispatch between a portable path and its
// AVX2 / AVX-512 versions (the GEMM, exp/softmax/SwiGLU, the quantized dot-product kernels, the activation
// rounding, the block dequantizers and encoders, the OpenBLAS core choice) asks here, so a test or benchmark
// switches every path at once with set_max_level(). All paths of a function produce the same bits; only the
// speed differs.
#pragma once
#include <atomic>

namespace edgeq::cpu {

// What the CPU has (CPUID, probed once; safe to call from static initialisers).
struct Features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false, avx512vnni = false;
};
const Features& features();

// The SIMD levels, in order. Avx2: AVX2 + FMA + F16C (x86-64-v3; every AVX2 path may use all three).
// Avx512: Avx2's plus AVX-512 F, BW, DQ and VL (x86-64-v4). VNNI is asked for separately (avx512_vnni()).
enum class Level : int { Portable = 0, Avx2 = 1, Avx512 = 2 };

Level cpu_level();  // the highest level this CPU has
namespace detail {
extern std::atomic<int> g_level;  // level() once known (-1 before the first call): one load per dispatch
int init_level();
}  // namespace detail
// What dispatch uses now: cpu_level(), capped by set_max_level.
inline Level level() {
  const int l = detail::g_level.load(std::memory_order_relaxed);
  return static_cast<Level>(l >= 0 ? l : detail::init_level());
}
inline bool has(Level l) { return static_cast<int>(level()) >= static_cast<int>(l); }
inline bool avx2() { return has(Level::Avx2); }
inline bool avx512() { return has(Level::Avx512); }
bool avx512_vnni();  // avx512() and the CPU has AVX-512 VNNI
const char* level_name(Level l);  // "portable", "avx2", "avx512"

// Tests and benchmarks: cap every SIMD dispatch at `max` (Level::Avx512 = no cap). Not thread-safe with work
// in progress.
void set_max_level(Level max);

}  // namespace edgeq::cpu
