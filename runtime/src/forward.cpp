#include "edgeq/runtime/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "edgeq/base/error.h"
#include "edgeq/base/half.h"
#include "finite_check.h"
#include "gemm.h"
#include "vec.h"

namespace edgeq::runtime {

namespace {

// ggml's rms_norm (the squares rounded to float, summed in double; scale = 1/sqrtf(mean + eps)) followed by the
// weight multiply.
void rms_norm_row(const float* x, const float* w, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * scale) * w[i];
}


}  // namespace

Context::Context(const Model& model, const ContextOptions& opt) : model_(model), opt_(opt), pool_(opt.n_threads) {
  const ModelConfig& c = model_.config();
  if (opt_.n_ctx < 1 || opt_.n_ctx > (int64_t(1) << 20)) fail("{}: context size {} is out of range", model_.path(), opt_.n_ctx);
  if (opt_.n_seq < 1 || opt_.n_seq > 64) fail("{}: {} parallel sequences is out of range (1..64)", model_.path(), opt_.n_seq);
  const uint64_t kd = c.n_head_kv * c.head_dim_k, vd = c.n_head_kv * c.head_dim_v;
  const uint64_t per = static_cast<uint64_t>(c.n_layer) * static_cast<uint64_t>(opt_.n_ctx * opt_.n_seq);
  if (per * (kd + vd) > (uint64_t(1) << 30))  // 4 GiB of f32
    fail("{}: the KV cache for {} x {} tokens would need {} MiB; use a smaller context", model_.path(), opt_.n_seq,
         opt_.n_ctx, per * (kd + vd) * 4 >> 20);
  kcache_.resize(static_cast<uint64_t>(c.n_layer * opt_.n_seq) * k_layer_size());
  vcache_.resize(per * vd);
  scores_.resize(pool_.size());
}

Context::~Context() = default;

int64_t Context::k_layer_size() const {
  const ModelConfig& c = model_.config();
  return c.n_head_kv * ((opt_.n_ctx + gemm::kPanel - 1) / gemm::kPanel) * c.head_dim_k * gemm::kPanel;
}

float* Context::vslot(int64_t il, int64_t seq) {
  const ModelConfig& c = model_.config();
  return vcache_.data() + static_cast<size_t>((il * opt_.n_seq + seq) * opt_.n_ctx * c.n_head_kv * c.head_dim_v);
}

void Context::ensure_rope(int64_t upto) {
  const ModelConfig& c = model_.config();
  const int64_t half = c.n_rot / 2;
  if (upto <= rope_filled_ || half == 0) return;
  rope_cos_.resize(static_cast<size_t>(upto * half));
  rope_sin_.resize(static_cast<size_t>(upto * half));
  const float theta_scale = std::pow(c.rope_base, -2.0f / static_cast<float>(c.n_rot));
  const auto& ff = model_.rope_factors_for(opt_.n_ctx);
  const float ms = c.rope_attn_factor;  // ggml's rope_yarn: cos and sin times mscale
  for (int64_t p = rope_filled_; p < upto; ++p) {
    float theta = static_cast<float>(p);
    for (int64_t i = 0; i < half; ++i) {
      const float t = ff.empty() ? theta : theta / ff[i];
      rope_cos_[p * half + i] = std::cos(t) * ms;
      rope_sin_[p * half + i] = std::sin(t) * ms;
      theta *= theta_scale;
    }
  }
  rope_filled_ = upto;
}

void Context::attention(int64_t il, int64_t n, int64_t pos0) {
  const ModelConfig& c = model_.config();
  const int64_t hdk = c.head_dim_k, hdv = c.head_dim_v;
  const int64_t QD = c.n_head * hdk, VD = c.n_head_kv * hdv, OD = c.n_head * hdv;
  const int64_t group = c.n_head / c.n_head_kv;
  const float scale = c.kq_scale, cap = c.attn_softcap, inv_cap = cap > 0.f ? 1.0f / cap : 0.f;
  const int64_t swa = c.swa_layer(il) ? c.n_swa : 0;
  const int64_t k_group = k_layer_size() / c.n_head_kv;
  const bool compat = opt_.ggml_compat;
  // Queries in blocks of kQBlock rows of one sequence; block [i0, i1) only needs keys 0 .. pos0 + i1 - 1
  // (causal mask), which bounds the score buffer and skips the masked half of the products.
  constexpr int64_t kQBlock = 64;
  const int64_t L = seq_len_, n_blocks = (L + kQBlock - 1) / kQBlock;
  // Per task: S = Q·Kᵀ (the group's keys are cached transposed, gemm.h's packed form), the causal softmax row by
  // row, then P·V.
  pool_.run(n / L * c.n_head * n_blocks, [&](int64_t task, int worker) {
    const int64_t sq = task / (c.n_head * n_blocks), h = task / n_blocks % c.n_head, blk = task % n_blocks;
    const float* kc = kslot(il, sq);
    const float* vc = vslot(il, sq);
    const int64_t i0 = blk * kQBlock, i1 = std::min(L, i0 + kQBlock), m = i1 - i0;
    const int64_t row0 = sq * L + i0;  // the block's first row in q_ and att_
    const int64_t nk = pos0 + i1;
    auto& S = scores_[worker];
    S.resize(static_cast<size_t>(kQBlock * nk));
    const int64_t g = h / group;
    if (compat) {  // llama.cpp's order of every operation (vec.h): tinyBLAS products, soft_max's sums
      for (int64_t r = 0; r < m; ++r) {
        float* s = S.data() + r * nk;
        const int64_t valid = pos0 + i0 + r + 1;
        const int64_t first = swa > 0 ? std::max<int64_t>(0, valid - swa) : 0;
        vec::kq_row(q_.data() + (row0 + r) * QD + h * hdk, kc + g * k_group, hdk, first, valid, s);
        if (cap > 0.f)
          for (int64_t j = first; j < valid; ++j) s[j] = std::tanh(s[j] * inv_cap) * cap;
        vec::softmax_window(s, first, valid, scale);
        round_f16(s + first, valid - first);
        vec::pv_row(s, first, valid, vc + g * hdv, VD, hdv, att_.data() + (row0 + r) * OD + h * hdv);
      }
      return;
    }
    gemm::gemm(m, nk, hdk, q_.data() + row0 * QD + h * hdk, QD, gemm::packed(kc + g * k_group, hdk), S.data(), nk);
    for (int64_t r = 0; r < m; ++r) {
      float* s = S.data() + r * nk;
      const int64_t valid = pos0 + i0 + r + 1;
      // Sliding window: llama.cpp masks key positions p with pos - p >= n_swa.
      const int64_t first = swa > 0 ? std::max<int64_t>(0, valid - swa) : 0;
      if (cap > 0.f)
        for (int64_t j = first; j < valid; ++j) s[j] = std::tanh(s[j] * inv_cap) * cap;
      vec::softmax(s + first, valid - first, scale);
      std::fill(s, s + first, 0.f);
      std::fill(s + valid, s + nk, 0.f);
    }
    gemm::gemm(m, hdv, nk, S.data(), nk, gemm::B{vc + g * hdv, VD, gemm::kPanel}, att_.data() + row0 * OD + h * hdv, OD);
  });
}

// The weights are finite (checked at load): a non-finite product means a finite weight too large for the
// activations (attention's softmax would otherwise absorb it into a plausible number).
static void check_product(const Model& model, const Weight& w, const float* y, int64_t n) {
  if (!all_finite(y, static_cast<size_t>(n) * static_cast<size_t>(w.n_rows())))
    fail("{}: tensor {}: its product with the activations is non-finite (NaN or Inf): the weight is finite but "
         "too large",
         model.path(), w.name);
}

void Context::matmul_shared(const float* x, int64_t n, int64_t ld,
                            std::initializer_list<std::pair<const Weight*, float*>> outs) {
  const bool compat = opt_.ggml_compat;
  [&] {
    if (matmul_kernels_shared(outs, x, n, ld, pool_, scratch_, compat)) return;
    ActRounding r = ActRounding::None;
    bool same = compat;
    for (const auto& o : outs) {
      const ActRounding ri = act_rounding_for(*o.first);
      if (&o == outs.begin()) r = ri;
      same = same && ri == r && !matmul_uses_kernel(*o.first, n, compat);
    }
    if (same && r != ActRounding::None && outs.size() > 1) {
      const int64_t in = static_cast<int64_t>(outs.begin()->first->dims[0]), ldr = act_stride(in);
      xr_.resize(static_cast<size_t>(n * ldr));
      pool_.run(n, [&](int64_t t, int) {
        std::memcpy(xr_.data() + t * ldr, x + t * ld, static_cast<size_t>(in) * sizeof(float));
        round_activations(r, xr_.data() + t * ldr, in);
      });
      matmul_dequant(outs, xr_.data(), n, ldr, pool_, scratch_);
      return;
    }
    for (const auto& o : outs)
      matmul(*o.first, x, n, ld, o.second, static_cast<int64_t>(o.first->n_rows()), pool_, scratch_, compat);
  }();
  for (const auto& o : outs) check_product(model_, *o.first, o.second, n);
}

void Context::check_tokens(const int32_t* tokens, int64_t n) const {
  const int64_t n_vocab = model_.config().n_vocab;
  for (int64_t t = 0; t < n; ++t)
    if (tokens[t] < 0 || tokens[t] >= n_vocab)
      fail("{}: token id {} is outside the vocabulary (size {})", model_.path(), tokens[t], n_vocab);
}

void Context::eval(const int32_t* tokens, int64_t n, int64_t first_logit, float* logits) {
  const ModelConfig& c = model_.config();
  if (n <= 0) return;
  if (first_logit < 0 || first_logit > n) fail("{}: eval: invalid first logit row {}", model_.path(), first_logit);
  if (n_past_ + n > opt_.n_ctx)
    fail("{}: eval: {} tokens after {} cached exceed the context size {}", model_.path(), n, n_past_, opt_.n_ctx);
  check_tokens(tokens, n);
  for (int64_t b0 = 0; b0 < n; b0 += kMaxBatch) {
    const int64_t b1 = std::min(n, b0 + kMaxBatch);
    const int64_t fl = std::clamp(first_logit - b0, int64_t(0), b1 - b0);
    float* out = logits && b0 + fl < b1 ? logits + (b0 + fl - first_logit) * c.n_vocab : nullptr;
    seq_len_ = b1 - b0;
    run_batch(tokens + b0, b1 - b0, fl, out);
    n_past_ += b1 - b0;
  }
}

void Context::eval_seqs(const int32_t* tokens, int64_t n_seq, int64_t len, int64_t first_logit, float* logits) {
  const ModelConfig& c = model_.config();
  if (n_seq < 1 || n_seq > opt_.n_seq || len < 1 || len > opt_.n_ctx)
    fail("{}: eval_seqs: {} sequences of {} tokens do not fit {} x {}", model_.path(), n_seq, len, opt_.n_seq, opt_.n_ctx);
  if (first_logit < 0 || first_logit > len) fail("{}: eval_seqs: invalid first logit row {}", model_.path(), first_logit);
  check_tokens(tokens, n_seq * len);
  n_past_ = 0;
  // One by one where eval would take matmul's other path for a product (fewer rows than kKernelMaxTokens, in
  // the last layer only the logit rows) or split a sequence into micro-batches.
  if (n_seq == 1 || len - first_logit < kKernelMaxTokens || len > kMaxBatch) {
    for (int64_t s = 0; s < n_seq; ++s) {
      eval(tokens + s * len, len, first_logit, logits ? logits + s * (len - first_logit) * c.n_vocab : nullptr);
      n_past_ = 0;
    }
    return;
  }
  seq_len_ = len;
  run_batch(tokens, n_seq * len, first_logit, logits);
}

void Context::prepare(int64_t n, int64_t pos_end) {
  const ModelConfig& c = model_.config();
  const int64_t E = c.n_embd, F = c.n_ff;
  const size_t N = static_cast<size_t>(n);
  x_.resize(N * E);
  h_.resize(N * E);
  tmp_.resize(N * E);
  q_.resize(N * c.n_head * c.head_dim_k);
  k_.resize(N * c.n_head_kv * c.head_dim_k);
  v_.resize(N * c.n_head_kv * c.head_dim_v);
  att_.resize(N * c.n_head * c.head_dim_v);
  ff_gate_.resize(N * F);
  ff_up_.resize(N * F * (c.traits && c.traits->ffn_fused_gate_up ? 2 : 1));
  qkv_.resize(c.traits && c.traits->attn_fused_qkv ? N * (c.n_head * c.head_dim_k + c.n_head_kv * (c.head_dim_k + c.head_dim_v)) : 0);
  ensure_rope(pos_end);
}

// The weights are finite (checked at load): non-finite activations are an overflow in layer il.
static void check_layer_output(const Model& model, const float* x, int64_t il, int64_t n) {
  if (!all_finite(x, static_cast<size_t>(n * model.config().n_embd)))
    fail("{}: layer {}: the activations became non-finite (NaN or Inf): a weight of blk.{} is finite but too large",
         model.path(), il, il);
}

void Context::embed(const int32_t* tokens, int64_t n, float* x) {
  const ModelConfig& c = model_.config();
  check_tokens(tokens, n);
  pool_.run(n, [&](int64_t t, int) {
    float* r = x + t * c.n_embd;
    dequantize_rows(model_.token_embd(), tokens[t], tokens[t] + 1, r);
    if (c.embd_scale != 1.f)
      for (int64_t i = 0; i < c.n_embd; ++i) r[i] *= c.embd_scale;
  });
}

void Context::eval_layer(int64_t il, float* x, int64_t n, int64_t pos0) {
  const ModelConfig& c = model_.config();
  if (il < 0 || il >= c.n_layer) fail("{}: eval_layer: layer {} does not exist", model_.path(), il);
  if (pos0 < 0 || n < 0 || pos0 + n > opt_.n_ctx)
    fail("{}: eval_layer: positions {}..{} exceed the context size {}", model_.path(), pos0, pos0 + n, opt_.n_ctx);
  const int64_t E = c.n_embd;
  for (int64_t b0 = 0; b0 < n; b0 += kMaxBatch) {  // the micro-batches eval uses
    const int64_t nb = std::min(n, b0 + kMaxBatch) - b0;
    prepare(nb, pos0 + b0 + nb);
    seq_len_ = nb;
    std::memcpy(x_.data(), x + b0 * E, static_cast<size_t>(nb * E) * sizeof(float));
    layer(il, nb, pos0 + b0, 0);
    check_layer_output(model_, x_.data(), il, nb);
    std::memcpy(x + b0 * E, x_.data(), static_cast<size_t>(nb * E) * sizeof(float));
  }
}

void Context::run_batch(const int32_t* tokens, int64_t n, int64_t first_logit, float* logits) {
  const ModelConfig& c = model_.config();
  const int64_t E = c.n_embd;
  prepare(n, n_past_ + seq_len_);
  pool_.run(n, [&](int64_t t, int) {
    float* r = x_.data() + t * E;
    dequantize_rows(model_.token_embd(), tokens[t], tokens[t] + 1, r);
    if (c.embd_scale != 1.f)
      for (int64_t i = 0; i < E; ++i) r[i] *= c.embd_scale;
  });
  for (int64_t il = 0; il < c.n_layer; ++il) {
    // The last layer only needs the rows whose logits are requested (as llama.cpp's inp_out_ids).
    const int64_t r0 = il == c.n_layer - 1 ? first_logit : 0;
    layer(il, n, n_past_, r0);
    if (il < c.n_layer - 1) check_layer_output(model_, x_.data(), il, n);
  }

  head(n, first_logit, logits);
}

void Context::head(int64_t n, int64_t first_logit, float* logits) {
  const ModelConfig& c = model_.config();
  const int64_t E = c.n_embd;
  const int64_t nl = n / seq_len_ * (seq_len_ - first_logit);  // compacted to the front of x_ by the last layer
  if (nl <= 0 || !logits) return;
  pool_.run(nl, [&](int64_t t, int) {
    rms_norm_row(x_.data() + t * E, model_.output_norm().data(), h_.data() + t * E, E, c.rms_eps);
  });
  matmul(model_.output(), h_.data(), nl, E, logits, c.n_vocab, pool_, scratch_, opt_.ggml_compat);
  if (c.final_softcap > 0.f) {  // llama.cpp: scale by 1/cap, tanh, scale by cap
    const float cap = c.final_softcap, inv = 1.0f / cap;
    pool_.run(nl, [&](int64_t t, int) {
      float* l = logits + t * c.n_vocab;
      for (int64_t i = 0; i < c.n_vocab; ++i) l[i] = std::tanh(l[i] * inv) * cap;
    });
  }
  if (!all_finite(logits, static_cast<size_t>(nl * c.n_vocab)))  // every weight is finite (checked at load)
    fail("{}: the logits became non-finite (NaN or Inf): a weight of the last layer, output_norm or output is "
         "finite but too large",
         model_.path());
}

void Context::eval_seqs_from(int64_t il0, const float* hidden, int64_t n_seq, int64_t len, int64_t first_logit,
                             float* logits, float* save) {
  const ModelConfig& c = model_.config();
  if (il0 < 0 || il0 >= c.n_layer) fail("{}: eval_seqs_from: layer {} does not exist", model_.path(), il0);
  if (n_seq < 1 || n_seq > opt_.n_seq || len < 1 || len > opt_.n_ctx || len > kMaxBatch)
    fail("{}: eval_seqs_from: {} sequences of {} tokens do not fit {} x {}", model_.path(), n_seq, len, opt_.n_seq,
         std::min(opt_.n_ctx, kMaxBatch));
  if (first_logit < 0 || first_logit > len) fail("{}: eval_seqs_from: invalid first logit row {}", model_.path(), first_logit);
  const int64_t n = n_seq * len;
  const size_t rows = static_cast<size_t>(n * c.n_embd);
  n_past_ = 0;
  seq_len_ = len;
  prepare(n, len);
  std::memcpy(x_.data(), hidden, rows * sizeof(float));
  for (int64_t il = il0; il < c.n_layer; ++il) {
    if (save) std::memcpy(save + static_cast<size_t>(il - il0) * rows, x_.data(), rows * sizeof(float));
    layer(il, n, 0, il == c.n_layer - 1 ? first_logit : 0);
  }
  head(n, first_logit, logits);
}

void Context::layer(int64_t il, int64_t n, int64_t pos0, int64_t r0) {
  const ModelConfig& c = model_.config();
  const int64_t E = c.n_embd;
  const int64_t hdk = c.head_dim_k, hdv = c.head_dim_v;
  const int64_t QD = c.n_head * hdk, KD = c.n_head_kv * hdk, VD = c.n_head_kv * hdv, OD = c.n_head * hdv;
  const bool compat = opt_.ggml_compat;
  const int64_t half = c.n_rot / 2;
  auto rope = [&](float* v, int64_t pos) {
    const float* cs = rope_cos_.data() + pos * half;
    const float* sn = rope_sin_.data() + pos * half;
    // ggml's rope as its FMA build computes it: x0·cos − x1·sin and x0·sin + x1·cos with the first product fused.
    if (c.rope_mode == RopeMode::Normal) {
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = std::fma(x0, cs[i], -(x1 * sn[i]));
        v[2 * i + 1] = std::fma(x0, sn[i], x1 * cs[i]);
      }
    } else {
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = v[i], x1 = v[i + half];
        v[i] = std::fma(x0, cs[i], -(x1 * sn[i]));
        v[i + half] = std::fma(x0, sn[i], x1 * cs[i]);
      }
    }
  };
  ActivationObserver* const obs = opt_.observer;
  const LayerWeights& L = model_.layers()[il];
  pool_.run(n, [&](int64_t t, int) { rms_norm_row(x_.data() + t * E, L.attn_norm.data(), h_.data() + t * E, E, c.rms_eps); });
  if (obs) obs->observe(il, MatmulInput::AttnQKV, h_.data(), n, E, E);
  if (L.wqkv.data) {  // fused: rows [q; k; v] (phi3), split as llama.cpp's views
    const int64_t W = QD + KD + VD;
    matmul(L.wqkv, h_.data(), n, E, qkv_.data(), W, pool_, scratch_, compat);
    pool_.run(n, [&](int64_t t, int) {
      const float* r = qkv_.data() + t * W;
      std::memcpy(q_.data() + t * QD, r, static_cast<size_t>(QD) * sizeof(float));
      std::memcpy(k_.data() + t * KD, r + QD, static_cast<size_t>(KD) * sizeof(float));
      std::memcpy(v_.data() + t * VD, r + QD + KD, static_cast<size_t>(VD) * sizeof(float));
    });
  } else {
    matmul_shared(h_.data(), n, E, {{&L.wq, q_.data()}, {&L.wk, k_.data()}, {&L.wv, v_.data()}});
  }
  const int64_t k_group = k_layer_size() / c.n_head_kv;
  const int64_t SL = seq_len_;
  pool_.run(n, [&](int64_t t, int) {
    float* kc = kslot(il, t / SL);
    float* vc = vslot(il, t / SL);
    float* q = q_.data() + t * QD;
    float* k = k_.data() + t * KD;
    float* v = v_.data() + t * VD;
    if (!L.bq.empty()) {
      for (int64_t i = 0; i < QD; ++i) q[i] += L.bq[i];
      for (int64_t i = 0; i < KD; ++i) k[i] += L.bk[i];
      for (int64_t i = 0; i < VD; ++i) v[i] += L.bv[i];
    }
    if (!L.q_norm.empty()) {
      for (int64_t h = 0; h < c.n_head; ++h) rms_norm_row(q + h * hdk, L.q_norm.data(), q + h * hdk, hdk, c.rms_eps);
      for (int64_t h = 0; h < c.n_head_kv; ++h) rms_norm_row(k + h * hdk, L.k_norm.data(), k + h * hdk, hdk, c.rms_eps);
    }
    const int64_t pos = pos0 + t % SL;
    for (int64_t h = 0; h < c.n_head; ++h) rope(q + h * hdk, pos);
    for (int64_t h = 0; h < c.n_head_kv; ++h) rope(k + h * hdk, pos);
    if (c.q_scale != 1.f)
      for (int64_t i = 0; i < QD; ++i) q[i] *= c.q_scale;
    if (compat) {  // llama.cpp: f16 KV cache; q is converted to f16 for the K·Q product
      round_f16(q, QD);
      round_f16(k, KD);
      round_f16(v, VD);
    }
    // Key p of position pos, KV head g, at [g][pos / kPanel][p][pos % kPanel].
    float* kp = kc + (pos / gemm::kPanel) * gemm::kPanel * hdk + pos % gemm::kPanel;
    for (int64_t g = 0; g < c.n_head_kv; ++g)
      for (int64_t p = 0; p < hdk; ++p) kp[g * k_group + p * gemm::kPanel] = k[g * hdk + p];
    std::memcpy(vc + pos * VD, v, static_cast<size_t>(VD) * sizeof(float));
  });
  attention(il, n, pos0);

  const int64_t nr = n / SL * (SL - r0);
  if (nr == 0) return;
  if (r0 > 0)  // rows r0.. of each sequence to the front (a row never moves past one not yet moved)
    for (int64_t s = 0; s < n / SL; ++s) {
      const int64_t keep = SL - r0;
      std::memmove(att_.data() + s * keep * OD, att_.data() + (s * SL + r0) * OD, static_cast<size_t>(keep * OD) * sizeof(float));
      std::memmove(x_.data() + s * keep * E, x_.data() + (s * SL + r0) * E, static_cast<size_t>(keep * E) * sizeof(float));
    }
  if (obs) obs->observe(il, MatmulInput::AttnOut, att_.data(), nr, OD, OD);
  matmul(L.wo, att_.data(), nr, OD, tmp_.data(), E, pool_, scratch_, compat);
  pool_.run(nr, [&](int64_t t, int) {
    float* x = x_.data() + t * E;
    float* o = tmp_.data() + t * E;
    if (!L.attn_post_norm.empty()) rms_norm_row(o, L.attn_post_norm.data(), o, E, c.rms_eps);
    for (int64_t i = 0; i < E; ++i) x[i] += o[i];
    rms_norm_row(x, L.ffn_norm.data(), h_.data() + t * E, E, c.rms_eps);
  });
  if (obs) obs->observe(il, MatmulInput::FfnGateUp, h_.data(), nr, E, E);
  if (c.n_expert > 0) moe_ffn(il, nr);
  else ffn(il, nr);
  pool_.run(nr, [&](int64_t t, int) {
    float* x = x_.data() + t * E;
    float* o = tmp_.data() + t * E;
    if (!L.ffn_post_norm.empty()) rms_norm_row(o, L.ffn_post_norm.data(), o, E, c.rms_eps);
    for (int64_t i = 0; i < E; ++i) x[i] += o[i];
  });
}

namespace {
// The GLU's product: act(g) · u in place in g (the table's activation).
void glu(arch::Activation a, float* g, const float* u, int64_t n) {
  if (a == arch::Activation::GeluTanh) vec::gelu_par(g, u, n);
  else vec::swiglu(g, u, n);
}
}  // namespace

void Context::ffn(int64_t il, int64_t nr) {
  const ModelConfig& c = model_.config();
  const LayerWeights& L = model_.layers()[il];
  const int64_t E = c.n_embd, F = c.n_ff;
  const bool compat = opt_.ggml_compat;
  ActivationObserver* const obs = opt_.observer;
  const arch::Activation act = c.traits->ffn_act;
  if (!L.w_gate.data) {  // fused [gate; up] rows in ffn_up (phi3): llama.cpp's LLM_FFN_SWIGLU on the two halves
    matmul(L.w_up, h_.data(), nr, E, ff_up_.data(), 2 * F, pool_, scratch_, compat);
    pool_.run(nr, [&](int64_t t, int) {
      const float* r = ff_up_.data() + t * 2 * F;
      float* g = ff_gate_.data() + t * F;
      std::memcpy(g, r, static_cast<size_t>(F) * sizeof(float));
      glu(act, g, r + F, F);
    });
  } else {
    matmul_shared(h_.data(), nr, E, {{&L.w_gate, ff_gate_.data()}, {&L.w_up, ff_up_.data()}});
    pool_.run(nr, [&](int64_t t, int) { glu(act, ff_gate_.data() + t * F, ff_up_.data() + t * F, F); });
  }
  if (obs) obs->observe(il, MatmulInput::FfnDown, ff_gate_.data(), nr, F, F);
  matmul(L.w_down, ff_gate_.data(), nr, F, tmp_.data(), E, pool_, scratch_, compat);
}

// llama.cpp's llm_build_moe_ffn (softmax gating): probs = softmax(router · x); the n_expert_used largest (in
// descending order, as ggml_top_k's argsort); their probabilities renormalised to sum 1 (expert_weights_norm);
// out = Σ_k w_k · down_k(act(gate_k · x) · (up_k · x)), added in the order of the selection. Each expert's product
// runs on the rows routed to it.
void Context::moe_ffn(int64_t il, int64_t nr) {
  const ModelConfig& c = model_.config();
  const LayerWeights& L = model_.layers()[il];
  const int64_t E = c.n_embd, F = c.n_ff, NE = c.n_expert, K = c.n_expert_used;
  const bool compat = opt_.ggml_compat;
  const arch::Activation act = c.traits->ffn_act;
  moe_probs_.resize(static_cast<size_t>(nr * NE));
  moe_w_.resize(static_cast<size_t>(nr * K));
  moe_sel_.resize(static_cast<size_t>(nr * K));
  matmul(L.gate_inp, h_.data(), nr, E, moe_probs_.data(), NE, pool_, scratch_, compat);
  const bool norm = c.traits->expert_weights_norm;
  pool_.run(nr, [&](int64_t t, int) {
    float* p = moe_probs_.data() + t * NE;
    vec::softmax(p, NE, 1.0f);
    int32_t* sel = moe_sel_.data() + t * K;
    std::vector<int32_t> idx(static_cast<size_t>(NE));
    for (int64_t e = 0; e < NE; ++e) idx[e] = static_cast<int32_t>(e);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
    float* w = moe_w_.data() + t * K;
    double sum = 0.0;  // ggml_sum_rows: in double
    for (int64_t k = 0; k < K; ++k) {
      sel[k] = idx[k];
      w[k] = p[idx[k]];
      sum += w[k];
    }
    if (norm)
      for (int64_t k = 0; k < K; ++k) w[k] /= static_cast<float>(sum);
  });
  // Per expert: gather its rows, gate/up/act/down, keep the outputs per (row, slot).
  moe_d_.resize(static_cast<size_t>(nr * K * E));
  ActivationObserver* const obs = opt_.observer;
  std::vector<int64_t> rows;
  for (int64_t e = 0; e < NE; ++e) {
    rows.clear();
    for (int64_t t = 0; t < nr; ++t)
      for (int64_t k = 0; k < K; ++k)
        if (moe_sel_[t * K + k] == e) rows.push_back(t * K + k);
    if (rows.empty()) {
      if (obs) {
        obs->observe_expert(il, MatmulInput::FfnGateUp, e, NE, nullptr, 0, E, E);
        obs->observe_expert(il, MatmulInput::FfnDown, e, NE, nullptr, 0, F, F);
      }
      continue;
    }
    const int64_t m = static_cast<int64_t>(rows.size());
    moe_x_.resize(static_cast<size_t>(m * E));
    moe_g_.resize(static_cast<size_t>(m * F));
    moe_u_.resize(static_cast<size_t>(m * F));
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(moe_x_.data() + i * E, h_.data() + (rows[i] / K) * E, static_cast<size_t>(E) * sizeof(float));
    if (obs) obs->observe_expert(il, MatmulInput::FfnGateUp, e, NE, moe_x_.data(), m, E, E);
    matmul_expert(L.gate_exps[e], moe_x_.data(), m, E, moe_g_.data(), F, pool_, scratch_, compat);
    matmul_expert(L.up_exps[e], moe_x_.data(), m, E, moe_u_.data(), F, pool_, scratch_, compat);
    check_product(model_, L.gate_exps[e], moe_g_.data(), m);
    check_product(model_, L.up_exps[e], moe_u_.data(), m);
    pool_.run(m, [&](int64_t i, int) { glu(act, moe_g_.data() + i * F, moe_u_.data() + i * F, F); });
    moe_x_.resize(static_cast<size_t>(m * E));
    if (obs) obs->observe_expert(il, MatmulInput::FfnDown, e, NE, moe_g_.data(), m, F, F);
    matmul_expert(L.down_exps[e], moe_g_.data(), m, F, moe_x_.data(), E, pool_, scratch_, compat);
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(moe_d_.data() + rows[i] * E, moe_x_.data() + i * E, static_cast<size_t>(E) * sizeof(float));
  }
  pool_.run(nr, [&](int64_t t, int) {
    float* o = tmp_.data() + t * E;
    const float* w = moe_w_.data() + t * K;
    for (int64_t i = 0; i < E; ++i) o[i] = moe_d_[(t * K) * E + i] * w[0];
    for (int64_t k = 1; k < K; ++k)
      for (int64_t i = 0; i < E; ++i) o[i] += moe_d_[(t * K + k) * E + i] * w[k];
  });
}

}  // namespace edgeq::runtime
