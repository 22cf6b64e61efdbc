// convert of the architectures whose goldens are llama.cpp b4748's own convert_hf_to_gguf.py output
// (arch table entries with ConvertLayout::HfConverter): gemma, gemma2, phi3, mixtral byte for byte, a checkpoint
// of an architecture not in the table refused in one line, and synthetic checkpoints of other shapes (head
// counts, windows, expert counts, LongRoPE lengths) converted by the same rules.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "edgeq/convert/convert.h"
#include "edgeq/convert/plan.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "st_writer.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using namespace edgeq;
using namespace edgeq::convert;
using edgeq::test::f32_tensor;
using edgeq::test::StEntry;

namespace {

std::string convert_to(const std::string& src, const std::string& outtype, const std::string& out) {
  ConvertOptions o;
  o.outtype = outtype;
  auto plan = plan_conversion(src, o);
  convert_to_gguf(plan, out, "", 2);
  return out;
}

const GgufTensorInfo* tensor(const GgufFile& f, const std::string& name) {
  for (auto& t : f.tensors())
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<float> f32_of(const GgufFile& f, const std::string& name) {
  const GgufTensorInfo* t = tensor(f, name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return {};
  EXPECT_EQ(t->type, GgmlType::F32) << name;
  auto v = f.view(*t);
  std::vector<float> out(v.nbytes / 4);
  std::memcpy(out.data(), v.data, v.nbytes);
  return out;
}

std::vector<float> f32_of(const StEntry& e) {
  std::vector<float> v(e.bytes.size() / 4);
  std::memcpy(v.data(), e.bytes.data(), e.bytes.size());
  return v;
}

uint64_t u32_key(const GgufFile& f, const std::string& k) {
  const GgufValue* v = f.find(k);
  EXPECT_NE(v, nullptr) << k;
  if (!v) return 0;
  EXPECT_EQ(v->type(), GgufType::UINT32) << k;
  return v->as_uint();
}

// A synthetic checkpoint: config.json, model.safetensors, stories260K's 512-piece SentencePiece tokenizer.
void write_checkpoint(const fs::path& dir, const nlohmann::json& cfg, const std::vector<StEntry>& ts) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << cfg.dump(1);
  for (const char* f : {"tokenizer.model", "tokenizer_config.json"})
    fs::copy_file(fs::path(edgeq::test::shared("models/arch/gemma")) / f, dir / f);
  edgeq::test::write_safetensors(dir / "model.safetensors", ts);
}

}  // namespace

// ---- llama.cpp's F16 files, byte for byte ---------------------------------------------------------------
class ArchGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(ArchGolden, F16IsLlamaCppsFileByteForByte) {
  const std::string name = GetParam();
  edgeq::test::TempDir td;
  const auto ours = edgeq::test::read_file(convert_to(edgeq::test::shared("models/arch/" + name), "f16", td.file(name + ".gguf")));
  const auto golden = edgeq::test::read_file(edgeq::test::shared("golden/arch/" + name + "-F16.gguf"));
  ASSERT_GT(golden.size(), 1000000u);
  size_t first = 0;
  while (first < ours.size() && first < golden.size() && ours[first] == golden[first]) ++first;
  EXPECT_EQ(ours.size(), golden.size());
  EXPECT_EQ(first, golden.size()) << name << ": first differing byte at " << first;
}

INSTANTIATE_TEST_SUITE_P(Convert, ArchGolden, ::testing::Values("gemma", "gemma2", "phi3", "mixtral"));

// Other outtypes follow convert_hf_to_gguf.py's rules: norms, 1-D tensors and the MoE router F32, the rest of the
// type; the key set and tensor order stay those of the F16 file.
TEST(ConvertArch, OtherOuttypesKeepTheLayout) {
  edgeq::test::TempDir td;
  auto golden = GgufFile::open(edgeq::test::shared("golden/arch/mixtral-F16.gguf"));
  for (const char* ot : {"f32", "bf16", "q8_0"}) {
    auto got = GgufFile::open(convert_to(edgeq::test::shared("models/arch/mixtral"), ot, td.file(std::string(ot) + ".gguf")));
    ASSERT_EQ(got.metadata().size(), golden.metadata().size()) << ot;
    for (size_t i = 0; i < golden.metadata().size(); ++i) {
      EXPECT_EQ(got.metadata()[i].first, golden.metadata()[i].first) << ot;
      if (got.metadata()[i].first != "general.file_type") {
        EXPECT_TRUE(got.metadata()[i].second == golden.metadata()[i].second) << ot << " " << got.metadata()[i].first;
      }
    }
    EXPECT_EQ(u32_key(got, "general.file_type"), std::string(ot) == "f32" ? 0u : std::string(ot) == "bf16" ? 32u : 7u);
    ASSERT_EQ(got.tensors().size(), golden.tensors().size());
    for (size_t i = 0; i < golden.tensors().size(); ++i) {
      const auto& g = got.tensors()[i];
      EXPECT_EQ(g.name, golden.tensors()[i].name);
      EXPECT_EQ(g.dims, golden.tensors()[i].dims);
      const bool f32 = g.dims.size() == 1 || g.name.find("ffn_gate_inp") != std::string::npos;
      const GgmlType want = f32 ? GgmlType::F32
                            : std::string(ot) == "f32" ? GgmlType::F32
                            : std::string(ot) == "bf16" ? GgmlType::BF16 : GgmlType::Q8_0;
      EXPECT_EQ(g.type, want) << ot << " " << g.name;
    }
  }
}

// ---- refusal ------------------------------------------------------------------------------------------------
TEST(ConvertArch, UnknownHfClassIsRefusedInOneLineNamingConfigJson) {
  edgeq::test::TempDir td;
  nlohmann::json cfg = nlohmann::json::parse(edgeq::test::read_text(edgeq::test::shared("models/arch/gemma/config.json")));
  cfg["architectures"] = {"Gemma3ForCausalLM"};
  write_checkpoint(td.path / "g3", cfg, {});
  try {
    plan_conversion((td.path / "g3").string(), ConvertOptions{});
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find((td.path / "g3" / "config.json").string()), std::string::npos) << m;
    EXPECT_NE(m.find("unknown architecture 'Gemma3ForCausalLM'"), std::string::npos) << m;
    EXPECT_NE(m.find("Gemma2ForCausalLM"), std::string::npos) << m;  // lists what is supported
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

// ---- other shapes, built from the converter's definitions ----------------------------------------------------
// Mixtral with 11 experts (experts.10 sorts before experts.2), top-3, 3 layers, 2/1 heads of 32.
TEST(ConvertArch, MixtralOfAnotherShapeStacksEveryExpert) {
  edgeq::test::TempDir td;
  const uint64_t E = 64, F = 32, L = 3, X = 11, V = 512, H = 2, KV = 1, HD = 32;
  nlohmann::json cfg = {{"architectures", {"MixtralForCausalLM"}}, {"hidden_size", E}, {"intermediate_size", F},
                        {"num_hidden_layers", L}, {"num_attention_heads", H}, {"num_key_value_heads", KV},
                        {"vocab_size", V}, {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-5},
                        {"rope_theta", 1e6}, {"num_local_experts", X}, {"num_experts_per_tok", 3},
                        {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  std::mt19937 rng(7);
  std::vector<StEntry> ts = {f32_tensor("model.embed_tokens.weight", {V, E}, rng), f32_tensor("model.norm.weight", {E}, rng),
                             f32_tensor("lm_head.weight", {V, E}, rng)};
  for (uint64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ts.push_back(f32_tensor(p + "input_layernorm.weight", {E}, rng));
    ts.push_back(f32_tensor(p + "post_attention_layernorm.weight", {E}, rng));
    ts.push_back(f32_tensor(p + "self_attn.q_proj.weight", {H * HD, E}, rng));
    ts.push_back(f32_tensor(p + "self_attn.k_proj.weight", {KV * HD, E}, rng));
    ts.push_back(f32_tensor(p + "self_attn.v_proj.weight", {KV * HD, E}, rng));
    ts.push_back(f32_tensor(p + "self_attn.o_proj.weight", {E, H * HD}, rng));
    ts.push_back(f32_tensor(p + "block_sparse_moe.gate.weight", {X, E}, rng));
    for (uint64_t x = 0; x < X; ++x) {
      const std::string q = p + "block_sparse_moe.experts." + std::to_string(x) + ".";
      ts.push_back(f32_tensor(q + "w1.weight", {F, E}, rng));
      ts.push_back(f32_tensor(q + "w2.weight", {E, F}, rng));
      ts.push_back(f32_tensor(q + "w3.weight", {F, E}, rng));
    }
  }
  write_checkpoint(td.path / "mx", cfg, ts);
  auto f = GgufFile::open(convert_to((td.path / "mx").string(), "f32", td.file("mx.gguf")));
  EXPECT_EQ(f.find("general.architecture")->as_string(), "llama");
  EXPECT_EQ(u32_key(f, "llama.expert_count"), X);
  EXPECT_EQ(u32_key(f, "llama.expert_used_count"), 3u);
  EXPECT_EQ(u32_key(f, "llama.attention.head_count_kv"), KV);
  EXPECT_EQ(u32_key(f, "llama.rope.dimension_count"), HD);
  // shared (104960) + one expert's parameters (3 layers x 3 matrices x 32 x 64 = 18432)
  EXPECT_EQ(f.find("general.size_label")->as_string(), "11x123K");
  EXPECT_EQ(f.tensors().size(), 3 + L * 10);
  // Layer 1: the stacked experts follow its last expert tensor (experts.9.w3), gate/down/up; the router after.
  std::vector<std::string> names;
  for (auto& t : f.tensors()) names.push_back(t.name);
  auto at = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) - names.begin(); };
  EXPECT_EQ(at("blk.1.ffn_down_exps.weight"), at("blk.1.ffn_gate_exps.weight") + 1);
  EXPECT_EQ(at("blk.1.ffn_up_exps.weight"), at("blk.1.ffn_gate_exps.weight") + 2);
  EXPECT_EQ(at("blk.1.ffn_gate_inp.weight"), at("blk.1.ffn_gate_exps.weight") + 3);
  EXPECT_EQ(at("output.weight"), 0);  // lm_head sorts first
  EXPECT_EQ(tensor(f, "blk.2.ffn_gate_exps.weight")->dims, (std::vector<uint64_t>{E, F, X}));
  EXPECT_EQ(tensor(f, "blk.2.ffn_down_exps.weight")->dims, (std::vector<uint64_t>{F, E, X}));
  EXPECT_EQ(tensor(f, "blk.2.ffn_gate_inp.weight")->dims, (std::vector<uint64_t>{E, X}));
  // Expert 10's w2 of layer 2 is the last slice of ffn_down_exps, unchanged.
  auto down = f32_of(f, "blk.2.ffn_down_exps.weight");
  const StEntry* w2 = nullptr;
  for (auto& t : ts)
    if (t.name == "model.layers.2.block_sparse_moe.experts.10.w2.weight") w2 = &t;
  ASSERT_NE(w2, nullptr);
  auto want = f32_of(*w2);
  ASSERT_EQ(down.size(), want.size() * X);
  EXPECT_TRUE(std::equal(want.begin(), want.end(), down.end() - static_cast<std::ptrdiff_t>(want.size())));
}

// Gemma 2 with 3 layers, 2/1 heads of 32, window 16, other caps; a stray lm_head is skipped; norms are w + 1.
TEST(ConvertArch, Gemma2OfAnotherShapeKeepsItsKeysAndAddsOneToNorms) {
  edgeq::test::TempDir td;
  const uint64_t E = 64, F = 96, L = 3, V = 512, H = 2, KV = 1, HD = 32;
  nlohmann::json cfg = {{"architectures", {"Gemma2ForCausalLM"}}, {"hidden_size", E}, {"intermediate_size", F},
                        {"num_hidden_layers", L}, {"num_attention_heads", H}, {"num_key_value_heads", KV},
                        {"head_dim", HD}, {"vocab_size", V}, {"max_position_embeddings", 1024}, {"rms_norm_eps", 1e-6},
                        {"attn_logit_softcapping", 20.0}, {"final_logit_softcapping", 10.0}, {"sliding_window", 16},
                        {"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", 0}};
  std::mt19937 rng(8);
  std::vector<StEntry> ts = {f32_tensor("model.embed_tokens.weight", {V, E}, rng), f32_tensor("model.norm.weight", {E}, rng),
                             f32_tensor("lm_head.weight", {V, E}, rng)};
  for (uint64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"})
      ts.push_back(f32_tensor(p + n + ".weight", {E}, rng));
    ts.push_back(f32_tensor(p + "self_attn.q_proj.weight", {H * HD, E}, rng));
    ts.push_back(f32_tensor(p + "self_attn.k_proj.weight", {KV * HD, E}, rng));
    ts.push_back(f32_tensor(p + "self_attn.v_proj.weight", {KV * HD, E}, rng));
    ts.push_back(f32_tensor(p + "self_attn.o_proj.weight", {E, H * HD}, rng));
    ts.push_back(f32_tensor(p + "mlp.gate_proj.weight", {F, E}, rng));
    ts.push_back(f32_tensor(p + "mlp.up_proj.weight", {F, E}, rng));
    ts.push_back(f32_tensor(p + "mlp.down_proj.weight", {E, F}, rng));
  }
  write_checkpoint(td.path / "g2", cfg, ts);
  auto f = GgufFile::open(convert_to((td.path / "g2").string(), "f32", td.file("g2.gguf")));
  EXPECT_EQ(u32_key(f, "gemma2.attention.sliding_window"), 16u);
  EXPECT_EQ(u32_key(f, "gemma2.attention.key_length"), HD);
  EXPECT_EQ(u32_key(f, "gemma2.attention.head_count_kv"), KV);
  EXPECT_EQ(f.find("gemma2.attn_logit_softcapping")->as_double(), 20.0);
  EXPECT_EQ(f.find("gemma2.final_logit_softcapping")->as_double(), 10.0);
  EXPECT_EQ(f.find("tokenizer.ggml.eot_token_id"), nullptr);  // GemmaModel's CodeGemma ids, not Gemma2Model's
  EXPECT_FALSE(f.find("tokenizer.ggml.add_space_prefix")->as_bool());
  EXPECT_EQ(tensor(f, "output.weight"), nullptr);
  EXPECT_EQ(f.tensors().size(), 2 + L * 11);
  for (const auto& [hf, gg] : std::vector<std::pair<std::string, std::string>>{
           {"model.layers.2.post_feedforward_layernorm.weight", "blk.2.post_ffw_norm.weight"},
           {"model.layers.1.pre_feedforward_layernorm.weight", "blk.1.ffn_norm.weight"},
           {"model.norm.weight", "output_norm.weight"}}) {
    const StEntry* s = nullptr;
    for (auto& t : ts)
      if (t.name == hf) s = &t;
    ASSERT_NE(s, nullptr);
    auto w = f32_of(*s), got = f32_of(f, gg);
    ASSERT_EQ(got.size(), w.size());
    for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(got[i], w[i] + 1.0f) << gg << "[" << i << "]";
  }
}

// Phi-3 with 2 heads of 32 (16 LongRoPE factors), context 4096 over 1024, no sliding window (null -> 0).
TEST(ConvertArch, Phi3OfAnotherShapeWritesItsRopeFactorsAndAttnFactor) {
  edgeq::test::TempDir td;
  const uint64_t E = 64, F = 96, L = 1, V = 512, H = 2, KV = 1, HD = 32;
  std::vector<double> lf, sf;
  for (uint64_t i = 0; i < HD / 2; ++i) lf.push_back(1.0 + 0.25 * static_cast<double>(i)), sf.push_back(1.0 + 0.01 * static_cast<double>(i));
  nlohmann::json cfg = {{"architectures", {"Phi3ForCausalLM"}}, {"hidden_size", E}, {"intermediate_size", F},
                        {"num_hidden_layers", L}, {"num_attention_heads", H}, {"num_key_value_heads", KV},
                        {"vocab_size", V}, {"max_position_embeddings", 4096}, {"original_max_position_embeddings", 1024},
                        {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"sliding_window", nullptr},
                        {"rope_scaling", {{"type", "longrope"}, {"long_factor", lf}, {"short_factor", sf}}},
                        {"bos_token_id", 1}, {"eos_token_id", 2}};
  std::mt19937 rng(9);
  std::vector<StEntry> ts = {f32_tensor("model.embed_tokens.weight", {V, E}, rng), f32_tensor("model.norm.weight", {E}, rng),
                             f32_tensor("lm_head.weight", {V, E}, rng),
                             f32_tensor("model.layers.0.input_layernorm.weight", {E}, rng),
                             f32_tensor("model.layers.0.post_attention_layernorm.weight", {E}, rng),
                             f32_tensor("model.layers.0.self_attn.qkv_proj.weight", {(H + 2 * KV) * HD, E}, rng),
                             f32_tensor("model.layers.0.self_attn.o_proj.weight", {E, H * HD}, rng),
                             f32_tensor("model.layers.0.mlp.gate_up_proj.weight", {2 * F, E}, rng),
                             f32_tensor("model.layers.0.mlp.down_proj.weight", {E, F}, rng)};
  write_checkpoint(td.path / "p3", cfg, ts);
  auto f = GgufFile::open(convert_to((td.path / "p3").string(), "f32", td.file("p3.gguf")));
  EXPECT_EQ(f.metadata()[1].first, "phi3.rope.scaling.attn_factor");  // written while the tensors are made
  EXPECT_EQ(f.find("phi3.rope.scaling.attn_factor")->as_double(),
            static_cast<double>(static_cast<float>(std::sqrt(1.0 + std::log(4.0) / std::log(1024.0)))));
  EXPECT_EQ(u32_key(f, "phi3.attention.sliding_window"), 0u);
  EXPECT_EQ(u32_key(f, "phi3.rope.dimension_count"), HD);
  EXPECT_EQ(u32_key(f, "phi3.rope.scaling.original_context_length"), 1024u);
  EXPECT_EQ(f.tensors()[0].name, "rope_factors_long.weight");
  EXPECT_EQ(f.tensors()[1].name, "rope_factors_short.weight");
  auto got = f32_of(f, "rope_factors_long.weight");
  ASSERT_EQ(got.size(), HD / 2);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], static_cast<float>(lf[i]));
  EXPECT_EQ(tensor(f, "blk.0.attn_qkv.weight")->dims, (std::vector<uint64_t>{E, (H + 2 * KV) * HD}));
  EXPECT_EQ(tensor(f, "blk.0.ffn_up.weight")->dims, (std::vector<uint64_t>{E, 2 * F}));
  // A factor list of the wrong length is refused before anything is written.
  cfg["rope_scaling"]["short_factor"] = std::vector<double>(HD, 1.0);
  std::ofstream(td.path / "p3" / "config.json") << cfg.dump(1);
  try {
    plan_conversion((td.path / "p3").string(), ConvertOptions{});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("short_factor has 32 values, expected 16"), std::string::npos) << e.what();
  }
}

// general.* from a directory named like a Hub model, as gguf-py's Metadata heuristics (b4748) derive them: the
// size-like "4k" (far from the model's 1.5M parameters) is a finetune part, "mini" the size label.
TEST(ConvertArch, GeneralKeysFromAHubStyleDirectoryName) {
  edgeq::test::TempDir td;
  struct Case {
    const char* dir;
    const char* fixture;
    std::vector<std::pair<std::string, std::string>> keys;  // in order, after general.type
  };
  const Case cases[] = {
      {"Mixtral-8x7B-Instruct-v0.1", "mixtral",
       {{"general.name", "Mixtral 8x7B Instruct v0.1"}, {"general.version", "v0.1"}, {"general.finetune", "Instruct"},
        {"general.basename", "Mixtral"}, {"general.size_label", "8x7B"}}},
      {"Phi-3-mini-4k-instruct", "phi3",
       {{"general.name", "Phi 3 Mini 4k Instruct"}, {"general.finetune", "4k-instruct"}, {"general.basename", "Phi-3"},
        {"general.size_label", "mini"}}},
  };
  for (const Case& c : cases) {
    fs::create_directory_symlink(edgeq::test::shared(std::string("models/arch/") + c.fixture), td.path / c.dir);
    ConvertOptions o;
    auto plan = plan_conversion((td.path / c.dir).string(), o);
    size_t at = 0;
    while (at < plan.metadata.size() && plan.metadata[at].first != "general.type") ++at;
    ASSERT_LT(at + c.keys.size(), plan.metadata.size());
    for (size_t i = 0; i < c.keys.size(); ++i) {
      EXPECT_EQ(plan.metadata[at + 1 + i].first, c.keys[i].first) << c.dir;
      EXPECT_EQ(plan.metadata[at + 1 + i].second.as_string(), c.keys[i].second) << c.dir << " " << c.keys[i].first;
    }
  }
}

// A sharded checkpoint is read shard by shard (file names sorted), each shard's names sorted, as
// convert_hf_to_gguf.py reads it: here the second layer and the final norm (first shard) come before the
// embeddings and the first layer (second shard).
TEST(ConvertArch, ShardsAreWrittenInTheConvertersReadOrder) {
  edgeq::test::TempDir td;
  const uint64_t E = 64, F = 64, V = 512, H = 2, KV = 1, HD = 32;
  nlohmann::json cfg = {{"architectures", {"GemmaForCausalLM"}}, {"hidden_size", E}, {"intermediate_size", F},
                        {"num_hidden_layers", 2}, {"num_attention_heads", H}, {"num_key_value_heads", KV},
                        {"head_dim", HD}, {"vocab_size", V}, {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-6}};
  std::mt19937 rng(10);
  std::vector<StEntry> shard[2];
  shard[1].push_back(f32_tensor("model.embed_tokens.weight", {V, E}, rng));
  shard[0].push_back(f32_tensor("model.norm.weight", {E}, rng));
  for (int l = 0; l < 2; ++l) {
    auto& s = shard[l == 0 ? 1 : 0];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.push_back(f32_tensor(p + "self_attn.q_proj.weight", {H * HD, E}, rng));
    s.push_back(f32_tensor(p + "self_attn.k_proj.weight", {KV * HD, E}, rng));
    s.push_back(f32_tensor(p + "self_attn.v_proj.weight", {KV * HD, E}, rng));
    s.push_back(f32_tensor(p + "self_attn.o_proj.weight", {E, H * HD}, rng));
    s.push_back(f32_tensor(p + "input_layernorm.weight", {E}, rng));
    s.push_back(f32_tensor(p + "post_attention_layernorm.weight", {E}, rng));
    s.push_back(f32_tensor(p + "mlp.gate_proj.weight", {F, E}, rng));
    s.push_back(f32_tensor(p + "mlp.up_proj.weight", {F, E}, rng));
    s.push_back(f32_tensor(p + "mlp.down_proj.weight", {E, F}, rng));
  }
  const fs::path dir = td.path / "sharded";
  write_checkpoint(dir, cfg, {});
  fs::remove(dir / "model.safetensors");
  nlohmann::json map = nlohmann::json::object();
  for (int i = 0; i < 2; ++i) {
    const std::string file = "model-0000" + std::to_string(i + 1) + "-of-00002.safetensors";
    edgeq::test::write_safetensors(dir / file, shard[i]);
    for (auto& t : shard[i]) map[t.name] = file;
  }
  std::ofstream(dir / "model.safetensors.index.json") << nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", map}}.dump();
  auto plan = plan_conversion(dir.string(), ConvertOptions{});
  std::vector<std::string> names;
  for (auto& t : plan.tensors) names.push_back(t.name);
  const std::vector<std::string> want = {
      "blk.1.attn_norm.weight", "blk.1.ffn_down.weight", "blk.1.ffn_gate.weight", "blk.1.ffn_up.weight",
      "blk.1.ffn_norm.weight", "blk.1.attn_k.weight", "blk.1.attn_output.weight", "blk.1.attn_q.weight",
      "blk.1.attn_v.weight", "output_norm.weight", "token_embd.weight", "blk.0.attn_norm.weight",
      "blk.0.ffn_down.weight", "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight", "blk.0.ffn_norm.weight",
      "blk.0.attn_k.weight", "blk.0.attn_output.weight", "blk.0.attn_q.weight", "blk.0.attn_v.weight"};
  EXPECT_EQ(names, want);
}
