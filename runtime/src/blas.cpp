#include "edgeq/runtime/blas.h"

#include <dlfcn.h>

#include <cstdlib>

#include "edgeq/base/cpu.h"
#include "edgeq/base/error.h"

namespace edgeq::runtime::blas {
namespace {

const char* core_for_this_cpu() {
  // The CPU's own level (AVX-512 F/BW/DQ/VL -> SkylakeX, AVX2+FMA -> Haswell), not the tests' override.
  switch (cpu::cpu_level()) {
    case cpu::Level::Avx512: return "SkylakeX";
    case cpu::Level::Avx2: return "Haswell";
    default: return nullptr;  // older CPUs are known to OpenBLAS 0.3.21: let it choose
  }
}

struct OpenBlas {
  Api api;
  decltype(&openblas_get_corename) corename = nullptr;

  OpenBlas() {
    const char* core = std::getenv("OPENBLAS_CORETYPE") == nullptr ? core_for_this_cpu() : nullptr;
    if (core != nullptr) setenv("OPENBLAS_CORETYPE", core, 0);
    void* h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (core != nullptr) unsetenv("OPENBLAS_CORETYPE");
    if (h == nullptr) throw Error(std::string("cannot load OpenBLAS: ") + dlerror());
    api.sgemm = reinterpret_cast<decltype(api.sgemm)>(dlsym(h, "cblas_sgemm"));
    api.dsymm = reinterpret_cast<decltype(api.dsymm)>(dlsym(h, "cblas_dsymm"));
    api.dpotrf = reinterpret_cast<decltype(api.dpotrf)>(dlsym(h, "dpotrf_"));
    api.dpotri = reinterpret_cast<decltype(api.dpotri)>(dlsym(h, "dpotri_"));
    corename = reinterpret_cast<decltype(corename)>(dlsym(h, "openblas_get_corename"));
    auto set_threads = reinterpret_cast<decltype(&openblas_set_num_threads)>(dlsym(h, "openblas_set_num_threads"));
    if (api.sgemm == nullptr || api.dsymm == nullptr ||
        api.dpotrf == nullptr || api.dpotri == nullptr || corename == nullptr || set_threads == nullptr) {
      throw Error("cannot load OpenBLAS: libopenblas.so.0 lacks a BLAS/LAPACK function edgeq uses");
    }
    set_threads(1);
    // The pthread build starts a thread pool when it is loaded, and its idle threads spin for ~0.1 s, taking a
    // core from short commands; edgeq calls sgemm with one OpenBLAS thread, so the pool is released at once.
    // Other OpenBLAS builds (serial, OpenMP) lack the symbol.
    if (auto shutdown = reinterpret_cast<int (*)()>(dlsym(h, "blas_thread_shutdown_"))) shutdown();
  }
};

const OpenBlas& lib() {
  static const OpenBlas b;
  return b;
}

}  // namespace

const Api& api() { return lib().api; }

std::string core() {
  const char* c = lib().corename();
  return c != nullptr ? c : "";
}

}  // namespace edgeq::runtime::blas
