// convert_to_gguf: a ConvertPlan through the one GGUF pipeline (quant::write_gguf), with the outtype as a plain
// policy: every tensor gets its planned type, or the outtype's rule when the outtype is given.
#include "edgeq/convert/convert.h"

#include <algorithm>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/quant/blocks.h"
#include "edgeq/quant/quantize.h"

namespace edgeq::convert {

namespace {

using Metadata = std::vector<std::pair<std::string, GgufValue>>;

void set_key(Metadata& kv, const std::string& key, GgufValue v) {
  for (auto& [k, x] : kv)
    if (k == key) {
      x = std::move(v);
      return;
    }
  kv.emplace_back(key, std::move(v));
}

bool has_key(const Metadata& kv, std::string_view key) {
  return std::any_of(kv.begin(), kv.end(), [&](const auto& p) { return p.first == key; });
}

// The plan's metadata with general.file_type of the outtype; general.quantization_version only where
// llama.cpp's converter writes it (q8_0, right after general.file_type, or as the HF converter lays it out).
Metadata output_metadata(const ConvertPlan& plan, const std::string& outtype) {
  Metadata kv = plan.metadata;
  const GgufValue ft(file_type_for(outtype));
  set_key(kv, "general.file_type", ft);
  if (plan.hf_converter_layout || (outtype == "q8_0" && has_key(plan.metadata, "general.quantization_version")))
    return kv;
  kv.erase(std::remove_if(kv.begin(), kv.end(), [](const auto& p) { return p.first == "general.quantization_version"; }),
           kv.end());
  if (outtype != "q8_0") return kv;
  auto it = std::find_if(kv.begin(), kv.end(), [](const auto& p) { return p.first == "general.file_type"; });
  kv.insert(it + 1, {"general.quantization_version", GgufValue(static_cast<uint32_t>(2))});
  return kv;
}

}  // namespace

ConvertResult convert_to_gguf(const ConvertPlan& plan, const std::string& out_path, const std::string& outtype_in, int threads,
                              const ProgressFn& progress, const GgufSplitOptions& split) {
  const std::string outtype = outtype_in.empty() ? plan.outtype : resolve_outtype(outtype_in, plan.first_source_type);

  quant::QuantizePlan qp;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const SourceTensor& t = plan.tensors[i];
    quant::TypeDecision d;
    d.type = outtype == plan.outtype ? t.keep_type : output_type_for(t.name, t.dims, outtype);
    auto rb = ggml_row_size(d.type, t.row_length());
    if (!rb) fail("{}: tensor {}: row of {} elements does not fit {} blocks", plan.path, t.name, t.row_length(), ggml_type_name(d.type));
    d.nbytes = *rb * t.n_rows();
    qp.bytes_after += d.nbytes;
    qp.tensors.push_back({i, d});
  }

  quant::QuantizeOptions qo;
  qo.threads = threads;
  qo.split = split;
  qo.f16_range_hint = "convert with --outtype bf16 or --outtype f32";
  uint64_t done = 0;
  if (progress)
    qo.on_tensor = [&](const quant::TensorProgress& p) {
      done += p.bytes_after;
      progress(ConvertProgress{p.index, p.count, &plan.tensors[qp.tensors[p.index].source_index], p.to, done,
                               qp.bytes_after});
    };
  const quant::QuantizeReport rep = quant::write_gguf(plan, qp, output_metadata(plan, outtype), out_path, qo);

  ConvertResult res;
  res.outputs = rep.outputs;
  res.path = rep.output;
  res.outtype = outtype;
  res.n_tensors = plan.tensors.size();
  res.file_size = rep.file_size;
  res.tensor_bytes = qp.bytes_after;
  return res;
}

}  // namespace edgeq::convert
