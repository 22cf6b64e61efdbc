// The batched products in llama.cpp's order (runtime/src/ggml_order.h): the portable, AVX2 and AVX-512 paths give the same
// bits, and every product equals the independent definition (dequantized weights times the activations rounded as
// llama.cpp rounds them, summed in double) to float accuracy. Bit equality with llama.cpp itself is checked
// end to end by test_arch_goldens (PPL equal to llama-perplexity's to 4 decimals).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "edgeq/base/cpu.h"
#include "edgeq/base/thread_pool.h"
#include "edgeq/runtime/matmul.h"
#include "edgeq/runtime/model.h"
#include "test_helpers.h"

namespace {

namespace rt = edgeq::runtime;
using edgeq::test::shared;

TEST(GgmlOrder, PortableEqualsAvx2AndMatchesDefinition) {
  // Files whose weights cover every type of the path: F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K,
  // IQ4_XS and the lattice i-quants IQ1_S..IQ3_S.
  for (const char* f : {"tl-8m-F16", "tl-8m-Q8_0", "tl-8m-Q4_0", "tl-8m-Q4_1", "tl-8m-Q5_0", "tl-8m-Q5_1",
                        "tl-8m-IQ4_NL", "tl-8m-Q2_K", "tl-8m-Q3_K_M", "tl-8m-Q5_K_M", "tl-8m-Q6_K", "tl-8m-IQ4_XS",
                        "tl-8m-IQ1_S-imat", "tl-8m-IQ1_M-imat", "tl-8m-IQ2_XXS-imat", "tl-8m-IQ2_XS-imat",
                        "tl-8m-IQ2_S-imat", "tl-8m-IQ3_XXS-imat", "tl-8m-IQ3_S-imat"}) {
    SCOPED_TRACE(f);
    const auto m = rt::Model::load(shared(std::string("golden/") + f + ".gguf"));
    const auto& L = m.layers()[0];
    for (const rt::Weight* w : {&L.wq, &L.wv, &L.w_down}) {
      SCOPED_TRACE(w->name);
      const int64_t in = static_cast<int64_t>(w->dims[0]), out = static_cast<int64_t>(w->n_rows()), n = 17;
      std::mt19937 g(7);
      std::normal_distribution<float> nd;
      std::vector<float> x(static_cast<size_t>(n * in));
      for (auto& v : x) v = nd(g);
      edgeq::ThreadPool pool(2);
      rt::MatmulScratch s;
      std::vector<float> y_simd(static_cast<size_t>(n * out)), y_port(y_simd.size()), y_avx2(y_simd.size());
      rt::matmul(*w, x.data(), n, in, y_simd.data(), out, pool, s, true);  // the best this CPU has
      edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx2);
      rt::matmul(*w, x.data(), n, in, y_avx2.data(), out, pool, s, true);
      edgeq::cpu::set_max_level(edgeq::cpu::Level::Portable);
      rt::matmul(*w, x.data(), n, in, y_port.data(), out, pool, s, true);
      edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx512);
      ASSERT_EQ(y_simd, y_port);
      ASSERT_EQ(y_avx2, y_port);
      std::vector<float> wd(static_cast<size_t>(out * in)), xr = x;
      rt::dequantize_rows(*w, 0, out, wd.data());
      for (int64_t t = 0; t < n; ++t) rt::round_activations(rt::act_rounding_for(*w), xr.data() + t * in, in);
      // Q4_1/Q5_1 multiply the block minimum with Q8_1's fp16-rounded activation sum s (llama.cpp's definition),
      // not with the sum of the rounded activations: up to 2^-11 of that term apart.
      const bool q8_1 = w->type == edgeq::GgmlType::Q4_1 || w->type == edgeq::GgmlType::Q5_1;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < out; r += EDGEQ_SANITIZED ? 7 : 1) {  // a slice under the sanitizers
          double ref = 0, mag = 0;
          for (int64_t i = 0; i < in; ++i) {
            ref += double(wd[r * in + i]) * xr[t * in + i];
            mag += std::fabs(double(wd[r * in + i]) * xr[t * in + i]);
          }
          ASSERT_NEAR(y_simd[t * out + r], ref, (q8_1 ? 1e-3 : 2e-6) * mag + 1e-30) << t << " " << r;
        }
    }
  }
}

}  // namespace
