#include "edgeq/formats/palette_layout.h"

#include <map>

#include "edgeq/base/error.h"

namespace edgeq::palette {

namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string dims_str(const std::vector<uint64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace

bool valid_bits(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 6 || bits == 8; }

bool row_fits(uint64_t ne0, int bits) { return ne0 > 0 && (ne0 * static_cast<uint64_t>(bits)) % 8 == 0; }

uint64_t index_row_bytes(uint64_t ne0, int bits) { return ne0 * static_cast<uint64_t>(bits) / 8; }

std::vector<uint64_t> index_dims(const std::vector<uint64_t>& dims, int bits) {
  std::vector<uint64_t> d = dims;
  d[0] = index_row_bytes(dims[0], bits);
  return d;
}

std::vector<uint64_t> lut_dims(int bits, uint64_t n_groups) { return {uint64_t{1} << bits, n_groups}; }

uint64_t palettized_bytes(const std::vector<uint64_t>& dims, int bits, uint64_t n_groups) {
  uint64_t rows = 1;
  for (size_t i = 1; i < dims.size(); ++i) rows *= dims[i];
  return index_row_bytes(dims[0], bits) * rows + (uint64_t{1} << bits) * n_groups * 2;
}

uint64_t PalTensor::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  return n;
}

bool is_part_name(std::string_view n) { return ends_with(n, kIndexSuffix) || ends_with(n, kLutSuffix); }

std::vector<PalTensor> palettized_tensors(const GgufFile& f) {
  bool any = false;
  for (const auto& t : f.tensors()) any |= is_part_name(t.name);
  if (!any) return {};
  const std::string& path = f.path();
  const auto bits64 = f.get_int(kBitsKey);
  const auto group64 = f.get_int(kGroupKey);
  if (!bits64) fail("{}: palettized tensors without the key {}", path, kBitsKey);
  if (!valid_bits(static_cast<int>(*bits64)) || *bits64 != static_cast<int>(*bits64))
    fail("{}: {} = {} is not one of 2, 3, 4, 6, 8", path, kBitsKey, *bits64);
  const int bits = static_cast<int>(*bits64);
  const int64_t group = group64.value_or(0);
  if (group < 0 || group > (int64_t{1} << 40)) fail("{}: {} = {} is out of range", path, kGroupKey, group);

  std::vector<PalTensor> out;
  for (const auto& t : f.tensors()) {
    if (ends_with(t.name, kLutSuffix)) {
      const std::string base = t.name.substr(0, t.name.size() - kLutSuffix.size());
      if (!f.find_tensor(base + std::string(kIndexSuffix))) fail("{}: tensor {}: no {}{} beside it", path, t.name, base, kIndexSuffix);
      continue;
    }
    if (!ends_with(t.name, kIndexSuffix)) continue;
    PalTensor p;
    p.name = t.name.substr(0, t.name.size() - kIndexSuffix.size());
    p.bits = bits;
    p.index = &t;
    p.lut = f.find_tensor(p.name + std::string(kLutSuffix));
    if (!p.lut) fail("{}: tensor {}: no {}{} beside it", path, t.name, p.name, kLutSuffix);
    if (f.find_tensor(p.name)) fail("{}: tensor {}: present both plain and palettized", path, p.name);
    if (t.type != GgmlType::I8) fail("{}: tensor {}: type {}, expected I8", path, t.name, ggml_type_name(t.type));
    if (p.lut->type != GgmlType::F16)
      fail("{}: tensor {}: type {}, expected F16", path, p.lut->name, ggml_type_name(p.lut->type));
    if (t.dims.empty() || t.dims[0] == 0) fail("{}: tensor {}: empty rows", path, t.name);
    uint64_t ne0 = 0;
    if (mul_overflow_u64(t.dims[0], 8, &ne0) || ne0 % static_cast<uint64_t>(bits) != 0)
      fail("{}: tensor {}: row of {} bytes does not hold whole {}-bit indices", path, t.name, t.dims[0], bits);
    ne0 /= static_cast<uint64_t>(bits);
    p.dims = t.dims;
    p.dims[0] = ne0;
    const uint64_t rows = t.n_elements() / t.dims[0];
    if (p.lut->dims.size() != 2 || p.lut->dims[0] != (uint64_t{1} << bits) || p.lut->dims[1] == 0)
      fail("{}: tensor {}: shape {}, expected [{}, groups]", path, p.lut->name, dims_str(p.lut->dims), 1u << bits);
    p.n_groups = p.lut->dims[1];
    if (rows % p.n_groups != 0)
      fail("{}: tensor {}: {} tables do not divide its {} rows", path, p.lut->name, p.n_groups, rows);
    p.group_rows = rows / p.n_groups;
    if (group == 0 ? p.n_groups != 1 : p.group_rows != static_cast<uint64_t>(group))
      fail("{}: tensor {}: {} tables for {} rows disagree with {} = {}", path, p.lut->name, p.n_groups, rows,
           kGroupKey, group);
    out.push_back(std::move(p));
  }
  return out;
}

DataSize data_size(const GgufFile& f) {
  DataSize s;
  std::map<std::string_view, const PalTensor*> parts;
  const auto pal = palettized_tensors(f);
  for (const auto& p : pal) {
    s.bytes += p.nbytes();
    s.parameters += p.n_elements();
    parts.emplace(p.index->name, &p);
    parts.emplace(p.lut->name, &p);
  }
  for (const auto& t : f.tensors()) {
    if (parts.count(t.name)) continue;
    s.bytes += t.nbytes;
    s.parameters += t.n_elements();
  }
  return s;
}

}  // namespace edgeq::palette
