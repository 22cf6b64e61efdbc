#include "edgeq/runtime/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "edgeq/base/error.h"
#include "edgeq/runtime/forward.h"

namespace edgeq::runtime {

namespace {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

int32_t sample_token(const float* logits, int64_t n_vocab, const GenerateOptions& opt, uint64_t& rng) {
  if (n_vocab <= 0) fail("sample_token: empty vocabulary");
  if (!(opt.temp > 0.f)) {
    int64_t best = 0;
    for (int64_t i = 1; i < n_vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return static_cast<int32_t>(best);
  }
  std::vector<int32_t> idx(static_cast<size_t>(n_vocab));
  std::iota(idx.begin(), idx.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t k = opt.top_k > 0 ? std::min<int64_t>(opt.top_k, n_vocab) : n_vocab;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
  idx.resize(static_cast<size_t>(k));
  std::vector<double> p(idx.size());
  const double mx = logits[idx[0]];
  double sum = 0;
  for (size_t i = 0; i < idx.size(); ++i) sum += p[i] = std::exp((logits[idx[i]] - mx) / opt.temp);
  for (auto& v : p) v /= sum;
  size_t keep = p.size();
  if (opt.top_p < 1.f) {
    double cum = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      cum += p[i];
      if (cum >= opt.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += p[i];
  const double u = static_cast<double>(splitmix64(rng) >> 11) * (1.0 / 9007199254740992.0) * total;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (u < cum) return idx[i];
  }
  return idx[keep - 1];
}

void validate_generate_options(const GenerateOptions& opt) {
  if (opt.n_predict < 0) fail("--n-predict {}: must be >= 0", opt.n_predict);
  if (!std::isfinite(opt.temp) || opt.temp < 0.f) fail("--temp {}: must be a finite number >= 0 (0 = greedy)", opt.temp);
  if (opt.top_k < 0) fail("--top-k {}: must be >= 0 (0 = whole vocabulary)", opt.top_k);
  if (!(opt.top_p > 0.f && opt.top_p <= 1.f)) fail("--top-p {}: must be in (0, 1] (1 = off)", opt.top_p);
}

std::vector<int32_t> generate(const Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                              const std::function<bool(int32_t)>& on_token, StopReason* why) {
  const ModelConfig& c = model.config();
  if (prompt.empty()) fail("{}: generate: empty prompt", model.path());
  validate_generate_options(opt);
  StopReason stop = StopReason::Length;
  int64_t n_ctx = opt.n_ctx > 0 ? opt.n_ctx : static_cast<int64_t>(prompt.size()) + opt.n_predict;
  if (opt.n_ctx <= 0 && c.n_ctx_train > 0) n_ctx = std::min(n_ctx, c.n_ctx_train);
  n_ctx = std::max<int64_t>(n_ctx, 1);
  if (static_cast<int64_t>(prompt.size()) > n_ctx)
    fail("{}: generate: the prompt has {} tokens, more than the context size {}", model.path(), prompt.size(), n_ctx);
  ContextOptions co;
  co.n_ctx = n_ctx;
  co.n_threads = opt.n_threads;
  co.ggml_compat = opt.ggml_compat;
  Context ctx(model, co);
  std::vector<float> logits(static_cast<size_t>(c.n_vocab));
  const auto n_prompt = static_cast<int64_t>(prompt.size());
  ctx.eval(prompt.data(), n_prompt, n_prompt - 1, logits.data());
  uint64_t rng = opt.seed;
  std::vector<int32_t> out;
  for (int64_t i = 0; i < opt.n_predict; ++i) {
    const int32_t tok = sample_token(logits.data(), c.n_vocab, opt, rng);
    if (opt.eos_id >= 0 && tok == opt.eos_id) {
      stop = StopReason::Eos;
      break;
    }
    if (on_token && !on_token(tok)) {
      stop = StopReason::Callback;
      break;
    }
    out.push_back(tok);
    if (i + 1 == opt.n_predict) break;
    if (ctx.n_past() >= ctx.n_ctx()) {
      stop = StopReason::ContextFull;
      break;
    }
    ctx.eval(&tok, 1, 0, logits.data());
  }
  if (why) *why = stop;
  return out;
}

}  // namespace edgeq::runtime
