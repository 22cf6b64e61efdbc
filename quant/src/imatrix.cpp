// llama.cpp legacy imatrix reader: every count and length is checked against the bytes left.
#include "edgeq/quant/imatrix.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/mapped_file.h"

namespace edgeq::quant {

namespace {
constexpr int32_t kMaxNameLen = 4096;
constexpr int32_t kMaxValues = 1 << 26;  // 64M columns: far beyond any row length

struct Reader {
  const uint8_t* p;
  uint64_t size, pos = 0;
  const std::string& name;
  uint64_t left() const { return size - pos; }
  int32_t i32(const char* what) {
    if (left() < 4) fail("{}: truncated at byte {} reading {}", name, pos, what);
    int32_t v;
    std::memcpy(&v, p + pos, 4);
    pos += 4;
    return v;
  }
};
}  // namespace

ImatrixFile ImatrixFile::open(const std::string& path) {
  MappedFile map(path);
  if (map.size() >= 4 && std::memcmp(map.data(), "GGUF", 4) == 0) return from_gguf(GgufFile::open(path));
  return parse(map.data(), map.size(), path);
}

ImatrixFile ImatrixFile::from_gguf(const GgufFile& g) {
  const std::string& name = g.path();
  if (g.get_string("general.type").value_or("") != "imatrix")
    fail("{}: a GGUF file but not an importance matrix (general.type is not \"imatrix\")", name);
  ImatrixFile f;
  f.path_ = name;
  const int64_t chunks = g.get_int("imatrix.chunk_count").value_or(0);
  if (chunks < 0 || chunks > INT32_MAX) fail("{}: bad imatrix.chunk_count {}", name, chunks);
  f.last_call_ = static_cast<int32_t>(chunks);
  if (const GgufValue* d = g.find("imatrix.datasets"); d && d->type() == GgufType::ARRAY && !d->as_array().items.empty())
    f.dataset_ = d->as_array().items.front().as_string();
  constexpr std::string_view kSums = ".in_sum2", kCounts = ".counts";
  for (const auto& t : g.tensors()) {
    if (t.name.size() <= kSums.size() || t.name.compare(t.name.size() - kSums.size(), kSums.size(), kSums) != 0) continue;
    const std::string base = t.name.substr(0, t.name.size() - kSums.size());
    const GgufTensorInfo* c = g.find_tensor(base + std::string(kCounts));
    if (!c) fail("{}: {} has sums but no counts", name, base);
    if (t.type != GgmlType::F32 || c->type != GgmlType::F32 || t.dims.empty())
      fail("{}: {}: imatrix tensors must be F32", name, base);
    const uint64_t ne0 = t.dims[0], nmat = t.n_elements() / std::max<uint64_t>(ne0, 1);
    if (ne0 < 1 || ne0 > static_cast<uint64_t>(kMaxValues) || c->n_elements() != nmat)
      fail("{}: {}: {} sums do not match {} counts", name, base, t.n_elements(), c->n_elements());
    const TensorView sv = g.view(t), cv = g.view(*c);
    ImatrixEntry e;
    e.name = base;
    e.ncall = f.last_call_;
    e.values.resize(static_cast<size_t>(t.n_elements()));
    for (uint64_t m = 0; m < nmat; ++m) {
      float cnt;
      std::memcpy(&cnt, cv.data + 4 * m, 4);
      if (!std::isfinite(cnt) || cnt < 0) fail("{}: {}: bad count {}", name, base, cnt);
      for (uint64_t j = 0; j < ne0; ++j) {
        float v;
        std::memcpy(&v, sv.data + 4 * (m * ne0 + j), 4);
        if (!std::isfinite(v) || v < 0)
          fail("{}: {}: value {} at column {} is not a finite non-negative number", name, base, v, j);
        e.values[m * ne0 + j] = cnt > 0 ? v / cnt : v;
      }
    }
    if (f.index_.count(e.name)) fail("{}: duplicate entry {}", name, e.name);
    f.index_.emplace(e.name, f.entries_.size());
    f.entries_.push_back(std::move(e));
  }
  if (f.entries_.empty()) fail("{}: the imatrix GGUF holds no <tensor>.in_sum2 entries", name);
  return f;
}

ImatrixFile ImatrixFile::parse(const uint8_t* data, uint64_t size, const std::string& name) {
  ImatrixFile f;
  f.path_ = name;
  Reader r{data, size, 0, name};
  const int32_t n = r.i32("the entry count");
  // Each entry needs at least 4 + 1 + 4 + 4 + 4 bytes.
  if (n < 0 || static_cast<uint64_t>(n) > r.left() / 17) fail("{}: bad entry count {}", name, n);
  f.entries_.reserve(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    const int32_t len = r.i32("a name length");
    if (len < 1 || len > kMaxNameLen || static_cast<uint64_t>(len) > r.left())
      fail("{}: entry {}: bad name length {} at byte {}", name, i, len, r.pos - 4);
    ImatrixEntry e;
    e.name.assign(reinterpret_cast<const char*>(data + r.pos), static_cast<size_t>(len));
    r.pos += static_cast<uint64_t>(len);
    e.ncall = r.i32("ncall");
    const int32_t nval = r.i32("nval");
    if (e.ncall < 0) fail("{}: entry {} ({}): negative ncall {}", name, i, e.name, e.ncall);
    if (nval < 1 || nval > kMaxValues || static_cast<uint64_t>(nval) * 4 > r.left())
      fail("{}: entry {} ({}): bad value count {} at byte {}", name, i, e.name, nval, r.pos - 4);
    e.values.resize(static_cast<size_t>(nval));
    std::memcpy(e.values.data(), data + r.pos, static_cast<size_t>(nval) * 4);
    r.pos += static_cast<uint64_t>(nval) * 4;
    for (int32_t j = 0; j < nval; ++j) {
      float& v = e.values[static_cast<size_t>(j)];
      if (!std::isfinite(v) || v < 0)
        fail("{}: entry {} ({}): value {} at column {} is not a finite non-negative number", name, i, e.name, v, j);
      if (e.ncall > 0) v /= static_cast<float>(e.ncall);
    }
    if (f.index_.count(e.name)) fail("{}: duplicate entry {}", name, e.name);
    f.index_.emplace(e.name, f.entries_.size());
    f.entries_.push_back(std::move(e));
  }
  if (r.left() > 0) {
    f.last_call_ = r.i32("last_call");
    const int32_t dlen = r.i32("the dataset name length");
    if (dlen < 0 || static_cast<uint64_t>(dlen) > r.left())
      fail("{}: bad dataset name length {} at byte {}", name, dlen, r.pos - 4);
    f.dataset_.assign(reinterpret_cast<const char*>(data + r.pos), static_cast<size_t>(dlen));
    r.pos += static_cast<uint64_t>(dlen);
    if (r.left() > 0) fail("{}: {} unexpected trailing bytes at byte {}", name, r.left(), r.pos);
  }
  return f;
}

const ImatrixEntry* ImatrixFile::find(std::string_view tensor_name) const {
  auto it = index_.find(tensor_name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const std::vector<float>* ImatrixFile::importance(std::string_view tensor_name) const {
  const ImatrixEntry* e = find(tensor_name);
  return e ? &e->values : nullptr;
}

std::map<std::string, std::vector<float>, std::less<>> ImatrixFile::to_map() const {
  std::map<std::string, std::vector<float>, std::less<>> m;
  for (const auto& e : entries_) m.emplace(e.name, e.values);
  return m;
}

}  // namespace edgeq::quant
