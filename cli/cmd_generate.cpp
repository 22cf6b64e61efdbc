// edgeq generate MODEL.gguf -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--seed S]
#include <cstdio>
#include <nlohmann/json.hpp>

#include "command.h"
#include "edgeq/base/thread_count.h"
#include "options.h"
#include "edgeq/runtime/generate.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/tokenizer.h"

namespace cmd_generate {  // named, not anonymous: cli/ compiles as a unity build

struct Opts {
  std::string model, prompt;
  int64_t n_predict = 32;
  float temp = 0.f;
  int top_k = 40;
  float top_p = 0.95f;
  uint64_t seed = 0;
  int threads = 0;
  int64_t ctx = 0;
  bool json = false;
  bool exact_f32 = false;
  bool ignore_eos = false;
};

std::function<int()> setup(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("generate", "Generate text from a prompt (greedy at --temp 0, else sampling)");
  sub->add_option("model", o->model, "GGUF model file")->required();
  sub->add_option("-p,--prompt", o->prompt, "Prompt text (BOS is added when the vocabulary asks for it)")->required();
  sub->add_option("-n,--n-predict", o->n_predict, "Number of tokens to generate (default 32)");
  sub->add_option("--temp", o->temp, "Temperature; 0 = greedy (default 0)");
  sub->add_option("--top-k", o->top_k, "Sample among the K most likely tokens; 0 = all (default 40)");
  sub->add_option("--top-p", o->top_p, "Nucleus sampling threshold; 1 = off (default 0.95)");
  sub->add_option("--seed", o->seed, "Random seed for sampling, 0..2^63-1 (default 0)")
      ->check(edgeq::cli::whole_number("--seed", 0, INT64_MAX, "a whole number 0..9223372036854775807"));
  edgeq::cli::add_threads_option(sub, o->threads);
  edgeq::cli::add_ctx_option(sub, o->ctx, "Context size (default: prompt + n-predict, at most the model's context)");
  sub->add_flag("--ignore-eos", o->ignore_eos, "Keep generating after the end-of-generation token");
  sub->add_flag("--exact-f32", o->exact_f32, "Plain f32 numerics instead of reproducing llama.cpp's rounding");
  sub->add_flag("--json", o->json, "Print one JSON document (prompt ids, generated ids, text) instead of streaming");
  return [o]() {
    namespace rt = edgeq::runtime;
    rt::GenerateOptions go;
    go.n_predict = o->n_predict;
    go.temp = o->temp;
    go.top_k = o->top_k;
    go.top_p = o->top_p;
    go.seed = o->seed;
    go.n_ctx = o->ctx;
    go.n_threads = edgeq::resolve_threads(o->threads);
    go.ggml_compat = !o->exact_f32;
    edgeq::cli::as_usage_error([&] { rt::validate_generate_options(go); });  // before any file is read: exit 2
    const auto model = rt::Model::load(o->model);
    const auto tok = edgeq::Tokenizer::from_gguf(model.gguf());
    const std::vector<int32_t> prompt = tok.tokenize(o->prompt, true, true);
    go.eos_id = o->ignore_eos ? -1 : tok.eos();
    edgeq::cli::warn_if_beyond_training_context(model, o->ctx);
    if (!o->json) {
      std::fputs(o->prompt.c_str(), stdout);
      std::fflush(stdout);
    }
    rt::StopReason why = rt::StopReason::Length;
    const auto ids = rt::generate(model, prompt, go, [&](int32_t id) {
      if (!o->ignore_eos && tok.is_eog(id)) return false;
      if (!o->json) {
        const std::string piece = tok.token_to_piece(id, false);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
      return true;
    }, &why);
    if (why == rt::StopReason::ContextFull)
      std::fprintf(stderr, "\ngenerate: stopped after %zu of %lld tokens: the context of %lld tokens is full%s\n",
                   ids.size(), static_cast<long long>(o->n_predict),
                   static_cast<long long>(static_cast<int64_t>(prompt.size() + ids.size()) - 1),  // the last token is not evaluated
                   o->ctx > 0 ? " (raise -c/--ctx)" : " (the model's training context; -c sets another)");
    if (o->json) {
      nlohmann::json j;
      j["model"] = o->model;
      j["prompt"] = o->prompt;
      j["prompt_ids"] = prompt;
      j["ids"] = ids;
      std::string text;
      for (int32_t id : ids) text += tok.token_to_piece(id, false);
      j["text"] = text;
      j["output_text"] = o->prompt + text;
      std::printf("%s\n", j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::fputc('\n', stdout);
    }
    return 0;
  };
}


}  // namespace cmd_generate
