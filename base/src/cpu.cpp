#include "edgeq/base/cpu.h"

#include <atomic>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace edgeq::cpu {

const Features& features() {
  static const Features f = [] {
    Features r;
#if defined(__x86_64__) || defined(__i386__)
    // __builtin_cpu_init first: this may run as a static initialiser, before libgcc's own. clang's
    // __builtin_cpu_supports does not know "f16c", so CPUID leaf 1 ECX bit 29 is read directly.
    __builtin_cpu_init();
    unsigned a = 0, b = 0, c = 0, d = 0;
    r.f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    r.avx2 = __builtin_cpu_supports("avx2");
    r.fma = __builtin_cpu_supports("fma");
    r.avx512f = __builtin_cpu_supports("avx512f");
    r.avx512bw = __builtin_cpu_supports("avx512bw");
    r.avx512dq = __builtin_cpu_supports("avx512dq");
    r.avx512vl = __builtin_cpu_supports("avx512vl");
    r.avx512vnni = __builtin_cpu_supports("avx512vnni");
#endif
    return r;
  }();
  return f;
}

Level cpu_level() {
  static const Level l = [] {
    const Features& f = features();
    if (!(f.avx2 && f.fma && f.f16c)) return Level::Portable;
    if (!(f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl)) return Level::Avx2;
    return Level::Avx512;
  }();
  return l;
}

namespace {
std::atomic<int> g_max{static_cast<int>(Level::Avx512)};
}

namespace detail {
std::atomic<int> g_level{-1};  // constant-initialised: valid before any static initialiser runs
int init_level() {
  const int c = static_cast<int>(cpu_level()), m = g_max.load(std::memory_order_relaxed);
  const int l = c < m ? c : m;
  g_level.store(l, std::memory_order_relaxed);
  return l;
}
}  // namespace detail

bool avx512_vnni() { return avx512() && features().avx512vnni; }

const char* level_name(Level l) {
  static constexpr const char* kNames[] = {"portable", "avx2", "avx512"};
  return kNames[static_cast<int>(l)];
}

void set_max_level(Level max) {
  g_max.store(static_cast<int>(max), std::memory_order_relaxed);
  detail::init_level();
}

}  // namespace edgeq::cpu
