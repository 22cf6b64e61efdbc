// End-to-end quantization (quantize_model and the `edgeq quantize` program) against llama.cpp's goldens.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <set>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "edgeq/convert/quantize_source.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/base/half.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/policy.h"
#include "edgeq/quant/quantize.h"
#include "test_helpers.h"

namespace {

namespace fs = std::filesystem;
using edgeq::GgmlType;
using edgeq::GgufFile;
using namespace edgeq::quant;

const std::string kGolden = std::string(EDGEQ_SHARED_DIR) + "/golden";

// A fresh empty directory per test, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("edgeq-qcmd-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
  size_t count() const { return static_cast<size_t>(std::distance(fs::directory_iterator(path), fs::directory_iterator())); }
};

std::string read_all(const std::string& p) { return edgeq::test::read_text(p); }

nlohmann::json mixes() {
  std::ifstream in(kGolden + "/mixes.json");
  return nlohmann::json::parse(in)["files"];
}

QuantizeOptions opts_for(const char* type, int threads) {
  QuantizeOptions o;
  o.policy.ftype = parse_file_type(type);
  o.threads = threads;
  return o;
}

std::vector<float> dequant(const GgufFile& f, const std::string& name) {
  auto v = f.view(name);
  std::vector<float> out(v.n_elements());
  if (v.type == GgmlType::F32) {
    std::memcpy(out.data(), v.data, out.size() * 4);
  } else if (v.type == GgmlType::F16) {
    edgeq::f16_to_f32_row(reinterpret_cast<const uint16_t*>(v.data), out.data(), static_cast<int64_t>(out.size()));
  } else {
    const uint64_t rb = v.row_bytes(), ne0 = v.dims[0];
    for (uint64_t r = 0; r < v.n_rows(); ++r) dequantize_row(v.type, v.data + r * rb, out.data() + r * ne0, ne0);
  }
  return out;
}

double sq_err(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i] - b[i]) * double(a[i] - b[i]);
  return s;
}

// Writes a small llama-like GGUF with one 2-D F32 weight (values from fill) and one norm.
void write_small_gguf(const std::string& path, uint64_t ne0, uint64_t ne1, const std::function<float(uint64_t)>& fill,
                      GgmlType weight_type = GgmlType::F32) {
  edgeq::GgufWriter w(path);
  w.set("general.architecture", edgeq::GgufValue("llama"));
  w.set("llama.block_count", edgeq::GgufValue(uint32_t{1}));
  w.set("llama.attention.head_count", edgeq::GgufValue(uint32_t{4}));
  w.set("llama.attention.head_count_kv", edgeq::GgufValue(uint32_t{4}));
  w.add_tensor("blk.0.attn_norm.weight", {ne0}, GgmlType::F32);
  w.add_tensor("blk.0.attn_q.weight", {ne0, ne1}, weight_type);
  std::vector<float> norm(ne0, 1.0f);
  w.write_tensor_data(norm.data(), norm.size() * 4);
  std::vector<float> v(ne0 * ne1);
  for (uint64_t i = 0; i < v.size(); ++i) v[i] = fill(i);
  if (weight_type == GgmlType::F32) {
    w.write_tensor_data(v.data(), v.size() * 4);
  } else {
    std::vector<uint16_t> h(v.size());
    edgeq::f32_to_f16_row(v.data(), h.data(), static_cast<int64_t>(v.size()));
    w.write_tensor_data(h.data(), h.size() * 2);
  }
  w.finish();
}

// tl-8m F16 -> Q4_K_M: every tensor's type, size and position equal llama-quantize's golden; the weights are
// as close to the source as llama.cpp's; 1 and 2 threads give the same bytes.
TEST(QuantizeCmd, Tl8mQ4KMMatchesGoldenAndIsThreadInvariant) {
  TempDir tmp;
  QuantizeSource src = open_gguf_source(kGolden + "/tl-8m-F16.gguf");
  QuantizeReport r2 = quantize_model(src, tmp / "q2.gguf", opts_for("Q4_K_M", 2));
  QuantizeReport r1 = quantize_model(src, tmp / "q1.gguf", opts_for("Q4_K_M", 1));
  EXPECT_EQ(r2.threads, 2);
  EXPECT_EQ(r1.threads, 1);
  const std::string b1 = read_all(tmp / "q1.gguf"), b2 = read_all(tmp / "q2.gguf");
  ASSERT_EQ(b1.size(), b2.size());
  EXPECT_TRUE(b1 == b2) << "output differs between 1 and 2 threads";
  EXPECT_EQ(tmp.count(), 2u);  // no temp files left behind

  GgufFile out = GgufFile::open(tmp / "q2.gguf");
  GgufFile gold = GgufFile::open(kGolden + "/tl-8m-Q4_K_M.gguf");
  GgufFile f16 = GgufFile::open(kGolden + "/tl-8m-F16.gguf");
  auto want = mixes()["tl-8m-Q4_K_M.gguf"]["tensor_types"];
  ASSERT_EQ(out.tensors().size(), gold.tensors().size());
  uint64_t ours = 0, theirs = 0;
  for (size_t i = 0; i < out.tensors().size(); ++i) {
    const auto& t = out.tensors()[i];
    const auto& g = gold.tensors()[i];
    EXPECT_EQ(t.name, g.name) << i;
    EXPECT_EQ(std::string(edgeq::ggml_type_name(t.type)), want[t.name].get<std::string>()) << t.name;
    EXPECT_EQ(t.type, g.type) << t.name;
    EXPECT_EQ(t.nbytes, g.nbytes) << t.name;
    EXPECT_EQ(t.offset, g.offset) << t.name;
    ours += t.nbytes;
    theirs += g.nbytes;
  }
  EXPECT_EQ(ours, theirs);
  EXPECT_EQ(out.file_size() - out.data_offset(), gold.file_size() - gold.data_offset());
  std::printf("  tl-8m Q4_K_M: edgeq file %llu bytes, golden %llu (metadata difference %+lld), %.3f s on 2 threads\n",
              static_cast<unsigned long long>(out.file_size()), static_cast<unsigned long long>(gold.file_size()),
              static_cast<long long>(out.file_size()) - static_cast<long long>(gold.file_size()), r2.seconds);
  EXPECT_EQ(r2.file_size, out.file_size());
  EXPECT_EQ(r2.bytes_after, ours);
  EXPECT_EQ(r2.n_tensors, 75u);
  EXPECT_EQ(r2.type_counts["Q6_K"], 9u);
  EXPECT_EQ(r2.type_counts["Q4_K"], 49u);
  EXPECT_EQ(r2.type_counts["F32"], 17u);

  EXPECT_EQ(out.get_int("general.file_type").value_or(-1), 15);
  EXPECT_EQ(out.get_int("general.quantization_version").value_or(-1), 2);
  EXPECT_EQ(out.get_string("general.name").value_or(""), "tl-8m");
  EXPECT_NE(out.get_string("edgeq.quantize.method").value_or("").find("Q4_K_M"), std::string::npos);
  EXPECT_EQ(out.find("quantize.imatrix.file"), nullptr);
  EXPECT_EQ(out.get_int("llama.block_count").value_or(-1), 8);
  // Norms are copied bit for bit.
  auto n1 = out.view("blk.3.ffn_norm.weight"), n2 = f16.view("blk.3.ffn_norm.weight");
  ASSERT_EQ(n1.nbytes, n2.nbytes);
  EXPECT_EQ(std::memcmp(n1.data, n2.data, n1.nbytes), 0);

  // Quantization error against the F16 weights: close to llama-quantize's (which started from F32).
  for (const char* name : {"blk.0.attn_q.weight", "blk.3.ffn_down.weight", "output.weight", "token_embd.weight"}) {
    auto ref = dequant(f16, name);
    double e_ours = sq_err(dequant(out, name), ref), e_gold = sq_err(dequant(gold, name), ref);
    std::printf("  %-24s %s  sq error edgeq %.6g  llama.cpp %.6g  ratio %.4f\n", name,
                edgeq::ggml_type_name(out.find_tensor(name)->type), e_ours, e_gold, e_ours / e_gold);
    EXPECT_GT(e_ours, 0.0) << name;
    EXPECT_LT(e_ours, 1.10 * e_gold) << name;
  }
}

// With llama-imatrix's tl-8m.imatrix: the types of tl-8m-Q4_K_M-imat.gguf, llama-quantize's imatrix metadata,
// and an importance-weighted error no worse than llama.cpp's.
TEST(QuantizeCmd, Tl8mQ4KMWithImatrix) {
  TempDir tmp;
  Importance imp = load_importance(kGolden + "/tl-8m.imatrix");
  EXPECT_EQ(imp.info.entries_count, 56);
  EXPECT_EQ(imp.info.chunks_count, 217);
  QuantizeSource src = open_gguf_source(kGolden + "/tl-8m-F16.gguf");
  QuantizeOptions o = opts_for("Q4_K_M", 2);
  o.importance = &imp;
  QuantizeReport r = quantize_model(src, tmp / "qi.gguf", o);
  EXPECT_EQ(r.n_with_importance, 56u);  // every quantized linear weight but output.weight

  GgufFile out = GgufFile::open(tmp / "qi.gguf");
  GgufFile gold = GgufFile::open(kGolden + "/tl-8m-Q4_K_M-imat.gguf");
  GgufFile f16 = GgufFile::open(kGolden + "/tl-8m-F16.gguf");
  auto want = mixes()["tl-8m-Q4_K_M-imat.gguf"]["tensor_types"];
  ASSERT_EQ(out.tensors().size(), gold.tensors().size());
  for (size_t i = 0; i < out.tensors().size(); ++i) {
    const auto& t = out.tensors()[i];
    EXPECT_EQ(t.name, gold.tensors()[i].name);
    EXPECT_EQ(std::string(edgeq::ggml_type_name(t.type)), want[t.name].get<std::string>()) << t.name;
    EXPECT_EQ(t.nbytes, gold.tensors()[i].nbytes) << t.name;
  }
  EXPECT_EQ(out.get_string("quantize.imatrix.file").value_or(""), kGolden + "/tl-8m.imatrix");
  EXPECT_EQ(out.get_string("quantize.imatrix.dataset"), gold.get_string("quantize.imatrix.dataset"));
  ASSERT_NE(out.find("quantize.imatrix.entries_count"), nullptr);
  EXPECT_EQ(out.find("quantize.imatrix.entries_count")->type(), edgeq::GgufType::INT32);
  EXPECT_EQ(out.get_int("quantize.imatrix.entries_count"), gold.get_int("quantize.imatrix.entries_count"));
  EXPECT_EQ(out.get_int("quantize.imatrix.chunks_count"), gold.get_int("quantize.imatrix.chunks_count"));
  EXPECT_NE(out.get_string("edgeq.quantize.method").value_or("").find("imatrix"), std::string::npos);

  for (const char* name : {"blk.0.attn_q.weight", "blk.1.ffn_down.weight", "blk.5.ffn_up.weight"}) {
    const auto& w = imp.data.at(name);
    auto ref = dequant(f16, name), a = dequant(out, name), b = dequant(gold, name);
    const size_t ne0 = w.size();
    double ea = 0, eb = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      ea += double(w[i % ne0]) * (a[i] - ref[i]) * (a[i] - ref[i]);
      eb += double(w[i % ne0]) * (b[i] - ref[i]) * (b[i] - ref[i]);
    }
    std::printf("  %-24s %s  imatrix-weighted sq error edgeq %.6g  llama.cpp %.6g  ratio %.4f\n", name,
                edgeq::ggml_type_name(out.find_tensor(name)->type), ea, eb, ea / eb);
    EXPECT_GT(ea, 0.0);
    EXPECT_LT(ea, 1.10 * eb) << name;
  }
}

// stories260K: rows of 64 and 172 force the fallbacks; the file is valid and every tensor decodes.
TEST(QuantizeCmd, Stories260KFallbacks) {
  TempDir tmp;
  QuantizeSource src = open_gguf_source(kGolden + "/stories260K-F32.gguf");
  QuantizeReport r = quantize_model(src, tmp / "s.gguf", opts_for("Q4_K_M", 2));
  EXPECT_EQ(r.n_fallback, 35u);
  GgufFile out = GgufFile::open(tmp / "s.gguf");
  GgufFile in = GgufFile::open(kGolden + "/stories260K-F32.gguf");
  EXPECT_EQ(out.find_tensor("token_embd.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(out.find_tensor("blk.0.attn_q.weight")->type, GgmlType::Q5_0);
  EXPECT_EQ(out.find_tensor("blk.2.attn_v.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(out.find_tensor("blk.1.ffn_down.weight")->type, GgmlType::F16);
  ASSERT_EQ(out.tensors().size(), in.tensors().size());
  for (auto& t : out.tensors()) {
    auto a = dequant(out, t.name), b = dequant(in, t.name);
    double num = sq_err(a, b), den = 0;
    for (float x : b) den += double(x) * x;
    // relative error: F16 ~1e-7, Q8_0 ~1e-4, Q5_0 ~1e-3 (of the signal energy)
    EXPECT_LT(num, 0.01 * den) << t.name;
  }
}

// Every supported mix on stories260K (fallbacks everywhere): the file opens, the types are the policy's, every
// tensor decodes close to the source, and the sizes add up.
TEST(QuantizeCmd, EveryMixOnStories260K) {
  TempDir tmp;
  QuantizeSource src = open_gguf_source(kGolden + "/stories260K-F32.gguf");
  GgufFile in = GgufFile::open(kGolden + "/stories260K-F32.gguf");
  std::set<std::pair<GgmlType, int>> seen;
  for (const auto& ft : file_types()) {
    // Under the sanitizers one mix per base type (and palette width): the _S/_M/_L variants run the same
    // encoders and writer on other tensors; the normal build checks every mix.
    if (EDGEQ_SANITIZED && !seen.insert({ft.default_type, ft.palette_bits}).second) continue;
    SCOPED_TRACE(ft.name);
    QuantizeOptions o = opts_for(ft.name, 2);
    QuantizePlan plan = plan_quantize(src, o);
    QuantizeReport r = quantize_model(src, tmp / "m.gguf", o);
    GgufFile out = GgufFile::open(tmp / "m.gguf");
    EXPECT_EQ(out.get_int("general.file_type").value_or(-1), static_cast<int64_t>(ft.ftype));
    // Read back as a source: a palettized weight (two tensors in the file) is one tensor decoded through its table.
    QuantizeSource back = open_gguf_source(tmp / "m.gguf");
    ASSERT_EQ(back.tensors.size(), plan.tensors.size());
    ASSERT_EQ(out.tensors().size(), plan.tensors.size() + std::count_if(plan.tensors.begin(), plan.tensors.end(), [](auto& p) {
                                       return p.decision.palette_bits > 0;
                                     }));
    uint64_t total = 0;
    for (size_t i = 0; i < plan.tensors.size(); ++i) {
      const auto& d = plan.tensors[i].decision;
      const std::string& name = src.tensors[plan.tensors[i].source_index].name;
      ASSERT_EQ(back.tensors[i].name, name);
      uint64_t nbytes = 0;
      if (d.palette_bits > 0) {
        EXPECT_EQ(d.palette_bits, ft.palette_bits);
        EXPECT_EQ(out.find_tensor(name), nullptr) << name;
        const auto* idx = out.find_tensor(name + ".pal_idx");
        const auto* lut = out.find_tensor(name + ".pal_lut");
        ASSERT_TRUE(idx && lut) << name;
        EXPECT_EQ(idx->type, GgmlType::I8);
        EXPECT_EQ(lut->type, GgmlType::F16);
        nbytes = idx->nbytes + lut->nbytes;
      } else {
        const auto* t = out.find_tensor(name);
        ASSERT_TRUE(t) << name;
        EXPECT_EQ(t->type, d.type) << name;
        nbytes = t->nbytes;
      }
      EXPECT_EQ(nbytes, d.nbytes) << name;
      total += nbytes;
      std::vector<float> a(back.tensors[i].n_elements());
      back.tensors[i].load_f32(a.data());
      auto b = dequant(in, name);
      double num = sq_err(a, b), den = 0;
      for (float x : b) den += double(x) * x;
      // One 2-bit table for a whole tensor: 0.21 of the energy measured on blk.4.attn_k.
      const double bound = ft.palette_bits == 2 ? 0.3 : ft.default_type == GgmlType::Q2_K ? 0.2 : ft.palette_bits == 3 ? 0.1 : 0.05;
      EXPECT_LT(num, bound * den) << name;
    }
    EXPECT_EQ(total, r.bytes_after);
    EXPECT_EQ(r.file_size, fs::file_size(tmp / "m.gguf"));
  }
}

// Every tensor's bytes of two quantized files (same names and types required).
void expect_same_tensors(const std::string& a_path, const std::string& b_path) {
  GgufFile a = GgufFile::open(a_path), b = GgufFile::open(b_path);
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const auto& ta = a.tensors()[i];
    ASSERT_EQ(ta.name, b.tensors()[i].name);
    auto va = a.view(ta), vb = b.view(ta.name);
    ASSERT_EQ(va.type, vb.type) << ta.name;
    ASSERT_EQ(va.nbytes, vb.nbytes) << ta.name;
    EXPECT_EQ(std::memcmp(va.data, vb.data, va.nbytes), 0) << ta.name << " differs";
  }
}

// One pass from a Hugging Face checkpoint (plan_conversion, no intermediate file): the same tensors, bit for bit,
// as quantizing llama.cpp's F32 conversion; sharded checkpoints too.
TEST(QuantizeCmd, HfSourceEqualsGgufSource) {
  TempDir tmp;
  const std::string models = std::string(EDGEQ_SHARED_DIR) + "/models";
  QuantizeSource g = edgeq::convert::open_quantize_source(kGolden + "/stories260K-F32.gguf");
  QuantizeSource h = edgeq::convert::open_quantize_source(models + "/stories260K", 2);
  QuantizeSource hs = edgeq::convert::open_quantize_source(models + "/stories260K-sharded", 2);
  EXPECT_EQ(g.tensors[0].raw != nullptr, true);
  EXPECT_EQ(h.tensors[0].raw, nullptr);  // converted on the fly
  quantize_model(g, tmp / "g.gguf", opts_for("Q4_K_M", 2));
  QuantizeReport rh = quantize_model(h, tmp / "h.gguf", opts_for("Q4_K_M", 2));
  quantize_model(hs, tmp / "hs.gguf", opts_for("Q4_K_M", 1));
  EXPECT_EQ(rh.n_fallback, 35u);
  expect_same_tensors(tmp / "g.gguf", tmp / "h.gguf");
  expect_same_tensors(tmp / "g.gguf", tmp / "hs.gguf");
  GgufFile out = GgufFile::open(tmp / "h.gguf");
  EXPECT_EQ(out.get_int("general.file_type").value_or(-1), 15);
  EXPECT_EQ(out.get_string("tokenizer.ggml.model").value_or(""), "llama");
  EXPECT_THROW(edgeq::convert::open_quantize_source(models + "/no-such-model"), edgeq::Error);
}

// File sizes. From the HF checkpoint of tl-8m (converted on the fly), every mix is exactly as large as
// llama-quantize's golden when edgeq's own key is left out (--no-edgeq-metadata): same tensor data, same
// metadata. By default edgeq.quantize.method adds one small key, nothing else. The imatrix golden records the
// imatrix path given to llama-quantize, so that run passes a path of the same length (a symlink).
TEST(QuantizeCmd, FileSizesEqualLlamaQuantize) {
  TempDir tmp;
  const std::string models = std::string(EDGEQ_SHARED_DIR) + "/models";
  QuantizeSource hf = edgeq::convert::open_quantize_source(models + "/tl-8m", 2);
  auto m = mixes();
  int checked = 0;
  // Under the sanitizers (CI's second build) three types, one per codec family, keep the memory checks short.
  const std::vector<const char*> types =
      EDGEQ_SANITIZED ? std::vector<const char*>{"Q8_0", "Q4_K_S", "IQ4_XS"}
                      : std::vector<const char*>{"Q8_0", "Q6_K", "Q5_K_M", "Q5_1", "Q4_K_S", "Q4_0", "Q3_K_M", "Q2_K",
                                                 "IQ4_NL", "IQ4_XS"};
  for (const char* type : types) {
    SCOPED_TRACE(type);
    const uint64_t golden = m[std::string("tl-8m-") + type + ".gguf"]["bytes"].get<uint64_t>();
    QuantizeOptions o = opts_for(type, 2);
    o.record_method = false;
    QuantizeReport r = quantize_model(hf, tmp / "bare.gguf", o);
    EXPECT_EQ(r.file_size, golden);
    EXPECT_EQ(fs::file_size(tmp / "bare.gguf"), golden);
    GgufFile bare = GgufFile::open(tmp / "bare.gguf");
    EXPECT_EQ(bare.find("edgeq.quantize.method"), nullptr);
    EXPECT_EQ(bare.metadata().size(), 24u);  // the golden's 24 keys
    ++checked;
    if (type != types.front()) continue;
    // edgeq's record is one key more (the first type stands for all: the tensor data is the same either way)
    o.record_method = true;
    QuantizeReport rm = quantize_model(hf, tmp / "method.gguf", o);
    EXPECT_GT(rm.file_size, golden);
    EXPECT_LE(rm.file_size, golden + 64);
    EXPECT_NE(GgufFile::open(tmp / "method.gguf").get_string("edgeq.quantize.method").value_or("").find(type),
              std::string::npos);
  }
  EXPECT_EQ(checked, static_cast<int>(types.size()));

  GgufFile gold = GgufFile::open(kGolden + "/tl-8m-Q4_K_M-imat.gguf");
  const std::string golden_path = gold.get_string("quantize.imatrix.file").value_or("");
  struct Link {  // a symlink directly in the temp directory, removed on every exit
    std::string path;
    ~Link() {
      std::error_code ec;
      fs::remove(path, ec);
    }
  } link{(fs::temp_directory_path() / ("edgeq-" + std::to_string(::getpid()) + "-")).string()};
  ASSERT_LT(link.path.size(), golden_path.size()) << "TMPDIR too long for this test";
  link.path += std::string(golden_path.size() - link.path.size(), 'x');
  fs::create_symlink(kGolden + "/tl-8m.imatrix", link.path);
  Importance imp = load_importance(link.path);
  QuantizeOptions o = opts_for("Q4_K_M", 2);
  o.importance = &imp;
  o.record_method = false;
  QuantizeReport r = quantize_model(hf, tmp / "imat.gguf", o);
  EXPECT_EQ(r.file_size, gold.file_size());
  EXPECT_EQ(r.file_size, m["tl-8m-Q4_K_M-imat.gguf"]["bytes"].get<uint64_t>());
  EXPECT_EQ(GgufFile::open(tmp / "imat.gguf").get_string("quantize.imatrix.dataset"),
            gold.get_string("quantize.imatrix.dataset"));
}

// ONNX export (transposed MatMul weights) and the HF checkpoint of tl-8m give the same Q8_0 tensors, with the
// golden Q8_0 mix's types and sizes.
TEST(QuantizeCmd, OnnxSourceEqualsHfSource) {
  TempDir tmp;
  const std::string models = std::string(EDGEQ_SHARED_DIR) + "/models";
  QuantizeSource o = edgeq::convert::open_quantize_source(models + "/tl-8m-onnx-ext/model.onnx", 2);
  QuantizeSource h = edgeq::convert::open_quantize_source(models + "/tl-8m", 2);
  quantize_model(o, tmp / "o.gguf", opts_for("Q8_0", 2));
  quantize_model(h, tmp / "h.gguf", opts_for("Q8_0", 2));
  expect_same_tensors(tmp / "o.gguf", tmp / "h.gguf");
  GgufFile out = GgufFile::open(tmp / "o.gguf");
  GgufFile gold = GgufFile::open(kGolden + "/tl-8m-Q8_0.gguf");
  ASSERT_EQ(out.tensors().size(), gold.tensors().size());
  for (size_t i = 0; i < out.tensors().size(); ++i) {
    EXPECT_EQ(out.tensors()[i].name, gold.tensors()[i].name);
    EXPECT_EQ(out.tensors()[i].type, gold.tensors()[i].type) << out.tensors()[i].name;
    EXPECT_EQ(out.tensors()[i].offset, gold.tensors()[i].offset) << out.tensors()[i].name;
  }
  EXPECT_EQ(out.file_size() - out.data_offset(), gold.file_size() - gold.data_offset());
}

TEST(QuantizeCmd, NaNWeightIsAnErrorNamingTheTensor) {
  TempDir tmp;
  write_small_gguf(tmp / "nan.gguf", 256, 64, [](uint64_t i) { return i == 5000 ? NAN : std::sin(float(i)); });
  QuantizeSource src = open_gguf_source(tmp / "nan.gguf");
  try {
    quantize_model(src, tmp / "out.gguf", opts_for("Q4_K_M", 2));
    FAIL() << "expected an error";
  } catch (const edgeq::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("blk.0.attn_q.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
    EXPECT_NE(msg.find("row 19, column 136"), std::string::npos) << msg;  // 5000 = 19 * 256 + 136
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(tmp / "out.gguf"));
  EXPECT_EQ(tmp.count(), 1u);  // only the source: no temp file left

  // Inf in an F16 source too.
  write_small_gguf(tmp / "inf.gguf", 256, 8, [](uint64_t i) { return i == 7 ? INFINITY : 0.5f; }, GgmlType::F16);
  QuantizeSource src2 = open_gguf_source(tmp / "inf.gguf");
  EXPECT_THROW(quantize_model(src2, tmp / "out.gguf", opts_for("Q8_0", 1)), edgeq::Error);
  EXPECT_FALSE(fs::exists(tmp / "out.gguf"));
}

TEST(QuantizeCmd, RequantizeNeedsTheFlag) {
  TempDir tmp;
  QuantizeSource q8src = open_gguf_source(kGolden + "/stories260K-F32.gguf");
  quantize_model(q8src, tmp / "q8.gguf", opts_for("Q8_0", 2));
  QuantizeSource src = open_gguf_source(tmp / "q8.gguf");
  try {
    quantize_model(src, tmp / "q4.gguf", opts_for("Q4_0", 2));
    FAIL() << "expected an error";
  } catch (const edgeq::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("tensor "), std::string::npos) << msg;
    EXPECT_NE(msg.find("--allow-requantize"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Q8_0"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(tmp / "q4.gguf"));

  QuantizeOptions o = opts_for("Q4_0", 2);
  o.allow_requantize = true;
  QuantizeReport r = quantize_model(src, tmp / "q4.gguf", o);
  GgufFile out = GgufFile::open(tmp / "q4.gguf");
  EXPECT_EQ(out.find_tensor("blk.0.attn_q.weight")->type, GgmlType::Q4_0);
  EXPECT_EQ(out.find_tensor("token_embd.weight")->type, GgmlType::Q8_0);  // already Q8_0: copied
  EXPECT_EQ(out.get_int("general.file_type").value_or(-1), 2);
  EXPECT_GT(r.n_quantized, 0u);
}

// Rows are split into fixed chunks: many chunks, odd thread counts, same bytes.
TEST(QuantizeCmd, ManyChunksSameBytesForAnyThreadCount) {
  TempDir tmp;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::vector<float> vals(256 * 1000);
  for (auto& v : vals) v = nd(rng);
  write_small_gguf(tmp / "r.gguf", 256, 1000, [&](uint64_t i) { return vals[i]; });
  QuantizeSource src = open_gguf_source(tmp / "r.gguf");
  std::string first;
  for (int th : {1, 2, 3, 5}) {
    QuantizeOptions o = opts_for("Q3_K_M", th);
    quantize_model(src, tmp / "o.gguf", o);
    std::string b = read_all(tmp / "o.gguf");
    if (first.empty()) first = b;
    EXPECT_TRUE(b == first) << th << " threads";
  }
  EXPECT_GT(quantize_chunk_rows(256), 1);
  EXPECT_LT(quantize_chunk_rows(256), 1000);  // the tensor really spans several chunks
}

// The `edgeq quantize` program: summary, --json, one-line errors and no output on failure.
class QuantizeProgram : public ::testing::Test {
 protected:
  std::string exe = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
  void SetUp() override {
    if (!fs::exists(exe)) GTEST_SKIP() << exe << " not built";
  }
  int run(const std::string& args, std::string* out, std::string* err, const TempDir& tmp) {
    std::string so = tmp / "stdout.txt", se = tmp / "stderr.txt";
    std::string cmd = "EDGEQ_PROGRESS=0 '" + exe + "' " + args + " >'" + so + "' 2>'" + se + "'";
    int st = std::system(cmd.c_str());
    *out = read_all(so);
    *err = read_all(se);
    fs::remove(so);
    fs::remove(se);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
};

TEST_F(QuantizeProgram, JsonSummaryAndErrors) {
  TempDir tmp;
  std::string out, err;
  const std::string src = kGolden + "/stories260K-F32.gguf";
  ASSERT_EQ(run("quantize '" + src + "' -o '" + (tmp / "a.gguf") + "' --type Q4_0 --threads 2 --json", &out, &err, tmp), 0)
      << err;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["type"], "Q4_0");
  EXPECT_EQ(j["file_type"], 2);
  EXPECT_EQ(j["n_tensors"], 47);
  EXPECT_EQ(j["file_size"].get<uint64_t>(), fs::file_size(tmp / "a.gguf"));
  EXPECT_EQ(j["tensors"].size(), 47u);
  EXPECT_GT(j["bpw_after"].get<double>(), 4.0);
  EXPECT_LT(j["bpw_after"].get<double>(), 32.0);

  // Text summary.
  ASSERT_EQ(run("quantize '" + src + "' -o '" + (tmp / "b.gguf") + "' -t Q8_0 --tensor-type 'attn_q=F16'", &out, &err, tmp), 0)
      << err;
  EXPECT_NE(out.find("bpw"), std::string::npos) << out;
  EXPECT_NE(out.find("Q8_0"), std::string::npos) << out;
  EXPECT_EQ(GgufFile::open(tmp / "b.gguf").find_tensor("blk.0.attn_q.weight")->type, GgmlType::F16);
  EXPECT_NE(GgufFile::open(tmp / "b.gguf").find("edgeq.quantize.method"), nullptr);

  // --no-edgeq-metadata: llama-quantize's keys only; from the F16 golden, exactly the Q4_K_S golden's size.
  ASSERT_EQ(run("quantize '" + kGolden + "/tl-8m-F16.gguf' -o '" + (tmp / "c.gguf") + "' -t Q4_K_S --no-edgeq-metadata",
                &out, &err, tmp),
            0)
      << err;
  EXPECT_EQ(GgufFile::open(tmp / "c.gguf").find("edgeq.quantize.method"), nullptr);
  EXPECT_EQ(fs::file_size(tmp / "c.gguf"), mixes()["tl-8m-Q4_K_S.gguf"]["bytes"].get<uint64_t>());

  // Errors: one line, non-zero exit, no output file.
  for (std::string args : {"quantize '" + src + "' -o '" + (tmp / "x.gguf") + "' --type Q4_K_X",
                           "quantize '" + (tmp / "missing.gguf") + "' -o '" + (tmp / "x.gguf") + "' --type Q4_0",
                           "quantize '" + src + "' -o '" + (tmp / "x.gguf") + "' --type Q4_0 --tensor-type 'ffn_('=Q4_0",
                           "quantize '" + src + "' -o '" + (tmp / "x.gguf") + "' --type Q4_0 --output-tensor-type Q9"}) {
    SCOPED_TRACE(args);
    EXPECT_NE(run(args, &out, &err, tmp), 0);
    EXPECT_EQ(err.rfind("edgeq: error: ", 0), 0u) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_FALSE(fs::exists(tmp / "x.gguf"));
  }
  EXPECT_EQ(tmp.count(), 3u);  // a.gguf, b.gguf, c.gguf
}

}  // namespace
