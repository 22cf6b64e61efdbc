// The architecture table: everything that differs between the decoder architectures edgeq knows (Llama,
// Qwen2/3, Gemma, Gemma 2, Phi-3, Mixtral ...), one entry per architecture. convert (HF side), the runtime
// (loader and forward pass), calibrate (matmul inputs, AWQ fold targets) and the quantize policy ask the table for
// a trait instead of comparing architecture names. Adding an architecture = adding one entry (docs/ARCHITECTURE.md,
// "Adding an architecture"). Facts follow llama.cpp b4748 (src/llama-arch.cpp, llama-model.cpp, llama.cpp's
// build_* graphs, convert_hf_to_gguf.py) and the HF modeling files.
//
// Depends on nothing but the standard library: formats, quant, runtime, calibrate and convert may all read it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace edgeq::arch {

// A tensor's role in the model: the GGUF stem is llama.cpp's (LLM_TENSOR_NAMES), shared by every architecture.
enum class Role {
  TokenEmbd,         // token_embd          [n_embd, n_vocab]
  OutputNorm,        // output_norm         [n_embd]
  Output,            // output              [n_embd, n_vocab]
  RopeFreqs,         // rope_freqs          [n_rot/2]   llama3 rope scaling (converter-made)
  RopeFactorsLong,   // rope_factors_long   [n_rot/2]   LongRoPE (phi3)
  RopeFactorsShort,  // rope_factors_short  [n_rot/2]
  AttnNorm,          // blk.N.attn_norm
  AttnQ,             // blk.N.attn_q        [n_embd, n_head*hd]
  AttnK,             // blk.N.attn_k        [n_embd, n_head_kv*hd]
  AttnV,             // blk.N.attn_v        [n_embd, n_head_kv*hd]
  AttnQkv,           // blk.N.attn_qkv      fused q|k|v rows (phi3)
  AttnOut,           // blk.N.attn_output   [n_head*hd, n_embd]
  AttnQNorm,         // blk.N.attn_q_norm   [hd]
  AttnKNorm,         // blk.N.attn_k_norm   [hd]
  AttnPostNorm,      // blk.N.post_attention_norm (gemma2)
  FfnNorm,           // blk.N.ffn_norm
  FfnGate,           // blk.N.ffn_gate      [n_embd, n_ff]
  FfnUp,             // blk.N.ffn_up        [n_embd, n_ff], or [n_embd, 2*n_ff] gate|up when ffn_fused_gate_up
  FfnDown,           // blk.N.ffn_down      [n_ff, n_embd]
  FfnPostNorm,       // blk.N.post_ffw_norm (gemma2)
  FfnGateInp,        // blk.N.ffn_gate_inp  [n_embd, n_expert]        MoE router
  FfnGateExps,       // blk.N.ffn_gate_exps [n_embd, n_ff, n_expert]  one 2-D matrix per expert
  FfnUpExps,         // blk.N.ffn_up_exps   [n_embd, n_ff, n_expert]
  FfnDownExps,       // blk.N.ffn_down_exps [n_ff, n_embd, n_expert]
};

// The GGUF stem of a role ("attn_q", "ffn_gate_exps" ...) and whether it lives in blk.N.
std::string_view gguf_stem(Role r);
bool per_layer(Role r);
// "blk.3.attn_q.weight", "token_embd.weight"; suffix "weight" or "bias".
std::string gguf_name(Role r, int64_t layer, std::string_view suffix = "weight");

enum class Need {
  Required,   // always present
  Optional,   // taken when present
  QkvBias,    // required when the architecture has q/k/v biases (Arch::qkv_bias), else optional
  Dense,      // required without experts (expert_count 0), absent with them
  Experts,    // required with experts, absent without them
  Untied,     // the output matrix: required unless the architecture always ties it
};

enum class Permute { None, Q, K };  // llama.cpp's converter permutes Q/K rows (HF -> GGUF) for Normal RoPE

// One tensor of the architecture. hf is the HF (safetensors) name pattern: "{L}" stands for the layer index and
// "{E}" for the expert index (HF stores experts one by one; GGUF stacks them in one 3-D tensor); empty when the
// tensor has no HF counterpart (made by the converter) or the converter's engineer has not filled it in yet.
struct TensorSpec {
  Role role;
  std::string_view suffix;  // "weight" or "bias"
  std::string_view hf;
  Need need = Need::Required;
  Permute permute = Permute::None;
};

enum class RopeMode { Normal, Neox };      // Normal: adjacent pairs (llama); Neox: pairs (i, i + n_rot/2)
enum class Activation { Silu, GeluTanh };  // the GLU's gate activation: silu(g)*u (SwiGLU) or gelu_tanh(g)*u
enum class SlidingWindow { None, AllLayers, EvenLayers };  // which layers mask keys older than the window
enum class EmbdScale { None, SqrtNEmbd };  // token embeddings multiplied by sqrt(n_embd) (gemma)
// Where 1/sqrt(head_dim) applies: in the softmax on Q·Kᵀ (llama.cpp's kq_scale: llama, qwen), or on q after RoPE
// with kq_scale 1 (build_gemma, build_phi3; q is rounded to f16 after it), or gemma2's by model size (b4748: 26
// and 42 layers 1/sqrt(head_dim), 46 layers (27B) 1/sqrt(n_embd/n_head); llama.cpp aborts on other layer
// counts, edgeq takes 1/sqrt(head_dim), HF's query_pre_attn_scalar default).
enum class QueryScale { Softmax, Query, Gemma2BySize };
// The 70B rule of llama-quantize (attn_v at Q5_K when it would be Q3_K/Q4_K): which 80-layer models llama.cpp
// types LLM_TYPE_70B.
enum class Type70B { Never, IfGqa, Always };

// How `convert` lays out the GGUF of an HF checkpoint. Edgeq: the layout of ../shared/golden/tl-8m-F16.gguf
// (tensors in table order, layer by layer; general.name the directory name; the keys of add_arch_metadata),
// kept for the architectures converted before the table. HfConverter: what llama.cpp b4748's
// convert_hf_to_gguf.py itself writes (the arch goldens): tensors in checkpoint order (shards by file name,
// names sorted, converter-made tensors first, experts stacked when a layer's last one is read),
// general.type/name/size_label, then the architecture's hf_keys, the vocabulary and general.quantization_version.
enum class ConvertLayout { Edgeq, HfConverter };

// One <arch>.* key of the HfConverter layout: which config.json value feeds it (convert knows the config keys
// and types). The order of Arch::hf_keys is the order llama.cpp's converter class writes them.
enum class HfKey {
  ContextLength,          // context_length        = max_position_embeddings (n_positions)
  EmbeddingLength,        // embedding_length      = hidden_size
  BlockCount,             // block_count           = num_hidden_layers
  FeedForwardLength,      // feed_forward_length   = intermediate_size
  HeadCount,              // attention.head_count  = num_attention_heads
  HeadCountKv,            // attention.head_count_kv = num_key_value_heads (required)
  HeadCountKvIfPresent,   // ... only when config.json has it (Model.set_gguf_parameters)
  HeadCountKvOrHeads,     // ... num_key_value_heads, else num_attention_heads (gemma)
  RopeFreqBase,           // rope.freq_base        = rope_theta (required)
  RopeFreqBaseIfPresent,  // ... only when present
  RmsEps,                 // attention.layer_norm_rms_epsilon = rms_norm_eps
  ExpertCountIfPresent,   // expert_count          = num_local_experts, when present
  ExpertUsedIfPresent,    // expert_used_count     = num_experts_per_tok, when present
  KeyValueLength,         // attention.key_length and value_length = head_dim (required)
  KeyValueLengthIfPresent,// ... only when config.json has head_dim
  FileType,               // general.file_type (the outtype)
  VocabSize,              // vocab_size            = vocab_size
  RopeDimension,          // rope.dimension_count  = head_dim, else hidden_size / num_attention_heads
  RopeDimensionFromHeads, // rope.dimension_count  = hidden_size / num_attention_heads (phi3)
  RopeScalingLinear,      // rope.scaling.type/factor when rope_scaling is {type: linear, factor} (LlamaModel)
  RopeOrigContext,        // rope.scaling.original_context_length = original_max_position_embeddings (required)
  SlidingWindow,          // attention.sliding_window = sliding_window (required)
  SlidingWindowOr0,       // ... 0 when absent or null (phi3)
  AttnSoftcap,            // attn_logit_softcapping  = attn_logit_softcapping (required)
  FinalSoftcap,           // final_logit_softcapping = final_logit_softcapping (required)
};

// How the converter class reads a SentencePiece tokenizer (HfConverter layout).
enum class HfVocab {
  Spm,   // _create_vocab_sentencepiece: added_tokens.json, then added_tokens_decoder (CONTROL when special or
         // looking special, else USER_DEFINED with U+2581 -> space), padding [PAD<i>]
  Phi3,  // Phi3MiniModel.set_vocab: the same from added_tokens_decoder and tokenizer.json's added_tokens, but
         // CONTROL only when "special" and no U+2581 replacement
};

struct Arch {
  std::string_view name;                     // the table's name ("mixtral")
  std::string_view gguf_name;                // general.architecture ("llama": Mixtral is llama with experts)
  std::vector<std::string_view> hf_classes;  // config.json "architectures"[0]
  std::vector<TensorSpec> tensors;           // in the order llama.cpp's converter writes them within a layer

  // Defaults when the GGUF has no key (llama.cpp's hparams defaults for the architecture).
  double default_rms_eps = 1e-6;
  double default_rope_base = 10000.0;

  RopeMode rope = RopeMode::Normal;
  bool qkv_bias = false;            // q/k/v biases always present (qwen2)
  bool qk_norm = false;             // per-head RMS norms on q and k before RoPE (qwen3)
  bool norm_plus_one = false;       // HF norm weights are w-1 (gemma): the converter stores w+1 in the GGUF
  bool post_norms = false;          // RMS norms after attention and after the FFN, before the residual (gemma2)
  bool attn_softcap = false;        // scores = cap*tanh(scores/cap), cap from <arch>.attn_logit_softcapping
  bool final_softcap = false;       // logits = cap*tanh(logits/cap), cap from <arch>.final_logit_softcapping
  SlidingWindow window = SlidingWindow::None;  // size from <arch>.attention.sliding_window
  std::optional<uint32_t> default_window;      // when the key is absent (gemma2: 4096)
  EmbdScale embd_scale = EmbdScale::None;
  QueryScale query_scale = QueryScale::Softmax;
  Activation ffn_act = Activation::Silu;
  bool ffn_fused_gate_up = false;   // ffn_up holds [gate; up] (2*n_ff rows), split in half (phi3)
  bool attn_fused_qkv = false;      // attn_qkv holds [q; k; v] rows (phi3)
  bool long_rope = false;           // LongRoPE: rope_factors_{long,short} chosen by context, attention factor
  bool tied_output = false;         // always tied (gemma): output.weight never exists, token_embd serves
  // Experts (from <arch>.expert_count / expert_used_count): router softmax over all experts, top-k, the k
  // weights renormalised to sum 1 when expert_weights_norm (Mixtral).
  bool expert_weights_norm = true;
  Type70B type_70b = Type70B::Never;
  bool falcon_quant_rules = false;  // llama-quantize's Falcon exceptions (output Q8_0, its ffn_down/attn_output rules)
  bool spm_tokenizer = false;       // prefer tokenizer.model (SentencePiece) over tokenizer.json at conversion
  // ---- HF conversion (convert_hf_to_gguf.py b4748), read by convert only ----
  ConvertLayout convert_layout = ConvertLayout::Edgeq;
  std::vector<HfKey> hf_keys;       // HfConverter layout: the <arch>.* keys in the converter's order
  HfVocab hf_vocab = HfVocab::Spm;
  // Special ids the converter class sets whatever the vocabulary (gemma: eot 107), written after the others.
  std::vector<std::pair<std::string_view, uint32_t>> fixed_special_ids;
  std::optional<bool> add_space_prefix;  // written last by the converter class (gemma: false); unset: from
                                         // tokenizer_config.json's add_prefix_space when present (LlamaModel)
  // HF config key of the expert count (MoE): the number of {E} instances of the expert tensors.
  std::string_view hf_expert_count_key;
  bool runtime = false;             // the runtime evaluates it (perplexity, KLD, generate, calibrate)

  const TensorSpec* find(Role r, std::string_view suffix = "weight") const;
  bool has(Role r) const { return find(r) != nullptr; }
};

// The table. Entries are looked up by GGUF name (the first entry with that name answers: "llama" serves the
// dense models and Mixtral alike) or by HF class.
const std::vector<Arch>& all();
const Arch* by_gguf_name(std::string_view gguf_name);
const Arch* by_hf_class(std::string_view hf_class);
// "LlamaForCausalLM, MistralForCausalLM, ..." / "llama, qwen2, ..." for error messages.
std::string hf_class_list();
std::string runtime_list();

// Adds an entry (tests, or a program embedding edgeq with its own architecture). Fails on a duplicate table name.
void add(Arch a);

}  // namespace edgeq::arch
