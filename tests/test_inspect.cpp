// `edgeq inspect` must describe every golden file correctly: tensor count, per-tensor types (checked against
// mixes.json, written by llama.cpp's tooling), sizes and bits per weight consistent with what the file holds.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "edgeq/formats/gguf.h"
#include "edgeq/formats/inspect.h"
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
