// edgeq quantize of the fixture architectures (llama.cpp's F16 files in ../shared/golden/arch): every tensor's type
// and the file size equal llama-quantize's (arch.json) for Q8_0, Q4_K_M, Q3_K_M and Q2_K, Mixtral's 3-D expert
// tensors included (one 2-D matrix per expert); an architecture the runtime does not evaluate is still quantized,
// with a note; a model check failure names the input file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/quant/policy.h"
#include "edgeq/quant/quantize.h"
#include "test_helpers.h"

namespace {

namespace fs = std::filesystem;
using namespace edgeq;
using namespace edgeq::test;

const nlohmann::json& arch_json() {
  static const nlohmann::json j = nlohmann::json::parse(std::ifstream(shared("golden/arch/arch.json")));
  return j;
}

TEST(ArchQuantize, TypesAndSizesEqualLlamaQuantize) {
  TempDir td;
  // Every type for mixtral (the expert rules), two for the others (all 16 pairs were checked by hand: equal); one
  // under the sanitizers.
  for (const char* n : {"gemma", "gemma2", "phi3", "mixtral"}) {
    const bool all = std::string(n) == "mixtral";
    const std::vector<const char*> types = EDGEQ_SANITIZED ? std::vector<const char*>{"Q4_K_M"}
                                           : all ? std::vector<const char*>{"Q8_0", "Q4_K_M", "Q3_K_M", "Q2_K"}
                                                 : std::vector<const char*>{"Q4_K_M", "Q2_K"};
    const quant::QuantizeSource src = quant::open_gguf_source(shared(std::string("golden/arch/") + n + "-F16.gguf"));
    for (const char* t : types) {
      SCOPED_TRACE(std::string(n) + " " + t);
      const auto& want = arch_json()[n]["files"][t];
      quant::QuantizeOptions o;
      o.policy.ftype = quant::parse_file_type(t);
      o.threads = 2;
      o.record_method = false;  // llama-quantize's keys only
      const std::string out = td.file(std::string(n) + "-" + t + ".gguf");
      const auto r = quant::quantize_model(src, out, o);
      EXPECT_EQ(r.file_size, want["size"].get<uint64_t>());
      const GgufFile g = GgufFile::open(out);
      EXPECT_EQ(g.tensors().size(), want["tensor_types"].size());
      for (const auto& ti : g.tensors())
        EXPECT_EQ(ggml_type_name(ti.type), want["tensor_types"].value(ti.name, std::string("(absent)"))) << ti.name;
    }
  }
}

// Copies a GGUF, renaming the architecture (its key prefix too) and leaving out the keys drop names.
void rewrite_gguf(const std::string& from, const std::string& to, const std::string& new_arch,
                  const std::vector<std::string>& drop = {}) {
  const GgufFile f = GgufFile::open(from);
  const std::string old_arch = f.architecture();
  GgufWriter w(to);
  for (const auto& [k, v] : f.metadata()) {
    if (std::find(drop.begin(), drop.end(), k) != drop.end()) continue;
    if (k == "general.architecture") w.set(k, GgufValue(new_arch));
    else if (k.rfind(old_arch + ".", 0) == 0) w.set(new_arch + k.substr(old_arch.size()), v);
    else w.set(k, v);
  }
  for (const auto& t : f.tensors()) w.add_tensor(t.name, t.dims, t.type);
  for (const auto& t : f.tensors()) {
    const TensorView v = f.view(t);
    w.write_tensor_data(v.data, v.nbytes);
  }
  w.finish();
}

TEST(ArchQuantize, ArchitectureTheRuntimeDoesNotEvaluateIsQuantizedWithANote) {
  TempDir td;
  const std::string in = td.file("sc2.gguf");
  rewrite_gguf(shared("golden/arch/gemma-F16.gguf"), in, "starcoder2");  // not in the table
  const std::string exe = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
  const auto r = run_shell(exe + " quantize " + in + " -o " + td.file("q.gguf") + " --type Q4_K_M -q");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("architecture 'starcoder2'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("perplexity cannot check"), std::string::npos) << r.err;
  const GgufFile q = GgufFile::open(td.file("q.gguf"));
  EXPECT_EQ(q.architecture(), "starcoder2");
  EXPECT_EQ(q.find_tensor("blk.1.ffn_down.weight")->type, GgmlType::Q6_K);  // the mix's rules still apply
  const auto p = run_shell(exe + " perplexity " + td.file("q.gguf") + " -f " + shared("text/tinystories-heldout.txt"));
  EXPECT_EQ(p.code, 1);
  EXPECT_NE(p.err.find("unsupported architecture 'starcoder2'"), std::string::npos) << p.err;
}

TEST(ArchQuantize, ModelCheckErrorNamesTheInput) {
  TempDir td;
  // Mixtral without llama.expert_count reads as a dense llama model, whose ffn_gate is missing.
  const std::string in = td.file("mx-no-experts.gguf");
  rewrite_gguf(shared("golden/arch/mixtral-F16.gguf"), in, "llama", {"llama.expert_count", "llama.expert_used_count"});
  const std::string exe = std::string(EDGEQ_BINARY_DIR) + "/cli/edgeq";
  const auto r = run_shell(exe + " quantize " + in + " -o " + td.file("mx.gguf") + " --type Q4_K_M -q");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(in + ": tensor blk.0.ffn_gate.weight: missing"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(td.file("mx.gguf")), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(td.file("mx.gguf")));
}

}  // namespace
