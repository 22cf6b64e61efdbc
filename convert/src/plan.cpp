// plan_conversion: HF checkpoint (safetensors or ONNX export) -> the GGUF llama.cpp's converter would write.
// What differs between architectures (HF classes, tensor names, Q/K permutation, biases, q/k norms ...) comes from
// the architecture table (arch/include/edgeq/arch/arch.h).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "edgeq/arch/arch.h"
#include "edgeq/convert/onnx_roles.h"
#include "edgeq/convert/plan.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/hf_tokenizer.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/formats/model_path.h"
#include "edgeq/formats/vocab.h"
#include "source.h"

namespace edgeq::convert {

namespace fs = std::filesystem;
using detail::TensorSource;

// ---- outtype rules -----------------------------------------------------------------------------------
std::string resolve_outtype(const std::string& outtype, GgmlType first_source_type) {
  if (outtype == "auto" || outtype.empty()) return first_source_type == GgmlType::F16 ? "f16" : "bf16";
  if (outtype == "f32" || outtype == "f16" || outtype == "bf16" || outtype == "q8_0") return outtype;
  fail("unknown --outtype '{}' (expected auto, f32, f16, bf16 or q8_0)", outtype);
}

uint32_t file_type_for(const std::string& outtype) {
  if (outtype == "f32") return 0;
  if (outtype == "f16") return 1;
  if (outtype == "q8_0") return 7;
  if (outtype == "bf16") return 32;
  fail("unknown outtype '{}'", outtype);
}

GgmlType output_type_for(const std::string& name, const std::vector<uint64_t>& dims, const std::string& outtype) {
  size_t n_dims = 0;  // after numpy's squeeze()
  for (auto d : dims)
    if (d != 1) ++n_dims;
  auto ends_with = [&](const char* s) {
    size_t n = std::char_traits<char>::length(s);
    return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
  };
  if (n_dims <= 1 || ends_with("_norm.weight") || !ends_with(".weight")) return GgmlType::F32;
  if (ends_with("ffn_gate_inp.weight")) return GgmlType::F32;  // the MoE router stays F32 (llama.cpp's converter)
  if (outtype == "f32") return GgmlType::F32;
  if (outtype == "f16") return GgmlType::F16;
  if (outtype == "bf16") return GgmlType::BF16;
  if (outtype == "q8_0") return dims[0] % 32 == 0 ? GgmlType::Q8_0 : GgmlType::F16;  // gguf-py falls back to F16
  fail("unknown outtype '{}'", outtype);
}

namespace {

// ---- config.json ---------------------------------------------------------------------------------------
struct Config {
  std::string path;
  nlohmann::json j;

  bool has(const char* k) const { return j.contains(k) && !j[k].is_null(); }
  uint64_t req_uint(const char* k, uint64_t max = 1ull << 24) const {
    if (!has(k)) fail("{}: missing config key '{}'", path, k);
    return uint_value(k, max);
  }
  std::optional<uint64_t> opt_uint(const char* k, uint64_t max = 1ull << 24) const {
    if (!has(k)) return std::nullopt;
    return uint_value(k, max);
  }
  uint64_t uint_value(const char* k, uint64_t max) const {
    const auto& v = j[k];
    if (!v.is_number_integer() && !v.is_number_unsigned()) fail("{}: config key '{}' is not an integer", path, k);
    int64_t x = v.get<int64_t>();
    if (x <= 0 || static_cast<uint64_t>(x) > max) fail("{}: config key '{}' = {} is out of range (1..{})", path, k, x, max);
    return static_cast<uint64_t>(x);
  }
  std::optional<double> opt_float(const char* k) const {
    if (!has(k)) return std::nullopt;
    if (!j[k].is_number()) fail("{}: config key '{}' is not a number", path, k);
    double x = j[k].get<double>();
    if (!std::isfinite(x) || x <= 0) fail("{}: config key '{}' = {} must be a positive finite number", path, k, x);
    return x;
  }
  double req_float(const char* k) const {
    if (!has(k)) fail("{}: missing config key '{}'", path, k);
    return *opt_float(k);
  }
  bool opt_bool(const char* k, bool dflt) const {
    if (!has(k)) return dflt;
    if (!j[k].is_boolean()) fail("{}: config key '{}' is not a boolean", path, k);
    return j[k].get<bool>();
  }
};

Config read_config(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(p, ec)) fail("{}: config.json not found", p.string());
  MappedFile m(p.string());
  if (m.size() > (64u << 20)) fail("{}: too large for a config file ({} bytes)", p.string(), m.size());
  Config c;
  c.path = p.string();
  try {
    c.j = nlohmann::json::parse(m.data(), m.data() + m.size());
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", p.string(), e.what());
  }
  if (!c.j.is_object()) fail("{}: not a JSON object", p.string());
  return c;
}

struct Hparams {
  const arch::Arch* arch = nullptr;
  std::string arch_name;  // GGUF
  uint64_t n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx;
  uint64_t n_expert = 0;  // MoE: experts per layer (config.json's Arch::hf_expert_count_key); 0 dense
  double rms_eps;
  std::optional<double> rope_theta;
  bool tie;
  bool explicit_head_dim;
};

// ---- expected tensors -------------------------------------------------------------------------------------
using Perm = arch::Permute;

struct Want {
  std::string gguf;
  std::string hf;                       // one HF tensor, or the first expert's
  std::vector<std::string> hf_experts;  // MoE: one HF tensor per expert, stacked into one 3-D GGUF tensor
  uint64_t layer = 0;
  bool plus_one = false;                // Arch::norm_plus_one: the stored weight is w + 1
  std::vector<uint64_t> hf_shape;
  Perm perm = Perm::None;
  bool required = true;
};

void permute_rows_index(std::vector<uint64_t>& idx, uint64_t rows, uint64_t n_head, const std::string& file, const std::string& name) {
  // llama.cpp's permute: reshape(n_head, 2, rows/n_head/2, ...).swapaxes(1, 2):
  // new row h*hd + 2i + j = old row h*hd + j*(hd/2) + i
  if (n_head == 0 || rows % n_head != 0 || (rows / n_head) % 2 != 0)
    fail("{}: tensor {}: {} rows cannot be permuted for {} heads", file, name, rows, n_head);
  uint64_t hd = rows / n_head;
  idx.resize(rows);
  for (uint64_t h = 0; h < n_head; ++h)
    for (uint64_t i = 0; i < hd / 2; ++i)
      for (uint64_t j = 0; j < 2; ++j) idx[h * hd + 2 * i + j] = h * hd + j * (hd / 2) + i;
}

std::string shape_str(const std::vector<uint64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

Hparams read_hparams(const Config& c) {
  Hparams h{};
  if (!c.has("architectures") || !c.j["architectures"].is_array() || c.j["architectures"].empty() ||
      !c.j["architectures"][0].is_string())
    fail("{}: missing config key 'architectures'", c.path);
  std::string a = c.j["architectures"][0].get<std::string>();
  h.arch = arch::by_hf_class(a);
  if (!h.arch) fail("{}: unknown architecture '{}' (supported: {})", c.path, a, arch::hf_class_list());
  h.arch_name = std::string(h.arch->gguf_name);
  h.n_embd = c.req_uint("hidden_size");
  h.n_layer = c.req_uint("num_hidden_layers", 4096);
  h.n_ff = c.req_uint("intermediate_size");
  h.n_head = c.req_uint("num_attention_heads", 4096);
  h.n_head_kv = c.opt_uint("num_key_value_heads", 4096).value_or(h.n_head);
  h.n_vocab = c.req_uint("vocab_size");
  h.n_ctx = c.req_uint("max_position_embeddings", 0xffffffffull);
  h.rms_eps = c.req_float("rms_norm_eps");
  if (h.rms_eps > 1.0) fail("{}: config key 'rms_norm_eps' = {} is out of range (> 0, <= 1)", c.path, h.rms_eps);
  h.rope_theta = c.opt_float("rope_theta");
  h.tie = c.opt_bool("tie_word_embeddings", false);
  auto hd = c.opt_uint("head_dim");
  h.explicit_head_dim = hd.has_value();
  if (hd) {
    h.head_dim = *hd;
  } else {
    if (h.n_embd % h.n_head != 0)
      fail("{}: hidden_size {} is not a multiple of num_attention_heads {}", c.path, h.n_embd, h.n_head);
    h.head_dim = h.n_embd / h.n_head;
  }
  if (h.n_head % h.n_head_kv != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", c.path, h.n_head, h.n_head_kv);
  if (!h.arch->hf_expert_count_key.empty()) {
    const std::string k(h.arch->hf_expert_count_key);
    h.n_expert = c.req_uint(k.c_str(), 4096);
  }
  const arch::TensorSpec* q = h.arch->find(arch::Role::AttnQ);
  if (q && q->permute != Perm::None && h.head_dim % 2 != 0) fail("{}: head_dim {} must be even for RoPE", c.path, h.head_dim);
  return h;
}

// A role's HF shape (rows first); a bias has the rows of its weight.
std::vector<uint64_t> hf_shape(const Hparams& h, const arch::TensorSpec& t) {
  using arch::Role;
  const uint64_t E = h.n_embd, F = h.n_ff, V = h.n_vocab;
  const uint64_t q_rows = h.n_head * h.head_dim, kv_rows = h.n_head_kv * h.head_dim;
  std::vector<uint64_t> s;
  switch (t.role) {
    case Role::TokenEmbd: case Role::Output: s = {V, E}; break;
    case Role::OutputNorm: case Role::AttnNorm: case Role::FfnNorm: case Role::AttnPostNorm: case Role::FfnPostNorm:
      s = {E}; break;
    case Role::AttnQNorm: case Role::AttnKNorm: s = {h.head_dim}; break;
    case Role::AttnQ: s = {q_rows, E}; break;
    case Role::AttnK: case Role::AttnV: s = {kv_rows, E}; break;
    case Role::AttnQkv: s = {q_rows + 2 * kv_rows, E}; break;
    case Role::AttnOut: s = {E, q_rows}; break;
    case Role::FfnGate: s = {F, E}; break;
    case Role::FfnUp: s = {h.arch->ffn_fused_gate_up ? 2 * F : F, E}; break;
    case Role::FfnDown: s = {E, F}; break;
    case Role::FfnGateInp: s = {h.n_expert, E}; break;
    case Role::FfnGateExps: case Role::FfnUpExps: s = {F, E}; break;  // one expert's matrix
    case Role::FfnDownExps: s = {E, F}; break;
    default: fail("tensor role {} has no HF shape for {} yet", arch::gguf_stem(t.role), h.arch_name);
  }
  if (t.suffix == "bias") s.resize(1);
  return s;
}

std::string hf_name(std::string_view pattern, uint64_t layer, uint64_t expert = 0) {
  std::string s(pattern);
  if (auto i = s.find("{L}"); i != std::string::npos) s.replace(i, 3, std::to_string(layer));
  if (auto i = s.find("{E}"); i != std::string::npos) s.replace(i, 3, std::to_string(expert));
  return s;
}

// The architecture's HF tensors in llama.cpp's converter order: the global tensors listed before the first layer
// tensor, every layer's tensors, then the remaining global ones. Tensors without an HF name (converter-made) are
// not read from the checkpoint.
std::vector<Want> expected_tensors(const Hparams& h, const TensorSource& src) {
  using arch::Need;
  std::set<std::string> present;
  for (auto& t : src.tensors) present.insert(t.name);
  std::vector<Want> w;
  const bool tied = h.tie || h.arch->tied_output;
  auto add = [&](const arch::TensorSpec& t, uint64_t layer) {
    if (t.hf.empty()) return;
    const std::string hf = hf_name(t.hf, layer);
    bool required = true;
    switch (t.need) {
      case Need::Required: case Need::Dense: required = true; break;
      case Need::Optional: required = false; break;
      case Need::QkvBias: required = h.arch->qkv_bias; break;
      case Need::Experts: if (h.n_expert == 0) return; required = true; break;
      case Need::Untied: if (tied) return; required = false; break;
    }
    if (!required && !present.count(hf)) return;
    Want x{arch::gguf_name(t.role, static_cast<int64_t>(layer), t.suffix), hf, {}, layer, false, hf_shape(h, t),
           t.permute, required};
    if (t.hf.find("{E}") != std::string_view::npos)
      for (uint64_t e = 0; e < h.n_expert; ++e) x.hf_experts.push_back(hf_name(t.hf, layer, e));
    // llama.cpp's Gemma converters add 1 to every tensor whose HF name ends in "norm.weight"
    const std::string_view sfx = "norm.weight";
    x.plus_one = h.arch->norm_plus_one && hf.size() >= sfx.size() && hf.compare(hf.size() - sfx.size(), sfx.size(), sfx) == 0;
    w.push_back(std::move(x));
  };
  const auto& ts = h.arch->tensors;
  size_t first_layer = 0;
  while (first_layer < ts.size() && !arch::per_layer(ts[first_layer].role)) add(ts[first_layer++], 0);
  for (uint64_t l = 0; l < h.n_layer; ++l)
    for (const auto& t : ts)
      if (arch::per_layer(t.role)) add(t, l);
  for (size_t i = first_layer; i < ts.size(); ++i)
    if (!arch::per_layer(ts[i].role)) add(ts[i], 0);
  return w;
}

bool ignored_tensor(const std::string& name, const Hparams& h) {
  if (name.find("rotary_emb.inv_freq") != std::string::npos) return true;  // llama.cpp skips it
  if ((h.tie || h.arch->tied_output) && name == "lm_head.weight") return true;  // tied: token_embd serves as output
  return false;
}

// llama3-style rope scaling: llama.cpp's converter stores per-dimension frequency factors in rope_freqs.weight.
std::vector<float> llama3_rope_factors(const nlohmann::json& rs, double base, uint64_t dim) {
  auto num = [&](const char* k, double d) { return rs.contains(k) && rs[k].is_number() ? rs[k].get<double>() : d; };
  double factor = num("factor", 8.0), low = num("low_freq_factor", 1.0), high = num("high_freq_factor", 4.0);
  double old_ctx = num("original_max_position_embeddings", 8192);
  double low_wl = old_ctx / low, high_wl = old_ctx / high;
  std::vector<float> out;
  for (uint64_t i = 0; i < dim; i += 2) {
    float freq = 1.0f / std::pow(static_cast<float>(base), static_cast<float>(i) / static_cast<float>(dim));
    double wl = 2 * M_PI / freq;
    if (wl < high_wl) out.push_back(1.0f);
    else if (wl > low_wl) out.push_back(static_cast<float>(factor));
    else {
      double smooth = (old_ctx / wl - low) / (high - low);
      out.push_back(static_cast<float>(1.0 / ((1 - smooth) / factor + smooth)));
    }
  }
  return out;
}

// The shape ONNX role recovery checks the graph against.
OnnxLlamaShape onnx_shape(const Hparams& h) {
  OnnxLlamaShape s;
  s.hidden_size = h.n_embd;
  s.intermediate_size = h.n_ff;
  s.n_layers = h.n_layer;
  s.n_heads = h.n_head;
  s.n_kv_heads = h.n_head_kv;
  s.head_dim = h.head_dim;
  s.vocab_size = h.n_vocab;
  s.tie_word_embeddings = h.tie;
  return s;
}

// ---- rope scaling: read once, used by the tensor plan (llama3 factors) and the metadata (linear/yarn) ------
struct RopeScaling {
  const nlohmann::json* j = nullptr;  // config.json's rope_scaling object; nullptr when absent
  std::string type;
};

RopeScaling read_rope_scaling(const Config& cfg, const Hparams& h) {
  RopeScaling rs;
  if (!cfg.has("rope_scaling")) return rs;
  rs.j = &cfg.j["rope_scaling"];
  if (!rs.j->is_object()) fail("{}: rope_scaling is not an object", cfg.path);
  for (const char* k : {"rope_type", "type"})
    if (rs.j->contains(k) && (*rs.j)[k].is_string()) {
      rs.type = (*rs.j)[k].get<std::string>();
      break;
    }
  const bool ok = (rs.type == "linear" || rs.type == "yarn" || rs.type == "default") ||
                  (rs.type == "llama3" && h.arch->has(arch::Role::RopeFreqs)) ||
                  ((rs.type == "longrope" || rs.type == "su") && h.arch->long_rope);
  if (!ok) fail("{}: rope_scaling type '{}' is not supported for {}", cfg.path, rs.type, h.arch_name);
  return rs;
}

// ---- tensor plan: every HF tensor the architecture expects, mapped to its GGUF name, shape and loaders ------
SourceTensor plan_tensor(const Want& w, const SourceTensor& st, const Hparams& h, const std::string& outtype) {
  const std::vector<uint64_t> hf_shape(st.dims.rbegin(), st.dims.rend());
  if (hf_shape != w.hf_shape)
    fail("{}: tensor {}: shape {} does not match config.json (expected {})", st.file, w.hf, shape_str(hf_shape),
         shape_str(w.hf_shape));
  if (st.source_type != GgmlType::F32 && st.source_type != GgmlType::F16 && st.source_type != GgmlType::BF16)
    fail("{}: tensor {}: dtype is not a float type", st.file, w.hf);
  if (!st.load_f32) fail("{}: tensor {}: cannot be read as floats", st.file, w.hf);

  SourceTensor pt;
  pt.name = w.gguf;
  pt.dims = st.dims;
  pt.source_type = st.source_type;
  pt.keep_type = output_type_for(pt.name, pt.dims, outtype);
  pt.file = st.file;
  const uint64_t row_len = pt.row_length();
  const uint64_t n_rows = pt.n_rows();
  const bool one_d = w.hf_shape.size() == 1;
  // Row index map (GGUF row -> HF row). For a 1-D permuted vector every element is its own "row".
  auto perm = std::make_shared<std::vector<uint64_t>>();
  if (w.perm != Perm::None) {
    uint64_t heads = w.perm == Perm::Q ? h.n_head : h.n_head_kv;
    permute_rows_index(*perm, w.hf_shape[0], heads, st.file, w.hf);
  }
  std::string file = st.file, hf = w.hf;
  if (st.load_rows && !one_d) {
    auto lr = st.load_rows;
    pt.load_rows = [lr, perm, n_rows, row_len, file, hf](uint64_t row0, uint64_t nrows, float* dst) {
      if (row0 > n_rows || nrows > n_rows - row0) fail("{}: tensor {}: rows [{}, +{}) out of range", file, hf, row0, nrows);
      if (perm->empty()) return lr(row0, nrows, dst);
      for (uint64_t i = 0; i < nrows; ++i) lr((*perm)[row0 + i], 1, dst + i * row_len);
    };
    auto plr = pt.load_rows;
    pt.load_f32 = [plr, n_rows](float* dst) { plr(0, n_rows, dst); };
  } else {
    // whole-tensor loads (1-D tensors, ONNX): load then permute via a copy when needed
    auto lf = st.load_f32;
    const uint64_t n = pt.n_elements();
    pt.load_f32 = [lf, perm, n](float* dst) {
      if (perm->empty()) return lf(dst);
      std::vector<float> tmp(n);
      lf(tmp.data());
      uint64_t per = n / perm->size();  // elements per permuted row (1 for a bias vector)
      for (uint64_t r = 0; r < perm->size(); ++r)
        std::copy(tmp.begin() + (*perm)[r] * per, tmp.begin() + ((*perm)[r] + 1) * per, dst + r * per);
    };
    if (one_d) {
      auto plf = pt.load_f32;
      pt.load_rows = [plf, file, hf](uint64_t row0, uint64_t nrows, float* dst) {
        if (row0 != 0 || nrows != 1) fail("{}: tensor {}: a vector has one row", file, hf);
        plf(dst);
      };
    }
  }
  pt.release = st.release;
  return pt;
}

// Adds 1 to every loaded value (Gemma's norms: llama.cpp's converter stores w + 1, computed in f32).
void add_one(SourceTensor& pt) {
  const uint64_t n = pt.n_elements(), row_len = pt.row_length();
  if (auto lf = pt.load_f32)
    pt.load_f32 = [lf, n](float* dst) {
      lf(dst);
      for (uint64_t i = 0; i < n; ++i) dst[i] += 1.0f;
    };
  if (auto lr = pt.load_rows)
    pt.load_rows = [lr, row_len](uint64_t row0, uint64_t nrows, float* dst) {
      lr(row0, nrows, dst);
      for (uint64_t i = 0; i < nrows * row_len; ++i) dst[i] += 1.0f;
    };
}

// MoE: the experts' 2-D matrices stacked into one 3-D tensor [cols, rows, n_expert] (llama.cpp's converter:
// torch.stack(experts, dim=0)); GGUF row r is expert r / rows, row r % rows.
SourceTensor stack_experts(const Want& w, std::vector<SourceTensor> ex, const std::string& outtype) {
  SourceTensor pt;
  pt.name = w.gguf;
  pt.dims = ex.front().dims;
  pt.dims.push_back(ex.size());
  pt.source_type = ex.front().source_type;
  pt.keep_type = output_type_for(pt.name, pt.dims, outtype);
  pt.file = ex.front().file;
  auto parts = std::make_shared<std::vector<SourceTensor>>(std::move(ex));
  const uint64_t rows = parts->front().n_rows(), row_len = parts->front().row_length();
  const uint64_t total_rows = rows * parts->size();
  const std::string file = pt.file, name = pt.name;
  pt.load_rows = [parts, rows, row_len, total_rows, file, name](uint64_t row0, uint64_t nrows, float* dst) {
    if (row0 > total_rows || nrows > total_rows - row0) fail("{}: tensor {}: rows [{}, +{}) out of range", file, name, row0, nrows);
    while (nrows > 0) {
      const uint64_t e = row0 / rows, r = row0 % rows, n = std::min(nrows, rows - r);
      (*parts)[e].load_rows(r, n, dst);
      dst += n * row_len;
      row0 += n;
      nrows -= n;
    }
  };
  auto lr = pt.load_rows;
  pt.load_f32 = [lr, total_rows](float* dst) { lr(0, total_rows, dst); };
  pt.release = [parts]() {
    for (auto& p : *parts)
      if (p.release) p.release();
  };
  return pt;
}

// llama.cpp b4748's convert_hf_to_gguf.py writes tensors as it reads them: shards in file-name order, each
// shard's names sorted (safetensors' safe_open), a layer's stacked experts when its last expert tensor is read
// (gate, down, up). Reorders `wants` that way (ConvertLayout::HfConverter).
void order_like_hf_converter(std::vector<Want>& wants, const TensorSource& src) {
  std::vector<std::pair<std::string, std::string>> keys;  // (file, name)
  for (auto& t : src.tensors) keys.emplace_back(t.file, t.name);
  std::sort(keys.begin(), keys.end());
  std::map<std::string, size_t> pos;
  for (size_t i = 0; i < keys.size(); ++i) pos[keys[i].second] = i;
  std::map<uint64_t, size_t> experts_done;  // layer -> position of its last expert tensor
  for (const Want& w : wants)
    for (auto& e : w.hf_experts) {
      auto it = pos.find(e);
      if (it != pos.end()) experts_done[w.layer] = std::max(experts_done[w.layer], it->second);
    }
  std::vector<std::pair<size_t, size_t>> order;  // (position, index in table order)
  for (size_t i = 0; i < wants.size(); ++i) {
    const Want& w = wants[i];
    auto it = pos.find(w.hf);
    size_t p = w.hf_experts.empty() ? (it == pos.end() ? 0 : it->second) : experts_done[w.layer];
    order.emplace_back(p, i);
  }
  std::stable_sort(order.begin(), order.end());
  std::vector<Want> out;
  for (auto& [p, i] : order) out.push_back(std::move(wants[i]));
  wants = std::move(out);
}

void plan_tensors(ConvertPlan& plan, const Hparams& h, TensorSource src_in) {
  auto src = std::make_shared<TensorSource>(std::move(src_in));
  plan.keep_alive = src->keep_alive;
  plan.keep_alive.push_back(src);
  std::map<std::string, const SourceTensor*> by_name;
  for (auto& t : src->tensors) by_name[t.name] = &t;
  std::set<std::string> used;
  std::vector<Want> wants = expected_tensors(h, *src);
  if (h.arch->convert_layout == arch::ConvertLayout::HfConverter) order_like_hf_converter(wants, *src);
  auto source = [&](const std::string& hf, const std::string& gguf) -> const SourceTensor& {
    auto it = by_name.find(hf);
    if (it == by_name.end()) fail("{}: missing tensor {} (needed for {})", src->path, hf, gguf);
    used.insert(hf);
    return *it->second;
  };
  for (const Want& w : wants) {
    if (!w.hf_experts.empty()) {
      std::vector<SourceTensor> ex;
      for (const std::string& e : w.hf_experts) {
        Want one = w;
        one.hf = e;
        one.hf_experts.clear();
        ex.push_back(plan_tensor(one, source(e, w.gguf), h, plan.outtype));
      }
      plan.tensors.push_back(stack_experts(w, std::move(ex), plan.outtype));
      continue;
    }
    plan.tensors.push_back(plan_tensor(w, source(w.hf, w.gguf), h, plan.outtype));
    if (w.plus_one) add_one(plan.tensors.back());
  }
  for (auto& t : src->tensors)
    if (!used.count(t.name) && !ignored_tensor(t.name, h))
      fail("{}: tensor {} does not map to any {} GGUF tensor", t.file, t.name, h.arch_name);
}

// llama3 rope scaling adds rope_freqs.weight (before the other tensors, as llama.cpp's converter does).
void add_rope_freqs(ConvertPlan& plan, const Hparams& h, const RopeScaling& rs) {
  if (rs.type != "llama3") return;
  auto factors = std::make_shared<std::vector<float>>(llama3_rope_factors(*rs.j, h.rope_theta.value_or(10000.0), h.head_dim));
  SourceTensor pt;
  pt.name = "rope_freqs.weight";
  pt.dims = {factors->size()};
  pt.source_type = GgmlType::F32;
  pt.keep_type = GgmlType::F32;
  pt.file = plan.path;
  pt.load_f32 = [factors](float* dst) { std::copy(factors->begin(), factors->end(), dst); };
  pt.load_rows = [factors](uint64_t, uint64_t, float* dst) { std::copy(factors->begin(), factors->end(), dst); };
  plan.tensors.insert(plan.tensors.begin(), std::move(pt));
}

std::string model_name(const std::string& dir, const std::string& name);

// LongRoPE (phi3; Phi3MiniModel.generate_extra_tensors): rope_factors_long and rope_factors_short (F32, from
// config.json's rope_scaling) before every other tensor, and the attention factor (returned) for the metadata.
std::optional<double> add_long_rope(ConvertPlan& plan, const Hparams& h, const RopeScaling& rs, const Config& cfg) {
  if (!h.arch->long_rope || !rs.j) return std::nullopt;
  if (rs.type != "longrope" && rs.type != "su" && rs.type != "yarn")
    fail("{}: rope_scaling type '{}' is not supported for {} (longrope, su or yarn)", cfg.path, rs.type, h.arch_name);
  const double orig = static_cast<double>(cfg.req_uint("original_max_position_embeddings", 0xffffffffull));
  const double scale = static_cast<double>(h.n_ctx) / orig;
  double attn = 1.0;
  if (scale > 1.0) attn = rs.type == "yarn" ? 0.1 * std::log(scale) + 1.0 : std::sqrt(1.0 + std::log(scale) / std::log(orig));
  const uint64_t half = h.n_embd / h.n_head / 2;
  std::vector<SourceTensor> made;
  for (const char* which : {"long_factor", "short_factor"}) {
    const nlohmann::json& j = *rs.j;
    if (!j.contains(which) || !j[which].is_array()) fail("{}: rope_scaling has no list '{}'", cfg.path, which);
    if (j[which].size() != half)
      fail("{}: rope_scaling {} has {} values, expected {} (hidden_size / num_attention_heads / 2)", cfg.path, which,
           j[which].size(), half);
    auto f = std::make_shared<std::vector<float>>();
    for (auto& x : j[which]) {
      if (!x.is_number()) fail("{}: rope_scaling {} holds a non-number", cfg.path, which);
      f->push_back(static_cast<float>(x.get<double>()));
    }
    SourceTensor pt;
    pt.name = std::string(which) == "long_factor" ? "rope_factors_long.weight" : "rope_factors_short.weight";
    pt.dims = {f->size()};
    pt.source_type = GgmlType::F32;
    pt.keep_type = GgmlType::F32;
    pt.file = cfg.path;
    pt.load_f32 = [f](float* dst) { std::copy(f->begin(), f->end(), dst); };
    pt.load_rows = [f](uint64_t, uint64_t, float* dst) { std::copy(f->begin(), f->end(), dst); };
    made.push_back(std::move(pt));
  }
  plan.tensors.insert(plan.tensors.begin(), made.begin(), made.end());
  return attn;
}

// ---- metadata as convert_hf_to_gguf.py b4748 writes it (ConvertLayout::HfConverter) --------------------------
// gguf-py's Metadata.id_to_title: words (split at spaces and '-') that are all lower case, and not a version or
// number, get str.title() (upper case after every non-letter). ASCII letters only.
std::string id_to_title(const std::string& id) {
  std::string s = id, out;
  std::replace(s.begin(), s.end(), '-', ' ');
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j == i) break;
    std::string w = s.substr(i, j - i);
    i = j;
    bool has_lower = false, has_upper = false;
    for (char c : w) {
      has_lower |= std::islower(static_cast<unsigned char>(c)) != 0;
      has_upper |= std::isupper(static_cast<unsigned char>(c)) != 0;
    }
    const bool version = std::isdigit(static_cast<unsigned char>(w[0])) ||
                         (w.size() > 1 && w[0] == 'v' && std::isdigit(static_cast<unsigned char>(w[1])) &&
                          w.find_first_not_of("0123456789.", 1) == std::string::npos);
    if (has_lower && !has_upper && !version) {
      bool prev_letter = false;
      for (char& c : w) {
        const bool letter = std::isalpha(static_cast<unsigned char>(c)) != 0;
        if (letter) c = static_cast<char>(prev_letter ? std::tolower(static_cast<unsigned char>(c)) : std::toupper(static_cast<unsigned char>(c)));
        prev_letter = letter;
      }
    }
    out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

// gguf-py's Metadata.get_model_id_components (b4748): a model id ("org/Name-7B-Instruct-v0.1") split into the
// name, organisation, basename, finetune, version and size label. total_params decides whether a size-like
// part is the model's size or (far from it) a context length.
struct ModelIdParts {
  std::optional<std::string> name, org, basename, finetune, version, size_label;
};

ModelIdParts model_id_components(const std::string& id, uint64_t total_params) {
  ModelIdParts r;
  if (id.find(' ') != std::string::npos) {
    r.name = id;
    return r;
  }
  std::string full = id;
  if (auto slash = id.find('/'); slash != std::string::npos) {
    std::string org = id.substr(0, slash);
    full = id.substr(slash + 1);
    if (!(org.size() > 0 && org[0] == '.')) r.org = org;
  }
  r.name = full;
  std::vector<std::string> parts;
  for (size_t i = 0; i <= full.size();) {
    size_t j = full.find('-', i);
    if (j == std::string::npos) j = full.size();
    if (j > i) parts.push_back(full.substr(i, j - i));
    i = j + 1;
  }
  using Types = std::set<std::string>;
  std::vector<Types> types(parts.size());
  static const std::regex version_re(R"((v|iter)?\d+([.]\d+)*)", std::regex::icase);
  static const std::regex type_re(R"(i?q\d(_\w)*|b?fp?(16|32))", std::regex::icase);
  static const std::regex size_re(R"((([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl))", std::regex::icase);
  static const std::regex finetune_re(R"(chat|instruct|vision|lora)", std::regex::icase);
  auto isdec = [](char c) { return c >= '0' && c <= '9'; };
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string part = parts[i];
    if (std::regex_match(part, version_re)) {
      types[i].insert("version");
    } else if (std::regex_match(part, type_re)) {
      types[i].insert("type");
      for (char& c : part) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      parts[i] = part;
    } else if (i > 0 && std::regex_match(part, size_re)) {
      std::replace(part.begin(), part.end(), '_', '.');
      if (isdec(part.back())) part = part.substr(0, part.size() - 2) + "." + part.back() + part[part.size() - 2];
      if (part.size() > 1 && isdec(part[part.size() - 2]) && std::string("kmbt").find(part.back()) != std::string::npos)
        part.back() = static_cast<char>(std::toupper(static_cast<unsigned char>(part.back())));
      if (total_params != 0) {
        const std::string num = part.substr(0, part.size() - 1);
        char* end = nullptr;
        const double x = std::strtod(num.c_str(), &end);
        const bool is_float = !num.empty() && end == num.c_str() + num.size() && num.find_first_of("xXnN") == std::string::npos;
        if (is_float) {  // Python float(); a size like "8x7B" is not one and is kept as it is
          const auto scale_at = std::string(" KMBT").find(part.back());
          const double label = x * (scale_at == std::string::npos ? 0.001 : std::pow(1000.0, static_cast<double>(scale_at)));
          const double t = static_cast<double>(total_params);
          if (std::abs(label - t) > static_cast<double>(7 * total_params / 8)) {
            types[i].insert("finetune");
            part.back() = static_cast<char>(std::tolower(static_cast<unsigned char>(part.back())));
          }
        }
      }
      if (types[i].empty()) types[i].insert("size_label");
      parts[i] = part;
    } else if (i > 0 && std::regex_match(part, finetune_re)) {
      types[i].insert("finetune");
    }
  }
  bool numeric_size = false;
  for (size_t i = 0; i < parts.size(); ++i)
    if (types[i].count("size_label") && std::any_of(parts[i].begin(), parts[i].end(), isdec)) numeric_size = true;
  if (numeric_size)
    for (size_t i = 0; i < parts.size(); ++i)
      if (types[i].count("size_label") &&
          std::all_of(parts[i].begin(), parts[i].end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }))
        types[i].erase("size_label");
  bool at_start = true;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (at_start && ((types[i].empty() && std::isalpha(static_cast<unsigned char>(parts[i][0]))) || types[i].count("version"))) {
      types[i].insert("basename");
    } else {
      at_start = false;
      if (types[i].empty()) types[i].insert("finetune");
    }
  }
  for (size_t i = parts.size(); i-- > 0;) {
    if (types[i].count("basename") && types[i].size() > 1) types[i].erase("basename");
    else break;
  }
  auto join = [&](auto pred, bool unique) -> std::optional<std::string> {
    std::string out;
    std::set<std::string> seen;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (!pred(types[i]) || (unique && !seen.insert(parts[i]).second)) continue;
      out += (out.empty() ? "" : "-") + parts[i];
    }
    if (out.empty()) return std::nullopt;
    return out;
  };
  r.basename = join([](const Types& t) { return t.count("basename") > 0; }, false);
  r.size_label = join([](const Types& t) { return t.count("size_label") > 0; }, true);
  r.finetune = join([](const Types& t) { return t.count("finetune") > 0; }, false);
  r.version = join([](const Types& t) { return t.count("version") && !t.count("basename"); }, false);
  if (!r.size_label && !r.finetune && !r.version) r.basename.reset();
  return r;
}

// general.* of gguf-py's Metadata.load without a model card: --name, else config.json's _name_or_path when it
// is a model id (at most one '/'), else the directory name; each field taken from the first that has it.
ModelIdParts hf_converter_general(const Config& cfg, const std::string& dir, const std::string& name, uint64_t total_params) {
  ModelIdParts m;
  auto fill = [&](const std::string& id) {
    ModelIdParts c = model_id_components(id, total_params);
    if (!m.name && c.name) m.name = id_to_title(*c.name);
    if (!m.org && c.org) m.org = id_to_title(*c.org);
    if (!m.basename) m.basename = c.basename;
    if (!m.finetune) m.finetune = c.finetune;
    if (!m.version) m.version = c.version;
    if (!m.size_label) m.size_label = c.size_label;
  };
  if (cfg.has("_name_or_path") && cfg.j["_name_or_path"].is_string()) {
    const std::string id = cfg.j["_name_or_path"].get<std::string>();
    if (std::count(id.begin(), id.end(), '/') <= 1) fill(id);
  }
  fill(model_name(dir, ""));
  if (!name.empty()) m.name = name;
  return m;
}

// gguf-py's size_label: "1.2M", "998K", "4x1.1M" (experts: shared + one expert's parameters).
std::string size_label(const ConvertPlan& plan) {
  uint64_t total = 0, shared = 0, expert = 0, expert_sum = 0, n_expert_tensors = 0;
  for (const SourceTensor& t : plan.tensors) {
    const uint64_t n = t.n_elements();
    total += n;
    if (t.name.find("_exps.") != std::string::npos && t.dims.size() >= 3) {
      expert += n / t.dims[2];
      expert_sum += t.dims[2];
      ++n_expert_tensors;
    } else {
      shared += n;
    }
  }
  const uint64_t expert_count = n_expert_tensors ? expert_sum / n_expert_tensors : 0;
  auto rounded = [](uint64_t count) {
    const double c = static_cast<double>(count);
    double scaled;
    const char* suffix;
    if (c > 1e12) scaled = c * 1e-12, suffix = "T";
    else if (c > 1e9) scaled = c * 1e-9, suffix = "B";
    else if (c > 1e6) scaled = c * 1e-6, suffix = "M";
    else scaled = c * 1e-3, suffix = "K";
    std::string r = fmt::format("{}", static_cast<int64_t>(std::nearbyint(scaled)));  // Python round(): half to even
    r.erase(0, r.find_first_not_of('0') == std::string::npos ? r.size() : r.find_first_not_of('0'));
    const int fix = std::max(2 - static_cast<int>(r.size()), 0);
    return fmt::format("{:.{}f}{}", scaled, fix, suffix);
  };
  if (expert_count > 0) return fmt::format("{}x{}", expert_count, rounded(shared + expert));
  return rounded(total);
}

void add_hf_converter_metadata(ConvertPlan& plan, const Hparams& h, const RopeScaling& rs, const Config& cfg,
                               const std::string& dir, const std::string& name, std::optional<double> attn_factor) {
  using arch::HfKey;
  auto& md = plan.metadata;
  const std::string& A = h.arch_name;
  auto u32 = [&](const std::string& k, uint64_t v) { md.emplace_back(A + "." + k, GgufValue(static_cast<uint32_t>(v))); };
  auto f32 = [&](const std::string& k, double v) { md.emplace_back(A + "." + k, GgufValue(static_cast<float>(v))); };
  md.emplace_back("general.architecture", GgufValue(A));
  if (attn_factor) f32("rope.scaling.attn_factor", *attn_factor);
  md.emplace_back("general.type", GgufValue(std::string("model")));
  uint64_t total_params = 0;
  for (const SourceTensor& t : plan.tensors) total_params += t.n_elements();
  const ModelIdParts g = hf_converter_general(cfg, dir, name, total_params);
  md.emplace_back("general.name", GgufValue(*g.name));  // set_gguf_meta_model's order
  if (g.version) md.emplace_back("general.version", GgufValue(*g.version));
  if (g.org) md.emplace_back("general.organization", GgufValue(*g.org));
  if (g.finetune) md.emplace_back("general.finetune", GgufValue(*g.finetune));
  if (g.basename) md.emplace_back("general.basename", GgufValue(*g.basename));
  md.emplace_back("general.size_label", GgufValue(g.size_label ? *g.size_label : size_label(plan)));
  for (HfKey k : h.arch->hf_keys) {
    switch (k) {
      case HfKey::ContextLength: u32("context_length", h.n_ctx); break;
      case HfKey::EmbeddingLength: u32("embedding_length", h.n_embd); break;
      case HfKey::BlockCount: u32("block_count", h.n_layer); break;
      case HfKey::FeedForwardLength: u32("feed_forward_length", h.n_ff); break;
      case HfKey::HeadCount: u32("attention.head_count", h.n_head); break;
      case HfKey::HeadCountKv: u32("attention.head_count_kv", cfg.req_uint("num_key_value_heads", 4096)); break;
      case HfKey::HeadCountKvIfPresent:
        if (cfg.has("num_key_value_heads")) u32("attention.head_count_kv", h.n_head_kv);
        break;
      case HfKey::HeadCountKvOrHeads: u32("attention.head_count_kv", h.n_head_kv); break;
      case HfKey::RopeFreqBase: f32("rope.freq_base", cfg.req_float("rope_theta")); break;
      case HfKey::RopeFreqBaseIfPresent:
        if (h.rope_theta) f32("rope.freq_base", *h.rope_theta);
        break;
      case HfKey::RmsEps: f32("attention.layer_norm_rms_epsilon", h.rms_eps); break;
      case HfKey::ExpertCountIfPresent:
        if (cfg.has("num_local_experts")) u32("expert_count", cfg.req_uint("num_local_experts", 4096));
        break;
      case HfKey::ExpertUsedIfPresent:
        if (cfg.has("num_experts_per_tok")) {
          const uint64_t used = cfg.req_uint("num_experts_per_tok", 4096);
          if (h.n_expert && used > h.n_expert)
            fail("{}: num_experts_per_tok {} is larger than the expert count {}", cfg.path, used, h.n_expert);
          u32("expert_used_count", used);
        }
        break;
      case HfKey::KeyValueLength:
        cfg.req_uint("head_dim");
        u32("attention.key_length", h.head_dim);
        u32("attention.value_length", h.head_dim);
        break;
      case HfKey::KeyValueLengthIfPresent:
        if (h.explicit_head_dim) {
          u32("attention.key_length", h.head_dim);
          u32("attention.value_length", h.head_dim);
        }
        break;
      case HfKey::FileType: md.emplace_back("general.file_type", GgufValue(file_type_for(plan.outtype))); break;
      case HfKey::VocabSize: u32("vocab_size", h.n_vocab); break;
      case HfKey::RopeDimension: u32("rope.dimension_count", h.head_dim); break;
      case HfKey::RopeDimensionFromHeads: u32("rope.dimension_count", h.n_embd / h.n_head); break;
      case HfKey::RopeScalingLinear: {
        if (!rs.j || !rs.j->contains("factor") || !rs.j->contains("type") || (*rs.j)["type"] != "linear") break;
        const nlohmann::json& f = (*rs.j)["factor"];
        if (!f.is_number() || !std::isfinite(f.get<double>()) || f.get<double>() <= 0)
          fail("{}: rope_scaling factor is not a positive number", cfg.path);
        md.emplace_back(A + ".rope.scaling.type", GgufValue(std::string("linear")));
        f32("rope.scaling.factor", f.get<double>());
        break;
      }
      case HfKey::RopeOrigContext:
        u32("rope.scaling.original_context_length", cfg.req_uint("original_max_position_embeddings", 0xffffffffull));
        break;
      case HfKey::SlidingWindow: u32("attention.sliding_window", cfg.req_uint("sliding_window", 0xffffffffull)); break;
      case HfKey::SlidingWindowOr0:
        u32("attention.sliding_window", cfg.has("sliding_window") ? cfg.req_uint("sliding_window", 0xffffffffull) : 0);
        break;
      case HfKey::AttnSoftcap: f32("attn_logit_softcapping", cfg.req_float("attn_logit_softcapping")); break;
      case HfKey::FinalSoftcap: f32("final_logit_softcapping", cfg.req_float("final_logit_softcapping")); break;
    }
  }
}

// The vocabulary keys of the HfConverter layout: the SentencePiece vocabulary and SpecialVocab as b4748 reads
// them, then the class's fixed special ids and add_space_prefix.
void add_hf_converter_tokenizer(ConvertPlan& plan, const std::string& dir, const Hparams& h) {
  if (!h.arch->spm_tokenizer) fail("{}: {} takes a SentencePiece tokenizer.model", dir, h.arch_name);
  Vocab v = load_hf_vocab_b4748_spm(dir, h.n_vocab, h.arch->hf_vocab == arch::HfVocab::Phi3);
  std::optional<bool> space_prefix = h.arch->add_space_prefix ? h.arch->add_space_prefix : v.add_space_prefix;
  v.add_space_prefix.reset();
  for (auto& kv : v.to_metadata()) plan.metadata.push_back(std::move(kv));
  for (auto& [typ, id] : h.arch->fixed_special_ids)
    plan.metadata.emplace_back("tokenizer.ggml." + std::string(typ) + "_token_id", GgufValue(id));
  if (space_prefix) plan.metadata.emplace_back("tokenizer.ggml.add_space_prefix", GgufValue(*space_prefix));
  plan.metadata.emplace_back("general.quantization_version", GgufValue(static_cast<uint32_t>(2)));
}

// ---- architecture metadata (keys, order and value types as in ../shared/golden/tl-8m-F16.gguf) --------------
std::string model_name(const std::string& dir, const std::string& name) {
  if (!name.empty()) return name;
  std::error_code ec;
  fs::path d = fs::absolute(dir, ec);
  std::string n = d.filename().string();
  if (n.empty() || n == ".") n = d.parent_path().filename().string();
  return n;
}

void add_arch_metadata(ConvertPlan& plan, const Hparams& h, const RopeScaling& rs, const Config& cfg,
                       const std::string& name) {
  auto& md = plan.metadata;
  const std::string& A = h.arch_name;
  md.emplace_back("general.architecture", GgufValue(A));
  md.emplace_back("general.name", GgufValue(name));
  md.emplace_back(A + ".context_length", GgufValue(static_cast<uint32_t>(h.n_ctx)));
  md.emplace_back(A + ".embedding_length", GgufValue(static_cast<uint32_t>(h.n_embd)));
  md.emplace_back(A + ".block_count", GgufValue(static_cast<uint32_t>(h.n_layer)));
  md.emplace_back(A + ".feed_forward_length", GgufValue(static_cast<uint32_t>(h.n_ff)));
  md.emplace_back(A + ".rope.dimension_count", GgufValue(static_cast<uint32_t>(h.head_dim)));
  md.emplace_back(A + ".attention.head_count", GgufValue(static_cast<uint32_t>(h.n_head)));
  md.emplace_back(A + ".attention.head_count_kv", GgufValue(static_cast<uint32_t>(h.n_head_kv)));
  if (h.head_dim * h.n_head != h.n_embd) {
    md.emplace_back(A + ".attention.key_length", GgufValue(static_cast<uint32_t>(h.head_dim)));
    md.emplace_back(A + ".attention.value_length", GgufValue(static_cast<uint32_t>(h.head_dim)));
  }
  md.emplace_back(A + ".attention.layer_norm_rms_epsilon", GgufValue(static_cast<float>(h.rms_eps)));
  if (h.rope_theta) md.emplace_back(A + ".rope.freq_base", GgufValue(static_cast<float>(*h.rope_theta)));
  if (rs.j && (rs.type == "linear" || rs.type == "yarn")) {
    const nlohmann::json& j = *rs.j;
    if (!j.contains("factor") || !j["factor"].is_number()) fail("{}: rope_scaling has no numeric 'factor'", cfg.path);
    double f = j["factor"].get<double>();
    if (!std::isfinite(f) || f <= 0) fail("{}: rope_scaling factor {} is invalid", cfg.path, f);
    md.emplace_back(A + ".rope.scaling.type", GgufValue(rs.type));
    md.emplace_back(A + ".rope.scaling.factor", GgufValue(static_cast<float>(f)));
    if (rs.type == "yarn" && j.contains("original_max_position_embeddings") &&
        j["original_max_position_embeddings"].is_number_integer())
      md.emplace_back(A + ".rope.scaling.original_context_length",
                      GgufValue(static_cast<uint32_t>(j["original_max_position_embeddings"].get<int64_t>())));
  }
  md.emplace_back(A + ".vocab_size", GgufValue(static_cast<uint32_t>(h.n_vocab)));
  md.emplace_back("general.file_type", GgufValue(file_type_for(plan.outtype)));
  if (plan.outtype == "q8_0") md.emplace_back("general.quantization_version", GgufValue(static_cast<uint32_t>(2)));
}

// ---- tokenizer: llama prefers tokenizer.model (SentencePiece), qwen uses tokenizer.json (byte-level BPE) ----
void add_tokenizer_metadata(ConvertPlan& plan, const std::string& dir, const Hparams& h, const std::string& force_pre) {
  const Vocab vocab = load_hf_vocab(dir, h.arch->spm_tokenizer, h.n_vocab, force_pre);
  for (auto& kv : vocab.to_metadata()) plan.metadata.push_back(std::move(kv));
}

}  // namespace

OnnxLlamaShape onnx_shape_from_config(const std::string& config_path) {
  return onnx_shape(read_hparams(read_config(config_path)));
}

CheckpointLocation locate_checkpoint(const std::string& src_path) {
  const ModelPath m = classify_model_path(src_path);
  if (!m.is_checkpoint()) fail("{}: expected a Hugging Face checkpoint directory or a .onnx file", src_path);
  return CheckpointLocation{m.dir, m.onnx_path};
}

ConvertPlan plan_conversion(const std::string& src_path, const ConvertOptions& opts) {
  const CheckpointLocation loc = locate_checkpoint(src_path);
  const Config cfg = read_config(fs::path(loc.dir) / "config.json");
  const Hparams h = read_hparams(cfg);
  TensorSource src = loc.onnx_path.empty() ? detail::open_safetensors_source(loc.dir)
                                           : detail::open_onnx_source(loc.onnx_path, onnx_shape(h));
  ConvertPlan plan;
  plan.path = src_path;
  plan.arch = h.arch_name;
  plan.first_source_type = src.first_type;
  plan.source_bytes = src.total_bytes;
  plan.outtype = resolve_outtype(opts.outtype, src.first_type);
  const RopeScaling rs = read_rope_scaling(cfg, h);
  plan_tensors(plan, h, std::move(src));
  add_rope_freqs(plan, h, rs);
  if (h.arch->convert_layout == arch::ConvertLayout::HfConverter) {
    plan.hf_converter_layout = true;
    const std::optional<double> attn_factor = add_long_rope(plan, h, rs, cfg);
    add_hf_converter_metadata(plan, h, rs, cfg, loc.dir, opts.name, attn_factor);
    add_hf_converter_tokenizer(plan, loc.dir, h);
    return plan;
  }
  add_arch_metadata(plan, h, rs, cfg, model_name(loc.dir, opts.name));
  add_tokenizer_metadata(plan, loc.dir, h, opts.force_pre);
  return plan;
}

}  // namespace edgeq::convert
