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
#include "edgeq/quant/quantize.h"
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
// a tensor of the model; phi3 (fused) is refused in one line before any work. mixtral's experts: see below.
TEST(Arch, CalibrateTakesGemma2AndRefusesFused) {
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
  const auto m = runtime::Model::load(shared("golden/arch/phi3-F16.gguf"));
  const auto tok = Tokenizer::from_gguf(m.gguf());
  try {
    calibrate::calibrate(m, tok.tokenize(text, true, false), tok.add_bos(), tok.bos(), co);
    ADD_FAILURE() << "phi3: no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not supported yet"), std::string::npos) << e.what();
  }
}

// mixtral's experts in llama-imatrix's layout: per layer the router's input (ffn_gate_inp: every row) and, per
// expert, the rows routed to it for ffn_gate_exps/ffn_up_exps and ffn_down_exps (width values per expert, the
// experts one after another). Every row goes to n_expert_used experts, so the experts' row counts and sums of x²
// add up to n_expert_used times the router's. The legacy file holds width x n_expert values per expert tensor,
// the GGUF statistics keep the per-expert counts, and both read back to the same numbers. (Against llama-imatrix
// b4748 on calib.txt, n_ctx 256, all 398 chunks: the same 16 entries, values within 1.2e-3 relative; its
// llama-quantize takes the file for IQ2_XS.)
TEST(Arch, CalibrateCountsEveryExpertAsLlamaImatrix) {
  const std::string text = read_text(shared("text/calib.txt"));
  calibrate::CalibrationOptions co;
  co.max_chunks = 12;
  co.n_threads = 2;
  co.datasets = {"calib.txt"};
  const auto m = runtime::Model::load(shared("golden/arch/mixtral-F16.gguf"));
  const auto& c = m.config();
  ASSERT_EQ(c.n_expert, 4);
  ASSERT_EQ(c.n_expert_used, 2);
  const auto tok = Tokenizer::from_gguf(m.gguf());
  const auto s = calibrate::calibrate(m, tok.tokenize(text, true, false), tok.add_bos(), tok.bos(), co);
  ASSERT_EQ(s.inputs_per_layer, 5u);
  ASSERT_EQ(s.inputs.size(), static_cast<size_t>(c.n_layer) * 5);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const auto* router = &s.inputs[static_cast<size_t>(l * 5 + 2)];
    ASSERT_EQ(router->tensor_names(), std::vector<std::string>{arch::gguf_name(arch::Role::FfnGateInp, l)});
    EXPECT_EQ(router->n_expert, 0);
    for (int k : {3, 4}) {
      const auto& ex = s.inputs[static_cast<size_t>(l * 5 + k)];
      SCOPED_TRACE(ex.tensor_names().front());
      for (const auto& n : ex.tensor_names()) EXPECT_NE(m.gguf().find_tensor(n), nullptr) << n;
      ASSERT_EQ(ex.n_expert, 4);
      ASSERT_EQ(ex.sum_x2.size(), static_cast<size_t>(ex.width * 4));
      EXPECT_EQ(ex.ncall, router->ncall);  // one call per evaluation, as MUL_MAT_ID
      int64_t rows = 0;
      for (int64_t r : ex.expert_rows) {
        EXPECT_GT(r, 0);
        rows += r;
      }
      EXPECT_EQ(rows, 2 * router->rows);
      EXPECT_EQ(ex.rows, rows);
      if (k == 3)  // the same input rows as the router's, each in 2 experts
        for (int64_t j = 0; j < ex.width; ++j) {
          double sum = 0;
          for (int64_t e = 0; e < 4; ++e) sum += ex.sum_x2[static_cast<size_t>(e * ex.width + j)];
          EXPECT_NEAR(sum, 2 * router->sum_x2[static_cast<size_t>(j)], 1e-9 * sum) << j;
        }
    }
  }
  TempDir td;
  const std::string dat = td.file("mx.dat"), gg = td.file("mx.gguf");
  calibrate::write_imatrix(s, dat);
  calibrate::write_imatrix(s, gg);
  const auto legacy = quant::load_importance(dat);
  EXPECT_EQ(legacy.data.size(), static_cast<size_t>(c.n_layer) * 8);  // q, k, v, o, router, gate/up/down experts
  const auto back = calibrate::read_calibration_stats(gg);
  ASSERT_EQ(back.inputs.size(), s.inputs.size());
  for (size_t i = 0; i < s.inputs.size(); ++i) {
    const auto& a = s.inputs[i];
    const auto& b = back.inputs[i];
    SCOPED_TRACE(a.tensor_names().front());
    EXPECT_EQ(b.tensor_names(), a.tensor_names());
    EXPECT_EQ(b.n_expert, a.n_expert);
    EXPECT_EQ(b.expert_rows, a.expert_rows);
    const auto& v = legacy.data.at(a.tensor_names().front());
    ASSERT_EQ(v.size(), a.sum_x2.size());
    for (size_t j = 0; j < v.size(); ++j) {
      const double rows = static_cast<double>(a.n_expert ? a.expert_rows[j / static_cast<size_t>(a.width)] : a.rows);
      // stored as llama-imatrix's sum / count * ncall, read back (as llama-quantize) / ncall: the mean x²
      EXPECT_NEAR(v[j], a.sum_x2[j] / rows, 1e-6 * v[j]) << j;
      EXPECT_NEAR(b.sum_x2[j], a.sum_x2[j], 1e-6 * a.sum_x2[j]) << j;
    }
  }
}

// `--method auto` on an MoE model (mixtral: attention by auto's per-tensor choice, the experts rounded with their
// per-expert importance) and on gemma2 is never worse than plain rounding: mean KLD against the F16 file, Q4_K_M,
// 16 calibration chunks of calib.txt, 8 evaluation chunks of tinystories-heldout.txt. (Measured: mixtral rtn
// 0.03701, auto 0.03472; gemma2 rtn 0.0996, auto 0.054 with 64 chunks.)
TEST(Arch, AutoNeverWorseThanRtnOnMixtralAndGemma2) {
  if (EDGEQ_SANITIZED) GTEST_SKIP() << "eight CLI runs: the normal build runs them, the sanitizer build the code's units";
  const std::string edgeq = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
  TempDir td;
  auto q = [](const std::string& s) { return "'" + s + "'"; };
  for (const char* n : {"mixtral", "gemma2"}) {
    SCOPED_TRACE(n);
    const std::string f16 = shared(std::string("golden/arch/") + n + "-F16.gguf"), stats = td.file(std::string(n) + ".gguf"),
                      base = td.file(std::string(n) + ".kld"), eval = shared("text/tinystories-heldout.txt");
    auto ok = [&](const std::string& args) {
      const auto r = run_shell(edgeq + " " + args + " -q");
      EXPECT_EQ(r.code, 0) << args << "\n" << r.err;
      return r.out;
    };
    ok("calibrate " + q(f16) + " --data " + q(shared("text/calib.txt")) + " --hessian --chunks 16 -o " + q(stats));
    ok("perplexity " + q(f16) + " -f " + q(eval) + " --chunks 8 --kld-base " + q(base));
    double kld[2] = {0, 0};
    for (int i = 0; i < 2; ++i) {
      const std::string out = td.file(std::string(n) + (i ? "-auto" : "-rtn") + ".gguf");
      ok("quantize " + q(f16) + " -o " + q(out) + " --type Q4_K_M --method " + (i ? "auto" : "rtn") + " --calib " + q(stats));
      const auto j = nlohmann::json::parse(ok("perplexity " + q(out) + " -f " + q(eval) + " --chunks 8 --json --kld " + q(base)));
      kld[i] = j["kld"]["mean_kld"].get<double>();
    }
    std::printf("%s Q4_K_M mean KLD: rtn %.6f auto %.6f\n", n, kld[0], kld[1]);
    EXPECT_GT(kld[0], 1e-3);  // the rounding is really there
    EXPECT_LE(kld[1], kld[0]);
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
