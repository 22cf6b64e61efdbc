// Quantization mixes against llama.cpp b4748's llama-quantize: per-tensor types, tensor order and data sizes of
// every golden file in ../shared/golden/mixes.json, the shape fallbacks on stories260K, and the user overrides.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <unistd.h>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/quant/policy.h"

namespace {

using edgeq::GgmlType;
using edgeq::GgufFile;
using namespace edgeq::quant;

const std::string kGolden = std::string(EDGEQ_SHARED_DIR) + "/golden";

struct Model {
  ModelParams params;
  std::vector<TensorShape> shapes;  // llama.cpp order
  std::vector<std::pair<std::string, edgeq::GgufValue>> metadata;
};

Model load_model(const std::string& path) {
  GgufFile f = GgufFile::open(path);
  Model m;
  m.metadata = f.metadata();
  m.params = ModelParams::from_metadata(f.metadata());
  for (auto& t : f.tensors()) m.shapes.push_back({t.name, t.dims, t.type});
  std::stable_sort(m.shapes.begin(), m.shapes.end(),
                   [](const TensorShape& a, const TensorShape& b) { return llama_tensor_order_less(a.name, b.name); });
  return m;
}

nlohmann::json load_mixes() {
  std::ifstream in(kGolden + "/mixes.json");
  return nlohmann::json::parse(in);
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

std::map<std::string, GgmlType> by_name(const std::vector<TensorShape>& shapes, const std::vector<TypeDecision>& d) {
  std::map<std::string, GgmlType> m;
  for (size_t i = 0; i < shapes.size(); ++i) m[shapes[i].name] = d[i].type;
  return m;
}

TEST(QuantPolicy, FileTypeNamesAndEnumValues) {
  EXPECT_EQ(parse_file_type("Q4_K_M"), FileType::MOSTLY_Q4_K_M);
  EXPECT_EQ(static_cast<uint32_t>(parse_file_type("q4_k_m")), 15u);
  EXPECT_EQ(static_cast<uint32_t>(parse_file_type("Q8_0")), 7u);
  EXPECT_EQ(static_cast<uint32_t>(parse_file_type("IQ4_XS")), 30u);
  EXPECT_EQ(static_cast<uint32_t>(parse_file_type("BF16")), 32u);
  EXPECT_EQ(parse_file_type("Q4_K"), FileType::MOSTLY_Q4_K_M);  // llama-quantize alias
  EXPECT_EQ(file_type_info(FileType::MOSTLY_Q3_K_L).default_type, GgmlType::Q3_K);
  EXPECT_THROW(parse_file_type("Q4_K_X"), edgeq::Error);
  EXPECT_THROW(parse_file_type(""), edgeq::Error);
  EXPECT_EQ(file_types().size(), 35u);  // llama-quantize's 30 (not TQ1_0, TQ2_0) and PAL2/3/4/6/8
  EXPECT_EQ(static_cast<uint32_t>(parse_file_type("IQ2_XXS")), 19u);
  EXPECT_EQ(static_cast<uint32_t>(parse_file_type("Q2_K_S")), 21u);
  EXPECT_EQ(static_cast<uint32_t>(parse_file_type("IQ3_XS")), 22u);
  EXPECT_EQ(static_cast<uint32_t>(parse_file_type("IQ3_M")), 27u);
  EXPECT_EQ(static_cast<uint32_t>(parse_file_type("IQ1_M")), 31u);
  EXPECT_EQ(file_type_info(FileType::MOSTLY_IQ2_S).default_type, GgmlType::IQ2_XS);  // llama.cpp's default types
  EXPECT_EQ(file_type_info(FileType::MOSTLY_IQ2_M).default_type, GgmlType::IQ2_S);
  EXPECT_EQ(file_type_info(FileType::MOSTLY_IQ3_XS).default_type, GgmlType::IQ3_S);
  EXPECT_EQ(file_type_info(FileType::MOSTLY_IQ3_M).default_type, GgmlType::IQ3_S);
  // llama-quantize's refusal without an importance matrix: the mixes it names, per tensor its types.
  for (const auto& t : file_types()) {
    const std::string n = t.name;
    EXPECT_EQ(t.needs_imatrix, n == "IQ1_S" || n == "IQ1_M" || n == "IQ2_S" || n == "IQ2_XXS" || n == "IQ2_XS" || n == "Q2_K_S") << n;
  }
  EXPECT_TRUE(tensor_needs_importance(FileType::MOSTLY_IQ2_M, "blk.0.ffn_up.weight", GgmlType::IQ2_S));
  EXPECT_TRUE(tensor_needs_importance(FileType::MOSTLY_Q4_K_M, "blk.0.ffn_up.weight", GgmlType::IQ2_XXS));  // an override
  EXPECT_FALSE(tensor_needs_importance(FileType::MOSTLY_IQ2_M, "blk.0.attn_v.weight", GgmlType::IQ3_S));
  EXPECT_TRUE(tensor_needs_importance(FileType::MOSTLY_IQ1_M, "blk.0.ffn_up.weight", GgmlType::IQ1_M));
  EXPECT_FALSE(tensor_needs_importance(FileType::MOSTLY_IQ1_M, "output.weight", GgmlType::IQ1_M));
  EXPECT_TRUE(tensor_needs_importance(FileType::MOSTLY_Q2_K_S, "blk.0.ffn_up.weight", GgmlType::Q2_K));
  EXPECT_FALSE(tensor_needs_importance(FileType::MOSTLY_Q2_K_S, "token_embd.weight", GgmlType::Q2_K));
  EXPECT_FALSE(tensor_needs_importance(FileType::MOSTLY_Q2_K, "blk.0.ffn_up.weight", GgmlType::Q2_K));
}

TEST(QuantPolicy, ModelParamsFromTl8m) {
  Model m = load_model(kGolden + "/tl-8m-F16.gguf");
  EXPECT_EQ(m.params.arch, "llama");
  EXPECT_EQ(m.params.n_layer, 8);
  EXPECT_EQ(m.params.n_head, 8);
  EXPECT_EQ(m.params.n_head_kv, 4);
  EXPECT_EQ(m.params.n_gqa(), 2);
  EXPECT_EQ(m.params.n_expert, 0);
  EXPECT_FALSE(m.params.is_70b());
  EXPECT_EQ(m.shapes.size(), 75u);
}

// Every golden file: the type of every tensor equals llama-quantize's, the tensors come in the same order,
// every tensor's data size equals the golden's, and so does the whole (aligned) data section.
TEST(QuantPolicy, GoldenMixesTl8m) {
  Model m = load_model(kGolden + "/tl-8m-F16.gguf");
  nlohmann::json mixes = load_mixes();
  int checked = 0;
  for (auto& [file, entry] : mixes["files"].items()) {
    SCOPED_TRACE(file);
    const uint32_t ft = entry["file_type"].get<uint32_t>();
    PolicyOptions o;
    o.ftype = static_cast<FileType>(ft);
    ASSERT_NO_THROW(file_type_info(o.ftype)) << "file_type " << ft;
    o.has_imatrix = file.find("-imat") != std::string::npos;
    std::vector<TypeDecision> d = choose_types(m.params, m.shapes, o);
    ASSERT_EQ(d.size(), m.shapes.size());

    const auto& want = entry["tensor_types"];
    ASSERT_EQ(want.size(), m.shapes.size());
    for (size_t i = 0; i < m.shapes.size(); ++i) {
      const auto& name = m.shapes[i].name;
      ASSERT_TRUE(want.contains(name)) << name;
      EXPECT_EQ(std::string(edgeq::ggml_type_name(d[i].type)), want[name].get<std::string>()) << name;
      EXPECT_FALSE(d[i].fallback) << name;
    }

    // Sizes and order against the golden file itself.
    GgufFile g = GgufFile::open(kGolden + "/" + file);
    EXPECT_EQ(g.file_size(), entry["bytes"].get<uint64_t>());
    EXPECT_EQ(g.get_int("general.file_type").value_or(-1), static_cast<int64_t>(ft));
    ASSERT_EQ(g.tensors().size(), m.shapes.size());
    uint64_t ours = 0, theirs = 0, ours_aligned = 0;
    const bool llama_order = file != "tl-8m-F16.gguf";  // the F16 golden was written by the converter
    for (size_t i = 0; i < m.shapes.size(); ++i) {
      const auto* gt = g.find_tensor(m.shapes[i].name);
      ASSERT_NE(gt, nullptr) << m.shapes[i].name;
      EXPECT_EQ(gt->nbytes, d[i].nbytes) << m.shapes[i].name;
      EXPECT_EQ(gt->type, d[i].type) << m.shapes[i].name;
      if (llama_order) {
        EXPECT_EQ(g.tensors()[i].name, m.shapes[i].name) << "tensor order at " << i;
        EXPECT_EQ(g.tensors()[i].offset, ours_aligned) << m.shapes[i].name;
      }
      ours += d[i].nbytes;
      ours_aligned = align_up(ours_aligned + d[i].nbytes, g.alignment());
      theirs += gt->nbytes;
    }
    EXPECT_EQ(ours, theirs);
    if (llama_order) {
      EXPECT_EQ(g.data_offset() + ours_aligned, g.file_size());
    }

    // What remains of the file size is metadata: the F16 source's metadata and the quantize keys.
    // Computed through the writer (not written: the writer is never finished).
    if (llama_order) {
      auto path = std::filesystem::temp_directory_path() / ("edgeq-policy-size-" + std::to_string(::getpid()) + ".gguf");
      edgeq::GgufWriter w(path.string());
      // The imatrix keys as llama-quantize recorded them (the path it was given, the dataset named in the
      // imatrix); no edgeq.quantize.method (--no-edgeq-metadata): then the size must be exactly the golden's.
      ImatrixProvenance prov{g.get_string("quantize.imatrix.file").value_or(""),
                             g.get_string("quantize.imatrix.dataset").value_or(""), 56, 217};
      for (auto& [k, v] : quantized_metadata(m.metadata, o.ftype, o.has_imatrix ? &prov : nullptr, "")) w.set(k, v);
      for (size_t i = 0; i < m.shapes.size(); ++i) w.add_tensor(m.shapes[i].name, m.shapes[i].dims, d[i].type);
      const int64_t diff = static_cast<int64_t>(w.expected_file_size()) - static_cast<int64_t>(g.file_size());
      std::printf("  %-26s golden %9llu bytes, edgeq plan %9llu bytes, difference %+lld\n",
                  file.c_str(), static_cast<unsigned long long>(g.file_size()),
                  static_cast<unsigned long long>(w.expected_file_size()), static_cast<long long>(diff));
      EXPECT_EQ(diff, 0);
      EXPECT_EQ(w.expected_file_size(), entry["bytes"].get<uint64_t>());
      EXPECT_FALSE(std::filesystem::exists(path));
    }
    ++checked;
  }
  EXPECT_EQ(checked, 21);
}

// The low-bit i-quant mixes of golden/iq.json (llama-quantize b4748 with tl-8m.imatrix): every tensor's type, and
// the file size (data planned by the policy, metadata through the writer with the imatrix keys llama-quantize
// wrote); for the seven shipped files also every tensor's size, offset and general.file_type.
TEST(QuantPolicy, GoldenIqMixesTl8m) {
  Model m = load_model(kGolden + "/tl-8m-F16.gguf");
  std::ifstream in(kGolden + "/iq.json");
  const auto iq = nlohmann::json::parse(in);
  GgufFile ref = GgufFile::open(kGolden + "/tl-8m-IQ2_XXS-imat.gguf");  // its imatrix keys are every file's
  ImatrixProvenance prov{ref.get_string("quantize.imatrix.file").value_or(""),
                         ref.get_string("quantize.imatrix.dataset").value_or(""),
                         static_cast<int32_t>(ref.get_int("quantize.imatrix.entries_count").value_or(0)),
                         static_cast<int32_t>(ref.get_int("quantize.imatrix.chunks_count").value_or(0))};
  int checked = 0, shipped = 0;
  for (auto& [key, entry] : iq.items()) {
    if (key == "protocol") continue;
    SCOPED_TRACE(key);
    const std::string mix = key.substr(std::string("tl-8m-").size(), key.size() - std::string("tl-8m--imat").size());
    PolicyOptions o;
    o.ftype = parse_file_type(mix);
    o.has_imatrix = true;
    const std::vector<TypeDecision> d = choose_types(m.params, m.shapes, o);
    const auto& want = entry["tensor_types"];
    ASSERT_EQ(want.size(), m.shapes.size());
    for (size_t i = 0; i < m.shapes.size(); ++i)
      EXPECT_EQ(std::string(edgeq::ggml_type_name(d[i].type)), want[m.shapes[i].name].get<std::string>()) << m.shapes[i].name;
    auto path = std::filesystem::temp_directory_path() / ("edgeq-policy-iq-" + std::to_string(::getpid()) + ".gguf");
    edgeq::GgufWriter w(path.string());
    for (auto& [k, v] : quantized_metadata(m.metadata, o.ftype, &prov, "")) w.set(k, v);
    for (size_t i = 0; i < m.shapes.size(); ++i) w.add_tensor(m.shapes[i].name, m.shapes[i].dims, d[i].type);
    EXPECT_EQ(w.expected_file_size(), entry["size"].get<uint64_t>());
    const std::string file = kGolden + "/" + key + ".gguf";
    if (std::filesystem::exists(file)) {
      GgufFile g = GgufFile::open(file);
      EXPECT_EQ(g.get_int("general.file_type").value_or(-1), static_cast<int64_t>(o.ftype));
      EXPECT_EQ(g.file_size(), entry["size"].get<uint64_t>());
      ASSERT_EQ(g.tensors().size(), m.shapes.size());
      uint64_t offset = 0;
      for (size_t i = 0; i < m.shapes.size(); ++i) {
        EXPECT_EQ(g.tensors()[i].name, m.shapes[i].name) << i;
        EXPECT_EQ(g.tensors()[i].nbytes, d[i].nbytes) << m.shapes[i].name;
        EXPECT_EQ(g.tensors()[i].offset, offset) << m.shapes[i].name;
        offset = align_up(offset + d[i].nbytes, g.alignment());
      }
      ++shipped;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 11);
  EXPECT_EQ(shipped, 7);
}

// The i-quant mixes on stories260K (rows of 64 and 172): llama_tensor_get_type's fallbacks. The tied token_embd
// takes the output rule (64 % 256 != 0: Q8_0); the i-quants, Q2_K and Q3_K fall back to IQ4_NL for rows of 64, Q4_K to
// Q5_0, and rows of 172 (not a multiple of 32 either) to F16.
TEST(QuantPolicy, Stories260KIqFallbacks) {
  Model m = load_model(kGolden + "/stories260K-F32.gguf");
  for (FileType ft : {FileType::MOSTLY_IQ2_XXS, FileType::MOSTLY_IQ1_M, FileType::MOSTLY_IQ2_M, FileType::MOSTLY_IQ3_XS,
                      FileType::MOSTLY_IQ3_M, FileType::MOSTLY_Q2_K_S}) {
    PolicyOptions o;
    o.ftype = ft;
    o.has_imatrix = true;
    const auto d = choose_types(m.params, m.shapes, o);
    int fallbacks = 0;
    for (size_t i = 0; i < m.shapes.size(); ++i) {
      if (!d[i].quantize) continue;
      const auto& s = m.shapes[i];
      // IQ3_M puts attn_v and attn_output at Q4_K, whose fallback is Q5_0
      const bool q4k = ft == FileType::MOSTLY_IQ3_M && (s.name.find("attn_v") != std::string::npos ||
                                                         s.name.find("attn_output") != std::string::npos);
      const GgmlType want = s.name == "token_embd.weight" ? GgmlType::Q8_0
                            : s.dims[0] % 32 != 0         ? GgmlType::F16
                            : q4k                         ? GgmlType::Q5_0
                                                          : GgmlType::IQ4_NL;
      EXPECT_EQ(d[i].type, want) << file_type_info(ft).name << " " << s.name;
      fallbacks += d[i].fallback;
    }
    EXPECT_GT(fallbacks, 10) << file_type_info(ft).name;
  }
}

// llama.cpp's metadata order: source keys, then quantization_version and file_type moved to the end, then the
// imatrix keys with i32 counts (b4748), as in tl-8m-Q4_K_M-imat.gguf.
TEST(QuantPolicy, MetadataLikeLlamaQuantize) {
  GgufFile src = GgufFile::open(kGolden + "/tl-8m-F16.gguf");
  GgufFile gold = GgufFile::open(kGolden + "/tl-8m-Q4_K_M-imat.gguf");
  ImatrixProvenance prov{"a.imatrix", "calib.txt", 56, 217};
  auto kv = quantized_metadata(src.metadata(), FileType::MOSTLY_Q4_K_M, &prov, "edgeq test");
  ASSERT_EQ(kv.size(), gold.metadata().size() + 1);  // + edgeq.quantize.method
  for (size_t i = 0; i < gold.metadata().size(); ++i) {
    EXPECT_EQ(kv[i].first, gold.metadata()[i].first) << i;
    EXPECT_EQ(kv[i].second.type(), gold.metadata()[i].second.type()) << kv[i].first;
  }
  EXPECT_EQ(kv.back().first, "edgeq.quantize.method");
  for (auto& [k, v] : kv) {
    if (k == "general.file_type") {
      EXPECT_EQ(v.as_uint(), 15u);
    } else if (k == "general.quantization_version") {
      EXPECT_EQ(v.as_uint(), 2u);
    } else if (k == "quantize.imatrix.entries_count") {
      EXPECT_EQ(v.as_int(), 56);
    } else if (k == "quantize.imatrix.chunks_count") {
      EXPECT_EQ(v.as_int(), 217);
    }
  }
  // Without an imatrix: as tl-8m-Q4_K_M.gguf.
  GgufFile gold2 = GgufFile::open(kGolden + "/tl-8m-Q4_K_M.gguf");
  auto kv2 = quantized_metadata(src.metadata(), FileType::MOSTLY_Q4_K_M, nullptr, "edgeq test");
  ASSERT_EQ(kv2.size(), gold2.metadata().size() + 1);
  for (size_t i = 0; i < gold2.metadata().size(); ++i) EXPECT_EQ(kv2[i].first, gold2.metadata()[i].first) << i;
}

// stories260K: rows of 64 (not a multiple of 256) and 172 (not even a multiple of 32), tied embeddings.
TEST(QuantPolicy, Stories260KFallbacks) {
  Model m = load_model(kGolden + "/stories260K-F32.gguf");
  EXPECT_EQ(m.params.n_layer, 5);
  auto run = [&](FileType ft) {
    PolicyOptions o;
    o.ftype = ft;
    return by_name(m.shapes, choose_types(m.params, m.shapes, o));
  };
  using G = GgmlType;
  {
    auto t = run(FileType::MOSTLY_Q4_K_M);
    // tied token_embd takes the output rule: 64 % 256 != 0 -> Q8_0
    EXPECT_EQ(t["token_embd.weight"], G::Q8_0);
    for (int l = 0; l < 5; ++l) {
      auto b = "blk." + std::to_string(l) + ".";
      EXPECT_EQ(t[b + "attn_norm.weight"], G::F32);
      EXPECT_EQ(t[b + "attn_q.weight"], G::Q5_0) << l;  // Q4_K -> Q5_0
      EXPECT_EQ(t[b + "attn_k.weight"], G::Q5_0) << l;
      // use_more_bits(i, 5): layers 2 and 4 -> Q6_K -> Q8_0
      EXPECT_EQ(t[b + "attn_v.weight"], (l == 2 || l == 4) ? G::Q8_0 : G::Q5_0) << l;
      EXPECT_EQ(t[b + "attn_output.weight"], G::Q5_0) << l;
      EXPECT_EQ(t[b + "ffn_gate.weight"], G::Q5_0) << l;
      EXPECT_EQ(t[b + "ffn_up.weight"], G::Q5_0) << l;
      EXPECT_EQ(t[b + "ffn_down.weight"], G::F16) << l;  // 172 % 32 != 0
    }
  }
  {
    auto t = run(FileType::MOSTLY_Q2_K);
    EXPECT_EQ(t["token_embd.weight"], G::Q8_0);
    EXPECT_EQ(t["blk.0.attn_q.weight"], G::IQ4_NL);       // Q2_K -> IQ4_NL (b4748)
    EXPECT_EQ(t["blk.0.attn_v.weight"], G::IQ4_NL);       // Q3_K -> IQ4_NL
    EXPECT_EQ(t["blk.0.attn_output.weight"], G::IQ4_NL);  // Q3_K -> IQ4_NL
    EXPECT_EQ(t["blk.3.ffn_down.weight"], G::F16);
  }
  {
    auto t = run(FileType::MOSTLY_Q5_K_M);
    EXPECT_EQ(t["blk.0.attn_q.weight"], G::Q5_1);  // Q5_K -> Q5_1
    EXPECT_EQ(t["blk.2.attn_v.weight"], G::Q8_0);  // Q6_K -> Q8_0
  }
  {
    auto t = run(FileType::MOSTLY_Q4_0);
    EXPECT_EQ(t["token_embd.weight"], G::Q8_0);  // output rule Q6_K, then 64 % 256 -> Q8_0
    EXPECT_EQ(t["blk.0.attn_q.weight"], G::Q4_0);
    EXPECT_EQ(t["blk.0.ffn_down.weight"], G::F16);
  }
  {
    auto t = run(FileType::MOSTLY_F16);
    EXPECT_EQ(t["blk.0.ffn_down.weight"], G::F16);
    EXPECT_EQ(t["blk.0.attn_norm.weight"], G::F32);
    EXPECT_EQ(t["token_embd.weight"], G::F16);
  }
  // Decisions report the fallback.
  PolicyOptions o;
  o.ftype = FileType::MOSTLY_Q4_K_M;
  auto d = choose_types(m.params, m.shapes, o);
  int fallbacks = 0;
  for (auto& x : d) fallbacks += x.fallback;
  EXPECT_EQ(fallbacks, 5 * 7);  // q, k, v, output, gate, up, down per layer; token_embd needs none
}

TEST(QuantPolicy, PureAndOverrides) {
  Model m = load_model(kGolden + "/tl-8m-F16.gguf");
  using G = GgmlType;
  {
    PolicyOptions o;
    o.ftype = FileType::MOSTLY_Q4_K_M;
    o.pure = true;
    auto t = by_name(m.shapes, choose_types(m.params, m.shapes, o));
    EXPECT_EQ(t["output.weight"], G::Q4_K);
    EXPECT_EQ(t["blk.0.attn_v.weight"], G::Q4_K);
    EXPECT_EQ(t["blk.7.ffn_down.weight"], G::Q4_K);
    EXPECT_EQ(t["output_norm.weight"], G::F32);
  }
  {
    PolicyOptions o;
    o.ftype = FileType::MOSTLY_Q4_K_M;
    o.tensor_types.push_back(parse_tensor_type_override("ffn_down=Q8_0"));
    o.tensor_types.push_back(parse_tensor_type_override("blk\\.[0-3]\\.ffn_.*=q5_k"));  // ffn_down matched first
    o.output_tensor_type = parse_tensor_type("Q8_0");
    o.token_embedding_type = parse_tensor_type("F16");
    auto d = choose_types(m.params, m.shapes, o);
    auto t = by_name(m.shapes, d);
    EXPECT_EQ(t["blk.0.ffn_down.weight"], G::Q8_0);
    EXPECT_EQ(t["blk.1.ffn_gate.weight"], G::Q5_K);
    EXPECT_EQ(t["blk.5.ffn_gate.weight"], G::Q4_K);
    EXPECT_EQ(t["output.weight"], G::Q8_0);
    EXPECT_EQ(t["token_embd.weight"], G::F16);
    EXPECT_EQ(t["blk.3.attn_v.weight"], G::Q6_K);  // the mix still applies elsewhere, counters unchanged
    EXPECT_EQ(t["blk.4.attn_v.weight"], G::Q4_K);
    for (size_t i = 0; i < m.shapes.size(); ++i)
      if (m.shapes[i].name == "token_embd.weight") {
        EXPECT_TRUE(d[i].overridden);
        EXPECT_FALSE(d[i].quantize);  // F16 source kept as is
      }
  }
  {
    PolicyOptions o;
    o.ftype = FileType::MOSTLY_Q3_K_M;
    o.leave_output_tensor = true;
    auto t = by_name(m.shapes, choose_types(m.params, m.shapes, o));
    EXPECT_EQ(t["output.weight"], G::F16);  // left in the source type
    EXPECT_EQ(t["blk.0.attn_v.weight"], G::Q5_K);
  }
  EXPECT_THROW(parse_tensor_type_override("ffn_down"), edgeq::Error);
  EXPECT_THROW(parse_tensor_type_override("ffn_down=Q9_9"), edgeq::Error);
  EXPECT_THROW(parse_tensor_type_override("ffn_(down=Q4_K"), edgeq::Error);
  EXPECT_THROW(parse_tensor_type_override("=Q4_K"), edgeq::Error);
  EXPECT_THROW(parse_tensor_type("TQ1_0"), edgeq::Error);  // encoded, but not a type users may request
  EXPECT_EQ(parse_tensor_type("IQ2_XXS"), GgmlType::IQ2_XXS);
}

// Rules the goldens do not reach (tl-8m has n_gqa 2, no experts, llama arch), from llama-quant.cpp b4748.
TEST(QuantPolicy, HyperparameterDependentRules) {
  Model m = load_model(kGolden + "/tl-8m-F16.gguf");
  using G = GgmlType;
  auto run = [&](const ModelParams& p, FileType ft, bool imatrix) {
    PolicyOptions o;
    o.ftype = ft;
    o.has_imatrix = imatrix;
    return by_name(m.shapes, choose_types(p, m.shapes, o));
  };
  {  // Q4_0 with an imatrix guards the first n_layer/8 ffn_down with Q4_1; Q5_0 with Q5_1
    auto t = run(m.params, FileType::MOSTLY_Q4_0, true);
    EXPECT_EQ(t["blk.0.ffn_down.weight"], G::Q4_1);
    EXPECT_EQ(t["blk.1.ffn_down.weight"], G::Q4_0);
    EXPECT_EQ(run(m.params, FileType::MOSTLY_Q5_0, true)["blk.0.ffn_down.weight"], G::Q5_1);
    EXPECT_EQ(run(m.params, FileType::MOSTLY_Q4_0, false)["blk.0.ffn_down.weight"], G::Q4_0);
  }
  {  // n_gqa >= 4
    ModelParams p = m.params;
    p.n_head_kv = 2;
    EXPECT_EQ(run(p, FileType::MOSTLY_Q2_K, false)["blk.5.attn_v.weight"], G::Q4_K);
    EXPECT_EQ(run(p, FileType::MOSTLY_IQ4_XS, false)["blk.5.attn_v.weight"], G::Q5_K);
    EXPECT_EQ(run(p, FileType::MOSTLY_IQ4_NL, false)["blk.5.attn_v.weight"], G::Q5_K);
  }
  {  // 8 experts
    ModelParams p = m.params;
    p.n_expert = 8;
    auto t = run(p, FileType::MOSTLY_Q4_K_M, false);
    EXPECT_EQ(t["blk.2.attn_v.weight"], G::Q8_0);
    EXPECT_EQ(t["blk.2.attn_k.weight"], G::Q8_0);
    EXPECT_EQ(t["blk.2.attn_output.weight"], G::Q5_K);
    EXPECT_EQ(t["blk.3.ffn_down.weight"], G::Q6_K);  // layer from the name
  }
  {  // falcon: output Q8_0, Q3_K_L attn_output Q4_K, Q4_K_M ffn_down Q6_K/Q5_K/Q4_K
    ModelParams p = m.params;
    p.arch = "falcon";
    EXPECT_EQ(run(p, FileType::MOSTLY_Q4_K_M, false)["output.weight"], G::Q8_0);
    EXPECT_EQ(run(p, FileType::MOSTLY_Q3_K_L, false)["blk.0.attn_output.weight"], G::Q4_K);
    auto t = run(p, FileType::MOSTLY_Q4_K_M, false);
    EXPECT_EQ(t["blk.0.ffn_down.weight"], G::Q5_K);  // n_layer/16 == 0; use_more_bits(0, 8)
    EXPECT_EQ(t["blk.1.ffn_down.weight"], G::Q4_K);
  }
  {  // 70B-like (80 layers, GQA): attn_v Q4_K/Q3_K promoted to Q5_K
    ModelParams p = m.params;
    p.n_layer = 80;
    EXPECT_TRUE(p.is_70b());
    EXPECT_EQ(run(p, FileType::MOSTLY_Q3_K_M, false)["blk.4.attn_v.weight"], G::Q5_K);
  }
  {  // Q8_0 keeps Q8_0 for output; Q5_K_S/Q6_K/IQ4 output Q6_K
    EXPECT_EQ(run(m.params, FileType::MOSTLY_Q8_0, false)["output.weight"], G::Q8_0);
    EXPECT_EQ(run(m.params, FileType::MOSTLY_IQ4_NL, false)["output.weight"], G::Q6_K);
  }
}

TEST(QuantPolicy, QuantizableTensors) {
  EXPECT_TRUE(tensor_is_quantizable("blk.0.attn_q.weight", {256, 256}, false));
  EXPECT_FALSE(tensor_is_quantizable("blk.0.attn_norm.weight", {256}, false));
  EXPECT_FALSE(tensor_is_quantizable("blk.0.attn_q.bias", {256, 256}, false));
  EXPECT_FALSE(tensor_is_quantizable("blk.0.attn_q.weight", {256, 1}, false));  // ggml_n_dims == 1
  EXPECT_FALSE(tensor_is_quantizable("output.weight", {256, 4096}, true));
  EXPECT_TRUE(tensor_is_quantizable("output.weight", {256, 4096}, false));
  EXPECT_FALSE(tensor_is_quantizable("blk.0.ffn_gate_inp.weight", {256, 8}, false));
  EXPECT_TRUE(llama_tensor_order_less("token_embd.weight", "blk.0.attn_q.weight"));
  EXPECT_TRUE(llama_tensor_order_less("blk.2.ffn_up.weight", "blk.10.attn_k.weight"));
  EXPECT_TRUE(llama_tensor_order_less("output.weight", "output_norm.weight"));
}

TEST(QuantPolicy, RowLengthOverflowIsAnError) {
  ModelParams p;
  p.arch = "llama";
  p.n_layer = 1;
  std::vector<TensorShape> s = {{"blk.0.attn_q.weight", {1ull << 40, 1ull << 40}, GgmlType::F32}};
  PolicyOptions o;
  EXPECT_THROW(choose_types(p, s, o), edgeq::Error);
}

}  // namespace
