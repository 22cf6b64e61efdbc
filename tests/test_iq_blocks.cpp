// The lattice i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S): grids and sign tables against an
// independent encoding of them, dequantization of llama-quantize's golden files against an independent
// implementation, hostile blocks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "edgeq/formats/gguf.h"
#include "edgeq/base/half.h"
#include "edgeq/formats/safetensors.h"
#include "edgeq/quant/block_ops.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/iq_grids.h"
#include "test_helpers.h"
#include "tl8m_reference.h"

using edgeq::GgmlType;
namespace q = edgeq::quant;
namespace L = edgeq::quant::layout;

namespace {

const std::string kShared = EDGEQ_SHARED_DIR;
const GgmlType kLattice[] = {GgmlType::IQ1_S,  GgmlType::IQ1_M,   GgmlType::IQ2_XXS, GgmlType::IQ2_XS,
                             GgmlType::IQ2_S,  GgmlType::IQ3_XXS, GgmlType::IQ3_S};

uint64_t fnv1a(const void* p, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}
// FNV-1a of a grid's values in order (value j of entry i is byte j of the entry).
template <typename E, size_t N>
uint64_t grid_hash(const E (&g)[N], int width) {
  std::vector<uint8_t> v;
  for (E e : g)
    for (int j = 0; j < width; ++j) v.push_back(static_cast<uint8_t>(e >> (8 * j)));
  return fnv1a(v.data(), v.size());
}

}  // namespace

// The hashes were computed from gguf-py's own encoding of the grids (quants.py: every value as a 2- or 3-bit code
// into a list of levels, written out independently of ggml-common.h's hexadecimal tables).
TEST(IqGrids, EqualGgufPyEncoding) {
  EXPECT_EQ(grid_hash(L::kIq2xxsGrid, 8), 0xbb4ee025b5ac6e8eull);
  EXPECT_EQ(grid_hash(L::kIq2xsGrid, 8), 0xc9b1ee61e79909bdull);
  EXPECT_EQ(grid_hash(L::kIq2sGrid, 8), 0x123edd38a3b62b90ull);
  EXPECT_EQ(grid_hash(L::kIq3xxsGrid, 4), 0xdfa5dc83d6a155d5ull);
  EXPECT_EQ(grid_hash(L::kIq3sGrid, 4), 0xfa37020c25b44829ull);
  EXPECT_EQ(grid_hash(L::kIq1sGrid, 8), 0x6703ed863501ae2eull);
  // The levels each grid uses (ggml's: IQ2 8, 25, 43; IQ3_XXS 4..62; IQ3_S odd 1..15; IQ1 -1, 0, 1).
  auto levels_ok = [](auto& grid, int width, auto ok) {
    for (auto e : grid)
      for (int j = 0; j < width; ++j)
        if (!ok(static_cast<int>(static_cast<uint8_t>(e >> (8 * j))))) return false;
    return true;
  };
  auto iq2 = [](int v) { return v == 8 || v == 25 || v == 43; };
  EXPECT_TRUE(levels_ok(L::kIq2xxsGrid, 8, iq2));
  EXPECT_TRUE(levels_ok(L::kIq2xsGrid, 8, iq2));
  EXPECT_TRUE(levels_ok(L::kIq2sGrid, 8, iq2));
  EXPECT_TRUE(levels_ok(L::kIq3xxsGrid, 4, [](int v) { return v == 62 || (v >= 4 && v <= 52 && v % 8 == 4); }));
  EXPECT_TRUE(levels_ok(L::kIq3sGrid, 4, [](int v) { return v % 2 == 1 && v <= 15; }));
  EXPECT_TRUE(levels_ok(L::kIq1sGrid, 8, [](int v) { return v == 0xff || v == 0 || v == 1; }));
  // ggml's ksigns_iq2xs: first row 0, 129, 130, 3, 132, 5, 6, 135, last entry 255; an even count of minus signs.
  const uint8_t head[8] = {0, 129, 130, 3, 132, 5, 6, 135};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(L::kIqSigns[i], head[i]);
  EXPECT_EQ(L::kIqSigns[127], 255);
  for (int i = 0; i < 128; ++i) {
    EXPECT_EQ(L::kIqSigns[i] & 127, i);
    EXPECT_EQ(__builtin_popcount(L::kIqSigns[i]) % 2, 0);
  }
}

// Every tensor of the golden files' three shapes: FNV-1a of the dequantized floats (little-endian f32, rows in
// order) as an independent implementation computes them (gguf-py's dequantizers transcribed to plain Python, with
// float32 rounding after every operation, its grids decoded from gguf-py's encoding).
TEST(IqBlocks, GoldenDequantEqualsIndependentReference) {
  struct Case {
    const char* file;
    const char* tensor;
    GgmlType type;
    uint64_t hash;
  };
  const Case cases[] = {
      {"IQ1_S", "blk.0.attn_q.weight", GgmlType::IQ1_S, 0x3b4d116bf20b188full},
      {"IQ1_S", "blk.1.ffn_down.weight", GgmlType::IQ1_S, 0xec6e35813cbca75cull},
      {"IQ1_S", "blk.3.ffn_gate.weight", GgmlType::IQ1_S, 0x4f362fdd3258e84aull},
      {"IQ1_M", "blk.0.attn_q.weight", GgmlType::IQ1_M, 0x04b5ee95fe678462ull},
      {"IQ1_M", "blk.1.ffn_down.weight", GgmlType::IQ1_M, 0x1b65bd3f97ee9ac7ull},
      {"IQ1_M", "blk.3.ffn_gate.weight", GgmlType::IQ1_M, 0x1df8cad709a3733aull},
      {"IQ2_XXS", "blk.0.attn_q.weight", GgmlType::IQ2_XXS, 0xbc490a382f2b8c5full},
      {"IQ2_XXS", "blk.1.ffn_down.weight", GgmlType::IQ2_XXS, 0xc307955087c71043ull},
      {"IQ2_XXS", "blk.3.ffn_gate.weight", GgmlType::IQ2_XXS, 0x2a6683c3e399f25cull},
      {"IQ2_XS", "blk.0.attn_q.weight", GgmlType::IQ2_XS, 0xa2e498fd43531e38ull},
      {"IQ2_XS", "blk.1.ffn_down.weight", GgmlType::IQ2_XS, 0x3b280a69c87a7aa6ull},
      {"IQ2_XS", "blk.3.ffn_gate.weight", GgmlType::IQ2_XS, 0xe1d01a871e745366ull},
      {"IQ2_S", "blk.7.attn_v.weight", GgmlType::IQ3_S, 0xa5a17f663003380dull},
      {"IQ3_XXS", "blk.0.attn_q.weight", GgmlType::IQ2_S, 0x93ec10225b809f62ull},
      {"IQ3_XXS", "blk.1.ffn_down.weight", GgmlType::IQ3_XXS, 0x574d0a1720a89aadull},
      {"IQ3_XXS", "blk.3.ffn_gate.weight", GgmlType::IQ3_XXS, 0xe13c6ff6e54eafcaull},
      {"IQ3_XXS", "blk.7.attn_v.weight", GgmlType::IQ3_XXS, 0x4b4508cff1fbab55ull},
      {"IQ3_S", "blk.0.attn_q.weight", GgmlType::IQ3_S, 0xd69ecda67df5d20full},
      {"IQ3_S", "blk.1.ffn_down.weight", GgmlType::IQ3_S, 0x09b8d3888f67c18cull},
      {"IQ3_S", "blk.3.ffn_gate.weight", GgmlType::IQ3_S, 0x62ae7f264eadd934ull},
  };
  for (const Case& c : cases) {
    const auto file = edgeq::GgufFile::open(kShared + "/golden/tl-8m-" + c.file + "-imat.gguf");
    const auto view = file.view(c.tensor);
    ASSERT_EQ(view.type, c.type) << c.file << " " << c.tensor;
    const int64_t ne0 = static_cast<int64_t>(view.dims[0]), rows = static_cast<int64_t>(view.dims[1]);
    std::vector<float> y(static_cast<size_t>(ne0 * rows)), ys(y.size());
    for (int64_t r = 0; r < rows; ++r) {
      q::dequantize_row(view.type, view.data + r * view.row_bytes(), y.data() + r * ne0, ne0);  // AVX2 where present
      q::dequantize_row_scalar(view.type, view.data + r * view.row_bytes(), ys.data() + r * ne0, ne0);
    }
    EXPECT_EQ(fnv1a(y.data(), y.size() * 4), c.hash) << c.file << " " << c.tensor;
    EXPECT_EQ(fnv1a(ys.data(), ys.size() * 4), c.hash) << c.file << " " << c.tensor << " (portable path)";
  }
}

// The grids against the golden files: llama-quantize chose every grid point to approximate tl-8m's weights, so
// with the right tables every lattice tensor of every golden file dequantizes close to the weights it encodes
// (a wrong entry or field would put values on the wrong points). Bounds: relative RMS error per tensor, a margin
// above the worst tensor of each file (measured: IQ1_S 0.528, IQ1_M 0.496, IQ2_XXS 0.365, IQ2_XS 0.321, IQ2_S
// 0.321, IQ3_XXS 0.250, IQ3_S 0.147; random grid points would give about 1).
TEST(IqBlocks, GoldenFilesDequantizeCloseToTheWeights) {
  const auto st = edgeq::SafetensorsFile::open(kShared + "/models/tl-8m/model.safetensors");
  const std::pair<const char*, double> files[] = {{"IQ1_S", 0.62}, {"IQ1_M", 0.55}, {"IQ2_XXS", 0.45}, {"IQ2_XS", 0.40},
                                                  {"IQ2_S", 0.38},  {"IQ3_XXS", 0.30}, {"IQ3_S", 0.20}};
  int n_files = 0;
  for (const auto& [name, bound] : files) {
    if (EDGEQ_SANITIZED && ++n_files > 2) break;  // the sanitizer build checks IQ1_S and IQ1_M only
    const auto file = edgeq::GgufFile::open(kShared + "/golden/tl-8m-" + name + "-imat.gguf");
    int lattice_tensors = 0;
    for (const auto& t : file.tensors()) {
      if (std::find(std::begin(kLattice), std::end(kLattice), t.type) == std::end(kLattice)) continue;
      const auto view = file.view(t.name);
      const uint64_t ne0 = view.dims[0], rows = view.dims[1];
      const auto ref = tl8m::reference(st, t.name, rows, ne0, rows);
      ASSERT_EQ(ref.size(), ne0 * rows) << t.name;
      std::vector<float> y(ref.size());
      for (uint64_t r = 0; r < rows; ++r) q::dequantize_row(view.type, view.data + r * view.row_bytes(), y.data() + r * ne0, static_cast<int64_t>(ne0));
      double err = 0, norm = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        err += (static_cast<double>(y[i]) - ref[i]) * (static_cast<double>(y[i]) - ref[i]);
        norm += static_cast<double>(ref[i]) * ref[i];
      }
      const double rel = std::sqrt(err / norm);
      EXPECT_LT(rel, bound) << name << " " << t.name << " (" << edgeq::ggml_type_name(t.type) << "): " << rel;
      ++lattice_tensors;
    }
    EXPECT_GE(lattice_tensors, 30) << name;
  }
}

// Hostile blocks: every index field is as wide as its grid, so any bytes address a grid point; random bytes with a
// finite scale give finite values, a NaN or infinite scale gives non-finite values where ggml's do (no crash, no
// read outside the tables), and dequantization only depends on the bytes.
TEST(IqBlocks, HostileBlocks) {
  std::mt19937 rng(7);
  for (GgmlType t : kLattice) {
    const auto* info = edgeq::ggml_type_info(t);
    ASSERT_TRUE(q::can_dequantize(t)) << info->name;
    const int64_t nb = 64;
    std::vector<uint8_t> b(static_cast<size_t>(nb) * info->type_size);
    for (auto& v : b) v = static_cast<uint8_t>(rng());
    // A finite scale: IQ1_M keeps its fp16 scale in the top nibbles of its last four 16-bit words; the others in
    // their first two bytes.
    for (int64_t i = 0; i < nb; ++i) {
      uint8_t* blk = b.data() + i * info->type_size;
      if (t == GgmlType::IQ1_M) blk[info->type_size - 1] &= 0xBF;  // sign+exponent nibble of the fp16 scale's top
      else blk[1] &= 0xBF;
    }
    std::vector<float> y(static_cast<size_t>(nb) * 256);
    q::dequantize_row(t, b.data(), y.data(), static_cast<int64_t>(y.size()));
    for (float v : y) ASSERT_TRUE(std::isfinite(v)) << info->name;
    // All index and sign bits set, then a NaN scale.
    std::fill(b.begin(), b.end(), 0xFF);
    q::dequantize_row(t, b.data(), y.data(), static_cast<int64_t>(y.size()));
    for (float v : y) ASSERT_TRUE(std::isnan(v)) << info->name;  // 0xFFFF as fp16 is a NaN
  }
}
