// Streams a ConvertPlan into a GGUF file through the one GGUF pipeline (quant::write_gguf; edgeq::GgufWriter:
// temp file + rename, so a failure leaves no output). One tensor is in flight at a time, processed in slabs of
// rows when the plan can load rows, so peak memory stays near one slab (or the largest tensor for sources that
// only load whole tensors). Threads split the rows of a slab; every row is converted independently, so the
// output is byte-identical for any thread count.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "edgeq/formats/gguf.h"

#include "edgeq/convert/plan.h"

namespace edgeq::convert {

struct ConvertProgress {
  size_t index = 0;        // tensor being written (0-based)
  size_t count = 0;        // tensors in the plan
  const SourceTensor* tensor = nullptr;
  GgmlType type = GgmlType::F32;  // type written for it
  uint64_t bytes_done = 0;  // output tensor bytes written so far (after this tensor)
  uint64_t bytes_total = 0;
};
using ProgressFn = std::function<void(const ConvertProgress&)>;

struct ConvertResult {
  std::string path;                  // the output (the first file of a split set)
  std::vector<std::string> outputs;  // every file written
  std::string outtype;   // resolved outtype
  size_t n_tensors = 0;
  uint64_t file_size = 0;  // all files together
  uint64_t tensor_bytes = 0;
};

// outtype: "" or the plan's own outtype to keep it; otherwise auto|f32|f16|bf16|q8_0 (re-resolves the types
// and general.file_type). threads <= 0: hardware concurrency. progress may be empty. split: write a split GGUF
// as gguf-split lays it out (formats/gguf.h), all files temp until the last is written.
ConvertResult convert_to_gguf(const ConvertPlan& plan, const std::string& out_path, const std::string& outtype = "",
                              int threads = 0, const ProgressFn& progress = {}, const GgufSplitOptions& split = {});

}  // namespace edgeq::convert
