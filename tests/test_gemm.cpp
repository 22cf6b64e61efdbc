// The batched path's f32 product (runtime/src/gemm.h) and row operations (runtime/src/vec.h): the AVX-512 and AVX2
// paths (those this CPU has) and the portable one give the same bits, any split of C into blocks gives the same bits as the whole
// (so results do not depend on the thread count), and the results match double-precision references.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "edgeq/base/cpu.h"
#include "edgeq/runtime/matmul.h"
#include "../runtime/src/gemm.h"  // called directly: shapes and layouts the forward pass does not reach
#include "../runtime/src/vec.h"

namespace rt = edgeq::runtime;
namespace gemm = edgeq::runtime::gemm;
namespace vec = edgeq::runtime::vec;

namespace {

struct SimdGuard {
  ~SimdGuard() {
    edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx512);
  }
};

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

TEST(Gemm, SimdEqualsPortableAnyBlockingAndMatchesDouble) {
  SimdGuard guard;
  const int64_t ms[] = {1, 5, 13, 37}, ns[] = {1, 17, 32, 45, 70}, ks[] = {1, 3, 31, 300, 600};
  for (int64_t m : ms)
    for (int64_t n : ns)
      for (int64_t k : ks) {
        SCOPED_TRACE(testing::Message() << "m " << m << " n " << n << " k " << k);
        const int64_t lda = k + 3, ldw = k + 5, ldc = n + 7;
        const auto a = randn(static_cast<size_t>(m * lda), 1);
        const auto w = randn(static_cast<size_t>(n * ldw), 2);  // n rows of k: B = Wᵀ
        std::vector<float> packed(static_cast<size_t>(gemm::packed_size(n, k)));
        gemm::pack_transposed(w.data(), n, k, ldw, packed.data());
        // The same B row-major ([k][n], row stride n + 2), as attention's V.
        std::vector<float> bt(static_cast<size_t>(k * (n + 2)));
        for (int64_t p = 0; p < k; ++p)
          for (int64_t j = 0; j < n; ++j) bt[p * (n + 2) + j] = w[j * ldw + p];
        auto run = [&](int path, bool row_major) {  // 0 portable, 1 AVX2, 2 AVX-512 (each where the CPU has it)
          edgeq::cpu::set_max_level(static_cast<edgeq::cpu::Level>(path));
          std::vector<float> c(static_cast<size_t>(m * ldc), -1.f);
          const gemm::B b = row_major ? gemm::B{bt.data(), n + 2, gemm::kPanel} : gemm::packed(packed.data(), k);
          gemm::gemm(m, n, k, a.data(), lda, b, c.data(), ldc);
          return c;
        };
        const auto ref = run(0, false);
        EXPECT_EQ(run(0, true), ref);
        for (int path : {1, 2}) {
          EXPECT_EQ(run(path, false), ref) << path;
          EXPECT_EQ(run(path, true), ref) << path;
        }
        // Rows one at a time and the columns of the second panel on their own: the thread splits' blocks.
        edgeq::cpu::set_max_level(edgeq::cpu::Level::Avx512);
        std::vector<float> c(static_cast<size_t>(m * ldc), -1.f);
        for (int64_t i = 0; i < m; ++i) gemm::gemm(1, n, k, a.data() + i * lda, lda, gemm::packed(packed.data(), k), c.data() + i * ldc, ldc);
        EXPECT_EQ(c, ref);
        if (n > gemm::kPanel) {
          std::vector<float> c2(static_cast<size_t>(m * ldc), -1.f);
          gemm::gemm(m, n - gemm::kPanel, k, a.data(), lda, gemm::B{bt.data() + gemm::kPanel, n + 2, gemm::kPanel},
                     c2.data(), ldc);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = gemm::kPanel; j < n; ++j) ASSERT_EQ(c2[i * ldc + j - gemm::kPanel], ref[i * ldc + j]);
        }
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            double s = 0, mag = 0;
            for (int64_t p = 0; p < k; ++p) {
              s += double(a[i * lda + p]) * w[j * ldw + p];
              mag += std::fabs(double(a[i * lda + p]) * w[j * ldw + p]);
            }
            ASSERT_NEAR(ref[i * ldc + j], s, 1e-6 * mag * std::sqrt(double(k)) + 1e-30);
          }
          for (int64_t j = n; j < ldc; ++j) ASSERT_EQ(ref[i * ldc + j], -1.f);  // nothing written past n
        }
      }
}

TEST(Vec, SoftmaxAndSwigluSimdEqualPortableAndMatchStdExp) {
  SimdGuard guard;
  for (int64_t n : {1, 7, 8, 15, 16, 17, 100, 256}) {
    SCOPED_TRACE(n);
    auto s0 = randn(static_cast<size_t>(n), 3);
    for (auto& x : s0) x *= 8.f;
    if (n > 2) s0[1] = -1e4f;  // exp underflows to 0
    const float scale = 0.17677669f;
    auto run_softmax = [&](int path) {
      edgeq::cpu::set_max_level(static_cast<edgeq::cpu::Level>(path));
      auto s = s0;
      vec::softmax(s.data(), n, scale);
      return s;
    };
    const auto ref = run_softmax(0);
    EXPECT_EQ(run_softmax(1), ref);
    EXPECT_EQ(run_softmax(2), ref);
    // The reference takes the same float arguments (x·scale − max rounds in float) and the exact exp.
    float mx = -INFINITY;
    for (float x : s0) mx = std::max(mx, x * scale);
    double sum = 0;
    for (float x : s0) sum += std::exp(double(x * scale - mx));
    for (int64_t j = 0; j < n; ++j) EXPECT_NEAR(ref[j], std::exp(double(s0[j] * scale - mx)) / sum, 4e-7 * ref[j] + 1e-12);

    auto g0 = randn(static_cast<size_t>(n), 4);
    const auto u = randn(static_cast<size_t>(n), 5);
    for (auto& x : g0) x *= 6.f;
    if (n > 3) g0[2] = 200.f, g0[3] = -200.f;  // exp(-g) overflows / underflows
    auto run_swiglu = [&](int path) {
      edgeq::cpu::set_max_level(static_cast<edgeq::cpu::Level>(path));
      auto g = g0;
      vec::swiglu(g.data(), u.data(), n);
      return g;
    };
    const auto gr = run_swiglu(0);
    EXPECT_EQ(run_swiglu(1), gr);
    EXPECT_EQ(run_swiglu(2), gr);
    for (int64_t i = 0; i < n; ++i) {
      const double want = double(g0[i]) / (1.0 + std::exp(-double(g0[i]))) * u[i];
      EXPECT_NEAR(gr[i], want, 4e-7 * std::fabs(want) + 1e-30) << g0[i];
    }
  }
}

// The attention rows in llama.cpp's order (vec.h): every SIMD level gives the portable path's bits (the same
// partial sums per lane), for head sizes that fill or leave part of a register, windows that start and end
// inside a group of keys, and against the definition (double sums) to float accuracy. Scores outside [j0, j1)
// are never written.
TEST(Vec, AttentionRowsSimdEqualPortable) {
  SimdGuard guard;
  for (int64_t d : {8, 32, 40, 64, 128}) {
    for (const auto& win : {std::pair<int64_t, int64_t>{0, 1}, {0, 64}, {3, 29}, {5, 47}, {17, 96}, {40, 41}}) {
      const int64_t j0 = win.first, j1 = win.second;  // (not a structured binding: clang 14 cannot capture one)
      SCOPED_TRACE(::testing::Message() << "d " << d << " keys [" << j0 << ", " << j1 << ")");
      const int64_t nk = 96;
      const auto q = randn(static_cast<size_t>(d), 11), k = randn(static_cast<size_t>(nk * d), 12);
      const auto P = randn(static_cast<size_t>(nk), 13), V = randn(static_cast<size_t>(nk * (d + 3)), 14);
      std::vector<float> kp(k.size());  // packed: key j, component p at (j / 32) * 32 * d + p * 32 + j % 32
      for (int64_t j = 0; j < nk; ++j)
        for (int64_t p = 0; p < d; ++p) kp[(j / 32) * 32 * d + p * 32 + j % 32] = k[j * d + p];
      auto run = [&](int path) {
        edgeq::cpu::set_max_level(static_cast<edgeq::cpu::Level>(path));
        std::vector<float> s(static_cast<size_t>(nk), -7.f), out(static_cast<size_t>(d), -7.f);
        vec::kq_row(q.data(), kp.data(), d, j0, j1, s.data());
        vec::pv_row(P.data(), j0, j1, V.data(), d + 3, d, out.data());
        return std::make_pair(s, out);
      };
      const auto ref = run(0);
      EXPECT_EQ(run(1), ref);
      EXPECT_EQ(run(2), ref);
      for (int64_t j = 0; j < nk; ++j) {
        if (j < j0 || j >= j1) {
          EXPECT_EQ(ref.first[j], -7.f) << j;
          continue;
        }
        double want = 0, mag = 0;
        for (int64_t p = 0; p < d; ++p) want += double(q[p]) * k[j * d + p], mag += std::fabs(double(q[p]) * k[j * d + p]);
        EXPECT_NEAR(ref.first[j], want, 1e-6 * mag) << j;
      }
      for (int64_t p = 0; p < d; ++p) {
        double want = 0, mag = 0;
        for (int64_t j = j0; j < j1; ++j) want += double(P[j]) * V[j * (d + 3) + p], mag += std::fabs(double(P[j]) * V[j * (d + 3) + p]);
        EXPECT_NEAR(ref.second[p], want, 1e-6 * mag) << p;
      }
    }
  }
}

}  // namespace
