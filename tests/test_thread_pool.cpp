// The one thread pool (base/thread_pool.h): shared by convert, quantize and the runtime, errors propagate.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/base/thread_pool.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/quantize.h"
#include "edgeq/runtime/matmul.h"

namespace {

// The runtime's pool is the formats one (no second implementation).
static_assert(std::is_same_v<edgeq::runtime::ThreadPool, edgeq::ThreadPool>);

TEST(ThreadPool, RunsEveryTaskOnce) {
  for (int n : {1, 2, 3}) {
    edgeq::ThreadPool pool(n);
    EXPECT_EQ(pool.size(), n);
    std::vector<std::atomic<int>> hits(1000);
    pool.run(1000, [&](int64_t t, int worker) {
      EXPECT_GE(worker, 0);
      EXPECT_LT(worker, n);
      ++hits[static_cast<size_t>(t)];
    });
    for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  }
}

TEST(ThreadPool, LowestFailingTaskWinsAndPoolStaysUsable) {
  for (int n : {1, 2, 3}) {
    edgeq::ThreadPool pool(n);
    for (int rep = 0; rep < 20; ++rep) {
      try {
        pool.run(200, [&](int64_t t, int) {
          if (t == 37 || t == 38 || t == 150) throw std::runtime_error("task " + std::to_string(t));
        });
        FAIL() << "no exception";
      } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "task 37") << n << " threads";
      }
    }
    std::atomic<int64_t> sum{0};
    pool.run(100, [&](int64_t t, int) { sum += t; });
    EXPECT_EQ(sum.load(), 4950);
  }
}

// quantize_rows_parallel (the encoder convert and quantize share): same bytes as one quantize_rows call for
// any pool size, and the error of the first bad row.
TEST(ThreadPool, QuantizeRowsParallelIsThreadIndependent) {
  const int64_t rows = 300, n = 256;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(rows * n));
  for (auto& v : x) v = nd(rng);
  ASSERT_GT(rows, edgeq::quant::quantize_chunk_rows(n));  // several work items
  for (auto t : {edgeq::GgmlType::Q4_K, edgeq::GgmlType::F16, edgeq::GgmlType::Q8_0}) {
    const size_t bytes = static_cast<size_t>(*edgeq::ggml_row_size(t, n)) * rows;
    std::vector<uint8_t> want(bytes);
    edgeq::quant::quantize_rows(t, x.data(), want.data(), rows, n, nullptr);
    for (int th : {1, 2, 3}) {
      edgeq::ThreadPool pool(th);
      std::vector<uint8_t> got(bytes, 0xAA);
      edgeq::quant::quantize_rows_parallel(t, x.data(), got.data(), rows, n, nullptr, pool);
      EXPECT_EQ(got, want) << edgeq::ggml_type_name(t) << " " << th << " threads";
    }
  }
  std::vector<float> bad = x;
  const int64_t chunk = edgeq::quant::quantize_chunk_rows(n);
  bad[static_cast<size_t>((chunk + 1) * n + 5)] = NAN;      // second work item, row 1 of it
  bad[static_cast<size_t>((3 * chunk + 2) * n + 9)] = NAN;  // a later one
  std::vector<uint8_t> out(static_cast<size_t>(*edgeq::ggml_row_size(edgeq::GgmlType::Q4_K, n)) * rows);
  for (int th : {1, 2, 3}) {
    edgeq::ThreadPool pool(th);
    try {
      edgeq::quant::quantize_rows_parallel(edgeq::GgmlType::Q4_K, bad.data(), out.data(), rows, n, nullptr, pool);
      FAIL() << "no error";
    } catch (const edgeq::Error& e) {
      EXPECT_NE(std::string(e.what()).find("at row 1, column 5"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
