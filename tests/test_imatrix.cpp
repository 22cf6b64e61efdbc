// imatrix reader: the golden tl-8m.imatrix (llama-imatrix b4748) and hostile inputs.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/quant/imatrix.h"
#include "test_helpers.h"

namespace {
const std::string kShared = EDGEQ_SHARED_DIR;

std::vector<uint8_t> read_all(const std::string& path) { return edgeq::test::read_file(path); }
void put_i32(std::vector<uint8_t>& b, int32_t v) {
  uint8_t t[4];
  std::memcpy(t, &v, 4);
  b.insert(b.end(), t, t + 4);
}
}  // namespace

TEST(Imatrix, GoldenFile) {
  const auto im = edgeq::quant::ImatrixFile::open(kShared + "/golden/tl-8m.imatrix");
  ASSERT_EQ(im.entries().size(), 56u);  // 8 layers x 7 matrices; llama-imatrix skips output.weight
  EXPECT_EQ(im.last_call(), 217);  // chunks: ncall counts every chunk once per weight
  EXPECT_EQ(im.dataset(), "/work/anchors/text/calib.txt");
  const auto gguf = edgeq::GgufFile::open(kShared + "/golden/tl-8m-F16.gguf");
  std::set<std::string> seen;
  for (const auto& e : im.entries()) {
    EXPECT_EQ(e.ncall, 217) << e.name;
    const auto* t = gguf.find_tensor(e.name);
    ASSERT_NE(t, nullptr) << e.name;
    EXPECT_EQ(e.values.size(), t->dims[0]) << e.name;  // one value per input column
    for (float v : e.values) ASSERT_TRUE(v >= 0 && std::isfinite(v)) << e.name;
    seen.insert(e.name);
  }
  EXPECT_EQ(seen.size(), 56u);
  EXPECT_EQ(im.importance("output.weight"), nullptr);
  EXPECT_EQ(im.importance("token_embd.weight"), nullptr);
  // Stored sums divided by ncall, as llama-quantize does: 40.76923370361328 / 217 for the first value.
  const auto* v = im.importance("blk.7.attn_output.weight");
  ASSERT_NE(v, nullptr);
  ASSERT_EQ(v->size(), 256u);
  EXPECT_EQ((*v)[0], 40.76923370361328f / 217.f);
  EXPECT_EQ(im.importance("blk.6.ffn_down.weight")->size(), 768u);
  EXPECT_FLOAT_EQ((*im.importance("blk.6.ffn_down.weight"))[0], 24.12776756286621f / 217.f);
  EXPECT_EQ(im.to_map().size(), 56u);
}

TEST(Imatrix, HostileInputs) {
  using edgeq::quant::ImatrixFile;
  const auto good = read_all(kShared + "/golden/tl-8m.imatrix");
  ASSERT_GT(good.size(), 1000u);
  EXPECT_NO_THROW(ImatrixFile::parse(good.data(), good.size(), "good"));
  // Every truncation either parses (cut exactly before the optional trailer) or throws; never crashes.
  for (size_t cut = 0; cut < good.size(); cut += 97) {
    try {
      ImatrixFile::parse(good.data(), cut, "cut");
    } catch (const edgeq::Error&) {
    }
  }
  EXPECT_THROW(ImatrixFile::parse(good.data(), 3, "x"), edgeq::Error);
  auto bad = good;
  int32_t huge = 0x7fffffff;
  std::memcpy(bad.data(), &huge, 4);
  EXPECT_THROW(ImatrixFile::parse(bad.data(), bad.size(), "x"), edgeq::Error);
  std::vector<uint8_t> b;
  put_i32(b, 1); put_i32(b, 1); b.push_back('a'); put_i32(b, 1); put_i32(b, 1 << 30);
  EXPECT_THROW(ImatrixFile::parse(b.data(), b.size(), "x"), edgeq::Error);
  b.clear();
  put_i32(b, 1); put_i32(b, 1); b.push_back('a'); put_i32(b, 1); put_i32(b, 1);
  float nanv = NAN;
  uint8_t t[4]; std::memcpy(t, &nanv, 4); b.insert(b.end(), t, t + 4);
  EXPECT_THROW(ImatrixFile::parse(b.data(), b.size(), "x"), edgeq::Error);
  b.clear();  // duplicate name
  for (int k = 0; k < 1; ++k) put_i32(b, 2);
  for (int k = 0; k < 2; ++k) { put_i32(b, 1); b.push_back('a'); put_i32(b, 1); put_i32(b, 1); put_i32(b, 0); }
  EXPECT_THROW(ImatrixFile::parse(b.data(), b.size(), "x"), edgeq::Error);
  b.clear();
  put_i32(b, 1); put_i32(b, -5);
  EXPECT_THROW(ImatrixFile::parse(b.data(), b.size(), "x"), edgeq::Error);
}
