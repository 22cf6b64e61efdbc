#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "edgeq/base/error.h"
#include "edgeq/base/half.h"
#include "edgeq/formats/safetensors.h"
#include "test_helpers.h"

using namespace edgeq;
using edgeq::test::shared;
using edgeq::test::TempDir;
using edgeq::test::write_file;

namespace {
// Builds a safetensors file from a header JSON and a data blob.
std::vector<uint8_t> make_st(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8 + header.size() + data.size());
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
  return out;
}
}  // namespace

TEST(Safetensors, ReadsTl8m) {
  auto f = SafetensorsFile::open(shared("models/tl-8m/model.safetensors"));
  // 8 layers x 9 + embed + norm + lm_head
  EXPECT_EQ(f.tensors().size(), 75u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  auto* q = f.find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, StDtype::BF16);
  EXPECT_EQ(q->shape, (std::vector<uint64_t>{256, 256}));
  auto* k = f.find("model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(k->shape, (std::vector<uint64_t>{128, 256}));
  uint64_t params = 0;
  for (auto& t : f.tensors()) params += t.n_elements();
  EXPECT_EQ(params, 8392960u);  // TRAINED.md
  std::vector<float> x(q->n_elements());
  st_to_f32(q->dtype, q->data, x.data(), x.size());
  double ss = 0;
  for (float v : x) { ASSERT_TRUE(std::isfinite(v)); ss += v * v; }
  EXPECT_GT(ss, 0.0);
}

TEST(Safetensors, ShardedEqualsSingle) {
  auto one = SafetensorsCheckpoint::open(shared("models/stories260K"));
  auto sh = SafetensorsCheckpoint::open(shared("models/stories260K-sharded"));
  EXPECT_EQ(sh.files().size(), 3u);
  ASSERT_EQ(one.tensors().size(), sh.tensors().size());
  for (size_t i = 0; i < one.tensors().size(); ++i) {
    auto* a = one.tensors()[i];
    auto* b = sh.tensors()[i];
    EXPECT_EQ(a->name, b->name);
    EXPECT_EQ(a->shape, b->shape);
    ASSERT_EQ(a->nbytes, b->nbytes);
    EXPECT_EQ(std::memcmp(a->data, b->data, a->nbytes), 0) << a->name;
  }
}

TEST(Safetensors, AllDtypesRecognised) {
  const char* names[] = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"};
  const uint32_t sizes[] = {8, 4, 2, 2, 1, 1, 1, 2, 4, 8, 1, 2, 4, 8, 1};
  nlohmann::json h;
  uint64_t off = 0;
  for (size_t i = 0; i < std::size(names); ++i) {
    h[std::string("t_") + names[i]] = {{"dtype", names[i]}, {"shape", {2, 3}}, {"data_offsets", {off, off + 6 * sizes[i]}}};
    off += 6 * sizes[i];
  }
  h["__metadata__"] = {{"format", "pt"}};
  auto bytes = make_st(h.dump(), std::vector<uint8_t>(off, 0));
  auto f = SafetensorsFile::parse(bytes.data(), bytes.size(), "mem");
  ASSERT_EQ(f.tensors().size(), std::size(names));
  for (size_t i = 0; i < std::size(names); ++i) {
    auto* t = f.find(std::string("t_") + names[i]);
    ASSERT_NE(t, nullptr);
    EXPECT_STREQ(st_dtype_name(t->dtype), names[i]);
    EXPECT_EQ(st_dtype_size(t->dtype), sizes[i]);
  }
}

TEST(Safetensors, ConvertsF16Bf16F64) {
  std::vector<uint8_t> data;
  auto push16 = [&](uint16_t v) { data.push_back(v & 0xff); data.push_back(v >> 8); };
  push16(f32_to_f16(1.5f)); push16(f32_to_f16(-0.25f));
  push16(f32_to_bf16(3.0f)); push16(f32_to_bf16(-7.5f));
  double d[2] = {0.125, -2.0};
  const uint8_t* dp = reinterpret_cast<const uint8_t*>(d);
  data.insert(data.end(), dp, dp + 16);
  nlohmann::json h = {{"h", {{"dtype", "F16"}, {"shape", {2}}, {"data_offsets", {0, 4}}}},
                      {"b", {{"dtype", "BF16"}, {"shape", {2}}, {"data_offsets", {4, 8}}}},
                      {"d", {{"dtype", "F64"}, {"shape", {2}}, {"data_offsets", {8, 24}}}}};
  auto bytes = make_st(h.dump(), data);
  auto f = SafetensorsFile::parse(bytes.data(), bytes.size(), "mem");
  float out[2];
  st_to_f32(StDtype::F16, f.find("h")->data, out, 2);
  EXPECT_EQ(out[0], 1.5f); EXPECT_EQ(out[1], -0.25f);
  st_to_f32(StDtype::BF16, f.find("b")->data, out, 2);
  EXPECT_EQ(out[0], 3.0f); EXPECT_EQ(out[1], -7.5f);
  st_to_f32(StDtype::F64, f.find("d")->data, out, 2);
  EXPECT_EQ(out[0], 0.125f); EXPECT_EQ(out[1], -2.0f);
  EXPECT_THROW(st_to_f32(StDtype::I32, f.find("d")->data, out, 2), Error);
}

TEST(Safetensors, MissingShardIsAnError) {
  TempDir tmp;
  nlohmann::json idx = {{"metadata", {{"total_size", 0}}}, {"weight_map", {{"a", "model-00001-of-00002.safetensors"}}}};
  std::string text = idx.dump();
  write_file(tmp.file("model.safetensors.index.json"), std::vector<uint8_t>(text.begin(), text.end()));
  try {
    SafetensorsCheckpoint::open(tmp.path.string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00001-of-00002.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}
