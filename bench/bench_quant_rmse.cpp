// Quantization error of edgeq's quantizers vs llama.cpp's golden files, tensor by tensor.
// The reference is the F32 conversion of tl-8m (BF16 safetensors widened to f32, q/k rows permuted as
// llama.cpp's converter does). For every 2-D tensor of every golden file:
//   llama.cpp error = || dequant(golden bytes) - ref ||^2, ours = || dequant(quantize_rows(ref)) - ref ||^2
// with the type the golden used for that tensor. For -imat goldens the importance-weighted error
// sum_j imp_j (q_j - ref_j)^2 with the golden imatrix (tensors without an imatrix entry: plain) is also shown
// and is the metric our quantizer optimises there.
// "cpu s" is the CPU time of quantize_rows over the whole model (single thread).
// Usage: bench_quant_rmse [GOLDEN_NAME ...]   (e.g. Q4_K_M Q3_K_M-imat; default: all)
#include <ctime>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "edgeq/formats/gguf.h"
#include "edgeq/formats/safetensors.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/imatrix.h"
#include "tl8m_reference.h"

namespace {

const std::string kShared = EDGEQ_SHARED_DIR;

// The whole tensor; exits when tl-8m lacks it.
std::vector<float> reference(const edgeq::SafetensorsFile& st, const std::string& gname, uint64_t rows,
                             uint64_t cols) {
  std::vector<float> r = tl8m::reference(st, gname, rows, cols, rows);
  if (r.empty()) {
    std::fprintf(stderr, "no reference for %s\n", gname.c_str());
    std::exit(1);
  }
  return r;
}

struct Err {
  double plain = 0, weighted = 0;
};

Err errors(const std::vector<float>& ref, const std::vector<float>& deq, uint64_t cols, const std::vector<float>* imp) {
  Err e;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(deq[i]) - ref[i];
    e.plain += d * d;
    e.weighted += (imp ? (*imp)[i % cols] : 1.0) * d * d;
  }
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> goldens = {"Q8_0",   "Q6_K",   "Q5_K_M", "Q5_K_S", "Q5_1",   "Q5_0",
                                      "Q4_K_M", "Q4_K_S", "Q4_1",   "Q4_0",   "Q3_K_L", "Q3_K_M",
                                      "Q3_K_S", "Q2_K",   "IQ4_NL", "IQ4_XS", "Q4_K_M-imat", "Q3_K_M-imat",
                                      "Q2_K-imat", "IQ4_XS-imat"};
  bool verbose = false;
  std::vector<std::string> pick;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-v") verbose = true; else pick.push_back(a);
  }
  if (!pick.empty()) goldens = pick;
  const auto st = edgeq::SafetensorsFile::open(kShared + "/models/tl-8m/model.safetensors");
  const auto im = edgeq::quant::ImatrixFile::open(kShared + "/golden/tl-8m.imatrix");
  std::printf("%-12s %4s %12s %12s %7s %6s %12s %12s %7s %6s %8s\n", "golden", "n", "our RMSE", "llama RMSE",
              "ratio", "worse", "our wRMSE", "llama wRMSE", "wratio", "wworse", "cpu s");
  int total_worse = 0;
  for (const auto& g : goldens) {
    const bool imat = g.size() > 5 && g.substr(g.size() - 5) == "-imat";
    const auto file = edgeq::GgufFile::open(kShared + "/golden/tl-8m-" + g + ".gguf");
    double our = 0, ll = 0, ourw = 0, llw = 0, secs = 0, n = 0, wsum = 0;
    int ntens = 0, worse = 0, wworse = 0;
    for (const auto& ti : file.tensors()) {
      if (ti.dims.size() != 2) continue;
      const auto v = file.view(ti);
      if (v.type == edgeq::GgmlType::F32) continue;
      const uint64_t cols = ti.dims[0], rows = ti.dims[1];
      const auto ref = reference(st, ti.name, rows, cols);
      const std::vector<float>* imp = imat ? im.importance(ti.name) : nullptr;
      std::vector<float> gdeq(ref.size()), odeq(ref.size());
      for (uint64_t r = 0; r < rows; ++r)
        edgeq::quant::dequantize_row(v.type, v.data + r * v.row_bytes(), gdeq.data() + r * cols,
                                     static_cast<int64_t>(cols));
      std::vector<uint8_t> buf(v.nbytes);
      const std::clock_t t0 = std::clock();
      edgeq::quant::quantize_rows(v.type, ref.data(), buf.data(), static_cast<int64_t>(rows),
                                  static_cast<int64_t>(cols), imp ? imp->data() : nullptr);
      secs += static_cast<double>(std::clock() - t0) / CLOCKS_PER_SEC;
      for (uint64_t r = 0; r < rows; ++r)
        edgeq::quant::dequantize_row(v.type, buf.data() + r * v.row_bytes(), odeq.data() + r * cols,
                                     static_cast<int64_t>(cols));
      const Err eg = errors(ref, gdeq, cols, imp), eo = errors(ref, odeq, cols, imp);
      double ws = 0;
      for (uint64_t c = 0; c < cols; ++c) ws += imp ? (*imp)[c] : 1.0;
      ws *= static_cast<double>(rows);
      our += eo.plain; ll += eg.plain; ourw += eo.weighted; llw += eg.weighted; wsum += ws;
      n += static_cast<double>(ref.size());
      ++ntens;
      if (eo.plain > eg.plain) ++worse;
      if (eo.weighted > eg.weighted) ++wworse;
      if (verbose || (imat ? eo.weighted > eg.weighted : eo.plain > eg.plain))
        std::printf("    %-24s %-6s our %.6e llama %.6e ratio %.4f  w-ratio %.4f\n", ti.name.c_str(),
                    edgeq::ggml_type_name(v.type), std::sqrt(eo.plain / ref.size()), std::sqrt(eg.plain / ref.size()),
                    std::sqrt(eo.plain / eg.plain), eg.weighted > 0 ? std::sqrt(eo.weighted / eg.weighted) : 0.0);
    }
    total_worse += imat ? wworse : worse;
    std::printf("%-12s %4d %12.6e %12.6e %7.4f %6d %12.6e %12.6e %7.4f %6d %8.2f\n", g.c_str(), ntens,
                std::sqrt(our / n), std::sqrt(ll / n), std::sqrt(our / ll), worse, std::sqrt(ourw / wsum),
                std::sqrt(llw / wsum), std::sqrt(ourw / llw), wworse, secs);
    std::fflush(stdout);
  }
  std::printf("tensors worse than llama.cpp in the target metric (plain; weighted for -imat): %d\n", total_worse);
  return total_worse == 0 ? 0 : 1;
}
