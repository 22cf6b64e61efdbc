// OpenBLAS, loaded at run time. Debian's OpenBLAS (a DYNAMIC_ARCH build) picks its kernels from the CPU model
// when the library is loaded, and 0.3.21 does not know recent CPUs: it falls back to its SSE3 "Prescott"
// kernels, 2-3x slower than its AVX-512 ones. It honours OPENBLAS_CORETYPE, read by its constructor, which for
// a library linked at build time runs before main (and before libc has set up the environment, so not even an
// executable's .preinit_array can set it). edgeq therefore does not link OpenBLAS: the first product sets
// OPENBLAS_CORETYPE from the features the CPU and OS offer (AVX-512 F/BW/DQ/VL -> SkylakeX, AVX2+FMA ->
// Haswell; a value the user set is kept), dlopens libopenblas.so.0, and removes the variable again so child
// processes see the user's environment. OpenBLAS runs single-threaded: edgeq threads products itself.
// Every BLAS/LAPACK call in edgeq goes through here (calibrate's GPTQ and Hessians; the forward pass uses the
// runtime's own GEMM, runtime/src/gemm.h): nothing links OpenBLAS.
#pragma once
#include <cblas.h>

#include <string>

namespace edgeq::runtime::blas {

// The OpenBLAS entry points edgeq uses, resolved from the library loaded as described above.
struct Api {
  decltype(&cblas_sgemm) sgemm = nullptr;
  decltype(&cblas_dsymm) dsymm = nullptr;
  // LAPACK (OpenBLAS ships it), column-major: Cholesky factorisation and the inverse from it.
  void (*dpotrf)(const char* uplo, const int* n, double* a, const int* lda, int* info) = nullptr;
  void (*dpotri)(const char* uplo, const int* n, double* a, const int* lda, int* info) = nullptr;
};
const Api& api();  // loads OpenBLAS on first use; throws edgeq::Error when it cannot

// The kernel family OpenBLAS chose ("SkylakeX", "Haswell", ...).
std::string core();

}  // namespace edgeq::runtime::blas
