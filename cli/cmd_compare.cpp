// edgeq compare BASE.gguf CANDIDATE.gguf... -f TEXT: perplexity and KL divergence of every candidate
// against the base on one text, one table.
#include <algorithm>
#include <cstdio>

#include "command.h"
#include "edgeq/formats/thread_count.h"
#include "options.h"
#include "edgeq/runtime/compare.h"

namespace {

struct Opts {
  std::string base, text;
  std::vector<std::string> candidates;
  int64_t ctx = 256, chunks = -1;
  int threads = 0;
  bool json = false;
};

edgeq::cli::Register reg(70, [](CLI::App& app) -> std::function<int()> {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "compare", "Perplexity and KL divergence of quantized models against a reference on one text, as one table");
  sub->add_option("base", o->base, "Reference GGUF (e.g. the F32 or F16 conversion)")->required();
  sub->add_option("candidates", o->candidates, "GGUF files to compare with the reference")->required();
  sub->add_option("-f,--file", o->text, "Text file to evaluate")->required();
  sub->add_option("-c,--ctx", o->ctx, "Context size = chunk length in tokens (default 256)");
  sub->add_option("--chunks", o->chunks, "Evaluate at most N chunks (default: all)");
  edgeq::cli::add_threads_option(sub, o->threads, "; results do not depend on it");
  sub->add_flag("--json", o->json, "Print one JSON document instead of the table");
  return [o]() {
    namespace rt = edgeq::runtime;
    rt::CompareOptions co;
    co.n_ctx = o->ctx;
    co.max_chunks = o->chunks;
    co.n_threads = edgeq::resolve_threads(o->threads);
    const size_t n = o->candidates.size() + 1;
    if (edgeq::cli::progress_enabled() && !o->json) {
      co.on_model = [n](size_t i, const std::string& path) {
        std::fprintf(stderr, "compare: [%zu/%zu] %s\n", i + 1, n, path.c_str());
      };
      co.progress = [](const rt::ChunkProgress& p) {
        std::fprintf(stderr, "\r  chunk %d/%d  PPL %.4f%s", p.chunk, p.n_chunks, p.ppl, p.chunk == p.n_chunks ? "\n" : "");
      };
    }
    auto rep = rt::compare_models(o->base, o->candidates, o->text, co);
    if (o->json)
      std::printf("%s\n", rt::compare_to_json(rep).dump(1).c_str());
    else
      std::fputs(rt::render_compare(rep).c_str(), stdout);
    return 0;
  };
});

}  // namespace
