// Palettization: k-means look-up tables (the PAL2…PAL8 file types; storage in formats/palette_layout.h).
// A group of rows shares one table of 2^bits f16 values; each weight is stored as the index of its nearest
// table entry. The table minimises the importance-weighted squared error Σ imp[column]·(w − lut[idx])²
// (imp = the imatrix's mean x² per input column; all 1 without one): weighted k-means in one dimension
// (Lloyd's iterations from weighted-quantile seeds, each iteration exact on the sorted distinct values, empty
// clusters re-seeded in the cluster with the largest error). No randomness: the same input gives the same
// bytes for any thread count.
#pragma once
#include <cstdint>
#include <vector>

#include "edgeq/base/thread_pool.h"

namespace edgeq::quant {

// The table (2^bits values, ascending, each an f16 value) for n values x with weights w (nullptr: all 1;
// weights >= 0, all zero counts as all 1).
std::vector<float> fit_palette(const float* x, const float* w, int64_t n, int bits);

// The index of the table entry nearest to v (ties: the lower index); lut ascending, k entries.
int palette_index(const float* lut, int k, float v);

// Palettizes nrows rows of n_per_row values: one table per group_rows rows (0: one for all rows; must divide
// nrows), importance per column (n_per_row values) or nullptr. Writes nrows · n_per_row·bits/8 index bytes
// (formats/palette_layout.h's bit streams; n_per_row·bits must be a multiple of 8) and n_groups · 2^bits f16 table
// entries. Groups are fitted and rows encoded in parallel on pool; throws edgeq::Error on bad arguments.
void palettize(const float* x, int64_t nrows, int64_t n_per_row, const float* importance, int bits,
               int64_t group_rows, uint8_t* idx, uint16_t* lut, ThreadPool& pool);

// Decodes one row of n indices (n·bits/8 bytes) with a table of 2^bits floats.
void palette_decode_row(const uint8_t* idx_row, const float* lut, int bits, float* dst, int64_t n);

}  // namespace edgeq::quant
