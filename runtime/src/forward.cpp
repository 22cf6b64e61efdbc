#include "edgeq/runtime/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "edgeq/formats/error.h"
#include "edgeq/formats/half.h"
#include "finite_check.h"
#include "gemm.h"
#include "vec.h"

namespace edgeq::runtime {

namespace {

// ggml's rms_norm (sum of squares in double, scale = 1/sqrtf(mean + eps)) followed by the weight multiply.
void rms_norm_row(const float* x, const float* w, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
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
  const auto& ff = model_.rope_freq_factors();
  for (int64_t p = rope_filled_; p < upto; ++p) {
    float theta = static_cast<float>(p);
    for (int64_t i = 0; i < half; ++i) {
      const float t = ff.empty() ? theta : theta / ff[i];
      rope_cos_[p * half + i] = std::cos(t);
      rope_sin_[p * half + i] = std::sin(t);
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
  const float scale = 1.0f / std::sqrt(static_cast<float>(hdk));
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
    gemm::gemm(m, nk, hdk, q_.data() + row0 * QD + h * hdk, QD, gemm::packed(kc + g * k_group, hdk), S.data(), nk);
    for (int64_t r = 0; r < m; ++r) {
      float* s = S.data() + r * nk;
      const int64_t valid = pos0 + i0 + r + 1;
      vec::softmax(s, valid, scale);
      if (compat) round_f16(s, valid);
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
  ff_up_.resize(N * F);
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
  pool_.run(n, [&](int64_t t, int) { dequantize_rows(model_.token_embd(), tokens[t], tokens[t] + 1, x + t * c.n_embd); });
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
  pool_.run(n, [&](int64_t t, int) { dequantize_rows(model_.token_embd(), tokens[t], tokens[t] + 1, x_.data() + t * E); });
  for (int64_t il = 0; il < c.n_layer; ++il) {
    // The last layer only needs the rows whose logits are requested (as llama.cpp's inp_out_ids).
    const int64_t r0 = il == c.n_layer - 1 ? first_logit : 0;
    layer(il, n, n_past_, r0);
    if (il < c.n_layer - 1) check_layer_output(model_, x_.data(), il, n);
  }

  const int64_t nl = n / seq_len_ * (seq_len_ - first_logit);  // compacted to the front of x_ by the last layer
  if (nl <= 0 || !logits) return;
  pool_.run(nl, [&](int64_t t, int) {
    rms_norm_row(x_.data() + t * E, model_.output_norm().data(), h_.data() + t * E, E, c.rms_eps);
  });
  matmul(model_.output(), h_.data(), nl, E, logits, c.n_vocab, pool_, scratch_, opt_.ggml_compat);
  if (!all_finite(logits, static_cast<size_t>(nl * c.n_vocab)))  // every weight is finite (checked at load)
    fail("{}: the logits became non-finite (NaN or Inf): a weight of the last layer, output_norm or output is "
         "finite but too large",
         model_.path());
}

void Context::layer(int64_t il, int64_t n, int64_t pos0, int64_t r0) {
  const ModelConfig& c = model_.config();
  const int64_t E = c.n_embd, F = c.n_ff;
  const int64_t hdk = c.head_dim_k, hdv = c.head_dim_v;
  const int64_t QD = c.n_head * hdk, KD = c.n_head_kv * hdk, VD = c.n_head_kv * hdv, OD = c.n_head * hdv;
  const bool compat = opt_.ggml_compat;
  const int64_t half = c.n_rot / 2;
  auto rope = [&](float* v, int64_t pos) {
    const float* cs = rope_cos_.data() + pos * half;
    const float* sn = rope_sin_.data() + pos * half;
    if (c.rope_mode == RopeMode::Normal) {
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * cs[i] - x1 * sn[i];
        v[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
      }
    } else {
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = v[i], x1 = v[i + half];
        v[i] = x0 * cs[i] - x1 * sn[i];
        v[i + half] = x0 * sn[i] + x1 * cs[i];
      }
    }
  };
  ActivationObserver* const obs = opt_.observer;
  const LayerWeights& L = model_.layers()[il];
  pool_.run(n, [&](int64_t t, int) { rms_norm_row(x_.data() + t * E, L.attn_norm.data(), h_.data() + t * E, E, c.rms_eps); });
  if (obs) obs->observe(il, MatmulInput::AttnQKV, h_.data(), n, E, E);
  matmul_shared(h_.data(), n, E, {{&L.wq, q_.data()}, {&L.wk, k_.data()}, {&L.wv, v_.data()}});
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
    const float* o = tmp_.data() + t * E;
    for (int64_t i = 0; i < E; ++i) x[i] += o[i];
    rms_norm_row(x, L.ffn_norm.data(), h_.data() + t * E, E, c.rms_eps);
  });
  if (obs) obs->observe(il, MatmulInput::FfnGateUp, h_.data(), nr, E, E);
  matmul_shared(h_.data(), nr, E, {{&L.w_gate, ff_gate_.data()}, {&L.w_up, ff_up_.data()}});
  pool_.run(nr, [&](int64_t t, int) {
    float* g = ff_gate_.data() + t * F;
    const float* u = ff_up_.data() + t * F;
    vec::swiglu(g, u, F);
  });
  if (obs) obs->observe(il, MatmulInput::FfnDown, ff_gate_.data(), nr, F, F);
  matmul(L.w_down, ff_gate_.data(), nr, F, tmp_.data(), E, pool_, scratch_, compat);
  pool_.run(nr, [&](int64_t t, int) {
    float* x = x_.data() + t * E;
    const float* o = tmp_.data() + t * E;
    for (int64_t i = 0; i < E; ++i) x[i] += o[i];
  });
}

}  // namespace edgeq::runtime
