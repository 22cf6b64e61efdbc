// Calibration throughput: `edgeq calibrate`'s evaluation (tl-8m F16 golden, calib.txt, n_ctx 256, 40 chunks)
// at 1 and 2 threads, with and without --hessian, in tokens/s; next to llama-imatrix b4748 on the same file,
// text and chunks when LLAMA_CPP_BIN names llama.cpp's bin/ directory (its "prompt eval" tokens/s, --no-ppl).
//
//   bench_calibrate [CHUNKS]
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "edgeq/calibrate/calibrate.h"
#include "edgeq/runtime/model.h"
#include "edgeq/runtime/tokenizer.h"

namespace cal = edgeq::calibrate;

namespace {
const std::string kShared = EDGEQ_SHARED_DIR;

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// llama-imatrix's prompt-eval tokens/s from llama_perf_context_print, or -1.
double llama_imatrix_tps(const std::string& bin, const std::string& model, const std::string& text, int chunks,
                         int threads) {
  const std::string log = "/tmp/bench-calibrate-llama-" + std::to_string(::getpid()) + ".log";
  const std::string out = "/tmp/bench-calibrate-llama-" + std::to_string(::getpid()) + ".dat";
  const std::string cmd = bin + "/llama-imatrix -m " + model + " -f " + text + " -c 256 --chunks " +
                          std::to_string(chunks) + " -t " + std::to_string(threads) + " --no-ppl -o " + out +
                          " > " + log + " 2>&1";
  const int st = std::system(cmd.c_str());
  const std::string s = read_file(log);
  std::remove(log.c_str());
  std::remove(out.c_str());
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
  std::smatch m;
  if (std::regex_search(s, m, std::regex(R"(prompt eval time =.*?\(\s*[0-9.]+ ms per token,\s*([0-9.]+) tokens per second\))")))
    return std::stod(m[1]);
  return -1;
}
}  // namespace

int main(int argc, char** argv) {
  const int chunks = argc > 1 ? std::atoi(argv[1]) : 40;
  const std::string model_path = kShared + "/golden/tl-8m-F16.gguf";
  const std::string text_path = kShared + "/text/calib.txt";
  const auto model = edgeq::runtime::Model::load(model_path);
  const auto tok = edgeq::Tokenizer::from_gguf(model.gguf());
  const auto tokens = tok.tokenize(read_file(text_path), true, false);
  const char* llama_bin = std::getenv("LLAMA_CPP_BIN");
  std::printf("calibration throughput, tl-8m F16, calib.txt, n_ctx 256, %d chunks\n", chunks);
  std::printf("%-8s %-10s %14s %18s %8s\n", "threads", "hessian", "edgeq tok/s", "llama-imatrix tok/s", "ratio");
  for (int threads : {1, 2}) {
    double llama = -1;
    if (llama_bin) llama = llama_imatrix_tps(llama_bin, model_path, text_path, chunks, threads);
    for (bool hessian : {false, true}) {
      cal::CalibrationOptions o;
      o.n_ctx = 256;
      o.max_chunks = chunks;
      o.n_threads = threads;
      o.hessian = hessian;
      const auto s = cal::calibrate(model, tokens, tok.add_bos(), tok.bos(), o);
      const double tps = static_cast<double>(s.n_chunks) * 256.0 / s.seconds;
      if (llama > 0 && !hessian)
        std::printf("%-8d %-10s %14.0f %18.0f %7.2fx\n", threads, "no", tps, llama, tps / llama);
      else
        std::printf("%-8d %-10s %14.0f %18s %8s\n", threads, hessian ? "yes" : "no", tps, hessian ? "-" : "(unset)", "-");
    }
  }
  return 0;
}
