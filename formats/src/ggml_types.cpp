#include "edgeq/formats/ggml_types.h"

#include <cctype>
#include <iterator>

namespace edgeq {

namespace {
// id, name, block size, bytes per block, quantized — equal to ggml's type_traits (ggml.c).
constexpr GgmlTypeInfo kTypes[] = {
    {GgmlType::F32, "F32", 1, 4, false},          {GgmlType::F16, "F16", 1, 2, false},
    {GgmlType::Q4_0, "Q4_0", 32, 18, true},       {GgmlType::Q4_1, "Q4_1", 32, 20, true},
    {GgmlType::Q5_0, "Q5_0", 32, 22, true},       {GgmlType::Q5_1, "Q5_1", 32, 24, true},
    {GgmlType::Q8_0, "Q8_0", 32, 34, true},       {GgmlType::Q8_1, "Q8_1", 32, 36, true},
    {GgmlType::Q2_K, "Q2_K", 256, 84, true},      {GgmlType::Q3_K, "Q3_K", 256, 110, true},
    {GgmlType::Q4_K, "Q4_K", 256, 144, true},     {GgmlType::Q5_K, "Q5_K", 256, 176, true},
    {GgmlType::Q6_K, "Q6_K", 256, 210, true},     {GgmlType::Q8_K, "Q8_K", 256, 292, true},
    {GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66, true}, {GgmlType::IQ2_XS, "IQ2_XS", 256, 74, true},
    {GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98, true}, {GgmlType::IQ1_S, "IQ1_S", 256, 50, true},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 18, true},   {GgmlType::IQ3_S, "IQ3_S", 256, 110, true},
    {GgmlType::IQ2_S, "IQ2_S", 256, 82, true},    {GgmlType::IQ4_XS, "IQ4_XS", 256, 136, true},
    {GgmlType::I8, "I8", 1, 1, false},            {GgmlType::I16, "I16", 1, 2, false},
    {GgmlType::I32, "I32", 1, 4, false},          {GgmlType::I64, "I64", 1, 8, false},
    {GgmlType::F64, "F64", 1, 8, false},          {GgmlType::IQ1_M, "IQ1_M", 256, 56, true},
    {GgmlType::BF16, "BF16", 1, 2, false},        {GgmlType::TQ1_0, "TQ1_0", 256, 54, true},
    {GgmlType::TQ2_0, "TQ2_0", 256, 66, true},    {GgmlType::MXFP4, "MXFP4", 32, 17, true},
    // edgeq palettized: per row of 256 weights a 1-byte index... block layout is defined in quant/; the
    // byte size here is one uint8 index per weight (the LUT is stored as a separate F32 tensor).
    {GgmlType::EDGEQ_PAL, "EDGEQ_PAL", 1, 1, true},
};
}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  for (const auto& t : kTypes)
    if (static_cast<uint32_t>(t.type) == id) return &t;
  return nullptr;
}

const char* ggml_type_name(GgmlType t) {
  auto* i = ggml_type_info(t);
  return i ? i->name : "?";
}

std::optional<GgmlType> ggml_type_from_name(std::string_view name) {
  for (const auto& t : kTypes) {
    std::string_view n = t.name;
    if (n.size() != name.size()) continue;
    bool eq = true;
    for (size_t i = 0; i < n.size() && eq; ++i)
      eq = std::toupper(static_cast<unsigned char>(n[i])) == std::toupper(static_cast<unsigned char>(name[i]));
    if (eq) return t.type;
  }
  return std::nullopt;
}

std::optional<uint64_t> ggml_row_size(GgmlType t, uint64_t ne0) {
  auto* i = ggml_type_info(t);
  if (!i || ne0 % i->block_size != 0) return std::nullopt;
  uint64_t out;
  if (__builtin_mul_overflow(ne0 / i->block_size, static_cast<uint64_t>(i->type_size), &out)) return std::nullopt;
  return out;
}

const GgmlTypeInfo* ggml_type_table(size_t* count) {
  *count = std::size(kTypes);
  return kTypes;
}

}  // namespace edgeq
