// Runtime: model loading and validation, forward pass (KV cache, qwen2 NEOX/bias path), greedy generation vs
// llama.cpp's golden continuation, sampling.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "edgeq/base/cpu.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/runtime/forward.h"
#include "edgeq/runtime/generate.h"
#include "edgeq/runtime/matmul.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/tokenizer.h"

namespace fs = std::filesystem;
namespace rt = edgeq::runtime;

namespace {
const std::string kShared = EDGEQ_SHARED_DIR;
const std::string kStories = kShared + "/golden/stories260K-F32.gguf";

nlohmann::json load_json(const std::string& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

struct TmpFile {
  std::string path;
  explicit TmpFile(const std::string& name)
      : path((fs::temp_directory_path() / ("edgeq-rt-" + std::to_string(getpid()) + "-" + name)).string()) {}
  ~TmpFile() { std::remove(path.c_str()); }
};

// Copies a GGUF, letting the caller edit metadata and replace/drop tensors.
struct Edit {
  std::function<void(edgeq::GgufWriter&)> meta;
  // Return false to drop the tensor; may change name/type/dims/bytes.
  std::function<bool(std::string& name, std::vector<uint64_t>& dims, edgeq::GgmlType& type, std::vector<uint8_t>& bytes)> tensor;
  std::vector<std::tuple<std::string, std::vector<uint64_t>, std::vector<float>>> extra;  // appended F32 tensors
};

void rewrite(const std::string& src, const std::string& dst, const Edit& e) {
  auto f = edgeq::GgufFile::open(src);
  edgeq::GgufWriter w(dst);
  for (const auto& [k, v] : f.metadata()) w.set(k, v);
  if (e.meta) e.meta(w);
  std::vector<std::vector<uint8_t>> data;
  for (const auto& t : f.tensors()) {
    auto v = f.view(t);
    std::string name = t.name;
    auto dims = t.dims;
    auto type = t.type;
    std::vector<uint8_t> bytes(v.data, v.data + v.nbytes);
    if (e.tensor && !e.tensor(name, dims, type, bytes)) continue;
    w.add_tensor(name, dims, type);
    data.push_back(std::move(bytes));
  }
  for (const auto& [name, dims, vals] : e.extra) {
    w.add_tensor(name, dims, edgeq::GgmlType::F32);
    std::vector<uint8_t> bytes(vals.size() * 4);
    std::memcpy(bytes.data(), vals.data(), bytes.size());
    data.push_back(std::move(bytes));
  }
  for (const auto& d : data) w.write_tensor_data(d.data(), d.size());
  w.finish();
}

std::string load_error(const std::string& path) {
  try {
    rt::Model::load(path);
  } catch (const edgeq::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Model, LoadsHyperparameters) {
  auto m = rt::Model::load(kShared + "/golden/tl-8m-Q4_K_M.gguf");
  const auto& c = m.config();
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_layer, 8);
  EXPECT_EQ(c.n_embd, 256);
  EXPECT_EQ(c.n_ff, 768);
  EXPECT_EQ(c.n_head, 8);
  EXPECT_EQ(c.n_head_kv, 4);
  EXPECT_EQ(c.head_dim_k, 32);
  EXPECT_EQ(c.n_vocab, 4096);
  EXPECT_EQ(c.n_rot, 32);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_base, 10000.f);
  EXPECT_FALSE(c.tied_output);
  EXPECT_EQ(m.layers()[0].wq.type, edgeq::GgmlType::Q4_K);
  EXPECT_EQ(m.output().type, edgeq::GgmlType::Q6_K);
  auto s = rt::Model::load(kStories);
  EXPECT_TRUE(s.config().tied_output);
  EXPECT_EQ(s.config().n_embd, 64);
  EXPECT_EQ(s.config().n_ff, 172);
  EXPECT_EQ(s.config().n_vocab, 512);
}

TEST(Model, RejectsBadFilesWithClearErrors) {
  TmpFile t("bad.gguf");
  rewrite(kStories, t.path, {[](edgeq::GgufWriter& w) { w.set("general.architecture", "gpt9"); }, {}, {}});
  EXPECT_NE(load_error(t.path).find("unsupported architecture 'gpt9'"), std::string::npos) << load_error(t.path);

  rewrite(kStories, t.path, {{}, [](std::string& n, auto&, auto&, auto&) { return n != "blk.2.ffn_up.weight"; }, {}});
  EXPECT_NE(load_error(t.path).find("tensor blk.2.ffn_up.weight: missing"), std::string::npos) << load_error(t.path);

  rewrite(kStories, t.path, {[](edgeq::GgufWriter& w) { w.set("llama.feed_forward_length", uint32_t{176}); }, {}, {}});
  EXPECT_NE(load_error(t.path).find("ffn_gate.weight: shape [64, 172] does not match"), std::string::npos)
      << load_error(t.path);

  rewrite(kStories, t.path, {[](edgeq::GgufWriter& w) { w.set("llama.attention.head_count_kv", uint32_t{3}); }, {}, {}});
  EXPECT_NE(load_error(t.path).find("head_count_kv"), std::string::npos) << load_error(t.path);

  rewrite(kStories, t.path,
          {{}, [](std::string& n, auto&, edgeq::GgmlType& ty, auto&) {
             if (n == "blk.1.attn_norm.weight") ty = edgeq::GgmlType::I32;
             return true;
           }, {}});
  EXPECT_NE(load_error(t.path).find("blk.1.attn_norm.weight: type I32 cannot be dequantized"), std::string::npos)
      << load_error(t.path);

  rewrite(kStories, t.path, {[](edgeq::GgufWriter& w) { w.remove("llama.block_count"); }, {}, {}});
  EXPECT_NE(load_error(t.path).find("missing hyperparameter llama.block_count"), std::string::npos) << load_error(t.path);

  rewrite(kStories, t.path, {[](edgeq::GgufWriter& w) { w.set("llama.block_count", uint32_t{4000000}); }, {}, {}});
  EXPECT_NE(load_error(t.path).find("block_count"), std::string::npos) << load_error(t.path);

  rewrite(kStories, t.path,
          {{}, [](std::string& n, auto&, auto&, std::vector<uint8_t>& b) {
             if (n == "output_norm.weight") {
               const float nan = NAN;
               std::memcpy(b.data() + 8, &nan, 4);
             }
             return true;
           }, {}});
  EXPECT_NE(load_error(t.path).find("output_norm.weight: contains NaN"), std::string::npos) << load_error(t.path);

  EXPECT_THROW(rt::Model::load(kShared + "/golden/does-not-exist.gguf"), edgeq::Error);
  EXPECT_THROW(rt::Model::load(kShared + "/vocab/ggml-vocab-llama-spm.gguf"), edgeq::Error);  // no weights
}

// Batch evaluation and token-by-token evaluation through the KV cache agree (plain f32 numerics: with
// llama.cpp's 8-bit activation rounding a different summation order can flip a rounding step).
TEST(Forward, KvCacheIncrementalMatchesBatch) {
  auto m = rt::Model::load(kShared + "/golden/tl-8m-Q5_K_M.gguf");
  const std::vector<int32_t> toks = {1, 1479, 990, 263, 670, 4013, 267, 861, 4013, 299, 267, 861};
  const int64_t n = static_cast<int64_t>(toks.size()), V = m.config().n_vocab;
  rt::Context batch(m, {64, 2, false});
  std::vector<float> all(static_cast<size_t>(n * V));
  batch.eval(toks.data(), n, 0, all.data());
  rt::Context inc(m, {64, 1, false});
  std::vector<float> one(static_cast<size_t>(V));
  double max_diff = 0;
  for (int64_t i = 0; i < n; ++i) {
    inc.eval(&toks[i], 1, 0, one.data());
    for (int64_t v = 0; v < V; ++v) max_diff = std::max(max_diff, double(std::fabs(one[v] - all[i * V + v])));
    const auto a = std::max_element(one.begin(), one.end()) - one.begin();
    const auto b = std::max_element(all.begin() + i * V, all.begin() + (i + 1) * V) - (all.begin() + i * V);
    EXPECT_EQ(a, b) << "position " << i;
  }
  EXPECT_LT(max_diff, 1e-3);
  EXPECT_EQ(inc.n_past(), n);
  // Overflowing the cache is an error, not a crash.
  rt::Context small(m, {8, 1, true});
  EXPECT_THROW(small.eval(toks.data(), n, n, nullptr), edgeq::Error);
}

// Perplexity evaluates several chunks side by side (eval_seqs): each sequence's logits are bit-identical to
// evaluating it alone, with llama.cpp's numerics, for an F16 file (converted straight into the packed tiles) and a
// k-quant one (dequantized a k-block at a time), at 1 and 3 threads.
TEST(Forward, SequencesSideBySideEqualOneByOne) {
  for (const char* file : {"tl-8m-F16.gguf", "tl-8m-Q4_K_M.gguf"}) {
    auto m = rt::Model::load(kShared + "/golden/" + file);
    const int64_t V = m.config().n_vocab, S = 3, len = 40, first = 20;
    std::vector<int32_t> toks(S * len);
    for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<int32_t>(3 + (i * 7919) % (V - 3));
    for (int threads : {1, 3}) {
      rt::ContextOptions o{64, threads, true};
      o.n_seq = S;
      rt::Context side(m, o);
      std::vector<float> a(static_cast<size_t>(S * (len - first) * V)), b(a.size());
      side.eval_seqs(toks.data(), S, len, first, a.data());
      EXPECT_EQ(side.n_past(), 0);
      rt::Context alone(m, {64, threads, true});
      for (int64_t s = 0; s < S; ++s) {
        alone.clear();
        alone.eval(toks.data() + s * len, len, first, b.data() + s * (len - first) * V);
      }
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << file << ", " << threads << " threads";
    }
    rt::ContextOptions o{64, 1, true};
    o.n_seq = 2;
    rt::Context two(m, o);
    EXPECT_THROW(two.eval_seqs(toks.data(), 3, len, first, nullptr), edgeq::Error);  // more sequences than slots
    EXPECT_THROW(two.eval_seqs(toks.data(), 2, 65, first, nullptr), edgeq::Error);   // longer than n_ctx
  }
}

// A qwen2 file holding the same weights in Hugging Face row order (no Q/K permutation) with zero q/k/v biases
// must give the llama model's logits: NEOX rotation of un-permuted rows == adjacent-pair rotation of permuted ones.
TEST(Forward, Qwen2NeoxAndBiasPathMatchesLlama) {
  auto ref = edgeq::GgufFile::open(kStories);
  const int64_t nh = *ref.get_int("llama.attention.head_count"), nkv = *ref.get_int("llama.attention.head_count_kv");
  const int64_t E = *ref.get_int("llama.embedding_length"), hd = E / nh;
  TmpFile q("qwen2.gguf");
  Edit e;
  e.meta = [&](edgeq::GgufWriter& w) {
    w.set("general.architecture", "qwen2");
    for (const auto& [k, v] : ref.metadata())
      if (k.rfind("llama.", 0) == 0) {
        w.remove(k);
        w.set("qwen2." + k.substr(6), v);
      }
  };
  e.tensor = [&](std::string& n, std::vector<uint64_t>& dims, auto&, std::vector<uint8_t>& b) {
    const bool isq = n.find("attn_q.weight") != std::string::npos, isk = n.find("attn_k.weight") != std::string::npos;
    if (!isq && !isk) return true;
    const size_t in = dims[0], heads = isq ? nh : nkv;
    std::vector<uint8_t> out(b.size());
    for (size_t h = 0; h < heads; ++h)
      for (size_t i = 0; i < size_t(hd) / 2; ++i)
        for (size_t j = 0; j < 2; ++j)  // HF row h*hd + j*hd/2 + i  <-  GGUF row h*hd + 2i + j
          std::memcpy(out.data() + (h * hd + j * (hd / 2) + i) * in * 4, b.data() + (h * hd + 2 * i + j) * in * 4, in * 4);
    b.swap(out);
    return true;
  };
  for (int64_t l = 0; l < *ref.get_int("llama.block_count"); ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    e.extra.push_back({p + "attn_q.bias", {uint64_t(nh * hd)}, std::vector<float>(nh * hd, 0.f)});
    e.extra.push_back({p + "attn_k.bias", {uint64_t(nkv * hd)}, std::vector<float>(nkv * hd, 0.f)});
    e.extra.push_back({p + "attn_v.bias", {uint64_t(nkv * hd)}, std::vector<float>(nkv * hd, 0.f)});
  }
  rewrite(kStories, q.path, e);
  auto mq = rt::Model::load(q.path);
  auto ml = rt::Model::load(kStories);
  EXPECT_EQ(mq.config().rope_mode, rt::RopeMode::Neox);
  EXPECT_TRUE(mq.config().has_qkv_bias);
  const std::vector<int32_t> toks = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426};
  const int64_t n = static_cast<int64_t>(toks.size()), V = 512;
  std::vector<float> a(n * V), b(n * V);
  rt::Context(mq, {32, 1, false}).eval(toks.data(), n, 0, a.data());
  rt::Context(ml, {32, 1, false}).eval(toks.data(), n, 0, b.data());
  double max_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) max_diff = std::max(max_diff, double(std::fabs(a[i] - b[i])));
  EXPECT_LT(max_diff, 1e-4);
  // A non-zero bias changes the result (the bias is applied).
  e.extra[0] = {"blk.0.attn_q.bias", {uint64_t(nh * hd)}, std::vector<float>(nh * hd, 0.5f)};
  rewrite(kStories, q.path, e);
  auto mb = rt::Model::load(q.path);
  rt::Context(mb, {32, 1, false}).eval(toks.data(), n, 0, a.data());
  max_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) max_diff = std::max(max_diff, double(std::fabs(a[i] - b[i])));
  EXPECT_GT(max_diff, 1e-3);
}

TEST(Forward, Qwen3QkNormLoadsAndRuns) {
  auto ref = edgeq::GgufFile::open(kStories);
  const int64_t E = *ref.get_int("llama.embedding_length"), nh = *ref.get_int("llama.attention.head_count");
  TmpFile q("qwen3.gguf");
  Edit e;
  e.meta = [&](edgeq::GgufWriter& w) {
    w.set("general.architecture", "qwen3");
    for (const auto& [k, v] : ref.metadata())
      if (k.rfind("llama.", 0) == 0) {
        w.remove(k);
        w.set("qwen3." + k.substr(6), v);
      }
  };
  for (int64_t l = 0; l < *ref.get_int("llama.block_count"); ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    e.extra.push_back({p + "attn_q_norm.weight", {uint64_t(E / nh)}, std::vector<float>(E / nh, 1.f)});
    if (l != 3) e.extra.push_back({p + "attn_k_norm.weight", {uint64_t(E / nh)}, std::vector<float>(E / nh, 1.f)});
  }
  rewrite(kStories, q.path, e);
  EXPECT_NE(load_error(q.path).find("blk.3.attn_k_norm.weight: missing"), std::string::npos) << load_error(q.path);
  e.extra.push_back({"blk.3.attn_k_norm.weight", {uint64_t(E / nh)}, std::vector<float>(E / nh, 1.f)});
  rewrite(kStories, q.path, e);
  auto m = rt::Model::load(q.path);
  EXPECT_TRUE(m.config().has_qk_norm);
  const std::vector<int32_t> toks = {1, 403, 407, 261, 378};
  std::vector<float> logits(5 * 512);
  rt::Context(m, {16, 2, true}).eval(toks.data(), 5, 0, logits.data());
  for (float x : logits) ASSERT_TRUE(std::isfinite(x));
}

// Greedy continuation of "Once upon a time" equals llama.cpp's (llama-cli --temp 0), 32 tokens.
TEST(Generate, GreedyMatchesLlamaCpp) {
  auto g = load_json(kShared + "/golden/generate.json");
  for (const auto& c : g["cases"]) {
    const std::string file = c["model"];
    SCOPED_TRACE(file);
    auto m = rt::Model::load(kShared + "/golden/" + file);
    auto tok = edgeq::Tokenizer::from_gguf(m.gguf());
    const auto expected = c["ids_of_output_text_with_bos"].get<std::vector<int32_t>>();
    const auto prompt = tok.tokenize(c["prompt"].get<std::string>(), true, true);
    ASSERT_LT(prompt.size(), expected.size());
    ASSERT_EQ(prompt, std::vector<int32_t>(expected.begin(), expected.begin() + prompt.size()));
    rt::GenerateOptions o;
    o.n_predict = c["n_predict"].get<int64_t>();
    o.n_threads = 2;
    std::vector<int32_t> streamed;
    auto out = rt::generate(m, prompt, o, [&](int32_t id) {
      streamed.push_back(id);
      return true;
    });
    EXPECT_EQ(out, std::vector<int32_t>(expected.begin() + prompt.size(), expected.end()));
    EXPECT_EQ(streamed, out);
    std::string text = c["prompt"];
    for (int32_t id : out) text += tok.token_to_piece(id, false);
    EXPECT_EQ(text, c["output_text"].get<std::string>());
  }
}

TEST(Generate, SamplingIsSeededAndRespectsTopK) {
  auto m = rt::Model::load(kStories);
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};
  rt::GenerateOptions o;
  o.n_predict = 24;
  o.temp = 0.9f;
  o.seed = 42;
  auto a = rt::generate(m, prompt, o);
  auto b = rt::generate(m, prompt, o);
  EXPECT_EQ(a, b);
  o.seed = 43;
  auto c = rt::generate(m, prompt, o);
  EXPECT_NE(a, c);
  o.top_k = 1;  // top-1 sampling is greedy
  auto d = rt::generate(m, prompt, o);
  rt::GenerateOptions greedy;
  greedy.n_predict = 24;
  EXPECT_EQ(d, rt::generate(m, prompt, greedy));
  // sample_token: a dominant logit always wins under top-p 0.5; ties in greedy go to the lowest id.
  std::vector<float> logits = {0.f, 10.f, 3.f, 10.f};
  uint64_t rng = 1;
  rt::GenerateOptions s;
  EXPECT_EQ(rt::sample_token(logits.data(), 4, s, rng), 1);
  s.temp = 1.f;
  s.top_p = 0.4f;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(rt::sample_token(logits.data(), 4, s, rng), 1);
}

// More tokens than one micro-batch (512): split internally; logits equal a manual split (f32 numerics).
TEST(Forward, LongBatchIsSplitIntoMicroBatches) {
  auto m = rt::Model::load(kStories);
  std::vector<int32_t> toks(600);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<int32_t>(3 + (i * 37) % 500);
  toks[0] = 1;
  const int64_t V = 512;
  std::vector<float> a(100 * V), b(100 * V);
  rt::Context one(m, {600, 2, false});
  one.eval(toks.data(), 600, 500, a.data());  // logits for rows 500..599 (across the 512 boundary)
  rt::Context two(m, {600, 1, false});
  two.eval(toks.data(), 300, 300, nullptr);
  two.eval(toks.data() + 300, 200, 200, nullptr);
  two.eval(toks.data() + 500, 100, 0, b.data());
  double max_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) max_diff = std::max(max_diff, double(std::fabs(a[i] - b[i])));
  EXPECT_LT(max_diff, 1e-3);
  EXPECT_EQ(one.n_past(), 600);
}

// OpenBLAS 0.3.21 falls back to its SSE3 "Prescott" kernels on CPUs it does not know (2-3x slower sgemm);
// edgeq picks the core from the CPU's features before loading the library, with no environment variable.
// When OPENBLAS_CORETYPE is set (a user's choice edgeq keeps), the check runs in a child process without it.
TEST(BlasCore, FastKernelsChosenFromCpuFeatures) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) {
    ASSERT_EQ(std::getenv("EDGEQ_TEST_BLAS_CHILD"), nullptr);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      unsetenv("OPENBLAS_CORETYPE");
      setenv("EDGEQ_TEST_BLAS_CHILD", "1", 1);
      execl("/proc/self/exe", "test_runtime", "--gtest_filter=BlasCore.FastKernelsChosenFromCpuFeatures",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "the check failed in the child process (see its output above)";
    return;
  }
  std::string core = rt::blas_core();
  for (char& c : core) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const edgeq::cpu::Features& f = edgeq::cpu::features();
  if (f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl) {
    EXPECT_EQ(core, "skylakex");
  } else if (f.avx2 && f.fma) {
    EXPECT_EQ(core, "haswell");
  } else {
    EXPECT_NE(core, "");
  }
  // The variable was only set while OpenBLAS loaded: child processes see the user's environment.
  EXPECT_EQ(std::getenv("OPENBLAS_CORETYPE"), nullptr);
}
