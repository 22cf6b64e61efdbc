// edgeq convert: HF checkpoints -> GGUF, checked against llama.cpp's goldens in ../shared/golden.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <type_traits>
#include <variant>

#include "edgeq/convert/convert.h"
#include "edgeq/convert/model_input.h"
#include "edgeq/convert/plan.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/model_path.h"
#include "edgeq/base/half.h"
#include "edgeq/quant/blocks.h"
#include "st_writer.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace edgeq;
using namespace edgeq::convert;

namespace {

const std::string kShared = EDGEQ_SHARED_DIR;

struct TempDir {
  fs::path p;
  TempDir() {
    p = fs::temp_directory_path() / ("edgeq-test-convert-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    fs::remove_all(p);
    fs::create_directories(p);
  }
  ~TempDir() { fs::remove_all(p); }
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::string str(const std::string& f = "") const { return f.empty() ? p.string() : (p / f).string(); }
};

std::string convert_file(const std::string& src, const std::string& outtype, const fs::path& out, int threads = 2,
                         const std::string& name = "") {
  ConvertOptions o;
  o.outtype = outtype;
  o.name = name;
  auto plan = plan_conversion(src, o);
  convert_to_gguf(plan, out.string(), "", threads);
  return out.string();
}

bool same_bytes(const TensorView& a, const TensorView& b) { return a.nbytes == b.nbytes && std::memcmp(a.data, b.data, a.nbytes) == 0; }

// Tensors: same names, order, types, dims and bytes.
void expect_same_tensors(const GgufFile& got, const GgufFile& want) {
  ASSERT_EQ(got.tensors().size(), want.tensors().size());
  for (size_t i = 0; i < want.tensors().size(); ++i) {
    const auto& g = got.tensors()[i];
    const auto& w = want.tensors()[i];
    EXPECT_EQ(g.name, w.name) << "tensor " << i;
    EXPECT_EQ(g.type, w.type) << w.name;
    EXPECT_EQ(g.dims, w.dims) << w.name;
    if (g.name == w.name && g.type == w.type && g.dims == w.dims) {
      EXPECT_TRUE(same_bytes(got.view(g), want.view(w))) << w.name << ": bytes differ";
    }
  }
}

bool scalar_eq(const GgufValue& a, const GgufValue& b) {
  if (a.v.index() != b.v.index()) return false;
  return std::visit(
      [&](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        const T& y = std::get<T>(b.v);
        if constexpr (std::is_same_v<T, GgufArray>) {
          return false;
        } else if constexpr (std::is_floating_point_v<T>) {
          return std::memcmp(&x, &y, sizeof(T)) == 0;
        } else {
          return x == y;
        }
      },
      a.v);
}

void expect_same_value(const std::string& key, const GgufValue& g, const GgufValue& w) {
  ASSERT_EQ(g.type(), w.type()) << key << ": type " << gguf_type_name(g.type()) << " vs " << gguf_type_name(w.type());
  if (w.type() == GgufType::ARRAY) {
    const auto& ga = g.as_array();
    const auto& wa = w.as_array();
    ASSERT_EQ(ga.elem_type, wa.elem_type) << key;
    ASSERT_EQ(ga.items.size(), wa.items.size()) << key;
    size_t bad = 0;
    for (size_t i = 0; i < wa.items.size(); ++i)
      if (!scalar_eq(ga.items[i], wa.items[i]) && bad++ < 5) {
        ADD_FAILURE() << key << "[" << i << "]: " << ga.items[i].to_display() << " vs " << wa.items[i].to_display();
      }
    EXPECT_EQ(bad, 0u) << key;
  } else {
    EXPECT_TRUE(scalar_eq(g, w)) << key << ": " << g.to_display() << " vs " << w.to_display();
  }
}

// Every key of `want` (optionally only those with a prefix) is in `got` with the same type and value.
std::vector<std::string> expect_metadata_superset(const GgufFile& got, const GgufFile& want, const std::string& prefix = "") {
  for (auto& [k, v] : want.metadata()) {
    if (k.rfind(prefix, 0) != 0) continue;
    const GgufValue* g = got.find(k);
    if (!g) {
      ADD_FAILURE() << "missing key " << k;
      continue;
    }
    expect_same_value(k, *g, v);
  }
  std::vector<std::string> extra;
  for (auto& [k, v] : got.metadata())
    if (k.rfind(prefix, 0) == 0 && !want.find(k)) extra.push_back(k);
  return extra;
}

// ---- synthetic checkpoints (writer in st_writer.h) --------------------------------------------------------
using edgeq::test::f32_tensor;
using edgeq::test::StEntry;
using edgeq::test::write_safetensors;

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }

struct TinyCfg {
  std::string arch = "LlamaForCausalLM";
  uint64_t hidden = 64, layers = 2, heads = 4, kv = 2, ff = 96, vocab = 0;
  uint64_t head_dim = 0;  // 0: hidden / heads
  bool qkv_bias = false, qk_norm = false, tie = false;
};

// A tiny checkpoint with random weights; the tokenizer files are copied from a shared model/tokenizer.
nlohmann::json tiny_config(const TinyCfg& c) {
  nlohmann::json j = {{"architectures", {c.arch}},      {"hidden_size", c.hidden},       {"num_hidden_layers", c.layers},
                      {"num_attention_heads", c.heads}, {"num_key_value_heads", c.kv},  {"intermediate_size", c.ff},
                      {"vocab_size", c.vocab},          {"max_position_embeddings", 128}, {"rms_norm_eps", 1e-6},
                      {"rope_theta", 1000000.0},        {"tie_word_embeddings", c.tie}};
  if (c.head_dim) j["head_dim"] = c.head_dim;
  return j;
}

std::vector<StEntry> tiny_tensors(const TinyCfg& c, std::mt19937& rng) {
  std::vector<StEntry> ts;
  uint64_t hd = c.head_dim ? c.head_dim : c.hidden / c.heads;
  ts.push_back(f32_tensor("model.embed_tokens.weight", {c.vocab, c.hidden}, rng));
  for (uint64_t l = 0; l < c.layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    ts.push_back(f32_tensor(p + "input_layernorm.weight", {c.hidden}, rng));
    ts.push_back(f32_tensor(p + "self_attn.q_proj.weight", {c.heads * hd, c.hidden}, rng));
    ts.push_back(f32_tensor(p + "self_attn.k_proj.weight", {c.kv * hd, c.hidden}, rng));
    ts.push_back(f32_tensor(p + "self_attn.v_proj.weight", {c.kv * hd, c.hidden}, rng));
    if (c.qkv_bias) {
      ts.push_back(f32_tensor(p + "self_attn.q_proj.bias", {c.heads * hd}, rng));
      ts.push_back(f32_tensor(p + "self_attn.k_proj.bias", {c.kv * hd}, rng));
      ts.push_back(f32_tensor(p + "self_attn.v_proj.bias", {c.kv * hd}, rng));
    }
    if (c.qk_norm) {
      ts.push_back(f32_tensor(p + "self_attn.q_norm.weight", {hd}, rng));
      ts.push_back(f32_tensor(p + "self_attn.k_norm.weight", {hd}, rng));
    }
    ts.push_back(f32_tensor(p + "self_attn.o_proj.weight", {c.hidden, c.heads * hd}, rng));
    ts.push_back(f32_tensor(p + "post_attention_layernorm.weight", {c.hidden}, rng));
    ts.push_back(f32_tensor(p + "mlp.gate_proj.weight", {c.ff, c.hidden}, rng));
    ts.push_back(f32_tensor(p + "mlp.up_proj.weight", {c.ff, c.hidden}, rng));
    ts.push_back(f32_tensor(p + "mlp.down_proj.weight", {c.hidden, c.ff}, rng));
  }
  ts.push_back(f32_tensor("model.norm.weight", {c.hidden}, rng));
  if (!c.tie) ts.push_back(f32_tensor("lm_head.weight", {c.vocab, c.hidden}, rng));
  return ts;
}

// Writes a stories260K-shaped llama checkpoint (SentencePiece tokenizer of stories260K, 512 tokens).
void write_tiny_llama(const fs::path& dir, const std::vector<StEntry>& ts, const nlohmann::json& cfg) {
  fs::create_directories(dir);
  write_text(dir / "config.json", cfg.dump(2));
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    fs::copy_file(fs::path(kShared) / "models/stories260K" / f, dir / f);
  write_safetensors(dir / "model.safetensors", ts);
}

const StEntry* find_entry(const std::vector<StEntry>& ts, const std::string& n) {
  for (auto& t : ts)
    if (t.name == n) return &t;
  return nullptr;
}

std::vector<float> as_f32(const StEntry& e) {
  std::vector<float> v(e.bytes.size() / 4);
  std::memcpy(v.data(), e.bytes.data(), e.bytes.size());
  return v;
}
std::vector<float> as_f32(const TensorView& t) {
  EXPECT_EQ(t.type, GgmlType::F32);
  std::vector<float> v(t.nbytes / 4);
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

}  // namespace

// ---- goldens -----------------------------------------------------------------------------------------------

TEST(Convert, Tl8mF16MatchesGoldenBitForBit) {
  TempDir td;
  auto out = convert_file(kShared + "/models/tl-8m", "f16", td.p / "tl-8m-f16.gguf");
  auto got = GgufFile::open(out);
  auto want = GgufFile::open(kShared + "/golden/tl-8m-F16.gguf");
  expect_same_tensors(got, want);
  auto extra = expect_metadata_superset(got, want);
  EXPECT_EQ(extra, std::vector<std::string>{});  // the golden's 23 keys, nothing more (no general.type)
  EXPECT_EQ(want.metadata().size(), 23u);
  // And the whole file: header, key order, padding, data -- byte for byte what llama.cpp's converter wrote.
  const auto ours = edgeq::test::read_file(out), golden = edgeq::test::read_file(kShared + "/golden/tl-8m-F16.gguf");
  EXPECT_GT(golden.size(), 1000000u);
  EXPECT_TRUE(ours == golden);
}

TEST(Convert, DefaultOuttypeIsF16LikeLlamaCpp) {
  // convert_hf_to_gguf.py's default --outtype is f16: tl-8m (BF16) converts to F16 2-D weights, F32 norms
  ConvertOptions o;
  EXPECT_EQ(o.outtype, "f16");
  auto plan = plan_conversion(kShared + "/models/tl-8m", o);
  EXPECT_EQ(plan.outtype, "f16");
  for (auto& t : plan.tensors) EXPECT_EQ(t.keep_type, t.dims.size() == 1 ? GgmlType::F32 : GgmlType::F16) << t.name;
}

TEST(Convert, Tl8mAutoIsBf16LikeLlamaCpp) {
  // convert_hf_to_gguf.py's "auto": f16 only when the first tensor is F16; tl-8m is BF16 -> bf16.
  ConvertOptions o;
  o.outtype = "auto";
  auto plan = plan_conversion(kShared + "/models/tl-8m", o);
  EXPECT_EQ(plan.outtype, "bf16");
  EXPECT_EQ(plan.first_source_type, GgmlType::BF16);
  for (auto& t : plan.tensors) EXPECT_EQ(t.keep_type, t.dims.size() == 1 ? GgmlType::F32 : GgmlType::BF16) << t.name;
  TempDir td;
  convert_to_gguf(plan, td.str("a.gguf"), "", 2);
  auto got = GgufFile::open(td.str("a.gguf"));
  EXPECT_EQ(got.get_int("general.file_type"), 32);
  // BF16 -> f32 -> BF16 is exact: the tensors equal the source bytes (after the Q/K permutation for q/k).
  auto want = GgufFile::open(kShared + "/golden/tl-8m-F16.gguf");
  auto a = got.view("blk.3.ffn_down.weight");
  auto b = want.view("blk.3.ffn_down.weight");
  ASSERT_EQ(a.n_elements(), b.n_elements());
  const uint16_t* pa = reinterpret_cast<const uint16_t*>(a.data);
  const uint16_t* pb = reinterpret_cast<const uint16_t*>(b.data);
  for (uint64_t i = 0; i < a.n_elements(); ++i) ASSERT_EQ(f32_to_f16(bf16_to_f32(pa[i])), pb[i]) << i;
}

TEST(Convert, Stories260KF32MatchesGolden) {
  TempDir td;
  auto out = convert_file(kShared + "/models/stories260K", "f32", td.p / "s.gguf");
  auto got = GgufFile::open(out);
  auto want = GgufFile::open(kShared + "/golden/stories260K-F32.gguf");
  expect_same_tensors(got, want);
  EXPECT_EQ(got.find_tensor("output.weight"), nullptr);  // tied embeddings
  auto extra = expect_metadata_superset(got, want, "tokenizer.");
  EXPECT_TRUE(extra.empty());
  expect_metadata_superset(got, want, "llama.");
  EXPECT_EQ(got.get_int("general.file_type"), 0);
  // The golden was converted from a directory named stories260K-hf; with that name the files are identical.
  EXPECT_EQ(got.get_string("general.name"), std::string("stories260K"));
  auto named = convert_file(kShared + "/models/stories260K", "f32", td.p / "named.gguf", 2, "stories260K-hf");
  const auto ours = edgeq::test::read_file(named), golden = edgeq::test::read_file(kShared + "/golden/stories260K-F32.gguf");
  EXPECT_GT(golden.size(), 1000000u);
  EXPECT_TRUE(ours == golden);
}

TEST(Convert, ShardedEqualsSingleFile) {
  TempDir td;
  auto a = GgufFile::open(convert_file(kShared + "/models/stories260K", "f32", td.p / "a.gguf"));
  auto b = GgufFile::open(convert_file(kShared + "/models/stories260K-sharded", "f32", td.p / "b.gguf"));
  expect_same_tensors(b, a);
  expect_metadata_superset(b, a, "tokenizer.");
  expect_metadata_superset(b, a, "llama.");
}

TEST(Convert, OutputIdenticalForAnyThreadCount) {
  TempDir td;
  ConvertOptions o;
  o.outtype = "f16";
  auto plan = plan_conversion(kShared + "/models/tl-8m", o);
  convert_to_gguf(plan, td.str("t1.gguf"), "", 1);
  convert_to_gguf(plan, td.str("t3.gguf"), "", 3);
  const auto s1 = edgeq::test::read_file(td.str("t1.gguf")), s3 = edgeq::test::read_file(td.str("t3.gguf"));
  ASSERT_GT(s1.size(), 1000000u);
  EXPECT_TRUE(s1 == s3);
}

TEST(Convert, PlanLoadsMatchGoldenF16AndRowsEqualWhole) {
  ConvertOptions o;
  o.outtype = "f16";
  auto plan = plan_conversion(kShared + "/models/tl-8m", o);
  auto want = GgufFile::open(kShared + "/golden/tl-8m-F16.gguf");
  for (auto& t : plan.tensors) {
    if (t.name != "blk.5.attn_k.weight" && t.name != "blk.0.attn_q.weight") continue;
    std::vector<float> all(t.n_elements());
    t.load_f32(all.data());
    ASSERT_TRUE(t.load_rows);
    std::vector<float> rows(3 * t.dims[0]);
    t.load_rows(7, 3, rows.data());
    EXPECT_EQ(0, std::memcmp(rows.data(), all.data() + 7 * t.dims[0], rows.size() * 4));
    auto v = want.view(t.name);
    const uint16_t* h = reinterpret_cast<const uint16_t*>(v.data);
    for (uint64_t i = 0; i < t.n_elements(); ++i) ASSERT_EQ(f32_to_f16(all[i]), h[i]) << t.name << " " << i;
  }
}

TEST(Convert, Q8_0LayoutMatchesLlamaQuantizeAndErrorIsNoWorse) {
  // llama-quantize Q8_0 from the F32 conversion: every 2-D weight Q8_0 (rows of 256), norms F32.
  // The bytes are not compared: edgeq's one Q8_0 quantizer (quant::quantize_rows) searches the block scale
  // instead of llama.cpp's plain round-to-nearest, so it must reach an equal or lower squared error.
  TempDir td;
  auto got = GgufFile::open(convert_file(kShared + "/models/tl-8m", "q8_0", td.p / "q.gguf"));
  auto want = GgufFile::open(kShared + "/golden/tl-8m-Q8_0.gguf");
  EXPECT_EQ(got.get_int("general.file_type"), 7);
  EXPECT_EQ(got.get_int("general.quantization_version"), 2);
  ConvertOptions o;
  o.outtype = "f32";
  auto plan = plan_conversion(kShared + "/models/tl-8m", o);
  ASSERT_EQ(got.tensors().size(), want.tensors().size());
  size_t checked = 0;
  for (auto& t : plan.tensors) {
    const auto* g = got.find_tensor(t.name);
    const auto* w = want.find_tensor(t.name);
    ASSERT_NE(g, nullptr) << t.name;
    ASSERT_NE(w, nullptr) << t.name;
    EXPECT_EQ(g->type, w->type) << t.name;
    EXPECT_EQ(g->dims, w->dims) << t.name;
    if (g->type != GgmlType::Q8_0 || w->type != GgmlType::Q8_0) continue;
    std::vector<float> x(t.n_elements()), dg(t.n_elements()), dw(t.n_elements());
    t.load_f32(x.data());
    quant::dequantize_row(GgmlType::Q8_0, got.view(*g).data, dg.data(), static_cast<int64_t>(x.size()));
    quant::dequantize_row(GgmlType::Q8_0, want.view(*w).data, dw.data(), static_cast<int64_t>(x.size()));
    double eg = quant::weighted_sq_error(x.data(), dg.data(), static_cast<int64_t>(x.size()), nullptr);
    double ew = quant::weighted_sq_error(x.data(), dw.data(), static_cast<int64_t>(x.size()), nullptr);
    EXPECT_LE(eg, ew * (1 + 1e-9)) << t.name;
    EXPECT_GT(eg, 0.0) << t.name;
    ++checked;
  }
  EXPECT_EQ(checked, 58u);  // 7 per layer x 8 + token_embd + output
}

TEST(Convert, OnnxExportEqualsSafetensors) {
  // torch.onnx export of tl-8m (f32 widened from BF16, linear weights transposed as onnx::MatMul_N):
  // after recovery and transposing back, every tensor equals the safetensors conversion byte for byte.
  TempDir td;
  for (const char* ot : {"f32", "f16"}) {
    auto a = GgufFile::open(convert_file(kShared + "/models/tl-8m", ot, td.p / (std::string("st-") + ot + ".gguf")));
    auto b = GgufFile::open(convert_file(kShared + "/models/tl-8m-onnx-ext", ot, td.p / (std::string("onnx-") + ot + ".gguf")));
    SCOPED_TRACE(ot);
    expect_same_tensors(b, a);
    expect_metadata_superset(b, a, "tokenizer.");
    expect_metadata_superset(b, a, "llama.");
  }
  // the .onnx path itself works too; auto on an f32 source is bf16 (llama.cpp's rule)
  ConvertOptions o;
  o.outtype = "auto";
  auto plan = plan_conversion(kShared + "/models/tl-8m-onnx-ext/model.onnx", o);
  EXPECT_EQ(plan.outtype, "bf16");
  EXPECT_EQ(plan.tensors.size(), 75u);
}

// ---- synthetic Qwen2 / Qwen3 / llama ------------------------------------------------------------------------

TEST(Convert, SyntheticLlamaPermutesQK) {
 for (const char* arch : {"LlamaForCausalLM", "MistralForCausalLM"}) {
  SCOPED_TRACE(arch);
  TempDir td;
  std::mt19937 rng(1);
  TinyCfg c;
  c.arch = arch;
  c.vocab = 512;
  auto ts = tiny_tensors(c, rng);
  write_tiny_llama(td.p / "m", ts, tiny_config(c));
  auto g = GgufFile::open(convert_file(td.str("m"), "f32", td.p / "o.gguf"));
  auto q = as_f32(*find_entry(ts, "model.layers.1.self_attn.q_proj.weight"));
  auto k = as_f32(*find_entry(ts, "model.layers.1.self_attn.k_proj.weight"));
  auto gq = as_f32(g.view("blk.1.attn_q.weight"));
  auto gk = as_f32(g.view("blk.1.attn_k.weight"));
  const uint64_t hd = 16, in = 64;
  for (uint64_t h = 0; h < 4; ++h)
    for (uint64_t i = 0; i < hd / 2; ++i)
      for (uint64_t j = 0; j < 2; ++j)
        for (uint64_t col = 0; col < in; ++col) {
          ASSERT_EQ(gq[(h * hd + 2 * i + j) * in + col], q[(h * hd + j * (hd / 2) + i) * in + col]);
          if (h < 2) {
            ASSERT_EQ(gk[(h * hd + 2 * i + j) * in + col], k[(h * hd + j * (hd / 2) + i) * in + col]);
          }
        }
  EXPECT_EQ(g.get_string("general.architecture"), std::string("llama"));
  ASSERT_NE(g.find_tensor("output.weight"), nullptr);
  EXPECT_EQ(g.get_float("llama.rope.freq_base"), 1000000.0);
 }
}

void check_qwen(bool qwen3) {
  TempDir td;
  std::mt19937 rng(qwen3 ? 3 : 2);
  TinyCfg c;
  c.arch = qwen3 ? "Qwen3ForCausalLM" : "Qwen2ForCausalLM";
  c.qkv_bias = !qwen3;
  c.qk_norm = qwen3;
  c.tie = true;
  // the real Qwen3 tokenizer: 151669 tokens
  c.vocab = 151669;
  c.hidden = 32;
  c.heads = 2;
  c.kv = 1;
  c.ff = 64;
  c.layers = 2;
  if (qwen3) c.head_dim = 24;  // head_dim * heads != hidden: key_length/value_length are written
  auto ts = tiny_tensors(c, rng);
  fs::path dir = td.p / "m";
  fs::create_directories(dir);
  auto cfg = tiny_config(c);
  cfg["bos_token_id"] = 151643;
  cfg["eos_token_id"] = 151645;
  write_text(dir / "config.json", cfg.dump(2));
  write_safetensors(dir / "model.safetensors", ts);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(fs::path(kShared) / "tokenizers/qwen3" / f, dir / f);
  auto g = GgufFile::open(convert_file(dir.string(), "f16", td.p / "o.gguf"));
  const std::string A = qwen3 ? "qwen3" : "qwen2";
  EXPECT_EQ(g.architecture(), A);
  EXPECT_EQ(g.get_int(A + ".block_count"), 2);
  EXPECT_EQ(g.get_int(A + ".attention.head_count"), 2);
  EXPECT_EQ(g.get_int(A + ".attention.head_count_kv"), 1);
  EXPECT_EQ(g.get_int(A + ".embedding_length"), 32);
  EXPECT_EQ(g.get_int(A + ".feed_forward_length"), 64);
  EXPECT_EQ(g.get_int(A + ".context_length"), 128);
  EXPECT_EQ(g.get_float(A + ".attention.layer_norm_rms_epsilon"), static_cast<double>(1e-6f));
  EXPECT_EQ(g.find_tensor("output.weight"), nullptr);  // tied
  // no permutation: q/k rows are the HF rows
  for (const char* w : {"q", "k"}) {
    auto src = as_f32(*find_entry(ts, std::string("model.layers.1.self_attn.") + w + "_proj.weight"));
    auto v = g.view(std::string("blk.1.attn_") + w + ".weight");
    ASSERT_EQ(v.type, GgmlType::F16);
    const uint16_t* h = reinterpret_cast<const uint16_t*>(v.data);
    for (size_t i = 0; i < src.size(); ++i) ASSERT_EQ(h[i], f32_to_f16(src[i])) << w << " " << i;
  }
  if (!qwen3) {
    EXPECT_EQ(g.find("qwen2.attention.key_length"), nullptr);
    for (const char* w : {"q", "k", "v"}) {
      auto bias = as_f32(g.view(std::string("blk.0.attn_") + w + ".bias"));
      EXPECT_EQ(bias, as_f32(*find_entry(ts, std::string("model.layers.0.self_attn.") + w + "_proj.bias"))) << w;
    }
    EXPECT_EQ(g.find_tensor("blk.0.attn_q_norm.weight"), nullptr);
  } else {
    EXPECT_EQ(g.get_int("qwen3.attention.key_length"), 24);
    EXPECT_EQ(g.get_int("qwen3.attention.value_length"), 24);
    EXPECT_EQ(g.get_int("qwen3.rope.dimension_count"), 24);
    EXPECT_EQ(g.view("blk.0.attn_q.weight").dims, (std::vector<uint64_t>{32, 48}));
    EXPECT_EQ(g.view("blk.0.attn_output.weight").dims, (std::vector<uint64_t>{48, 32}));
    for (const char* w : {"q", "k"}) {
      auto n = as_f32(g.view(std::string("blk.1.attn_") + w + "_norm.weight"));
      EXPECT_EQ(n, as_f32(*find_entry(ts, std::string("model.layers.1.self_attn.") + w + "_norm.weight"))) << w;
    }
    EXPECT_EQ(g.find_tensor("blk.0.attn_q.bias"), nullptr);
  }
  EXPECT_EQ(g.get_string("tokenizer.ggml.model"), std::string("gpt2"));
  EXPECT_EQ(g.get_string("tokenizer.ggml.pre"), std::string("qwen2"));
  EXPECT_EQ(g.get_int("tokenizer.ggml.eos_token_id"), 151645);  // <|im_end|> from tokenizer_config.json
  EXPECT_EQ(g.get_int("tokenizer.ggml.padding_token_id"), 151643);
  EXPECT_EQ(g.get_int("tokenizer.ggml.bos_token_id"), 151643);  // config.json
  EXPECT_EQ(g.get_bool("tokenizer.ggml.add_bos_token"), false);
  ASSERT_NE(g.find("tokenizer.ggml.merges"), nullptr);
  EXPECT_EQ(g.find("tokenizer.ggml.merges")->as_array().items.size(), 151387u);
  EXPECT_TRUE(g.get_string("tokenizer.chat_template").has_value());
}

TEST(Convert, SyntheticQwen2) { check_qwen(false); }
TEST(Convert, SyntheticQwen3) { check_qwen(true); }

// ---- bad checkpoints: a clear edgeq::Error and no output file -----------------------------------------------

struct BadCase {
  std::string what;
  std::string expect_in_message;
};

void expect_convert_error(const fs::path& dir, const fs::path& out, const std::string& needle) {
  try {
    ConvertOptions o;
    o.outtype = "f16";
    auto plan = plan_conversion(dir.string(), o);
    convert_to_gguf(plan, out.string(), "", 2);
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const edgeq::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(needle), std::string::npos) << "message: " << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "one line: " << m;
  }
  EXPECT_FALSE(fs::exists(out));
  for (auto& f : fs::directory_iterator(out.parent_path()))
    EXPECT_EQ(f.path().filename().string().find("out.gguf"), std::string::npos) << "left behind: " << f.path();
}

TEST(Convert, BadCheckpointsFailCleanly) {
  TinyCfg c;
  c.vocab = 512;
  {  // missing config key
    TempDir td;
    std::mt19937 rng(5);
    auto cfg = tiny_config(c);
    cfg.erase("num_attention_heads");
    write_tiny_llama(td.p / "m", tiny_tensors(c, rng), cfg);
    expect_convert_error(td.p / "m", td.p / "out.gguf", "num_attention_heads");
  }
  {  // shape mismatching config
    TempDir td;
    std::mt19937 rng(6);
    auto ts = tiny_tensors(c, rng);
    for (auto& t : ts) {
      if (t.name == "model.layers.1.mlp.up_proj.weight") t = f32_tensor(t.name, {95, 64}, rng);
    }
    write_tiny_llama(td.p / "m", ts, tiny_config(c));
    expect_convert_error(td.p / "m", td.p / "out.gguf", "model.layers.1.mlp.up_proj.weight");
  }
  {  // NaN weight
    TempDir td;
    std::mt19937 rng(7);
    auto ts = tiny_tensors(c, rng);
    float nan = std::nanf("");
    for (auto& t : ts) {
      if (t.name == "model.layers.0.self_attn.v_proj.weight") std::memcpy(t.bytes.data() + 4 * 100, &nan, 4);
    }
    write_tiny_llama(td.p / "m", ts, tiny_config(c));
    expect_convert_error(td.p / "m", td.p / "out.gguf", "model.layers.0.self_attn.v_proj.weight");
  }
  {  // Inf in a norm
    TempDir td;
    std::mt19937 rng(8);
    auto ts = tiny_tensors(c, rng);
    float inf = INFINITY;
    for (auto& t : ts) {
      if (t.name == "model.norm.weight") std::memcpy(t.bytes.data() + 4 * 3, &inf, 4);
    }
    write_tiny_llama(td.p / "m", ts, tiny_config(c));
    expect_convert_error(td.p / "m", td.p / "out.gguf", "model.norm.weight");
  }
  {  // unknown dtype
    TempDir td;
    std::mt19937 rng(9);
    auto ts = tiny_tensors(c, rng);
    ts[3].dtype = "F12";
    write_tiny_llama(td.p / "m", ts, tiny_config(c));
    expect_convert_error(td.p / "m", td.p / "out.gguf", "F12");
  }
  {  // integer dtype where a weight is expected
    TempDir td;
    std::mt19937 rng(10);
    auto ts = tiny_tensors(c, rng);
    for (auto& t : ts) {
      if (t.name == "model.layers.1.input_layernorm.weight") t.dtype = "I32";
    }
    write_tiny_llama(td.p / "m", ts, tiny_config(c));
    expect_convert_error(td.p / "m", td.p / "out.gguf", "model.layers.1.input_layernorm.weight");
  }
  {  // unknown architecture
    TempDir td;
    std::mt19937 rng(11);
    auto cfg = tiny_config(c);
    cfg["architectures"] = {"GPTNeoXForCausalLM"};
    write_tiny_llama(td.p / "m", tiny_tensors(c, rng), cfg);
    expect_convert_error(td.p / "m", td.p / "out.gguf", "GPTNeoXForCausalLM");
  }
  {  // missing tensor
    TempDir td;
    std::mt19937 rng(12);
    auto ts = tiny_tensors(c, rng);
    ts.erase(std::remove_if(ts.begin(), ts.end(), [](auto& t) { return t.name == "model.layers.1.mlp.down_proj.weight"; }), ts.end());
    write_tiny_llama(td.p / "m", ts, tiny_config(c));
    expect_convert_error(td.p / "m", td.p / "out.gguf", "model.layers.1.mlp.down_proj.weight");
  }
  {  // unmapped tensor
    TempDir td;
    std::mt19937 rng(13);
    auto ts = tiny_tensors(c, rng);
    ts.push_back(f32_tensor("model.layers.0.self_attn.mystery.weight", {4, 4}, rng));
    write_tiny_llama(td.p / "m", ts, tiny_config(c));
    expect_convert_error(td.p / "m", td.p / "out.gguf", "model.layers.0.self_attn.mystery.weight");
  }
  {  // a shard listed in the index is missing
    TempDir td;
    fs::path d = td.p / "m";
    fs::create_directories(d);
    for (auto& f : fs::directory_iterator(fs::path(kShared) / "models/stories260K-sharded"))
      if (f.path().filename() != "model-00002-of-00003.safetensors") fs::copy_file(f.path(), d / f.path().filename());
    expect_convert_error(d, td.p / "out.gguf", "model-00002-of-00003.safetensors");
  }
  {  // vocab_size in config disagrees with the embedding
    TempDir td;
    std::mt19937 rng(14);
    auto cfg = tiny_config(c);
    cfg["vocab_size"] = 600;
    write_tiny_llama(td.p / "m", tiny_tensors(c, rng), cfg);
    expect_convert_error(td.p / "m", td.p / "out.gguf", "model.embed_tokens.weight");
  }
  {  // unknown outtype
    TempDir td;
    std::mt19937 rng(15);
    write_tiny_llama(td.p / "m", tiny_tensors(c, rng), tiny_config(c));
    ConvertOptions o;
    o.outtype = "q4_k";
    EXPECT_THROW(plan_conversion(td.str("m"), o), edgeq::Error);
  }
}

TEST(Convert, RopeScaling) {
  TinyCfg c;
  c.vocab = 512;
  {  // llama3: per-dimension factors in rope_freqs.weight (F32, head_dim/2), first tensor as llama.cpp writes it
    TempDir td;
    std::mt19937 rng(21);
    auto cfg = tiny_config(c);
    cfg["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 8192}};
    write_tiny_llama(td.p / "m", tiny_tensors(c, rng), cfg);
    auto g = GgufFile::open(convert_file(td.str("m"), "f16", td.p / "o.gguf"));
    ASSERT_EQ(g.tensors()[0].name, "rope_freqs.weight");
    auto f = as_f32(g.view("rope_freqs.weight"));
    ASSERT_EQ(f.size(), 8u);   // head_dim 16
    EXPECT_EQ(f[0], 1.0f);     // wavelength 2*pi < 8192/4
    EXPECT_EQ(f[7], 8.0f);     // wavelength 2*pi*1e6^(7/8) > 8192
    for (size_t i = 1; i < f.size(); ++i) EXPECT_GE(f[i], f[i - 1]);
    EXPECT_EQ(g.find("llama.rope.scaling.type"), nullptr);
  }
  {  // linear: type and factor keys
    TempDir td;
    std::mt19937 rng(22);
    auto cfg = tiny_config(c);
    cfg["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
    write_tiny_llama(td.p / "m", tiny_tensors(c, rng), cfg);
    auto g = GgufFile::open(convert_file(td.str("m"), "f16", td.p / "o.gguf"));
    EXPECT_EQ(g.get_string("llama.rope.scaling.type"), std::string("linear"));
    ASSERT_NE(g.find("llama.rope.scaling.factor"), nullptr);
    EXPECT_EQ(g.find("llama.rope.scaling.factor")->type(), GgufType::FLOAT32);
    EXPECT_EQ(g.get_float("llama.rope.scaling.factor"), 4.0);
    EXPECT_EQ(g.find_tensor("rope_freqs.weight"), nullptr);
  }
  {  // unsupported type: error naming it, no output
    TempDir td;
    std::mt19937 rng(23);
    auto cfg = tiny_config(c);
    cfg["rope_scaling"] = {{"type", "longrope"}, {"factor", 4.0}};
    write_tiny_llama(td.p / "m", tiny_tensors(c, rng), cfg);
    expect_convert_error(td.p / "m", td.p / "out.gguf", "longrope");
  }
}

// ---- the CLI ------------------------------------------------------------------------------------------------

TEST(Convert, CliSmoke) {
  fs::path exe = fs::path(EDGEQ_BINARY_DIR) / "cli/edgeq";
  if (!fs::exists(exe)) GTEST_SKIP() << "edgeq program not built: " << exe;
  TempDir td;
  std::string cmd = exe.string() + " convert " + kShared + "/models/stories260K -o " + td.str("s.gguf") +
                    " --outtype f32 --threads 2 --json > " + td.str("out.json") + " 2>" + td.str("err.txt");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto j = nlohmann::json::parse(std::ifstream(td.str("out.json")));
  EXPECT_EQ(j["outtype"], "f32");
  EXPECT_EQ(j["tensors"], 47);
  auto got = GgufFile::open(td.str("s.gguf"));
  auto want = GgufFile::open(kShared + "/golden/stories260K-F32.gguf");
  expect_same_tensors(got, want);
  // errors: exit code 1, one line, no output
  std::string bad = exe.string() + " convert " + td.str("nowhere") + " -o " + td.str("x.gguf") + " 2>" + td.str("err2.txt");
  EXPECT_NE(std::system(bad.c_str()), 0);
  EXPECT_FALSE(fs::exists(td.str("x.gguf")));
}

// plan_conversion's first step on its own: where config.json, the tokenizer and the tensors are.
TEST(Convert, LocateCheckpoint) {
  const CheckpointLocation st = locate_checkpoint(kShared + "/models/tl-8m");
  EXPECT_EQ(st.dir, kShared + "/models/tl-8m");
  EXPECT_TRUE(st.onnx_path.empty());
  const CheckpointLocation dir = locate_checkpoint(kShared + "/models/tl-8m-onnx-ext");
  EXPECT_EQ(dir.onnx_path, kShared + "/models/tl-8m-onnx-ext/model.onnx");
  const CheckpointLocation file = locate_checkpoint(kShared + "/models/tl-8m-onnx-ext/model.onnx");
  EXPECT_EQ(file.dir, kShared + "/models/tl-8m-onnx-ext");
  EXPECT_EQ(file.onnx_path, kShared + "/models/tl-8m-onnx-ext/model.onnx");
  EXPECT_THROW(locate_checkpoint(kShared + "/models/tl-8m/config.json"), edgeq::Error);
  EXPECT_THROW(locate_checkpoint(kShared + "/models/no-such-model"), edgeq::Error);
}

// One model input: every command classifies a path by formats' classify_model_path, and ModelInput yields
// what it needs from it.
TEST(Convert, OneModelInputRule) {
  const std::string golden = kShared + "/golden";
  EXPECT_EQ(edgeq::classify_model_path(golden + "/stories260K-F32.gguf").kind, edgeq::ModelKind::Gguf);
  EXPECT_EQ(edgeq::classify_model_path(kShared + "/models/tl-8m").kind, edgeq::ModelKind::HfCheckpoint);
  EXPECT_EQ(edgeq::classify_model_path(kShared + "/models/tl-8m-onnx-ext").kind, edgeq::ModelKind::Onnx);
  const edgeq::ModelPath onnx = edgeq::classify_model_path(kShared + "/models/tl-8m-onnx-ext/model.onnx");
  EXPECT_EQ(onnx.kind, edgeq::ModelKind::Onnx);
  EXPECT_EQ(onnx.dir, kShared + "/models/tl-8m-onnx-ext");
  TempDir td;
  // A file with the GGUF magic is a GGUF whatever its name; a .gguf name without it goes to the GGUF reader.
  fs::copy_file(golden + "/stories260K-F32.gguf", td.p / "model.bin");
  EXPECT_EQ(edgeq::classify_model_path(td.str("model.bin")).kind, edgeq::ModelKind::Gguf);
  std::ofstream(td.p / "bad.gguf") << "not a gguf";
  EXPECT_EQ(edgeq::classify_model_path(td.str("bad.gguf")).kind, edgeq::ModelKind::Gguf);
  std::ofstream(td.p / "notes.txt") << "hello";
  EXPECT_THROW(edgeq::classify_model_path(td.str("notes.txt")), edgeq::Error);
  ASSERT_EQ(::mkfifo(td.str("fifo").c_str(), 0600), 0);
  EXPECT_THROW(edgeq::classify_model_path(td.str("fifo")), edgeq::Error);  // refused without opening it
  EXPECT_THROW(edgeq::classify_model_path(td.str("nowhere")), edgeq::Error);
  // ModelInput: a GGUF is its own runtime file and quantization source; a checkpoint is planned and converted.
  const auto g = edgeq::convert::ModelInput::open(golden + "/stories260K-F32.gguf");
  EXPECT_EQ(g.runtime_gguf(td.str("unused.gguf"), 1), golden + "/stories260K-F32.gguf");
  EXPECT_FALSE(fs::exists(td.p / "unused.gguf"));
  EXPECT_EQ(g.float_type("needed"), "f32");
  EXPECT_THROW(g.plan(ConvertOptions{}), edgeq::Error);
  const auto q = edgeq::convert::ModelInput::open(golden + "/tl-8m-Q4_K_M.gguf");
  try {
    q.float_type("a float source is needed");
    ADD_FAILURE() << "a Q4_K_M file has no float type";
  } catch (const edgeq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("a float source is needed"), std::string::npos) << e.what();
  }
  const auto hf = edgeq::convert::ModelInput::open(kShared + "/models/stories260K");
  EXPECT_EQ(hf.runtime_gguf(td.str("f32.gguf"), 1), td.str("f32.gguf"));
  EXPECT_EQ(GgufFile::open(td.str("f32.gguf")).tensors().size(), hf.quantize_source(1).tensors.size());
  EXPECT_THROW(edgeq::convert::ModelInput::open(kShared + "/models/stories260K-sharded/model-00001-of-00003.safetensors"),
               edgeq::Error);
}

// quantize --data on a checkpoint reads it once: after calibration's F32 conversion, the quantize source reads its
// values from that file (same floats, the plan's names and types), so the checkpoint's data is never read again:
// here it is overwritten after the conversion and the source still gives the original values.
TEST(Convert, QuantizeSourceReadsTheRuntimeConversionNotTheCheckpointAgain) {
  TempDir td;
  const fs::path ck = td.p / "ck";
  fs::create_directories(ck);
  for (const auto& e : fs::directory_iterator(kShared + "/models/stories260K"))
    if (e.is_regular_file()) fs::copy_file(e.path(), ck / e.path().filename());
  const auto in = edgeq::convert::ModelInput::open(ck.string());
  const auto original = in.quantize_source(1);
  auto src = in.quantize_source(1);
  const std::string f32 = in.runtime_gguf(td.str("f32.gguf"), 1);
  edgeq::convert::ModelInput::read_values_from(src, f32);
  {  // the checkpoint's tensor data is clobbered (the header stays): a read from it now gives other values
    const auto path = ck / "model.safetensors";
    const auto size = fs::file_size(path);
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    uint64_t header = 0;
    f.read(reinterpret_cast<char*>(&header), 8);
    f.seekp(static_cast<std::streamoff>(8 + header));
    const std::string junk(size - 8 - header, '\x7f');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  ASSERT_EQ(src.tensors.size(), original.tensors.size());
  size_t differs_in_checkpoint = 0;
  const auto clobbered = in.quantize_source(1);
  for (size_t i = 0; i < src.tensors.size(); ++i) {
    const auto& t = src.tensors[i];
    const auto& o = original.tensors[i];
    EXPECT_EQ(t.name, o.name);
    EXPECT_EQ(t.keep_type, o.keep_type) << t.name;
    EXPECT_EQ(t.source_type, o.source_type) << t.name;
    std::vector<float> got(t.n_elements()), want(o.n_elements()), junk(o.n_elements());
    t.load_f32(got.data());
    try {
      clobbered.tensors[i].load_f32(junk.data());
      differs_in_checkpoint += std::memcmp(junk.data(), got.data(), got.size() * 4) != 0;
    } catch (const edgeq::Error&) {
      ++differs_in_checkpoint;  // non-finite values are refused: also not the original
    }
    // the original values: from the F32 conversion, which holds the plan's floats exactly
    const auto g = GgufFile::open(f32);
    const auto* gt = g.find_tensor(t.name);
    ASSERT_NE(gt, nullptr) << t.name;
    std::memcpy(want.data(), g.view(*gt).data, want.size() * 4);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << t.name;
  }
  EXPECT_EQ(differs_in_checkpoint, src.tensors.size());  // the clobbering reached every tensor
  // A GGUF source is left as it is.
  auto gs = edgeq::convert::ModelInput::open(f32).quantize_source(1);
  edgeq::convert::ModelInput::read_values_from(gs, f32);
  EXPECT_EQ(gs.path, f32);
}

// Planning reads the checkpoint and writes nothing, not even beside it.
TEST(Convert, PlanningLeavesTheCheckpointDirectoryAlone) {
  TempDir td;
  for (const auto& e : fs::directory_iterator(kShared + "/models/tl-8m"))
    if (e.is_regular_file()) fs::create_symlink(e.path(), td.p / e.path().filename());
  std::set<std::string> before;
  for (const auto& e : fs::directory_iterator(td.p)) before.insert(e.path().filename().string());
  ConvertOptions o;
  auto plan = plan_conversion(td.str(), o);
  EXPECT_FALSE(plan.tensors.empty());
  std::set<std::string> after;
  for (const auto& e : fs::directory_iterator(td.p)) after.insert(e.path().filename().string());
  EXPECT_EQ(before, after);
}
