// bench_convert: `edgeq convert` throughput against a plain copy of the same bytes (ratio, same process), and the
// peak RSS of a conversion (run in a forked child, read with wait4's rusage.ru_maxrss), for tl-8m and a synthetic
// >= 1 GB BF16 llama checkpoint generated in /tmp (deleted afterwards).
//
//   ./build/bench/bench_convert                 # tl-8m + 1 GB synthetic
//   ./build/bench/bench_convert --small         # tl-8m only
//   ./build/bench/bench_convert --gb=2          # synthetic size
//   ./build/bench/bench_convert --no-q8         # skip the q8_0 rows (edgeq's Q8_0 search is slow)
// Also runs the Google Benchmark cases registered below when given --benchmark_filter=... (the two tl-8m loops).
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "edgeq/convert/convert.h"
#include "edgeq/convert/plan.h"
#include "edgeq/formats/mapped_file.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kTl8m = std::string(EDGEQ_SHARED_DIR) + "/models/tl-8m";

std::vector<fs::path> source_files(const fs::path& dir) {
  std::vector<fs::path> v;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") v.push_back(e.path());
  std::sort(v.begin(), v.end());
  return v;
}

// The baseline: every source byte read through mmap and written to one file (AtomicOutputFile: same temp+fsync+rename).
uint64_t plain_copy(const fs::path& dir, const std::string& out) {
  edgeq::AtomicOutputFile o(out);
  uint64_t n = 0;
  for (auto& f : source_files(dir)) {
    edgeq::MappedFile m(f.string());
    const uint64_t chunk = 8u << 20;
    for (uint64_t off = 0; off < m.size(); off += chunk) {
      uint64_t len = std::min(chunk, m.size() - off);
      o.write(m.data() + off, len);
    }
    n += m.size();
  }
  o.commit();
  return n;
}

void convert_once(const std::string& src, const std::string& out, const std::string& outtype, int threads) {
  edgeq::convert::ConvertOptions opts;
  opts.outtype = outtype;
  auto plan = edgeq::convert::plan_conversion(src, opts);
  edgeq::convert::convert_to_gguf(plan, out, "", threads);
}

double seconds_of(const std::function<void()>& f) {
  auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Peak RSS (MB) of f run in a forked child.
double child_peak_rss_mb(const std::function<void()>& f) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int rc = 0;
    try {
      f();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      rc = 1;
    }
    _exit(rc);
  }
  int status = 0;
  struct rusage ru {};
  if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

uint64_t dir_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (auto& f : source_files(dir)) n += fs::file_size(f);
  return n;
}

void report(const char* label, const std::string& src, const std::string& outtype, int threads, int reps) {
  fs::path tmp = fs::temp_directory_path() / ("edgeq-bench-convert-" + std::to_string(getpid()));
  fs::create_directories(tmp);
  const std::string out = (tmp / "out.gguf").string(), copy = (tmp / "copy.bin").string();
  uint64_t bytes = dir_bytes(src);
  double best_copy = 1e30, best_conv = 1e30;
  for (int r = 0; r < reps; ++r) {  // interleaved, best of reps, so page-cache state is the same for both
    best_copy = std::min(best_copy, seconds_of([&] { plain_copy(src, copy); }));
    fs::remove(copy);
    best_conv = std::min(best_conv, seconds_of([&] { convert_once(src, out, outtype, threads); }));
    fs::remove(out);
  }
  double idle = child_peak_rss_mb([] {});
  double rss = child_peak_rss_mb([&] { convert_once(src, out, outtype, threads); });
  fs::remove(out);
  double mb = static_cast<double>(bytes) / 1e6;
  std::printf("%-22s %-5s threads=%d  source %8.1f MB | copy %7.1f MB/s | convert %7.1f MB/s | ratio convert/copy %.2f | "
              "peak RSS convert %7.1f MB (idle child %.1f MB)\n",
              label, outtype.c_str(), threads, mb, mb / best_copy, mb / best_conv, best_copy / best_conv, rss, idle);
  std::fflush(stdout);
  fs::remove_all(tmp);
}

// A synthetic BF16 llama checkpoint of about `gb` GB: hidden 2048, 16 heads (8 KV), ffn 5632, vocab 32000.
fs::path make_synthetic(double gb) {
  const uint64_t hidden = 2048, ff = 5632, vocab = 32000, heads = 16, kv = 8, hd = hidden / heads;
  const uint64_t per_layer = hidden * hidden * 2 + 2 * kv * hd * hidden + 3 * hidden * ff + 2 * hidden;
  const uint64_t fixed = 2 * vocab * hidden + hidden;
  uint64_t target = static_cast<uint64_t>(gb * 1e9 / 2);
  uint64_t layers = std::max<uint64_t>(1, (target > fixed ? target - fixed : 0) / per_layer + 1);
  fs::path dir = fs::temp_directory_path() / ("edgeq-bench-synth-" + std::to_string(getpid()));
  fs::create_directories(dir);
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"hidden_size", hidden}, {"num_hidden_layers", layers},
                        {"num_attention_heads", heads}, {"num_key_value_heads", kv}, {"intermediate_size", ff},
                        {"vocab_size", vocab}, {"max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5},
                        {"rope_theta", 10000.0}, {"tie_word_embeddings", false}};
  std::ofstream(dir / "config.json") << cfg.dump(2);
  // vocabulary: stories260K's SentencePiece model padded to 32000 by the converter ([PAD<i>] tokens)
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    fs::copy_file(fs::path(EDGEQ_SHARED_DIR) / "models/stories260K" / f, dir / f);
  struct T {
    std::string name;
    std::vector<uint64_t> shape;
  };
  std::vector<T> ts;
  ts.push_back({"model.embed_tokens.weight", {vocab, hidden}});
  for (uint64_t l = 0; l < layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    ts.push_back({p + "input_layernorm.weight", {hidden}});
    ts.push_back({p + "self_attn.q_proj.weight", {hidden, hidden}});
    ts.push_back({p + "self_attn.k_proj.weight", {kv * hd, hidden}});
    ts.push_back({p + "self_attn.v_proj.weight", {kv * hd, hidden}});
    ts.push_back({p + "self_attn.o_proj.weight", {hidden, hidden}});
    ts.push_back({p + "post_attention_layernorm.weight", {hidden}});
    ts.push_back({p + "mlp.gate_proj.weight", {ff, hidden}});
    ts.push_back({p + "mlp.up_proj.weight", {ff, hidden}});
    ts.push_back({p + "mlp.down_proj.weight", {hidden, ff}});
  }
  ts.push_back({"model.norm.weight", {hidden}});
  ts.push_back({"lm_head.weight", {vocab, hidden}});
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  for (auto& t : ts) {
    uint64_t n = 2;
    for (auto d : t.shape) n *= d;
    h[t.name] = {{"dtype", "BF16"}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs += ' ';
  std::FILE* f = std::fopen((dir / "model.safetensors").c_str(), "wb");
  uint64_t hl = hs.size();
  std::fwrite(&hl, 8, 1, f);
  std::fwrite(hs.data(), 1, hs.size(), f);
  std::vector<uint16_t> buf(1 << 20);
  uint64_t state = 88172645463325252ull;
  for (uint64_t written = 0; written < off;) {
    for (auto& x : buf) {  // xorshift -> bf16 values of magnitude ~0.01..0.06
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      x = static_cast<uint16_t>(0x3c00 | (state & 0x7f) | ((state >> 8) & 0x8000) | ((state >> 16) & 0x0180));
    }
    uint64_t n = std::min<uint64_t>(buf.size() * 2, off - written);
    std::fwrite(buf.data(), 1, n, f);
    written += n;
  }
  std::fclose(f);
  return dir;
}

void BM_ConvertTl8mF16(benchmark::State& st) {
  auto out = (fs::temp_directory_path() / ("edgeq-bm-" + std::to_string(getpid()) + ".gguf")).string();
  for (auto _ : st) convert_once(kTl8m, out, "f16", static_cast<int>(st.range(0)));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * dir_bytes(kTl8m)));
  fs::remove(out);
}
BENCHMARK(BM_ConvertTl8mF16)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

void BM_CopyTl8m(benchmark::State& st) {
  auto out = (fs::temp_directory_path() / ("edgeq-bm-copy-" + std::to_string(getpid()) + ".bin")).string();
  for (auto _ : st) plain_copy(kTl8m, out);
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * dir_bytes(kTl8m)));
  fs::remove(out);
}
BENCHMARK(BM_CopyTl8m)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  bool small = false, gbench = false, q8 = true;
  double gb = 1.05;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--small") small = true;
    else if (a == "--no-q8") q8 = false;
    else if (a.rfind("--gb=", 0) == 0) gb = std::stod(a.substr(5));
    else if (a.rfind("--benchmark", 0) == 0) gbench = true;
  }
  if (gbench) {
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
  }
  try {
    report("tl-8m (BF16)", kTl8m, "f16", 1, 5);
    report("tl-8m (BF16)", kTl8m, "f16", 2, 5);
    if (q8) report("tl-8m (BF16)", kTl8m, "q8_0", 2, 3);
    if (!small) {
      fs::path dir = make_synthetic(gb);
      try {
        report("synthetic llama", dir.string(), "f16", 2, 2);
        if (q8) report("synthetic llama", dir.string(), "q8_0", 2, 1);
      } catch (...) {
        fs::remove_all(dir);
        throw;
      }
      fs::remove_all(dir);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_convert: %s\n", e.what());
    return 1;
  }
  return 0;
}
