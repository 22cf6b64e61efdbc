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
  uint64_t offset = 0;   // relative to the start of the data section (of its split file)
  uint64_t nbytes = 0;   // computed from type and dims
  uint32_t split = 0;    // which file of a split set holds the data (0 for an ordinary file)
  uint64_t n_elements() const;
};

// --- llama.cpp's split GGUF (gguf-split, b4748) ------------------------------------------------------
// A model in N files "<prefix>-00001-of-0000N.gguf" ... (llama_split_path: "%s-%05d-of-%05d.gguf", numbers
// 1-based). Every file is a complete GGUF holding its own tensors (data offsets relative to its own data
// section) and the keys split.no (uint16, 0-based), split.count (uint16) and split.tensors.count (int32, the
// tensors of all files); the first file also holds all other metadata. A set is opened by its first file.
inline constexpr const char* kSplitNoKey = "split.no";
inline constexpr const char* kSplitCountKey = "split.count";
inline constexpr const char* kSplitTensorsKey = "split.tensors.count";
bool is_split_key(std::string_view key);
// "<prefix>-%05d-of-%05d.gguf" for split_no (0-based) of count.
std::string gguf_split_path(const std::string& prefix, uint32_t split_no, uint32_t count);
// The prefix of an output path: "model.gguf" -> "model" (so files are model-00001-of-0000N.gguf); a path
// without the .gguf extension is the prefix itself, as gguf-split's OUT argument.
std::string gguf_split_prefix(const std::string& out_path);
// gguf-split's --split-max-size: a positive whole number followed by M (10^6 bytes) or G (10^9 bytes).
uint64_t parse_split_size(std::string_view text);

// How a writer splits its output (both 0: one ordinary file). As gguf-split: a new file starts when the
// current one holds max_tensors tensors, or when the next tensor (padded to the alignment) would take the
// current file's tensor data beyond max_bytes (metadata not counted); a tensor larger than max_bytes gets a
// file of its own.
struct GgufSplitOptions {
  uint64_t max_bytes = 0;    // --split-max-size
  uint64_t max_tensors = 0;  // --split-max-tensors
  bool enabled() const { return max_bytes > 0 || max_tensors > 0; }
};
// Most files a writer splits into (each unfinished file holds a signal-cleanup slot).
inline constexpr uint32_t kMaxSplitFiles = 4000;

// One file of an opened GGUF (an ordinary file is a set of one).
struct GgufSplitFile {
  std::string path;
  uint64_t file_size = 0;
  uint64_t data_offset = 0;  // start of its data section
  uint64_t n_tensors = 0;
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
  // The first file of a split set (split.count > 1) opens the whole set: the other files are found by
  // llama.cpp's naming scheme and joined (join()); any other file of a set is refused.
  static GgufFile open(const std::string& path);
  // Joins the files of a split set, first file first, the others in split.no order: checks the split keys
  // (types, split.no = position, the same split.count, split.count = number of files), that no tensor name
  // repeats across files and that split.tensors.count equals the tensors found. The result has the first
  // file's metadata and every file's tensors (GgufTensorInfo::split says which file); errors name the file.
  static GgufFile join(GgufFile first, std::vector<GgufFile> rest);
  // Parses an in-memory buffer (for fuzzing and tests); the buffer must outlive the object.
  static GgufFile parse(const uint8_t* data, uint64_t size, const std::string& name);
  // Parses a header without its tensor data (GgufWriter::header_bytes()): metadata and tensor infos are
  // validated as usual, but views have no data (data == nullptr). Used to check an output before writing it.
  static GgufFile parse_header(const uint8_t* data, uint64_t size, const std::string& name);
  bool has_data() const { return !header_only_; }
  // Maps every file's pages up front (MappedFile::populate): for the runtime, which reads all the weights.
  void populate() const;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // the first file's
  uint64_t file_size() const;                             // bytes of all files of a split set together
  const std::vector<GgufSplitFile>& splits() const { return splits_; }  // one entry unless a split set

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
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  bool header_only_ = false;
  std::vector<GgufSplitFile> splits_;
  std::vector<const uint8_t*> split_base_;                // each file's bytes
  std::vector<std::shared_ptr<MappedFile>> split_maps_;   // the other files' maps (a split set)
  static GgufFile open_one(const std::string& path);
  static GgufFile parse_impl(const uint8_t* data, uint64_t size, const std::string& name, bool header_only);
};

// Streaming GGUF writer. Usage: set metadata and add every tensor's info, then write each tensor's bytes
// in the same order, then finish(). The header is written when the first tensor data arrives (or at finish).
// Output goes to a temp file renamed at finish(); destroying an unfinished writer leaves no output file.
// With split options the output is a split set laid out as gguf-split does (see GgufSplitOptions), named
// gguf_split_path(gguf_split_prefix(path), i, n): every file stays a temp file until the last one is written,
// then all are renamed; split.* keys given with set() are dropped (the writer writes its own, and none for
// an ordinary file, as llama-quantize removes a split source's keys).
class GgufWriter {
 public:
  explicit GgufWriter(const std::string& path, uint32_t version = 3);
  explicit GgufWriter(const std::string& path, const GgufSplitOptions& split, uint32_t version = 3);
  ~GgufWriter();

  void set(const std::string& key, GgufValue value);  // replaces in place if the key exists, else appends
  void remove(const std::string& key);
  const GgufValue* find(std::string_view key) const;
  void add_tensor(const std::string& name, std::vector<uint64_t> dims, GgmlType type);
  uint32_t alignment() const;  // from general.alignment if set, else 32

  // Bytes of tensor i, in order; n must equal the tensor's size (may be split over several calls).
  void write_tensor_data(const void* data, size_t n);
  void finish();

  uint64_t expected_file_size() const;  // all files of a split set together
  // The header as it will be written for one unsplit file (metadata, tensor infos; no padding, no data), for
  // checks beforehand.
  std::string header_bytes();
  // The files finish() will create (one unless splitting; known once every tensor is added), and a check
  // that check_output_path accepts each of them: call it before reading any tensor data.
  std::vector<std::string> output_paths() const;
  void check_outputs() const;
  size_t tensor_count() const { return tensors_.size(); }
  const GgufTensorInfo& tensor(size_t i) const { return tensors_[i]; }

 private:
  std::string path_;
  uint32_t version_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorInfo> tensors_;
  GgufSplitOptions split_;
  std::vector<std::unique_ptr<AtomicOutputFile>> outs_;  // one per file, opened in order
  uint32_t n_splits_ = 1;
  size_t cur_tensor_ = 0;
  uint64_t cur_written_ = 0;
  bool header_done_ = false;
  struct Placement {
    uint32_t split;   // file of the set
    uint64_t offset;  // in that file's data section
  };
  std::vector<Placement> place(const GgufSplitOptions& split) const;  // every tensor's file and offset
  static uint32_t count_splits(const std::vector<Placement>& p);
  std::string encode_header(uint32_t k, const std::vector<Placement>& p, bool split_keys) const;
  std::string output_path(uint32_t k, uint32_t n_splits) const;
  void write_header();
  void open_split(uint32_t k);  // opens files up to k, closing the previous ones (kept as temp files)
  void layout();
};

// Copies a GGUF file through GgufWriter (used by the round-trip tests and `edgeq inspect --rewrite`).
void gguf_rewrite(const GgufFile& in, const std::string& out_path);

}  // namespace edgeq
