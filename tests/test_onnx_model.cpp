// ONNX reader on the real torch.onnx export of tl-8m (external data): role recovery and bit-exact weights.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/convert/onnx_roles.h"
#include "edgeq/formats/onnx.h"
#include "edgeq/formats/safetensors.h"

namespace {

const std::string kDir = std::string(EDGEQ_SHARED_DIR) + "/models/tl-8m-onnx-ext";
const std::string kOnnx = kDir + "/model.onnx";
const std::string kSt = std::string(EDGEQ_SHARED_DIR) + "/models/tl-8m/model.safetensors";

edgeq::convert::OnnxLlamaShape cfg() { return edgeq::convert::onnx_shape_from_config(kDir + "/config.json"); }

TEST(OnnxModel, ConfigJson) {
  auto c = cfg();
  EXPECT_EQ(c.hidden_size, 256u);
  EXPECT_EQ(c.intermediate_size, 768u);
  EXPECT_EQ(c.n_layers, 8u);
  EXPECT_EQ(c.n_heads, 8u);
  EXPECT_EQ(c.n_kv_heads, 4u);
  EXPECT_EQ(c.head_dim, 32u);
  EXPECT_EQ(c.vocab_size, 4096u);
  EXPECT_FALSE(c.tie_word_embeddings);
}

TEST(OnnxModel, OpensWithExternalData) {
  auto m = edgeq::OnnxModel::open(kOnnx);
  EXPECT_EQ(m.ir_version(), 8);
  EXPECT_EQ(m.opset_version(), 17);
  EXPECT_EQ(m.producer_name(), "pytorch");
  EXPECT_GT(m.n_nodes(), 1000u);
  ASSERT_EQ(m.initializers().size(), 75u);
  const auto* e = m.find("model.embed_tokens.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->onnx_dtype, edgeq::onnx_dtype::FLOAT);
  EXPECT_EQ(e->dims, (std::vector<uint64_t>{4096, 256}));
  EXPECT_EQ(e->storage, edgeq::OnnxStorage::External);
  EXPECT_EQ(e->offset, 0u);
  EXPECT_EQ(e->nbytes, 4096u * 256u * 4u);
  const auto* w = m.find("onnx::MatMul_1951");  // lm_head, stored [in, out]
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dims, (std::vector<uint64_t>{256, 4096}));
  EXPECT_EQ(w->offset, 29377536u);
  // Every external tensor lies inside the one data file, which is mapped once: the views share a base.
  edgeq::MappedFile data(kDir + "/model.onnx.data");
  uint64_t total = 0;
  for (const auto& t : m.initializers()) {
    ASSERT_EQ(t.storage, edgeq::OnnxStorage::External) << t.name;
    EXPECT_EQ(t.data - t.offset, e->data) << t.name;
    EXPECT_EQ(0, std::memcmp(t.data, data.data() + t.offset, t.nbytes)) << t.name;
    total += t.nbytes;
  }
  EXPECT_EQ(total, data.size());
}

TEST(OnnxModel, RecoversEveryHfNameAndBitExactValues) {
  auto m = edgeq::OnnxModel::open(kOnnx);
  auto ws = edgeq::convert::recover_hf_weights(m, cfg());
  auto st = edgeq::SafetensorsFile::open(kSt);

  std::set<std::string> onnx_names, st_names;
  for (const auto& w : ws) EXPECT_TRUE(onnx_names.insert(w.hf_name).second) << "duplicate " << w.hf_name;
  for (const auto& t : st.tensors()) st_names.insert(t.name);
  EXPECT_EQ(ws.size(), 75u);
  EXPECT_EQ(st_names.size(), 75u);
  EXPECT_EQ(onnx_names, st_names);

  // Spot-check the mapping against the export's initializer list (initializers.txt).
  std::map<std::string, const edgeq::convert::OnnxWeight*> by;
  for (const auto& w : ws) by[w.hf_name] = &w;
  ASSERT_TRUE(by.count("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_EQ(by["model.layers.0.self_attn.q_proj.weight"]->onnx_name, "onnx::MatMul_1759");
  EXPECT_EQ(by["model.layers.0.self_attn.k_proj.weight"]->onnx_name, "onnx::MatMul_1762");
  EXPECT_EQ(by["model.layers.0.self_attn.v_proj.weight"]->onnx_name, "onnx::MatMul_1767");
  EXPECT_EQ(by["model.layers.0.self_attn.o_proj.weight"]->onnx_name, "onnx::MatMul_1779");
  EXPECT_EQ(by["model.layers.0.mlp.gate_proj.weight"]->onnx_name, "onnx::MatMul_1780");
  EXPECT_EQ(by["model.layers.0.mlp.up_proj.weight"]->onnx_name, "onnx::MatMul_1781");
  EXPECT_EQ(by["model.layers.0.mlp.down_proj.weight"]->onnx_name, "onnx::MatMul_1782");
  EXPECT_EQ(by["model.layers.7.mlp.down_proj.weight"]->onnx_name, "onnx::MatMul_1950");
  EXPECT_EQ(by["lm_head.weight"]->onnx_name, "onnx::MatMul_1951");
  EXPECT_EQ(by["model.layers.3.input_layernorm.weight"]->onnx_name, "model.layers.3.input_layernorm.weight");
  EXPECT_TRUE(by["lm_head.weight"]->transposed);
  EXPECT_FALSE(by["model.embed_tokens.weight"]->transposed);
  EXPECT_EQ(by["model.layers.5.self_attn.k_proj.weight"]->hf_shape, (std::vector<uint64_t>{128, 256}));
  EXPECT_EQ(by["model.layers.5.mlp.down_proj.weight"]->hf_shape, (std::vector<uint64_t>{256, 768}));
  int transposed = 0;
  for (const auto& w : ws) transposed += w.transposed;
  EXPECT_EQ(transposed, 57);

  // Values: bit for bit equal to the BF16 safetensors widened to f32, for every tensor.
  uint64_t compared = 0;
  for (const auto& w : ws) {
    const auto* t = st.find(w.hf_name);
    ASSERT_NE(t, nullptr) << w.hf_name;
    ASSERT_EQ(t->shape, w.hf_shape) << w.hf_name;
    const uint64_t n = t->n_elements();
    std::vector<float> ref(n), got(n, -1.0f);
    edgeq::st_to_f32(t->dtype, t->data, ref.data(), n);
    edgeq::convert::load_onnx_weight(m, w, got.data());
    ASSERT_EQ(0, std::memcmp(ref.data(), got.data(), n * sizeof(float))) << w.hf_name << " differs";
    compared += n;
  }
  EXPECT_EQ(compared, 8392960u);  // every parameter of tl-8m
}

TEST(OnnxModel, WrongConfigIsAClearError) {
  auto m = edgeq::OnnxModel::open(kOnnx);
  auto expect_error = [&](edgeq::convert::OnnxLlamaShape c, const char* needle) {
    try {
      edgeq::convert::recover_hf_weights(m, c);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const edgeq::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("model.onnx"), std::string::npos) << e.what();
    }
  };
  auto c = cfg();
  c.n_layers = 7;
  expect_error(c, "expected 15 RMSNorm");
  c = cfg();
  c.n_kv_heads = 8;  // k/v widths would be 256
  expect_error(c, "k_proj.weight (initializer onnx::MatMul_1762): HF shape [128, 256], the config implies [256, 256]");
  c = cfg();
  c.intermediate_size = 512;
  expect_error(c, "gate_proj.weight");
  c = cfg();
  c.vocab_size = 4000;
  expect_error(c, "no token embedding");
}

}  // namespace
