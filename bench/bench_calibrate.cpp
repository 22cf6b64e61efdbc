// Calibration throughput: `edgeq calibrate`'s evaluation (tl-8m F16 golden, calib.txt, n_ctx 256, 40 chunks)
// at the given thread counts (default 2), with and without --hessian, in tokens/s; next to llama-imatrix b4748
// on the same file, text and chunks when LLAMA_CPP_BIN names llama.cpp's bin/ directory. llama-imatrix's
// perf counters stay empty (it evaluates through a callback), so its rate is chunks·256 tokens over its
// context's total time minus its tokenization time (model loading excluded on both sides).
//
//   bench_calibrate [CHUNKS [THREADS...]]
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

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

// llama-imatrix's evaluation tokens/s, or -1.
double llama_imatrix_tps(const std::string& bin, const std::string& model, const std::string& text, int chunks,
                         int threads, const std::string& env) {
  const std::string log = "/tmp/bench-calibrate-llama-" + std::to_string(::getpid()) + ".log";
  const std::string out = "/tmp/bench-calibrate-llama-" + std::to_string(::getpid()) + ".dat";
  const std::string cmd = env + " " + bin + "/llama-imatrix -m " + model + " -f " + text + " -c 256 --chunks " +
                          std::to_string(chunks) + " -t " + std::to_string(threads) + " --no-ppl -o " + out +
                          " > " + log + " 2>&1";
  const int st = std::system(cmd.c_str());
  const std::string s = read_file(log);
  std::remove(log.c_str());
  std::remove(out.c_str());
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
  std::smatch tokenize, total;
  if (!std::regex_search(s, tokenize, std::regex(R"(tokenization took ([0-9.]+) ms)")) ||
      !std::regex_search(s, total, std::regex(R"(total time =\s*([0-9.]+) ms)")))
    return -1;
  const double seconds = (std::stod(total[1]) - std::stod(tokenize[1])) / 1000.0;
  return seconds > 0 ? chunks * 256.0 / seconds : -1;
}
std::string load_average() {
  std::string s = read_file("/proc/loadavg");
  return s.substr(0, s.find(' ', s.find(' ', s.find(' ') + 1) + 1));
}
}  // namespace

int main(int argc, char** argv) {
  const int chunks = argc > 1 ? std::atoi(argv[1]) : 40;
  std::vector<int> thread_counts;
  for (int i = 2; i < argc; ++i) thread_counts.push_back(std::atoi(argv[i]));
  if (thread_counts.empty()) thread_counts = {2};
  const std::string model_path = kShared + "/golden/tl-8m-F16.gguf";
  const std::string text_path = kShared + "/text/calib.txt";
  const auto model = edgeq::runtime::Model::load(model_path);
  const auto tok = edgeq::Tokenizer::from_gguf(model.gguf());
  const auto tokens = tok.tokenize(read_file(text_path), true, false);
  const char* llama_bin = std::getenv("LLAMA_CPP_BIN");
  std::printf("calibration throughput, tl-8m F16, calib.txt, n_ctx 256, %d chunks (load before: %s)\n", chunks,
              load_average().c_str());
  // llama.cpp's OpenMP threads spin at barriers by default: on a shared machine they lose much of their time
  // to the other processes, so it also runs with OMP_WAIT_POLICY=PASSIVE (the fairer figure there).
  std::printf("%-8s %-8s %12s %16s %8s %16s %8s\n", "threads", "hessian", "edgeq tok/s", "llama tok/s", "ratio",
              "llama passive", "ratio");
  for (int threads : thread_counts) {
    double spin = -1, passive = -1;
    if (llama_bin) {
      spin = llama_imatrix_tps(llama_bin, model_path, text_path, chunks, threads, "env");
      passive = llama_imatrix_tps(llama_bin, model_path, text_path, chunks, threads, "env OMP_WAIT_POLICY=PASSIVE");
    }
    for (bool hessian : {false, true}) {
      cal::CalibrationOptions o;
      o.n_ctx = 256;
      o.max_chunks = chunks;
      o.n_threads = threads;
      o.hessian = hessian;
      const auto s = cal::calibrate(model, tokens, tok.add_bos(), tok.bos(), o);
      const double tps = static_cast<double>(s.n_chunks) * 256.0 / s.seconds;
      auto cell = [&](double v, const char* fmt) {
        char b[32];
        if (v > 0 && !hessian)
          std::snprintf(b, sizeof b, fmt, v);
        else
          std::snprintf(b, sizeof b, "%s", "-");
        return std::string(b);
      };
      std::printf("%-8d %-8s %12.0f %16s %8s %16s %8s\n", threads, hessian ? "yes" : "no", tps, cell(spin, "%.0f").c_str(),
                  cell(tps / spin, "%.2fx").c_str(), cell(passive, "%.0f").c_str(), cell(tps / passive, "%.2fx").c_str());
    }
  }
  std::printf("load after: %s%s\n", load_average().c_str(), llama_bin ? "" : "   (LLAMA_CPP_BIN unset: no llama.cpp figures)");
  return 0;
}
