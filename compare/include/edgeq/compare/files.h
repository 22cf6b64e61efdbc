// Compare quantized models against a reference on one text: the reference's perplexity and log-probabilities
// are computed once, then each candidate's perplexity and KL divergence (llama-perplexity's definitions, see
// docs/PROTOCOL.md), with file size and bits per weight — the table behind `edgeq compare BASE CANDIDATES...`
// (the sweep, sweep.h, describes its files with describe_model too).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "edgeq/runtime/model.h"
#include "edgeq/runtime/perplexity.h"

namespace edgeq::compare {

using runtime::ChunkProgress;
using runtime::Model;
using runtime::PerplexityResult;

struct CompareRow {
  std::string path;
  std::string file_type;  // general.file_type as llama-quantize names it ("Q4_K_M"), or "?"
  uint64_t file_bytes = 0;
  uint64_t parameters = 0;
  double bits_per_weight = 0;  // 8 x tensor bytes / parameters (docs/PROTOCOL.md)
  PerplexityResult result;     // result.kld is set for candidates
};

struct CompareReport {
  std::string text_path;
  int64_t n_ctx = 0, n_chunks = 0, scored = 0;
  CompareRow base;
  std::vector<CompareRow> candidates;
};

struct CompareOptions {
  int64_t n_ctx = 256;
  int64_t max_chunks = -1;
  int n_threads = 1;
  // Called before each model is evaluated (index 0 = the base) and after every chunk.
  std::function<void(size_t model_index, const std::string& path)> on_model;
  std::function<void(const ChunkProgress&)> progress;
};

// Path, file type, size, parameters and bits per weight of a loaded model (no evaluation).
CompareRow describe_model(const Model& m);

// Throws edgeq::Error when a candidate does not share the base's vocabulary, or on any load error.
CompareReport compare_models(const std::string& base, const std::vector<std::string>& candidates,
                             const std::string& text_path, const CompareOptions& opt);

nlohmann::json compare_to_json(const CompareReport& r);
std::string render_compare(const CompareReport& r);

}  // namespace edgeq::compare
