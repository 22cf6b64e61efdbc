// Per-tensor type choice, following llama.cpp b4748's llama-quantize rules (see policy.h).
#include "edgeq/quant/policy.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <regex>
#include <string>

#include "edgeq/arch/arch.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/palette_layout.h"
#include "edgeq/quant/block_ops.h"

namespace edgeq::quant {

namespace {

using T = GgmlType;
using F = FileType;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

bool contains(std::string_view s, std::string_view sub) { return s.find(sub) != std::string_view::npos; }

bool is_quantized(T t) {
  auto* i = ggml_type_info(t);
  return i && i->quantized;
}

uint32_t block_size(T t) {
  auto* i = ggml_type_info(t);
  return i ? i->block_size : 1;
}

// Number of dimensions as ggml_n_dims counts them: trailing dimensions of 1 do not count.
int n_dims(const std::vector<uint64_t>& dims) {
  int n = static_cast<int>(dims.size());
  while (n > 1 && dims[n - 1] == 1) --n;
  return std::max(n, 1);
}

// Layer index parsed from "blk.N" as llama.cpp's sscanf(name, "blk.%d.") does; -1 when the name has none.
int block_index(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return -1;
  int64_t v = 0;
  size_t i = 4;
  if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) {
    v = v * 10 + (name[i] - '0');
    if (v > 1'000'000'000) return -1;
    ++i;
  }
  return static_cast<int>(v);
}

struct State {
  int n_attention_wv = 0;
  int n_ffn_down = 0, n_ffn_gate = 0, n_ffn_up = 0;
  int i_attention_wv = 0, i_ffn_down = 0, i_ffn_gate = 0, i_ffn_up = 0;
  bool has_output = false;
};

bool use_more_bits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

// llama.cpp's layer_info: with experts the layer comes from the tensor name, else from the running counter.
int layer_of(const ModelParams& p, int counter, int n_layer, const std::string& name) {
  if (std::max(1, p.n_expert) > 1) {
    int l = block_index(name);
    if (l < 0) fail("tensor {}: cannot determine its layer", name);
    if (l >= n_layer) fail("tensor {}: layer {} out of range [0, {})", name, l, n_layer);
    return l;
  }
  return counter;
}

bool one_of(F f, std::initializer_list<F> set) { return std::find(set.begin(), set.end(), f) != set.end(); }

// The mix rules (llama_tensor_get_type without its shape fallback), for the file types edgeq supports.
T mix_type(State& qs, const ModelParams& p, const PolicyOptions& o, T new_type, const TensorShape& t) {
  const std::string& name = t.name;
  const F ftype = o.ftype;
  const arch::Arch* a = arch::by_gguf_name(p.arch);
  const bool falcon = a && a->falcon_quant_rules;
  const int n_expert = p.n_expert;
  // llama.cpp's very-low-bit mixes, which share one set of rules below the embeddings
  const bool low_iq = one_of(ftype, {F::MOSTLY_IQ2_XXS, F::MOSTLY_IQ2_XS, F::MOSTLY_IQ1_S, F::MOSTLY_IQ2_S,
                                     F::MOSTLY_IQ2_M, F::MOSTLY_IQ1_M});
  const bool iq2_sm = ftype == F::MOSTLY_IQ2_S || ftype == F::MOSTLY_IQ2_M;

  if (name == "output.weight" || (!qs.has_output && name == "token_embd.weight")) {
    if (o.output_tensor_type) return *o.output_tensor_type;
    const uint64_t nx = t.dims.empty() ? 0 : t.dims[0];
    if (falcon || nx % block_size(new_type) != 0) return T::Q8_0;
    if (low_iq || ftype == F::MOSTLY_IQ3_XXS) return T::Q5_K;
    if (new_type != T::Q8_0) return T::Q6_K;
    return new_type;
  }
  if (name == "token_embd.weight") {
    if (o.token_embedding_type) return *o.token_embedding_type;
    if (one_of(ftype, {F::MOSTLY_IQ2_XXS, F::MOSTLY_IQ2_XS, F::MOSTLY_IQ1_S, F::MOSTLY_IQ1_M})) return T::Q2_K;
    if (iq2_sm || ftype == F::MOSTLY_IQ3_XXS) return T::IQ3_S;
    return new_type;
  }
  if (low_iq) {
    if (contains(name, "attn_v.weight")) {
      if (p.n_gqa() >= 4 || n_expert >= 4) new_type = T::Q4_K;
      else new_type = iq2_sm ? T::IQ3_S : T::Q2_K;
      ++qs.i_attention_wv;
    } else if (n_expert == 8 && contains(name, "attn_k.weight")) {
      new_type = T::Q4_K;
    } else if (contains(name, "ffn_down")) {
      // llama.cpp counts ffn_down tensors here, without layer_info (so also for experts)
      if (qs.i_ffn_down < qs.n_ffn_down / 8) new_type = iq2_sm ? T::IQ3_S : T::Q2_K;
      ++qs.i_ffn_down;
    } else if (contains(name, "attn_output.weight")) {
      if (n_expert == 8) new_type = T::Q5_K;
      else if (ftype == F::MOSTLY_IQ1_S || ftype == F::MOSTLY_IQ1_M) new_type = T::IQ2_XXS;
      else if (iq2_sm) new_type = T::IQ3_S;
    }
    return new_type;
  }
  if (contains(name, "attn_v.weight")) {
    if (ftype == F::MOSTLY_Q2_K) {
      new_type = p.n_gqa() >= 4 ? T::Q4_K : T::Q3_K;
    } else if (ftype == F::MOSTLY_Q2_K_S && p.n_gqa() >= 4) {
      new_type = T::Q4_K;
    } else if (ftype == F::MOSTLY_IQ3_XXS) {
      new_type = p.n_gqa() >= 4 ? T::Q4_K : !o.has_imatrix ? T::IQ3_S : T::IQ3_XXS;
    } else if ((ftype == F::MOSTLY_IQ3_XS || ftype == F::MOSTLY_IQ3_S) && p.n_gqa() >= 4) {
      new_type = T::Q4_K;
    } else if (ftype == F::MOSTLY_IQ3_M) {
      new_type = T::Q4_K;
    } else if (ftype == F::MOSTLY_Q3_K_M) {
      new_type = qs.i_attention_wv < 2 ? T::Q5_K : T::Q4_K;
    } else if (ftype == F::MOSTLY_Q3_K_L) {
      new_type = T::Q5_K;
    } else if ((ftype == F::MOSTLY_IQ4_NL || ftype == F::MOSTLY_IQ4_XS) && p.n_gqa() >= 4) {
      new_type = T::Q5_K;
    } else if ((ftype == F::MOSTLY_Q4_K_M || ftype == F::MOSTLY_Q5_K_M) &&
               use_more_bits(qs.i_attention_wv, qs.n_attention_wv)) {
      new_type = T::Q6_K;
    } else if (ftype == F::MOSTLY_Q4_K_S && qs.i_attention_wv < 4) {
      new_type = T::Q5_K;
    }
    // llama.cpp: in a 70B model 8 query heads share each attn_v head (GQA), so attn_v.weight is 8x smaller
    // than attn_q.weight; more bits here give a nice accuracy boost for a nearly negligible size increase.
    if (p.is_70b() && (new_type == T::Q3_K || new_type == T::Q4_K)) new_type = T::Q5_K;
    // llama.cpp: for the 8-expert model (Mixtral-8x7B) bumping attn_v to Q8_0 costs just ~128 MB (the
    // attention is shared by all experts, so it is a small part of the model).
    if (n_expert == 8) new_type = T::Q8_0;
    ++qs.i_attention_wv;
    return new_type;
  }
  if (contains(name, "attn_k.weight")) {
    // llama.cpp: as attn_v, Q8_0 for the 8-expert model costs just ~128 MB.
    if (n_expert == 8) new_type = T::Q8_0;
    else if (ftype == F::MOSTLY_IQ3_XS) new_type = T::IQ3_XXS;
    else if (ftype == F::MOSTLY_IQ3_XXS) new_type = T::IQ2_S;
    return new_type;
  }
  if (contains(name, "attn_q.weight")) {
    if (ftype == F::MOSTLY_IQ3_XS) new_type = T::IQ3_XXS;
    else if (ftype == F::MOSTLY_IQ3_XXS) new_type = T::IQ2_S;
    return new_type;
  }
  if (contains(name, "ffn_down")) {
    const int i_layer = layer_of(p, qs.i_ffn_down, qs.n_ffn_down, name);
    const int n_layer = qs.n_ffn_down;
    if (ftype == F::MOSTLY_Q2_K) {
      new_type = T::Q3_K;
    } else if (ftype == F::MOSTLY_Q2_K_S) {
      if (i_layer < n_layer / 8) new_type = T::Q4_K;
    } else if (ftype == F::MOSTLY_IQ3_XXS && !o.has_imatrix) {
      new_type = i_layer < n_layer / 8 ? T::Q4_K : T::Q3_K;
    } else if (ftype == F::MOSTLY_Q3_K_M) {
      new_type = i_layer < n_layer / 16                      ? T::Q5_K
                 : !falcon || use_more_bits(i_layer, n_layer) ? T::Q4_K
                                                               : T::Q3_K;
    } else if (ftype == F::MOSTLY_IQ3_M && (i_layer < n_layer / 8 || (n_expert == 8 && use_more_bits(i_layer, n_layer)))) {
      new_type = T::Q4_K;
    } else if (ftype == F::MOSTLY_Q3_K_L) {
      new_type = falcon ? T::Q4_K : T::Q5_K;
    } else if (ftype == F::MOSTLY_Q4_K_M) {
      if (falcon) {
        new_type = i_layer < n_layer / 16 ? T::Q6_K : use_more_bits(i_layer, n_layer) ? T::Q5_K : T::Q4_K;
      } else if (use_more_bits(i_layer, n_layer)) {
        new_type = T::Q6_K;
      }
    } else if (i_layer < n_layer / 8 && (ftype == F::MOSTLY_IQ4_NL || ftype == F::MOSTLY_IQ4_XS) &&
               !o.has_imatrix) {
      new_type = T::Q5_K;
    } else if (ftype == F::MOSTLY_Q5_K_M && use_more_bits(i_layer, n_layer)) {
      new_type = T::Q6_K;
    } else if (ftype == F::MOSTLY_Q4_K_S && !falcon && i_layer < n_layer / 8) {
      new_type = T::Q5_K;
    } else if ((ftype == F::MOSTLY_Q4_0 || ftype == F::MOSTLY_Q5_0) && o.has_imatrix && i_layer < n_layer / 8) {
      // llama.cpp: guards against the first ffn_down layers going wrong ("craziness"), which happens with
      // Q4_0/Q5_0 even with an imatrix. Only with an imatrix, so that a) a run without one still gives the same
      // quantization as before imatrix support, and b) Q4_1/Q5_1 themselves go wrong on ffn_down without one.
      new_type = ftype == F::MOSTLY_Q4_0 ? T::Q4_1 : T::Q5_1;
    }
    ++qs.i_ffn_down;
    return new_type;
  }
  if (contains(name, "attn_output.weight")) {
    if (!falcon) {
      if (n_expert == 8) {
        if (one_of(ftype, {F::MOSTLY_Q2_K, F::MOSTLY_IQ3_XS, F::MOSTLY_IQ3_XXS, F::MOSTLY_Q3_K_S, F::MOSTLY_Q3_K_M,
                           F::MOSTLY_IQ4_NL, F::MOSTLY_Q4_K_S, F::MOSTLY_Q4_K_M, F::MOSTLY_IQ3_S, F::MOSTLY_IQ3_M,
                           F::MOSTLY_IQ4_XS}))
          new_type = T::Q5_K;
      } else {
        if (ftype == F::MOSTLY_Q2_K) new_type = T::Q3_K;
        else if (ftype == F::MOSTLY_IQ3_XXS) new_type = T::IQ3_S;
        else if (ftype == F::MOSTLY_Q3_K_M) new_type = T::Q4_K;
        else if (ftype == F::MOSTLY_Q3_K_L) new_type = T::Q5_K;
        else if (ftype == F::MOSTLY_IQ3_M) new_type = T::Q4_K;
      }
    } else if (ftype == F::MOSTLY_Q3_K_L) {
      new_type = T::Q4_K;
    }
    return new_type;
  }
  if (contains(name, "attn_qkv.weight")) {
    if (ftype == F::MOSTLY_Q3_K_M || ftype == F::MOSTLY_Q3_K_L || ftype == F::MOSTLY_IQ3_M) new_type = T::Q4_K;
    else if (ftype == F::MOSTLY_Q4_K_M) new_type = T::Q5_K;
    else if (ftype == F::MOSTLY_Q5_K_M) new_type = T::Q6_K;
    return new_type;
  }
  // ffn_gate and ffn_up: IQ3_XS puts the middle layers at IQ3_XXS.
  auto iq3_xs_middle = [&](int counter, int n_layer) {
    const int i_layer = layer_of(p, counter, n_layer, name);  // validates the layer for MoE models
    return ftype == F::MOSTLY_IQ3_XS && i_layer >= n_layer / 8 && i_layer < 7 * n_layer / 8;
  };
  if (contains(name, "ffn_gate")) {
    if (iq3_xs_middle(qs.i_ffn_gate, qs.n_ffn_gate)) new_type = T::IQ3_XXS;
    ++qs.i_ffn_gate;
    return new_type;
  }
  if (contains(name, "ffn_up")) {
    if (iq3_xs_middle(qs.i_ffn_up, qs.n_ffn_up)) new_type = T::IQ3_XXS;
    ++qs.i_ffn_up;
    return new_type;
  }
  return new_type;
}

// llama.cpp b4748's shape fallback: a row length that is not a multiple of the type's block size gets the
// block table's fallback type for it (F16 when that does not fit either).
T shape_fallback(T type, uint64_t nx, bool* fell_back) {
  *fell_back = false;
  if (nx % block_size(type) == 0) return type;
  *fell_back = true;
  const BlockOps* row = block_ops(type);
  T t = row ? row->shape_fallback : T::F16;
  if (nx % block_size(t) != 0) t = T::F16;
  return t;
}

}  // namespace

const std::vector<FileTypeInfo>& file_types() {
  static const std::vector<FileTypeInfo> v = {
      {F::MOSTLY_Q4_0, "Q4_0", T::Q4_0, "4.34G, +0.4685 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q4_1, "Q4_1", T::Q4_1, "4.78G, +0.4511 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q5_0, "Q5_0", T::Q5_0, "5.21G, +0.1316 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q5_1, "Q5_1", T::Q5_1, "5.65G, +0.1062 ppl @ Llama-3-8B"},
      {F::MOSTLY_IQ2_XXS, "IQ2_XXS", T::IQ2_XXS, "2.06 bpw quantization", 0, true},
      {F::MOSTLY_IQ2_XS, "IQ2_XS", T::IQ2_XS, "2.31 bpw quantization", 0, true},
      {F::MOSTLY_IQ2_S, "IQ2_S", T::IQ2_XS, "2.5  bpw quantization", 0, true},
      {F::MOSTLY_IQ2_M, "IQ2_M", T::IQ2_S, "2.7  bpw quantization"},
      {F::MOSTLY_IQ1_S, "IQ1_S", T::IQ1_S, "1.56 bpw quantization", 0, true},
      {F::MOSTLY_IQ1_M, "IQ1_M", T::IQ1_M, "1.75 bpw quantization", 0, true},
      {F::MOSTLY_Q2_K, "Q2_K", T::Q2_K, "2.96G, +3.5199 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q2_K_S, "Q2_K_S", T::Q2_K, "2.96G, +3.1836 ppl @ Llama-3-8B", 0, true},
      {F::MOSTLY_IQ3_XXS, "IQ3_XXS", T::IQ3_XXS, "3.06 bpw quantization"},
      {F::MOSTLY_IQ3_S, "IQ3_S", T::IQ3_S, "3.44 bpw quantization"},
      {F::MOSTLY_IQ3_M, "IQ3_M", T::IQ3_S, "3.66 bpw quantization mix"},
      {F::MOSTLY_IQ3_XS, "IQ3_XS", T::IQ3_S, "3.3 bpw quantization"},
      {F::MOSTLY_Q3_K_S, "Q3_K_S", T::Q3_K, "3.41G, +1.6321 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q3_K_M, "Q3_K_M", T::Q3_K, "3.74G, +0.6569 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q3_K_L, "Q3_K_L", T::Q3_K, "4.03G, +0.5562 ppl @ Llama-3-8B"},
      {F::MOSTLY_IQ4_NL, "IQ4_NL", T::IQ4_NL, "4.50 bpw non-linear quantization"},
      {F::MOSTLY_IQ4_XS, "IQ4_XS", T::IQ4_XS, "4.25 bpw non-linear quantization"},
      {F::MOSTLY_Q4_K_S, "Q4_K_S", T::Q4_K, "4.37G, +0.2689 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q4_K_M, "Q4_K_M", T::Q4_K, "4.58G, +0.1754 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q5_K_S, "Q5_K_S", T::Q5_K, "5.21G, +0.1049 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q5_K_M, "Q5_K_M", T::Q5_K, "5.33G, +0.0569 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q6_K, "Q6_K", T::Q6_K, "6.14G, +0.0217 ppl @ Llama-3-8B"},
      {F::MOSTLY_Q8_0, "Q8_0", T::Q8_0, "7.96G, +0.0026 ppl @ Llama-3-8B"},
      {F::MOSTLY_F16, "F16", T::F16, "14.00G, +0.0020 ppl @ Mistral-7B"},
      {F::MOSTLY_BF16, "BF16", T::BF16, "14.00G, -0.0050 ppl @ Mistral-7B"},
      {F::ALL_F32, "F32", T::F32, "26.00G @ 7B"},
      {F::EDGEQ_PAL2, "PAL2", T::I8, "2-bit k-means look-up tables (edgeq only; llama.cpp cannot load it)", 2},
      {F::EDGEQ_PAL3, "PAL3", T::I8, "3-bit k-means look-up tables (edgeq only; llama.cpp cannot load it)", 3},
      {F::EDGEQ_PAL4, "PAL4", T::I8, "4-bit k-means look-up tables (edgeq only; llama.cpp cannot load it)", 4},
      {F::EDGEQ_PAL6, "PAL6", T::I8, "6-bit k-means look-up tables (edgeq only; llama.cpp cannot load it)", 6},
      {F::EDGEQ_PAL8, "PAL8", T::I8, "8-bit k-means look-up tables (edgeq only; llama.cpp cannot load it)", 8},
  };
  return v;
}

const FileTypeInfo& file_type_info(FileType t) {
  for (auto& i : file_types())
    if (i.ftype == t) return i;
  fail("unsupported file type {}", static_cast<uint32_t>(t));
}

std::optional<FileType> file_type_from_name(std::string_view name) {
  for (auto& i : file_types())
    if (iequals(i.name, name)) return i.ftype;
  // llama-quantize also takes the file type's number (`--type 15` is Q4_K_M)
  if (!name.empty() && name.size() <= 4 && std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    const auto id = static_cast<uint32_t>(std::stoul(std::string(name)));
    for (auto& i : file_types())
      if (static_cast<uint32_t>(i.ftype) == id) return i.ftype;
    return std::nullopt;
  }
  // llama-quantize's aliases
  if (iequals(name, "Q3_K")) return F::MOSTLY_Q3_K_M;
  if (iequals(name, "Q4_K")) return F::MOSTLY_Q4_K_M;
  if (iequals(name, "Q5_K")) return F::MOSTLY_Q5_K_M;
  return std::nullopt;
}

FileType parse_file_type(std::string_view name) {
  if (auto t = file_type_from_name(name)) return *t;
  std::string names;
  for (auto& i : file_types()) names += std::string(names.empty() ? "" : ", ") + i.name;
  fail("unknown quantization type '{}' (valid: {})", name, names);
}

GgmlType parse_tensor_type(std::string_view name) {
  const std::vector<T> writable = writable_types();
  auto t = ggml_type_from_name(name);
  if (t)
    for (T w : writable)
      if (w == *t) return w;
  std::string names;
  for (T w : writable) names += std::string(names.empty() ? "" : ", ") + ggml_type_name(w);
  fail("unknown or unsupported tensor type '{}' (valid: {})", name, names);
}

bool tensor_needs_importance(FileType ftype, std::string_view name, GgmlType type) {
  if (type == T::Q2_K) return ftype == F::MOSTLY_Q2_K_S && name != "token_embd.weight";
  if (type == T::IQ1_M && (name == "token_embd.weight" || name == "output.weight")) return false;
  const BlockOps* row = block_ops(type);
  return row && row->needs_importance;
}

bool mix_needs_importance(FileType ftype) {
  const FileTypeInfo& info = file_type_info(ftype);
  return info.needs_imatrix || tensor_needs_importance(ftype, "blk.0.ffn_down.weight", info.default_type);
}

bool ModelParams::is_70b() const {
  if (n_layer != 80) return false;
  const arch::Arch* a = arch::by_gguf_name(arch);
  if (!a) return false;
  switch (a->type_70b) {
    case arch::Type70B::Never: return false;
    case arch::Type70B::IfGqa: return n_head != n_head_kv;
    case arch::Type70B::Always: return true;
  }
  return false;
}

ModelParams ModelParams::from_metadata(const std::vector<std::pair<std::string, GgufValue>>& kv) {
  ModelParams p;
  auto find = [&](const std::string& key) -> const GgufValue* {
    for (auto& [k, v] : kv)
      if (k == key) return &v;
    return nullptr;
  };
  if (auto* a = find("general.architecture"); a && a->type() == GgufType::STRING) p.arch = a->as_string();
  auto get_int = [&](const std::string& key, int dflt) -> int {
    const GgufValue* v = find(p.arch + "." + key);
    if (!v) return dflt;
    int64_t x = 0;
    if (v->is_integer()) {
      x = v->as_int();
    } else if (v->type() == GgufType::ARRAY && !v->as_array().items.empty() && v->as_array().items[0].is_integer()) {
      x = v->as_array().items[0].as_int();  // per-layer arrays (head_count_kv on some models): first layer
    } else {
      fail("metadata {}.{}: expected an integer, got {}", p.arch, key, gguf_type_name(v->type()));
    }
    if (x < 0 || x > 1'000'000) fail("metadata {}.{}: value {} out of range", p.arch, key, x);
    return static_cast<int>(x);
  };
  p.n_layer = get_int("block_count", 0);
  p.n_head = get_int("attention.head_count", 0);
  p.n_head_kv = get_int("attention.head_count_kv", p.n_head);
  p.n_expert = get_int("expert_count", 0);
  return p;
}

TensorTypeOverride parse_tensor_type_override(std::string_view spec) {
  auto eq = spec.rfind('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == spec.size())
    fail("--tensor-type '{}': expected REGEX=TYPE", spec);
  TensorTypeOverride o;
  o.pattern = std::string(spec.substr(0, eq));
  try {
    std::regex re(o.pattern);
  } catch (const std::regex_error& e) {
    fail("--tensor-type '{}': bad regular expression: {}", spec, e.what());
  }
  o.type = parse_tensor_type(spec.substr(eq + 1));
  return o;
}

bool llama_tensor_order_less(std::string_view a, std::string_view b) {
  int la = block_index(a), lb = block_index(b);
  if (la != lb) return la < lb;
  return a < b;
}

bool tensor_is_quantizable(std::string_view name, const std::vector<uint64_t>& dims, bool leave_output_tensor) {
  if (n_dims(dims) < 2) return false;
  if (name.size() < 6 || name.substr(name.size() - 6) != "weight") return false;
  if (contains(name, "_norm.weight")) return false;
  if (leave_output_tensor && name == "output.weight") return false;
  if (contains(name, "ffn_gate_inp.weight")) return false;
  if (name == "position_embd.weight" || name == "token_types.weight") return false;
  if (contains(name, "ssm_conv1d.weight")) return false;
  static const char* kRwkv[] = {"time_mix_first.weight", "time_mix_w1.weight",  "time_mix_w2.weight",
                                "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
                                "time_mix_lerp_fused.weight"};
  for (const char* r : kRwkv)
    if (contains(name, r)) return false;
  if (contains(name, "attn_rel_b.weight")) return false;
  return true;
}

std::vector<std::pair<std::string, GgufValue>> quantized_metadata(
    const std::vector<std::pair<std::string, GgufValue>>& source, FileType ftype, const ImatrixProvenance* imatrix,
    const std::string& method) {
  static const char* kDropped[] = {"split.no", "split.count", "split.tensors.count", "general.quantization_version",
                                   "general.file_type", "quantize.imatrix.file", "quantize.imatrix.dataset",
                                   "quantize.imatrix.entries_count", "quantize.imatrix.chunks_count",
                                   "edgeq.quantize.method", palette::kBitsKey, palette::kGroupKey};
  std::vector<std::pair<std::string, GgufValue>> kv;
  kv.reserve(source.size() + 7);
  for (const auto& [k, v] : source) {
    bool drop = false;
    for (const char* d : kDropped) drop |= k == d;
    if (!drop) kv.emplace_back(k, v);
  }
  kv.emplace_back("general.quantization_version", GgufValue(uint32_t{2}));
  kv.emplace_back("general.file_type", GgufValue(static_cast<uint32_t>(ftype)));
  if (imatrix) {
    kv.emplace_back("quantize.imatrix.file", GgufValue(imatrix->file));
    if (!imatrix->dataset.empty()) kv.emplace_back("quantize.imatrix.dataset", GgufValue(imatrix->dataset));
    kv.emplace_back("quantize.imatrix.entries_count", GgufValue(int32_t{imatrix->entries_count}));
    kv.emplace_back("quantize.imatrix.chunks_count", GgufValue(int32_t{imatrix->chunks_count}));
  }
  if (!method.empty()) kv.emplace_back("edgeq.quantize.method", GgufValue(method));
  return kv;
}

std::vector<TypeDecision> choose_types(const ModelParams& params, const std::vector<TensorShape>& tensors,
                                       const PolicyOptions& opts) {
  const FileTypeInfo& info = file_type_info(opts.ftype);
  State qs;
  for (auto& t : tensors) {
    if (contains(t.name, "attn_v.weight") || contains(t.name, "attn_qkv.weight") ||
        contains(t.name, "attn_kv_b.weight"))
      ++qs.n_attention_wv;
    else if (t.name == "output.weight")
      qs.has_output = true;
  }
  qs.n_ffn_down = qs.n_ffn_gate = qs.n_ffn_up = params.n_layer;

  std::vector<std::pair<std::regex, GgmlType>> overrides;
  for (auto& o : opts.tensor_types) {
    try {
      overrides.emplace_back(std::regex(o.pattern), o.type);
    } catch (const std::regex_error& e) {
      fail("--tensor-type '{}': bad regular expression: {}", o.pattern, e.what());
    }
  }

  std::vector<bool> used(overrides.size(), false);  // a pattern that decides no tensor's type is an error
  std::vector<TypeDecision> out;
  out.reserve(tensors.size());
  for (auto& t : tensors) {
    TypeDecision d;
    d.quantize = tensor_is_quantizable(t.name, t.dims, opts.leave_output_tensor);
    if (d.quantize) {
      GgmlType type = info.default_type;
      // The mix rules run for every quantized tensor (even when an override wins) so that the layer
      // counters advance exactly as in llama.cpp.
      if (!opts.pure && is_quantized(info.default_type)) type = mix_type(qs, params, opts, type, t);
      // PAL types keep llama.cpp's rule for the output matrix (Q6_K; Q8_0 for short rows): one 2^n-entry table
      // for the logits' matrix doubled tl-8m's KLD (PAL4 0.0083 vs 0.0038). --pure palettizes it too.
      if (!opts.pure && info.palette_bits > 0 && (t.name == "output.weight" || (!qs.has_output && t.name == "token_embd.weight")))
        type = mix_type(qs, params, opts, type, t);
      for (size_t k = 0; k < overrides.size(); ++k) {
        bool m = false;
        try {
          m = std::regex_search(t.name, overrides[k].first);
        } catch (const std::regex_error& e) {
          fail("tensor {}: --tensor-type regex failed: {}", t.name, e.what());
        }
        if (m) {
          type = overrides[k].second;
          d.overridden = true;
          used[k] = true;
          break;
        }
      }
      if (opts.token_embedding_type && t.name == "token_embd.weight") {
        type = *opts.token_embedding_type;
        d.overridden = true;
      }
      if (opts.output_tensor_type && t.name == "output.weight") {
        type = *opts.output_tensor_type;
        d.overridden = true;
      }
      const uint64_t ne0 = t.dims.empty() ? 1 : t.dims[0];
      if (info.palette_bits > 0 && !d.overridden && type == info.default_type) {
        if (palette::row_fits(ne0, info.palette_bits)) {
          uint64_t rows = 1;
          for (size_t i = 1; i < t.dims.size(); ++i) rows *= t.dims[i];
          if (opts.palette_group > 0 && rows % opts.palette_group != 0)
            fail("tensor {}: --pal-group {} does not divide its {} rows", t.name, opts.palette_group, rows);
          d.type = T::I8;
          d.palette_bits = info.palette_bits;
          d.palette_groups = opts.palette_group > 0 ? rows / opts.palette_group : 1;
          d.nbytes = palette::palettized_bytes(t.dims, d.palette_bits, d.palette_groups);
          out.push_back(d);
          continue;
        }
        type = T::F16;  // a row that does not pack into whole bytes
        d.fallback = true;
      }
      bool fell_back = false;
      type = shape_fallback(type, ne0, &fell_back);
      d.fallback |= fell_back;
      d.type = type;
      d.quantize = type != t.keep_type;
    }
    if (!d.quantize) d.type = t.keep_type;

    uint64_t rows = 1;
    for (size_t i = 1; i < t.dims.size(); ++i)
      if (mul_overflow_u64(rows, t.dims[i], &rows)) fail("tensor {}: element count overflows", t.name);
    auto row = ggml_row_size(d.type, t.dims.empty() ? 1 : t.dims[0]);
    if (!row) fail("tensor {}: row length {} is not a multiple of the {} block size", t.name, t.dims.empty() ? 1 : t.dims[0], ggml_type_name(d.type));
    if (mul_overflow_u64(*row, rows, &d.nbytes)) fail("tensor {}: byte size overflows", t.name);
    out.push_back(d);
  }
  for (size_t k = 0; k < used.size(); ++k)
    if (!used[k])
      fail("--tensor-type {}={}: the pattern matches no quantized tensor (it would be ignored)",
           opts.tensor_types[k].pattern, ggml_type_name(opts.tensor_types[k].type));
  return out;
}

}  // namespace edgeq::quant
