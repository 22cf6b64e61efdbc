// Throughput of quantize_rows and dequantize_row per block type, in MB/s of f32 processed
// (Google Benchmark's bytes_per_second = 4 bytes per weight), on a random-normal 64 x 4096 tensor;
// dequantization both through the SIMD dispatch (dequantize_row) and the scalar reference path.
// After the benchmarks a table prints the SIMD / scalar dequant speed ratio measured in this process.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "edgeq/base/cpu.h"
#include "edgeq/formats/ggml_types.h"
#include "edgeq/quant/blocks.h"

using edgeq::GgmlType;
namespace q = edgeq::quant;

namespace {

constexpr int64_t kRows = 64, kCols = 4096;

const std::vector<float>& data() {
  static const std::vector<float> v = [] {
    std::vector<float> x(static_cast<size_t>(kRows * kCols));
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.f, 0.02f);
    for (auto& f : x) f = nd(rng);
    return x;
  }();
  return v;
}

std::vector<uint8_t> quantized(GgmlType t) {
  std::vector<uint8_t> buf(*edgeq::ggml_row_size(t, kCols) * kRows);
  q::quantize_rows(t, data().data(), buf.data(), kRows, kCols, nullptr);
  return buf;
}

const GgmlType kTypes[] = {GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,   GgmlType::Q4_1,
                           GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K, GgmlType::Q3_K,   GgmlType::Q4_K,
                           GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS, GgmlType::TQ2_0};

void BM_Quantize(benchmark::State& st, GgmlType t) {
  std::vector<uint8_t> buf(*edgeq::ggml_row_size(t, kCols) * kRows);
  for (auto _ : st) {
    q::quantize_rows(t, data().data(), buf.data(), kRows, kCols, nullptr);
    benchmark::DoNotOptimize(buf.data());
  }
  st.SetBytesProcessed(st.iterations() * kRows * kCols * 4);
}

void BM_QuantizeImatrix(benchmark::State& st, GgmlType t) {
  std::vector<uint8_t> buf(*edgeq::ggml_row_size(t, kCols) * kRows);
  std::vector<float> imp(kCols);
  std::mt19937 rng(3);
  std::exponential_distribution<float> ed(1.f);
  for (auto& v : imp) v = ed(rng);
  for (auto _ : st) {
    q::quantize_rows(t, data().data(), buf.data(), kRows, kCols, imp.data());
    benchmark::DoNotOptimize(buf.data());
  }
  st.SetBytesProcessed(st.iterations() * kRows * kCols * 4);
}

template <bool kSimd>
void BM_Dequant(benchmark::State& st, GgmlType t) {
  const auto buf = quantized(t);
  const uint64_t rs = *edgeq::ggml_row_size(t, kCols);
  std::vector<float> out(static_cast<size_t>(kRows * kCols));
  for (auto _ : st) {
    for (int64_t r = 0; r < kRows; ++r) {
      if (kSimd) q::dequantize_row(t, buf.data() + r * rs, out.data() + r * kCols, kCols);
      else q::dequantize_row_scalar(t, buf.data() + r * rs, out.data() + r * kCols, kCols);
    }
    benchmark::DoNotOptimize(out.data());
  }
  st.SetBytesProcessed(st.iterations() * kRows * kCols * 4);
}

double best_seconds(GgmlType t, bool simd, const std::vector<uint8_t>& buf, std::vector<float>& out) {
  const uint64_t rs = *edgeq::ggml_row_size(t, kCols);
  double best = 1e9;
  for (int rep = 0; rep < 15; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t r = 0; r < kRows; ++r) {
      if (simd) q::dequantize_row(t, buf.data() + r * rs, out.data() + r * kCols, kCols);
      else q::dequantize_row_scalar(t, buf.data() + r * rs, out.data() + r * kCols, kCols);
    }
    benchmark::DoNotOptimize(out.data());
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Seconds of the fastest of reps quantize_rows calls, with the SIMD configuration set (lanes -1: portable).
// Short calls (4 rows), so that some run without being descheduled on a busy machine.
constexpr int64_t kTimedRows = 4;
double best_quantize_seconds(GgmlType t, int lanes, std::vector<uint8_t>& buf, int reps) {
  edgeq::cpu::set_max_level(lanes < 0 ? edgeq::cpu::Level::Portable : lanes >= 16 ? edgeq::cpu::Level::Avx512
                                                                               : edgeq::cpu::Level::Avx2);
  q::set_quantize_candidate_lanes(lanes != 0);
  double best = 1e9;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    q::quantize_rows(t, data().data(), buf.data(), kTimedRows, kCols, nullptr);
    benchmark::DoNotOptimize(buf.data());
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx512);
  q::set_quantize_candidate_lanes(true);
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  for (GgmlType t : kTypes) {
    const std::string n = edgeq::ggml_type_name(t);
    benchmark::RegisterBenchmark(("quantize/" + n).c_str(), BM_Quantize, t)->Unit(benchmark::kMillisecond);
    if (t != GgmlType::F16 && t != GgmlType::BF16)
      benchmark::RegisterBenchmark(("quantize_imatrix/" + n).c_str(), BM_QuantizeImatrix, t)
          ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("dequant_simd/" + n).c_str(), BM_Dequant<true>, t)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("dequant_scalar/" + n).c_str(), BM_Dequant<false>, t)
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  std::printf("\nSIMD target: %s. Dequant speed-up, SIMD path / scalar path (best of 15, same process):\n",
              q::simd_target_name());
  std::vector<float> out(static_cast<size_t>(kRows * kCols));
  for (GgmlType t : kTypes) {
    if (!q::has_simd_dequantize(t)) continue;
    const auto buf = quantized(t);
    const double s = best_seconds(t, false, buf, out), v = best_seconds(t, true, buf, out);
    std::printf("  %-7s scalar %8.1f MB/s  simd %8.1f MB/s  ratio %5.2fx\n", edgeq::ggml_type_name(t),
                kRows * kCols * 4 / s / 1e6, kRows * kCols * 4 / v / 1e6, s / v);
  }
  // The scale searches: candidate-parallel kernels (16 lanes where the CPU has AVX-512F, 8 with AVX2) against
  // the AVX2 loops scoring one candidate at a time and the portable path; same bytes in every column.
  std::printf("\nQuantize MB/s by SIMD configuration (best of 40 calls of %d rows, same process):\n",
              static_cast<int>(kTimedRows));
  std::printf("  %-7s %9s %9s %9s %9s  %s\n", "type", "16 lanes", "8 lanes", "1 cand.", "portable", "16 lanes / 1 cand.");
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q3_K, GgmlType::Q2_K, GgmlType::Q4_1}) {
    std::vector<uint8_t> buf(*edgeq::ggml_row_size(t, kCols) * kRows);
    double sec[4];
    const int lanes[4] = {16, 8, 0, -1};
    for (int i = 0; i < 4; ++i) sec[i] = best_quantize_seconds(t, lanes[i], buf, 40);
    const double mb = static_cast<double>(kTimedRows * kCols * 4) / 1e6;
    std::printf("  %-7s %9.1f %9.1f %9.1f %9.1f  %5.2fx\n", edgeq::ggml_type_name(t), mb / sec[0], mb / sec[1],
                mb / sec[2], mb / sec[3], sec[2] / sec[0]);
  }
  return 0;
}
