// End-to-end quantization throughput: tl-8m F16 GGUF -> Q4_K_M (open, dequantize, choose types, quantize over
// threads, stream through GgufWriter, fsync + rename), on 1 and 2 threads. Baseline in the same process: a plain
// copy of the same source bytes through AtomicOutputFile (same temp file + fsync + rename path).
// Prints MB/s of source data and the ratio of each run's time to the copy's.
//
//   ./build/bench/bench_quantize_e2e [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "edgeq/formats/mapped_file.h"
#include "edgeq/quant/quantize.h"

namespace {

const std::string kSrc = std::string(EDGEQ_SHARED_DIR) + "/golden/tl-8m-F16.gguf";
const std::string kOut =
    (std::filesystem::temp_directory_path() / ("edgeq-bench-quantize-" + std::to_string(::getpid()) + ".gguf")).string();

void BM_CopyBaseline(benchmark::State& state) {
  edgeq::MappedFile in(kSrc);
  for (auto _ : state) {
    edgeq::AtomicOutputFile out(kOut);
    out.write(in.data(), in.size());
    out.commit();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(in.size()));
}

void BM_QuantizeQ4KM(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  uint64_t src_bytes = std::filesystem::file_size(kSrc);
  uint64_t out_bytes = 0;
  for (auto _ : state) {
    // Opening is part of the end-to-end time (mmap + header parse).
    edgeq::quant::QuantizeSource src = edgeq::quant::open_gguf_source(kSrc);
    edgeq::quant::QuantizeOptions o;
    o.policy.ftype = edgeq::quant::FileType::MOSTLY_Q4_K_M;
    o.threads = threads;
    auto r = edgeq::quant::quantize_model(src, kOut, o);
    out_bytes = r.file_size;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(src_bytes));
  state.counters["out_MB"] = double(out_bytes) / 1e6;
}

BENCHMARK(BM_CopyBaseline)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.5);
BENCHMARK(BM_QuantizeQ4KM)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

// Console output plus a per-run record of real time per iteration, for the ratio table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> seconds;
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs)
      if (r.run_type == Run::RT_Iteration && r.iterations > 0)
        seconds[r.benchmark_name()] = r.real_accumulated_time / double(r.iterations);
    ConsoleReporter::ReportRuns(runs);
  }
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter rep;
  benchmark::RunSpecifiedBenchmarks(&rep);
  benchmark::Shutdown();
  std::error_code ec;
  std::filesystem::remove(kOut, ec);

  const double mb = double(std::filesystem::file_size(kSrc)) / 1e6;
  double base = 0;
  for (auto& [name, s] : rep.seconds)
    if (name.rfind("BM_CopyBaseline", 0) == 0) base = s;
  std::printf("\nsource %s: %.2f MB\n", kSrc.c_str(), mb);
  std::printf("%-40s %10s %10s %14s\n", "run", "seconds", "MB/s", "time / copy");
  for (auto& [name, s] : rep.seconds)
    std::printf("%-40s %10.4f %10.1f %14.1f\n", name.c_str(), s, mb / s, base > 0 ? s / base : 0.0);
  return 0;
}
