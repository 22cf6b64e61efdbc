// tl-8m's weights as llama.cpp's converter writes them, read from the HF checkpoint: the reference that
// test_quant_blocks_quality and bench_quant_rmse measure quantization errors against (one copy for both).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "edgeq/formats/safetensors.h"

namespace tl8m {

// The HF tensor behind a GGUF tensor of tl-8m, and the head count whose q/k row permutation the converter
// applies (0: none; tl-8m has 8 heads and 4 KV heads).
inline std::string hf_name(const std::string& g, int* n_head) {
  *n_head = 0;
  if (g == "token_embd.weight") return "model.embed_tokens.weight";
  if (g == "output.weight") return "lm_head.weight";
  if (g == "output_norm.weight") return "model.norm.weight";
  int layer;
  char rest[128];
  if (std::sscanf(g.c_str(), "blk.%d.%127s", &layer, rest) != 2) return "";
  const std::string r = rest, p = "model.layers." + std::to_string(layer) + ".";
  if (r == "attn_norm.weight") return p + "input_layernorm.weight";
  if (r == "ffn_norm.weight") return p + "post_attention_layernorm.weight";
  if (r == "attn_q.weight") { *n_head = 8; return p + "self_attn.q_proj.weight"; }
  if (r == "attn_k.weight") { *n_head = 4; return p + "self_attn.k_proj.weight"; }
  if (r == "attn_v.weight") return p + "self_attn.v_proj.weight";
  if (r == "attn_output.weight") return p + "self_attn.o_proj.weight";
  if (r == "ffn_gate.weight") return p + "mlp.gate_proj.weight";
  if (r == "ffn_up.weight") return p + "mlp.up_proj.weight";
  if (r == "ffn_down.weight") return p + "mlp.down_proj.weight";
  return "";
}

// F32 reference rows [0, nrows) of a GGUF tensor (rows x cols, GGUF row order; a vector is 1 x n): BF16
// widened, q/k rows permuted as llama.cpp's converter does (new row h*hd + 2i + j = old row h*hd + j*(hd/2) + i).
// St: edgeq::SafetensorsFile or SafetensorsCheckpoint. Empty when it has no such tensor of that size.
template <typename St>
std::vector<float> reference(const St& st, const std::string& gname, uint64_t rows, uint64_t cols, uint64_t nrows) {
  int n_head;
  const auto* t = st.find(hf_name(gname, &n_head));
  if (!t || t->n_elements() != rows * cols) return {};
  std::vector<float> raw(rows * cols);
  edgeq::st_to_f32(t->dtype, t->data, raw.data(), raw.size());
  std::vector<float> out(nrows * cols);
  const uint64_t hd = n_head ? rows / static_cast<uint64_t>(n_head) : 0;
  for (uint64_t nr = 0; nr < nrows; ++nr) {
    uint64_t orow = nr;
    if (n_head) {
      const uint64_t h = nr / hd, k = nr % hd, i = k / 2, j = k % 2;
      orow = h * hd + j * (hd / 2) + i;
    }
    std::copy(raw.begin() + orow * cols, raw.begin() + (orow + 1) * cols, out.begin() + nr * cols);
  }
  return out;
}

}  // namespace tl8m
