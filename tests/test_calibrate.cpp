// Calibration: llama-imatrix's statistics from text (equal to the golden tl-8m.imatrix), both imatrix file
// formats round-trip through the reader --imatrix uses, the data loader (plain, JSONL, zstd) and its
// one-line errors, and `edgeq calibrate` leaving no output on bad data.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "edgeq/calibrate/calibrate.h"
#include "edgeq/calibrate/data.h"
#include "edgeq/convert/convert.h"
#include "edgeq/base/error.h"
#include "edgeq/quant/imatrix.h"
#include "edgeq/runtime/tokenizer.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using edgeq::test::shared;
using edgeq::test::TempDir;
namespace cal = edgeq::calibrate;

namespace {

// {"text": "hello world"}\n{"text": "second line"}\n, compressed by the zstd program.
const std::vector<uint8_t> kJsonlZst = {
    0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x68, 0x6d, 0x01, 0x00, 0x64, 0x02, 0x7b, 0x22, 0x74, 0x65, 0x78, 0x74, 0x22, 0x3a,
    0x20, 0x22, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x77, 0x6f, 0x72, 0x6c, 0x64, 0x22, 0x7d, 0x0a, 0x73, 0x65, 0x63,
    0x6f, 0x6e, 0x64, 0x20, 0x6c, 0x69, 0x6e, 0x65, 0x22, 0x7d, 0x0a, 0x01, 0x00, 0xec, 0x36, 0xc7, 0x46, 0x4c, 0xf4,
    0xcd};

void write(const std::string& path, const std::string& s) {
  std::ofstream f(path, std::ios::binary);
  f << s;
}

std::string error_of(const std::vector<std::string>& files) {
  try {
    cal::load_calibration_text(files);
  } catch (const edgeq::Error& e) {
    return e.what();
  }
  return "";
}

// tl-8m converted to F32 once per test program (the model llama-imatrix ran for the golden).
const std::string& tl8m_f32() {
  static TempDir dir;
  static std::string path;
  if (path.empty()) {
    path = dir.file("tl-8m-f32.gguf");
    edgeq::convert::ConvertOptions co;
    co.outtype = "f32";
    edgeq::convert::convert_to_gguf(edgeq::convert::plan_conversion(shared("models/tl-8m"), co), path, "f32", 2);
  }
  return path;
}

}  // namespace

TEST(CalibrationData, PlainJsonlZstdConcatenate) {
  TempDir d;
  write(d.file("a.txt"), "first file");
  write(d.file("b.jsonl"), "{\"text\": \"one\"}\n\n{\"text\": \"two\", \"id\": 3}\n");
  edgeq::test::write_file(d.file("c.jsonl.zst"), kJsonlZst);
  edgeq::test::write_file(d.file("d.txt.zst"), kJsonlZst);  // zstd, but not JSONL by name: kept as text
  EXPECT_EQ(cal::load_calibration_text({d.file("a.txt")}), "first file");
  EXPECT_EQ(cal::load_calibration_text({d.file("b.jsonl")}), "one\ntwo");
  EXPECT_EQ(cal::load_calibration_text({d.file("c.jsonl.zst")}), "hello world\nsecond line");
  EXPECT_EQ(cal::load_calibration_text({d.file("a.txt"), d.file("b.jsonl"), d.file("c.jsonl.zst")}),
            "first file\none\ntwo\nhello world\nsecond line");
  EXPECT_EQ(cal::load_calibration_text({d.file("d.txt.zst")}),
            "{\"text\": \"hello world\"}\n{\"text\": \"second line\"}\n");
}

TEST(CalibrationData, BadDataIsOneLineError) {
  TempDir d;
  write(d.file("empty.txt"), "");
  write(d.file("bad.jsonl"), "{\"text\": \"ok\"}\n{\"text\": \"unterminated\n");
  write(d.file("notext.jsonl"), "{\"content\": \"x\"}\n");
  write(d.file("blank.jsonl"), "\n  \n");
  auto corrupt = kJsonlZst;
  corrupt[20] ^= 0xff;
  corrupt[21] ^= 0xff;
  corrupt[8] ^= 0x5a;
  edgeq::test::write_file(d.file("corrupt.txt.zst"), corrupt);
  edgeq::test::write_file(d.file("trunc.txt.zst"), std::vector<uint8_t>(kJsonlZst.begin(), kJsonlZst.begin() + 30));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"empty.txt", "empty file"},          {"bad.jsonl", "line 2: invalid JSON"},
      {"notext.jsonl", "string field"},     {"blank.jsonl", "no text"},
      {"corrupt.txt.zst", "zstd"},          {"trunc.txt.zst", "zstd"},
      {"missing.txt", "missing.txt"}};
  for (const auto& [file, what] : cases) {
    const std::string e = error_of({d.file(file)});
    EXPECT_NE(e.find(file), std::string::npos) << file << ": " << e;
    EXPECT_NE(e.find(what), std::string::npos) << file << ": " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

// The importance matrix equals llama-imatrix b4748's (golden/tl-8m.imatrix: calib.txt, n_ctx 256, 217 chunks)
// to float noise: same tensors, same call counts, every column within 1e-3 relative. Both writers round-trip
// through the reader `quantize --imatrix` uses.
TEST(Calibrate, EqualsLlamaImatrixGolden) {
  const auto model = edgeq::runtime::Model::load(tl8m_f32());
  const auto tok = edgeq::Tokenizer::from_gguf(model.gguf());
  const auto tokens = tok.tokenize(edgeq::read_text_file(shared("text/calib.txt")), true, false);
  cal::CalibrationOptions co;
  co.n_ctx = 256;
  co.n_threads = 2;
  if (EDGEQ_SANITIZED) co.max_chunks = 3;  // the full run is for the normal build
  int calls = 0;
  co.progress = [&](const cal::CalibrationProgress& p) { calls = p.chunk; };
  auto s = cal::calibrate(model, tokens, tok.add_bos(), tok.bos(), co);
  s.datasets = {"calib.txt"};
  const int expect_chunks = EDGEQ_SANITIZED ? 3 : 217;
  EXPECT_EQ(calls, expect_chunks);
  EXPECT_EQ(s.n_chunks, expect_chunks);
  TempDir d;
  cal::write_imatrix(s, d.file("out.dat"));
  cal::write_imatrix(s, d.file("out.gguf"));
  const auto golden = edgeq::quant::ImatrixFile::open(shared("golden/tl-8m.imatrix"));
  const auto dat = edgeq::quant::ImatrixFile::open(d.file("out.dat"));
  const auto gg = edgeq::quant::ImatrixFile::open(d.file("out.gguf"));
  EXPECT_EQ(dat.last_call(), expect_chunks);
  EXPECT_EQ(gg.last_call(), expect_chunks);
  EXPECT_EQ(dat.dataset(), "calib.txt");
  EXPECT_EQ(gg.dataset(), "calib.txt");
  ASSERT_EQ(dat.entries().size(), golden.entries().size());
  ASSERT_EQ(gg.entries().size(), golden.entries().size());
  double worst = 0;
  for (const auto& g : golden.entries()) {
    const auto* a = dat.find(g.name);
    const auto* b = gg.find(g.name);
    ASSERT_TRUE(a && b) << g.name;
    ASSERT_EQ(a->values.size(), g.values.size()) << g.name;
    ASSERT_EQ(b->values.size(), g.values.size()) << g.name;
    if (!EDGEQ_SANITIZED) {
      EXPECT_EQ(a->ncall, g.ncall) << g.name;
    }
    for (size_t j = 0; j < g.values.size(); ++j) {
      // The two formats agree to float rounding whatever the chunk count.
      EXPECT_NEAR(a->values[j], b->values[j], 1e-5 * std::fabs(b->values[j])) << g.name << " " << j;
      if (!EDGEQ_SANITIZED) worst = std::max(worst, double(std::fabs(a->values[j] - g.values[j]) / std::fabs(g.values[j])));
    }
  }
  if (!EDGEQ_SANITIZED) {
    EXPECT_LT(worst, 1e-3);
  }
  // Extra statistics survive the GGUF round trip.
  const auto back = cal::read_calibration_stats(d.file("out.gguf"));
  ASSERT_EQ(back.inputs.size(), s.inputs.size());
  for (size_t i = 0; i < s.inputs.size(); ++i) {
    EXPECT_EQ(back.inputs[i].layer, s.inputs[i].layer);
    EXPECT_EQ(back.inputs[i].site, s.inputs[i].site);
    EXPECT_EQ(back.inputs[i].rows, s.inputs[i].rows);
    EXPECT_EQ(back.inputs[i].rows, expect_chunks * 256);
    for (int64_t j = 0; j < s.inputs[i].width; ++j)
      EXPECT_NEAR(back.inputs[i].sum_abs[j], s.inputs[i].sum_abs[j], 1e-6 * s.inputs[i].sum_abs[j]);
  }
}

TEST(Calibrate, ShortTextIsRejectedBeforeWork) {
  const auto model = edgeq::runtime::Model::load(shared("golden/tl-8m-Q4_K_M.gguf"));
  const auto tok = edgeq::Tokenizer::from_gguf(model.gguf());
  const auto tokens = tok.tokenize("Once upon a time there was a cat.", true, false);
  cal::CalibrationOptions co;
  bool ran = false;
  co.progress = [&](const cal::CalibrationProgress&) { ran = true; };
  try {
    cal::calibrate(model, tokens, tok.add_bos(), tok.bos(), co);
    FAIL() << "no error";
  } catch (const edgeq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("at least 512"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(ran);
}

// --hessian: XᵀX is symmetric, its diagonal equals the per-column sum of x².
TEST(Calibrate, HessianDiagonalIsSumOfSquares) {
  const auto model = edgeq::runtime::Model::load(shared("golden/tl-8m-Q8_0.gguf"));
  const auto tok = edgeq::Tokenizer::from_gguf(model.gguf());
  const auto tokens = tok.tokenize(edgeq::read_text_file(shared("text/calib.txt")), true, false);
  cal::CalibrationOptions co;
  co.n_ctx = 64;
  co.max_chunks = 2;
  co.n_threads = 2;
  co.hessian = true;
  const auto s = cal::calibrate(model, tokens, tok.add_bos(), tok.bos(), co);
  ASSERT_EQ(s.inputs.size(), 32u);
  for (const auto& in : s.inputs) {
    ASSERT_EQ(in.hessian.size(), static_cast<size_t>(in.width * in.width));
    EXPECT_EQ(in.ncall, 2);
    EXPECT_EQ(in.rows, 128);
    for (int64_t i = 0; i < in.width; ++i) {
      EXPECT_NEAR(in.hessian[i * in.width + i], in.sum_x2[i], 1e-4 * in.sum_x2[i] + 1e-6);
      for (int64_t j = 0; j < i; j += 37) EXPECT_EQ(in.hessian[i * in.width + j], in.hessian[j * in.width + i]);
    }
  }
}

// --hessian streamed: calibrate_to_file writes each layer's statistics as soon as the layer is complete
// (on_layer, in layer order, one layer's Hessians in memory) and the file reads back equal to an in-memory run,
// Hessians included (read on demand from the file).
TEST(Calibrate, StreamedPerLayerStatisticsRoundTrip) {
  const auto model = edgeq::runtime::Model::load(shared("golden/tl-8m-Q8_0.gguf"));
  const auto tok = edgeq::Tokenizer::from_gguf(model.gguf());
  const auto tokens = tok.tokenize(edgeq::read_text_file(shared("text/calib.txt")), true, false);
  cal::CalibrationOptions co;
  co.n_ctx = 64;
  co.max_chunks = 3;
  co.n_threads = 2;
  co.hessian = true;
  co.datasets = {"calib.txt"};
  const auto mem = cal::calibrate(model, tokens, tok.add_bos(), tok.bos(), co);
  // on_layer sees complete layers in order, and holds the only Hessians in memory.
  std::vector<size_t> firsts;
  auto probe = co;
  probe.on_layer = [&](const cal::CalibrationStats& s, size_t first) {
    firsts.push_back(first);
    for (size_t i = 0; i < s.inputs.size(); ++i)
      EXPECT_EQ(s.inputs[i].hessian.empty(), i < first || i >= first + 4) << "input " << i << " at layer start " << first;
  };
  cal::calibrate(model, tokens, tok.add_bos(), tok.bos(), probe);
  EXPECT_EQ(firsts, (std::vector<size_t>{0, 4, 8, 12, 16, 20, 24, 28}));

  TempDir d;
  const auto streamed = cal::calibrate_to_file(model, tokens, tok.add_bos(), tok.bos(), co, d.file("s.gguf"));
  for (const auto& in : streamed.inputs) EXPECT_TRUE(in.hessian.empty());
  const auto back = cal::read_calibration_stats(d.file("s.gguf"));
  EXPECT_EQ(back.n_chunks, 3);
  EXPECT_EQ(back.n_ctx, 64);
  EXPECT_EQ(back.datasets, std::vector<std::string>{"calib.txt"});
  ASSERT_EQ(back.inputs.size(), mem.inputs.size());
  for (size_t i = 0; i < mem.inputs.size(); ++i) {
    const auto& a = mem.inputs[i];
    const auto& b = back.inputs[i];
    EXPECT_EQ(b.layer, a.layer);
    EXPECT_EQ(b.site, a.site);
    EXPECT_EQ(b.rows, a.rows);
    ASSERT_EQ(b.width, a.width);
    EXPECT_TRUE(b.hessian.empty());  // left in the file until asked for
    ASSERT_TRUE(b.has_hessian());
    for (int64_t j = 0; j < a.width; ++j) {
      EXPECT_NEAR(b.sum_x2[j], a.sum_x2[j], 1e-6 * a.sum_x2[j]);
      EXPECT_NEAR(b.sum_abs[j], a.sum_abs[j], 1e-6 * a.sum_abs[j]);
    }
    for (bool odd : {false, true}) {
      const auto hb = b.load_hessian(odd);
      const auto& ha = odd ? a.hessian_odd : a.hessian;
      ASSERT_EQ(hb.size(), ha.size());
      for (size_t k = 0; k < ha.size(); k += 7) EXPECT_NEAR(hb[k], ha[k], 1e-6 * std::fabs(ha[k]) + 1e-9) << i << " " << k;
    }
  }
  // The odd-chunk Hessian is a real part of the whole: chunk 1 of 3 holds about a third of the rows.
  const auto& h0 = mem.inputs[0];
  EXPECT_GT(h0.hessian[0], h0.hessian_odd[0]);
  EXPECT_GT(h0.hessian_odd[0], 0.0);
}

namespace {
struct Run {
  int code = -1;
  std::string err;
};
Run run_cli(const std::string& args) {
  const std::string exe = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
  const std::string errf = (fs::temp_directory_path() / ("edgeq-calcli-" + std::to_string(getpid()) + ".err")).string();
  Run r;
  const int st = std::system(("EDGEQ_PROGRESS=0 " + exe + " " + args + " >/dev/null 2>" + errf).c_str());
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream f(errf);
  r.err.assign(std::istreambuf_iterator<char>(f), {});
  std::remove(errf.c_str());
  return r;
}
}  // namespace

TEST(CalibrateCli, BadDataGivesOneLineErrorAndNoOutput) {
  if (!fs::exists(std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq")) GTEST_SKIP() << "edgeq not built";
  TempDir d;
  write(d.file("empty.txt"), "");
  write(d.file("bad.jsonl"), "not json\n");
  write(d.file("short.txt"), "Once upon a time.");
  auto corrupt = kJsonlZst;
  corrupt[8] ^= 0x5a;
  edgeq::test::write_file(d.file("corrupt.zst"), corrupt);
  const std::string model = shared("golden/tl-8m-Q4_K_M.gguf");
  for (const std::string f : {"empty.txt", "bad.jsonl", "corrupt.zst", "short.txt"}) {
    for (const std::string out : {"o.dat", "o.gguf"}) {
      const auto r = run_cli("calibrate " + model + " --data " + d.file(f) + " -o " + d.file(out));
      EXPECT_EQ(r.code, 1) << f << ": " << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      EXPECT_EQ(r.err.rfind("edgeq: error: ", 0), 0u) << r.err;
    }
  }
  size_t n = 0;
  for (auto& e : fs::directory_iterator(d.path)) n += e.path().filename().string().rfind("o.", 0) == 0;
  EXPECT_EQ(n, 0u);  // no output, no temp file
  // A good run writes the file.
  const auto ok = run_cli("calibrate " + model + " --data " + shared("text/calib.txt") + " -o " + d.file("o.gguf") +
                          " --ctx 64 --chunks 2 -t 2");
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(edgeq::quant::ImatrixFile::open(d.file("o.gguf")).entries().size(), 56u);
}

TEST(CalibrateCli, QuantizeMethodOptionsAreCheckedFirst) {
  if (!fs::exists(std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq")) GTEST_SKIP() << "edgeq not built";
  TempDir d;
  const std::string src = shared("golden/tl-8m-F16.gguf"), out = d.file("q.gguf");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--method foo --data " + shared("text/calib.txt"), "--method foo"},
      {"--method gptq", "needs calibration"},
      {"--method awq --imatrix " + shared("golden/tl-8m.imatrix"), "--calib or --data"},
      {"--calib " + shared("golden/tl-8m.imatrix") + " --data " + shared("text/calib.txt"), "exclusive"},
      {"--method gptq --calib " + shared("golden/tl-8m.imatrix"), "tl-8m.imatrix"},
      {"--act-order --data " + shared("text/calib.txt"), "--act-order"},
      {"--method awq --act-order --data " + shared("text/calib.txt"), "gptq or auto (not awq)"},
      {"--method rtn --act-order", "gptq or auto (not rtn)"},
  };
  for (const auto& [args, what] : cases) {
    const auto r = run_cli("quantize " + src + " -o " + out + " -t Q4_K_M " + args);
    // flag values and combinations are usage errors (exit 2); a statistics file that is not one is a bad file (1)
    EXPECT_EQ(r.code, what == "tl-8m.imatrix" ? 1 : 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
}
