// safetensors reader: single files and sharded checkpoints (model.safetensors.index.json), zero-copy views.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "edgeq/formats/mapped_file.h"

namespace edgeq {

enum class StDtype { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I8, I16, I32, I64, U8, U16, U32, U64, BOOL };
const char* st_dtype_name(StDtype d);
std::optional<StDtype> st_dtype_from_name(std::string_view s);
uint32_t st_dtype_size(StDtype d);
bool st_dtype_is_float_convertible(StDtype d);  // F32, F16, BF16 (and F64) convert to f32

struct StTensor {
  std::string name;
  StDtype dtype;
  std::vector<uint64_t> shape;  // row-major, outermost first (PyTorch order)
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  std::string file;  // which file holds it
  uint64_t n_elements() const;
};

// Converts n elements of a float-convertible dtype to f32; throws for other dtypes.
void st_to_f32(StDtype d, const uint8_t* src, float* dst, uint64_t n);

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);
  static SafetensorsFile parse(const uint8_t* data, uint64_t size, const std::string& name);  // for fuzzing

  const std::string& path() const { return path_; }
  const std::vector<StTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const StTensor* find(std::string_view name) const;
  uint64_t header_size() const { return header_size_; }

 private:
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  uint64_t header_size_ = 0;
  std::vector<StTensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint: a directory with model.safetensors or model.safetensors.index.json + shards, or one file.
class SafetensorsCheckpoint {
 public:
  static SafetensorsCheckpoint open(const std::string& path);
  SafetensorsCheckpoint() = default;
  SafetensorsCheckpoint(SafetensorsCheckpoint&&) = default;  // views point into files_, whose buffer moves along
  SafetensorsCheckpoint& operator=(SafetensorsCheckpoint&&) = default;
  SafetensorsCheckpoint(const SafetensorsCheckpoint&) = delete;
  SafetensorsCheckpoint& operator=(const SafetensorsCheckpoint&) = delete;

  const std::vector<const StTensor*>& tensors() const { return order_; }  // sorted by name
  const StTensor* find(std::string_view name) const;
  const std::vector<SafetensorsFile>& files() const { return files_; }
  std::map<std::string, std::string> metadata() const;  // union of the shards' __metadata__
  uint64_t total_bytes() const;

 private:
  std::vector<SafetensorsFile> files_;
  std::vector<const StTensor*> order_;
  std::map<std::string, const StTensor*, std::less<>> index_;
};

}  // namespace edgeq
