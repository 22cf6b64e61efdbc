// The block-ops table: every predicate and list comes from its rows, so a new type is one row.
// This program registers a fake type (its own process: the registration is global).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/quant/block_ops.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/policy.h"
#include "edgeq/runtime/matmul.h"

using edgeq::GgmlType;
namespace q = edgeq::quant;

namespace {

// A fake block type: 4 values per block, stored as an f32 scale and 4 int8 levels (8 bytes).
constexpr auto kFake = static_cast<GgmlType>(0x45510F01);
constexpr int kQk = 4;

void deq_fake(const void* src, float* y, int64_t nb) {
  auto* b = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < nb; ++i, b += 8) {
    float d;
    std::memcpy(&d, b, 4);
    for (int j = 0; j < kQk; ++j) *y++ = d * static_cast<float>(static_cast<int8_t>(b[4 + j]));
  }
}
void enc_fake(const float* x, const float* w, void* dst, int64_t nb) {
  EXPECT_NE(w, nullptr);  // a quantized type gets per-column weights
  auto* b = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < nb; ++i, b += 8, x += kQk) {
    float amax = 0;
    for (int j = 0; j < kQk; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.f, id = d > 0 ? 1.f / d : 0.f;
    std::memcpy(b, &d, 4);
    for (int j = 0; j < kQk; ++j) b[4 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(x[j] * id)));
  }
}
// A fake kernel: every output is 42 + the activation row's index, so a test sees that matmul called it.
void dot_fake(const uint8_t*, const uint8_t*, size_t, int n_act, int64_t, float* out, size_t out_stride) {
  for (int k = 0; k < n_act; ++k) out[out_stride * static_cast<size_t>(k)] = 42.f;
}

void register_fake() {
  static bool done = false;
  if (done) return;
  done = true;
  q::BlockOps ops{};
  ops.type = kFake;
  ops.dequantize = deq_fake;
  ops.encode = enc_fake;
  ops.act_rounding = q::ActRounding::Q8_0;
  ops.writable = true;
  q::register_block_type({kFake, "FAKE4", kQk, 8, true}, ops);
}

bool contains(const std::vector<GgmlType>& v, GgmlType t) { return std::find(v.begin(), v.end(), t) != v.end(); }

TEST(BlockTable, BuiltinPredicatesComeFromRows) {
  // The table's columns give the predicates (no other list): spot-check rows that differ in each column.
  EXPECT_TRUE(q::can_dequantize(GgmlType::TQ1_0));
  EXPECT_TRUE(q::can_quantize(GgmlType::TQ1_0));
  EXPECT_FALSE(contains(q::writable_types(), GgmlType::TQ1_0));
  EXPECT_TRUE(q::can_dequantize(GgmlType::IQ2_XXS));
  EXPECT_FALSE(q::can_dequantize(GgmlType::I32));
  EXPECT_EQ(edgeq::runtime::act_rounding_for(GgmlType::IQ2_XXS), q::ActRounding::Q8_K);
  EXPECT_EQ(edgeq::runtime::act_rounding_for(GgmlType::BF16), q::ActRounding::None);
  EXPECT_EQ(edgeq::runtime::act_rounding_for(GgmlType::IQ4_NL), q::ActRounding::Q8_0);
  EXPECT_EQ(edgeq::runtime::act_rounding_for(GgmlType::I32), q::ActRounding::None);
  const std::vector<GgmlType> want = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16,   GgmlType::Q4_0,
                                      GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,   GgmlType::Q8_0,
                                      GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K,   GgmlType::Q5_K,
                                      GgmlType::Q6_K, GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ3_XXS,
                                      GgmlType::IQ1_S, GgmlType::IQ4_NL, GgmlType::IQ3_S, GgmlType::IQ2_S,
                                      GgmlType::IQ4_XS, GgmlType::IQ1_M};
  EXPECT_EQ(q::writable_types(), want);
  for (const q::BlockOps* r : q::block_ops_rows()) {
    ASSERT_NE(r->info, nullptr);
    EXPECT_EQ(q::can_dequantize(r->type), r->dequantize != nullptr) << r->info->name;
    EXPECT_EQ(q::can_quantize(r->type), r->encode != nullptr) << r->info->name;
    EXPECT_EQ(q::has_simd_dequantize(r->type), r->dequantize_simd != nullptr) << r->info->name;
    EXPECT_EQ(edgeq::runtime::act_rounding_for(r->type), r->act_rounding) << r->info->name;
    EXPECT_TRUE(!r->writable || r->encode != nullptr) << r->info->name;
  }
}

TEST(BlockTable, FakeTypeIsOneRow) {
  EXPECT_FALSE(q::can_dequantize(kFake));
  EXPECT_THROW(q::parse_tensor_type("fake4"), edgeq::Error);
  register_fake();

  // Predicates and lists pick the row up.
  EXPECT_TRUE(q::can_dequantize(kFake));
  EXPECT_TRUE(q::can_quantize(kFake));
  EXPECT_FALSE(q::has_simd_dequantize(kFake));
  EXPECT_TRUE(contains(q::writable_types(), kFake));
  EXPECT_EQ(q::writable_types().back(), kFake);
  EXPECT_EQ(edgeq::runtime::act_rounding_for(kFake), q::ActRounding::Q8_0);
  EXPECT_EQ(q::parse_tensor_type("fake4"), kFake);
  EXPECT_STREQ(edgeq::ggml_type_name(kFake), "FAKE4");
  EXPECT_EQ(*edgeq::ggml_row_size(kFake, 8), 16u);
  try {
    q::parse_tensor_type("nope");
    FAIL() << "no error";
  } catch (const edgeq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("IQ1_M, FAKE4"), std::string::npos) << e.what();
  }

  // quantize_rows / dequantize_row run the row's functions.
  const std::vector<float> x = {1.f, -2.f, 0.5f, 127.f, 3.f, 0.f, -6.f, 1.5f};
  std::vector<uint8_t> bytes(16);
  EXPECT_EQ(q::quantize_rows(kFake, x.data(), bytes.data(), 2, 4, nullptr), 16u);
  std::vector<float> y(8), ys(8);
  q::dequantize_row(kFake, bytes.data(), y.data(), 8);
  q::dequantize_row_scalar(kFake, bytes.data(), ys.data(), 8);
  EXPECT_EQ(y, ys);
  EXPECT_FLOAT_EQ(y[3], 127.f);
  EXPECT_FLOAT_EQ(y[1], -2.f);
  EXPECT_NEAR(y[7], 1.5f, 6.f / 127.f / 2 + 1e-6f);
  EXPECT_THROW(q::dequantize_row(kFake, bytes.data(), y.data(), 6), edgeq::Error);  // not a multiple of 4

  // The runtime's kernel table takes the new type, and the runtime's matmul dispatches through it.
  EXPECT_EQ(edgeq::runtime::block_kernels(kFake), nullptr);
  const int64_t in = 32, out = 3, tokens = 2;
  std::vector<float> wf(static_cast<size_t>(in * out), 0.25f), xs(static_cast<size_t>(in * tokens), 1.f);
  std::vector<uint8_t> wq(static_cast<size_t>(out) * *edgeq::ggml_row_size(kFake, in));
  q::quantize_rows(kFake, wf.data(), wq.data(), out, in, nullptr);
  edgeq::TensorView w{"w", {static_cast<uint64_t>(in), static_cast<uint64_t>(out)}, kFake, wq.data(), wq.size()};
  auto product = [&] {
    edgeq::runtime::ThreadPool pool(2);
    edgeq::runtime::MatmulScratch scratch;
    std::vector<float> y(static_cast<size_t>(out * tokens));
    edgeq::runtime::matmul(w, xs.data(), tokens, in, y.data(), out, pool, scratch);
    return y;
  };
  EXPECT_NEAR(product()[0], 32 * 0.25f, 1e-3f);  // no kernel: dequantized weights times activations
  edgeq::runtime::set_block_kernels(kFake, {dot_fake, nullptr, nullptr});
  ASSERT_EQ(edgeq::runtime::block_kernels(kFake)->scalar, dot_fake);
  for (float v : product()) EXPECT_EQ(v, 42.f);
  EXPECT_THROW(edgeq::runtime::set_block_kernels(kFake, {nullptr, dot_fake, nullptr}), edgeq::Error);  // SIMD without portable
}

TEST(BlockTable, RegistrationRejectsConflicts) {
  register_fake();
  q::BlockOps ops{};
  ops.type = kFake;
  EXPECT_THROW(q::register_block_type({kFake, "FAKE4", kQk, 8, true}, ops), edgeq::Error);  // row exists
  ops.type = static_cast<GgmlType>(0x45510F02);
  EXPECT_THROW(q::register_block_type({ops.type, "Q4_0", 32, 18, true}, ops), edgeq::Error);  // name taken
  EXPECT_THROW(q::register_block_type({GgmlType::Q4_0, "Q4_0", 32, 18, true}, ops), edgeq::Error);  // id mismatch
  ops.writable = true;  // writable without an encoder
  EXPECT_THROW(q::register_block_type({ops.type, "FAKE_W", 4, 8, true}, ops), edgeq::Error);
  EXPECT_THROW(edgeq::runtime::set_block_kernels(static_cast<GgmlType>(0x45510F03), {}), edgeq::Error);
}

}  // namespace
