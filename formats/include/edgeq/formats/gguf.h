// GGUF v2/v3 reader (mmap, zero-copy tensor views, every offset validated) and streaming writer.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "edgeq/formats/ggml_types.h"
#include "edgeq/formats/mapped_file.h"

namespace edgeq {

// GGUF metadata value type ids (the spec's gguf_metadata_value_type).
enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);

struct GgufValue;
struct GgufArray {
  GgufType elem_type = GgufType::UINT8;
  std::vector<GgufValue> items;
};

// A metadata value. The variant's index equals the GGUF type id, so the exact type survives a round trip.
struct GgufValue {
  using Storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                               std::string, GgufArray, uint64_t, int64_t, double>;
  Storage v;

  GgufValue() : v(uint8_t{0}) {}
  template <typename T>
  GgufValue(T x) : v(std::move(x)) {}
  GgufValue(const char* s) : v(std::string(s)) {}

  GgufType type() const { return static_cast<GgufType>(v.index()); }
  bool is_integer() const;
  bool is_number() const;  // integer or float
  // Conversions; throw edgeq::Error when the value is not of a compatible kind.
  int64_t as_int() const;
  uint64_t as_uint() const;
  double as_double() const;
  bool as_bool() const;
  const std::string& as_string() const;
  const GgufArray& as_array() const;
  std::string to_display(size_t max_items = 8) const;  // human readable, long arrays summarised

  static GgufValue string_array(std::vector<std::string> items);
  static GgufValue float_array(const std::vector<float>& items);
  static GgufValue int32_array(const std::vector<int32_t>& items);
};

// Equality: same GGUF type and same value (arrays: same element type and items). Floats compare with ==.
bool operator==(const GgufArray& a, const GgufArray& b);
bool operator==(const GgufValue& a, const GgufValue& b);
inline bool operator==(const GgufArray& a, const GgufArray& b) { return a.elem_type == b.elem_type && a.items == b.items; }
inline bool operator==(const GgufValue& a, const GgufValue& b) { return a.v == b.v; }

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ne[0] first (innermost, the row length)
  GgmlType type;
  uint64_t offset = 0;   // relative to the start of the data section
  uint64_t nbytes = 0;   // computed from type and dims
  uint64_t n_elements() const;
};

// A tensor inside a mapped file: no copy.
struct TensorView {
  std::string name;
  std::vector<uint64_t> dims;  // GGUF order: dims[0] is the row length
  GgmlType type;
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  uint64_t n_elements() const;
  uint64_t n_rows() const;  // product of dims[1..]
  uint64_t row_bytes() const;
};

class GgufFile {
 public:
  // Opens and validates the whole header; throws edgeq::Error("<path>: <problem>") on anything wrong.
  static GgufFile open(const std::string& path);
  // Parses an in-memory buffer (for fuzzing and tests); the buffer must outlive the object.
  static GgufFile parse(const uint8_t* data, uint64_t size, const std::string& name);
  // Parses a header without its tensor data (GgufWriter::header_bytes()): metadata and tensor infos are
  // validated as usual, but views have no data (data == nullptr). Used to check an output before writing it.
  static GgufFile parse_header(const uint8_t* data, uint64_t size, const std::string& name);
  bool has_data() const { return !header_only_; }

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  // Typed lookups with defaults; throw when present with an incompatible type.
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::string architecture() const;  // general.architecture or ""

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  TensorView view(const GgufTensorInfo& t) const;
  TensorView view(std::string_view name) const;  // throws if absent

 private:
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  bool header_only_ = false;
  static GgufFile parse_impl(const uint8_t* data, uint64_t size, const std::string& name, bool header_only);
};

// Streaming GGUF writer. Usage: set metadata and add every tensor's info, then write each tensor's bytes
// in the same order, then finish(). The header is written when the first tensor data arrives (or at finish).
// Output goes to a temp file renamed at finish(); destroying an unfinished writer leaves no output file.
class GgufWriter {
 public:
  explicit GgufWriter(const std::string& path, uint32_t version = 3);
  ~GgufWriter();

  void set(const std::string& key, GgufValue value);  // replaces in place if the key exists, else appends
  void remove(const std::string& key);
  const GgufValue* find(std::string_view key) const;
  void add_tensor(const std::string& name, std::vector<uint64_t> dims, GgmlType type);
  uint32_t alignment() const;  // from general.alignment if set, else 32

  // Bytes of tensor i, in order; n must equal the tensor's size (may be split over several calls).
  void write_tensor_data(const void* data, size_t n);
  void finish();

  uint64_t expected_file_size() const;
  // The header as it will be written (metadata, tensor infos; no padding, no data), for checks beforehand.
  std::string header_bytes();
  size_t tensor_count() const { return tensors_.size(); }
  const GgufTensorInfo& tensor(size_t i) const { return tensors_[i]; }

 private:
  std::string path_;
  uint32_t version_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::unique_ptr<AtomicOutputFile> out_;
  size_t cur_tensor_ = 0;
  uint64_t cur_written_ = 0;
  bool header_done_ = false;
  void write_header();
  void layout();
};

// Copies a GGUF file through GgufWriter (used by the round-trip tests and `edgeq inspect --rewrite`).
void gguf_rewrite(const GgufFile& in, const std::string& out_path);

}  // namespace edgeq
