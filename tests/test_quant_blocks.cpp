// Block formats: dequantizers against gguf-py's golden output (bit for bit), SIMD == scalar, round trips.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "edgeq/base/cpu.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/base/half.h"
#include "edgeq/quant/block_ops.h"
#include "edgeq/quant/blocks.h"
#include "test_helpers.h"

using edgeq::GgmlType;
namespace q = edgeq::quant;

namespace {

const std::string kShared = EDGEQ_SHARED_DIR;

std::vector<uint8_t> read_all(const std::string& path) {
  EXPECT_TRUE(std::ifstream(path, std::ios::binary).good()) << path;
  return edgeq::test::read_file(path);
}

// Every type the block-ops table can dequantize (table order).
std::vector<GgmlType> dequantizable_types() {
  std::vector<GgmlType> out;
  for (const q::BlockOps* ops : q::block_ops_rows())
    if (ops->dequantize) out.push_back(ops->type);
  return out;
}
const std::vector<GgmlType> kAll = dequantizable_types();

// Random block bytes whose f16 fields are finite (a NaN scale would make bitwise comparison meaningless).
std::vector<uint8_t> random_blocks(GgmlType t, int64_t nblocks, std::mt19937& rng) {
  const auto* info = edgeq::ggml_type_info(t);
  std::vector<uint8_t> v(static_cast<size_t>(nblocks) * info->type_size);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  // Re-draw every 16-bit word that decodes as a non-finite f16/bf16/f32 value: simplest is to clear the
  // top exponent bit of every odd byte for the half-based types (keeps quants random, scales finite).
  if (t == GgmlType::F32) {
    for (size_t i = 3; i < v.size(); i += 4) v[i] &= 0xBF;
  } else if (t == GgmlType::Q8_K) {
    for (size_t b = 0; b < static_cast<size_t>(nblocks); ++b) v[b * info->type_size + 3] &= 0xBF;
  } else {
    for (size_t i = 1; i < v.size(); i += 2) v[i] &= 0xBF;
  }
  return v;
}

}  // namespace

TEST(QuantBlocks, GoldenDequantBitExact) {
  const std::string dir = kShared + "/golden/dequant";
  std::ifstream f(dir + "/index.json");
  ASSERT_TRUE(f.good());
  const auto index = nlohmann::json::parse(f);
  ASSERT_GE(index.size(), 50u);
  size_t checked = 0;
  for (auto it = index.begin(); it != index.end(); ++it) {
    const auto& e = it.value();
    const auto file = edgeq::GgufFile::open(kShared + "/golden/" + e["file"].get<std::string>());
    const auto view = file.view(e["tensor"].get<std::string>());
    ASSERT_EQ(std::string(edgeq::ggml_type_name(view.type)), e["type"].get<std::string>()) << it.key();
    const int64_t rows = e["rows"].get<int64_t>(), count = e["count"].get<int64_t>();
    const int64_t ne0 = static_cast<int64_t>(view.dims[0]);
    ASSERT_EQ(rows * ne0, count) << it.key();
    const auto expect = read_all(dir + "/" + it.key());
    ASSERT_EQ(expect.size(), static_cast<size_t>(count) * 4) << it.key();
    std::vector<float> got(static_cast<size_t>(count)), got_scalar(static_cast<size_t>(count));
    for (int64_t r = 0; r < rows; ++r) {
      q::dequantize_row(view.type, view.data + r * view.row_bytes(), got.data() + r * ne0, ne0);
      q::dequantize_row_scalar(view.type, view.data + r * view.row_bytes(), got_scalar.data() + r * ne0, ne0);
    }
    EXPECT_EQ(0, std::memcmp(got.data(), expect.data(), expect.size())) << it.key() << " (dispatching path)";
    EXPECT_EQ(0, std::memcmp(got_scalar.data(), expect.data(), expect.size())) << it.key() << " (scalar path)";
    ++checked;
  }
  EXPECT_EQ(checked, index.size());
}

TEST(QuantBlocks, SimdEqualsScalarOnRandomBlocks) {
  std::mt19937 rng(1234);
  for (GgmlType t : kAll) {
    const auto* info = edgeq::ggml_type_info(t);
    const int64_t nblocks = info->block_size == 1 ? 4099 : 67;
    const auto bytes = random_blocks(t, nblocks, rng);
    const int64_t n = nblocks * info->block_size;
    std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
    q::dequantize_row(t, bytes.data(), a.data(), n);
    q::dequantize_row_scalar(t, bytes.data(), b.data(), n);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << info->name;
  }
  // F16 with NaN/Inf payloads everywhere: the SIMD path must still equal the scalar one bit for bit.
  std::vector<uint16_t> h(1000);
  for (auto& x : h) x = static_cast<uint16_t>(rng());
  h[3] = 0x7C00; h[4] = 0xFC00; h[5] = 0x7E01; h[6] = 0x7C01; h[7] = 0x0001;
  std::vector<float> a(h.size()), b(h.size());
  q::dequantize_row(GgmlType::F16, h.data(), a.data(), static_cast<int64_t>(h.size()));
  q::dequantize_row_scalar(GgmlType::F16, h.data(), b.data(), static_cast<int64_t>(h.size()));
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4));
}

namespace {

// Types with an AVX2 path added after F16/Q8_0/Q4_0/Q4_K/Q5_K/Q6_K, and the byte offsets of their f16 fields
// inside one block (blocks_layout.h); every other byte (quants, packed scales, high bits) is free-form.
struct SimdCase {
  GgmlType t;
  std::vector<size_t> f16_offsets;
};
const SimdCase kNewSimd[] = {{GgmlType::BF16, {}},          {GgmlType::Q4_1, {0, 2}},  {GgmlType::Q5_0, {0}},
                             {GgmlType::Q5_1, {0, 2}},      {GgmlType::Q2_K, {80, 82}}, {GgmlType::Q3_K, {108}},
                             {GgmlType::IQ4_NL, {0}},       {GgmlType::IQ4_XS, {0}}};

void expect_simd_equals_scalar(GgmlType t, const std::vector<uint8_t>& bytes, const std::string& what) {
  const auto* info = edgeq::ggml_type_info(t);
  const int64_t n = static_cast<int64_t>(bytes.size() / info->type_size) * info->block_size;
  // Distinct fill patterns so a path that leaves an output untouched cannot match by accident.
  std::vector<float> a(static_cast<size_t>(n), 1.5f), b(static_cast<size_t>(n), -2.5f);
  q::dequantize_row(t, bytes.data(), a.data(), n);
  q::dequantize_row_scalar(t, bytes.data(), b.data(), n);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << info->name << ": " << what;
}

}  // namespace

TEST(QuantBlocks, SimdPathsRegistered) {
  if (!edgeq::cpu::avx2()) GTEST_SKIP() << "no AVX2+F16C on this CPU: dequantize_row is the scalar path";
  for (GgmlType t : {GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                     GgmlType::Q5_1, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                     GgmlType::IQ4_NL, GgmlType::IQ4_XS})
    EXPECT_TRUE(q::has_simd_dequantize(t)) << edgeq::ggml_type_name(t);
  for (GgmlType t : {GgmlType::F32, GgmlType::Q8_1, GgmlType::Q8_K, GgmlType::TQ1_0, GgmlType::TQ2_0})
    EXPECT_FALSE(q::has_simd_dequantize(t)) << edgeq::ggml_type_name(t);
}

// Every byte random (quants, packed scales, high-bit masks), f16 scale fields re-drawn until finite; then
// blocks whose quant bytes are constant patterns combined with extreme f16 scales (zeros, subnormals, the
// largest finite values, both signs).
TEST(QuantBlocks, SimdEqualsScalarNewTypesRandomAndEdgeBlocks) {
  std::mt19937 rng(4321);
  const uint16_t kEdgeHalves[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00,
                                  0x7BFF, 0xFBFF, 0x3555, 0x1234};
  const uint8_t kPatterns[] = {0x00, 0xFF, 0x0F, 0xF0, 0x55, 0xAA, 0x88, 0x77};
  for (const auto& c : kNewSimd) {
    const auto* info = edgeq::ggml_type_info(c.t);
    const size_t ts = info->type_size;
    auto set_half = [](uint8_t* p, uint16_t h) { std::memcpy(p, &h, 2); };
    auto finite_half = [&](uint8_t* p) {
      uint16_t h;
      do h = static_cast<uint16_t>(rng()); while ((h & 0x7C00) == 0x7C00);
      set_half(p, h);
    };
    if (c.t == GgmlType::BF16) {
      // bf16 -> f32 is a bit move: all 65536 inputs (NaN and Inf included), in a length with a scalar tail.
      std::vector<uint8_t> all(2 * 65536 + 2 * 7);
      for (uint32_t h = 0; h < 65536 + 7; ++h) set_half(all.data() + 2 * h, static_cast<uint16_t>(h * 40503u));
      for (uint32_t h = 0; h < 65536; ++h) set_half(all.data() + 2 * h, static_cast<uint16_t>(h));
      expect_simd_equals_scalar(c.t, all, "all 65536 bf16 values + 7-element tail");
      for (int64_t len : {1, 7, 8, 9, 15, 16, 17, 4099}) {
        std::vector<uint8_t> v(static_cast<size_t>(2 * len));
        for (auto& x : v) x = static_cast<uint8_t>(rng());
        expect_simd_equals_scalar(c.t, v, "random, length " + std::to_string(len));
      }
      continue;
    }
    // Random blocks at several counts (1, 2, 3 exercise the first blocks; 257 a long row).
    for (int64_t nblocks : {1, 2, 3, 257}) {
      for (int rep = 0; rep < 4; ++rep) {
        std::vector<uint8_t> v(static_cast<size_t>(nblocks) * ts);
        for (auto& x : v) x = static_cast<uint8_t>(rng());
        for (int64_t b = 0; b < nblocks; ++b)
          for (size_t off : c.f16_offsets) finite_half(v.data() + b * ts + off);
        expect_simd_equals_scalar(c.t, v, "random, " + std::to_string(nblocks) + " blocks");
      }
    }
    // Edge blocks: every (pattern, edge half) pair, the first f16 field taking the edge value and any second
    // one (Q4_1/Q5_1 m, Q2_K dmin) taking each edge value in turn too.
    std::vector<uint8_t> v;
    for (uint8_t pat : kPatterns)
      for (uint16_t h1 : kEdgeHalves)
        for (uint16_t h2 : kEdgeHalves) {
          if (c.f16_offsets.size() < 2 && h2 != kEdgeHalves[0]) continue;
          const size_t at = v.size();
          v.resize(at + ts, pat);
          set_half(v.data() + at + c.f16_offsets[0], h1);
          if (c.f16_offsets.size() > 1) set_half(v.data() + at + c.f16_offsets[1], h2);
        }
    expect_simd_equals_scalar(c.t, v, "edge blocks");
    // The edge output is not all zeros (a path writing nothing would not pass the memcmp either, thanks to
    // the distinct fills, but check the scalar reference really produces large values here).
    std::vector<float> ref(v.size() / ts * info->block_size);
    q::dequantize_row_scalar(c.t, v.data(), ref.data(), static_cast<int64_t>(ref.size()));
    float mx = 0;
    for (float f : ref) mx = std::max(mx, std::fabs(f));
    EXPECT_GT(mx, 65504.f) << info->name;
  }
}

// Hand-computed values through dequantize_row (the SIMD path on AVX2 machines) for each newly vectorised type.
TEST(QuantBlocks, SimdDequantKnownValues) {
  auto put16 = [](std::vector<uint8_t>& v, size_t off, uint16_t h) { std::memcpy(v.data() + off, &h, 2); };
  auto deq = [](GgmlType t, const std::vector<uint8_t>& v) {
    std::vector<float> y(static_cast<size_t>(edgeq::ggml_type_info(t)->block_size));
    q::dequantize_row(t, v.data(), y.data(), static_cast<int64_t>(y.size()));
    return y;
  };
  {  // BF16: 0x3FC0 = 1.5, 0xC000 = -2, 0x7F80 = +Inf (8 values: one full vector, then a 1-value tail)
    std::vector<uint8_t> v(18, 0);
    put16(v, 0, 0x3FC0); put16(v, 2, 0xC000); put16(v, 14, 0x7F80); put16(v, 16, 0x3FC0);
    std::vector<float> y(9);
    q::dequantize_row(GgmlType::BF16, v.data(), y.data(), 9);
    EXPECT_EQ(y[0], 1.5f); EXPECT_EQ(y[1], -2.f); EXPECT_EQ(y[2], 0.f); EXPECT_TRUE(std::isinf(y[7])); EXPECT_EQ(y[8], 1.5f);
  }
  {  // Q4_1: d = 1, m = 0.5, qs[0] = 0x3A -> 10 + 0.5 and 3 + 0.5
    std::vector<uint8_t> v(20, 0);
    put16(v, 0, 0x3C00); put16(v, 2, 0x3800); v[4] = 0x3A;
    const auto y = deq(GgmlType::Q4_1, v);
    EXPECT_EQ(y[0], 10.5f); EXPECT_EQ(y[16], 3.5f); EXPECT_EQ(y[1], 0.5f);
  }
  {  // Q5_0: d = 2, qh bits 0 and 16, qs[0] = 0x21 -> (17 - 16) * 2, (18 - 16) * 2; qs[1] = 0 -> -16 * 2
    std::vector<uint8_t> v(22, 0);
    put16(v, 0, 0x4000); v[2] = 0x01; v[4] = 0x01; v[6] = 0x21;
    const auto y = deq(GgmlType::Q5_0, v);
    EXPECT_EQ(y[0], 2.f); EXPECT_EQ(y[16], 4.f); EXPECT_EQ(y[1], -32.f); EXPECT_EQ(y[17], -32.f);
  }
  {  // Q5_1: d = 0.5, m = -1, qh bit 0, qs[0] = 0x0F -> 31 * 0.5 - 1; element 16 -> 0 * 0.5 - 1
    std::vector<uint8_t> v(24, 0);
    put16(v, 0, 0x3800); put16(v, 2, 0xBC00); v[4] = 0x01; v[8] = 0x0F;
    const auto y = deq(GgmlType::Q5_1, v);
    EXPECT_EQ(y[0], 14.5f); EXPECT_EQ(y[16], -1.f);
  }
  {  // Q2_K: d = 1, dmin = 0.5, scales[0] = 0x21 (dl 1, ml 0.5 * 2), qs[0] = 0x03 -> 3 - 1; qs[1] = 0 -> -1;
     // element 32 (shift 2 of qs[0] = 0, scales[2] = 0) -> 0
    std::vector<uint8_t> v(84, 0);
    put16(v, 80, 0x3C00); put16(v, 82, 0x3800); v[0] = 0x21; v[16] = 0x03;
    const auto y = deq(GgmlType::Q2_K, v);
    EXPECT_EQ(y[0], 2.f); EXPECT_EQ(y[1], -1.f); EXPECT_EQ(y[32], 0.f);
  }
  {  // Q3_K: d = 1, all scales -32; hmask[0] bit 0 and qs[0] = 3 -> 3 * -32; element 1 -> (0 - 4) * -32
    std::vector<uint8_t> v(110, 0);
    put16(v, 108, 0x3C00); v[0] = 0x01; v[32] = 0x03;
    const auto y = deq(GgmlType::Q3_K, v);
    EXPECT_EQ(y[0], -96.f); EXPECT_EQ(y[1], 128.f); EXPECT_EQ(y[255], 128.f);
  }
  {  // IQ4_NL: d = 1, qs[0] = 0xF0 -> kvalues[0] = -127 and kvalues[15] = 113
    std::vector<uint8_t> v(18, 0);
    put16(v, 0, 0x3C00); v[2] = 0xF0;
    const auto y = deq(GgmlType::IQ4_NL, v);
    EXPECT_EQ(y[0], -127.f); EXPECT_EQ(y[16], 113.f); EXPECT_EQ(y[1], -127.f);
  }
  {  // IQ4_XS: d = 0.5, scales_l[0] = 0x21 -> ls 1, 2 (dl -15.5, -15), qs[0] = 0x8F -> 113 and 1
    std::vector<uint8_t> v(136, 0);
    put16(v, 0, 0x3800); v[4] = 0x21; v[8] = 0x8F;
    const auto y = deq(GgmlType::IQ4_XS, v);
    EXPECT_EQ(y[0], -1751.5f); EXPECT_EQ(y[16], -15.5f); EXPECT_EQ(y[32], 1905.f); EXPECT_EQ(y[255], 0.5f * -32 * -127);
  }
}

// SIMD == scalar on every tensor of every golden llama.cpp GGUF (all rows), for every type with a SIMD path.
TEST(QuantBlocks, SimdEqualsScalarOnGoldenTensors) {
  std::map<std::string, int> tensors_per_type;
  for (const auto& entry : std::filesystem::directory_iterator(kShared + "/golden")) {
    if (entry.path().extension() != ".gguf") continue;
    const auto file = edgeq::GgufFile::open(entry.path().string());
    for (const auto& ti : file.tensors()) {
      const auto view = file.view(ti);
      if (!q::has_simd_dequantize(view.type)) continue;
      const int64_t ne0 = static_cast<int64_t>(view.dims[0]), rows = static_cast<int64_t>(view.n_rows());
      std::vector<float> a(static_cast<size_t>(ne0 * rows), 1.5f), b(static_cast<size_t>(ne0 * rows), -2.5f);
      for (int64_t r = 0; r < rows; ++r) {
        q::dequantize_row(view.type, view.data + r * view.row_bytes(), a.data() + r * ne0, ne0);
        q::dequantize_row_scalar(view.type, view.data + r * view.row_bytes(), b.data() + r * ne0, ne0);
      }
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4))
          << entry.path().filename().string() << " " << view.name << " (" << edgeq::ggml_type_name(view.type) << ")";
      ++tensors_per_type[edgeq::ggml_type_name(view.type)];
    }
  }
  std::string summary;
  for (const auto& [t, k] : tensors_per_type) summary += " " + t + ":" + std::to_string(k);
  std::printf("golden tensors compared SIMD vs scalar:%s\n", summary.c_str());
  if (!edgeq::cpu::avx2()) GTEST_SKIP() << "no AVX2+F16C: nothing but the scalar path to compare";
  // The golden set holds every new SIMD type except BF16 (covered exhaustively by the random test).
  for (const char* t : {"Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "IQ4_NL", "IQ4_XS", "F16", "Q8_0", "Q4_0", "Q4_K",
                        "Q5_K", "Q6_K"})
    EXPECT_GT(tensors_per_type[t], 0) << t;
}

TEST(QuantBlocks, RoundTripAllTypes) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 0.02f);
  const int64_t n = 512, rows = 3;
  std::vector<float> x(static_cast<size_t>(n * rows));
  for (auto& v : x) v = nd(rng);
  x[5] = 0.3f;  // an outlier
  // Rough expected relative RMSE bounds per bits per weight.
  struct Case { GgmlType t; double max_rel; };
  const Case cases[] = {{GgmlType::F16, 1e-3},   {GgmlType::BF16, 5e-3},  {GgmlType::Q8_0, 0.01},
                        {GgmlType::Q8_1, 0.01},  {GgmlType::Q8_K, 0.02},  {GgmlType::Q6_K, 0.04},
                        {GgmlType::Q5_0, 0.08},  {GgmlType::Q5_1, 0.08},  {GgmlType::Q5_K, 0.08},
                        {GgmlType::Q4_0, 0.16},  {GgmlType::Q4_1, 0.16},  {GgmlType::Q4_K, 0.16},
                        {GgmlType::IQ4_NL, 0.16}, {GgmlType::IQ4_XS, 0.16}, {GgmlType::Q3_K, 0.30},
                        {GgmlType::Q2_K, 0.55},  {GgmlType::TQ2_0, 0.9},  {GgmlType::TQ1_0, 0.9}};
  double sx2 = 0;
  for (float v : x) sx2 += double(v) * v;
  for (const auto& c : cases) {
    const auto* info = edgeq::ggml_type_info(c.t);
    const uint64_t rs = *edgeq::ggml_row_size(c.t, n);
    std::vector<uint8_t> buf(rs * rows, 0xCD), buf2(rs * rows, 0x11);
    EXPECT_EQ(q::quantize_rows(c.t, x.data(), buf.data(), rows, n, nullptr), rs * rows) << info->name;
    q::quantize_rows(c.t, x.data(), buf2.data(), rows, n, nullptr);
    EXPECT_EQ(buf, buf2) << info->name << ": not deterministic or leaves padding uninitialised";
    std::vector<float> y(x.size());
    for (int64_t r = 0; r < rows; ++r) q::dequantize_row(c.t, buf.data() + r * rs, y.data() + r * n, n);
    const double rel = std::sqrt(q::weighted_sq_error(x.data(), y.data(), n * rows, nullptr) / sx2);
    EXPECT_LT(rel, c.max_rel) << info->name;
    EXPECT_GT(rel, 0.0) << info->name;
  }
}

TEST(QuantBlocks, ImportanceLowersWeightedError) {
  std::mt19937 rng(99);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int64_t n = 256, rows = 64;
  std::vector<float> x(static_cast<size_t>(n * rows)), imp(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  for (auto& v : imp) v = std::exp(2.f * nd(rng));
  std::vector<float> wfull(x.size());
  for (size_t i = 0; i < x.size(); ++i) wfull[i] = imp[i % n];
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q3_K, GgmlType::Q2_K, GgmlType::IQ4_XS,
                     GgmlType::Q6_K, GgmlType::Q5_1}) {
    const uint64_t rs = *edgeq::ggml_row_size(t, n);
    std::vector<uint8_t> a(rs * rows), b(rs * rows);
    q::quantize_rows(t, x.data(), a.data(), rows, n, nullptr);
    q::quantize_rows(t, x.data(), b.data(), rows, n, imp.data());
    std::vector<float> ya(x.size()), yb(x.size());
    for (int64_t r = 0; r < rows; ++r) {
      q::dequantize_row(t, a.data() + r * rs, ya.data() + r * n, n);
      q::dequantize_row(t, b.data() + r * rs, yb.data() + r * n, n);
    }
    const double ea = q::weighted_sq_error(x.data(), ya.data(), n * rows, wfull.data());
    const double eb = q::weighted_sq_error(x.data(), yb.data(), n * rows, wfull.data());
    EXPECT_LT(eb, 0.9 * ea) << edgeq::ggml_type_name(t);
  }
}

TEST(QuantBlocks, RejectsBadInput) {
  std::vector<float> x(256, 1.f);
  std::vector<uint8_t> out(1024);
  EXPECT_THROW(q::quantize_rows(GgmlType::Q4_K, x.data(), out.data(), 1, 100, nullptr), edgeq::Error);
  EXPECT_THROW(q::quantize_rows(GgmlType::I32, x.data(), out.data(), 1, 256, nullptr), edgeq::Error);  // no encoder
  x[17] = NAN;
  EXPECT_THROW(q::quantize_rows(GgmlType::Q8_0, x.data(), out.data(), 1, 256, nullptr), edgeq::Error);
  x[17] = 0;
  std::vector<float> imp(256, 1.f);
  imp[3] = -1;
  EXPECT_THROW(q::quantize_rows(GgmlType::Q8_0, x.data(), out.data(), 1, 256, imp.data()), edgeq::Error);
  std::vector<float> y(256);
  EXPECT_THROW(q::dequantize_row(GgmlType::Q4_K, out.data(), y.data(), 100), edgeq::Error);
  EXPECT_THROW(q::dequantize_row(GgmlType::I32, out.data(), y.data(), 256), edgeq::Error);
  // All-zero and constant blocks quantize to exact values.
  std::vector<float> z(256, 0.f), yz(256);
  for (GgmlType t : kAll) {
    if (!q::can_quantize(t)) continue;
    q::quantize_rows(t, z.data(), out.data(), 1, 256, nullptr);
    q::dequantize_row(t, out.data(), yz.data(), 256);
    for (float v : yz) ASSERT_EQ(v, 0.f) << edgeq::ggml_type_name(t);
  }
}

// Re-quantizing a dequantized tensor must reproduce it exactly (the search finds the zero-error encoding),
// which checks every packing (levels, sub-block scales, high bits) against the dequantizer. For Q8_0/Q8_1/
// Q8_K and the asymmetric k-quants the search does not always land on the exact encoding (it starts from the
// max level), so there the re-quantization error must only be far below the first quantization's.
TEST(QuantBlocks, RequantizeIsExact) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 0.05f);
  const int64_t n = 512, rows = 8;
  std::vector<float> x(static_cast<size_t>(n * rows));
  for (auto& v : x) v = nd(rng);
  for (GgmlType t : kAll) {
    if (!q::can_quantize(t) || t == GgmlType::F32) continue;
    const uint64_t rs = *edgeq::ggml_row_size(t, n);
    std::vector<uint8_t> a(rs * rows), b(rs * rows);
    std::vector<float> ya(x.size()), yb(x.size());
    q::quantize_rows(t, x.data(), a.data(), rows, n, nullptr);
    for (int64_t r = 0; r < rows; ++r) q::dequantize_row(t, a.data() + r * rs, ya.data() + r * n, n);
    q::quantize_rows(t, ya.data(), b.data(), rows, n, nullptr);
    for (int64_t r = 0; r < rows; ++r) q::dequantize_row(t, b.data() + r * rs, yb.data() + r * n, n);
    const double e1 = q::weighted_sq_error(x.data(), ya.data(), n * rows, nullptr);
    const double e2 = q::weighted_sq_error(ya.data(), yb.data(), n * rows, nullptr);
    const bool exact = !(t == GgmlType::Q8_0 || t == GgmlType::Q8_1 || t == GgmlType::Q8_K || t == GgmlType::Q2_K ||
                         t == GgmlType::Q4_K || t == GgmlType::Q5_K);
    if (exact) EXPECT_EQ(e2, 0.0) << edgeq::ggml_type_name(t);
    else EXPECT_LT(e2, 0.05 * e1) << edgeq::ggml_type_name(t);
  }
}

TEST(QuantBlocks, SizesAndEdgeCases) {
  std::vector<float> x(512, 0.25f);
  std::vector<uint8_t> out(4096);
  // Zero rows is fine and writes nothing.
  EXPECT_EQ(q::quantize_rows(GgmlType::Q4_K, x.data(), out.data(), 0, 256, nullptr), 0u);
  // Overflowing shapes are rejected before anything is read.
  EXPECT_THROW(q::quantize_rows(GgmlType::Q8_0, x.data(), out.data(), INT64_MAX / 16, 64, nullptr), edgeq::Error);
  EXPECT_THROW(q::quantize_rows(GgmlType::Q8_0, x.data(), out.data(), -1, 64, nullptr), edgeq::Error);
  // Row sizes equal ggml's.
  EXPECT_EQ(q::quantize_rows(GgmlType::Q4_K, x.data(), out.data(), 2, 256, nullptr), 2u * 144u);
  EXPECT_EQ(q::quantize_rows(GgmlType::IQ4_NL, x.data(), out.data(), 1, 512, nullptr), 16u * 18u);
  EXPECT_EQ(q::quantize_rows(GgmlType::TQ1_0, x.data(), out.data(), 2, 256, nullptr), 2u * 54u);
  // A constant block is reproduced to within the f16 resolution of the scales (exactly where the search's
  // candidates contain an exact encoding; Q8_0 and the k-quants start from the top level, e.g. 0.25/127 is
  // not an f16, and the exact 0.25 = 64 * 2^-8 is not among the candidates).
  std::vector<float> y(256);
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                     GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q3_K, GgmlType::Q2_K,
                     GgmlType::TQ2_0, GgmlType::TQ1_0}) {
    q::quantize_rows(t, x.data(), out.data(), 1, 256, nullptr);
    q::dequantize_row(t, out.data(), y.data(), 256);
    for (float v : y) ASSERT_NEAR(v, 0.25f, 0.25f * 1e-3f) << edgeq::ggml_type_name(t);
  }
}
