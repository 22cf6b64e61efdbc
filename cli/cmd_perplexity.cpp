// edgeq perplexity MODEL.gguf -f TEXT [--ctx N] [--chunks N] [--threads N] [--kld-base FILE [--kld-base-format edgeq|llama]
//                  | --kld FILE] [--json]
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "command.h"
#include "edgeq/base/thread_count.h"
#include "edgeq/formats/text_input.h"
#include "edgeq/runtime/kld.h"
#include "options.h"
#include "edgeq/base/error.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/perplexity.h"
#include "edgeq/runtime/tokenizer.h"
#include "progress.h"

namespace cmd_perplexity {  // named, not anonymous: cli/ compiles as a unity build

struct Opts {
  std::string model, text_file, kld_base, kld;
  std::string kld_base_format = "edgeq";
  int64_t ctx = 256;
  int64_t chunks = -1;
  int threads = 0;
  bool json = false;
  bool exact_f32 = false;
  bool force = false;
};

std::function<int()> setup(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("perplexity",
                                 "Perplexity (and KL divergence against a reference) over a text, exactly as llama.cpp's "
                                 "llama-perplexity: chunks of --ctx tokens, BOS first, second half of each chunk scored");
  sub->add_option("model", o->model, "GGUF model file")->required();
  sub->add_option("-f,--file", o->text_file, "Text file to evaluate")->required();
  edgeq::cli::add_ctx_option(sub, o->ctx, "Context size = chunk length in tokens (default 256)");
  edgeq::cli::add_chunks_option(sub, o->chunks);
  edgeq::cli::add_threads_option(sub, o->threads, "; results do not depend on it");
  auto* kb = sub->add_option("--kld-base", o->kld_base,
                             "OUTPUT: write this model's log-probabilities of the scored positions to FILE (zstd), as "
                             "the reference for a later --kld run. Refuses to replace an existing file that is not a "
                             "KLD base (unless --force) or any file this command reads");
  auto* kl = sub->add_option("--kld", o->kld,
                             "Compare with the reference log-probabilities in FILE (from --kld-base, or from "
                             "llama-perplexity --kl-divergence-base): KL divergence, top-token agreement, delta-p, PPL ratio");
  kb->excludes(kl);
  sub->add_flag("--force", o->force, "Let --kld-base replace an existing file that is not a KLD base");
  sub->add_option("--kld-base-format", o->kld_base_format,
                  "Layout of the --kld-base file: edgeq (zstd-compressed, default) or llama (llama-perplexity's "
                  "--kl-divergence-base file, uncompressed, which llama-perplexity --kl-divergence reads)")
      ->check(CLI::IsMember({"edgeq", "llama"}))
      ->needs(kb);
  sub->add_flag("--exact-f32", o->exact_f32,
                "Compute in plain f32 instead of reproducing llama.cpp's rounding (f16 KV cache, 8-bit activations "
                "for quantized weights)");
  sub->add_flag("--json", o->json, "Print one JSON document with all numbers instead of text");
  return [o]() {
    namespace rt = edgeq::runtime;
    if (!o->kld_base.empty() && !o->force && rt::exists_and_not_kld_base(o->kld_base))
      edgeq::fail("{}: exists and is not a KLD base file; refusing to overwrite it with --kld-base (--force to "
                  "replace it; --kld reads a base)", o->kld_base);
    const auto model = rt::Model::load(o->model);
    const auto tok = edgeq::Tokenizer::from_gguf(model.gguf());
    const std::string text = edgeq::read_text_input(o->text_file);
    if (!o->kld_base.empty()) edgeq::check_output_path(o->kld_base);  // not the model, not the text
    const std::vector<int32_t> tokens = tok.tokenize(text, true, false);
    edgeq::cli::warn_if_beyond_training_context(model, o->ctx);
    rt::PerplexityOptions po;
    po.n_ctx = o->ctx;
    po.max_chunks = o->chunks;
    po.text_name = o->text_file;
    po.n_threads = edgeq::resolve_threads(o->threads);
    po.ggml_compat = !o->exact_f32;
    po.kld_base_out = o->kld_base;
    po.kld_base_format = o->kld_base_format == "llama" ? rt::KldBaseFormat::Llama : rt::KldBaseFormat::Edgeq;
    po.kld_in = o->kld;
    edgeq::cli::Progress progress("perplexity", !o->json);
    progress.note(fmt::format("{}, {} tokens, n_ctx {}, {} threads", o->model, tokens.size(), o->ctx, po.n_threads));
    po.progress = [&progress](const rt::ChunkProgress& p) {
      progress.update(double(p.chunk) / p.n_chunks,
                      p.kld >= 0 ? fmt::format("[{}/{}] PPL {:.4f} KLD {:.6f}", p.chunk, p.n_chunks, p.ppl, p.kld)
                                 : fmt::format("[{}/{}] PPL {:.4f}", p.chunk, p.n_chunks, p.ppl));
    };
    const rt::PerplexityResult r = rt::perplexity(model, tokens, tok.add_bos(), tok.bos(), po);
    const double tps = r.seconds > 0 ? static_cast<double>(r.n_chunks * r.n_ctx) / r.seconds : 0.0;
    if (o->json) {
      nlohmann::json j;
      j["model"] = o->model;
      j["text"] = o->text_file;
      j["n_tokens"] = r.n_tokens;
      j["n_ctx"] = r.n_ctx;
      j["n_chunks"] = r.n_chunks;
      j["scored_tokens"] = r.count;
      j["threads"] = po.n_threads;
      j["ppl"] = r.ppl;
      j["ppl_err"] = r.ppl_err;
      j["mean_nll"] = r.mean_nll;
      j["seconds"] = r.seconds;
      j["tokens_per_second"] = tps;
      j["chunk_ppl"] = r.chunk_ppl;
      if (!o->kld_base.empty()) j["kld_base_written"] = o->kld_base;
      if (r.kld) {
        const auto& k = *r.kld;
        j["kld"] = {{"base_model", k.base_model},   {"count", k.count},
                    {"ppl", k.ppl},                 {"ppl_err", k.ppl_err},
                    {"ppl_base", k.ppl_base},       {"ppl_base_err", k.ppl_base_err},
                    {"cor_pct", k.cor_pct},         {"ln_ppl_ratio", k.ln_ppl_ratio},
                    {"ln_ppl_ratio_err", k.ln_ppl_ratio_err}, {"ppl_ratio", k.ppl_ratio},
                    {"ppl_ratio_err", k.ppl_ratio_err}, {"mean_kld", k.mean_kld},
                    {"mean_kld_err", k.mean_kld_err}, {"median_kld", k.median_kld},
                    {"p90_kld", k.p90_kld},         {"p95_kld", k.p95_kld},
                    {"p99_kld", k.p99_kld},         {"p999_kld", k.p999_kld},
                    {"max_kld", k.max_kld},         {"min_kld", k.min_kld},
                    {"same_top_p_pct", k.same_top_pct}, {"same_top_p_err_pct", k.same_top_err_pct},
                    {"mean_dp_pct", k.mean_dp_pct}, {"mean_dp_err_pct", k.mean_dp_err_pct},
                    {"rms_dp_pct", k.rms_dp_pct},   {"rms_dp_err_pct", k.rms_dp_err_pct},
                    {"max_abs_dp_pct", k.max_dp_pct}};
      }
      std::printf("%s\n", j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      return 0;
    }
    std::printf("perplexity: %s: %lld tokens, n_ctx %lld, %lld chunks, %lld scored tokens, %.2f s (%.0f tokens/s)\n",
                o->model.c_str(), static_cast<long long>(r.n_tokens), static_cast<long long>(r.n_ctx),
                static_cast<long long>(r.n_chunks), static_cast<long long>(r.count), r.seconds, tps);
    if (r.kld) {
      const auto& k = *r.kld;
      std::printf("====== Perplexity statistics (base: %s) ======\n", k.base_model.c_str());
      std::printf("Mean PPL(Q)                   : %10.6f ± %10.6f\n", k.ppl, k.ppl_err);
      std::printf("Mean PPL(base)                : %10.6f ± %10.6f\n", k.ppl_base, k.ppl_base_err);
      std::printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", k.cor_pct);
      std::printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", k.ln_ppl_ratio, k.ln_ppl_ratio_err);
      std::printf("Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", k.ppl_ratio, k.ppl_ratio_err);
      std::printf("====== KL divergence statistics ======\n");
      std::printf("Mean    KLD: %10.6f ± %10.6f\n", k.mean_kld, k.mean_kld_err);
      std::printf("Maximum KLD: %10.6f\n", k.max_kld);
      std::printf("99.9%%   KLD: %10.6f\n", k.p999_kld);
      std::printf("99.0%%   KLD: %10.6f\n", k.p99_kld);
      std::printf("90.0%%   KLD: %10.6f\n", k.p90_kld);
      std::printf("Median  KLD: %10.6f\n", k.median_kld);
      std::printf("Minimum KLD: %10.6f\n", k.min_kld);
      std::printf("====== Token probability statistics ======\n");
      std::printf("Mean    Δp: %6.3f ± %5.3f %%\n", k.mean_dp_pct, k.mean_dp_err_pct);
      std::printf("RMS Δp    : %6.3f ± %5.3f %%\n", k.rms_dp_pct, k.rms_dp_err_pct);
      std::printf("Same top p: %6.3f ± %5.3f %%\n", k.same_top_pct, k.same_top_err_pct);
    }
    if (!o->kld_base.empty()) std::printf("wrote reference log-probabilities to %s\n", o->kld_base.c_str());
    std::printf("Final estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_err);
    return 0;
  };
}


}  // namespace cmd_perplexity
