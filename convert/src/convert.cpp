// convert_to_gguf: streams a ConvertPlan into a GGUF file, one tensor (slab of rows) at a time.
#include "edgeq/convert/convert.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/base/thread_count.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/base/thread_pool.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/quantize.h"

namespace edgeq::convert {

namespace {

// A source value that is NaN or Inf, or that F16 cannot hold (it would become Inf, which quantize then
// refuses): an error naming the tensor and element, before anything of it is written.
void check_values(const std::string& path, const SourceTensor& t, GgmlType ty, const float* x, uint64_t n,
                  uint64_t row0, uint64_t row_len) {
  constexpr float kF16Limit = 65520.0f;  // the smallest magnitude F16 rounds to Inf
  const bool f16 = ty == GgmlType::F16;
  for (uint64_t i = 0; i < n; ++i) {
    const float v = x[i];
    if (std::isfinite(v) && !(f16 && std::fabs(v) >= kF16Limit)) continue;
    const uint64_t row = row0 + i / row_len, col = i % row_len;
    if (!std::isfinite(v))
      fail("{}: tensor {}: non-finite value {} at row {}, column {}", path, t.name, v, row, col);
    fail("{}: tensor {}: value {} at row {}, column {} exceeds F16's range (max 65504); convert with --outtype bf16 "
         "or --outtype f32", path, t.name, v, row, col);
  }
}

}  // namespace

ConvertResult convert_to_gguf(const ConvertPlan& plan, const std::string& out_path, const std::string& outtype_in, int threads,
                              const ProgressFn& progress, const GgufSplitOptions& split) {
  ThreadPool pool(resolve_threads(threads));
  std::string outtype = outtype_in.empty() ? plan.outtype : resolve_outtype(outtype_in, plan.first_source_type);

  GgufWriter w(out_path, split);
  for (auto& [k, v] : plan.metadata) w.set(k, v);
  w.set("general.file_type", GgufValue(file_type_for(outtype)));
  if (plan.hf_converter_layout) {
    // general.quantization_version is already last, whatever the outtype
  } else if (outtype == "q8_0") {
    if (!w.find("general.quantization_version")) {
      // keep it right after general.file_type, as in a plan made for q8_0
      std::vector<std::pair<std::string, GgufValue>> kv;
      for (auto& [k, v] : plan.metadata) {
        kv.emplace_back(k, v);
        if (k == "general.file_type") kv.emplace_back("general.quantization_version", GgufValue(static_cast<uint32_t>(2)));
      }
      for (auto& [k, v] : kv) w.remove(k);
      for (auto& [k, v] : kv) w.set(k, k == "general.file_type" ? GgufValue(file_type_for(outtype)) : v);
    }
  } else {
    w.remove("general.quantization_version");
  }

  std::vector<GgmlType> types;
  uint64_t total = 0;
  for (auto& t : plan.tensors) {
    GgmlType ty = outtype == plan.outtype ? t.keep_type : output_type_for(t.name, t.dims, outtype);
    auto rb = ggml_row_size(ty, t.dims.empty() ? 1 : t.dims[0]);
    if (!rb) fail("{}: tensor {}: row of {} elements does not fit {} blocks", plan.path, t.name, t.dims[0], ggml_type_name(ty));
    types.push_back(ty);
    w.add_tensor(t.name, t.dims, ty);
  }
  for (size_t i = 0; i < w.tensor_count(); ++i) total += w.tensor(i).nbytes;
  w.check_outputs();  // every file of a split set, before any tensor is read

  std::vector<float> fbuf;
  std::vector<uint8_t> obuf;
  uint64_t done = 0;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const SourceTensor& t = plan.tensors[i];
    const GgmlType ty = types[i];
    const uint64_t row_len = t.dims.empty() ? 1 : t.dims[0];
    const uint64_t n_rows = t.n_elements() / std::max<uint64_t>(row_len, 1);
    const uint64_t row_bytes = *ggml_row_size(ty, row_len);
    if (t.load_rows && n_rows > 1) {
      uint64_t slab = std::max<uint64_t>(1, kSlabElements / std::max<uint64_t>(row_len, 1));
      slab = std::min(slab, n_rows);
      fbuf.resize(slab * row_len);
      obuf.resize(slab * row_bytes);
      for (uint64_t r = 0; r < n_rows; r += slab) {
        uint64_t nr = std::min(slab, n_rows - r);
        // One contiguous range of rows per worker (sources read long ranges fastest), loaded and encoded.
        const uint64_t per = (nr + static_cast<uint64_t>(pool.size()) - 1) / static_cast<uint64_t>(pool.size());
        pool.run(static_cast<int64_t>((nr + per - 1) / per), [&](int64_t task, int) {
          const uint64_t a = static_cast<uint64_t>(task) * per, b = std::min(nr, a + per);
          t.load_rows(r + a, b - a, fbuf.data() + a * row_len);
          check_values(plan.path, t, ty, fbuf.data() + a * row_len, (b - a) * row_len, r + a, row_len);
          quant::quantize_rows(ty, fbuf.data() + a * row_len, obuf.data() + a * row_bytes, static_cast<int64_t>(b - a),
                               static_cast<int64_t>(row_len), nullptr);
        });
        w.write_tensor_data(obuf.data(), nr * row_bytes);
        if (t.release) t.release();  // drop the consumed source pages now: RSS stays near one slab
      }
    } else {
      fbuf.resize(t.n_elements());
      obuf.resize(n_rows * row_bytes);
      t.load_f32(fbuf.data());
      check_values(plan.path, t, ty, fbuf.data(), fbuf.size(), 0, row_len);
      quant::quantize_rows_parallel(ty, fbuf.data(), obuf.data(), static_cast<int64_t>(n_rows),
                                    static_cast<int64_t>(row_len), nullptr, pool);
      w.write_tensor_data(obuf.data(), obuf.size());
    }
    if (t.release) t.release();
    done += n_rows * row_bytes;
    if (progress) progress(ConvertProgress{i, plan.tensors.size(), &t, ty, done, total});
  }
  uint64_t size = w.expected_file_size();
  w.finish();
  ConvertResult res;
  res.outputs = w.output_paths();
  res.path = res.outputs.front();
  res.outtype = outtype;
  res.n_tensors = plan.tensors.size();
  res.file_size = size;
  res.tensor_bytes = total;
  return res;
}

}  // namespace edgeq::convert
