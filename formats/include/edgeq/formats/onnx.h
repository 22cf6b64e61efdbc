// ONNX model reader: initializers (inline raw/typed data or external data files, zero-copy where the bytes
// are raw little-endian) and the graph's nodes. Recovering Hugging Face weight names from them is
// architecture knowledge and lives in convert/ (edgeq/convert/onnx_roles.h).
//
// The protobuf types stay inside the library: this header exposes plain structs only.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace edgeq {

// ONNX TensorProto.DataType ids.
namespace onnx_dtype {
inline constexpr int32_t FLOAT = 1, UINT8 = 2, INT8 = 3, UINT16 = 4, INT16 = 5, INT32 = 6, INT64 = 7,
                         STRING = 8, BOOL = 9, FLOAT16 = 10, DOUBLE = 11, UINT32 = 12, UINT64 = 13,
                         COMPLEX64 = 14, COMPLEX128 = 15, BFLOAT16 = 16;
}
const char* onnx_dtype_name(int32_t dtype);    // "FLOAT", "BFLOAT16", ...; "?" for unknown ids
uint32_t onnx_dtype_size(int32_t dtype);       // bytes per element; 0 for STRING and unknown ids
bool onnx_dtype_is_float(int32_t dtype);       // FLOAT, FLOAT16, BFLOAT16, DOUBLE: convertible to f32

enum class OnnxStorage { Raw, Typed, External, None };

struct OnnxTensor {
  std::string name;
  int32_t onnx_dtype = 0;
  std::vector<uint64_t> dims;  // as stored, outermost first
  // Little-endian element bytes, n_elements() * onnx_dtype_size(). Points into the mmapped external data
  // file (External); for raw_data (Raw) into the mmapped model file when it came from open(), or into the
  // parser's own copy after parse() (the caller's buffer need not outlive the model); or into a buffer
  // converted from the typed fields float_data/int32_data/int64_data/... (Typed).
  // nullptr with nbytes 0 for STRING tensors.
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
  OnnxStorage storage = OnnxStorage::None;
  std::string file;     // the file holding the bytes: the model itself, or the external data file
  uint64_t offset = 0;  // byte offset inside `file`: External data, and Raw data viewed in the mapped model
  uint64_t n_elements() const;
};

// A graph node, as the reader keeps it (attributes the role recovery needs: Gemm's transA/transB,
// Transpose's perm).
struct OnnxNode {
  std::string name, op, domain;
  std::vector<std::string> in, out;
  int64_t trans_a = 0, trans_b = 0;
  bool has_perm = false;
  std::vector<int64_t> perm;
};

// Converts n elements of a float dtype (FLOAT, FLOAT16, BFLOAT16, DOUBLE) to f32; other dtypes: no-op.
void onnx_to_f32(int32_t dtype, const uint8_t* src, float* dst, uint64_t n);

struct OnnxLimits {
  uint64_t max_model_bytes = (1ull << 31) - 1;  // protobuf cannot parse more than 2 GiB
  int recursion_limit = 64;                     // nested messages (subgraphs)
  uint32_t max_rank = 16;
};

class OnnxModel {
 public:
  // Opens model.onnx; external data files are resolved relative to its directory, each mapped once.
  // Throws edgeq::Error naming the file (and tensor) on malformed input.
  static OnnxModel open(const std::string& path, const OnnxLimits& limits = {});
  // Parses an in-memory model. `name` appears in error messages. External data is resolved against
  // `base_dir`; with an empty base_dir any external-data initializer is an error (fuzzing, tests).
  static OnnxModel parse(const uint8_t* data, size_t size, const std::string& name,
                         const std::string& base_dir = {}, const OnnxLimits& limits = {});

  const std::string& path() const;
  int64_t ir_version() const;
  int64_t opset_version() const;  // the default ("ai.onnx") domain's opset, 0 if none
  const std::string& producer_name() const;
  size_t n_nodes() const;

  const std::vector<OnnxTensor>& initializers() const;
  const OnnxTensor* find(std::string_view name) const;

  // Converts a float initializer (FLOAT, FLOAT16, BFLOAT16, DOUBLE) to f32 in its stored layout.
  void tensor_to_f32(const OnnxTensor& t, float* dst) const;

  // The graph's nodes in file order (convert/onnx_roles.h recovers weight roles from them).
  const std::vector<OnnxNode>& nodes() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;  // copies share the parsed model and the mapped files
};

}  // namespace edgeq
