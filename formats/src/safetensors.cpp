// safetensors reader: 8-byte little-endian header length, a JSON header, then the data section.
// Every tensor's byte range is checked to lie inside the data section, to be exactly product(shape) x dtype
// size, and not to overlap another tensor.
#include "edgeq/formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "edgeq/base/error.h"
#include "edgeq/base/half.h"

namespace edgeq {

namespace {
constexpr uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's limit: 100 MB

struct DtypeEntry {
  StDtype d;
  const char* name;
  uint32_t size;
};
constexpr DtypeEntry kDtypes[] = {
    {StDtype::F64, "F64", 8},         {StDtype::F32, "F32", 4},         {StDtype::F16, "F16", 2},
    {StDtype::BF16, "BF16", 2},       {StDtype::F8_E4M3, "F8_E4M3", 1}, {StDtype::F8_E5M2, "F8_E5M2", 1},
    {StDtype::I8, "I8", 1},           {StDtype::I16, "I16", 2},         {StDtype::I32, "I32", 4},
    {StDtype::I64, "I64", 8},         {StDtype::U8, "U8", 1},           {StDtype::U16, "U16", 2},
    {StDtype::U32, "U32", 4},         {StDtype::U64, "U64", 8},         {StDtype::BOOL, "BOOL", 1},
};
}  // namespace

const char* st_dtype_name(StDtype d) {
  for (auto& e : kDtypes)
    if (e.d == d) return e.name;
  return "?";
}
std::optional<StDtype> st_dtype_from_name(std::string_view s) {
  for (auto& e : kDtypes)
    if (s == e.name) return e.d;
  return std::nullopt;
}
uint32_t st_dtype_size(StDtype d) {
  for (auto& e : kDtypes)
    if (e.d == d) return e.size;
  return 0;
}
bool st_dtype_is_float_convertible(StDtype d) {
  return d == StDtype::F32 || d == StDtype::F16 || d == StDtype::BF16 || d == StDtype::F64;
}

uint64_t StTensor::n_elements() const {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

void st_to_f32(StDtype d, const uint8_t* src, float* dst, uint64_t n) {
  switch (d) {
    case StDtype::F32: std::memcpy(dst, src, n * 4); return;
    case StDtype::F16:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case StDtype::BF16:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case StDtype::F64:
      for (uint64_t i = 0; i < n; ++i) {
        double x;
        std::memcpy(&x, src + 8 * i, 8);
        dst[i] = static_cast<float>(x);
      }
      return;
    default: fail("safetensors dtype {} cannot be converted to f32", st_dtype_name(d));
  }
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto map = std::make_shared<MappedFile>(path);
  SafetensorsFile f = parse(map->data(), map->size(), path);
  f.map_ = std::move(map);
  return f;
}

SafetensorsFile SafetensorsFile::parse(const uint8_t* data, uint64_t size, const std::string& name) {
  SafetensorsFile f;
  f.path_ = name;
  if (size < 8) fail("{}: not a safetensors file (only {} bytes)", name, size);
  uint64_t hlen;
  std::memcpy(&hlen, data, 8);
  if (hlen > kMaxHeader) fail("{}: header length {} exceeds the 100 MB limit", name, hlen);
  if (hlen > size - 8) fail("{}: header length {} runs past the end of the file ({} bytes)", name, hlen, size);
  if (hlen < 2) fail("{}: header length {} is too small for a JSON object", name, hlen);
  f.header_size_ = hlen;
  const uint8_t* data_start = data + 8 + hlen;
  uint64_t data_size = size - 8 - hlen;

  nlohmann::json h;
  try {
    h = nlohmann::json::parse(data + 8, data + 8 + hlen);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: header is not valid JSON: {}", name, e.what());
  }
  if (!h.is_object()) fail("{}: header is not a JSON object", name);

  struct Range {
    uint64_t begin, end;
    size_t idx;
  };
  std::vector<Range> ranges;
  for (auto& [key, val] : h.items()) {
    if (key == "__metadata__") {
      if (!val.is_object()) fail("{}: __metadata__ is not an object", name);
      for (auto& [mk, mv] : val.items()) {
        if (!mv.is_string()) fail("{}: __metadata__ value for '{}' is not a string", name, mk);
        f.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    if (!val.is_object()) fail("{}: tensor '{}': entry is not an object", name, key);
    auto dt = val.find("dtype");
    auto sh = val.find("shape");
    auto off = val.find("data_offsets");
    if (dt == val.end() || !dt->is_string()) fail("{}: tensor '{}': missing or non-string dtype", name, key);
    if (sh == val.end() || !sh->is_array()) fail("{}: tensor '{}': missing or non-array shape", name, key);
    if (off == val.end() || !off->is_array() || off->size() != 2) fail("{}: tensor '{}': data_offsets must be [begin, end]", name, key);
    auto d = st_dtype_from_name(dt->get<std::string>());
    if (!d) fail("{}: tensor '{}': unknown dtype '{}'", name, key, dt->get<std::string>());
    StTensor t;
    t.name = key;
    t.dtype = *d;
    t.file = name;
    uint64_t n = 1;
    for (auto& x : *sh) {
      if (!x.is_number_unsigned()) fail("{}: tensor '{}': shape entries must be non-negative integers", name, key);
      uint64_t dim = x.get<uint64_t>();
      if (mul_overflow_u64(n, dim, &n)) fail("{}: tensor '{}': shape overflows 64 bits", name, key);
      t.shape.push_back(dim);
    }
    if (t.shape.size() > 8) fail("{}: tensor '{}': {} dimensions is more than edgeq accepts (8)", name, key, t.shape.size());
    uint64_t expect;
    if (mul_overflow_u64(n, st_dtype_size(*d), &expect)) fail("{}: tensor '{}': byte size overflows 64 bits", name, key);
    if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      fail("{}: tensor '{}': data_offsets must be non-negative integers", name, key);
    uint64_t b = (*off)[0].get<uint64_t>(), e = (*off)[1].get<uint64_t>();
    if (e < b) fail("{}: tensor '{}': data_offsets end {} is before begin {}", name, key, e, b);
    if (e > data_size) fail("{}: tensor '{}': data [{}, {}) runs past the data section ({} bytes)", name, key, b, e, data_size);
    if (e - b != expect)
      fail("{}: tensor '{}': holds {} bytes but shape x dtype needs {}", name, key, e - b, expect);
    t.data = data_start + b;
    t.nbytes = e - b;
    ranges.push_back({b, e, f.tensors_.size()});
    f.index_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end(), [](auto& a, auto& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end)
      fail("{}: tensors '{}' and '{}' overlap", name, f.tensors_[ranges[i - 1].idx].name, f.tensors_[ranges[i].idx].name);
  return f;
}

const StTensor* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---- checkpoints --------------------------------------------------------------------------------

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& path) {
  namespace fs = std::filesystem;
  SafetensorsCheckpoint c;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    fs::path dir(path);
    fs::path index = dir / "model.safetensors.index.json";
    fs::path single = dir / "model.safetensors";
    if (fs::exists(index, ec)) {
      MappedFile m(index.string());
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(m.data(), m.data() + m.size());
      } catch (const nlohmann::json::exception& e) {
        fail("{}: not valid JSON: {}", index.string(), e.what());
      }
      if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        fail("{}: missing 'weight_map' object", index.string());
      std::map<std::string, std::vector<std::string>> by_file;
      for (auto& [tname, fname] : j["weight_map"].items()) {
        if (!fname.is_string()) fail("{}: weight_map entry '{}' is not a file name", index.string(), tname);
        std::string fn = fname.get<std::string>();
        if (fn.empty() || fn.find('/') != std::string::npos || fn == "." || fn == "..")
          fail("{}: weight_map entry '{}' names '{}', which is not a file in this directory", index.string(), tname, fn);
        by_file[fn].push_back(tname);
      }
      for (auto& [fn, names] : by_file) {
        fs::path p = dir / fn;
        if (!fs::exists(p, ec)) fail("{}: shard '{}' listed in the index is missing", index.string(), fn);
        c.files_.push_back(SafetensorsFile::open(p.string()));
        auto& sf = c.files_.back();
        for (auto& n : names)
          if (!sf.find(n)) fail("{}: tensor '{}' is listed in the index but not present in the shard", p.string(), n);
      }
    } else if (fs::exists(single, ec)) {
      c.files_.push_back(SafetensorsFile::open(single.string()));
    } else {
      fail("{}: no model.safetensors or model.safetensors.index.json in this directory", path);
    }
  } else {
    c.files_.push_back(SafetensorsFile::open(path));
  }
  for (auto& f : c.files_)
    for (auto& t : f.tensors()) {
      if (c.index_.count(t.name)) fail("{}: tensor '{}' appears in more than one shard", t.file, t.name);
      c.index_.emplace(t.name, &t);
    }
  for (auto& [n, t] : c.index_) c.order_.push_back(t);
  return c;
}

const StTensor* SafetensorsCheckpoint::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::map<std::string, std::string> SafetensorsCheckpoint::metadata() const {
  std::map<std::string, std::string> m;
  for (auto& f : files_)
    for (auto& [k, v] : f.metadata()) m.emplace(k, v);
  return m;
}

uint64_t SafetensorsCheckpoint::total_bytes() const {
  uint64_t n = 0;
  for (auto* t : order_) n += t->nbytes;
  return n;
}

}  // namespace edgeq
