// Safetensors checkpoints as a convert TensorSource: zero-copy rows, converted to f32 on demand.
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>

#include "edgeq/base/error.h"
#include "edgeq/base/half.h"
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
  src.path = dir;
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
    s.name = t->name;
    s.dims.assign(t->shape.rbegin(), t->shape.rend());
    s.file = t->file;
    s.source_type = st_dtype_is_float_convertible(t->dtype) ? ggml_of(t->dtype) : GgmlType::I32;
    s.keep_type = s.source_type;
    const StTensor* tp = t;
    if (st_dtype_is_float_convertible(t->dtype)) {
      const uint64_t n_rows = t->shape.size() >= 2 ? t->shape[0] : 1;
      const uint64_t row_len = t->n_elements() / (n_rows ? n_rows : 1);
      const uint32_t esz = st_dtype_size(t->dtype);
      s.load_rows = [tp, n_rows, row_len, esz](uint64_t row0, uint64_t n, float* dst) {
        if (row0 > n_rows || n > n_rows - row0) fail("{}: tensor {}: rows [{}, +{}) out of range", tp->file, tp->name, row0, n);
        st_to_f32(tp->dtype, tp->data + row0 * row_len * esz, dst, n * row_len);
        check_finite(dst, n * row_len, tp->file, tp->name, row0 * row_len);
      };
      s.load_f32 = [tp](float* dst) {
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
