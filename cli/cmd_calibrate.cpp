// edgeq calibrate MODEL --data FILE... -o OUT [--ctx N] [--chunks N] [--threads N] [--hessian]
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>
#include <unistd.h>

#include "command.h"
#include "edgeq/calibrate/calibrate.h"
#include "edgeq/calibrate/data.h"
#include "edgeq/convert/convert.h"
#include "edgeq/formats/error.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/tokenizer.h"

namespace {

namespace fs = std::filesystem;

struct Opts {
  std::string model, out;
  std::vector<std::string> data;
  int64_t ctx = 256, chunks = -1;
  int threads = 0;
  bool hessian = false;
};

volatile std::sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }

// A GGUF is used as it is; an HF checkpoint or ONNX model is converted to a temporary F32 GGUF first
// (removed when done).
struct ModelFile {
  std::string path;
  bool temporary = false;
  ~ModelFile() {
    if (temporary) {
      std::error_code ec;
      fs::remove(path, ec);
    }
  }
};

int run(const Opts& o) {
  if (o.ctx < 16) edgeq::fail("--ctx {}: must be at least 16", o.ctx);
  if (o.threads < 0) edgeq::fail("--threads {}: must be >= 0", o.threads);
  if (o.hessian && !o.out.ends_with(".gguf")) edgeq::fail("{}: --hessian needs a .gguf output", o.out);
  {
    std::error_code ec;
    if (fs::is_directory(o.out, ec)) edgeq::fail("{}: is a directory", o.out);
    for (const auto& d : o.data)
      if (fs::exists(o.out, ec) && fs::equivalent(d, o.out, ec)) edgeq::fail("{}: the output would overwrite the data", o.out);
  }
  const std::string text = edgeq::calibrate::load_calibration_text(o.data);
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  ModelFile mf{o.model};
  std::error_code ec;
  if (fs::is_directory(o.model, ec) || o.model.ends_with(".onnx")) {
    mf.path = (fs::temp_directory_path() / ("edgeq-calibrate-" + std::to_string(::getpid()) + ".gguf")).string();
    mf.temporary = true;
    edgeq::convert::ConvertOptions cvo;
    cvo.outtype = "f32";
    cvo.threads = threads;
    edgeq::convert::convert_to_gguf(edgeq::convert::plan_conversion(o.model, cvo), mf.path, "f32", threads);
  }
  const auto model = edgeq::runtime::Model::load(mf.path);
  const auto tok = edgeq::Tokenizer::from_gguf(model.gguf());
  const std::vector<int32_t> tokens = tok.tokenize(text, true, false);

  edgeq::calibrate::CalibrationOptions co;
  co.n_ctx = o.ctx;
  co.max_chunks = o.chunks;
  co.n_threads = threads;
  co.hessian = o.hessian;
  const bool progress = edgeq::cli::progress_enabled();
  if (progress)
    std::fprintf(stderr, "calibrate: %s, %zu tokens, n_ctx %lld, %d threads%s\n", o.model.c_str(), tokens.size(),
                 static_cast<long long>(o.ctx), threads, o.hessian ? ", with Hessians" : "");
  co.progress = [progress](const edgeq::calibrate::CalibrationProgress& p) {
    if (g_interrupted) edgeq::fail("interrupted; no output written");
    if (progress) {
      const double eta = p.chunk > 0 ? p.seconds / p.chunk * (p.n_chunks - p.chunk) : 0.0;
      std::fprintf(stderr, "[%d/%d] %.1f s, %.0f tokens/s, ETA %.1f s\n", p.chunk, p.n_chunks, p.seconds,
                   p.tokens_per_second, eta);
    }
  };
  auto prev = std::signal(SIGINT, on_sigint);
  edgeq::calibrate::CalibrationStats s;
  try {
    s = edgeq::calibrate::calibrate(model, tokens, tok.add_bos(), tok.bos(), co);
  } catch (...) {
    std::signal(SIGINT, prev);
    throw;
  }
  s.datasets = o.data;
  edgeq::calibrate::write_imatrix(s, o.out);
  std::signal(SIGINT, prev);
  size_t n_tensors = 0;
  for (const auto& in : s.inputs)
    if (in.ncall) n_tensors += in.tensor_names().size();
  std::printf("calibrated %s on %lld tokens (%d chunks of %lld) in %.2f s (%.0f tokens/s): %zu tensors -> %s\n",
              o.model.c_str(), static_cast<long long>(s.n_chunks * s.n_ctx), s.n_chunks,
              static_cast<long long>(s.n_ctx), s.seconds,
              s.seconds > 0 ? static_cast<double>(s.n_chunks * s.n_ctx) / s.seconds : 0.0, n_tensors, o.out.c_str());
  return 0;
}

edgeq::cli::Register reg(35, [](CLI::App& app) -> std::function<int()> {
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
  sub->add_option("-c,--ctx", o->ctx, "Context size = chunk length in tokens (default 256)");
  sub->add_option("--chunks", o->chunks, "Use at most N chunks (default: all)");
  sub->add_option("-t,--threads", o->threads, "Worker threads (default: all cores); results do not depend on it");
  sub->add_flag("--hessian", o->hessian,
                "Also collect X^T X per distinct matmul input (for --method gptq; GGUF output only)");
  return [o]() { return run(*o); };
});

}  // namespace
