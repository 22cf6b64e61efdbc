// edgeq calibrate MODEL --data FILE... -o OUT [--ctx N] [--chunks N] [--threads N] [--hessian]
#include <cstdio>
#include <filesystem>
#include <memory>

#include "calibration_input.h"
#include "command.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/base/thread_count.h"
#include "options.h"
#include "edgeq/base/error.h"

namespace cmd_calibrate {  // named, not anonymous: cli/ compiles as a unity build


struct Opts {
  std::string model, out;
  std::vector<std::string> data;
  int64_t ctx = 256, chunks = -1;
  int threads = 0;
  bool hessian = false;
};

int run(const Opts& o) {
  if (o.ctx < 16) edgeq::fail("--ctx {}: must be at least 16", o.ctx);
  const int threads = edgeq::resolve_threads(o.threads);
  if (o.hessian && !o.out.ends_with(".gguf")) edgeq::fail("{}: --hessian needs a .gguf output", o.out);
  edgeq::check_output_path(o.out);  // a directory or a device is refused before anything is read
  for (const auto& d : o.data) edgeq::note_input_file(d);  // the data files are inputs even before they are read
  edgeq::note_input_file(o.model);
  edgeq::check_output_path(o.out);
  // GGUF statistics are streamed to the output a layer at a time (one layer's Hessians in memory).
  const bool gguf = o.out.ends_with(".gguf");
  auto s = edgeq::cli::run_calibration(o.model, o.data, o.ctx, o.chunks, threads, o.hessian, gguf ? o.out : "");
  if (!gguf) edgeq::calibrate::write_imatrix(s, o.out);
  size_t n_tensors = 0;
  for (const auto& in : s.inputs)
    if (in.ncall) n_tensors += in.tensor_names().size();
  std::printf("calibrated %s on %lld tokens (%d chunks of %lld) in %.2f s (%.0f tokens/s): %zu tensors -> %s\n",
              o.model.c_str(), static_cast<long long>(s.n_chunks * s.n_ctx), s.n_chunks,
              static_cast<long long>(s.n_ctx), s.seconds,
              s.seconds > 0 ? static_cast<double>(s.n_chunks * s.n_ctx) / s.seconds : 0.0, n_tensors, o.out.c_str());
  return 0;
}

std::function<int()> setup(CLI::App& app) {
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "calibrate",
      "Run the model over calibration text and write the importance matrix (llama-imatrix's statistics: per-column "
      "sum of x^2 and call counts of every matmul input), plus mean |x| (AWQ) and optionally X^T X (GPTQ)");
  sub->add_option("model", o->model, "A GGUF model (any type), an HF checkpoint directory or an ONNX model")->required();
  sub->add_option("--data", o->data,
                  "Calibration text files, concatenated in order: plain text or JSONL (*.jsonl, a string field "
                  "\"text\" per line), either optionally zstd-compressed")
      ->required();
  sub->add_option("-o,--output", o->out,
                  "Output: *.gguf writes llama.cpp's GGUF imatrix (with edgeq's extra statistics); any other name "
                  "the legacy imatrix.dat format of llama-quantize b4748")
      ->required();
  edgeq::cli::add_ctx_option(sub, o->ctx, "Context size = chunk length in tokens (default 256)");
  edgeq::cli::add_chunks_option(sub, o->chunks);
  edgeq::cli::add_threads_option(sub, o->threads, "; results do not depend on it");
  sub->add_flag("--hessian", o->hessian,
                "Also collect X^T X per distinct matmul input (for --method awq, gptq, auto; GGUF output only). The "
                "model is evaluated one layer at a time and each layer's statistics are written as soon as it is "
                "done: one layer's Hessians in memory");
  return [o]() { return run(*o); };
}


}  // namespace cmd_calibrate
