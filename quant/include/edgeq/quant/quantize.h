// The one GGUF pipeline: a model source (a GGUF file, or a planned HF/ONNX conversion adapted by
// convert/quantize_source.h) -> a type per tensor (quantize's policy, or convert's outtype) -> load, check,
// encode -> a GGUF written by GgufWriter (temp file + rename). One tensor is in flight at a time, streamed in
// slabs of rows when nothing needs it whole.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "edgeq/formats/ggml_types.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/source_tensor.h"
#include "edgeq/base/thread_pool.h"
#include "edgeq/quant/policy.h"

namespace edgeq::quant {

// The source tensor and model types are formats/source_tensor.h's (shared with convert's plan).
using edgeq::SourceTensor;
using QuantizeSource = ModelSource;

// Opens a GGUF file as a source: metadata copied, tensors loaded through dequantize_row / half conversions;
// a palettized weight (its .pal_idx and .pal_lut tensors) is one source tensor decoded through its tables.
QuantizeSource open_gguf_source(const std::string& path);

// Importance vectors (llama.cpp imatrix) keyed by tensor name, and the provenance llama-quantize records.
struct Importance {
  ImatrixProvenance info;  // file as given on the command line, dataset, entries and chunks counts
  std::unordered_map<std::string, std::vector<float>> data;
};
// Loads an imatrix file with the imatrix reader (edgeq/quant/imatrix.h); throws edgeq::Error.
Importance load_importance(const std::string& path);

struct TensorProgress {
  size_t index = 0, count = 0;  // 0-based index of the tensor just written, of count
  std::string name;
  std::vector<uint64_t> dims;
  GgmlType from, to;
  bool quantized = false;  // false: copied/converted unchanged
  bool fallback = false;
  bool has_importance = false;
  int palette_bits = 0;  // > 0: written palettized (`to` is the index tensor's I8)
  uint64_t bytes_before = 0, bytes_after = 0;
  double seconds = 0;
};

// A calibration-driven method's hook into the pipeline (calibrate/ implements AWQ and GPTQ with it). Called
// for every tensor after its f32 values are loaded and checked, before encoding. It may rewrite the values
// in place (AWQ: a norm divided by its scales, weight columns multiplied by them), replace the importance
// vector, or encode the rows itself into dst (d.nbytes bytes).
enum class HookResult { Untouched, Modified, Encoded };
struct TensorHookArgs {
  const std::string& name;
  GgmlType type;        // the output type
  bool quantize;        // the policy quantizes this tensor
  float* values;        // nrows * n_per_row floats, may be rewritten
  int64_t nrows, n_per_row;
  const float* importance;  // the importance the standard encoder would use (may be null); may be replaced
  uint8_t* dst;             // room for the encoded tensor
  int threads;
};
using TensorHook = std::function<HookResult(TensorHookArgs&)>;

struct QuantizeOptions {
  PolicyOptions policy;
  const Importance* importance = nullptr;  // optional; not owned
  int threads = 0;                         // 0: hardware concurrency
  bool allow_requantize = false;
  std::string method = "edgeq";  // recorded in edgeq.quantize.method together with the mix
  bool record_method = true;     // false: no edgeq.quantize.method key (metadata exactly as llama-quantize)
  std::function<void(const TensorProgress&)> on_tensor;  // called after each tensor is written
  TensorHook tensor_hook;                                  // optional (calibration methods)
  std::vector<std::pair<std::string, GgufValue>> extra_metadata;  // appended after edgeq.quantize.method when recorded
  // Called with the output's header (metadata and tensor infos, no data: GgufFile::parse_header) before
  // any tensor is read or written; throws to refuse. The CLI runs the runtime's model checks here, so
  // quantize never writes a file that perplexity would then reject.
  std::function<void(const GgufFile& header)> check_output;
  // Write a split GGUF as gguf-split lays it out (formats/gguf.h; none by default).
  GgufSplitOptions split;
  // The advice in the error for a value beyond F16's range in a tensor written as F16.
  std::string f16_range_hint = "give the tensor another type (--tensor-type NAME=bf16 or f32)";
};

// One planned output tensor (in output order).
struct PlannedOutput {
  size_t source_index = 0;  // index into QuantizeSource::tensors
  TypeDecision decision;
};

struct QuantizePlan {
  ModelParams params;
  std::vector<PlannedOutput> tensors;  // llama.cpp order
  uint64_t bytes_before = 0;           // source tensor bytes (source types)
  uint64_t bytes_after = 0;            // output tensor data bytes (unpadded)
};

// Decides every tensor's output type and size without reading tensor data; validates requantization
// (a palettized source tensor palettized again needs allow_requantize), importance sizes, and that a PAL type
// palettizes at least one tensor. Throws edgeq::Error.
QuantizePlan plan_quantize(const QuantizeSource& src, const QuantizeOptions& opts);

struct QuantizeReport {
  std::string output;                // the output file (the first file of a split set)
  std::vector<std::string> outputs;  // every file written
  FileType ftype = FileType::MOSTLY_Q4_K_M;
  size_t n_tensors = 0, n_quantized = 0, n_fallback = 0, n_with_importance = 0;
  uint64_t n_elements = 0;
  uint64_t bytes_before = 0;  // source tensor data
  uint64_t bytes_after = 0;   // output tensor data (unpadded)
  uint64_t file_size = 0;     // output file (all files of a split set)
  double seconds = 0;
  int threads = 1;
  std::map<std::string, size_t> type_counts;  // ggml type name (PALn for palettized weights) -> tensors
  double bpw_before() const { return n_elements ? 8.0 * double(bytes_before) / double(n_elements) : 0; }
  double bpw_after() const { return n_elements ? 8.0 * double(bytes_after) / double(n_elements) : 0; }
};

// Quantizes src into out_path. The output appears only when complete; the same input and options give
// byte-identical files for any thread count. Throws edgeq::Error (non-finite weights name the tensor).
// PAL types write edgeq.pal.bits and edgeq.pal.group (formats/palette_layout.h) and skip tensor_hook for palettized
// tensors (the calibration methods rewrite standard blocks only).
QuantizeReport quantize_model(const QuantizeSource& src, const std::string& out_path, const QuantizeOptions& opts);

// The pipeline under quantize_model and convert_to_gguf: writes metadata (in order; a repeated key replaces the
// earlier value) and src's tensors as plan.tensors says (output order, one decision each) into out_path.
// Uses opts' importance, tensor_hook, threads, on_tensor, check_output, split, palette group and
// f16_range_hint; not its policy (the decisions are made). report.bytes_before is plan.bytes_before.
QuantizeReport write_gguf(const QuantizeSource& src, const QuantizePlan& plan,
                          const std::vector<std::pair<std::string, GgufValue>>& metadata, const std::string& out_path,
                          const QuantizeOptions& opts);

// Rows per slab when a tensor is streamed (elements per slab ~ this many floats); exposed for tests/benchmarks.
inline constexpr uint64_t kSlabElements = 4u << 20;  // 16 MiB of f32

// The edgeq.quantize.method string recorded for these options; empty (no key) when !opts.record_method.
std::string quantize_method_string(const QuantizeOptions& opts);

// Rows per work item used when splitting a tensor over threads (fixed, so output never depends on threads).
int64_t quantize_chunk_rows(int64_t n_per_row);

// quantize_rows (blocks.h) over a pool, in work items of quantize_chunk_rows(n_per_row) rows: the same bytes
// for any pool size; on failure, the error of the lowest-numbered failing work item. Convert and quantize
// both encode through it.
void quantize_rows_parallel(GgmlType t, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                            const float* importance, ThreadPool& pool);

}  // namespace edgeq::quant
