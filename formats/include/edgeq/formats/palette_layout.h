// Palettized weights in GGUF: edgeq's storage of k-means look-up-table quantization (quant/palette.h
// fits the tables). It uses standard tensor types only, but llama.cpp cannot load such a file: the weight's
// own name is missing. A weight W with dims [ne0, ne1, ...] (ne0 the row length, rows = ne1·…) is stored as
//   <name>.pal_idx  I8  [ne0·bits/8, ne1, ...]  per row a little-endian bit stream of ne0 indices of `bits` bits
//                                               (element j's index is bits [j·bits, (j+1)·bits) of the row)
//   <name>.pal_lut  F16 [2^bits, n_groups]      group g's table serves rows [g·G, (g+1)·G), G = rows / n_groups
// with the file-wide keys
//   edgeq.pal.bits   u32  index bits (2, 3, 4, 6 or 8), the same for every palettized tensor
//   edgeq.pal.group  u32  rows per table (G); 0: one table per tensor
// Element (r, j) of W is lut[group(r)][index(r, j)]. Bits per weight follow llama.cpp's definition (tensor
// data bits / parameters) with a palettized weight counted as its ne0·rows parameters: index and table bytes
// are data, table entries are not parameters.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "edgeq/formats/gguf.h"

namespace edgeq::palette {

inline constexpr std::string_view kIndexSuffix = ".pal_idx";
inline constexpr std::string_view kLutSuffix = ".pal_lut";
inline constexpr const char* kBitsKey = "edgeq.pal.bits";
inline constexpr const char* kGroupKey = "edgeq.pal.group";

bool valid_bits(int bits);  // 2, 3, 4, 6, 8
// Whether a row of ne0 elements packs into whole bytes at `bits` (ne0·bits a multiple of 8).
bool row_fits(uint64_t ne0, int bits);
uint64_t index_row_bytes(uint64_t ne0, int bits);  // ne0·bits/8 (row_fits must hold)
// Tensor dims of the two parts for a weight of `dims`; n_groups = 1 for group_rows 0.
std::vector<uint64_t> index_dims(const std::vector<uint64_t>& dims, int bits);
std::vector<uint64_t> lut_dims(int bits, uint64_t n_groups);
// Bytes of both parts together.
uint64_t palettized_bytes(const std::vector<uint64_t>& dims, int bits, uint64_t n_groups);

// One palettized weight of a file.
struct PalTensor {
  std::string name;            // the weight's name ("blk.0.attn_q.weight")
  std::vector<uint64_t> dims;  // the weight's dims
  int bits = 0;
  uint64_t n_groups = 0, group_rows = 0;  // group_rows = rows / n_groups
  const GgufTensorInfo* index = nullptr;
  const GgufTensorInfo* lut = nullptr;
  uint64_t n_elements() const;
  uint64_t nbytes() const { return index->nbytes + lut->nbytes; }
};

// Every palettized weight of f, in the order of its index tensors: both parts present with types I8 and F16,
// shapes consistent with each other and with edgeq.pal.bits / edgeq.pal.group, no plain tensor of the same
// name. Empty for a file without .pal_idx/.pal_lut tensors. Throws edgeq::Error "<file>: tensor <name>: ...".
std::vector<PalTensor> palettized_tensors(const GgufFile& f);

// Whether a tensor of the file is one part of a palettized weight (by its suffix).
bool is_part_name(std::string_view tensor_name);

// Tensor data bytes and parameters of a file as llama.cpp counts them, palettized weights as their logical
// parameters (see above).
struct DataSize {
  uint64_t bytes = 0, parameters = 0;
  double bits_per_weight() const { return parameters ? 8.0 * double(bytes) / double(parameters) : 0.0; }
};
DataSize data_size(const GgufFile& f);

}  // namespace edgeq::palette
