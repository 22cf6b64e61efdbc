// `edgeq inspect` must describe every golden file correctly: tensor count, per-tensor types (checked against
// mixes.json, written by llama.cpp's tooling), sizes and bits per weight consistent with what the file holds.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "edgeq/formats/gguf.h"
#include "edgeq/formats/inspect_model.h"
#include "edgeq/quant/inspect.h"
#include "test_helpers.h"

using namespace edgeq;
using edgeq::test::shared;

TEST(Inspect, EveryGoldenAgreesWithMixesJson) {
  auto text = edgeq::test::read_file(shared("golden/mixes.json"));
  auto mixes = nlohmann::json::parse(text.begin(), text.end())["files"];
  ASSERT_GE(mixes.size(), 21u);
  for (auto& [fname, m] : mixes.items()) {
    SCOPED_TRACE(fname);
    auto r = inspect_path(shared("golden/" + fname));
    EXPECT_EQ(r["format"], "gguf");
    EXPECT_EQ(r["file_size"].get<uint64_t>(), m["bytes"].get<uint64_t>());
    auto& tt = m["tensor_types"];
    ASSERT_EQ(r["tensor_count"].get<size_t>(), tt.size());
    std::map<std::string, std::string> want;
    for (auto& [n, t] : tt.items()) want[n] = t.get<std::string>();
    uint64_t params = 0, bytes = 0;
    std::map<std::string, uint64_t> hist;
    for (auto& t : r["tensors"]) {
      std::string name = t["name"];
      ASSERT_TRUE(want.count(name)) << name;
      EXPECT_EQ(t["type"].get<std::string>(), want[name]) << name;
      uint64_t n = t["elements"], b = t["bytes"];
      EXPECT_NEAR(t["bits_per_weight"].get<double>(), 8.0 * b / n, 1e-9);
      params += n;
      bytes += b;
      hist[t["type"]]++;
    }
    EXPECT_EQ(r["parameters"].get<uint64_t>(), params);
    EXPECT_EQ(r["tensor_bytes"].get<uint64_t>(), bytes);
    EXPECT_NEAR(r["bits_per_weight"].get<double>(), 8.0 * bytes / params, 1e-9);
    for (auto& [t, h] : r["type_histogram"].items()) EXPECT_EQ(h["tensors"].get<uint64_t>(), hist[t]) << t;
    // general.file_type as the metadata reports it
    for (auto& kv : r["metadata"])
      if (kv["key"] == "general.file_type") {
        EXPECT_EQ(kv["value"].get<int>(), m["file_type"].get<int>());
      }
    if (fname.find("tl-8m") == 0) {
      EXPECT_EQ(params, 8392960u);
    }
  }
}

TEST(Inspect, KnownBitsPerWeight) {
  // Q4_K is 4.5 bits per weight, Q6_K 6.5625, Q8_0 8.5: exact from the block layouts.
  auto r = inspect_path(shared("golden/tl-8m-Q4_K_M.gguf"));
  for (auto& t : r["tensors"]) {
    if (t["type"] == "Q4_K") {
      EXPECT_DOUBLE_EQ(t["bits_per_weight"].get<double>(), 4.5);
    }
    if (t["type"] == "Q6_K") {
      EXPECT_DOUBLE_EQ(t["bits_per_weight"].get<double>(), 6.5625);
    }
  }
  auto q8 = inspect_path(shared("golden/tl-8m-Q8_0.gguf"));
  for (auto& t : q8["tensors"])
    if (t["type"] == "Q8_0") {
      EXPECT_DOUBLE_EQ(t["bits_per_weight"].get<double>(), 8.5);
    }
}

TEST(Inspect, HfCheckpointAndShards) {
  auto r = inspect_path(shared("models/tl-8m"));
  EXPECT_EQ(r["format"], "hf-checkpoint");
  EXPECT_EQ(r["config"]["architecture"], "LlamaForCausalLM");
  EXPECT_EQ(r["config"]["num_hidden_layers"], 8);
  EXPECT_EQ(r["parameters"].get<uint64_t>(), 8392960u);
  EXPECT_DOUBLE_EQ(r["bits_per_weight"].get<double>(), 16.0);
  auto s = inspect_path(shared("models/stories260K-sharded"));
  EXPECT_EQ(s["files"].size(), 3u);
  auto one = inspect_path(shared("models/stories260K"));
  EXPECT_EQ(s["parameters"], one["parameters"]);
  EXPECT_EQ(s["tensor_count"], one["tensor_count"]);
}

namespace {
struct Run {
  int code;
  std::string out, err;
};
Run run_cli(const std::string& args) {
  edgeq::test::TempDir tmp;
  std::string cmd = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq " + args + " >" + tmp.file("o") + " 2>" + tmp.file("e");
  int rc = std::system(cmd.c_str());
  auto o = edgeq::test::read_file(tmp.file("o")), e = edgeq::test::read_file(tmp.file("e"));
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, std::string(o.begin(), o.end()), std::string(e.begin(), e.end())};
}
}  // namespace

TEST(InspectCli, JsonAndErrors) {
  if (!std::filesystem::exists(std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq")) GTEST_SKIP() << "edgeq binary not built";
  auto ok = run_cli("inspect --json " + shared("golden/tl-8m-Q2_K.gguf"));
  ASSERT_EQ(ok.code, 0) << ok.err;
  auto j = nlohmann::json::parse(ok.out);
  EXPECT_EQ(j["tensor_count"], 75);

  edgeq::test::TempDir tmp;
  auto bytes = edgeq::test::read_file(shared("golden/tl-8m-Q2_K.gguf"));
  bytes.resize(3000);
  edgeq::test::write_file(tmp.file("cut.gguf"), bytes);
  auto bad = run_cli("inspect " + tmp.file("cut.gguf"));
  EXPECT_EQ(bad.code, 1);
  EXPECT_TRUE(bad.out.empty());
  EXPECT_EQ(bad.err.rfind("edgeq: error: " + tmp.file("cut.gguf") + ":", 0), 0u) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << "one line: " << bad.err;

  auto missing = run_cli("inspect /nonexistent/x.gguf");
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("/nonexistent/x.gguf"), std::string::npos);
  auto usage = run_cli("inspect");
  EXPECT_EQ(usage.code, 2);
  auto help = run_cli("inspect --help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("--json"), std::string::npos);
}

// ONNX: the tl-8m torch export, by its model.onnx and by its directory (convert's rule: model.onnx and no
// safetensors). Types and shapes are checked against initializers.txt, written when the export was made.
TEST(Inspect, OnnxExportListsEveryInitializer) {
  const std::string dir = shared("models/tl-8m-onnx-ext");
  std::map<std::string, std::pair<std::string, std::string>> want;  // name -> (dtype, "[a, b]")
  {
    std::istringstream in(edgeq::test::read_text(dir + "/initializers.txt"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      const size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
      want[line.substr(0, t1)] = {line.substr(t1 + 1, t2 - t1 - 1), line.substr(t2 + 1)};
    }
  }
  ASSERT_EQ(want.size(), 75u);
  for (const std::string& p : {dir + "/model.onnx", dir}) {
    SCOPED_TRACE(p);
    auto r = inspect_path(p);
    EXPECT_EQ(r["format"], "onnx");
    EXPECT_EQ(r["opset_version"], 17);
    EXPECT_GT(r["nodes"].get<uint64_t>(), 100u);
    ASSERT_EQ(r["tensor_count"].get<size_t>(), want.size());
    for (auto& t : r["tensors"]) {
      const std::string name = t["name"];
      ASSERT_TRUE(want.count(name)) << name;
      EXPECT_EQ(t["type"].get<std::string>(), want[name].first) << name;
      std::string shape = "[";
      for (size_t i = 0; i < t["shape"].size(); ++i) shape += (i ? ", " : "") + std::to_string(t["shape"][i].get<uint64_t>());
      EXPECT_EQ(shape + "]", want[name].second) << name;
      EXPECT_EQ(t["storage"], "external") << name;
      EXPECT_EQ(t["file"], "model.onnx.data") << name;
    }
    EXPECT_EQ(r["parameters"].get<uint64_t>(), 8392960u);  // the HF checkpoint's count
    EXPECT_EQ(r["tensor_bytes"].get<uint64_t>(), std::filesystem::file_size(dir + "/model.onnx.data"));
    EXPECT_DOUBLE_EQ(r["bits_per_weight"].get<double>(), 32.0);
    EXPECT_EQ(r["file_size"].get<uint64_t>(), std::filesystem::file_size(dir + "/model.onnx") +
                                                   std::filesystem::file_size(dir + "/model.onnx.data"));
    EXPECT_EQ(r["files"].size(), 2u);
  }
  auto d = inspect_path(dir);
  EXPECT_EQ(d["config"]["architecture"], "LlamaForCausalLM");
  EXPECT_NE(std::find(d["tokenizer_files"].begin(), d["tokenizer_files"].end(), "tokenizer.model"), d["tokenizer_files"].end());
  auto text = render_inspection(d, 0);
  EXPECT_NE(text.find("ONNX, IR version"), std::string::npos) << text;
  EXPECT_NE(text.find("onnx::MatMul_1951"), std::string::npos) << text;
}

// imatrix: the golden tl-8m.imatrix, checked against the bytes read here directly (int32 count; per entry int32
// name length, name, int32 ncall, int32 nval, float sums[nval]; int32 chunks, int32 length, dataset).
TEST(Inspect, ImatrixGolden) {
  const std::string path = shared("golden/tl-8m.imatrix");
  const auto b = edgeq::test::read_file(path);
  size_t o = 0;
  auto i32 = [&] {
    int32_t v;
    std::memcpy(&v, b.data() + o, 4);
    o += 4;
    return v;
  };
  struct E {
    std::string name;
    int32_t ncall, nval;
    double mean;
    float mx;
  };
  std::vector<E> es(static_cast<size_t>(i32()));
  for (auto& e : es) {
    const int32_t len = i32();
    e.name.assign(reinterpret_cast<const char*>(b.data() + o), static_cast<size_t>(len));
    o += static_cast<size_t>(len);
    e.ncall = i32();
    e.nval = i32();
    double s = 0;
    e.mx = 0;
    for (int32_t j = 0; j < e.nval; ++j) {
      float v;
      std::memcpy(&v, b.data() + o, 4);
      o += 4;
      s += v / static_cast<float>(e.ncall);
      e.mx = std::max(e.mx, v / static_cast<float>(e.ncall));
    }
    e.mean = s / e.nval;
  }
  const int32_t chunks = i32(), dlen = i32();
  const std::string dataset(reinterpret_cast<const char*>(b.data() + o), static_cast<size_t>(dlen));
  ASSERT_EQ(o + static_cast<size_t>(dlen), b.size());
  ASSERT_EQ(es.size(), 56u);  // 8 layers x 7 matrices; llama-imatrix skips output.weight

  auto r = edgeq::quant::inspect_path(path);
  EXPECT_EQ(r["format"], "imatrix");
  EXPECT_EQ(r["file_size"].get<uint64_t>(), b.size());
  EXPECT_EQ(r["chunks"].get<int32_t>(), chunks);
  EXPECT_EQ(r["dataset"].get<std::string>(), dataset);
  ASSERT_EQ(r["entry_count"].get<size_t>(), es.size());
  uint64_t values = 0;
  for (size_t i = 0; i < es.size(); ++i) {
    const auto& e = r["entries"][i];
    EXPECT_EQ(e["name"].get<std::string>(), es[i].name);
    EXPECT_EQ(e["ncall"].get<int32_t>(), es[i].ncall);
    EXPECT_EQ(e["columns"].get<int32_t>(), es[i].nval);
    EXPECT_NEAR(e["mean"].get<double>(), es[i].mean, 1e-6 * es[i].mean);
    EXPECT_EQ(e["max"].get<float>(), es[i].mx);
    values += static_cast<uint64_t>(es[i].nval);
  }
  EXPECT_EQ(r["values"].get<uint64_t>(), values);
  const auto text = edgeq::quant::render_inspection(r, 3);
  EXPECT_NE(text.find("56 entries, " + std::to_string(chunks) + " chunks"), std::string::npos) << text;
  EXPECT_NE(text.find(es[0].name), std::string::npos) << text;
  EXPECT_NE(text.find("... 53 more"), std::string::npos) << text;
  // Models still reach formats' report through the same entry point.
  EXPECT_EQ(edgeq::quant::inspect_path(shared("golden/tl-8m-Q2_K.gguf"))["format"], "gguf");
}

TEST(InspectCli, OnnxAndImatrix) {
  if (!std::filesystem::exists(std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq")) GTEST_SKIP() << "edgeq binary not built";
  auto on = run_cli("inspect " + shared("models/tl-8m-onnx-ext"));
  ASSERT_EQ(on.code, 0) << on.err;
  EXPECT_NE(on.out.find("ONNX, IR version"), std::string::npos) << on.out;
  EXPECT_NE(on.out.find("LlamaForCausalLM"), std::string::npos) << on.out;
  auto oj = run_cli("inspect --json " + shared("models/tl-8m-onnx-ext/model.onnx"));
  ASSERT_EQ(oj.code, 0) << oj.err;
  EXPECT_EQ(nlohmann::json::parse(oj.out)["tensor_count"], 75);

  auto im = run_cli("inspect --all " + shared("golden/tl-8m.imatrix"));
  ASSERT_EQ(im.code, 0) << im.err;
  EXPECT_NE(im.out.find("blk.0.ffn_down.weight"), std::string::npos) << im.out;
  auto ij = run_cli("inspect --json " + shared("golden/tl-8m.imatrix"));
  ASSERT_EQ(ij.code, 0) << ij.err;
  EXPECT_EQ(nlohmann::json::parse(ij.out)["entry_count"], 56);

  // A truncated imatrix and an unrecognised file: one line naming the file, exit 1.
  edgeq::test::TempDir tmp;
  auto bytes = edgeq::test::read_file(shared("golden/tl-8m.imatrix"));
  bytes.resize(5000);
  edgeq::test::write_file(tmp.file("cut.imatrix"), bytes);
  edgeq::test::write_file(tmp.file("notes.txt"), {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '\n'});
  for (const std::string& f : {tmp.file("cut.imatrix"), tmp.file("notes.txt")}) {
    auto bad = run_cli("inspect " + f);
    EXPECT_EQ(bad.code, 1) << f;
    EXPECT_TRUE(bad.out.empty()) << f;
    EXPECT_EQ(bad.err.rfind("edgeq: error: " + f + ":", 0), 0u) << bad.err;
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  }
}
