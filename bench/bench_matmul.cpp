// matmul at the 0.74B model's FFN shape (2048 -> 5632) for 1, 8, 64 tokens and each weight type with an
// integer kernel: the kernels (SIMD, and portable), against dequantize + sgemm, in one process.
//   bench_matmul [--benchmark_filter=...]   e.g. --benchmark_filter='Q3_K' for one type
// (mode sgemm is also what a type without a kernel runs: the before/after ratio of adding one)
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "edgeq/base/cpu.h"
#include "edgeq/formats/ggml_types.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/runtime/matmul.h"

namespace {

using edgeq::GgmlType;
constexpr int64_t kIn = 2048, kOut = 5632;

// mode 0: dequantize + sgemm, 1: kernels (SIMD), 2: kernels (portable)
void BM_Matmul(benchmark::State& st, GgmlType t, int mode) {
  const int64_t tokens = st.range(0);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> wf(static_cast<size_t>(kIn * kOut)), x(static_cast<size_t>(kIn * tokens)),
      y(static_cast<size_t>(kOut * tokens));
  for (auto& v : wf) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  std::vector<uint8_t> wq(*edgeq::ggml_row_size(t, kIn) * kOut);
  if (edgeq::quant::can_quantize(t)) {
    edgeq::quant::quantize_rows(t, wf.data(), wq.data(), kOut, kIn, nullptr);
  } else {  // a type edgeq only reads (the lattice i-quants before their encoders): random blocks, finite scales
    const size_t bs = edgeq::ggml_type_info(t)->type_size;
    for (auto& b : wq) b = static_cast<uint8_t>(rng());
    for (size_t o = 0; o < wq.size(); o += bs) {
      if (t == GgmlType::IQ1_M) wq[o + bs - 1] &= 0x3F;  // its fp16 scale's sign and top exponent bit
      else wq[o + 1] &= 0x3F;
    }
  }
  edgeq::TensorView w{"w", {kIn, kOut}, t, wq.data(), wq.size()};
  edgeq::runtime::ThreadPool pool(1);
  edgeq::runtime::MatmulScratch scratch;
  edgeq::runtime::set_matmul_kernels(mode != 0);
  if (mode == 2) edgeq::cpu::set_max_level(edgeq::cpu::Level::Portable);
  for (auto _ : st) {
    edgeq::runtime::matmul(w, x.data(), tokens, kIn, y.data(), kOut, pool, scratch);
    benchmark::DoNotOptimize(y.data());
  }
  edgeq::runtime::set_matmul_kernels(true);
  edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx512);
  st.counters["GMAC/s"] = benchmark::Counter(static_cast<double>(kIn * kOut * tokens) * 1e-9 *
                                             static_cast<double>(st.iterations()), benchmark::Counter::kIsRate);
  // weight bytes read per second: the speed per weight byte (issue 21: an IQ2 file no slower per byte than Q2_K)
  st.counters["wGB/s"] = benchmark::Counter(static_cast<double>(wq.size()) * 1e-9 * static_cast<double>(st.iterations()),
                                            benchmark::Counter::kIsRate);
}

#define EDGEQ_BENCH_TYPE(T)                                                                          \
  BENCHMARK_CAPTURE(BM_Matmul, T##_sgemm, GgmlType::T, 0)->Arg(1)->Arg(8)->Arg(64)->Unit(benchmark::kMillisecond); \
  BENCHMARK_CAPTURE(BM_Matmul, T##_kernel, GgmlType::T, 1)->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond);         \
  BENCHMARK_CAPTURE(BM_Matmul, T##_kernel_portable, GgmlType::T, 2)->Arg(1)->Unit(benchmark::kMillisecond);

EDGEQ_BENCH_TYPE(Q4_0)
EDGEQ_BENCH_TYPE(Q4_1)
EDGEQ_BENCH_TYPE(Q5_0)
EDGEQ_BENCH_TYPE(Q5_1)
EDGEQ_BENCH_TYPE(Q8_0)
EDGEQ_BENCH_TYPE(IQ4_NL)
EDGEQ_BENCH_TYPE(Q2_K)
EDGEQ_BENCH_TYPE(Q3_K)
EDGEQ_BENCH_TYPE(Q4_K)
EDGEQ_BENCH_TYPE(Q5_K)
EDGEQ_BENCH_TYPE(Q6_K)
EDGEQ_BENCH_TYPE(IQ4_XS)
EDGEQ_BENCH_TYPE(IQ1_S)
EDGEQ_BENCH_TYPE(IQ1_M)
EDGEQ_BENCH_TYPE(IQ2_XXS)
EDGEQ_BENCH_TYPE(IQ2_XS)
EDGEQ_BENCH_TYPE(IQ2_S)
EDGEQ_BENCH_TYPE(IQ3_XXS)
EDGEQ_BENCH_TYPE(IQ3_S)

}  // namespace

BENCHMARK_MAIN();
