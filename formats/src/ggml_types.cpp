#include "edgeq/formats/ggml_types.h"

#include <cctype>
#include <cstring>
#include <deque>
#include <iterator>
#include <string>

#include "edgeq/base/error.h"

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
};
// Registered rows (deques: addresses stay valid as rows are added).
struct Registered {
  std::deque<GgmlTypeInfo> rows;
  std::deque<std::string> names;
};
Registered& registered() {
  static Registered r;
  return r;
}
}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  for (const auto& t : kTypes)
    if (static_cast<uint32_t>(t.type) == id) return &t;
  for (const auto& t : registered().rows)
    if (static_cast<uint32_t>(t.type) == id) return &t;
  return nullptr;
}

const char* ggml_type_name(GgmlType t) {
  auto* i = ggml_type_info(t);
  return i ? i->name : "?";
}

namespace {
bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i]))) return false;
  return true;
}
}  // namespace

std::optional<GgmlType> ggml_type_from_name(std::string_view name) {
  for (const auto& t : kTypes)
    if (iequals(t.name, name)) return t.type;
  for (const auto& t : registered().rows)
    if (iequals(t.name, name)) return t.type;
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

void register_ggml_type(const GgmlTypeInfo& info) {
  const uint32_t id = static_cast<uint32_t>(info.type);
  if (!info.name || !*info.name) fail("register ggml type {}: empty name", id);
  if (info.block_size == 0 || info.type_size == 0) fail("register ggml type {}: block size and bytes must be > 0", info.name);
  if (const GgmlTypeInfo* old = ggml_type_info(id)) {
    if (std::strcmp(old->name, info.name) == 0 && old->block_size == info.block_size &&
        old->type_size == info.type_size && old->quantized == info.quantized)
      return;
    fail("register ggml type {}: id {} is already {}", info.name, id, old->name);
  }
  if (auto other = ggml_type_from_name(info.name))
    fail("register ggml type {}: name already used by id {}", info.name, static_cast<uint32_t>(*other));
  Registered& r = registered();
  r.names.emplace_back(info.name);
  GgmlTypeInfo row = info;
  row.name = r.names.back().c_str();
  r.rows.push_back(row);
}

}  // namespace edgeq
