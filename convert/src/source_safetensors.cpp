// Safetensors checkpoints as a convert TensorSource: zero-copy rows, converted to f32 on demand.
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>

#include "edgeq/formats/error.h"
#include "edgeq/formats/half.h"
#include "edgeq/formats/safetensors.h"
#include "source.h"

namespace edgeq::convert::detail {

void check_finite(const float* x, uint64_t n, const std::string& file, const std::string& tensor, uint64_t base_index) {
  for (uint64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      fail("{}: tensor {}: element {} is {} (NaN/Inf weights cannot be converted)", file, tensor, base_index + i,
           std::isnan(x[i]) ? "NaN" : "Inf");
}

namespace {

void release_range(const uint8_t* p, uint64_t n) {
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t b = reinterpret_cast<uintptr_t>(p);
  uintptr_t e = b + n;
  uintptr_t ab = (b + page - 1) & ~(page - 1);  // only whole pages inside the tensor
  uintptr_t ae = e & ~(page - 1);
  if (ae > ab) ::madvise(reinterpret_cast<void*>(ab), ae - ab, MADV_DONTNEED);
}

GgmlType ggml_of(StDtype d) {
  switch (d) {
    case StDtype::F16: return GgmlType::F16;
    case StDtype::BF16: return GgmlType::BF16;
    default: return GgmlType::F32;
  }
}

}  // namespace

TensorSource open_safetensors_source(const std::string& dir) {
  auto ckpt = std::make_shared<SafetensorsCheckpoint>(SafetensorsCheckpoint::open(dir));
  TensorSource src;
  src.description = dir;
  src.keep_alive.push_back(ckpt);
  if (!ckpt->files().empty() && !ckpt->files()[0].tensors().empty()) {
    // convert_hf_to_gguf.py decides "auto" from the first tensor of the first shard (safe_open sorts its keys).
    const StTensor* first = nullptr;
    for (auto& t : ckpt->files()[0].tensors())
      if (!first || t.name < first->name) first = &t;
    src.first_type = ggml_of(first->dtype);
  }
  src.total_bytes = ckpt->total_bytes();
  for (const StTensor* t : ckpt->tensors()) {
    SourceTensor s;
    s.hf_name = t->name;
    s.shape = t->shape;
    s.file = t->file;
    s.type = ggml_of(t->dtype);
    if (!st_dtype_is_float_convertible(t->dtype))
      s.type = GgmlType::I32;  // marks a non-float tensor; the planner reports it if it is used
    const StTensor* tp = t;
    if (st_dtype_is_float_convertible(t->dtype)) {
      uint64_t row_len = t->shape.size() >= 2 ? t->n_elements() / (t->shape[0] ? t->shape[0] : 1) : t->n_elements();
      uint32_t esz = st_dtype_size(t->dtype);
      s.read_rows = [tp, row_len, esz](const uint64_t* rows, uint64_t n, float* dst) {
        uint64_t n_rows = tp->shape.size() >= 2 ? tp->shape[0] : 1;
        for (uint64_t i = 0; i < n; ++i) {
          if (rows[i] >= n_rows) fail("{}: tensor {}: row {} out of range", tp->file, tp->name, rows[i]);
          st_to_f32(tp->dtype, tp->data + rows[i] * row_len * esz, dst + i * row_len, row_len);
          check_finite(dst + i * row_len, row_len, tp->file, tp->name, rows[i] * row_len);
        }
      };
      s.read_all = [tp](float* dst) {
        st_to_f32(tp->dtype, tp->data, dst, tp->n_elements());
        check_finite(dst, tp->n_elements(), tp->file, tp->name, 0);
      };
      s.release = [tp]() { release_range(tp->data, tp->nbytes); };
    }
    src.tensors.push_back(std::move(s));
  }
  return src;
}

}  // namespace edgeq::convert::detail
