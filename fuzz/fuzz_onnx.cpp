// libFuzzer target: the in-memory ONNX parser (no external files) plus HF weight-role recovery and f32 loads.
// Any input must end in success or edgeq::Error: no crash, hang, leak or huge allocation.
// Seeds: tests/test_onnx writes its synthetic Llama models to $EDGEQ_ONNX_SEED_DIR when that is set.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/convert/onnx_roles.h"
#include "edgeq/formats/onnx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto m = edgeq::OnnxModel::parse(data, size, "fuzz.onnx");
    for (const auto& t : m.initializers()) {
      if (!edgeq::onnx_dtype_is_float(t.onnx_dtype)) continue;
      std::vector<float> v(t.n_elements());  // bounded: the bytes were validated against the input
      m.tensor_to_f32(t, v.data());
    }
    // The shapes of the synthetic models the tests build (hidden 8, 2 heads of 4, 1 KV head, MLP 12,
    // vocab 16, 2 layers), untied and tied, and MHA.
    for (int variant = 0; variant < 3; ++variant) {
      edgeq::convert::OnnxLlamaShape cfg;
      cfg.hidden_size = 8;
      cfg.intermediate_size = 12;
      cfg.n_layers = 2;
      cfg.n_heads = 2;
      cfg.n_kv_heads = variant == 2 ? 2 : 1;
      cfg.head_dim = 4;
      cfg.vocab_size = 16;
      cfg.tie_word_embeddings = variant == 1;
      try {
        auto ws = edgeq::convert::recover_hf_weights(m, cfg);
        for (const auto& w : ws) {
          uint64_t n = 1;
          for (auto d : w.hf_shape) n *= d;
          std::vector<float> v(n);
          edgeq::convert::load_onnx_weight(m, w, v.data());
        }
      } catch (const edgeq::Error&) {
      }
    }
  } catch (const edgeq::Error&) {
  }
  return 0;
}
