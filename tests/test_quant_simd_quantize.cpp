// The SIMD paths of quantize_rows must write exactly the bytes of the portable path, for every type, with
// and without importance weights, on random rows and on real tl-8m weights.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "edgeq/base/cpu.h"
#include "edgeq/formats/ggml_types.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/quant/blocks.h"

namespace q = edgeq::quant;
using edgeq::GgmlType;

namespace {

const GgmlType kTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                           GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                           GgmlType::IQ4_NL, GgmlType::IQ4_XS};

// Every SIMD configuration: AVX-512 candidate lanes (where the CPU has them), AVX2 candidate lanes, and the
// AVX2 loops over one candidate at a time.
const int kLanes[] = {16, 8, 0};

struct SimdGuard {
  ~SimdGuard() {
    edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx512);
    q::set_quantize_candidate_lanes(true);
  }
};

// lanes: the candidate-parallel width cap (16, 8, 0); -1: the portable path.
std::vector<uint8_t> quantize(GgmlType t, const std::vector<float>& x, int64_t rows, int64_t n, const float* imp,
                              int lanes) {
  edgeq::cpu::set_max_level(lanes < 0 ? edgeq::cpu::Level::Portable : lanes >= 16 ? edgeq::cpu::Level::Avx512
                                                                               : edgeq::cpu::Level::Avx2);
  q::set_quantize_candidate_lanes(lanes != 0);
  std::vector<uint8_t> out(*edgeq::ggml_row_size(t, static_cast<uint64_t>(n)) * static_cast<size_t>(rows));
  q::quantize_rows(t, x.data(), out.data(), rows, n, imp);
  return out;
}

size_t first_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return i;
  return a.size();
}

}  // namespace

TEST(QuantSimd, RandomRowsSameBytesAsPortablePath) {
  if (!q::quantize_simd_active()) GTEST_SKIP() << "no SIMD quantize path on this CPU";
  // The widest candidate-parallel kernels are the default.
  EXPECT_EQ(q::quantize_simd_lanes(), edgeq::cpu::avx512() ? 16 : 8);
  SimdGuard guard;
  const int64_t rows = 24, n = 512;
  std::mt19937 rng(1234);
  std::normal_distribution<float> g(0.f, 1.f);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(rows * n)), imp(static_cast<size_t>(n));
  for (size_t i = 0; i < x.size(); ++i) {
    const int64_t r = static_cast<int64_t>(i) / n;
    float v = g(rng) * (0.01f + 0.1f * static_cast<float>(r));
    if (r % 4 == 1) v = std::fabs(v);                            // one-signed rows (min > 0)
    if (r % 4 == 2 && u(rng) < 0.02f) v *= 40.f;                 // outliers
    if (r % 8 == 3 && (i % 32) < 16) v = 0.f;                    // zero runs
    x[i] = v;
  }
  for (auto& v : imp) v = u(rng) * u(rng) * 10.f;
  for (GgmlType t : kTypes) {
    for (const float* w : {static_cast<const float*>(nullptr), static_cast<const float*>(imp.data())}) {
      auto b = quantize(t, x, rows, n, w, -1);
      for (int lanes : kLanes) {
        auto a = quantize(t, x, rows, n, w, lanes);
        EXPECT_EQ(first_diff(a, b), a.size())
            << edgeq::ggml_type_name(t) << (w ? " with importance" : "") << ", lanes " << lanes;
      }
    }
  }
}

TEST(QuantSimd, RealWeightsSameBytesAsPortablePath) {
  if (!q::quantize_simd_active()) GTEST_SKIP() << "no SIMD quantize path on this CPU";
  SimdGuard guard;
  auto f = edgeq::GgufFile::open(std::string(EDGEQ_SHARED_DIR) + "/golden/tl-8m-F16.gguf");
  int checked = 0;
  for (const char* name : {"blk.0.attn_q.weight", "blk.3.ffn_down.weight"}) {
    const edgeq::TensorView v = f.view(name);
    const int64_t n = static_cast<int64_t>(v.dims[0]);
    const int64_t rows = 32;
    ASSERT_GE(v.n_rows(), static_cast<uint64_t>(rows)) << name;
    std::vector<float> x(static_cast<size_t>(rows * n));
    q::dequantize_row(v.type, v.data, x.data(), rows * n);
    for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q2_K, GgmlType::Q4_1, GgmlType::Q5_1,
                       GgmlType::Q6_K, GgmlType::Q3_K, GgmlType::IQ4_XS, GgmlType::IQ4_NL, GgmlType::Q4_0}) {
      auto b = quantize(t, x, rows, n, nullptr, -1);
      for (int lanes : kLanes) {
        auto a = quantize(t, x, rows, n, nullptr, lanes);
        EXPECT_EQ(first_diff(a, b), a.size()) << name << " " << edgeq::ggml_type_name(t) << ", lanes " << lanes;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 20);
}
