// Text generation: greedy at temperature 0, otherwise top-k / top-p / temperature sampling with a seeded RNG.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "edgeq/runtime/model.h"

namespace edgeq::runtime {

struct GenerateOptions {
  int64_t n_predict = 32;
  float temp = 0.f;     // <= 0: greedy (argmax, lowest id on ties)
  int top_k = 40;       // <= 0: whole vocabulary
  float top_p = 0.95f;  // >= 1: disabled
  uint64_t seed = 0;
  int n_threads = 1;
  int64_t n_ctx = 0;    // 0: prompt + n_predict (capped at the model's context_length when known)
  int32_t eos_id = -1;  // stop when sampled (not emitted); -1: never
  bool ggml_compat = true;
};

// Samples one token from a row of logits (exposed for tests). rng_state is advanced.
int32_t sample_token(const float* logits, int64_t n_vocab, const GenerateOptions& opt, uint64_t& rng_state);

// Why generation ended.
enum class StopReason { Length, Eos, Callback, ContextFull };

// Checks the sampling options (temp finite and >= 0, top_k >= 0, top_p in (0, 1], n_predict >= 0);
// throws edgeq::Error naming the flag.
void validate_generate_options(const GenerateOptions& opt);

// Evaluates the prompt ids, then generates up to n_predict ids; on_token(id) is called for each new id
// (return false to stop). Returns the generated ids (without the prompt); *why, when given, says why it ended.
std::vector<int32_t> generate(const Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                              const std::function<bool(int32_t)>& on_token = {}, StopReason* why = nullptr);

}  // namespace edgeq::runtime
