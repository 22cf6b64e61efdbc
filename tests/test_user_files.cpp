// Issue 9, parts A-C: no command ever replaces a file the user owns (an input, a device, a FIFO), an interrupted
// run leaves no temp file, and nonsense flags are refused before any work with one line naming the problem.
// Every test runs the real `edgeq` program and checks that the inputs are byte-identical afterwards.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/base/thread_count.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using edgeq::test::read_file;
using edgeq::test::shared;
using edgeq::test::TempDir;

namespace {

const std::string kEdgeq = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
const std::string kStories = shared("golden/stories260K-F32.gguf");
const std::string kF16 = shared("golden/tl-8m-F16.gguf");
const std::string kText = shared("text/tinystories-heldout.txt");

struct Run {
  int code = -1;
  std::string out, err;
};

Run run(const std::string& args) {
  TempDir t;
  const std::string so = t.file("out"), se = t.file("err");
  const std::string cmd = "EDGEQ_PROGRESS=0 '" + kEdgeq + "' " + args + " >'" + so + "' 2>'" + se + "' </dev/null";
  const int st = std::system(cmd.c_str());
  Run r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  auto o = read_file(so), e = read_file(se);
  r.out.assign(o.begin(), o.end());
  r.err.assign(e.begin(), e.end());
  return r;
}

std::string q(const std::string& p) { return "'" + p + "'"; }

// A writable copy of a checkpoint directory (../shared is read-only and must stay so).
std::string copy_dir(const std::string& from, const TempDir& t, const std::string& name) {
  const fs::path to = t.path / name;
  fs::copy(from, to, fs::copy_options::recursive);
  return to.string();
}

bool no_temp_files(const fs::path& dir) {
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return false;
  return true;
}

class UserFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kEdgeq)) GTEST_SKIP() << kEdgeq << " not built";
  }
};

}  // namespace

// A.1: --kld-base names an output; passing the model, the text or any other non-base file is refused.
TEST_F(UserFiles, KldBaseNeverReplacesAnotherFile) {
  TempDir t;
  const std::string model = t.file("m.gguf"), text = t.file("t.txt"), other = t.file("notes.txt");
  fs::copy_file(kStories, model);
  fs::copy_file(kText, text);
  { std::ofstream(other) << "my notes\n"; }
  const auto model_bytes = read_file(model), text_bytes = read_file(text);

  for (const std::string& victim : {model, text}) {
    auto r = run("perplexity " + q(model) + " -f " + q(text) + " --chunks 1 --kld-base " + q(victim) + " --force");
    EXPECT_EQ(r.code, 1) << victim;
    EXPECT_NE(r.err.find("is an input of this command"), std::string::npos) << r.err;
  }
  auto r = run("perplexity " + q(model) + " -f " + q(text) + " --chunks 1 --kld-base " + q(other));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("not a KLD base"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(model), model_bytes);
  EXPECT_EQ(read_file(text), text_bytes);
  EXPECT_EQ(edgeq::test::read_text(other), "my notes\n");

  // A base may replace an earlier base, and --force lets it replace any other (non-input) file.
  const std::string base = t.file("base.kld");
  ASSERT_EQ(run("perplexity " + q(model) + " -f " + q(text) + " --chunks 1 --kld-base " + q(base)).code, 0);
  ASSERT_EQ(run("perplexity " + q(model) + " -f " + q(text) + " --chunks 1 --kld-base " + q(base)).code, 0);
  ASSERT_EQ(run("perplexity " + q(model) + " -f " + q(text) + " --chunks 1 --kld-base " + q(other) + " --force").code, 0);
  EXPECT_EQ(read_file(other), read_file(base));
  EXPECT_TRUE(no_temp_files(t.path));
}

// A.2: no output of convert/quantize may be one of the files they read, whatever the path that names it.
TEST_F(UserFiles, ConvertAndQuantizeNeverWriteIntoTheirInputs) {
  TempDir t;
  const std::string ck = copy_dir(shared("models/stories260K"), t, "ck");
  const std::string sharded = copy_dir(shared("models/stories260K-sharded"), t, "sh");
  std::vector<std::pair<std::string, std::vector<uint8_t>>> before;
  for (const std::string& d : {ck, sharded})
    for (auto& e : fs::directory_iterator(d)) before.emplace_back(e.path().string(), read_file(e.path().string()));

  std::vector<std::string> victims = {ck + "/model.safetensors", ck + "/config.json", ck + "/tokenizer.model",
                                      sharded + "/model.safetensors.index.json"};
  for (auto& e : fs::directory_iterator(sharded))
    if (e.path().extension() == ".safetensors") victims.push_back(e.path().string());
  // a symbolic link to an input is the input
  fs::create_symlink(ck + "/model.safetensors", t.file("link.gguf"));
  for (const auto& v : victims) {
    const std::string src = v.rfind(sharded, 0) == 0 ? sharded : ck;
    auto c = run("convert " + q(src) + " -o " + q(v));
    EXPECT_EQ(c.code, 1) << v << ": " << c.err;
    EXPECT_NE(c.err.find("is an input of this command"), std::string::npos) << c.err;
    auto qz = run("quantize " + q(src) + " -o " + q(v) + " --type Q8_0");
    EXPECT_EQ(qz.code, 1) << v << ": " << qz.err;
    EXPECT_NE(qz.err.find("is an input of this command"), std::string::npos) << qz.err;
  }
  auto l = run("convert " + q(ck) + " -o " + q(t.file("link.gguf")));
  EXPECT_EQ(l.code, 1) << l.err;

  // An ONNX export's external data file.
  const std::string ox = copy_dir(shared("models/tl-8m-onnx-ext"), t, "ox");
  const auto data_bytes = read_file(ox + "/model.onnx.data");
  auto od = run("convert " + q(ox + "/model.onnx") + " -o " + q(ox + "/model.onnx.data"));
  EXPECT_EQ(od.code, 1) << od.err;
  EXPECT_NE(od.err.find("is an input of this command"), std::string::npos) << od.err;
  EXPECT_EQ(read_file(ox + "/model.onnx.data"), data_bytes);
  EXPECT_TRUE(no_temp_files(ox));

  // -o X --imatrix X destroys the imatrix: refused.
  const std::string imat = t.file("my.imatrix");
  fs::copy_file(shared("golden/tl-8m.imatrix"), imat);
  const auto imat_bytes = read_file(imat);
  auto qi = run("quantize " + q(kF16) + " -o " + q(imat) + " --type Q4_K_M --imatrix " + q(imat));
  EXPECT_EQ(qi.code, 1) << qi.err;
  EXPECT_NE(qi.err.find("is an input of this command"), std::string::npos) << qi.err;
  EXPECT_EQ(read_file(imat), imat_bytes);

  for (auto& [p, bytes] : before) EXPECT_EQ(read_file(p), bytes) << p << " changed";
  EXPECT_TRUE(no_temp_files(ck));
  EXPECT_TRUE(no_temp_files(sharded));
  EXPECT_TRUE(fs::is_symlink(t.file("link.gguf")));
}

// A.3: a character device or a FIFO is written in place, never replaced by a regular file.
TEST_F(UserFiles, DevicesAndFifosAreWrittenInPlace) {
  TempDir t;
  auto r = run("quantize " + q(kStories) + " -o /dev/null --type Q8_0");
  EXPECT_EQ(r.code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << "/dev/null was replaced";

  const std::string fifo = t.file("pipe"), got = t.file("from-pipe.gguf"), want = t.file("plain.gguf");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  std::thread reader([&] { std::system(("cat " + q(fifo) + " > " + q(got)).c_str()); });
  auto f = run("quantize " + q(kStories) + " -o " + q(fifo) + " --type Q8_0");
  reader.join();
  EXPECT_EQ(f.code, 0) << f.err;
  ASSERT_EQ(stat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the FIFO was replaced";
  ASSERT_EQ(run("quantize " + q(kStories) + " -o " + q(want) + " --type Q8_0").code, 0);
  EXPECT_EQ(read_file(got), read_file(want));

  auto d = run("convert " + q(shared("models/stories260K")) + " -o " + q(t.path.string()));
  EXPECT_EQ(d.code, 1);
  EXPECT_NE(d.err.find("is a directory"), std::string::npos) << d.err;
}

// A.4: SIGINT / SIGTERM during a write remove the temp file and exit 130 / 143.
TEST_F(UserFiles, InterruptRemovesTempFile) {
  for (int sig : {SIGINT, SIGTERM}) {
    bool caught = false;
    for (int attempt = 0; attempt < 8 && !caught; ++attempt) {
      TempDir t;
      const std::string out = t.file("o.gguf");
      const pid_t pid = fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        setenv("EDGEQ_PROGRESS", "0", 1);
        execl(kEdgeq.c_str(), "edgeq", "convert", shared("models/tl-8m").c_str(), "-o", out.c_str(), "--outtype", "f32",
              "--threads", "1", static_cast<char*>(nullptr));
        _exit(127);
      }
      // Wait for the temp file to appear, then interrupt.
      bool seen = false;
      for (int i = 0; i < 20000 && !seen; ++i) {
        for (auto& e : fs::directory_iterator(t.path))
          if (e.path().filename().string().find(".tmp.") != std::string::npos) seen = true;
        if (!seen) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      if (seen) kill(pid, sig);
      int st = 0;
      waitpid(pid, &st, 0);
      if (seen && WIFEXITED(st) && WEXITSTATUS(st) == 128 + sig) {
        caught = true;
        EXPECT_TRUE(no_temp_files(t.path)) << "signal " << sig;
        EXPECT_FALSE(fs::exists(out));
      }
    }
    EXPECT_TRUE(caught) << "could not interrupt a convert with signal " << sig;
  }
}

// B.5: one thread rule for every command.
TEST(ThreadRule, ResolveThreads) {
  EXPECT_EQ(edgeq::resolve_threads(0), edgeq::available_cores());
  EXPECT_EQ(edgeq::resolve_threads(1), 1);
  EXPECT_EQ(edgeq::resolve_threads(edgeq::max_threads()), edgeq::max_threads());
  EXPECT_THROW(edgeq::resolve_threads(edgeq::max_threads() + 1), edgeq::Error);
  EXPECT_THROW(edgeq::resolve_threads(-5), edgeq::Error);
  EXPECT_THROW(edgeq::resolve_threads(50000), edgeq::Error);
}

TEST_F(UserFiles, ThreadCountsOutOfRangeAreUsageErrors) {
  TempDir t;
  const std::vector<std::string> cmds = {
      "perplexity " + q(kStories) + " -f " + q(kText),
      "generate " + q(kStories) + " -p hi",
      "convert " + q(shared("models/stories260K")) + " -o " + q(t.file("a.gguf")),
      "quantize " + q(kStories) + " -o " + q(t.file("b.gguf")) + " --type Q8_0",
      "compare " + q(kStories) + " " + q(kStories) + " -f " + q(kText),
  };
  for (const auto& c : cmds)
    for (const std::string n : {"50000", "-5", "x"}) {
      auto r = run(c + " --threads " + n);
      EXPECT_EQ(r.code, 2) << c << " --threads " << n << ": " << r.err;
      EXPECT_NE(r.err.find("--threads " + n), std::string::npos) << r.err;
    }
  EXPECT_TRUE(no_temp_files(t.path));
  EXPECT_FALSE(fs::exists(t.file("a.gguf")));
}

// B.6: a tokenizer.model cut between two records is refused (it used to pad half the vocabulary with [PAD]).
TEST_F(UserFiles, TruncatedTokenizerModelIsRefused) {
  TempDir t;
  const std::string ck = copy_dir(shared("models/tl-8m"), t, "ck");
  auto bytes = read_file(ck + "/tokenizer.model");
  // Walk the top-level records (field 1 = one piece each) and cut after 2008 pieces.
  size_t pos = 0, pieces = 0;
  auto varint = [&](size_t& p) {
    uint64_t v = 0;
    for (int s = 0; p < bytes.size(); s += 7) {
      const uint8_t b = bytes[p++];
      v |= uint64_t(b & 0x7f) << s;
      if (!(b & 0x80)) break;
    }
    return v;
  };
  while (pos < bytes.size() && pieces < 2008) {
    const uint64_t tag = varint(pos);
    ASSERT_EQ(tag & 7, 2u);
    pos += varint(pos);
    if ((tag >> 3) == 1) ++pieces;
  }
  ASSERT_EQ(pieces, 2008u);
  bytes.resize(pos);
  edgeq::test::write_file(ck + "/tokenizer.model", bytes);
  auto r = run("convert " + q(ck) + " -o " + q(t.file("o.gguf")));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("tokenizer.model"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(t.file("o.gguf")));
}

// B.7: nonsense evaluation and sampling flags; NaN weights; contexts beyond training; the context running out.
TEST_F(UserFiles, EvaluationAndSamplingNonsenseIsRefused) {
  auto c0 = run("perplexity " + q(kStories) + " -f " + q(kText) + " --chunks 0");
  EXPECT_EQ(c0.code, 2);
  EXPECT_NE(c0.err.find("--chunks 0"), std::string::npos) << c0.err;
  for (const std::string bad : {"--temp -1", "--temp nan", "--top-p 2", "--top-k -3"}) {
    auto r = run("generate " + q(kStories) + " -p hi " + bad);
    EXPECT_NE(r.code, 0) << bad;
    EXPECT_NE(r.err.find(bad.substr(0, bad.find(' '))), std::string::npos) << bad << ": " << r.err;
  }
  auto big = run("perplexity " + q(kF16) + " -f " + q(kText) + " -c 99999999999");
  EXPECT_EQ(big.code, 2);
  EXPECT_NE(big.err.find("--ctx 99999999999: must be 4..1048576"), std::string::npos) << big.err;

  // tl-8m was trained at 512: llama.cpp's warning at -c 1024.
  auto w = run("perplexity " + q(kF16) + " -f " + q(kText) + " -c 1024 --chunks 1");
  EXPECT_EQ(w.code, 0) << w.err;
  EXPECT_NE(w.err.find("trained on only 512 context tokens (1024 specified)"), std::string::npos) << w.err;

  auto g = run("generate " + q(kF16) + " -p 'Once upon a time' -n 1000 -c 32 --ignore-eos");
  EXPECT_EQ(g.code, 0) << g.err;
  EXPECT_NE(g.err.find("the context of 32 tokens is full"), std::string::npos) << g.err;

  // A text shorter than two contexts: the message names the text, not the model.
  TempDir t;
  { std::ofstream(t.file("short.txt")) << "Once upon a time there was a cat.\n"; }
  auto s = run("perplexity " + q(kStories) + " -f " + q(t.file("short.txt")));
  EXPECT_EQ(s.code, 1);
  EXPECT_EQ(s.err.rfind("edgeq: error: " + t.file("short.txt"), 0), 0u) << s.err;
}

TEST_F(UserFiles, NanWeightsAreNamed) {
  TempDir t;
  const std::string m = t.file("nan.gguf");
  fs::copy_file(kF16, m);
  size_t off = 0;
  {
    auto f = edgeq::GgufFile::open(kF16);
    const auto* ti = f.find_tensor("blk.3.ffn_up.weight");
    ASSERT_NE(ti, nullptr);
    ASSERT_EQ(ti->type, edgeq::GgmlType::F16);
    off = f.data_offset() + ti->offset + 2 * 256 * 5;  // row 5
  }
  auto bytes = read_file(m);
  for (int i = 0; i < 4; ++i) {
    bytes[off + 2 * i] = 0x00;
    bytes[off + 2 * i + 1] = 0x7e;  // f16 NaN
  }
  edgeq::test::write_file(m, bytes);
  auto r = run("perplexity " + q(m) + " -f " + q(kText) + " --chunks 1");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.err.find("non-finite"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tensor blk.3.ffn_up.weight: non-finite value nan at row 5"), std::string::npos) << r.err;
}

// C.9 / C.12: llama.cpp users' habits.
TEST_F(UserFiles, LlamaCppHabits) {
  auto u = run("frobnicate");
  EXPECT_EQ(u.code, 2);
  EXPECT_NE(u.err.find("unknown command 'frobnicate'"), std::string::npos) << u.err;

  TempDir t;
  // llama-quantize's SRC OUT TYPE [THREADS], and type numbers: the same bytes as the flag form.
  ASSERT_EQ(run("quantize " + q(kStories) + " " + q(t.file("p.gguf")) + " Q4_0 2").code, 0);
  ASSERT_EQ(run("quantize " + q(kStories) + " -o " + q(t.file("f.gguf")) + " --type Q4_0").code, 0);
  ASSERT_EQ(run("quantize " + q(kStories) + " -o " + q(t.file("n.gguf")) + " --type 2").code, 0);  // 2 = Q4_0
  EXPECT_EQ(read_file(t.file("p.gguf")), read_file(t.file("f.gguf")));
  EXPECT_EQ(read_file(t.file("n.gguf")), read_file(t.file("f.gguf")));
  auto n15 = run("quantize " + q(kF16) + " -o " + q(t.file("k.gguf")) + " --type 15 --json");
  ASSERT_EQ(n15.code, 0) << n15.err;
  EXPECT_NE(n15.out.find("\"type\": \"Q4_K_M\""), std::string::npos) << n15.out;
  auto bad = run("quantize " + q(kStories) + " -o " + q(t.file("x.gguf")) + " --type 99");
  EXPECT_EQ(bad.code, 2);  // a usage error (issue 24)
  EXPECT_NE(bad.err.find("unknown quantization type '99'"), std::string::npos) << bad.err;

  auto lt = run("quantize --list-types");
  ASSERT_EQ(lt.code, 0) << lt.err;
  EXPECT_NE(lt.out.find("Q4_K_M"), std::string::npos);
  EXPECT_NE(lt.out.find("  15  Q4_K"), std::string::npos) << lt.out;
  EXPECT_NE(lt.out.find("4.50"), std::string::npos) << lt.out;  // Q4_K's bits per weight
  EXPECT_NE(lt.out.find("IQ2_XXS    19  IQ2_XXS   2.06"), std::string::npos) << lt.out;
  // llama-quantize's refusal of the very low-bit mixes without an importance matrix, before any work
  auto noimat = run("quantize " + q(kStories) + " -o " + q(t.file("iq.gguf")) + " --type IQ2_XS");
  EXPECT_EQ(noimat.code, 2);  // a usage error: the flags alone ask for it
  EXPECT_NE(noimat.err.find("--type IQ2_XS: needs an importance matrix"), std::string::npos) << noimat.err;
  EXPECT_FALSE(fs::exists(t.file("iq.gguf")));

  // A .gguf with a bad magic is described as such, not as "expected a checkpoint directory".
  { std::ofstream(t.file("bad.gguf")) << "NOPE this is not a gguf file at all........................"; }
  auto bm = run("quantize " + q(t.file("bad.gguf")) + " -o " + q(t.file("y.gguf")) + " --type Q8_0");
  EXPECT_EQ(bm.code, 1);
  EXPECT_EQ(bm.err.find("expected a Hugging Face"), std::string::npos) << bm.err;
  EXPECT_NE(bm.err.find(t.file("bad.gguf")), std::string::npos) << bm.err;
  EXPECT_NE(bm.err.find("magic"), std::string::npos) << bm.err;
  EXPECT_FALSE(fs::exists(t.file("y.gguf")));
  EXPECT_TRUE(no_temp_files(t.path));
}

// The library guard itself: inputs are remembered by inode, a deleted input no longer blocks its number.
TEST(OutputGuard, InputsByInodeAndDeletedInputsForgotten) {
  TempDir t;
  const std::string a = t.file("a.bin"), hard = t.file("hard.bin");
  edgeq::test::write_file(a, {1, 2, 3});
  ASSERT_EQ(link(a.c_str(), hard.c_str()), 0);
  { edgeq::MappedFile m(a); }
  EXPECT_NO_THROW(edgeq::check_output_path(a));  // off by default: library users may rewrite what they read
  edgeq::protect_inputs(true);
  EXPECT_THROW(edgeq::check_output_path(a), edgeq::Error);
  EXPECT_THROW(edgeq::check_output_path(hard), edgeq::Error);  // same inode through another name
  EXPECT_THROW(edgeq::AtomicOutputFile o(hard), edgeq::Error);
  fs::remove(a);
  fs::remove(hard);
  EXPECT_NO_THROW(edgeq::check_output_path(a));
  {
    edgeq::AtomicOutputFile o(a);
    o.write("xy", 2);
    o.commit();
  }
  EXPECT_EQ(read_file(a).size(), 2u);
  edgeq::forget_input_file(a);
  EXPECT_NO_THROW(edgeq::check_output_path(a));
  edgeq::protect_inputs(false);
}

// B.8: quantize refuses a source whose output perplexity would reject (the runtime's model checks run on the
// output's header before any tensor is read).
TEST_F(UserFiles, QuantizeRunsTheRuntimeModelChecksFirst) {
  TempDir t;
  auto rewrite_with = [&](const std::string& dst, const std::string& key, edgeq::GgufValue value) {
    auto f = edgeq::GgufFile::open(kStories);
    edgeq::GgufWriter w(dst);
    for (auto& [k, v] : f.metadata()) w.set(k, v);
    w.set(key, std::move(value));
    for (auto& ti : f.tensors()) w.add_tensor(ti.name, ti.dims, ti.type);
    for (auto& ti : f.tensors()) {
      auto v = f.view(ti);
      w.write_tensor_data(v.data, v.nbytes);
    }
    w.finish();
  };
  size_t n_tokens = 0;
  {
    auto f = edgeq::GgufFile::open(kStories);
    n_tokens = f.find("tokenizer.ggml.tokens")->as_array().items.size();
  }
  const std::vector<std::pair<std::string, edgeq::GgufValue>> cases = {
      {"llama.attention.head_count", edgeq::GgufValue(uint32_t{0})},
      {"llama.block_count", edgeq::GgufValue(uint32_t{1000000})},
      {"llama.attention.head_count_kv", edgeq::GgufValue(uint32_t{3})},
      {"tokenizer.ggml.bos_token_id", edgeq::GgufValue(uint32_t{99999})},
      {"tokenizer.ggml.token_type", edgeq::GgufValue::int32_array(std::vector<int32_t>(n_tokens, 99))},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string bad = t.file("bad" + std::to_string(i) + ".gguf"), out = t.file("out.gguf");
    rewrite_with(bad, cases[i].first, cases[i].second);
    auto p = run("perplexity " + q(bad) + " -f " + q(kText) + " --chunks 1");
    EXPECT_EQ(p.code, 1) << cases[i].first << ": perplexity accepts it";
    auto r = run("quantize " + q(bad) + " -o " + q(out) + " --type Q8_0");
    EXPECT_EQ(r.code, 1) << cases[i].first << ": " << r.out;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(out)) << cases[i].first;
  }
  EXPECT_TRUE(no_temp_files(t.path));
}
