// The architecture table (arch.h). Each entry cites what it follows in llama.cpp b4748.
#include "edgeq/arch/arch.h"

#include <stdexcept>

namespace edgeq::arch {

namespace {

struct RoleInfo {
  Role role;
  std::string_view stem;
  bool per_layer;
};

// llama.cpp's LLM_TENSOR_NAMES (src/llama-arch.cpp): the same stem in every architecture.
constexpr RoleInfo kRoles[] = {
    {Role::TokenEmbd, "token_embd", false},
    {Role::OutputNorm, "output_norm", false},
    {Role::Output, "output", false},
    {Role::RopeFreqs, "rope_freqs", false},
    {Role::RopeFactorsLong, "rope_factors_long", false},
    {Role::RopeFactorsShort, "rope_factors_short", false},
    {Role::AttnNorm, "attn_norm", true},
    {Role::AttnQ, "attn_q", true},
    {Role::AttnK, "attn_k", true},
    {Role::AttnV, "attn_v", true},
    {Role::AttnQkv, "attn_qkv", true},
    {Role::AttnOut, "attn_output", true},
    {Role::AttnQNorm, "attn_q_norm", true},
    {Role::AttnKNorm, "attn_k_norm", true},
    {Role::AttnPostNorm, "post_attention_norm", true},
    {Role::FfnNorm, "ffn_norm", true},
    {Role::FfnGate, "ffn_gate", true},
    {Role::FfnUp, "ffn_up", true},
    {Role::FfnDown, "ffn_down", true},
    {Role::FfnPostNorm, "post_ffw_norm", true},
    {Role::FfnGateInp, "ffn_gate_inp", true},
    {Role::FfnGateExps, "ffn_gate_exps", true},
    {Role::FfnUpExps, "ffn_up_exps", true},
    {Role::FfnDownExps, "ffn_down_exps", true},
};

const RoleInfo& role_info(Role r) {
  for (const auto& i : kRoles)
    if (i.role == r) return i;
  throw std::logic_error("arch: role missing from kRoles");
}

using R = Role;
using N = Need;
using P = Permute;
using K = HfKey;

// convert_hf_to_gguf.py's Model.set_gguf_parameters followed by LlamaModel's (b4748): the keys of every class
// derived from LlamaModel (Mixtral).
std::vector<HfKey> llama_model_keys() {
  return {K::BlockCount, K::ContextLength, K::EmbeddingLength, K::FeedForwardLength, K::HeadCount,
          K::HeadCountKvIfPresent, K::RopeFreqBaseIfPresent, K::RmsEps, K::ExpertCountIfPresent,
          K::ExpertUsedIfPresent, K::KeyValueLengthIfPresent, K::FileType, K::VocabSize, K::RopeDimension,
          K::RopeScalingLinear};
}
// GemmaModel.set_gguf_parameters (Gemma2Model adds the soft-caps and the window).
std::vector<HfKey> gemma_model_keys() {
  return {K::ContextLength, K::EmbeddingLength, K::BlockCount, K::FeedForwardLength, K::HeadCount,
          K::HeadCountKvOrHeads, K::RmsEps, K::KeyValueLength, K::FileType};
}

// The HF names of the Llama family (LlamaForCausalLM and the models copying its layout).
std::vector<TensorSpec> llama_like_tensors(Permute q, Permute k, bool biases_listed) {
  std::vector<TensorSpec> t = {
      {R::TokenEmbd, "weight", "model.embed_tokens.weight"},
      {R::AttnNorm, "weight", "model.layers.{L}.input_layernorm.weight"},
      {R::AttnQ, "weight", "model.layers.{L}.self_attn.q_proj.weight", N::Required, q},
  };
  if (biases_listed) t.push_back({R::AttnQ, "bias", "model.layers.{L}.self_attn.q_proj.bias", N::QkvBias, q});
  t.push_back({R::AttnK, "weight", "model.layers.{L}.self_attn.k_proj.weight", N::Required, k});
  if (biases_listed) t.push_back({R::AttnK, "bias", "model.layers.{L}.self_attn.k_proj.bias", N::QkvBias, k});
  t.push_back({R::AttnV, "weight", "model.layers.{L}.self_attn.v_proj.weight"});
  if (biases_listed) t.push_back({R::AttnV, "bias", "model.layers.{L}.self_attn.v_proj.bias", N::QkvBias});
  return t;
}

std::vector<Arch> make_table() {
  std::vector<Arch> v;

  // llama (LLM_ARCH_LLAMA; build_llama): RMSNorm, Normal RoPE on Q/K rows permuted by the converter, SwiGLU,
  // optional biases (convert takes them when present), optional output (tied when absent). With
  // <arch>.expert_count > 0 it is Mixtral's MoE FFN (build_moe_ffn: softmax router, top-k, renormalised).
  {
    Arch a;
    a.name = "llama";
    a.gguf_name = "llama";
    a.hf_classes = {"LlamaForCausalLM", "MistralForCausalLM"};
    a.tensors = llama_like_tensors(P::Q, P::K, true);
    a.tensors.push_back({R::AttnOut, "weight", "model.layers.{L}.self_attn.o_proj.weight"});
    a.tensors.push_back({R::AttnOut, "bias", "model.layers.{L}.self_attn.o_proj.bias", N::Optional});
    a.tensors.push_back({R::FfnNorm, "weight", "model.layers.{L}.post_attention_layernorm.weight"});
    a.tensors.push_back({R::FfnGateInp, "weight", "", N::Experts});
    a.tensors.push_back({R::FfnGateExps, "weight", "", N::Experts});
    a.tensors.push_back({R::FfnDownExps, "weight", "", N::Experts});
    a.tensors.push_back({R::FfnUpExps, "weight", "", N::Experts});
    a.tensors.push_back({R::FfnGate, "weight", "model.layers.{L}.mlp.gate_proj.weight", N::Dense});
    a.tensors.push_back({R::FfnGate, "bias", "model.layers.{L}.mlp.gate_proj.bias", N::Optional});
    a.tensors.push_back({R::FfnUp, "weight", "model.layers.{L}.mlp.up_proj.weight", N::Dense});
    a.tensors.push_back({R::FfnUp, "bias", "model.layers.{L}.mlp.up_proj.bias", N::Optional});
    a.tensors.push_back({R::FfnDown, "weight", "model.layers.{L}.mlp.down_proj.weight", N::Dense});
    a.tensors.push_back({R::FfnDown, "bias", "model.layers.{L}.mlp.down_proj.bias", N::Optional});
    a.tensors.push_back({R::OutputNorm, "weight", "model.norm.weight"});
    a.tensors.push_back({R::Output, "weight", "lm_head.weight", N::Untied});
    a.tensors.push_back({R::RopeFreqs, "weight", "", N::Optional});
    a.default_rms_eps = 1e-5;
    a.default_rope_base = 10000.0;
    a.rope = RopeMode::Normal;
    a.type_70b = Type70B::IfGqa;  // llama.cpp: 80 layers and GQA (LLaMA-2 70B)
    a.spm_tokenizer = true;
    a.runtime = true;
    v.push_back(std::move(a));
  }
  // mixtral: GGUF arch "llama" with experts (convert_hf_to_gguf.py MixtralModel is LlamaModel: stacks
  // block_sparse_moe.experts.{E}.w1/w3/w2 into ffn_gate_exps/ffn_up_exps/ffn_down_exps, gate -> ffn_gate_inp).
  {
    Arch a = v.front();
    a.name = "mixtral";
    a.hf_classes = {"MixtralForCausalLM"};
    std::vector<TensorSpec> t;
    for (const TensorSpec& s : a.tensors) {
      TensorSpec c = s;
      if (c.need == N::Dense) continue;  // no dense FFN
      if (c.role == R::FfnGateInp) c.hf = "model.layers.{L}.block_sparse_moe.gate.weight";
      if (c.role == R::FfnGateExps) c.hf = "model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight";
      if (c.role == R::FfnDownExps) c.hf = "model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight";
      if (c.role == R::FfnUpExps) c.hf = "model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight";
      if (c.need == N::Experts) c.need = N::Required;
      if (c.role == R::FfnGate || c.role == R::FfnUp || c.role == R::FfnDown) continue;  // their biases
      t.push_back(c);
    }
    a.tensors = std::move(t);
    a.expert_weights_norm = true;
    a.convert_layout = ConvertLayout::HfConverter;  // the mixtral golden is convert_hf_to_gguf.py's own file
    a.hf_keys = llama_model_keys();
    a.hf_expert_count_key = "num_local_experts";
    v.push_back(std::move(a));
  }
  // qwen2 (LLM_ARCH_QWEN2; build_qwen2): q/k/v biases always, NeoX RoPE, no permutation.
  {
    Arch a;
    a.name = "qwen2";
    a.gguf_name = "qwen2";
    a.hf_classes = {"Qwen2ForCausalLM"};
    a.tensors = llama_like_tensors(P::None, P::None, true);
    a.tensors.push_back({R::AttnOut, "weight", "model.layers.{L}.self_attn.o_proj.weight"});
    a.tensors.push_back({R::AttnOut, "bias", "model.layers.{L}.self_attn.o_proj.bias", N::Optional});
    a.tensors.push_back({R::FfnNorm, "weight", "model.layers.{L}.post_attention_layernorm.weight"});
    a.tensors.push_back({R::FfnGate, "weight", "model.layers.{L}.mlp.gate_proj.weight"});
    a.tensors.push_back({R::FfnGate, "bias", "model.layers.{L}.mlp.gate_proj.bias", N::Optional});
    a.tensors.push_back({R::FfnUp, "weight", "model.layers.{L}.mlp.up_proj.weight"});
    a.tensors.push_back({R::FfnUp, "bias", "model.layers.{L}.mlp.up_proj.bias", N::Optional});
    a.tensors.push_back({R::FfnDown, "weight", "model.layers.{L}.mlp.down_proj.weight"});
    a.tensors.push_back({R::FfnDown, "bias", "model.layers.{L}.mlp.down_proj.bias", N::Optional});
    a.tensors.push_back({R::OutputNorm, "weight", "model.norm.weight"});
    a.tensors.push_back({R::Output, "weight", "lm_head.weight", N::Untied});
    a.default_rms_eps = 1e-6;
    a.default_rope_base = 1000000.0;
    a.rope = RopeMode::Neox;
    a.qkv_bias = true;
    a.type_70b = Type70B::Always;  // llama.cpp: Qwen2 at 80 layers is LLM_TYPE_70B
    a.runtime = true;
    v.push_back(std::move(a));
  }
  // qwen3 (LLM_ARCH_QWEN3; build_qwen3): qwen2 without mandatory biases, plus per-head q/k RMS norms.
  {
    Arch a = v.back();
    a.name = "qwen3";
    a.gguf_name = "qwen3";
    a.hf_classes = {"Qwen3ForCausalLM"};
    std::vector<TensorSpec> t;
    for (const TensorSpec& s : a.tensors) {
      t.push_back(s);
      if (s.role == R::AttnV && s.suffix == "bias") {
        t.push_back({R::AttnQNorm, "weight", "model.layers.{L}.self_attn.q_norm.weight"});
        t.push_back({R::AttnKNorm, "weight", "model.layers.{L}.self_attn.k_norm.weight"});
      }
    }
    a.tensors = std::move(t);
    a.qkv_bias = false;
    a.qk_norm = true;
    a.type_70b = Type70B::Never;
    v.push_back(std::move(a));
  }
  // gemma (LLM_ARCH_GEMMA; build_gemma): embeddings x sqrt(n_embd), norms stored w+1 by the converter, NeoX RoPE,
  // q scaled by 1/sqrt(head_dim) before Q·Kᵀ, GELU(tanh) GLU, output always tied.
  {
    Arch a;
    a.name = "gemma";
    a.gguf_name = "gemma";
    a.hf_classes = {"GemmaForCausalLM"};
    a.tensors = llama_like_tensors(P::None, P::None, false);
    a.tensors.push_back({R::AttnOut, "weight", "model.layers.{L}.self_attn.o_proj.weight"});
    a.tensors.push_back({R::FfnNorm, "weight", "model.layers.{L}.post_attention_layernorm.weight"});
    a.tensors.push_back({R::FfnGate, "weight", "model.layers.{L}.mlp.gate_proj.weight"});
    a.tensors.push_back({R::FfnUp, "weight", "model.layers.{L}.mlp.up_proj.weight"});
    a.tensors.push_back({R::FfnDown, "weight", "model.layers.{L}.mlp.down_proj.weight"});
    a.tensors.push_back({R::OutputNorm, "weight", "model.norm.weight"});
    a.default_rms_eps = 1e-6;
    a.rope = RopeMode::Neox;
    a.norm_plus_one = true;
    a.embd_scale = EmbdScale::SqrtNEmbd;
    a.query_scale = QueryScale::Query;
    a.ffn_act = Activation::GeluTanh;
    a.tied_output = true;
    a.spm_tokenizer = true;
    a.runtime = true;
    a.convert_layout = ConvertLayout::HfConverter;
    a.hf_keys = gemma_model_keys();
    a.fixed_special_ids = {{"eot", 107}};  // GemmaModel.set_vocab (CodeGemma's ids; prefix/suffix/middle/fsep
                                           // have no gguf-py handler in b4748 and are dropped)
    a.add_space_prefix = false;
    v.push_back(std::move(a));
  }
  // gemma2 (LLM_ARCH_GEMMA2; build_gemma2): gemma plus post-attention and post-FFN norms, attention and final
  // logit soft-caps, a sliding window on even layers (il % 2 == 0), the query scale by model size.
  {
    Arch a;
    a.name = "gemma2";
    a.gguf_name = "gemma2";
    a.hf_classes = {"Gemma2ForCausalLM"};
    a.tensors = llama_like_tensors(P::None, P::None, false);
    a.tensors.push_back({R::AttnOut, "weight", "model.layers.{L}.self_attn.o_proj.weight"});
    a.tensors.push_back({R::AttnPostNorm, "weight", "model.layers.{L}.post_attention_layernorm.weight"});
    a.tensors.push_back({R::FfnNorm, "weight", "model.layers.{L}.pre_feedforward_layernorm.weight"});
    a.tensors.push_back({R::FfnGate, "weight", "model.layers.{L}.mlp.gate_proj.weight"});
    a.tensors.push_back({R::FfnUp, "weight", "model.layers.{L}.mlp.up_proj.weight"});
    a.tensors.push_back({R::FfnDown, "weight", "model.layers.{L}.mlp.down_proj.weight"});
    a.tensors.push_back({R::FfnPostNorm, "weight", "model.layers.{L}.post_feedforward_layernorm.weight"});
    a.tensors.push_back({R::OutputNorm, "weight", "model.norm.weight"});
    a.default_rms_eps = 1e-6;
    a.rope = RopeMode::Neox;
    a.norm_plus_one = true;
    a.post_norms = true;
    a.attn_softcap = true;
    a.final_softcap = true;
    a.window = SlidingWindow::EvenLayers;
    a.default_window = 4096;
    a.embd_scale = EmbdScale::SqrtNEmbd;
    a.query_scale = QueryScale::Gemma2BySize;
    a.ffn_act = Activation::GeluTanh;
    a.tied_output = true;
    a.spm_tokenizer = true;
    a.runtime = true;
    a.convert_layout = ConvertLayout::HfConverter;
    a.hf_keys = gemma_model_keys();
    a.hf_keys.insert(a.hf_keys.end(), {K::AttnSoftcap, K::FinalSoftcap, K::SlidingWindow});
    a.add_space_prefix = false;
    v.push_back(std::move(a));
  }
  // phi3 (LLM_ARCH_PHI3; build_phi3): fused attn_qkv ([q; k; v] rows) and ffn_up ([gate; up], SwiGLU on the
  // halves), NeoX RoPE with LongRoPE factor tensors (long when the context exceeds the original one) and
  // attention factor, q scaled by 1/sqrt(head_dim), a sliding window on every layer, untied output.
  {
    Arch a;
    a.name = "phi3";
    a.gguf_name = "phi3";
    a.hf_classes = {"Phi3ForCausalLM"};
    a.tensors = {
        {R::TokenEmbd, "weight", "model.embed_tokens.weight"},
        {R::RopeFactorsLong, "weight", "", N::Optional},
        {R::RopeFactorsShort, "weight", "", N::Optional},
        {R::AttnNorm, "weight", "model.layers.{L}.input_layernorm.weight"},
        {R::AttnQkv, "weight", "model.layers.{L}.self_attn.qkv_proj.weight"},
        {R::AttnOut, "weight", "model.layers.{L}.self_attn.o_proj.weight"},
        {R::FfnNorm, "weight", "model.layers.{L}.post_attention_layernorm.weight"},
        {R::FfnUp, "weight", "model.layers.{L}.mlp.gate_up_proj.weight"},
        {R::FfnDown, "weight", "model.layers.{L}.mlp.down_proj.weight"},
        {R::OutputNorm, "weight", "model.norm.weight"},
        {R::Output, "weight", "lm_head.weight"},
    };
    a.default_rms_eps = 1e-5;
    a.rope = RopeMode::Neox;
    a.window = SlidingWindow::AllLayers;
    a.query_scale = QueryScale::Query;
    a.ffn_fused_gate_up = true;
    a.attn_fused_qkv = true;
    a.long_rope = true;
    a.spm_tokenizer = true;
    a.runtime = true;
    a.convert_layout = ConvertLayout::HfConverter;
    a.hf_keys = {K::ContextLength, K::RopeOrigContext, K::EmbeddingLength, K::FeedForwardLength, K::BlockCount,
                 K::HeadCount, K::HeadCountKv, K::RmsEps, K::RopeDimensionFromHeads, K::RopeFreqBase,
                 K::FileType, K::SlidingWindowOr0};
    a.hf_vocab = HfVocab::Phi3;
    v.push_back(std::move(a));
  }
  // falcon (LLM_ARCH_FALCON): listed for llama-quantize's Falcon rules only; neither converted nor evaluated.
  {
    Arch a;
    a.name = "falcon";
    a.gguf_name = "falcon";
    a.falcon_quant_rules = true;
    v.push_back(std::move(a));
  }
  return v;
}

std::vector<Arch>& table() {
  static std::vector<Arch> t = make_table();
  return t;
}

}  // namespace

std::string_view gguf_stem(Role r) { return role_info(r).stem; }
bool per_layer(Role r) { return role_info(r).per_layer; }

std::string gguf_name(Role r, int64_t layer, std::string_view suffix) {
  const RoleInfo& i = role_info(r);
  std::string s = i.per_layer ? "blk." + std::to_string(layer) + "." : std::string();
  s += i.stem;
  s += '.';
  s += suffix;
  return s;
}

const TensorSpec* Arch::find(Role r, std::string_view suffix) const {
  for (const TensorSpec& t : tensors)
    if (t.role == r && t.suffix == suffix) return &t;
  return nullptr;
}

const std::vector<Arch>& all() { return table(); }

const Arch* by_gguf_name(std::string_view gguf_name) {
  for (const Arch& a : table())
    if (a.gguf_name == gguf_name) return &a;
  return nullptr;
}

const Arch* by_hf_class(std::string_view hf_class) {
  for (const Arch& a : table())
    for (auto c : a.hf_classes)
      if (c == hf_class) return &a;
  return nullptr;
}

std::string hf_class_list() {
  std::string s;
  for (const Arch& a : table())
    for (auto c : a.hf_classes) (s += s.empty() ? "" : ", ") += c;
  return s;
}

std::string runtime_list() {
  std::string s;
  for (const Arch& a : table())
    if (a.runtime && by_gguf_name(a.gguf_name) == &a) (s += s.empty() ? "" : ", ") += a.gguf_name;
  return s;
}

void add(Arch a) {
  for (const Arch& b : table())
    if (b.name == a.name) throw std::invalid_argument("arch: duplicate table entry '" + std::string(a.name) + "'");
  table().push_back(std::move(a));
}

}  // namespace edgeq::arch
