#include "calibration_input.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "command.h"
#include "edgeq/calibrate/data.h"
#include "edgeq/convert/model_input.h"
#include "edgeq/base/error.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/tokenizer.h"

#include "progress.h"

namespace edgeq::cli {

namespace fs = std::filesystem;

namespace {
volatile std::sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }
}  // namespace

RuntimeModelFile::RuntimeModelFile(const std::string& src, int threads) : path_(src) {
  const convert::ModelInput source = convert::ModelInput::open(src);
  if (source.is_gguf()) return;
  path_ = (fs::temp_directory_path() / ("edgeq-calibrate-" + std::to_string(::getpid()) + ".gguf")).string();
  temporary_ = true;
  on_signal_ = std::make_unique<ScopedRemoveOnSignal>(path_);
  source.runtime_gguf(path_, threads);
}

RuntimeModelFile::~RuntimeModelFile() {
  if (temporary_) {
    std::error_code ec;
    fs::remove(path_, ec);
  }
}

calibrate::CalibrationStats run_calibration(const std::string& model_src, const std::vector<std::string>& data,
                                            int64_t ctx, int64_t chunks, int threads, bool hessian,
                                            const std::string& stats_gguf) {
  const std::string text = calibrate::load_calibration_text(data);  // a bad text fails before any conversion
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  RuntimeModelFile mf(model_src, threads);
  return run_calibration(mf, model_src, text, data, ctx, chunks, threads, hessian, stats_gguf);
}

calibrate::CalibrationStats run_calibration(const RuntimeModelFile& mf, const std::string& model_src,
                                            const std::string& text, const std::vector<std::string>& data,
                                            int64_t ctx, int64_t chunks, int threads, bool hessian,
                                            const std::string& stats_gguf) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const auto model = runtime::Model::load(mf.path());
  const auto tok = Tokenizer::from_gguf(model.gguf());
  const std::vector<int32_t> tokens = tok.tokenize(text, true, false);
  calibrate::CalibrationOptions co;
  co.n_ctx = ctx;
  co.max_chunks = chunks;
  co.n_threads = threads;
  co.hessian = hessian;
  co.datasets = data;
  auto progress = std::make_shared<Progress>("calibrate");
  progress->note(fmt::format("calibrate: {}, {} tokens, n_ctx {}, {} threads{}", model_src, tokens.size(), ctx, threads,
                             hessian ? ", with Hessians" : ""));
  using Handler = void (*)(int);
  Handler prev = SIG_DFL;
  co.progress = [progress, &prev](const calibrate::CalibrationProgress& p) {
    if (g_interrupted) {  // hand the signal to the program's handler: temp files removed, exit 130 (README)
      std::signal(SIGINT, prev);
      std::raise(SIGINT);
      fail("interrupted; no output written");  // only if the previous disposition ignored it
    }
    progress->update(p.done, fmt::format("layer {}/{} [{}/{}] {:.0f} tokens/s", p.layer + 1, p.n_layers, p.chunk,
                                         p.n_chunks, p.tokens_per_second));
  };
  g_interrupted = 0;
  prev = std::signal(SIGINT, on_sigint);
  calibrate::CalibrationStats s;
  try {
    s = stats_gguf.empty() ? calibrate::calibrate(model, tokens, tok.add_bos(), tok.bos(), co)
                           : calibrate::calibrate_to_file(model, tokens, tok.add_bos(), tok.bos(), co, stats_gguf);
  } catch (...) {
    std::signal(SIGINT, prev);
    throw;
  }
  std::signal(SIGINT, prev);
  return s;
}

QuantizeMethod::~QuantizeMethod() {
  if (temp_stats.empty()) return;
  std::error_code ec;
  fs::remove(temp_stats, ec);
}

void check_quantize_method_options(const std::string& method, const std::string& calib,
                                   const std::vector<std::string>& data, bool has_imatrix, bool act_order) {
  if (const auto am = calibrate::parse_method(method); act_order && !(am && calibrate::method_takes_act_order(*am)))
    fail("--act-order orders GPTQ's columns: it needs --method gptq or auto{}",
         method.empty() ? "" : fmt::format(" (not {})", method));
  if (method.empty() && calib.empty() && data.empty()) return;
  const std::string m = method.empty() ? "imatrix" : method;
  const auto pm = calibrate::parse_method(m);
  if (!pm) fail("--method {}: unknown ({})", method, calibrate::method_names());
  if (!calib.empty() && !data.empty()) fail("--calib and --data are exclusive");
  if (has_imatrix && *pm == calibrate::Method::Rtn)
    fail("--imatrix with --method rtn: rtn reads no importance, the imatrix would be ignored (--method imatrix uses it)");
  if (has_imatrix && *pm != calibrate::Method::Imatrix)
    fail("--imatrix with --method {}: give the calibration as --calib or --data instead", m);
  if (has_imatrix && (!calib.empty() || !data.empty())) fail("--imatrix and --calib/--data are exclusive");
  if (*pm != calibrate::Method::Rtn && calib.empty() && data.empty() && !has_imatrix)
    fail("--method {} needs calibration: --calib STATS or --data FILE...", m);
}

std::unique_ptr<QuantizeMethod> setup_quantize_method(const std::string& method, const std::string& calib,
                                                      const std::vector<std::string>& data, const std::string& src_path,
                                                      quant::QuantizeSource& src, quant::QuantizeOptions& qo,
                                                      int threads, bool act_order) {
  if (method.empty() && calib.empty() && data.empty()) return nullptr;
  const auto m = *calibrate::parse_method(method.empty() ? "imatrix" : method);
  if (calib.empty() && data.empty()) {  // rtn, or imatrix from --imatrix: nothing to prepare
    if (m == calibrate::Method::Rtn) qo.importance = nullptr;
    qo.method = std::string("edgeq-") + calibrate::method_name(m);
    return nullptr;
  }
  auto r = std::make_unique<QuantizeMethod>();
  std::string label;
  if (!calib.empty()) {
    r->stats = calibrate::read_calibration_stats(calib);
    label = calib;
  } else {
    // Through a temporary statistics file: the Hessians are then read one input at a time (bounded memory).
    r->temp_stats = (fs::temp_directory_path() / ("edgeq-stats-" + std::to_string(::getpid()) + ".gguf")).string();
    r->temp_on_signal = std::make_unique<ScopedRemoveOnSignal>(r->temp_stats);
    const std::string text = calibrate::load_calibration_text(data);  // a bad text fails before any conversion
    r->runtime_model = std::make_unique<RuntimeModelFile>(src_path, threads);
    run_calibration(*r->runtime_model, src_path, text, data, 256, -1, threads, calibrate::method_needs_hessian(m),
                    r->temp_stats);
    // The checkpoint's values come from the runtime's F32 conversion from now on: it is read once.
    convert::ModelInput::read_values_from(src, r->runtime_model->path());
    r->stats = calibrate::read_calibration_stats(r->temp_stats);
    label = data.front();
  }
  auto progress = std::make_shared<Progress>("quantize");
  r->setup = calibrate::setup_method(
      m, r->stats, label, src, qo, [progress](const std::string& line) { progress->note(line); }, act_order);
  return r;
}

}  // namespace edgeq::cli
