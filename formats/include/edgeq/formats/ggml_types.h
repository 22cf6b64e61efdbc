// The ggml tensor type table: ids, names, block sizes and bytes per block, equal to ggml's.
// This is a file-format fact (a GGUF reader needs it to size tensors); the arithmetic on blocks lives in quant/.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace edgeq {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;     // "Q4_K", as ggml_type_name() spells it (upper case here)
  uint32_t block_size;  // elements per block (1 for plain types)
  uint32_t type_size;   // bytes per block
  bool quantized;
};

// nullptr for an id ggml does not define.
const GgmlTypeInfo* ggml_type_info(uint32_t id);
inline const GgmlTypeInfo* ggml_type_info(GgmlType t) { return ggml_type_info(static_cast<uint32_t>(t)); }
const char* ggml_type_name(GgmlType t);  // "?" for unknown
std::optional<GgmlType> ggml_type_from_name(std::string_view name);  // case-insensitive
// Bytes of a row of ne0 elements; nullopt when ne0 is not a multiple of the block size.
std::optional<uint64_t> ggml_row_size(GgmlType t, uint64_t ne0);
// All known types, in id order (for listings and tests).
const GgmlTypeInfo* ggml_type_table(size_t* count);
// Adds a type to the table (quant::register_block_type calls it; for tests and extensions). The name is
// copied. Call before other threads read the table. Throws edgeq::Error when the id or the name is taken by a
// different type, the name is empty, or the block size or bytes are 0; registering an equal row again is a no-op.
void register_ggml_type(const GgmlTypeInfo& info);

}  // namespace edgeq
