// Issue 24, "no silent garbage": every hostile case a user can produce gives a one-line error naming the
// file at fault with the right exit code (2 usage, 1 bad file, 130/143 signals) or the right result, and
// every input stays byte-identical. Cases are generated from tables so variants are covered; the runs use
// stories260K (tiny) so the whole program stays within a few seconds.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/ggml_types.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/runtime/kld.h"
#include "edgeq/runtime/model.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using edgeq::test::read_file;
using edgeq::test::shared;
using edgeq::test::TempDir;

namespace {

const std::string kEdgeq = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
const std::string kStoriesDir = shared("models/stories260K");
const std::string kStoriesGguf = shared("golden/stories260K-F32.gguf");

std::string q(const std::string& s) {
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

edgeq::test::CmdResult run(const std::string& args) {
  return edgeq::test::run_shell("EDGEQ_PROGRESS=0 " + q(kEdgeq) + " " + args + " </dev/null");
}

// A short evaluation text (enough tokens for 2 chunks of 64 on stories260K).
std::string write_eval(const TempDir& t) {
  const std::string p = t.file("ev.txt");
  auto all = edgeq::test::read_text(shared("text/tinystories-heldout.txt"));
  std::ofstream(p, std::ios::binary) << all.substr(0, 6000);
  return p;
}

// Every regular file under dir with a hash of its bytes (readable when a test fails).
std::map<std::string, size_t> snapshot(const fs::path& dir) {
  std::map<std::string, size_t> m;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) m[e.path().string()] = std::hash<std::string>{}(edgeq::test::read_text(e.path().string()));
  return m;
}

class Garbage : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kEdgeq)) GTEST_SKIP() << kEdgeq << " not built";
  }
};

}  // namespace

// 1: compare refusing to overwrite one of its inputs leaves that input where it was.
TEST_F(Garbage, CompareNeverDeletesAFileItRefusedToOverwrite) {
  TempDir t;
  const std::string ev = write_eval(t), R = t.file("R");
  const std::string common = " --eval " + q(ev) + " --ctx 64 --chunks 2 -q -t 1";
  ASSERT_EQ(run("compare " + q(kStoriesDir) + " -o " + q(R) + " --keep --types F16,Q8_0" + common).code, 0);
  const std::string input = R + "/models/F16-rtn.gguf";
  ASSERT_TRUE(fs::exists(input));
  const auto before = snapshot(R + "/models");
  auto r = run("compare " + q(input) + " -o " + q(R) + " --types F16,Q8_0,Q4_0" + common);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("refusing to overwrite"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(R + "/models"), before);
}

// 2: a run killed by SIGKILL leaves OUT.tmp.PID; the next run into OUT removes it (a live process's stays).
TEST_F(Garbage, StaleTempFilesOfDeadProcessesAreRemoved) {
  TempDir t;
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);  // a pid that no longer exists
  const std::string out = t.file("o.gguf");
  const std::string dead = out + ".tmp." + std::to_string(child), live = out + ".tmp." + std::to_string(getpid());
  std::ofstream(dead) << "partial";
  std::ofstream(live) << "partial";
  auto r = run("quantize " + q(kStoriesGguf) + " -o " + q(out) + " --type Q8_0 -q");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(out));
}

// 3: a FIFO where a model, tokenizer, config, imatrix or ONNX data file is expected is refused at once
// (it used to block until killed, or be skipped), with one line naming it. `timeout` turns a hang into a failure.
TEST_F(Garbage, FifoInEveryInputSlotIsRefusedAtOnce) {
  struct Slot {
    std::string source;  // directory copied as symlinks, or "" for a lone file
    std::string fifo;    // the name that becomes a FIFO
    std::vector<std::string> commands;  // SRC: the (copied) source, FIFO: the FIFO's path
  };
  const std::vector<std::string> ckpt_cmds = {"convert SRC -o OUT", "quantize SRC -o OUT --type Q8_0",
                                              "compare SRC -o OUT.d --eval EV --types Q8_0 -c 64"};
  std::vector<Slot> slots;
  for (const char* f : {"model.safetensors", "config.json", "tokenizer.model", "tokenizer.json",
                        "tokenizer_config.json", "special_tokens_map.json"})
    slots.push_back({kStoriesDir, f, ckpt_cmds});
  // A shard of a sharded checkpoint, and its index.
  slots.push_back({shared("models/stories260K-sharded"), "model-00002-of-00003.safetensors", ckpt_cmds});
  slots.push_back({shared("models/stories260K-sharded"), "model.safetensors.index.json", ckpt_cmds});
  // The second file of a split GGUF (made below: SRC is a directory holding the set, s-00001-of-00002.gguf).
  slots.push_back({"split", "s-00002-of-00002.gguf",
                   {"perplexity SRC/s-00001-of-00002.gguf -f EV -c 64", "quantize SRC/s-00001-of-00002.gguf -o OUT --type Q8_0",
                    "inspect SRC/s-00001-of-00002.gguf"}});
  // The binary inputs of the evaluating commands: a KLD base, a sweep's imatrix, a result file to merge.
  slots.push_back({"", "base.kld", {"perplexity " + q(kStoriesGguf) + " -f EV -c 64 --kld FIFO"}});
  slots.push_back({"", "i.dat", {"compare " + q(kStoriesGguf) + " -o OUT.d --eval EV --types Q4_0 -c 64 --imatrix FIFO"}});
  slots.push_back({"", "r.json", {"compare --merge FIFO -o OUT.d"}});
  slots.push_back({"", "m2.gguf", {"calibrate FIFO --data EV -o OUT", "compare " + q(kStoriesGguf) + " FIFO --eval EV -c 64"}});
  slots.push_back({shared("models/tl-8m-onnx-ext"), "model.onnx.data", ckpt_cmds});
  slots.push_back({shared("models/tl-8m-onnx-ext"), "model.onnx", ckpt_cmds});
  slots.push_back({"", "m.gguf",
                   {"perplexity FIFO -f EV", "generate FIFO -p hi -n 2", "tokenize FIFO -p hi", "inspect FIFO",
                    "quantize FIFO -o OUT --type Q8_0", "compare FIFO -o OUT.d --eval EV --types Q8_0"}});
  slots.push_back({"", "imatrix.dat", {"quantize " + q(kStoriesGguf) + " -o OUT --type Q4_0 --imatrix FIFO"}});
  for (const auto& s : slots) {
    TempDir t;
    const std::string ev = write_eval(t);
    std::string src, fifo;
    if (s.source == "split") {
      src = t.file("split");
      fs::create_directory(src);
      auto r = run("quantize " + q(kStoriesGguf) + " -o " + q(src + "/s.gguf") + " --type F32 --split-max-tensors 30");
      ASSERT_EQ(r.code, 0) << r.err;
      ASSERT_TRUE(fs::exists(src + "/" + s.fifo));
      fs::remove(src + "/" + s.fifo);
      fifo = src + "/" + s.fifo;
    } else if (!s.source.empty()) {
      src = t.file("src");
      fs::create_directory(src);
      for (auto& e : fs::directory_iterator(s.source))
        if (e.path().filename() != s.fifo) fs::create_symlink(e.path(), fs::path(src) / e.path().filename());
      fifo = src + "/" + s.fifo;
    } else {
      fifo = t.file(s.fifo);
    }
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    for (std::string c : s.commands) {
      auto sub = [&](const std::string& k, const std::string& v) {
        // search on after the inserted text: a value may contain its own placeholder (a path holding "OUT")
        for (size_t p = 0; (p = c.find(k, p)) != std::string::npos; p += v.size()) c.replace(p, k.size(), v);
      };
      sub("SRC", q(src));
      sub("FIFO", q(fifo));
      sub("OUT", q(t.file("out.gguf")));
      sub("EV", q(ev));
      auto r = edgeq::test::run_shell("EDGEQ_PROGRESS=0 timeout 20 " + q(kEdgeq) + " " + c + " </dev/null");
      EXPECT_EQ(r.code, 1) << c << "\n" << r.err;
      EXPECT_NE(r.err.find(fifo + ": "), std::string::npos) << c << "\n" << r.err;
      EXPECT_NE(r.err.find("not a regular file"), std::string::npos) << c << "\n" << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      EXPECT_FALSE(fs::exists(t.file("out.gguf")));
      EXPECT_FALSE(fs::exists(t.file("out.gguf.d") + "/report.md"));
    }
  }
}

namespace {

// The offset of a value of a GGUF metadata key of integer type (the 4 bytes after the key and its type).
size_t gguf_key_value_offset(const std::vector<uint8_t>& b, const std::string& key) {
  const std::string needle = key;
  auto it = std::search(b.begin(), b.end(), needle.begin(), needle.end());
  if (it == b.end()) return 0;
  return static_cast<size_t>(it - b.begin()) + needle.size() + 4;  // skip the u32 value type
}

template <typename T>
void put(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}

}  // namespace

// 4: NaN/Inf in a block scale of every block type: loading names the tensor. The goldens hold every k-, legacy
// and i-quant llama-quantize writes; BF16 and a palettized (PAL4) file are made from stories260K. The scale's
// position is found by probing the type's own dequantizer (the first f16 word whose NaN makes the block NaN;
// IQ1_M spreads its scale over the top nibbles of its last 8 bytes: filling a suffix of the block with 0xff
// does), so the table of block types drives the cases.
TEST(GarbageModel, NonFiniteBlockScaleOfEveryTypeIsNamed) {
  using edgeq::GgmlType;
  std::map<GgmlType, std::pair<std::string, std::string>> cases;  // type -> (file, tensor)
  auto add_cases = [&](const std::string& path) {
    const auto g = edgeq::GgufFile::open(path);
    bool loadable = true;  // only files whose every type the runtime evaluates
    for (const auto& t : g.tensors()) loadable = loadable && (edgeq::quant::can_dequantize(t.type) || t.type == GgmlType::I8);
    if (!loadable) return;
    for (const auto& t : g.tensors())
      if (!cases.count(t.type) && t.dims.size() == 2 && edgeq::quant::can_dequantize(t.type))
        cases[t.type] = {path, t.name};
  };
  for (const auto& path : edgeq::test::golden_ggufs())
    if (path.find("tl-8m-") != std::string::npos) add_cases(path);
  TempDir t;
  std::string pal_file;
  if (fs::exists(kEdgeq)) {  // BF16 and PAL4 (its lookup tables are F16 tensors named *.pal_lut)
    const std::string bf16 = t.file("bf16.gguf"), pal = t.file("pal4.gguf");
    ASSERT_EQ(run("quantize " + q(kStoriesGguf) + " -o " + q(bf16) + " --type BF16 --threads 1").code, 0);
    ASSERT_EQ(run("quantize " + q(kStoriesGguf) + " -o " + q(pal) + " --type PAL4 --threads 1").code, 0);
    add_cases(bf16);
    add_cases(kStoriesGguf);
    pal_file = pal;
  }
  for (GgmlType want : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                        GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K,
                        GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ1_S, GgmlType::IQ1_M,
                        GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S, GgmlType::IQ3_XXS, GgmlType::IQ3_S,
                        GgmlType::IQ4_NL, GgmlType::IQ4_XS})
    if (want != GgmlType::BF16 || fs::exists(kEdgeq)) {
      EXPECT_TRUE(cases.count(want)) << edgeq::ggml_type_name(want);
    }
  size_t n = 0;
  auto expect_named = [&](const std::string& bad, const std::string& tensor, const std::string& what) {
    try {
      (void)edgeq::runtime::Model::load(bad);
      ADD_FAILURE() << what << ": loaded a model with a non-finite value in " << tensor;
    } catch (const edgeq::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(bad + ": tensor " + tensor + ": non-finite value"), std::string::npos) << what << ": " << msg;
    }
  };
  for (const auto& [type, ft] : cases) {
    if (EDGEQ_SANITIZED && n >= 3) break;
    auto bytes = read_file(ft.first);
    const auto g = edgeq::GgufFile::open(ft.first);
    const auto v = g.view(ft.second);
    const size_t tensor_at = static_cast<size_t>(g.data_offset() + g.find_tensor(ft.second)->offset);
    const auto* info = edgeq::ggml_type_info(type);
    ASSERT_NE(info, nullptr);
    std::vector<uint8_t> block(v.data, v.data + info->type_size);
    std::vector<float> out(info->block_size);
    auto makes_nan = [&](const std::vector<uint8_t>& b) {
      edgeq::quant::dequantize_row(type, b.data(), out.data(), info->block_size);
      return std::any_of(out.begin(), out.end(), [](float x) { return std::isnan(x); });
    };
    // The bytes to write: one word (a NaN probed, an Inf written), or a suffix of 0xff bytes.
    size_t at = SIZE_MAX, suffix = 0;
    for (size_t o = 0; o + 2 <= block.size() && at == SIZE_MAX; o += 2) {
      auto b = block;
      if (type == GgmlType::F32) {
        if (o % 4) continue;
        put<float>(b, o, std::nanf(""));
      } else {
        put<uint16_t>(b, o, type == GgmlType::BF16 ? 0x7fc0 : 0x7e00);
      }
      if (makes_nan(b)) at = o;
    }
    for (size_t k = 2; at == SIZE_MAX && k <= block.size(); k += 2) {
      auto b = block;
      std::fill(b.end() - static_cast<long>(k), b.end(), uint8_t{0xff});
      if (makes_nan(b)) at = block.size() - k, suffix = k;
    }
    ASSERT_NE(at, SIZE_MAX) << edgeq::ggml_type_name(type);
    if (suffix)
      std::fill_n(bytes.begin() + static_cast<long>(tensor_at + at), suffix, uint8_t{0xff});
    else if (type == GgmlType::F32)
      put<float>(bytes, tensor_at + at, std::numeric_limits<float>::infinity());
    else
      put<uint16_t>(bytes, tensor_at + at, type == GgmlType::BF16 ? 0x7f80 : 0x7c00);  // +Inf
    const std::string bad = t.file(std::string("bad-") + edgeq::ggml_type_name(type) + ".gguf");
    edgeq::test::write_file(bad, bytes);
    expect_named(bad, ft.second, edgeq::ggml_type_name(type));
    std::filesystem::remove(bad);
    ++n;
  }
  // PAL4: an Inf entry in a lookup table.
  if (!pal_file.empty()) {
    auto bytes = read_file(pal_file);
    const auto g = edgeq::GgufFile::open(pal_file);
    const auto* lut = g.find_tensor("blk.1.ffn_down.weight.pal_lut");
    ASSERT_NE(lut, nullptr);
    put<uint16_t>(bytes, static_cast<size_t>(g.data_offset() + lut->offset + 6), 0x7c00);
    const std::string bad = t.file("bad-PAL4.gguf");
    edgeq::test::write_file(bad, bytes);
    try {
      (void)edgeq::runtime::Model::load(bad);
      ADD_FAILURE() << "PAL4: loaded a model with Inf in a lookup table";
    } catch (const edgeq::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(bad + ": tensor blk.1.ffn_down.weight.pal_lut: "), std::string::npos) << msg;
    }
  }
}

// 4: a NaN or an Inf in a float weight of every role: stories260K F32 (embeddings, norms, attention, FFN) and
// the F16 architecture fixtures (gemma's, gemma2's post-norms, phi3's fused qkv and gate|up, mixtral's router and
// stacked experts). Every global tensor and every tensor of layer 0.
TEST(GarbageModel, NonFiniteFloatWeightOfEveryRoleIsNamed) {
  TempDir t;
  size_t n = 0;
  std::set<std::string> roles;
  for (const std::string& file : {kStoriesGguf, shared("golden/arch/gemma-F16.gguf"), shared("golden/arch/gemma2-F16.gguf"),
                                  shared("golden/arch/phi3-F16.gguf"), shared("golden/arch/mixtral-F16.gguf")}) {
    if (EDGEQ_SANITIZED && file != kStoriesGguf) break;
    const auto g = edgeq::GgufFile::open(file);
    const auto orig = read_file(file);
    for (const auto& ti : g.tensors()) {
      if (ti.name.rfind("blk.", 0) == 0 && ti.name.rfind("blk.0.", 0) != 0) continue;  // every role once: layer 0
      const auto v = g.view(ti);
      ASSERT_TRUE(v.type == edgeq::GgmlType::F32 || v.type == edgeq::GgmlType::F16) << ti.name;
      const size_t esize = v.type == edgeq::GgmlType::F32 ? 4 : 2;
      const size_t at = static_cast<size_t>(g.data_offset() + ti.offset + esize * (v.n_elements() / 2));
      auto bytes = orig;
      const bool use_nan = n % 2 == 0;
      if (esize == 4)
        put<float>(bytes, at, use_nan ? std::nanf("") : -std::numeric_limits<float>::infinity());
      else
        put<uint16_t>(bytes, at, use_nan ? 0x7e00 : 0xfc00);
      const std::string bad = t.file("bad.gguf");
      edgeq::test::write_file(bad, bytes);
      try {
        (void)edgeq::runtime::Model::load(bad);
        ADD_FAILURE() << file << ": loaded a model with " << (use_nan ? "NaN" : "-Inf") << " in " << ti.name;
      } catch (const edgeq::Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find(bad + ": tensor " + ti.name + ": "), std::string::npos) << msg;
      }
      roles.insert(ti.name.substr(ti.name.rfind("blk.0.", 0) == 0 ? 6 : 0));
      ++n;
    }
  }
  EXPECT_GE(n, 11u);
  if (!EDGEQ_SANITIZED) {
    for (const char* role : {"attn_qkv.weight", "ffn_gate_exps.weight", "ffn_down_exps.weight", "ffn_gate_inp.weight",
                             "post_attention_norm.weight", "post_ffw_norm.weight", "output.weight", "ffn_up.weight"})
      EXPECT_TRUE(roles.count(role)) << role;
  }
}

// 4: every command that evaluates a model refuses NaN weights naming the tensor (and writes nothing); a
// finite weight so large that the activations overflow names the layer; quantize refuses the same file.
TEST_F(Garbage, EvaluatingCommandsRefuseNonFiniteWeights) {
  TempDir t;
  const std::string ev = write_eval(t);
  const auto g = edgeq::GgufFile::open(kStoriesGguf);
  auto bytes = read_file(kStoriesGguf);
  const auto* down = g.find_tensor("blk.1.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  put<float>(bytes, static_cast<size_t>(g.data_offset() + down->offset + 40), std::nanf(""));
  const std::string nan_model = t.file("nan.gguf");
  edgeq::test::write_file(nan_model, bytes);
  const std::string M = q(nan_model), out = t.file("out");
  for (const std::string& c :
       {"perplexity " + M + " -f " + q(ev) + " -c 64", "generate " + M + " -p hi -n 4",
        "compare " + q(kStoriesGguf) + " " + M + " --eval " + q(ev) + " -c 64",
        "compare " + M + " -o " + q(out) + " --eval " + q(ev) + " -c 64 --types Q8_0",
        "calibrate " + M + " --data " + q(ev) + " -o " + q(out + ".imatrix") + " -c 64",
        "quantize " + M + " -o " + q(out + ".gguf") + " --type Q8_0"}) {
    auto r = run(c);
    EXPECT_EQ(r.code, 1) << c << "\n" << r.err;
    EXPECT_NE(r.err.find("blk.1.ffn_down.weight"), std::string::npos) << c << "\n" << r.err;
    EXPECT_NE(r.err.find("non-finite"), std::string::npos) << c << "\n" << r.err;
    EXPECT_FALSE(fs::exists(out + ".gguf") || fs::exists(out + ".imatrix")) << c;
  }
  // Finite but huge (3e38) weights: the activations overflow; the error names the layer.
  bytes = read_file(kStoriesGguf);
  const auto* q0 = g.find_tensor("blk.2.attn_q.weight");
  for (uint64_t i = 0; i < q0->nbytes / 4; ++i)
    put<float>(bytes, static_cast<size_t>(g.data_offset() + q0->offset + 4 * i), 3e38f);
  const std::string huge = t.file("huge.gguf");
  edgeq::test::write_file(huge, bytes);
  auto r = run("perplexity " + q(huge) + " -f " + q(ev) + " -c 64");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("non-finite"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(huge + ": "), std::string::npos) << r.err;
}

// 4: convert --outtype f16 of a weight beyond F16's range names the tensor and suggests bf16/f32.
TEST_F(Garbage, ConvertRefusesF16OverflowAndSuggestsBf16) {
  TempDir t;
  const std::string ck = t.file("ck");
  fs::create_directory(ck);
  for (auto& e : fs::directory_iterator(kStoriesDir))
    if (e.path().filename() != "model.safetensors") fs::create_symlink(e.path(), fs::path(ck) / e.path().filename());
  auto st = read_file(kStoriesDir + "/model.safetensors");
  uint64_t hlen = 0;
  std::memcpy(&hlen, st.data(), 8);
  const std::string header(st.begin() + 8, st.begin() + 8 + static_cast<long>(hlen));
  const size_t name = header.find("\"model.layers.0.mlp.down_proj.weight\"");
  ASSERT_NE(name, std::string::npos);
  const size_t offs = header.find("data_offsets", name);
  const uint64_t begin = std::stoull(header.substr(header.find('[', offs) + 1));
  put<float>(st, 8 + hlen + begin + 4 * 5, 1e6f);
  edgeq::test::write_file(ck + "/model.safetensors", st);
  auto r = run("convert " + q(ck) + " -o " + q(t.file("o.gguf")) + " --outtype f16");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("blk.0.ffn_down.weight"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--outtype bf16"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(t.file("o.gguf")));
  EXPECT_EQ(run("convert " + q(ck) + " -o " + q(t.file("o.gguf")) + " --outtype f32").code, 0);
}

// 5: metadata the loader reads is checked against what the architecture allows (a table of lies): one line
// naming the file and the key, before any evaluation.
TEST_F(Garbage, LyingMetadataIsRefused) {
  TempDir t;
  const std::string ev = write_eval(t);
  const auto orig = read_file(kStoriesGguf);
  struct Lie {
    const char* key;
    double value;
    bool is_float;
    const char* named;  // what the message names (the key, or the tensor that gives it away)
  };
  const float inf = std::numeric_limits<float>::infinity();
  for (const Lie& lie : {
           Lie{"llama.rope.dimension_count", 0, false, "rope.dimension_count"},
           Lie{"llama.rope.dimension_count", 3, false, "rope.dimension_count"},
           Lie{"llama.rope.dimension_count", 10, false, "rope.dimension_count"},  // > head dim 8
           Lie{"llama.attention.head_count", 0, false, "attention.head_count"},
           Lie{"llama.attention.head_count", 7, false, "attention.head_count"},  // kv 4 does not divide 7
           Lie{"llama.attention.head_count_kv", 0, false, "attention.head_count_kv"},
           Lie{"llama.attention.head_count_kv", 3, false, "attention.head_count_kv"},
           Lie{"llama.block_count", 0, false, "block_count"},
           Lie{"llama.block_count", 4, false, "block_count"},  // the file has 5 layers
           Lie{"llama.block_count", 6, false, "blk.5."},       // a layer missing
           Lie{"llama.embedding_length", 0, false, "embedding_length"},
           Lie{"llama.embedding_length", 48, false, "head dimension 6"},
           Lie{"llama.feed_forward_length", 0, false, "feed_forward_length"},
           Lie{"llama.feed_forward_length", 171, false, "ffn_gate.weight"},
           Lie{"llama.context_length", 0, false, "context_length"},
           Lie{"llama.vocab_size", 500, false, "vocabulary"},
           Lie{"llama.attention.layer_norm_rms_epsilon", 0, true, "layer_norm_rms_epsilon"},
           Lie{"llama.attention.layer_norm_rms_epsilon", -1e-5, true, "layer_norm_rms_epsilon"},
           Lie{"llama.attention.layer_norm_rms_epsilon", std::nan(""), true, "layer_norm_rms_epsilon"},
           Lie{"llama.rope.freq_base", 0, true, "rope.freq_base"},
           Lie{"llama.rope.freq_base", -10000, true, "rope.freq_base"},
           Lie{"llama.rope.freq_base", inf, true, "rope.freq_base"},
       }) {
    auto bytes = orig;
    const size_t at = gguf_key_value_offset(bytes, lie.key);
    ASSERT_NE(at, 0u) << lie.key;
    if (lie.is_float)
      put<float>(bytes, at, static_cast<float>(lie.value));
    else
      put<uint32_t>(bytes, at, static_cast<uint32_t>(lie.value));
    const std::string bad = t.file("lie.gguf");
    edgeq::test::write_file(bad, bytes);
    auto r = run("perplexity " + q(bad) + " -f " + q(ev) + " -c 64");
    EXPECT_EQ(r.code, 1) << lie.key << " = " << lie.value << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("edgeq: error: " + bad + ": ", 0), 0u) << lie.key << " = " << lie.value << "\n" << r.err;
    EXPECT_NE(r.err.find(lie.named), std::string::npos) << lie.key << " = " << lie.value << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // The tokenizer's vocabulary must be the embedding's rows (llama.cpp sizes token_embd by it): a shorter
  // token list (the array's length field patched) is refused.
  {
    auto bytes = orig;
    const std::string key = "tokenizer.ggml.tokens";
    auto it = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
    ASSERT_NE(it, bytes.end());
    const size_t len_at = static_cast<size_t>(it - bytes.begin()) + key.size() + 4 + 4;  // type, element type
    uint64_t n = 0;
    std::memcpy(&n, bytes.data() + len_at, 8);
    ASSERT_EQ(n, 512u);
    // Drop the last token without moving the tensor data: the one before it absorbs its bytes.
    size_t p = len_at + 8, prev = 0;
    for (uint64_t i = 0; i + 1 < n; ++i) {
      prev = p;
      uint64_t l = 0;
      std::memcpy(&l, bytes.data() + p, 8);
      p += 8 + l;
    }
    uint64_t l_prev = 0, l_last = 0;
    std::memcpy(&l_prev, bytes.data() + prev, 8);
    std::memcpy(&l_last, bytes.data() + p, 8);
    put<uint64_t>(bytes, prev, l_prev + 8 + l_last);
    put<uint64_t>(bytes, len_at, n - 1);
    const std::string bad = t.file("short-vocab.gguf");
    edgeq::test::write_file(bad, bytes);
    auto r = run("perplexity " + q(bad) + " -f " + q(ev) + " -c 64");
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(r.err.rfind("edgeq: error: " + bad + ": ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find("511"), std::string::npos) << r.err;
  }
}

// 5: the same for the keys only other architectures have (the architecture fixtures): soft-caps, sliding
// window, expert counts, LongRoPE's attention factor and original context, explicit head dims. Loaded
// in-process (the loader is what every evaluating command calls).
TEST(GarbageModel, LyingArchitectureMetadataIsRefused) {
  struct Lie {
    const char* file;
    const char* key;
    double value;
    bool is_float;
  };
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  TempDir t;
  size_t n = 0;
  for (const Lie& lie : {
           Lie{"gemma2", "gemma2.attn_logit_softcapping", 0, true},
           Lie{"gemma2", "gemma2.attn_logit_softcapping", -50, true},
           Lie{"gemma2", "gemma2.attn_logit_softcapping", nan, true},
           Lie{"gemma2", "gemma2.final_logit_softcapping", 0, true},
           Lie{"gemma2", "gemma2.final_logit_softcapping", inf, true},
           Lie{"gemma2", "gemma2.attention.sliding_window", 0, false},
           Lie{"gemma2", "gemma2.attention.key_length", 15, false},
           Lie{"gemma2", "gemma2.attention.key_length", 0, false},
           Lie{"gemma2", "gemma2.attention.head_count_kv", 3, false},
           Lie{"gemma2", "gemma2.context_length", 0, false},
           Lie{"mixtral", "llama.expert_count", 0, false},
           Lie{"mixtral", "llama.expert_count", 300, false},
           Lie{"mixtral", "llama.expert_used_count", 0, false},
           Lie{"mixtral", "llama.expert_used_count", 5, false},
           Lie{"phi3", "phi3.rope.scaling.attn_factor", 0, true},
           Lie{"phi3", "phi3.rope.scaling.attn_factor", -1.1, true},
           Lie{"phi3", "phi3.rope.scaling.attn_factor", nan, true},
           Lie{"phi3", "phi3.rope.scaling.original_context_length", 0, false},
           Lie{"phi3", "phi3.attention.sliding_window", 0, false},
           Lie{"phi3", "phi3.rope.dimension_count", 66, false},
       }) {
    if (EDGEQ_SANITIZED && n++ >= 4) break;
    const std::string src = shared(std::string("golden/arch/") + lie.file + "-F16.gguf");
    auto bytes = read_file(src);
    const size_t at = gguf_key_value_offset(bytes, lie.key);
    ASSERT_NE(at, 0u) << lie.key;
    if (lie.is_float)
      put<float>(bytes, at, static_cast<float>(lie.value));
    else
      put<uint32_t>(bytes, at, static_cast<uint32_t>(lie.value));
    const std::string bad = t.file("lie.gguf");
    edgeq::test::write_file(bad, bytes);
    const std::string key = std::string(lie.key).substr(std::string(lie.key).find('.') + 1);
    try {
      (void)edgeq::runtime::Model::load(bad);
      ADD_FAILURE() << "loaded " << lie.key << " = " << lie.value;
    } catch (const edgeq::Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(bad + ": ", 0), 0u) << msg;
      EXPECT_NE(msg.find(key), std::string::npos) << lie.key << " = " << lie.value << ": " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

// 6: text through a pipe, "-", /dev/stdin and zstd reads the same as the plain file for every text flag.
TEST_F(Garbage, TextFromPipesAndZstdForEveryTextFlag) {
  TempDir t;
  const std::string ev = write_eval(t);
  const std::string zst = t.file("ev.txt.zst");
  if (std::system(("zstd -q -f " + q(ev) + " -o " + q(zst) + " 2>/dev/null").c_str()) != 0) GTEST_SKIP() << "no zstd";
  const std::string M = q(kStoriesGguf);
  for (const std::string& c : {"tokenize " + M + " --ids -f TEXT", "perplexity " + M + " -c 64 --chunks 4 -t 1 -f TEXT"}) {
    auto sub = [&](const std::string& text) {
      std::string x = c;
      x.replace(x.find("TEXT"), 4, text);
      return x;
    };
    auto plain = run(sub(q(ev)));
    ASSERT_EQ(plain.code, 0) << plain.err;
    for (const std::string& via : {"cat " + q(ev) + " | EDGEQ_PROGRESS=0 " + q(kEdgeq) + " " + sub("-"),
                                   "cat " + q(ev) + " | EDGEQ_PROGRESS=0 " + q(kEdgeq) + " " + sub("/dev/stdin"),
                                   "EDGEQ_PROGRESS=0 " + q(kEdgeq) + " " + sub(q(zst)) + " </dev/null"}) {
      auto r = edgeq::test::run_shell(via);
      EXPECT_EQ(r.code, 0) << via << "\n" << r.err;
      auto result = [](const std::string& out) {  // the ids, or the final estimate (not the timings)
        const size_t f = out.find("Final estimate");
        return f == std::string::npos ? out : out.substr(f);
      };
      EXPECT_EQ(result(r.out), result(plain.out)) << via;
    }
  }
  // compare --eval and calibrate --data take the pipe too.
  auto a = run("compare " + M + " " + M + " -c 64 --chunks 4 -t 1 --json --eval " + q(ev));
  auto b = edgeq::test::run_shell("cat " + q(ev) + " | EDGEQ_PROGRESS=0 " + q(kEdgeq) + " compare " + M + " " + M +
                                  " -c 64 --chunks 4 -t 1 --json --eval -");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(b.code, 0) << b.err;
  auto ppl = [](const std::string& s) { return s.substr(s.find("\"ppl\""), 40); };
  if (b.code == 0) {
    EXPECT_EQ(ppl(a.out), ppl(b.out));
  }
  auto c = run("compare " + M + " " + M + " -c 64 --chunks 4 -t 1 --json --eval " + q(zst));
  EXPECT_EQ(c.code, 0) << c.err;
  if (c.code == 0) {
    EXPECT_EQ(ppl(a.out), ppl(c.out));
  }
  auto d = edgeq::test::run_shell("cat " + q(ev) + " | EDGEQ_PROGRESS=0 " + q(kEdgeq) + " calibrate " + M +
                                  " --data - -c 64 -o " + q(t.file("i.dat")));
  EXPECT_EQ(d.code, 0) << d.err;
}

namespace {

// One small finished sweep (stories260K, three entries) the merge and report tests read.
const std::string& small_sweep() {
  static TempDir dir;
  static const std::string d = [] {
    const std::string ev = write_eval(dir), R = dir.file("R");
    auto r = run("compare " + q(kStoriesDir) + " -o " + q(R) + " --types F16,Q8_0,Q4_0 --eval " + q(ev) +
                 " --ctx 64 --chunks 2 -t 1");
    EXPECT_EQ(r.code, 0) << r.err;
    return R;
  }();
  return d;
}

}  // namespace

// 7: a report written before the last entry (what an interrupted or killed sweep leaves) says so at its top
// and in the JSON, and recommends nothing; the complete run's report is unmarked.
TEST_F(Garbage, PartialSweepReportIsMarkedAndRecommendsNothing) {
  const std::string& R = small_sweep();
  const std::string full_md = edgeq::test::read_text(R + "/report.md");
  EXPECT_EQ(full_md.find("PARTIAL"), std::string::npos);
  EXPECT_NE(full_md.find("Recommended: ") == std::string::npos ? full_md.find("No file is within")
                                                                : full_md.find("Recommended: "),
            std::string::npos);
  EXPECT_NE(edgeq::test::read_text(R + "/report.json").find("\"complete\": true"), std::string::npos);
  // Kill a rerun with more entries after its first new result: its report is partial.
  TempDir t;
  const std::string R2 = t.file("R2");
  fs::copy(R, R2, fs::copy_options::recursive);
  const std::string ev = small_sweep().substr(0, small_sweep().size() - 2) + "/ev.txt";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("EDGEQ_PROGRESS", "0", 1);
    const std::string types = "F16,Q8_0,Q4_0,Q4_1,Q5_0,Q5_1";
    execl(kEdgeq.c_str(), "edgeq", "compare", kStoriesDir.c_str(), "-o", R2.c_str(), "--types", types.c_str(),
          "--eval", ev.c_str(), "--ctx", "64", "--chunks", "2", "-t", "1", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string md, js;
  for (int i = 0; i < 5000; ++i) {  // the report rewritten after a new entry (report.md first, then the JSON)
    md = edgeq::test::read_text(R2 + "/report.md");
    js = edgeq::test::read_text(R2 + "/report.json");
    if (md.find("PARTIAL") != std::string::npos && js.find("\"complete\": false") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  EXPECT_EQ(md.rfind("> **PARTIAL REPORT: ", 0), 0u) << md.substr(0, 200);
  EXPECT_EQ(md.find("Recommended: "), std::string::npos);
  EXPECT_NE(js.find("\"complete\": false"), std::string::npos);
  EXPECT_NE(js.find("no recommendation"), std::string::npos);
}

// 8: compare --merge checks every field of a result file: each tampered value is an error naming the file.
TEST_F(Garbage, MergeRefusesEveryTamperedResultField) {
  const std::string& R = small_sweep();
  const std::string good = R + "/results/Q8_0-rtn.json";
  const std::string orig = edgeq::test::read_text(good);
  struct Tamper {
    std::string field, value;  // "entry.ppl" -> replace the number after "ppl": in the entry
  };
  const std::vector<Tamper> cases = {
      {"entry.ppl", "-5"},          {"entry.ppl", "0.5"},         {"entry.file_bytes", "-1"},
      {"entry.file_bytes", "0"},    {"entry.bits_per_weight", "0"}, {"entry.bits_per_weight", "1000"},
      {"entry.mean_kld", "-1"},     {"entry.median_kld", "-1"},   {"entry.p99_kld", "-0.1"},
      {"entry.max_kld", "-1"},      {"entry.mean_kld_err", "-1"}, {"entry.same_top_p_pct", "200"},
      {"entry.rms_dp_pct", "-3"},   {"entry.ppl_err", "-1"},      {"entry.ppl_ratio", "0"},
      {"entry.ppl_ratio_err", "-1"}, {"entry.type", "\"Q9_9\""},  {"entry.method", "\"magic\""},
      {"entry.quantize_seconds", "-1"}, {"entry.eval_seconds", "-1"}, {"entry.eval_tokens_per_second", "-1"},
      {"reference.ppl", "0"},       {"reference.ppl_err", "-1"},  {"reference.file_bytes", "-1"},
      {"reference.parameters", "0"}, {"reference.bits_per_weight", "0"}, {"reference.n_ctx", "0"},
      {"reference.n_chunks", "0"},  {"reference.scored_tokens", "-2"}, {"reference.file_type", "\"Q4_0\""},
      {"reference.eval_seconds", "-1"}, {"entry.ppl", "\"x\""},
      // Strings: empty keys, wrong types, and numbers that disagree with each other.
      {"entry.key", "\"\""},          {"entry.key", "5"},           {"entry.method_inputs", "5"},
      {"reference.run_key", "\"zz\""}, {"reference.source", "\"\""}, {"reference.eval_text", "\"\""},
      {"reference.reference_choice", "3"}, {"entry.ppl_ratio", "2"},   {"entry.ppl", "4.0"},
      {"reference.ppl", "9.5"},         {"entry.file_bytes", "10"},   {"reference.parameters", "1000000000000000"},
      {"reference.scored_tokens", "1000000000"}, {"reference.n_chunks", "1000000"}, {"reference.n_ctx", "4096"},
      {"entry.median_kld", "0.5"},      {"entry.p99_kld", "0.5"},     {"entry.mean_kld", "0.5"},
  };
  TempDir t;
  const std::string tampered = t.file("Q8_0-rtn.json");
  for (const auto& c : cases) {
    const std::string section = c.field.substr(0, c.field.find('.')), key = c.field.substr(c.field.find('.') + 1);
    std::string s = orig;
    const size_t sec = s.find("\"" + section + "\"");
    ASSERT_NE(sec, std::string::npos);
    const size_t k = s.find("\"" + key + "\":", sec);
    ASSERT_NE(k, std::string::npos) << c.field;
    const size_t v0 = k + key.size() + 3 + (s[k + key.size() + 3] == ' ' ? 1 : 0);
    const size_t v1 = s.find_first_of(",\n}", s[v0] == '"' ? s.find('"', v0 + 1) + 1 : v0);
    s.replace(v0, v1 - v0, c.value);
    std::ofstream(tampered) << s;
    auto r = run("compare --merge " + q(tampered) + " -o " + q(t.file("M")));
    EXPECT_EQ(r.code, 1) << c.field << " = " << c.value << "\n" << r.err;
    EXPECT_NE(r.err.find(tampered + ": "), std::string::npos) << c.field << "\n" << r.err;
    EXPECT_FALSE(fs::exists(t.file("M") + "/report.md")) << c.field;
  }
  auto ok = run("compare --merge " + q(good) + " -o " + q(t.file("M")));
  EXPECT_EQ(ok.code, 0) << ok.err;
}

// 9: Ctrl-C during calibration (calibrate, quantize --data) exits 130 and leaves no output.
TEST_F(Garbage, CtrlCDuringCalibrationExits130) {
  const std::string model = kStoriesDir, data = shared("text/calib.txt");
  for (const std::string& cmd : std::vector<std::string>{"calibrate", "quantize"}) {
    bool caught = false;
    for (int attempt = 0; attempt < 6 && !caught; ++attempt) {
      TempDir t;
      const std::string out = t.file(cmd == "calibrate" ? "o.imatrix" : "o.gguf");
      int fds[2];
      ASSERT_EQ(pipe(fds), 0);
      const pid_t pid = fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        dup2(fds[1], 2);
        setenv("EDGEQ_PROGRESS", "1", 1);
        if (cmd == "calibrate")
          execl(kEdgeq.c_str(), "edgeq", "calibrate", model.c_str(), "--data", data.c_str(), "-o", out.c_str(), "-t", "1",
                static_cast<char*>(nullptr));
        else
          execl(kEdgeq.c_str(), "edgeq", "quantize", model.c_str(), "-o", out.c_str(), "--type", "Q4_K_M", "--data",
                data.c_str(), "--threads", "1", static_cast<char*>(nullptr));
        _exit(127);
      }
      close(fds[1]);
      // Wait for the first progress line of the calibration ("layer 1/8"), then interrupt.
      std::string err;
      char buf[512];
      ssize_t n;
      while (err.find("layer ") == std::string::npos && (n = read(fds[0], buf, sizeof buf)) > 0) err.append(buf, n);
      kill(pid, SIGINT);
      close(fds[0]);
      int st = 0;
      waitpid(pid, &st, 0);
      if (WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;  // finished before the signal: try again
      caught = true;
      EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 130) << cmd << ": status " << st << "\n" << err;
      EXPECT_FALSE(fs::exists(out)) << cmd;
    }
    EXPECT_TRUE(caught) << cmd;
  }
}

// 10: errors name the file at fault: the source (not the output) for a bad header under quantize, the file
// for a metadata value quantize's policy reads, the whole message for a GGUF whose version was changed.
TEST_F(Garbage, ErrorsNameTheFileAtFault) {
  TempDir t;
  const auto orig = read_file(kStoriesGguf);
  struct Case {
    const char* key;  // nullptr: the version field
    uint32_t value;
  };
  for (const Case& c : {Case{"llama.attention.head_count", 0}, Case{"llama.block_count", 0xffffffffu},
                        Case{"llama.feed_forward_length", 0}, Case{nullptr, 1}}) {
    auto bytes = orig;
    put<uint32_t>(bytes, c.key ? gguf_key_value_offset(bytes, c.key) : 4, c.value);
    const std::string bad = t.file("bad.gguf"), out = t.file("mq.gguf");
    edgeq::test::write_file(bad, bytes);
    auto r = run("quantize " + q(bad) + " -o " + q(out) + " --type Q8_0");
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(r.err.rfind("edgeq: error: " + bad + ": ", 0), 0u) << r.err;
    EXPECT_EQ(r.err.find(out), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    if (!c.key) {
      EXPECT_GT(r.err.size(), 60u) << "cut short: " << r.err;
    }
  }
  // calibrate's short text names the text.
  const std::string short_text = t.file("short.txt");
  std::ofstream(short_text) << "once upon a time";
  auto r = run("calibrate " + q(kStoriesGguf) + " --data " + q(short_text) + " -o " + q(t.file("o.dat")));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(short_text + ": the text tokenizes to only"), std::string::npos) << r.err;
}

// 11: --json with a path that is not UTF-8 prints valid JSON (the bytes replaced), not an exception.
TEST_F(Garbage, JsonWithNonUtf8Paths) {
  TempDir t;
  const std::string odd = t.file("m\xff\xfe.gguf");
  fs::copy_file(kStoriesGguf, odd);
  const std::string ev = write_eval(t);
  for (const std::string& c : {"tokenize " + q(odd) + " -p hi --json", "perplexity " + q(odd) + " -f " + q(ev) + " -c 64 --json",
                               "generate " + q(odd) + " -p hi -n 2 --json", "inspect " + q(odd) + " --json",
                               "quantize " + q(odd) + " -o " + q(t.file("o\xff.gguf")) + " --type Q8_0 --json"}) {
    auto r = run(c);
    EXPECT_EQ(r.code, 0) << c << "\n" << r.err;
    EXPECT_FALSE(nlohmann::json::parse(r.out, nullptr, false).is_discarded()) << c << "\n" << r.out.substr(0, 200);
  }
}

// 12: usage errors exit 2 before any work: values outside the ranges the help gives, empty list items,
// flag combinations that would silently ignore one of them.
TEST_F(Garbage, FlagValidationExits2) {
  TempDir t;
  const std::string ev = write_eval(t), M = q(kStoriesGguf), O = q(t.file("o.gguf"));
  const std::string G = "generate " + M + " -p hi ";
  const std::string P = "perplexity " + M + " -f " + q(ev) + " ";
  const std::string Q = "quantize " + M + " -o " + O + " ";
  const std::string C = "compare " + q(kStoriesDir) + " -o " + q(t.file("R")) + " --eval " + q(ev) + " ";
  struct Case {
    std::string cmd, named;  // the command line and what its one-line error names (the flag)
  };
  const std::vector<Case> cases = {
      {G + "--temp -1", "--temp"}, {G + "--temp nan", "--temp"}, {G + "--temp abc", "--temp"},
      {G + "--top-p 2", "--top-p"}, {G + "--top-p -0.5", "--top-p"}, {G + "--top-k -3", "--top-k"},
      {G + "--top-k abc", "--top-k"}, {G + "-n -2", "-n"}, {G + "--seed -1", "--seed"},
      {G + "--seed 18446744073709551616", "--seed"}, {G + "--no-such-flag", "--no-such-flag"},
      {Q + "--type Q9_9", "Q9_9"}, {Q + "--type Q4_0 --pal-group 4", "--pal-group"},
      {Q + "--type PAL4 --pal-group 0", "--pal-group"}, {"quantize " + M + " " + O + " Q8_0 -4", "THREADS"},
      {"quantize " + M + " " + O + " Q8_0 many", "THREADS"},
      {Q + "--type Q4_0 --method rtn --imatrix " + q(shared("golden/tl-8m.imatrix")), "--imatrix"},
      {Q + "--type Q4_0 --output-tensor-type Q8_0 --leave-output-tensor", "--leave-output-tensor"},
      {P + "--chunks 0", "--chunks"}, {P + "--chunks -2", "--chunks"}, {P + "--chunks x", "--chunks"},
      {P + "-c abc", "-c"}, {C + "--types Q8_0,,Q4_0", "--types"}, {C + "--calib-chunks 0", "--calib-chunks"},
      {C + "--calib-chunks -1", "--calib-chunks"}, {C + "--types Q8_0 --seed -1", "--seed"},
  };
  for (const auto& c : cases) {
    auto r = run(c.cmd);
    EXPECT_EQ(r.code, 2) << c.cmd << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("edgeq: error: ", 0), 0u) << c.cmd << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.cmd << "\n" << r.err;
    EXPECT_NE(r.err.find(c.named), std::string::npos) << c.cmd << "\n" << r.err;
    EXPECT_LT(r.err.size(), 300u) << c.cmd << "\n" << r.err;
    EXPECT_FALSE(fs::exists(t.file("o.gguf"))) << c.cmd;
  }
  // A --tensor-type pattern that matches no tensor would be ignored: refused, nothing written.
  auto r = run("quantize " + M + " -o " + O + " --type Q4_0 --tensor-type nothing_like_this=Q8_0");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("matches no quantized tensor"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(t.file("o.gguf")));
  // compare --eval naming one of the sweep's own outputs is refused before the reference is computed.
  const std::string R = t.file("R2");
  fs::create_directories(R);
  fs::copy_file(ev, R + "/report.md");
  const auto t0 = std::chrono::steady_clock::now();
  r = run("compare " + q(kStoriesDir) + " -o " + q(R) + " --eval " + q(R + "/report.md") + " --types Q8_0 -c 64");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("is an output of this sweep"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(R + "/work"));
  (void)t0;
}

// 13: an output that would replace a file of the source checkpoint's directory is refused unless --force.
TEST_F(Garbage, OutputsNeverReplaceCheckpointFiles) {
  TempDir t;
  const std::string ck = t.file("ck");
  fs::copy(kStoriesDir, ck);
  for (auto& e : fs::directory_iterator(ck)) fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  const auto before = snapshot(ck);
  for (const std::string& victim : std::vector<std::string>{"generation_config.json", "LICENSE.llama2.c-MIT.txt"}) {
    for (const std::string& c : {"convert " + q(ck) + " -o " + q(ck + "/" + victim),
                                 "quantize " + q(ck) + " -o " + q(ck + "/" + victim) + " --type Q8_0"}) {
      auto r = run(c);
      EXPECT_EQ(r.code, 1) << c << "\n" << r.err;
      EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
    }
  }
  EXPECT_EQ(snapshot(ck), before);
  EXPECT_EQ(run("convert " + q(ck) + " -o " + q(ck + "/model.gguf")).code, 0);  // a new file there is fine
  EXPECT_EQ(run("convert " + q(ck) + " -o " + q(ck + "/generation_config.json") + " --force").code, 0);
}

// 5: an ONNX external-data offset moved from 0 to 7 reads shifted bytes: refused (ranges overlap), not
// converted into a file of garbage.
TEST_F(Garbage, OnnxExternalOffsetMovedIsRefused) {
  TempDir t;
  const std::string src = shared("models/tl-8m-onnx-ext"), d = t.file("onnx");
  fs::create_directory(d);
  for (auto& e : fs::directory_iterator(src))
    if (e.path().filename() != "model.onnx") fs::create_symlink(e.path(), fs::path(d) / e.path().filename());
  auto bytes = read_file(src + "/model.onnx");
  const std::string pat = std::string("\x0a\x06offset\x12\x01", 10) + "0";
  auto it = std::search(bytes.begin(), bytes.end(), pat.begin(), pat.end());
  ASSERT_NE(it, bytes.end());
  *(it + static_cast<long>(pat.size()) - 1) = '7';
  edgeq::test::write_file(d + "/model.onnx", bytes);
  auto r = run("convert " + q(d) + " -o " + q(t.file("o.gguf")) + " --outtype f32");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("overlap"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(t.file("o.gguf")));
}

namespace {

// A copy of a checkpoint directory as symlinks, with one file replaced by the given bytes.
std::string checkpoint_with(const TempDir& t, const std::string& src, const std::string& name,
                            const std::vector<uint8_t>& bytes) {
  const std::string d = t.file("ck-" + std::to_string(std::hash<std::string>{}(std::string(bytes.begin(), bytes.end()))));
  fs::create_directory(d);
  for (auto& e : fs::directory_iterator(src))
    if (e.path().filename() != name) fs::create_symlink(e.path(), fs::path(d) / e.path().filename());
  edgeq::test::write_file(d + "/" + name, bytes);
  return d;
}

// Replaces the n-th (0-based) occurrence of `from` by `to` (same length, so every offset stays valid).
std::vector<uint8_t> replaced(std::vector<uint8_t> b, const std::string& from, const std::string& to, int nth = 0) {
  EXPECT_EQ(from.size(), to.size());
  auto it = b.begin();
  for (int i = 0; i <= nth; ++i) {
    if (i) ++it;
    it = std::search(it, b.end(), from.begin(), from.end());
    if (it == b.end()) {
      ADD_FAILURE() << "no '" << from << "' (" << nth << ")";
      return b;
    }
  }
  std::copy(to.begin(), to.end(), it);
  return b;
}

}  // namespace

// 5: every value the HF config reader, the safetensors reader and the ONNX importer take is checked against
// what the architecture and the file allow: `convert` refuses with one line naming the file and the key or
// tensor, before writing anything (a table of lies per reader).
TEST_F(Garbage, ConvertRefusesLyingConfigSafetensorsAndOnnx) {
  TempDir t;
  struct Lie {
    std::string src, file;  // checkpoint directory, the file replaced in it
    std::vector<uint8_t> bytes;
    std::string at_fault, named;  // the file the error names, what else it names
  };
  std::vector<Lie> lies;
  const std::string cfg = edgeq::test::read_text(kStoriesDir + "/config.json");
  // at_fault: the config, or the tensor file whose shape it contradicts (the message names config.json), or
  // the directory (a tensor it needs is missing).
  auto cfg_lie = [&](const std::string& key, const std::string& value, const std::string& named,
                     const std::string& at_fault = "/config.json") {
    auto j = nlohmann::json::parse(cfg);
    j[key] = nlohmann::json::parse(value);
    const std::string s = j.dump();
    lies.push_back({kStoriesDir, "config.json", std::vector<uint8_t>(s.begin(), s.end()), at_fault, named});
  };
  cfg_lie("num_hidden_layers", "4", "model.layers.4.", "/model.safetensors");  // a layer the config does not have
  cfg_lie("num_hidden_layers", "6", "model.layers.5.", ": ");  // a layer the checkpoint does not have
  cfg_lie("num_hidden_layers", "0", "num_hidden_layers");
  cfg_lie("vocab_size", "500", "model.embed_tokens.weight", "/model.safetensors");
  cfg_lie("hidden_size", "48", "model.embed_tokens.weight", "/model.safetensors");
  cfg_lie("intermediate_size", "100", "gate_proj", "/model.safetensors");
  cfg_lie("num_attention_heads", "0", "num_attention_heads");
  cfg_lie("num_key_value_heads", "3", "num_key_value_heads");
  cfg_lie("head_dim", "7", "head_dim");
  cfg_lie("head_dim", "16", "q_proj", "/model.safetensors");
  cfg_lie("max_position_embeddings", "0", "max_position_embeddings");
  cfg_lie("rms_norm_eps", "0", "rms_norm_eps");
  cfg_lie("rms_norm_eps", "-1e-5", "rms_norm_eps");
  cfg_lie("rms_norm_eps", "1e30", "rms_norm_eps");
  cfg_lie("rope_theta", "-1", "rope_theta");
  cfg_lie("rope_theta", "0", "rope_theta");
  cfg_lie("rope_scaling", R"({"type": "linear", "factor": -2})", "rope_scaling");
  cfg_lie("hidden_size", "\"64\"", "hidden_size");
  cfg_lie("tie_word_embeddings", "1", "tie_word_embeddings");
  // The safetensors header, edited in place (same length).
  const auto st = read_file(kStoriesDir + "/model.safetensors");
  auto st_lie = [&](const std::string& from, const std::string& to, const std::string& named, int nth = 0) {
    lies.push_back({kStoriesDir, "model.safetensors", replaced(st, from, to, nth), "/model.safetensors", named});
  };
  st_lie("\"shape\":[512,64]", "\"shape\":[512,65]", "model.embed_tokens.weight");
  st_lie("\"dtype\":\"F32\"", "\"dtype\":\"F16\"", "model.embed_tokens.weight");
  st_lie("\"dtype\":\"F32\"", "\"dtype\":\"X32\"", "X32");
  st_lie("[0,131072]", "[0,131076]", "model.embed_tokens.weight");
  st_lie("[131072,131328]", "[131070,131326]", "overlap");
  // The ONNX model's external-data references (protobuf strings, same length).
  const std::string onnx_dir = shared("models/tl-8m-onnx-ext");
  const auto onnx = read_file(onnx_dir + "/model.onnx");
  auto onnx_lie = [&](const std::string& from, const std::string& to, const std::string& named, int nth = 0) {
    lies.push_back({onnx_dir, "model.onnx", replaced(onnx, from, to, nth), "/model.onnx", named});
  };
  // The ONNX checkpoint's config.json against its graph.
  const std::string onnx_cfg = edgeq::test::read_text(onnx_dir + "/config.json");
  for (const auto& [key, value, named] : std::vector<std::tuple<std::string, int, std::string>>{
           {"vocab_size", 500, "[500, 256]"}, {"num_hidden_layers", 9, "9 layers"},
           {"num_key_value_heads", 1, "k_proj"}}) {
    auto j = nlohmann::json::parse(onnx_cfg);
    j[key] = value;
    const std::string s = j.dump();
    lies.push_back({onnx_dir, "config.json", std::vector<uint8_t>(s.begin(), s.end()), "/model.onnx", named});
  }
  onnx_lie(std::string("\x06offset\x12\x01", 9) + "0", std::string("\x06offset\x12\x01", 9) + "7", "overlap");
  onnx_lie(std::string("\x06offset\x12\x07", 9) + "4194304", std::string("\x06offset\x12\x07", 9) + "4194300",
           "overlap");
  onnx_lie(std::string("\x06length\x12\x04", 9) + "1024", std::string("\x06length\x12\x04", 9) + "1028",
           "does not match dims");
  onnx_lie(std::string("\x06offset\x12\x07", 9) + "4194304", std::string("\x06offset\x12\x07", 9) + "4194304",
           "outside");  // with a truncated model.onnx.data (below)
  for (size_t i = 0; i < lies.size(); ++i) {
    const auto& l = lies[i];
    std::string d = checkpoint_with(t, l.src, l.file, l.bytes);
    if (i + 1 == lies.size()) {  // the data file cut short: the last tensors lie outside it
      fs::remove(d + "/model.onnx.data");
      std::ofstream(d + "/model.onnx.data").close();  // sparse: only the size matters
      fs::resize_file(d + "/model.onnx.data", fs::file_size(onnx_dir + "/model.onnx.data") / 2);
    }
    const std::string out = t.file("o.gguf");
    auto r = run("convert " + q(d) + " -o " + q(out) + " --outtype f32");
    EXPECT_EQ(r.code, 1) << l.file << " " << l.named << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("edgeq: error: " + d + l.at_fault, 0), 0u) << l.named << "\n" << r.err;
    EXPECT_NE(r.err.find(l.named), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(out)) << l.named;
    fs::remove_all(d);
  }
}

// 5: an evaluation whose reference guesses uniformly (stories260K with a zero embedding: every logit 0, PPL =
// the vocabulary size 512) is an error in perplexity and compare, not a result; so is a KLD base read back
// whose reference log-probabilities are uniform (a llama-layout base with its rows replaced).
TEST_F(Garbage, NearUniformReferenceIsAnError) {
  TempDir t;
  const std::string ev = write_eval(t);
  const auto g = edgeq::GgufFile::open(kStoriesGguf);
  auto bytes = read_file(kStoriesGguf);
  const auto* te = g.find_tensor("token_embd.weight");
  ASSERT_NE(te, nullptr);
  std::fill_n(bytes.begin() + static_cast<long>(g.data_offset() + te->offset), te->nbytes, uint8_t{0});
  const std::string zero = t.file("zero.gguf"), Z = q(zero), M = q(kStoriesGguf), kld = t.file("z.kld");
  edgeq::test::write_file(zero, bytes);
  const std::string R = t.file("R");
  for (const std::string& c : {"perplexity " + Z + " -f " + q(ev) + " -c 64 --kld-base " + q(kld),
                               "compare " + Z + " " + M + " --eval " + q(ev) + " -c 64",
                               "compare " + Z + " -o " + q(R) + " --eval " + q(ev) + " -c 64 --types Q8_0"}) {
    auto r = run(c);
    EXPECT_EQ(r.code, 1) << c << "\n" << r.err;
    EXPECT_NE(r.err.find("near the vocabulary size 512"), std::string::npos) << c << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_FALSE(fs::exists(kld));
  EXPECT_FALSE(fs::exists(R + "/report.md"));
  // A base read back: made from the good model in llama's layout, its rows then made uniform.
  const std::string base = t.file("base.bin");
  ASSERT_EQ(run("perplexity " + M + " -f " + q(ev) + " -c 64 --chunks 2 --kld-base " + q(base) +
                " --kld-base-format llama").code, 0);
  auto b = read_file(base);
  const size_t n_ctx = 64, n_chunk = 2, n_vocab = 512, row = static_cast<size_t>(edgeq::runtime::kld_row_len(512));
  const size_t rows_at = 8 + 12 + 4 * n_chunk * n_ctx, n_rows = n_chunk * (n_ctx - 1 - n_ctx / 2);
  ASSERT_EQ(b.size(), rows_at + 2 * row * n_rows);
  for (size_t i = 0; i < n_rows; ++i) {
    uint8_t* r = b.data() + rows_at + 2 * row * i;
    std::fill_n(r, 2 * row, uint8_t{0});
    const float scale = 0.f, min_lp = -std::log(static_cast<float>(n_vocab));
    std::memcpy(r, &scale, 4);
    std::memcpy(r + 4, &min_lp, 4);
  }
  edgeq::test::write_file(base, b);
  auto r = run("perplexity " + M + " -f " + q(ev) + " -c 64 --chunks 2 --kld " + q(base));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(r.err.rfind("edgeq: error: " + base + ": ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("near the vocabulary size 512"), std::string::npos) << r.err;
}

// 6: the text flags not covered above (calibrate --data, quantize --data, a sweep's --eval and --calib) read
// "-" (a pipe) and zstd exactly as the plain file: the same imatrix (but for the dataset name it stores), the
// same quantized tensors, the same reference perplexity.
TEST_F(Garbage, CalibrationAndSweepTextsFromPipesAndZstd) {
  TempDir t;
  const std::string ev = write_eval(t), zst = t.file("ev.txt.zst");
  if (std::system(("zstd -q -f " + q(ev) + " -o " + q(zst) + " 2>/dev/null").c_str()) != 0) GTEST_SKIP() << "no zstd";
  const std::string M = q(kStoriesGguf), pipe = "cat " + q(ev) + " | EDGEQ_PROGRESS=0 " + q(kEdgeq) + " ";
  // calibrate --data: the imatrix ends with the dataset name (int32 length + bytes), which differs.
  std::map<std::string, std::vector<uint8_t>> imat;
  for (const std::string& via : {q(ev), std::string("-"), q(zst)}) {
    const std::string out = t.file("i" + std::to_string(imat.size()) + ".dat");
    const std::string c = "calibrate " + M + " --data " + via + " -c 64 -t 1 -o " + q(out);
    auto r = via == "-" ? edgeq::test::run_shell(pipe + c) : run(c);
    ASSERT_EQ(r.code, 0) << c << "\n" << r.err;
    auto b = read_file(out);
    const std::string name = via == "-" ? "-" : (via == q(ev) ? ev : zst);
    b.resize(b.size() - 4 - name.size());
    imat[via] = b;
  }
  EXPECT_EQ(imat[q(ev)], imat["-"]);
  EXPECT_EQ(imat[q(ev)], imat[q(zst)]);
  // quantize --data: the same tensors.
  std::vector<std::string> outs;
  for (const std::string& via : {q(ev), std::string("-"), q(zst)}) {
    const std::string out = t.file("q" + std::to_string(outs.size()) + ".gguf");
    const std::string c = "quantize " + M + " -o " + q(out) + " --type Q4_K_M --threads 1 --data " + via;
    auto r = via == "-" ? edgeq::test::run_shell(pipe + c) : run(c);
    ASSERT_EQ(r.code, 0) << c << "\n" << r.err;
    outs.push_back(out);
  }
  const auto a = edgeq::GgufFile::open(outs[0]);
  for (size_t i = 1; i < outs.size(); ++i) {
    const auto b = edgeq::GgufFile::open(outs[i]);
    ASSERT_EQ(a.tensors().size(), b.tensors().size());
    for (const auto& ti : a.tensors()) {
      const auto va = a.view(ti), vb = b.view(ti.name);
      ASSERT_EQ(va.nbytes, vb.nbytes) << ti.name;
      EXPECT_EQ(std::memcmp(va.data, vb.data, va.nbytes), 0) << ti.name << " via " << outs[i];
    }
  }
  // quantize's budget mix --data (it used to refuse "-" as "no such file"): a pipe gives the plain file's mix.
  std::vector<std::string> mixes;
  for (const std::string& via : {q(ev), std::string("-")}) {
    const std::string out = t.file("b" + std::to_string(mixes.size()) + ".gguf");
    const std::string c = "quantize " + M + " -o " + q(out) + " --target-bpw 8 --types Q4_0,Q8_0 --budget-chunks 1 "
                          "--ctx 64 --threads 1 --cache " + q(t.file("cache" + std::to_string(mixes.size()))) +
                          " --data " + via;
    auto r = via == "-" ? edgeq::test::run_shell(pipe + c) : run(c);
    ASSERT_EQ(r.code, 0) << c << "\n" << r.err;
    mixes.push_back(out);
  }
  {
    const auto x = edgeq::GgufFile::open(mixes[0]), y = edgeq::GgufFile::open(mixes[1]);
    for (const auto& ti : x.tensors()) {
      const auto vx = x.view(ti), vy = y.view(ti.name);
      EXPECT_EQ(vx.type, vy.type) << ti.name;
      ASSERT_EQ(vx.nbytes, vy.nbytes) << ti.name;
      EXPECT_EQ(std::memcmp(vx.data, vy.data, vx.nbytes), 0) << ti.name;
    }
  }
  // A sweep: --eval from zstd, --calib from a pipe; its reference is the plain sweep's.
  const std::string& plain = small_sweep();
  const std::string R = t.file("R");
  auto r = edgeq::test::run_shell(pipe + "compare " + q(kStoriesDir) + " -o " + q(R) + " --types Q4_0 --methods imatrix --eval " +
                                  q(zst) + " --calib - --ctx 64 --chunks 2 -t 1");
  ASSERT_EQ(r.code, 0) << r.err;
  auto ref_ppl = [](const std::string& dir) {
    const auto j = nlohmann::json::parse(edgeq::test::read_text(dir + "/report.json"));
    return j.at("reference").at("ppl").get<double>();
  };
  EXPECT_EQ(ref_ppl(R), ref_ppl(plain));
}
