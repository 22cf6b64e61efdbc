// Quantizer quality against llama.cpp's golden quantized files (llama-quantize b4748 from the F32 conversion
// of tl-8m): on a representative subset of tensors (first 128 rows of 5 tensors, incl. the permuted q/k and a
// 768-wide ffn_down), for every golden type, our error is no worse tensor by tensor and lower on aggregate —
// plain squared error without imatrix, imatrix-weighted squared error for the -imat goldens.
// bench/bench_quant_rmse covers every tensor of every golden.
#include <gtest/gtest.h>

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

using tl8m::reference;

double sq_err(const std::vector<float>& a, const std::vector<float>& b, uint64_t cols, const float* imp) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    s += (imp ? imp[i % cols] : 1.0) * d * d;
  }
  return s;
}

}  // namespace

// The reference built here (BF16 widened, q/k permuted) must equal llama.cpp's F16 conversion of tl-8m up to
// f16 rounding, for every 2-D tensor: otherwise the comparisons below would be meaningless.
TEST(QuantQuality, ReferenceMatchesGoldenF16) {
  const auto st = edgeq::SafetensorsFile::open(kShared + "/models/tl-8m/model.safetensors");
  const auto file = edgeq::GgufFile::open(kShared + "/golden/tl-8m-F16.gguf");
  int n = 0;
  for (const auto& ti : file.tensors()) {
    if (ti.dims.size() != 2) continue;
    const auto v = file.view(ti);
    const uint64_t cols = ti.dims[0], rows = ti.dims[1];
    const auto ref = reference(st, ti.name, rows, cols, rows);
    ASSERT_EQ(ref.size(), rows * cols) << ti.name;
    std::vector<float> deq(ref.size());
    for (uint64_t r = 0; r < rows; ++r)
      edgeq::quant::dequantize_row(v.type, v.data + r * v.row_bytes(), deq.data() + r * cols,
                                   static_cast<int64_t>(cols));
    const double err = sq_err(ref, deq, cols, nullptr), sig = sq_err(ref, std::vector<float>(ref.size()), cols, nullptr);
    EXPECT_LT(err, 1e-6 * sig) << ti.name;
    ++n;
  }
  EXPECT_EQ(n, 58);
}

TEST(QuantQuality, NoWorseThanLlamaCppPerTensorAndBetterOnAggregate) {
  const auto st = edgeq::SafetensorsFile::open(kShared + "/models/tl-8m/model.safetensors");
  const auto im = edgeq::quant::ImatrixFile::open(kShared + "/golden/tl-8m.imatrix");
  const char* goldens[] = {"Q8_0",   "Q6_K",   "Q5_K_M", "Q5_K_S", "Q5_1",        "Q5_0",        "Q4_K_M",
                           "Q4_K_S", "Q4_1",   "Q4_0",   "Q3_K_L", "Q3_K_M",      "Q3_K_S",      "Q2_K",
                           "IQ4_NL", "IQ4_XS", "Q4_K_M-imat", "Q3_K_M-imat", "Q2_K-imat", "IQ4_XS-imat"};
  const char* tensors[] = {"blk.0.attn_q.weight", "blk.3.attn_k.weight", "blk.1.ffn_down.weight",
                           "blk.7.attn_v.weight", "output.weight"};
  const uint64_t kRows = 128;
  for (const std::string g : goldens) {
    const bool imat = g.find("-imat") != std::string::npos;
    const auto file = edgeq::GgufFile::open(kShared + "/golden/tl-8m-" + g + ".gguf");
    double ours_total = 0, theirs_total = 0;
    for (const std::string name : tensors) {
      const auto v = file.view(name);
      const uint64_t cols = v.dims[0], rows = std::min<uint64_t>(kRows, v.dims[1]);
      const auto ref = reference(st, name, v.dims[1], cols, rows);
      ASSERT_EQ(ref.size(), rows * cols);
      const std::vector<float>* impv = imat ? im.importance(name) : nullptr;
      if (imat && name != "output.weight") {
        ASSERT_NE(impv, nullptr) << name;
      }
      const float* imp = impv ? impv->data() : nullptr;
      std::vector<float> gdeq(ref.size()), odeq(ref.size());
      std::vector<uint8_t> buf(rows * v.row_bytes());
      edgeq::quant::quantize_rows(v.type, ref.data(), buf.data(), static_cast<int64_t>(rows),
                                  static_cast<int64_t>(cols), imp);
      for (uint64_t r = 0; r < rows; ++r) {
        edgeq::quant::dequantize_row(v.type, v.data + r * v.row_bytes(), gdeq.data() + r * cols,
                                     static_cast<int64_t>(cols));
        edgeq::quant::dequantize_row(v.type, buf.data() + r * v.row_bytes(), odeq.data() + r * cols,
                                     static_cast<int64_t>(cols));
      }
      const double theirs = sq_err(ref, gdeq, cols, imp), ours = sq_err(ref, odeq, cols, imp);
      // Sanity: the golden really is a quantization of this reference (a wrong row permutation gives ~2x).
      const double sig = sq_err(ref, std::vector<float>(ref.size(), 0.f), cols, imp);
      EXPECT_LT(theirs, 0.25 * sig) << g << " " << name;
      EXPECT_LE(ours, theirs) << g << " " << name << " (" << edgeq::ggml_type_name(v.type)
                              << "): RMSE ratio " << std::sqrt(ours / theirs);
      ours_total += ours;
      theirs_total += theirs;
    }
    EXPECT_LT(ours_total, 0.995 * theirs_total) << g << ": aggregate ratio " << std::sqrt(ours_total / theirs_total);
    std::printf("%-12s aggregate error ratio (ours / llama.cpp, RMSE) %.4f\n", g.c_str(),
                std::sqrt(ours_total / theirs_total));
  }
}
