#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "test_helpers.h"

using namespace edgeq;
using edgeq::test::golden_ggufs;
using edgeq::test::read_file;
using edgeq::test::shared;
using edgeq::test::TempDir;

TEST(Gguf, EveryGoldenRoundTripsByteIdentical) {
  auto files = golden_ggufs();
  ASSERT_GE(files.size(), 27u);  // 22 quantized/F16/F32 goldens + 5 vocab files
  TempDir tmp;
  for (size_t i = 0; i < files.size(); ++i) {
    // every file; every third under the sanitizers (CI's second build), where the rewrites took most of a minute
    if (EDGEQ_SANITIZED && i % 3 != 0) continue;
    const auto& path = files[i];
    SCOPED_TRACE(path);
    auto f = GgufFile::open(path);
    std::string out = tmp.file("rt.gguf");
    gguf_rewrite(f, out);
    auto a = read_file(path), b = read_file(out);
    ASSERT_EQ(a.size(), b.size());
    if (a == b) continue;  // one memcmp (a byte loop took most of this test's time under the sanitizers)
    const auto d = std::mismatch(a.begin(), a.end(), b.begin());
    ADD_FAILURE() << "first differing byte at " << (d.first - a.begin());
  }
}

TEST(Gguf, ReadsGoldenF16Header) {
  auto f = GgufFile::open(shared("golden/tl-8m-F16.gguf"));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.architecture(), "llama");
  EXPECT_EQ(f.get_int("llama.block_count").value(), 8);
  EXPECT_EQ(f.get_int("llama.embedding_length").value(), 256);
  // 8 layers x 9 tensors + token_embd + output_norm + output
  EXPECT_EQ(f.tensors().size(), 8u * 9 + 3);
  auto* t = f.find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->type, GgmlType::F16);
  EXPECT_EQ(t->dims, (std::vector<uint64_t>{256, 256}));
  EXPECT_EQ(t->nbytes, 256u * 256 * 2);
  auto* n = f.find_tensor("blk.0.attn_norm.weight");
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->type, GgmlType::F32);
  auto* tok = f.find("tokenizer.ggml.tokens");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->as_array().items.size(), 4096u);
  EXPECT_EQ(tok->as_array().elem_type, GgufType::STRING);
}

TEST(Gguf, TypeTableMatchesGgml) {
  // spot checks of ggml's type_traits
  struct E { GgmlType t; uint32_t bs, sz; };
  for (auto e : {E{GgmlType::Q4_0, 32, 18}, E{GgmlType::Q8_0, 32, 34}, E{GgmlType::Q2_K, 256, 84}, E{GgmlType::Q3_K, 256, 110},
                 E{GgmlType::Q4_K, 256, 144}, E{GgmlType::Q5_K, 256, 176}, E{GgmlType::Q6_K, 256, 210}, E{GgmlType::IQ4_XS, 256, 136},
                 E{GgmlType::IQ4_NL, 32, 18}, E{GgmlType::TQ1_0, 256, 54}, E{GgmlType::MXFP4, 32, 17}, E{GgmlType::BF16, 1, 2}}) {
    auto* i = ggml_type_info(e.t);
    ASSERT_NE(i, nullptr);
    EXPECT_EQ(i->block_size, e.bs) << i->name;
    EXPECT_EQ(i->type_size, e.sz) << i->name;
  }
  EXPECT_EQ(ggml_type_info(4u), nullptr);  // Q4_2: removed from ggml
  EXPECT_EQ(ggml_type_from_name("q4_k"), GgmlType::Q4_K);
  EXPECT_EQ(ggml_row_size(GgmlType::Q4_K, 4096).value(), 16u * 144);
  EXPECT_FALSE(ggml_row_size(GgmlType::Q4_K, 100).has_value());
}

TEST(Gguf, WriterIsAtomicAndValuesKeepTheirTypes) {
  TempDir tmp;
  std::string out = tmp.file("w.gguf");
  {
    GgufWriter w(out);
    w.set("a.u32", uint32_t{7});
    w.set("a.i8", int8_t{-3});
    w.set("a.f64", 2.5);
    w.set("a.s", "hello");
    GgufArray nested;
    nested.elem_type = GgufType::ARRAY;
    nested.items.push_back(GgufValue::int32_array({1, 2, 3}));
    nested.items.push_back(GgufValue::int32_array({}));
    w.set("a.nested", GgufValue(nested));
    w.add_tensor("t", {32, 2}, GgmlType::F32);
    std::vector<float> x(64, 1.0f);
    w.write_tensor_data(x.data(), 100);  // partial: never finished
    EXPECT_FALSE(std::filesystem::exists(out));
  }
  EXPECT_FALSE(std::filesystem::exists(out));  // destroyed unfinished: no output
  EXPECT_TRUE(std::filesystem::is_empty(tmp.path));  // and no temp file left behind
  {
    GgufWriter w(out);
    w.set("a.u32", uint32_t{7});
    w.set("a.i8", int8_t{-3});
    GgufArray nested;
    nested.elem_type = GgufType::ARRAY;
    nested.items.push_back(GgufValue::int32_array({1, 2, 3}));
    w.set("a.nested", GgufValue(nested));
    w.add_tensor("t", {32, 2}, GgmlType::F32);
    std::vector<float> x(64);
    for (int i = 0; i < 64; ++i) x[i] = static_cast<float>(i);
    w.write_tensor_data(x.data(), x.size() * 4);
    w.finish();
    EXPECT_EQ(std::filesystem::file_size(out), w.expected_file_size());
  }
  auto f = GgufFile::open(out);
  EXPECT_EQ(f.find("a.u32")->type(), GgufType::UINT32);
  EXPECT_EQ(f.find("a.i8")->as_int(), -3);
  auto& n = f.find("a.nested")->as_array();
  ASSERT_EQ(n.items.size(), 1u);
  EXPECT_EQ(n.items[0].as_array().items[2].as_int(), 3);
  auto v = f.view("t");
  float last;
  std::memcpy(&last, v.data + 63 * 4, 4);
  EXPECT_EQ(last, 63.0f);
}

TEST(Gguf, WriterRefusesIncompleteData) {
  TempDir tmp;
  std::string out = tmp.file("w.gguf");
  GgufWriter w(out);
  w.add_tensor("t", {32}, GgmlType::F32);
  std::vector<float> x(16);
  w.write_tensor_data(x.data(), x.size() * 4);
  EXPECT_THROW(w.finish(), Error);
  EXPECT_FALSE(std::filesystem::exists(out));
}
