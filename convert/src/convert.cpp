// convert_to_gguf: streams a ConvertPlan into a GGUF file, one tensor (slab of rows) at a time.
#include "edgeq/convert/convert.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "edgeq/formats/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/quant/blocks.h"

namespace edgeq::convert {

namespace {

// Converts rows [r0, r1) of src (f32, row_len each) into dst rows of type t (the sources have checked that
// every value is finite).
void encode_rows(GgmlType t, const float* src, uint8_t* dst, uint64_t r0, uint64_t r1, uint64_t row_len, uint64_t row_bytes) {
  quant::quantize_rows(t, src + r0 * row_len, dst + r0 * row_bytes, static_cast<int64_t>(r1 - r0),
                       static_cast<int64_t>(row_len), nullptr);
}

template <typename F>
void parallel_rows(uint64_t n_rows, int threads, F&& f) {
  uint64_t nt = std::min<uint64_t>(static_cast<uint64_t>(threads), n_rows);
  if (nt <= 1) {
    f(0, n_rows);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errs(nt);
  uint64_t per = (n_rows + nt - 1) / nt;
  for (uint64_t i = 0; i < nt; ++i) {
    uint64_t a = i * per, b = std::min(n_rows, a + per);
    if (a >= b) break;
    pool.emplace_back([&, i, a, b] {
      try {
        f(a, b);
      } catch (...) {
        errs[i] = std::current_exception();
      }
    });
  }
  for (auto& t : pool) t.join();
  for (auto& e : errs)
    if (e) std::rethrow_exception(e);  // the lowest-numbered failure: deterministic message
}

}  // namespace

ConvertResult convert_to_gguf(const ConvertPlan& plan, const std::string& out_path, const std::string& outtype_in, int threads,
                              const ProgressFn& progress) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min(threads, 256);
  std::string outtype = outtype_in.empty() ? plan.outtype : resolve_outtype(outtype_in, plan.first_source_type);

  GgufWriter w(out_path);
  for (auto& [k, v] : plan.metadata) w.set(k, v);
  w.set("general.file_type", GgufValue(file_type_for(outtype)));
  if (outtype == "q8_0") {
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
    GgmlType ty = outtype == plan.outtype ? t.default_type : output_type_for(t.name, t.dims, outtype);
    auto rb = ggml_row_size(ty, t.dims.empty() ? 1 : t.dims[0]);
    if (!rb) fail("{}: tensor {}: row of {} elements does not fit {} blocks", plan.source, t.name, t.dims[0], ggml_type_name(ty));
    types.push_back(ty);
    w.add_tensor(t.name, t.dims, ty);
  }
  for (size_t i = 0; i < w.tensor_count(); ++i) total += w.tensor(i).nbytes;

  std::vector<float> fbuf;
  std::vector<uint8_t> obuf;
  uint64_t done = 0;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const PlannedTensor& t = plan.tensors[i];
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
        parallel_rows(nr, threads, [&](uint64_t a, uint64_t b) {
          t.load_rows(r + a, b - a, fbuf.data() + a * row_len);
          encode_rows(ty, fbuf.data(), obuf.data(), a, b, row_len, row_bytes);
        });
        w.write_tensor_data(obuf.data(), nr * row_bytes);
        if (t.release) t.release();  // drop the consumed source pages now: RSS stays near one slab
      }
    } else {
      fbuf.resize(t.n_elements());
      obuf.resize(n_rows * row_bytes);
      t.load_f32(fbuf.data());
      parallel_rows(n_rows, threads, [&](uint64_t a, uint64_t b) { encode_rows(ty, fbuf.data(), obuf.data(), a, b, row_len, row_bytes); });
      w.write_tensor_data(obuf.data(), obuf.size());
    }
    if (t.release) t.release();
    done += n_rows * row_bytes;
    if (progress) progress(ConvertProgress{i, plan.tensors.size(), &t, ty, done, total});
  }
  uint64_t size = w.expected_file_size();
  w.finish();
  ConvertResult res;
  res.path = out_path;
  res.outtype = outtype;
  res.n_tensors = plan.tensors.size();
  res.file_size = size;
  res.tensor_bytes = total;
  return res;
}

}  // namespace edgeq::convert
