// GGUF reader and writer. The reader trusts nothing: every length, count, offset and dimension is
// checked against the bytes that remain and against sane limits, with overflow-safe arithmetic, before use.
#include "edgeq/formats/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "edgeq/base/error.h"

namespace edgeq {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kMaxDims = 4;          // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;
// Containers never reserve more than this from a count the file claims; beyond it they grow only as
// elements are actually parsed, so memory follows the bytes present, not what a header says.
constexpr uint64_t kMaxReserve = 1024;
constexpr uint64_t kMaxStringLen = uint64_t{1} << 30;  // 1 GiB: no key or token is larger

const char* kTypeNames[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                            "bool",  "string", "array", "uint64", "int64", "float64"};

bool valid_utf8(std::string_view s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

// Bounds-checked little-endian cursor over the file bytes.
class Cursor {
 public:
  Cursor(const uint8_t* p, uint64_t n, const std::string& name) : p_(p), n_(n), name_(name) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return n_ - pos_; }

  template <typename T>
  T read(const char* what) {
    if (remaining() < sizeof(T))
      fail("{}: truncated at byte {} while reading {} (file has {} bytes)", name_, pos_, what, n_);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  uint64_t read_len(uint32_t version, const char* what) {
    return version == 1 ? read<uint32_t>(what) : read<uint64_t>(what);
  }

  std::string read_string(uint32_t version, const char* what) {
    uint64_t at = pos_;
    uint64_t len = read_len(version, what);
    if (len > remaining() || len > kMaxStringLen)
      fail("{}: {} at byte {} claims length {} but only {} bytes remain", name_, what, at, len, remaining());
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return s;
  }

  // Control bytes of names read from the file (a NUL would cut the line short) are shown as \xNN.
  [[noreturn]] void error(uint64_t at, const std::string& msg) const {
    std::string shown;
    for (unsigned char ch : msg) shown += ch < 0x20 || ch == 0x7f ? fmt::format("\\x{:02x}", ch) : std::string(1, char(ch));
    fail("{}: byte {}: {}", name_, at, shown);
  }
  const std::string& name() const { return name_; }

 private:
  const uint8_t* p_;
  uint64_t n_;
  uint64_t pos_ = 0;
  const std::string& name_;
};

uint64_t min_encoded_size(GgufType t, uint32_t version) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    case GgufType::STRING: return version == 1 ? 4 : 8;
    case GgufType::ARRAY: return 4 + (version == 1 ? 4 : 8);
  }
  return 1;
}

GgufValue read_value(Cursor& c, uint32_t version, GgufType type, int depth, const std::string& key) {
  switch (type) {
    case GgufType::UINT8: return c.read<uint8_t>("uint8 value");
    case GgufType::INT8: return c.read<int8_t>("int8 value");
    case GgufType::UINT16: return c.read<uint16_t>("uint16 value");
    case GgufType::INT16: return c.read<int16_t>("int16 value");
    case GgufType::UINT32: return c.read<uint32_t>("uint32 value");
    case GgufType::INT32: return c.read<int32_t>("int32 value");
    case GgufType::FLOAT32: return c.read<float>("float32 value");
    case GgufType::UINT64: return c.read<uint64_t>("uint64 value");
    case GgufType::INT64: return c.read<int64_t>("int64 value");
    case GgufType::FLOAT64: return c.read<double>("float64 value");
    case GgufType::BOOL: {
      uint64_t at = c.pos();
      uint8_t b = c.read<uint8_t>("bool value");
      if (b > 1) c.error(at, fmt::format("key '{}': bool value {} is neither 0 nor 1", key, b));
      return b != 0;
    }
    case GgufType::STRING: {
      uint64_t at = c.pos();
      std::string s = c.read_string(version, "string value");
      if (!valid_utf8(s)) c.error(at, fmt::format("key '{}': string value is not valid UTF-8", key));
      return s;
    }
    case GgufType::ARRAY: {
      if (depth >= kMaxArrayDepth) c.error(c.pos(), fmt::format("key '{}': arrays nested too deeply", key));
      uint64_t at = c.pos();
      uint32_t et = c.read<uint32_t>("array element type");
      if (et > static_cast<uint32_t>(GgufType::FLOAT64))
        c.error(at, fmt::format("key '{}': unknown array element type {}", key, et));
      uint64_t count = c.read_len(version, "array length");
      uint64_t need;
      if (mul_overflow_u64(count, min_encoded_size(static_cast<GgufType>(et), version), &need) || need > c.remaining())
        c.error(at, fmt::format("key '{}': array claims {} elements but only {} bytes remain", key, count, c.remaining()));
      GgufArray arr;
      arr.elem_type = static_cast<GgufType>(et);
      arr.items.reserve(std::min<uint64_t>(count, kMaxReserve));  // grow with the bytes actually present
      for (uint64_t i = 0; i < count; ++i) arr.items.push_back(read_value(c, version, arr.elem_type, depth + 1, key));
      return arr;
    }
  }
  c.error(c.pos(), fmt::format("key '{}': unknown value type {}", key, static_cast<uint32_t>(type)));
}

// ---- writer helpers -------------------------------------------------------------------------

void put_bytes(std::string& out, const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }
template <typename T>
void put(std::string& out, T v) { put_bytes(out, &v, sizeof(T)); }
void put_string(std::string& out, const std::string& s, uint32_t version) {
  if (version == 1) put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  else put<uint64_t>(out, s.size());
  out += s;
}

void put_value(std::string& out, const GgufValue& v, uint32_t version) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          put_string(out, x, version);
        } else if constexpr (std::is_same_v<T, GgufArray>) {
          put<uint32_t>(out, static_cast<uint32_t>(x.elem_type));
          if (version == 1) put<uint32_t>(out, static_cast<uint32_t>(x.items.size()));
          else put<uint64_t>(out, x.items.size());
          for (const auto& it : x.items) {
            if (it.type() != x.elem_type)
              fail("GGUF writer: array of {} holds a {} element", gguf_type_name(x.elem_type), gguf_type_name(it.type()));
            put_value(out, it, version);
          }
        } else if constexpr (std::is_same_v<T, bool>) {
          put<uint8_t>(out, x ? 1 : 0);
        } else {
          put<T>(out, x);
        }
      },
      v.v);
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// A split key of `f`, exactly of type T (llama.cpp reads split.no/split.count as uint16 and
// split.tensors.count as int32 and refuses other types); nullopt when absent.
template <typename T>
std::optional<T> split_key(const GgufFile& f, const char* key) {
  const GgufValue* v = f.find(key);
  if (!v) return std::nullopt;
  if (!std::holds_alternative<T>(v->v))
    fail("{}: {} must be {}, found {}", f.path(), key, gguf_type_name(GgufValue(T{}).type()), gguf_type_name(v->type()));
  return std::get<T>(v->v);
}

}  // namespace

bool is_split_key(std::string_view key) { return key == kSplitNoKey || key == kSplitCountKey || key == kSplitTensorsKey; }

std::string gguf_split_path(const std::string& prefix, uint32_t split_no, uint32_t count) {
  return fmt::format("{}-{:05d}-of-{:05d}.gguf", prefix, split_no + 1, count);
}

std::string gguf_split_prefix(const std::string& out_path) {
  constexpr std::string_view ext = ".gguf";
  if (out_path.size() > ext.size() && out_path.ends_with(ext)) return out_path.substr(0, out_path.size() - ext.size());
  return out_path;
}

uint64_t parse_split_size(std::string_view text) {
  const auto bad = [&]() -> uint64_t {
    fail("split size '{}': expected a positive whole number followed by M (megabytes) or G (gigabytes), e.g. 500M "
         "or 2G (as gguf-split)",
         text);
  };
  if (text.size() < 2) return bad();
  const char unit = text.back();
  const uint64_t scale = unit == 'M' ? 1000ull * 1000 : unit == 'G' ? 1000ull * 1000 * 1000 : 0;
  if (scale == 0) return bad();
  uint64_t n = 0;
  for (char c : text.substr(0, text.size() - 1)) {
    if (c < '0' || c > '9') return bad();
    n = n * 10 + static_cast<uint64_t>(c - '0');
    if (n > (uint64_t{1} << 40)) return bad();
  }
  if (n == 0) return bad();
  return n * scale;
}

const char* gguf_type_name(GgufType t) {
  auto i = static_cast<uint32_t>(t);
  return i < std::size(kTypeNames) ? kTypeNames[i] : "?";
}

// ---- GgufValue --------------------------------------------------------------------------------

bool GgufValue::is_integer() const {
  switch (type()) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::UINT16: case GgufType::INT16: case GgufType::UINT32:
    case GgufType::INT32: case GgufType::UINT64: case GgufType::INT64: return true;
    default: return false;
  }
}
bool GgufValue::is_number() const {
  return is_integer() || type() == GgufType::FLOAT32 || type() == GgufType::FLOAT64;
}

int64_t GgufValue::as_int() const {
  return std::visit(
      [&](const auto& x) -> int64_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, uint64_t>) {
          if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail("GGUF value {} does not fit int64", x);
          return static_cast<int64_t>(x);
        } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          return static_cast<int64_t>(x);
        } else {
          fail("GGUF value of type {} is not an integer", gguf_type_name(type()));
        }
      },
      v);
}
uint64_t GgufValue::as_uint() const {
  if (type() == GgufType::UINT64) return std::get<uint64_t>(v);
  int64_t i = as_int();
  if (i < 0) fail("GGUF value {} is negative where a count is expected", i);
  return static_cast<uint64_t>(i);
}
double GgufValue::as_double() const {
  if (type() == GgufType::FLOAT32) return std::get<float>(v);
  if (type() == GgufType::FLOAT64) return std::get<double>(v);
  if (is_integer()) return type() == GgufType::UINT64 ? static_cast<double>(std::get<uint64_t>(v)) : static_cast<double>(as_int());
  fail("GGUF value of type {} is not a number", gguf_type_name(type()));
}
bool GgufValue::as_bool() const {
  if (type() != GgufType::BOOL) fail("GGUF value of type {} is not a bool", gguf_type_name(type()));
  return std::get<bool>(v);
}
const std::string& GgufValue::as_string() const {
  if (type() != GgufType::STRING) fail("GGUF value of type {} is not a string", gguf_type_name(type()));
  return std::get<std::string>(v);
}
const GgufArray& GgufValue::as_array() const {
  if (type() != GgufType::ARRAY) fail("GGUF value of type {} is not an array", gguf_type_name(type()));
  return std::get<GgufArray>(v);
}

std::string GgufValue::to_display(size_t max_items) const {
  return std::visit(
      [&](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          std::string s = x.size() > 60 ? x.substr(0, 57) + "..." : x;
          std::string o = "\"";
          for (char ch : s) {
            if (ch == '\n') o += "\\n";
            else if (ch == '"') o += "\\\"";
            else if (static_cast<unsigned char>(ch) < 0x20) o += fmt::format("\\x{:02x}", static_cast<unsigned char>(ch));
            else o += ch;
          }
          return o + "\"";
        } else if constexpr (std::is_same_v<T, GgufArray>) {
          std::string o = fmt::format("[{} x {}]", gguf_type_name(x.elem_type), x.items.size());
          if (!x.items.empty()) {
            o += " [";
            for (size_t i = 0; i < x.items.size() && i < max_items; ++i) o += (i ? ", " : "") + x.items[i].to_display(4);
            if (x.items.size() > max_items) o += ", ...";
            o += "]";
          }
          return o;
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>) {
          return fmt::format("{}", static_cast<int>(x));
        } else {
          return fmt::format("{}", x);
        }
      },
      v);
}

GgufValue GgufValue::string_array(std::vector<std::string> items) {
  GgufArray a;
  a.elem_type = GgufType::STRING;
  a.items.reserve(items.size());
  for (auto& s : items) a.items.emplace_back(std::move(s));
  return GgufValue(std::move(a));
}
namespace {
template <class T>
GgufValue numeric_array(GgufType elem_type, const std::vector<T>& items) {
  GgufArray a;
  a.elem_type = elem_type;
  a.items.reserve(items.size());
  for (T v : items) a.items.emplace_back(v);
  return GgufValue(std::move(a));
}
}  // namespace
GgufValue GgufValue::float_array(const std::vector<float>& items) { return numeric_array(GgufType::FLOAT32, items); }
GgufValue GgufValue::int32_array(const std::vector<int32_t>& items) { return numeric_array(GgufType::INT32, items); }

uint64_t GgufTensorInfo::n_elements() const {
  uint64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}
uint64_t TensorView::n_elements() const {
  uint64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}
uint64_t TensorView::n_rows() const {
  uint64_t n = 1;
  for (size_t i = 1; i < dims.size(); ++i) n *= dims[i];
  return n;
}
uint64_t TensorView::row_bytes() const {
  auto r = ggml_row_size(type, dims.empty() ? 1 : dims[0]);
  return r ? *r : 0;
}

// ---- GgufFile -----------------------------------------------------------------------------------

GgufFile GgufFile::open_one(const std::string& path) {
  auto map = std::make_shared<MappedFile>(path);
  GgufFile f = parse(map->data(), map->size(), path);
  f.map_ = std::move(map);
  return f;
}

GgufFile GgufFile::open(const std::string& path) {
  GgufFile first = open_one(path);
  const auto count = split_key<uint16_t>(first, kSplitCountKey);
  if (!count || *count <= 1) return join(std::move(first), {});
  const uint16_t no = split_key<uint16_t>(first, kSplitNoKey).value_or(0);
  const std::string postfix = fmt::format("-{:05d}-of-{:05d}.gguf", no + 1, *count);
  const std::string prefix = path.size() > postfix.size() && path.ends_with(postfix)
                                 ? path.substr(0, path.size() - postfix.size())
                                 : std::string();
  if (no != 0)
    fail("{}: is split {} of {} of a split GGUF; open its first split{}", path, no + 1, *count,
         prefix.empty() ? std::string() : ", " + gguf_split_path(prefix, 0, *count));
  if (prefix.empty())
    fail("{}: the first of {} split files, but its name does not end in {} (llama.cpp's naming), so the others "
         "cannot be found",
         path, *count, postfix);
  std::vector<GgufFile> rest;
  for (uint32_t i = 1; i < *count; ++i) {
    const std::string p = gguf_split_path(prefix, i, *count);
    try {
      rest.push_back(open_one(p));
    } catch (const Error& e) {
      fail("{}: split {} of {}: {}", path, i + 1, *count, e.what());
    }
  }
  return join(std::move(first), std::move(rest));
}

GgufFile GgufFile::join(GgufFile first, std::vector<GgufFile> rest) {
  const auto count = split_key<uint16_t>(first, kSplitCountKey);
  const auto no = split_key<uint16_t>(first, kSplitNoKey);
  const auto total = split_key<int32_t>(first, kSplitTensorsKey);
  const uint64_t n_files = rest.size() + 1;
  if (!count) {
    if (!rest.empty()) fail("{}: has no {} key but {} split files were given", first.path(), kSplitCountKey, n_files);
    return first;
  }
  if (*count == 0) fail("{}: {} is 0", first.path(), kSplitCountKey);
  if (*count != n_files) fail("{}: {} is {} but {} files were given", first.path(), kSplitCountKey, *count, n_files);
  if (no.value_or(0) != 0) fail("{}: {} is {}, expected 0 for the first split", first.path(), kSplitNoKey, *no);
  if (*count > 1 && !total) fail("{}: a split GGUF without {}", first.path(), kSplitTensorsKey);
  for (size_t i = 0; i < rest.size(); ++i) {
    GgufFile& part = rest[i];
    const auto pno = split_key<uint16_t>(part, kSplitNoKey);
    const auto pcount = split_key<uint16_t>(part, kSplitCountKey);
    if (!pno) fail("{}: split {} of {} has no {} key", part.path(), i + 2, *count, kSplitNoKey);
    if (*pno != i + 1) fail("{}: {} is {}, expected {} (split {} of {})", part.path(), kSplitNoKey, *pno, i + 1, i + 2, *count);
    if (pcount != count)
      fail("{}: {} is {} but the first split {} says {}", part.path(), kSplitCountKey,
           pcount ? std::to_string(*pcount) : "missing", first.path(), *count);
    if (part.header_only_ != first.header_only_) fail("{}: a header-only split joined with full files", part.path());
    const uint32_t k = static_cast<uint32_t>(first.splits_.size());
    for (auto& t : part.tensors_) {
      if (const GgufTensorInfo* other = first.find_tensor(t.name))
        fail("{}: tensor '{}' is also in {}", part.path(), t.name, first.splits_[other->split].path);
      t.split = k;
      first.tensor_index_.emplace(t.name, first.tensors_.size());
      first.tensors_.push_back(std::move(t));
    }
    first.splits_.push_back(part.splits_.front());
    first.split_base_.push_back(part.split_base_.front());
    if (part.map_) first.split_maps_.push_back(std::move(part.map_));
  }
  if (total && (*total < 0 || static_cast<uint64_t>(*total) != first.tensors_.size()))
    fail("{}: {} is {} but the {} split file{} hold{} {} tensors", first.path(), kSplitTensorsKey, *total, n_files,
         n_files == 1 ? "" : "s", n_files == 1 ? "s" : "", first.tensors_.size());
  return first;
}

void GgufFile::populate() const {
  if (map_) map_->populate();
  for (const auto& m : split_maps_) m->populate();
}

uint64_t GgufFile::file_size() const {
  uint64_t n = 0;
  for (const auto& s : splits_) n += s.file_size;
  return n;
}

GgufFile GgufFile::parse(const uint8_t* data, uint64_t size, const std::string& name) {
  return parse_impl(data, size, name, false);
}

GgufFile GgufFile::parse_header(const uint8_t* data, uint64_t size, const std::string& name) {
  return parse_impl(data, size, name, true);
}

GgufFile GgufFile::parse_impl(const uint8_t* data, uint64_t size, const std::string& name, bool header_only) {
  GgufFile f;
  f.header_only_ = header_only;
  f.path_ = name;
  Cursor c(data, size, f.path_);
  if (size < 4) fail("{}: not a GGUF file (only {} bytes)", name, size);
  uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kMagic) fail("{}: not a GGUF file (bad magic {:02x} {:02x} {:02x} {:02x})", name, data[0], data[1], data[2], data[3]);
  f.version_ = c.read<uint32_t>("version");
  if (f.version_ == 0 || f.version_ > 3) {
    if ((f.version_ & 0xffff) == 0) fail("{}: GGUF version {:#x} looks big-endian, which edgeq does not read", name, f.version_);
    fail("{}: unsupported GGUF version {} (edgeq reads versions 1 to 3)", name, f.version_);
  }
  uint64_t n_tensors = c.read_len(f.version_, "tensor count");
  uint64_t n_kv = c.read_len(f.version_, "metadata count");
  // Every KV needs at least a key length and a type; every tensor info at least name length, n_dims, type, offset.
  const uint64_t min_kv = (f.version_ == 1 ? 4 : 8) + 4;
  const uint64_t min_ti = (f.version_ == 1 ? 4 : 8) + 4 + 4 + 8;
  if (n_kv > c.remaining() / min_kv) fail("{}: header claims {} metadata entries but the file has only {} bytes", name, n_kv, size);
  if (n_tensors > c.remaining() / min_ti) fail("{}: header claims {} tensors but the file has only {} bytes", name, n_tensors, size);

  f.kv_.reserve(std::min<uint64_t>(n_kv, kMaxReserve));
  std::map<std::string, size_t, std::less<>> seen;
  for (uint64_t i = 0; i < n_kv; ++i) {
    uint64_t at = c.pos();
    std::string key = c.read_string(f.version_, "metadata key");
    if (key.empty()) c.error(at, fmt::format("metadata entry {} has an empty key", i));
    if (!valid_utf8(key)) c.error(at, fmt::format("metadata entry {}: key is not valid UTF-8", i));
    if (seen.count(key)) c.error(at, fmt::format("duplicate metadata key '{}'", key));
    uint64_t tat = c.pos();
    uint32_t t = c.read<uint32_t>("metadata value type");
    if (t > static_cast<uint32_t>(GgufType::FLOAT64)) c.error(tat, fmt::format("key '{}': unknown value type {}", key, t));
    GgufValue v = read_value(c, f.version_, static_cast<GgufType>(t), 0, key);
    seen.emplace(key, f.kv_.size());
    f.kv_.emplace_back(std::move(key), std::move(v));
  }

  if (auto* a = f.find("general.alignment")) {
    if (a->type() != GgufType::UINT32) fail("{}: general.alignment must be uint32, found {}", name, gguf_type_name(a->type()));
    uint32_t al = std::get<uint32_t>(a->v);
    if (al == 0 || (al & (al - 1)) != 0) fail("{}: general.alignment {} is not a power of two", name, al);
    f.alignment_ = al;
  }

  f.tensors_.reserve(std::min<uint64_t>(n_tensors, kMaxReserve));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    uint64_t at = c.pos();
    GgufTensorInfo t;
    t.name = c.read_string(f.version_, "tensor name");
    if (t.name.empty()) c.error(at, fmt::format("tensor {} has an empty name", i));
    if (t.name.size() >= 64 * 1024) c.error(at, fmt::format("tensor {} has a name of {} bytes", i, t.name.size()));
    if (!valid_utf8(t.name)) c.error(at, fmt::format("tensor {}: name is not valid UTF-8", i));
    if (f.tensor_index_.count(t.name)) c.error(at, fmt::format("duplicate tensor name '{}'", t.name));
    uint32_t nd = c.read<uint32_t>("tensor dimension count");
    if (nd == 0 || nd > kMaxDims) c.error(at, fmt::format("tensor '{}' has {} dimensions (1 to {} allowed)", t.name, nd, kMaxDims));
    uint64_t n = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      uint64_t dim = f.version_ == 1 ? c.read<uint32_t>("tensor dimension") : c.read<uint64_t>("tensor dimension");
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || mul_overflow_u64(n, dim, &n) ||
          n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        c.error(at, fmt::format("tensor '{}': dimensions overflow 64 bits", t.name));
      t.dims.push_back(dim);
    }
    uint64_t tat = c.pos();
    uint32_t type = c.read<uint32_t>("tensor type");
    auto* info = ggml_type_info(type);
    if (!info) c.error(tat, fmt::format("tensor '{}' has unknown ggml type {}", t.name, type));
    t.type = static_cast<GgmlType>(type);
    if (t.dims[0] % info->block_size != 0)
      c.error(at, fmt::format("tensor '{}': row length {} is not a multiple of the {} block size {}", t.name, t.dims[0], info->name, info->block_size));
    uint64_t nb;
    if (mul_overflow_u64(n / info->block_size, info->type_size, &nb)) c.error(at, fmt::format("tensor '{}': byte size overflows", t.name));
    t.nbytes = nb;
    t.offset = c.read<uint64_t>("tensor data offset");
    if (t.offset % f.alignment_ != 0)
      c.error(at, fmt::format("tensor '{}': data offset {} is not a multiple of the alignment {}", t.name, t.offset, f.alignment_));
    f.tensor_index_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
  }

  f.data_offset_ = align_up(c.pos(), f.alignment_);
  if (!f.tensors_.empty() && !header_only) {
    if (f.data_offset_ > size) fail("{}: truncated: tensor data should start at byte {} but the file has {} bytes", name, f.data_offset_, size);
    uint64_t data_size = size - f.data_offset_;
    std::vector<const GgufTensorInfo*> by_off;
    for (auto& t : f.tensors_) {
      uint64_t end;
      if (add_overflow_u64(t.offset, t.nbytes, &end) || end > data_size)
        fail("{}: tensor '{}' ({} bytes at data offset {}) extends past the end of the file (data section has {} bytes)", name,
             t.name, t.nbytes, t.offset, data_size);
      by_off.push_back(&t);
    }
    std::sort(by_off.begin(), by_off.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_off.size(); ++i)
      if (by_off[i - 1]->offset + by_off[i - 1]->nbytes > by_off[i]->offset && by_off[i - 1]->nbytes > 0)
        fail("{}: tensors '{}' and '{}' overlap", name, by_off[i - 1]->name, by_off[i]->name);
  }
  f.splits_.push_back({name, size, f.data_offset_, f.tensors_.size()});
  f.split_base_.push_back(data);
  return f;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (auto& [k, v] : kv_)
    if (k == key) return &v;
  return nullptr;
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  auto* v = find(key);
  if (!v) return std::nullopt;
  if (v->type() != GgufType::STRING) fail("{}: key '{}' should be a string, found {}", path_, key, gguf_type_name(v->type()));
  return v->as_string();
}
std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_integer()) fail("{}: key '{}' should be an integer, found {}", path_, key, gguf_type_name(v->type()));
  return v->as_int();
}
std::optional<double> GgufFile::get_float(std::string_view key) const {
  auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_number()) fail("{}: key '{}' should be a number, found {}", path_, key, gguf_type_name(v->type()));
  return v->as_double();
}
std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  auto* v = find(key);
  if (!v) return std::nullopt;
  if (v->type() != GgufType::BOOL) fail("{}: key '{}' should be a bool, found {}", path_, key, gguf_type_name(v->type()));
  return v->as_bool();
}
std::string GgufFile::architecture() const { return get_string("general.architecture").value_or(""); }

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

TensorView GgufFile::view(const GgufTensorInfo& t) const {
  TensorView v;
  v.name = t.name;
  v.dims = t.dims;
  v.type = t.type;
  v.data = header_only_ ? nullptr : split_base_.at(t.split) + splits_.at(t.split).data_offset + t.offset;
  v.nbytes = t.nbytes;
  return v;
}

TensorView GgufFile::view(std::string_view name) const {
  auto* t = find_tensor(name);
  if (!t) fail("{}: no tensor named '{}'", path_, name);
  return view(*t);
}

// ---- GgufWriter ---------------------------------------------------------------------------------

GgufWriter::GgufWriter(const std::string& path, uint32_t version) : path_(path), version_(version) {
  if (version < 2 || version > 3) fail("{}: edgeq writes GGUF versions 2 and 3, not {}", path, version);
}

GgufWriter::GgufWriter(const std::string& path, const GgufSplitOptions& split, uint32_t version)
    : GgufWriter(path, version) {
  split_ = split;
}

GgufWriter::~GgufWriter() = default;  // an unfinished AtomicOutputFile removes its temp file

void GgufWriter::set(const std::string& key, GgufValue value) {
  if (header_done_) fail("{}: metadata '{}' set after tensor data started", path_, key);
  for (auto& [k, v] : kv_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  kv_.emplace_back(key, std::move(value));
}

void GgufWriter::remove(const std::string& key) {
  kv_.erase(std::remove_if(kv_.begin(), kv_.end(), [&](auto& p) { return p.first == key; }), kv_.end());
}

const GgufValue* GgufWriter::find(std::string_view key) const {
  for (auto& [k, v] : kv_)
    if (k == key) return &v;
  return nullptr;
}

uint32_t GgufWriter::alignment() const {
  if (auto* a = find("general.alignment")) {
    if (a->type() != GgufType::UINT32) fail("{}: general.alignment must be uint32", path_);
    uint32_t al = std::get<uint32_t>(a->v);
    if (al == 0 || (al & (al - 1)) != 0) fail("{}: general.alignment {} is not a power of two", path_, al);
    return al;
  }
  return 32;
}

void GgufWriter::add_tensor(const std::string& name, std::vector<uint64_t> dims, GgmlType type) {
  if (header_done_) fail("{}: tensor '{}' added after tensor data started", path_, name);
  if (dims.empty() || dims.size() > kMaxDims) fail("{}: tensor '{}' has {} dimensions", path_, name, dims.size());
  for (auto& t : tensors_)
    if (t.name == name) fail("{}: duplicate tensor name '{}'", path_, name);
  auto* info = ggml_type_info(type);
  if (!info) fail("{}: tensor '{}': unknown type {}", path_, name, static_cast<uint32_t>(type));
  if (dims[0] % info->block_size != 0)
    fail("{}: tensor '{}': row length {} is not a multiple of the {} block size {}", path_, name, dims[0], info->name, info->block_size);
  uint64_t n = 1;
  for (auto d : dims)
    if (mul_overflow_u64(n, d, &n)) fail("{}: tensor '{}': dimensions overflow", path_, name);
  GgufTensorInfo t;
  t.name = name;
  t.dims = std::move(dims);
  t.type = type;
  t.nbytes = n / info->block_size * info->type_size;
  tensors_.push_back(std::move(t));
}

std::vector<GgufWriter::Placement> GgufWriter::place(const GgufSplitOptions& split) const {
  const uint64_t al = alignment();
  std::vector<Placement> p;
  p.reserve(tensors_.size());
  uint32_t k = 0;
  uint64_t in_split = 0, off = 0;
  for (const auto& t : tensors_) {
    const uint64_t padded = align_up(t.nbytes, al);
    // gguf-split's rule (a tensor count, or the tensor data size with the next tensor, padded; metadata not
    // counted); a file never stays empty, so a tensor larger than the limit gets a file of its own.
    if (split.enabled() && in_split > 0 &&
        ((split.max_tensors > 0 && in_split >= split.max_tensors) ||
         (split.max_bytes > 0 && off + padded > split.max_bytes))) {
      ++k;
      in_split = 0;
      off = 0;
    }
    p.push_back({k, off});
    off += padded;
    ++in_split;
  }
  if (k + 1 > kMaxSplitFiles)
    fail("{}: the split options give {} files; edgeq writes at most {} (raise --split-max-size or --split-max-tensors)",
         path_, k + 1, kMaxSplitFiles);
  return p;
}

uint32_t GgufWriter::count_splits(const std::vector<Placement>& p) { return p.empty() ? 1 : p.back().split + 1; }

void GgufWriter::layout() {
  const auto p = place(split_);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    tensors_[i].split = p[i].split;
    tensors_[i].offset = p[i].offset;
  }
  n_splits_ = count_splits(p);
}

// File k's header: the metadata (all of it in the first file, with the caller's split.* keys dropped), the
// split keys when splitting (last, in gguf-split's order), and the infos of the tensors placed in file k.
std::string GgufWriter::encode_header(uint32_t k, const std::vector<Placement>& p, bool split_keys) const {
  const uint32_t n_splits = count_splits(p);
  std::vector<std::pair<std::string, GgufValue>> extra;
  if (k > 0 && alignment() != 32) extra.emplace_back("general.alignment", GgufValue(alignment()));
  if (split_keys) {
    // gguf-split's order: it sets split.count last (a placeholder first, replaced once the count is known).
    extra.emplace_back(kSplitNoKey, GgufValue(static_cast<uint16_t>(k)));
    extra.emplace_back(kSplitTensorsKey, GgufValue(static_cast<int32_t>(tensors_.size())));
    extra.emplace_back(kSplitCountKey, GgufValue(static_cast<uint16_t>(n_splits)));
  }
  uint64_t n_kv = extra.size(), n_t = 0;
  if (k == 0)
    for (auto& [key, v] : kv_) n_kv += !is_split_key(key);
  for (const auto& pl : p) n_t += pl.split == k;
  std::string h;
  put<uint32_t>(h, kMagic);
  put<uint32_t>(h, version_);
  put<uint64_t>(h, n_t);
  put<uint64_t>(h, n_kv);
  const auto put_kv = [&](const std::string& key, const GgufValue& v) {
    put_string(h, key, version_);
    put<uint32_t>(h, static_cast<uint32_t>(v.type()));
    put_value(h, v, version_);
  };
  if (k == 0)
    for (auto& [key, v] : kv_)
      if (!is_split_key(key)) put_kv(key, v);
  for (auto& [key, v] : extra) put_kv(key, v);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (p[i].split != k) continue;
    const auto& t = tensors_[i];
    put_string(h, t.name, version_);
    put<uint32_t>(h, static_cast<uint32_t>(t.dims.size()));
    for (auto d : t.dims) put<uint64_t>(h, d);
    put<uint32_t>(h, static_cast<uint32_t>(t.type));
    put<uint64_t>(h, p[i].offset);
  }
  return h;
}

std::string GgufWriter::output_path(uint32_t k, uint32_t n_splits) const {
  return split_.enabled() ? gguf_split_path(gguf_split_prefix(path_), k, n_splits) : path_;
}

std::vector<std::string> GgufWriter::output_paths() const {
  const uint32_t n = count_splits(place(split_));
  std::vector<std::string> paths;
  for (uint32_t k = 0; k < n; ++k) paths.push_back(output_path(k, n));
  return paths;
}

void GgufWriter::check_outputs() const {
  for (const auto& p : output_paths()) check_output_path(p);
}

void GgufWriter::write_header() {
  layout();
  check_outputs();  // every file of a split set, before the first one is written
  open_split(0);
  header_done_ = true;
}

std::string GgufWriter::header_bytes() { return encode_header(0, place({}), false); }

void GgufWriter::open_split(uint32_t k) {
  while (outs_.size() <= k) {
    if (!outs_.empty()) outs_.back()->close();  // complete: stays a temp file until finish()
    const auto i = static_cast<uint32_t>(outs_.size());
    std::vector<Placement> p;
    for (const auto& t : tensors_) p.push_back({t.split, t.offset});
    const std::string h = encode_header(i, p, split_.enabled());
    outs_.push_back(std::make_unique<AtomicOutputFile>(output_path(i, n_splits_)));
    outs_.back()->write(h.data(), h.size());
    bool has_tensors = false;
    for (const auto& t : tensors_) has_tensors |= t.split == i;
    if (has_tensors) outs_.back()->write_zeros(align_up(h.size(), alignment()) - h.size());
  }
}

void GgufWriter::write_tensor_data(const void* data, size_t n) {
  if (!header_done_) write_header();
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    if (cur_tensor_ >= tensors_.size()) fail("{}: more tensor data written than the tensors hold", path_);
    auto& t = tensors_[cur_tensor_];
    open_split(t.split);
    uint64_t left = t.nbytes - cur_written_;
    uint64_t k = std::min<uint64_t>(left, n);
    outs_.back()->write(p, k);
    p += k;
    n -= k;
    cur_written_ += k;
    if (cur_written_ == t.nbytes) {
      outs_.back()->write_zeros(align_up(t.nbytes, alignment()) - t.nbytes);
      ++cur_tensor_;
      cur_written_ = 0;
    }
  }
  // advance past zero-sized tensors
  while (cur_tensor_ < tensors_.size() && tensors_[cur_tensor_].nbytes == 0 && cur_written_ == 0) ++cur_tensor_;
}

void GgufWriter::finish() {
  if (!header_done_) write_header();
  while (cur_tensor_ < tensors_.size() && tensors_[cur_tensor_].nbytes == 0) ++cur_tensor_;
  if (cur_tensor_ != tensors_.size())
    fail("{}: finished with tensor '{}' incomplete ({} of {} tensors written)", path_, tensors_[cur_tensor_].name, cur_tensor_,
         tensors_.size());
  open_split(n_splits_ - 1);
  outs_.back()->close();
  // Every file is complete: rename them all. Should a rename fail, the files already renamed are removed
  // again, so no incomplete set is left behind.
  std::vector<std::string> placed;
  try {
    for (auto& o : outs_) {
      o->commit();
      placed.push_back(o->target());
    }
  } catch (...) {
    for (const auto& p : placed) {
      std::error_code ec;
      std::filesystem::remove(p, ec);
    }
    throw;
  }
}

uint64_t GgufWriter::expected_file_size() const {
  const auto p = place(split_);
  const uint64_t al = alignment();
  uint64_t n = 0;
  for (uint32_t k = 0; k < count_splits(p); ++k) {
    const uint64_t h = encode_header(k, p, split_.enabled()).size();
    bool has_tensors = false;
    for (size_t i = 0; i < tensors_.size(); ++i)
      if (p[i].split == k) {
        has_tensors = true;
        n += align_up(tensors_[i].nbytes, al);
      }
    n += has_tensors ? align_up(h, al) : h;
  }
  return n;
}

void gguf_rewrite(const GgufFile& in, const std::string& out_path) {
  GgufWriter w(out_path, in.version() == 1 ? 2 : in.version());
  for (auto& [k, v] : in.metadata()) w.set(k, v);
  for (auto& t : in.tensors()) w.add_tensor(t.name, t.dims, t.type);
  for (auto& t : in.tensors()) {
    auto v = in.view(t);
    w.write_tensor_data(v.data, v.nbytes);
  }
  w.finish();
}

}  // namespace edgeq
