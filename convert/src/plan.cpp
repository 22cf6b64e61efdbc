// plan_conversion: HF checkpoint (safetensors or ONNX export) -> the GGUF llama.cpp's converter would write.
// Architecture adapters: LlamaForCausalLM / MistralForCausalLM (GGUF arch "llama", Q/K row permutation),
// Qwen2ForCausalLM ("qwen2", q/k/v biases, no permutation), Qwen3ForCausalLM ("qwen3", q/k norms).
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "edgeq/convert/onnx_roles.h"
#include "edgeq/convert/plan.h"
#include "edgeq/formats/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/hf_tokenizer.h"
#include "edgeq/formats/mapped_file.h"
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

enum class Arch { Llama, Qwen2, Qwen3 };

struct Hparams {
  Arch arch;
  std::string arch_name;  // GGUF
  uint64_t n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx;
  double rms_eps;
  std::optional<double> rope_theta;
  bool tie;
  bool explicit_head_dim;
};

// ---- expected tensors -------------------------------------------------------------------------------------
enum class Perm { None, Q, K };

struct Want {
  std::string gguf;
  std::string hf;
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
  if (a == "LlamaForCausalLM" || a == "MistralForCausalLM") {
    h.arch = Arch::Llama;
    h.arch_name = "llama";
  } else if (a == "Qwen2ForCausalLM") {
    h.arch = Arch::Qwen2;
    h.arch_name = "qwen2";
  } else if (a == "Qwen3ForCausalLM") {
    h.arch = Arch::Qwen3;
    h.arch_name = "qwen3";
  } else {
    fail("{}: unknown architecture '{}' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)",
         c.path, a);
  }
  h.n_embd = c.req_uint("hidden_size");
  h.n_layer = c.req_uint("num_hidden_layers", 4096);
  h.n_ff = c.req_uint("intermediate_size");
  h.n_head = c.req_uint("num_attention_heads", 4096);
  h.n_head_kv = c.opt_uint("num_key_value_heads", 4096).value_or(h.n_head);
  h.n_vocab = c.req_uint("vocab_size");
  h.n_ctx = c.req_uint("max_position_embeddings", 0xffffffffull);
  h.rms_eps = c.req_float("rms_norm_eps");
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
  if (h.arch == Arch::Llama && h.head_dim % 2 != 0) fail("{}: head_dim {} must be even for RoPE", c.path, h.head_dim);
  return h;
}

std::vector<Want> expected_tensors(const Hparams& h, const TensorSource& src) {
  std::set<std::string> present;
  for (auto& t : src.tensors) present.insert(t.name);
  std::vector<Want> w;
  const uint64_t q_rows = h.n_head * h.head_dim, kv_rows = h.n_head_kv * h.head_dim;
  const bool llama = h.arch == Arch::Llama;
  w.push_back({"token_embd.weight", "model.embed_tokens.weight", {h.n_vocab, h.n_embd}});
  for (uint64_t l = 0; l < h.n_layer; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    std::string b = "blk." + std::to_string(l) + ".";
    auto add = [&](const std::string& g, const std::string& hf, std::vector<uint64_t> shape, Perm perm, bool required) {
      if (!required && !present.count(hf)) return;
      w.push_back({b + g, p + hf, std::move(shape), perm, required});
    };
    const bool qkv_bias = h.arch == Arch::Qwen2;  // Qwen2 always has q/k/v biases; others take them when present
    add("attn_norm.weight", "input_layernorm.weight", {h.n_embd}, Perm::None, true);
    add("attn_q.weight", "self_attn.q_proj.weight", {q_rows, h.n_embd}, llama ? Perm::Q : Perm::None, true);
    add("attn_q.bias", "self_attn.q_proj.bias", {q_rows}, llama ? Perm::Q : Perm::None, qkv_bias);
    add("attn_k.weight", "self_attn.k_proj.weight", {kv_rows, h.n_embd}, llama ? Perm::K : Perm::None, true);
    add("attn_k.bias", "self_attn.k_proj.bias", {kv_rows}, llama ? Perm::K : Perm::None, qkv_bias);
    add("attn_v.weight", "self_attn.v_proj.weight", {kv_rows, h.n_embd}, Perm::None, true);
    add("attn_v.bias", "self_attn.v_proj.bias", {kv_rows}, Perm::None, qkv_bias);
    if (h.arch == Arch::Qwen3) {
      add("attn_q_norm.weight", "self_attn.q_norm.weight", {h.head_dim}, Perm::None, true);
      add("attn_k_norm.weight", "self_attn.k_norm.weight", {h.head_dim}, Perm::None, true);
    }
    add("attn_output.weight", "self_attn.o_proj.weight", {h.n_embd, q_rows}, Perm::None, true);
    add("attn_output.bias", "self_attn.o_proj.bias", {h.n_embd}, Perm::None, false);
    add("ffn_norm.weight", "post_attention_layernorm.weight", {h.n_embd}, Perm::None, true);
    add("ffn_gate.weight", "mlp.gate_proj.weight", {h.n_ff, h.n_embd}, Perm::None, true);
    add("ffn_gate.bias", "mlp.gate_proj.bias", {h.n_ff}, Perm::None, false);
    add("ffn_up.weight", "mlp.up_proj.weight", {h.n_ff, h.n_embd}, Perm::None, true);
    add("ffn_up.bias", "mlp.up_proj.bias", {h.n_ff}, Perm::None, false);
    add("ffn_down.weight", "mlp.down_proj.weight", {h.n_embd, h.n_ff}, Perm::None, true);
    add("ffn_down.bias", "mlp.down_proj.bias", {h.n_embd}, Perm::None, false);
  }
  w.push_back({"output_norm.weight", "model.norm.weight", {h.n_embd}});
  if (!h.tie && present.count("lm_head.weight")) w.push_back({"output.weight", "lm_head.weight", {h.n_vocab, h.n_embd}});
  return w;
}

bool ignored_tensor(const std::string& name, const Hparams& h) {
  if (name.find("rotary_emb.inv_freq") != std::string::npos) return true;  // llama.cpp skips it
  if (h.tie && name == "lm_head.weight") return true;                     // tied: token_embd serves as output
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
                  (rs.type == "llama3" && h.arch == Arch::Llama);
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

void plan_tensors(ConvertPlan& plan, const Hparams& h, TensorSource src_in) {
  auto src = std::make_shared<TensorSource>(std::move(src_in));
  plan.keep_alive = src->keep_alive;
  plan.keep_alive.push_back(src);
  std::map<std::string, const SourceTensor*> by_name;
  for (auto& t : src->tensors) by_name[t.name] = &t;
  std::set<std::string> used;
  for (const Want& w : expected_tensors(h, *src)) {
    auto it = by_name.find(w.hf);
    if (it == by_name.end()) fail("{}: missing tensor {} (needed for {})", src->path, w.hf, w.gguf);
    used.insert(w.hf);
    plan.tensors.push_back(plan_tensor(w, *it->second, h, plan.outtype));
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
  const Vocab vocab = load_hf_vocab(dir, h.arch == Arch::Llama, h.n_vocab, force_pre);
  for (auto& kv : vocab.to_metadata()) plan.metadata.push_back(std::move(kv));
}

}  // namespace

OnnxLlamaShape onnx_shape_from_config(const std::string& config_path) {
  return onnx_shape(read_hparams(read_config(config_path)));
}

CheckpointLocation locate_checkpoint(const std::string& src_path) {
  std::error_code ec;
  const fs::path sp(src_path);
  if (!fs::exists(sp, ec)) fail("{}: no such file or directory", src_path);
  if (!fs::is_directory(sp, ec) && !fs::is_regular_file(sp, ec))
    fail("{}: is not a regular file or a directory; refusing to read it", src_path);
  CheckpointLocation loc;
  if (fs::is_directory(sp, ec)) {
    loc.dir = sp.string();
    const bool has_st =
        fs::exists(sp / "model.safetensors", ec) || fs::exists(sp / "model.safetensors.index.json", ec);
    if (!has_st && fs::exists(sp / "model.onnx", ec)) loc.onnx_path = (sp / "model.onnx").string();
  } else if (sp.extension() == ".onnx") {
    loc.onnx_path = sp.string();
    loc.dir = sp.parent_path().empty() ? std::string(".") : sp.parent_path().string();
  } else {
    fail("{}: expected a Hugging Face checkpoint directory or a .onnx file", src_path);
  }
  return loc;
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
  plan_tensors(plan, h, std::move(src));
  const RopeScaling rs = read_rope_scaling(cfg, h);
  add_rope_freqs(plan, h, rs);
  add_arch_metadata(plan, h, rs, cfg, model_name(loc.dir, opts.name));
  add_tokenizer_metadata(plan, loc.dir, h, opts.force_pre);
  return plan;
}

}  // namespace edgeq::convert
