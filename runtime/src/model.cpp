#include "edgeq/runtime/model.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "edgeq/arch/arch.h"
#include "edgeq/base/error.h"
#include "edgeq/base/half.h"
#include "edgeq/formats/palette_layout.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/runtime/matmul.h"
#include "finite_check.h"

namespace edgeq::runtime {

namespace {

constexpr int64_t kMaxDim = int64_t(1) << 20;  // sanity limit for any hyperparameter

std::string dims_str(const std::vector<uint64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

struct Loader {
  const GgufFile& f;
  const std::string& path;
  std::string arch;
  bool with_data = true;  // false: a header without tensor data (shapes and types checked, nothing read)
  std::map<std::string, const palette::PalTensor*, std::less<>> pal;  // palettized weights by name

  int64_t get_int(const std::string& key, std::optional<int64_t> def = std::nullopt) const {
    const std::string full = arch + "." + key;
    const GgufValue* v = f.find(full);
    if (!v) {
      if (def) return *def;
      fail("{}: missing hyperparameter {}", path, full);
    }
    if (v->type() == GgufType::ARRAY) fail("{}: {}: per-layer arrays are not supported", path, full);
    if (!v->is_integer()) fail("{}: {}: expected an integer, found {}", path, full, gguf_type_name(v->type()));
    const int64_t x = v->as_int();
    if (x < 0 || x > kMaxDim * 64) fail("{}: {} = {} is out of range", path, full, x);
    return x;
  }
  double get_float(const std::string& key, double def) const {
    const std::string full = arch + "." + key;
    const GgufValue* v = f.find(full);
    if (!v) return def;
    if (!v->is_number()) fail("{}: {}: expected a number, found {}", path, full, gguf_type_name(v->type()));
    const double x = v->as_double();
    if (!std::isfinite(x)) fail("{}: {} is not finite", path, full);
    return x;
  }

  const GgufTensorInfo* find(const std::string& name) const { return f.find_tensor(name); }

  // The dims of a weight, plain or palettized; nullptr when absent.
  const std::vector<uint64_t>* dims_of(const std::string& name) const {
    if (const GgufTensorInfo* t = find(name)) return &t->dims;
    if (auto it = pal.find(name); it != pal.end()) return &it->second->dims;
    return nullptr;
  }

  Weight palettized(const palette::PalTensor& p, uint64_t ne0, uint64_t ne1) const {
    if (p.dims.size() != 2 || p.dims[0] != ne0 || p.dims[1] != ne1)
      fail("{}: tensor {}: palettized shape {} does not match the hyperparameters (expected [{}, {}])", path, p.name,
           dims_str(p.dims), ne0, ne1);
    Weight w(f.view(*p.index));  // data == nullptr for a header only
    w.name = p.name;
    w.dims = p.dims;
    auto pt = std::make_shared<Palette>();
    pt->bits = p.bits;
    pt->group_rows = p.group_rows;
    pt->row_bytes = palette::index_row_bytes(ne0, p.bits);
    if (with_data) {
      const TensorView lut = f.view(*p.lut);
      pt->lut.resize(lut.n_elements());
      f16_to_f32_row(reinterpret_cast<const uint16_t*>(lut.data), pt->lut.data(), static_cast<int64_t>(pt->lut.size()));
      for (float x : pt->lut)
        if (!std::isfinite(x)) fail("{}: tensor {}: contains NaN or Inf", path, p.lut->name);
    }
    w.palette = std::move(pt);
    return w;
  }

  Weight matrix(const std::string& name, uint64_t ne0, uint64_t ne1, bool required = true) const {
    const GgufTensorInfo* t = find(name);
    if (!t) {
      if (auto it = pal.find(name); it != pal.end()) return palettized(*it->second, ne0, ne1);
      if (!required) return {};
      fail("{}: tensor {}: missing", path, name);
    }
    if (t->dims.size() != 2 || t->dims[0] != ne0 || t->dims[1] != ne1)
      fail("{}: tensor {}: shape {} does not match the hyperparameters (expected [{}, {}])", path, name,
           dims_str(t->dims), ne0, ne1);
    if (t->type != GgmlType::F32 && !quant::can_dequantize(t->type))
      fail("{}: tensor {}: type {} cannot be dequantized", path, name, ggml_type_name(t->type));
    return f.view(*t);  // data == nullptr for a header only
  }

  // A 3-D tensor [ne0, ne1, n] (experts): one 2-D view per expert.
  std::vector<Weight> experts(const std::string& name, uint64_t ne0, uint64_t ne1, uint64_t n) const {
    const GgufTensorInfo* t = find(name);
    if (!t) fail("{}: tensor {}: missing", path, name);
    if (t->dims.size() != 3 || t->dims[0] != ne0 || t->dims[1] != ne1 || t->dims[2] != n)
      fail("{}: tensor {}: shape {} does not match the hyperparameters (expected [{}, {}, {}])", path, name,
           dims_str(t->dims), ne0, ne1, n);
    if (t->type != GgmlType::F32 && !quant::can_dequantize(t->type))
      fail("{}: tensor {}: type {} cannot be dequantized", path, name, ggml_type_name(t->type));
    const TensorView all = f.view(*t);
    const uint64_t bytes = all.row_bytes() * ne1;
    std::vector<Weight> out;
    for (uint64_t e = 0; e < n; ++e) {
      TensorView v = all;
      v.dims = {ne0, ne1};
      v.nbytes = bytes;
      if (v.data) v.data += e * bytes;
      out.emplace_back(std::move(v));
    }
    return out;
  }

  std::vector<float> vec(const std::string& name, uint64_t n, bool required = true) const {
    const GgufTensorInfo* t = find(name);
    if (!t) {
      if (!required) return {};
      fail("{}: tensor {}: missing", path, name);
    }
    uint64_t ne = 1;
    for (uint64_t d : t->dims) ne *= d;
    if (t->dims.empty() || t->dims[0] != n || ne != n)
      fail("{}: tensor {}: shape {} does not match the hyperparameters (expected [{}])", path, name,
           dims_str(t->dims), n);
    if (t->type != GgmlType::F32 && !quant::can_dequantize(t->type))
      fail("{}: tensor {}: type {} cannot be dequantized", path, name, ggml_type_name(t->type));
    if (!with_data) return {};
    TensorView v = f.view(*t);
    std::vector<float> out(n);
    dequantize_rows(v, 0, 1, out.data());
    for (float x : out)
      if (!std::isfinite(x)) fail("{}: tensor {}: contains NaN or Inf", path, name);
    return out;
  }
};

}  // namespace

bool ModelConfig::swa_layer(int64_t il) const {
  if (n_swa <= 0 || !traits) return false;
  switch (traits->window) {
    case arch::SlidingWindow::None: return false;
    case arch::SlidingWindow::AllLayers: return true;
    case arch::SlidingWindow::EvenLayers: return il % 2 == 0;
  }
  return false;
}

const std::vector<float>& Model::rope_factors_for(int64_t n_ctx) const {
  if (!rope_freqs_.empty() || rope_long_.empty()) return rope_freqs_;
  return n_ctx > cfg_.n_ctx_orig ? rope_long_ : rope_short_;  // llama.cpp's build_rope_factors
}

bool Model::supports(const std::string& name) {
  const arch::Arch* a = arch::by_gguf_name(name);
  return a && a->runtime;
}

Model Model::load(const std::string& path) {
  Model m = build(GgufFile::open(path), true);  // validated before any page is read
  m.file_.populate();
  check_finite_tensors(m.file_);  // NaN/Inf in any weight, scale or table: an error naming the tensor
  return m;
}

void Model::check_header(const GgufFile& header) {
  if (!supports(header.architecture())) return;  // not ours to judge: llama.cpp knows more architectures
  build(header, false);
}

Model Model::build(GgufFile file, bool with_data) {
  Model m;
  m.file_ = std::move(file);
  const GgufFile& f = m.file_;
  const std::string& path = f.path();
  ModelConfig& c = m.cfg_;
  c.arch = f.architecture();
  if (!supports(c.arch))
    fail("{}: unsupported architecture '{}' (supported: {})", path, c.arch, arch::runtime_list());
  const arch::Arch& A = *arch::by_gguf_name(c.arch);
  c.traits = &A;
  const std::vector<palette::PalTensor> pal = palette::palettized_tensors(f);
  Loader L{f, path, c.arch, with_data, {}};
  for (const auto& p : pal) L.pal.emplace(p.name, &p);
  c.name = f.get_string("general.name").value_or(std::filesystem::path(path).stem().string());

  c.n_layer = L.get_int("block_count");
  c.n_embd = L.get_int("embedding_length");
  c.n_ff = L.get_int("feed_forward_length");
  c.n_head = L.get_int("attention.head_count");
  c.n_head_kv = L.get_int("attention.head_count_kv", c.n_head);
  if (c.n_layer < 1 || c.n_layer > 4096) fail("{}: {}.block_count = {} is out of range", path, c.arch, c.n_layer);
  if (c.n_embd < 1 || c.n_embd > kMaxDim) fail("{}: {}.embedding_length = {} is out of range", path, c.arch, c.n_embd);
  if (c.n_ff < 1 || c.n_ff > kMaxDim) fail("{}: {}.feed_forward_length = {} is out of range", path, c.arch, c.n_ff);
  if (c.n_head < 1 || c.n_head > 4096) fail("{}: {}.attention.head_count = {} is out of range", path, c.arch, c.n_head);
  if (c.n_head_kv < 1 || c.n_head % c.n_head_kv != 0)
    fail("{}: {}.attention.head_count_kv = {} must divide head_count = {}", path, c.arch, c.n_head_kv, c.n_head);
  const int64_t hd_default = c.n_embd % c.n_head == 0 ? c.n_embd / c.n_head : 0;
  c.head_dim_k = L.get_int("attention.key_length", hd_default);
  c.head_dim_v = L.get_int("attention.value_length", c.head_dim_k);
  if (c.head_dim_k < 2 || c.head_dim_k > 4096 || c.head_dim_k % 2 != 0 || c.head_dim_v < 1 || c.head_dim_v > 4096)
    fail("{}: {}.attention.key_length/value_length: head dimensions k={} v={} are invalid (k even, 2..4096)", path,
         c.arch, c.head_dim_k, c.head_dim_v);
  c.n_rot = L.get_int("rope.dimension_count", c.head_dim_k);
  if (c.n_rot < 2 || c.n_rot > c.head_dim_k || c.n_rot % 2 != 0)
    fail("{}: {}.rope.dimension_count = {} is invalid for head dimension {}", path, c.arch, c.n_rot, c.head_dim_k);
  c.n_ctx_train = L.get_int("context_length", 0);
  if (f.find(c.arch + ".context_length") && c.n_ctx_train < 1)
    fail("{}: {}.context_length = {} is out of range (>= 1)", path, c.arch, c.n_ctx_train);
  // Every float the forward pass reads: finite (get_float) and in the range the architecture allows.
  auto positive = [&](const char* key, double def, double hi) {
    const double x = L.get_float(key, def);
    if (!(x > 0.0) || x > hi) fail("{}: {}.{} = {} is out of range (> 0, <= {})", path, c.arch, key, x, hi);
    return static_cast<float>(x);
  };
  c.rms_eps = positive("attention.layer_norm_rms_epsilon", A.default_rms_eps, 1.0);
  c.rope_base = positive("rope.freq_base", A.default_rope_base, 1e12);
  c.rope_mode = A.rope == arch::RopeMode::Normal ? RopeMode::Normal : RopeMode::Neox;
  c.has_qkv_bias = A.qkv_bias;
  c.has_qk_norm = A.qk_norm;
  c.n_expert = L.get_int("expert_count", 0);
  c.n_expert_used = L.get_int("expert_used_count", 0);
  if (c.n_expert > 0 && !A.has(arch::Role::FfnGateExps))
    fail("{}: {}.expert_count = {}: the architecture has no experts", path, c.arch, c.n_expert);
  if (c.n_expert > 256 || (c.n_expert > 0 && (c.n_expert_used < 1 || c.n_expert_used > c.n_expert)))
    fail("{}: {}.expert_count = {} with {}.expert_used_count = {} is out of range (1 <= used <= count <= 256)", path,
         c.arch, c.n_expert, c.arch, c.n_expert_used);
  if (c.n_expert == 0 && c.n_expert_used != 0)
    fail("{}: {}.expert_used_count = {} but {}.expert_count is 0 or missing", path, c.arch, c.n_expert_used, c.arch);
  if (c.n_expert == 0 && A.find(arch::Role::FfnGateExps) && A.find(arch::Role::FfnGateExps)->need == arch::Need::Required)
    fail("{}: {}.expert_count is missing", path, c.arch);
  if (A.window != arch::SlidingWindow::None) {
    c.n_swa = L.get_int("attention.sliding_window", A.default_window ? std::optional<int64_t>(*A.default_window)
                                                                      : std::nullopt);
    if (c.n_swa < 1) fail("{}: {}.attention.sliding_window = {} is out of range (>= 1)", path, c.arch, c.n_swa);
  }
  if (A.embd_scale == arch::EmbdScale::SqrtNEmbd) c.embd_scale = std::sqrt(static_cast<float>(c.n_embd));
  // The query scale where llama.cpp applies it (arch::QueryScale).
  const float hd_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim_k));
  if (A.query_scale != arch::QueryScale::Softmax) {
    c.q_scale = hd_scale;
    if (A.query_scale == arch::QueryScale::Gemma2BySize && c.n_layer == 46)  // LLM_TYPE_27B
      c.q_scale = 1.0f / std::sqrt(static_cast<float>(c.n_embd / c.n_head));
  } else {
    c.kq_scale = hd_scale;
  }
  if (A.attn_softcap) c.attn_softcap = positive("attn_logit_softcapping", 50.0, 1e6);
  if (A.final_softcap) c.final_softcap = positive("final_logit_softcapping", 30.0, 1e6);
  c.rope_attn_factor = positive("rope.scaling.attn_factor", 1.0, 1e3);
  c.n_ctx_orig = L.get_int("rope.scaling.original_context_length", c.n_ctx_train);
  if (f.find(c.arch + ".rope.scaling.original_context_length") && c.n_ctx_orig < 1)
    fail("{}: {}.rope.scaling.original_context_length = {} is out of range (>= 1)", path, c.arch, c.n_ctx_orig);
  // block_count must match the layers present: a tensor of a layer beyond it would be silently unused.
  for (const auto& t : f.tensors()) {
    if (t.name.rfind("blk.", 0) != 0) continue;
    const int64_t il = std::strtoll(t.name.c_str() + 4, nullptr, 10);
    if (il >= c.n_layer)
      fail("{}: {}.block_count = {} but the file has tensor {} (layer {})", path, c.arch, c.n_layer, t.name, il);
  }

  // Vocabulary size: <arch>.vocab_size, else token_embd's second dimension.
  const std::vector<uint64_t>* te = L.dims_of("token_embd.weight");
  if (!te) fail("{}: tensor token_embd.weight: missing", path);
  if (te->size() != 2) fail("{}: tensor token_embd.weight: shape {} is not 2-D", path, dims_str(*te));
  c.n_vocab = L.get_int("vocab_size", static_cast<int64_t>((*te)[1]));
  if (c.n_vocab < 1 || c.n_vocab > (int64_t(1) << 24)) fail("{}: vocabulary size {} is out of range", path, c.n_vocab);
  if (const GgufValue* tok = f.find("tokenizer.ggml.tokens"); tok && tok->type() == GgufType::ARRAY) {
    const auto n = static_cast<int64_t>(tok->as_array().items.size());
    if (n != c.n_vocab)
      fail("{}: tokenizer.ggml.tokens has {} tokens but the model's vocabulary (token_embd rows) is {}", path, n,
           c.n_vocab);
  }

  const uint64_t E = c.n_embd, F = c.n_ff, V = c.n_vocab;
  const uint64_t QD = c.n_head * c.head_dim_k, KD = c.n_head_kv * c.head_dim_k, VD = c.n_head_kv * c.head_dim_v;
  const uint64_t OD = c.n_head * c.head_dim_v;
  m.tok_embd_ = L.matrix("token_embd.weight", E, V);
  m.output_norm_ = L.vec("output_norm.weight", E);
  m.output_ = A.tied_output ? Weight{} : L.matrix("output.weight", E, V, false);
  if (!m.output_.data) {
    c.tied_output = true;
    m.output_ = m.tok_embd_;
  }
  if (f.find_tensor("rope_freqs.weight")) {
    m.rope_freqs_ = L.vec("rope_freqs.weight", static_cast<uint64_t>(c.n_rot / 2));
  }
  if (A.long_rope && f.find_tensor("rope_factors_long.weight")) {
    m.rope_long_ = L.vec("rope_factors_long.weight", static_cast<uint64_t>(c.n_rot / 2));
    m.rope_short_ = L.vec("rope_factors_short.weight", static_cast<uint64_t>(c.n_rot / 2));
  }
  const bool moe = c.n_expert > 0;
  const uint64_t NE = static_cast<uint64_t>(c.n_expert);
  m.layers_.resize(c.n_layer);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    auto& l = m.layers_[i];
    const std::string p = "blk." + std::to_string(i) + ".";
    using arch::Role;
    auto name = [&](Role r) { return arch::gguf_name(r, i); };
    l.attn_norm = L.vec(name(Role::AttnNorm), E);
    if (A.attn_fused_qkv) {
      l.wqkv = L.matrix(name(Role::AttnQkv), E, QD + KD + VD);
    } else {
      l.wq = L.matrix(name(Role::AttnQ), E, QD);
      l.wk = L.matrix(name(Role::AttnK), E, KD);
      l.wv = L.matrix(name(Role::AttnV), E, VD);
    }
    l.wo = L.matrix(name(Role::AttnOut), OD, E);
    if (A.post_norms) {
      l.attn_post_norm = L.vec(name(Role::AttnPostNorm), E);
      l.ffn_post_norm = L.vec(name(Role::FfnPostNorm), E);
    }
    l.ffn_norm = L.vec(name(Role::FfnNorm), E);
    if (moe) {
      l.gate_inp = L.matrix(name(Role::FfnGateInp), E, NE);
      l.gate_exps = L.experts(name(Role::FfnGateExps), E, F, NE);
      l.up_exps = L.experts(name(Role::FfnUpExps), E, F, NE);
      l.down_exps = L.experts(name(Role::FfnDownExps), F, E, NE);
    } else if (A.ffn_fused_gate_up) {
      l.w_up = L.matrix(name(Role::FfnUp), E, 2 * F);
      l.w_down = L.matrix(name(Role::FfnDown), F, E);
    } else {
      l.w_gate = L.matrix(name(Role::FfnGate), E, F);
      l.w_up = L.matrix(name(Role::FfnUp), E, F);
      l.w_down = L.matrix(name(Role::FfnDown), F, E);
    }
    if (c.has_qkv_bias) {
      l.bq = L.vec(p + "attn_q.bias", QD);
      l.bk = L.vec(p + "attn_k.bias", KD);
      l.bv = L.vec(p + "attn_v.bias", VD);
    }
    if (c.has_qk_norm) {
      l.q_norm = L.vec(p + "attn_q_norm.weight", c.head_dim_k);
      l.k_norm = L.vec(p + "attn_k_norm.weight", c.head_dim_k);
    }
  }
  return m;
}

}  // namespace edgeq::runtime

namespace edgeq::runtime {

TensorView Model::replace_weight(const std::string& name, const TensorView& v) {
  std::vector<Weight*> hits;
  auto consider = [&](Weight& w) {
    if (w.data && w.name == name) hits.push_back(&w);
  };
  consider(tok_embd_);
  consider(output_);
  for (auto& l : layers_)
    for (Weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) consider(*w);
  // An MoE layer's stacked experts: the 3-D tensor replaced whole, its views one expert each.
  for (auto& l : layers_)
    for (auto* ex : {&l.gate_exps, &l.up_exps, &l.down_exps}) {
      if (ex->empty() || ex->front().name != name) continue;
      const Weight& e0 = ex->front();
      const uint64_t n = ex->size();
      if (v.dims != std::vector<uint64_t>{e0.dims[0], e0.dims[1], n})
        fail("{}: weight {} replaced by a tensor of other dims", path(), name);
      if (!quant::can_dequantize(v.type))
        fail("{}: weight {} cannot be replaced by a {} tensor", path(), name, ggml_type_name(v.type));
      TensorView old = e0;  // the views are consecutive slices of one tensor
      old.dims = v.dims;
      old.nbytes = e0.nbytes * n;
      const uint64_t bytes = v.nbytes / n;
      for (uint64_t e = 0; e < n; ++e) {
        TensorView s = v;
        s.dims = {v.dims[0], v.dims[1]};
        s.nbytes = bytes;
        s.data = v.data + e * bytes;
        static_cast<TensorView&>((*ex)[e]) = s;
        (*ex)[e].name = name;
      }
      return old;
    }
  if (hits.empty()) fail("{}: no weight named {} to replace", path(), name);
  Weight& first = *hits.front();
  if (v.dims != first.dims) fail("{}: weight {} replaced by a tensor of other dims", path(), name);
  if (!quant::can_dequantize(v.type)) fail("{}: weight {} cannot be replaced by a {} tensor", path(), name, ggml_type_name(v.type));
  if (first.palette) fail("{}: weight {} is palettized and cannot be replaced", path(), name);
  const TensorView old = first;
  for (Weight* w : hits) {
    static_cast<TensorView&>(*w) = v;
    w->name = name;
  }
  return old;
}

}  // namespace edgeq::runtime
