// The architecture table (arch/): lookups, the traits the rest of the code reads, and an architecture added by one
// entry working end to end (convert, load, evaluate) with no other code change.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "edgeq/arch/arch.h"
#include "edgeq/calibrate/calibrate.h"
#include "edgeq/convert/convert.h"
#include "edgeq/convert/plan.h"
#include "edgeq/base/error.h"
#include "edgeq/quant/policy.h"
#include "edgeq/runtime/forward.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/perplexity.h"
#include "edgeq/runtime/tokenizer.h"
#include "test_helpers.h"

namespace {

namespace fs = std::filesystem;
using namespace edgeq;
using namespace edgeq::test;

TEST(Arch, LookupsByHfClassAndGgufName) {
  ASSERT_NE(arch::by_hf_class("MistralForCausalLM"), nullptr);
  EXPECT_EQ(arch::by_hf_class("MistralForCausalLM")->gguf_name, "llama");
  EXPECT_EQ(arch::by_hf_class("MixtralForCausalLM")->gguf_name, "llama");  // llama with experts
  EXPECT_EQ(arch::by_hf_class("Gemma2ForCausalLM")->gguf_name, "gemma2");
  EXPECT_EQ(arch::by_hf_class("Phi3ForCausalLM")->gguf_name, "phi3");
  EXPECT_EQ(arch::by_hf_class("NoSuchForCausalLM"), nullptr);
  // The first entry with a GGUF name answers for it: "llama" is the llama entry, not mixtral's.
  EXPECT_EQ(arch::by_gguf_name("llama")->name, "llama");
  EXPECT_EQ(arch::by_gguf_name("gpt-j"), nullptr);
  EXPECT_NE(arch::hf_class_list().find("Qwen3ForCausalLM"), std::string::npos);
}

TEST(Arch, TraitsFollowLlamaCpp) {
  const arch::Arch& llama = *arch::by_gguf_name("llama");
  EXPECT_EQ(llama.rope, arch::RopeMode::Normal);
  EXPECT_EQ(llama.find(arch::Role::AttnQ)->permute, arch::Permute::Q);
  EXPECT_EQ(llama.find(arch::Role::AttnK)->permute, arch::Permute::K);
  EXPECT_TRUE(arch::by_gguf_name("qwen2")->qkv_bias);
  EXPECT_EQ(arch::by_gguf_name("qwen2")->rope, arch::RopeMode::Neox);
  EXPECT_TRUE(arch::by_gguf_name("qwen3")->qk_norm);
  const arch::Arch& g2 = *arch::by_gguf_name("gemma2");
  EXPECT_TRUE(g2.norm_plus_one && g2.post_norms && g2.attn_softcap && g2.final_softcap && g2.tied_output);
  EXPECT_EQ(g2.window, arch::SlidingWindow::EvenLayers);
  EXPECT_EQ(g2.ffn_act, arch::Activation::GeluTanh);
  EXPECT_EQ(g2.embd_scale, arch::EmbdScale::SqrtNEmbd);
  const arch::Arch& phi3 = *arch::by_gguf_name("phi3");
  EXPECT_TRUE(phi3.attn_fused_qkv && phi3.ffn_fused_gate_up && phi3.long_rope);
  EXPECT_FALSE(phi3.has(arch::Role::AttnQ));
  // GGUF names are llama.cpp's LLM_TENSOR_NAMES.
  EXPECT_EQ(arch::gguf_name(arch::Role::AttnPostNorm, 3), "blk.3.post_attention_norm.weight");
  EXPECT_EQ(arch::gguf_name(arch::Role::FfnPostNorm, 0), "blk.0.post_ffw_norm.weight");
  EXPECT_EQ(arch::gguf_name(arch::Role::FfnDownExps, 1), "blk.1.ffn_down_exps.weight");
  EXPECT_EQ(arch::gguf_name(arch::Role::AttnQ, 2, "bias"), "blk.2.attn_q.bias");
  EXPECT_EQ(arch::gguf_name(arch::Role::TokenEmbd, 0), "token_embd.weight");
  // llama-quantize's 70B rule: llama with GQA at 80 layers, qwen2 at 80 layers, nothing else.
  quant::ModelParams p;
  p.n_layer = 80;
  p.n_head = 64;
  p.n_head_kv = 8;
  for (auto [a, want] : {std::pair{"llama", true}, {"qwen2", true}, {"qwen3", false}, {"gemma", false}}) {
    p.arch = a;
    EXPECT_EQ(p.is_70b(), want) << a;
  }
  p.arch = "llama";
  p.n_head_kv = 64;
  EXPECT_FALSE(p.is_70b());
}

// A new architecture is one table entry: "tinyfake" (HF class TinyFakeForCausalLM) is llama under another name.
// tl-8m relabelled converts, loads and evaluates to the same logits as tl-8m itself.
TEST(Arch, FakeArchitectureByOneEntry) {
  arch::Arch fake = *arch::by_gguf_name("llama");
  fake.name = "tinyfake";
  fake.gguf_name = "tinyfake";
  fake.hf_classes = {"TinyFakeForCausalLM"};
  arch::add(fake);
  EXPECT_THROW(arch::add(fake), std::invalid_argument);

  TempDir td;
  const fs::path src = shared("models/tl-8m");
  const fs::path dir = td.path / "fake";
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(src))
    if (e.path().filename() != "config.json") fs::create_symlink(e.path(), dir / e.path().filename());
  nlohmann::json cfg = nlohmann::json::parse(read_text((src / "config.json").string()));
  cfg["architectures"] = {"TinyFakeForCausalLM"};
  std::ofstream(dir / "config.json") << cfg.dump();

  auto convert = [&](const fs::path& from, const std::string& out) {
    convert::ConvertOptions o;
    o.outtype = "f16";
    convert::convert_to_gguf(convert::plan_conversion(from.string(), o), td.file(out));
    return td.file(out);
  };
  const std::string fake_path = convert(dir, "fake.gguf"), real_path = convert(src, "real.gguf");

  const runtime::Model fm = runtime::Model::load(fake_path), rm = runtime::Model::load(real_path);
  EXPECT_EQ(fm.config().arch, "tinyfake");
  EXPECT_EQ(fm.gguf().find_tensor("blk.0.attn_q.weight")->dims, rm.gguf().find_tensor("blk.0.attn_q.weight")->dims);
  runtime::ContextOptions co;
  co.n_ctx = 32;
  co.n_threads = 1;
  std::vector<int32_t> toks(16);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<int32_t>(1 + 37 * i % 4000);
  const int64_t V = rm.config().n_vocab;
  std::vector<float> lf(toks.size() * V), lr(toks.size() * V);
  runtime::Context(fm, co).eval(toks.data(), 16, 0, lf.data());
  runtime::Context(rm, co).eval(toks.data(), 16, 0, lr.data());
  EXPECT_EQ(lf, lr);
  EXPECT_NE(lf[0], lf[1]);
}

TEST(Arch, UnknownArchitectureIsOneLineRefusal) {
  TempDir td;
  std::ofstream(td.file("config.json")) << R"({"architectures": ["GPTJForCausalLM"]})";
  try {
    convert::plan_conversion(td.path.string(), {});
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("config.json: unknown architecture 'GPTJForCausalLM' (supported: LlamaForCausalLM"),
              std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos);
  }
}

}  // namespace

// A few chunks of llama.cpp's F16 file of each fixture architecture against llama-perplexity's running PPL (the
// full 20-chunk and KLD checks are in test_arch_goldens, outside the sanitizer build).
TEST(Arch, FixtureF16FirstChunksMatchLlamaCpp) {
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(shared("golden/arch/arch.json")));
  const std::string text = read_text(shared("text/tinystories-heldout.txt"));
  const int64_t chunks = EDGEQ_SANITIZED ? 1 : 2;
  for (const char* n : {"gemma", "gemma2", "phi3", "mixtral"}) {
    SCOPED_TRACE(n);
    const auto m = runtime::Model::load(shared(std::string("golden/arch/") + n + "-F16.gguf"));
    const auto tok = Tokenizer::from_gguf(m.gguf());
    runtime::PerplexityOptions o;
    o.n_threads = 2;
    o.max_chunks = chunks;
    const auto r = runtime::perplexity(m, tok.tokenize(text, true, false), tok.add_bos(), tok.bos(), o);
    const double want = j[n]["files"]["F16"]["chunk_ppl"][chunks - 1].get<double>();
    EXPECT_NEAR(r.ppl, want, 5e-4 * want);
  }
}

// calibrate: gemma2 (post-norms, GELU, soft-caps: the standard matmul inputs) is calibrated, every statistic under
// a tensor of the model; phi3 (fused) and mixtral (experts) are refused in one line before any work.
TEST(Arch, CalibrateTakesGemma2AndRefusesFusedAndExperts) {
  const std::string text = read_text(shared("text/calib.txt"));
  calibrate::CalibrationOptions co;
  co.max_chunks = 1;
  co.n_threads = 2;
  {
    const auto m = runtime::Model::load(shared("golden/arch/gemma2-F16.gguf"));
    const auto tok = Tokenizer::from_gguf(m.gguf());
    const auto s = calibrate::calibrate(m, tok.tokenize(text, true, false), tok.add_bos(), tok.bos(), co);
    ASSERT_EQ(s.inputs.size(), 26u * 4);
    for (const auto& in : s.inputs) {
      EXPECT_GT(in.ncall, 0);
      for (const auto& n : in.tensor_names()) EXPECT_NE(m.gguf().find_tensor(n), nullptr) << n;
    }
  }
  for (const char* n : {"phi3", "mixtral"}) {
    const auto m = runtime::Model::load(shared(std::string("golden/arch/") + n + "-F16.gguf"));
    const auto tok = Tokenizer::from_gguf(m.gguf());
    try {
      calibrate::calibrate(m, tok.tokenize(text, true, false), tok.add_bos(), tok.bos(), co);
      ADD_FAILURE() << n << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is not supported yet"), std::string::npos) << e.what();
    }
  }
}

// generate and inspect on every fixture architecture, through the command line: llama.cpp's own Q4_K_M files (the
// GGUF) and the HF checkpoints (inspect). compare SRC needs a reference better than a uniform guess
// (perplexity.cpp's check): the noise-weight fixtures are refused there by design.
TEST(Arch, GenerateAndInspectEveryArchitecture) {
  const std::string edgeq = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
  for (const char* n : {"gemma", "gemma2", "phi3", "mixtral"}) {
    SCOPED_TRACE(n);
    const std::string gguf = shared(std::string("golden/arch/") + n + "-Q4_K_M.gguf");
    const auto g = run_shell(edgeq + " generate " + gguf + " -p 'Once upon a time' -n 4 --temp 0 -q");
    EXPECT_EQ(g.code, 0) << g.err;
    EXPECT_EQ(g.out.rfind("Once upon a time", 0), 0u) << g.out;
    const std::string arch = std::string(n) == "mixtral" ? "llama" : n;
    const auto i = run_shell(edgeq + " inspect " + gguf);
    EXPECT_EQ(i.code, 0) << i.err;
    EXPECT_NE(i.out.find("\"" + arch + "\""), std::string::npos);
    const auto h = run_shell(edgeq + " inspect " + shared(std::string("models/arch/") + n));
    EXPECT_EQ(h.code, 0) << h.err;
  }
}
