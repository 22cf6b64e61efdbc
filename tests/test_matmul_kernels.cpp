// The quantized dot-product kernels (runtime/src/kernels.h) behind matmul: the portable path and the SIMD
// path this CPU runs give the same bits, results do not depend on the thread count, and they equal the
// product of the dequantized weights with the Q8-rounded activations up to float summation error (for Q4_1
// and Q5_1, with ggml's fp16 rounding of the Q8_1 block sums).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "edgeq/formats/ggml_types.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/base/half.h"
#include "edgeq/quant/block_layout.h"
#include "edgeq/quant/block_ops.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/runtime/matmul.h"
#include "edgeq/base/cpu.h"
#include "../runtime/src/kernels.h"  // the kernel slots and activation format, to call every path directly

namespace q = edgeq::quant;
namespace rt = edgeq::runtime;
using edgeq::GgmlType;

namespace {

struct KernelGuard {
  ~KernelGuard() {
    rt::set_matmul_kernels(true);
    edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx512);
  }
};

// ggml pairs Q4_1 and Q5_1 with Q8_1 activations: a block's minimum m multiplies s = fp16(amax/127 * sum q), not
// the exact sum of the rounded activations (fp16(amax/127) * sum q). The difference this makes to one row's dot
// product (0 for the other types), from ggml's definition of quantize_row_q8_1.
template <class B>
double q8_1_min_term(const uint8_t* wrow, const float* x, int64_t in) {
  double c = 0;
  for (int64_t b = 0; b < in / 32; ++b, x += 32) {
    B blk;
    std::memcpy(&blk, wrow + b * static_cast<int64_t>(sizeof(B)), sizeof(B));
    float amax = 0.f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.f, id = amax != 0.f ? 127.f / amax : 0.f;
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += static_cast<int>(std::nearbyint(x[j] * id));
    const double s_ggml = edgeq::f16_to_f32(edgeq::f32_to_f16(d * static_cast<float>(sum)));
    const double s_exact = static_cast<double>(edgeq::f16_to_f32(edgeq::f32_to_f16(d))) * sum;
    c += static_cast<double>(edgeq::f16_to_f32(blk.m)) * (s_ggml - s_exact);
  }
  return c;
}
double min_term(GgmlType t, const uint8_t* wrow, const float* x, int64_t in) {
  if (t == GgmlType::Q4_1) return q8_1_min_term<q::layout::BlockQ4_1>(wrow, x, in);
  if (t == GgmlType::Q5_1) return q8_1_min_term<q::layout::BlockQ5_1>(wrow, x, in);
  return 0;
}

class MatmulKernels : public ::testing::TestWithParam<GgmlType> {};

// rows x in weights of type t: wf quantized when edgeq encodes t; otherwise (a type edgeq only reads) random block
// bytes, so every grid index, sign and scale field occurs, with a finite fp16 scale d of 0.01-0.02 (IQ1_M spreads
// its d over the top nibbles of its last four 16-bit words; the other types read it from their first two bytes).
std::vector<uint8_t> weight_rows(GgmlType t, const std::vector<float>& wf, int64_t rows, int64_t in, std::mt19937& rng) {
  std::vector<uint8_t> wq(*edgeq::ggml_row_size(t, in) * static_cast<size_t>(rows));
  if (q::can_quantize(t)) {
    q::quantize_rows(t, wf.data(), wq.data(), rows, in, nullptr);
    return wq;
  }
  const size_t bs = edgeq::ggml_type_info(t)->type_size;
  std::uniform_real_distribution<float> ud(0.01f, 0.02f);
  for (auto& b : wq) b = static_cast<uint8_t>(rng());
  for (size_t o = 0; o < wq.size(); o += bs) {
    const uint16_t h = edgeq::f32_to_f16(ud(rng));
    if (t == GgmlType::IQ1_M) {
      for (int k = 0; k < 4; ++k) wq[o + 49 + 2 * k] = static_cast<uint8_t>((wq[o + 49 + 2 * k] & 0x0F) | (((h >> (4 * k)) & 0xF) << 4));
    } else {
      std::memcpy(&wq[o], &h, 2);
    }
  }
  return wq;
}

std::vector<float> run(const edgeq::TensorView& w, const std::vector<float>& x, int64_t tokens, int threads) {
  rt::ThreadPool pool(threads);
  rt::MatmulScratch scratch;
  std::vector<float> y(static_cast<size_t>(tokens * static_cast<int64_t>(w.n_rows())));
  rt::matmul(w, x.data(), tokens, static_cast<int64_t>(w.dims[0]), y.data(), static_cast<int64_t>(w.n_rows()), pool,
             scratch);
  return y;
}

TEST_P(MatmulKernels, SimdEqualsPortableAndMatchesDequantizedProduct) {
  KernelGuard guard;
  const GgmlType t = GetParam();
  const int64_t in = 512, out = 70, tokens = 5;  // 70 rows: two tiles, one partial
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> wf(static_cast<size_t>(in * out)), x(static_cast<size_t>(in * tokens));
  for (auto& v : wf) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  x[3] = 40.f;  // an outlier sets a block's scale
  for (int64_t i = 0; i < in; ++i) x[static_cast<size_t>(in + i)] = 0.f;  // an all-zero token row
  std::vector<uint8_t> wq = weight_rows(t, wf, out, in, rng);
  edgeq::TensorView w{"w", {static_cast<uint64_t>(in), static_cast<uint64_t>(out)}, t, wq.data(), wq.size()};

  rt::set_matmul_kernels(true);
  edgeq::cpu::set_max_level(edgeq::cpu::Level::Portable);
  const auto portable = run(w, x, tokens, 1);
  ASSERT_NE(rt::block_kernels(t), nullptr) << "no kernel registered: the test would compare sgemm with itself";
  edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx512);
  const auto simd1 = run(w, x, tokens, 1);
  const auto simd3 = run(w, x, tokens, 3);
  // token 2 alone (not in a group of 4) gives the same bits
  const std::vector<float> x2(x.begin() + 2 * in, x.begin() + 3 * in);
  const auto alone = run(w, x2, 1, 2);
  for (int64_t o = 0; o < out; ++o) ASSERT_EQ(alone[static_cast<size_t>(o)], simd1[static_cast<size_t>(2 * out + o)]);
  rt::set_matmul_kernels(false);
  const auto sgemm = run(w, x, tokens, 2);

  // Reference in double: dequantized weights times activations rounded exactly as llama.cpp rounds them.
  std::vector<float> wd(wf.size()), xr = x;
  rt::dequantize_rows(w, 0, out, wd.data());
  for (int64_t tk = 0; tk < tokens; ++tk) rt::round_activations(rt::act_rounding_for(t), xr.data() + tk * in, in);
  for (int64_t tk = 0; tk < tokens; ++tk) {
    for (int64_t o = 0; o < out; ++o) {
      const size_t i = static_cast<size_t>(tk * out + o);
      ASSERT_EQ(portable[i], simd1[i]) << "token " << tk << " row " << o;
      ASSERT_EQ(simd1[i], simd3[i]) << "token " << tk << " row " << o;
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < in; ++k) {
        const double p = static_cast<double>(wd[static_cast<size_t>(o * in + k)]) * xr[static_cast<size_t>(tk * in + k)];
        ref += p;
        mag += std::fabs(p);
      }
      const double ref_ggml = ref + min_term(t, wq.data() + o * static_cast<int64_t>(*edgeq::ggml_row_size(t, in)),
                                             x.data() + tk * in, in);
      EXPECT_NEAR(simd1[i], ref_ggml, 1e-5 * mag + 1e-6) << "token " << tk << " row " << o;
      EXPECT_NEAR(sgemm[i], ref, 1e-5 * mag + 1e-6) << "token " << tk << " row " << o;
      if (tk == 1) {
        EXPECT_EQ(simd1[i], 0.f);
      }
    }
  }
}

// matmul reaches only the fastest path; here every path this CPU runs (AVX2 also where AVX-512 is used) is
// called through the type's row and must give the portable path's bits, for 1 to 4 activation rows at a time.
TEST_P(MatmulKernels, EveryPathEqualsPortable) {
  namespace k = rt::kernels;
  const GgmlType t = GetParam();
  const k::Entry* entry = k::find(t);
  ASSERT_NE(entry, nullptr);
  const q::BlockOps* row = entry->ops;
  // 25 blocks of 32 (an odd count: the AVX-512 32-block paths take blocks in pairs), 3 of 256
  const int64_t in = edgeq::ggml_type_info(t)->block_size == 32 ? 800 : 768, rows = 6;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> wf(static_cast<size_t>(in * rows)), x(static_cast<size_t>(in * k::kMaxAct));
  for (auto& v : wf) v = nd(rng);
  for (auto& v : x) v = nd(rng) * 0.1f;
  x[100] = -9.f;
  const size_t rb = *edgeq::ggml_row_size(t, in), arb = k::act_row_bytes(row->act_rounding, in);
  std::vector<uint8_t> wq = weight_rows(t, wf, rows, in, rng), xq(arb * k::kMaxAct);
  for (int a = 0; a < k::kMaxAct; ++a) k::quantize_act(row->act_rounding, x.data() + a * in, xq.data() + a * arb, in);

  const std::string level = k::simd_level();
  std::vector<std::pair<const char*, rt::DotFn>> paths;
  const rt::BlockKernels& kern = *rt::block_kernels(t);
  if (level != "scalar" && kern.avx2) paths.emplace_back("avx2", kern.avx2);
  if (level == "avx512vnni" && kern.avx512) paths.emplace_back("avx512", kern.avx512);
  if (paths.empty()) GTEST_SKIP() << "no SIMD path on this CPU";
  for (int64_t r = 0; r < rows; ++r) {
    float ref[k::kMaxAct];
    kern.scalar(wq.data() + r * rb, xq.data(), arb, k::kMaxAct, in, ref, 1);
    for (const auto& [name, dot] : paths) {
      for (int na = 1; na <= k::kMaxAct; ++na) {
        for (int a0 = 0; a0 + na <= k::kMaxAct; ++a0) {
          float got[k::kMaxAct];
          dot(wq.data() + r * rb, xq.data() + a0 * arb, arb, na, in, got, 1);
          for (int a = 0; a < na; ++a) ASSERT_EQ(got[a], ref[a0 + a]) << name << " row " << r << " act " << a0 + a << " of " << na;
        }
      }
    }
  }
}

// The activation quantization's SIMD path gives the portable path's bytes, including ties of |x| between a value
// and its negation (the first one sets the scale's sign), NaNs (ignored by the maximum, then 127), infinities
// and all-zero blocks.
TEST(QuantizeAct, SimdEqualsPortable) {
  namespace k = rt::kernels;
  const int64_t n = 256 * 6;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  x[10] = -7.f, x[20] = 7.f;                                              // block 0: tie, negative first
  x[256 + 30] = 5.f, x[256 + 200] = -5.f;                                 // block 1: tie, positive first
  std::fill(x.begin() + 512, x.begin() + 768, 0.f);                       // block 2: zeros
  x[768 + 3] = std::nanf(""), x[768 + 4] = 4.f;                          // block 3: a NaN
  x[1024 + 9] = -INFINITY;                                                // block 4: an infinity
  for (int64_t j = 1280; j < n; ++j) x[static_cast<size_t>(j)] = 1e-3f * static_cast<float>(j % 7) - 3e-3f;  // block 5: small ties
  for (const auto a : {q::ActRounding::Q8_K, q::ActRounding::Q8_0}) {
    const size_t arb = k::act_row_bytes(a, n);
    std::vector<uint8_t> ref(arb), got(arb);
    edgeq::cpu::set_max_level(edgeq::cpu::Level::Portable);
    k::quantize_act(a, x.data(), ref.data(), n);
    edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx512);
    k::quantize_act(a, x.data(), got.data(), n);
    for (size_t i = 0; i < arb; ++i) ASSERT_EQ(got[i], ref[i]) << "byte " << i << (a == q::ActRounding::Q8_K ? " (Q8_K)" : " (Q8_0)");
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulKernels, ::testing::Values(GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                                                                GgmlType::Q5_1, GgmlType::IQ4_NL, GgmlType::Q2_K, GgmlType::Q3_K,
                                                                GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS,
                                                                GgmlType::IQ1_S, GgmlType::IQ1_M, GgmlType::IQ2_XXS, GgmlType::IQ2_XS,
                                                                GgmlType::IQ2_S, GgmlType::IQ3_XXS, GgmlType::IQ3_S),
                         [](const auto& info) { return std::string(edgeq::ggml_type_name(info.param)); });

}  // namespace
