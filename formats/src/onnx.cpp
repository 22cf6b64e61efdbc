// ONNX reader (libonnx's generated protobuf classes) and HF weight-role recovery for Llama-style exports.
#include "edgeq/formats/onnx.h"

#include <google/protobuf/io/coded_stream.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "edgeq/base/error.h"
#include "edgeq/base/half.h"
#include "edgeq/formats/mapped_file.h"

static_assert(std::endian::native == std::endian::little, "the ONNX reader assumes a little-endian host");

namespace edgeq {

// ---------------------------------------------------------------------------------------------
// dtypes

const char* onnx_dtype_name(int32_t d) {
  switch (d) {
    case onnx_dtype::FLOAT: return "FLOAT";
    case onnx_dtype::UINT8: return "UINT8";
    case onnx_dtype::INT8: return "INT8";
    case onnx_dtype::UINT16: return "UINT16";
    case onnx_dtype::INT16: return "INT16";
    case onnx_dtype::INT32: return "INT32";
    case onnx_dtype::INT64: return "INT64";
    case onnx_dtype::STRING: return "STRING";
    case onnx_dtype::BOOL: return "BOOL";
    case onnx_dtype::FLOAT16: return "FLOAT16";
    case onnx_dtype::DOUBLE: return "DOUBLE";
    case onnx_dtype::UINT32: return "UINT32";
    case onnx_dtype::UINT64: return "UINT64";
    case onnx_dtype::COMPLEX64: return "COMPLEX64";
    case onnx_dtype::COMPLEX128: return "COMPLEX128";
    case onnx_dtype::BFLOAT16: return "BFLOAT16";
    default: return "?";
  }
}

uint32_t onnx_dtype_size(int32_t d) {
  switch (d) {
    case onnx_dtype::UINT8: case onnx_dtype::INT8: case onnx_dtype::BOOL: return 1;
    case onnx_dtype::UINT16: case onnx_dtype::INT16: case onnx_dtype::FLOAT16: case onnx_dtype::BFLOAT16: return 2;
    case onnx_dtype::FLOAT: case onnx_dtype::INT32: case onnx_dtype::UINT32: return 4;
    case onnx_dtype::INT64: case onnx_dtype::UINT64: case onnx_dtype::DOUBLE: case onnx_dtype::COMPLEX64: return 8;
    case onnx_dtype::COMPLEX128: return 16;
    default: return 0;
  }
}

bool onnx_dtype_is_float(int32_t d) {
  return d == onnx_dtype::FLOAT || d == onnx_dtype::FLOAT16 || d == onnx_dtype::BFLOAT16 ||
         d == onnx_dtype::DOUBLE;
}

uint64_t OnnxTensor::n_elements() const {
  uint64_t n = 1;
  for (auto d : dims) n *= d;  // validated against overflow when the tensor was read
  return n;
}

// ---------------------------------------------------------------------------------------------
// config.json


// ---------------------------------------------------------------------------------------------
// Parsed model

namespace {

using Node = OnnxNode;

bool mul_ovf(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }
bool add_ovf(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

}  // namespace

namespace onnx_detail {
struct ModelData {
  std::string path;  // the model file (or the in-memory name)
  std::string base_dir;
  int64_t ir_version = 0, opset = 0;
  std::string producer;
  std::vector<OnnxTensor> inits;
  std::unordered_map<std::string, size_t> index;
  std::vector<Node> nodes;
  std::vector<std::string> graph_inputs, graph_outputs;
  // Owned bytes: raw_data strings moved out of the proto, typed fields converted to little-endian bytes.
  std::deque<std::string> raw_bufs;
  std::deque<std::vector<uint8_t>> typed_bufs;
  std::map<std::string, std::shared_ptr<MappedFile>> ext_maps;  // one map per external data file
  std::shared_ptr<MappedFile> model_map;  // open(): raw_data views point into the mapped model file
};
}  // namespace onnx_detail

struct OnnxModel::Impl : onnx_detail::ModelData {};

namespace {

using Impl = onnx_detail::ModelData;

uint64_t parse_decimal(const std::string& s, const std::string& path, const std::string& tensor, const char* key) {
  uint64_t v = 0;
  if (s.empty() || s.size() > 20) fail("{}: initializer {}: external data {} \"{}\" is not a number", path, tensor, key, s);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size())
    fail("{}: initializer {}: external data {} \"{}\" is not a non-negative integer", path, tensor, key, s);
  return v;
}

// A data-file location must stay inside the model's directory: relative, no "..", no root.
std::filesystem::path safe_location(const std::string& loc, const std::string& path, const std::string& tensor) {
  namespace fs = std::filesystem;
  if (loc.empty()) fail("{}: initializer {}: external data has an empty location", path, tensor);
  if (loc.find('\0') != std::string::npos)
    fail("{}: initializer {}: external data location contains a NUL byte", path, tensor);
  fs::path p(loc);
  if (p.is_absolute() || p.has_root_directory() || p.has_root_name() || loc[0] == '/' || loc[0] == '\\')
    fail("{}: initializer {}: external data location \"{}\" is absolute; it must be relative to the model's "
         "directory", path, tensor, loc);
  for (const auto& part : p) {
    if (part == "..")
      fail("{}: initializer {}: external data location \"{}\" escapes the model's directory", path, tensor, loc);
  }
  p = p.lexically_normal();
  if (p.empty() || p == "." || p.filename().empty())
    fail("{}: initializer {}: external data location \"{}\" does not name a file", path, tensor, loc);
  return p;
}

template <typename Dst, typename Field, typename Check>
void fill_typed(std::vector<uint8_t>& buf, const Field& field, uint64_t n, Check&& check) {
  buf.resize(n * sizeof(Dst));
  for (uint64_t i = 0; i < n; ++i) {
    auto v = field.Get(static_cast<int>(i));
    check(v, i);
    Dst d = static_cast<Dst>(v);
    std::memcpy(buf.data() + i * sizeof(Dst), &d, sizeof(Dst));
  }
}

// Where an initializer's raw_data bytes sit in the serialised model (found by a second, minimal
// wire-format scan), so that open() can hand out views into the mapped file instead of protobuf's copy.
struct RawLoc {
  std::string_view name;
  uint64_t offset = 0, len = 0;
  bool has = false;
};

// Calls cb(field, wire_type, value_ptr, value_len) for each field of one message; len-delimited values
// only carry ptr/len. Returns false on anything unexpected (groups, bad varints, out of bounds).
template <typename Cb>
bool scan_message(const uint8_t* p, const uint8_t* end, Cb&& cb) {
  auto varint = [&](uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) return false;
      uint8_t b = *p++;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  };
  while (p < end) {
    uint64_t tag = 0, v = 0;
    if (!varint(tag) || (tag >> 3) == 0) return false;
    const uint32_t field = static_cast<uint32_t>(tag >> 3);
    switch (tag & 7) {
      case 0: if (!varint(v)) return false; break;
      case 1: if (end - p < 8) return false; p += 8; break;
      case 5: if (end - p < 4) return false; p += 4; break;
      case 2:
        if (!varint(v) || v > static_cast<uint64_t>(end - p)) return false;
        if (!cb(field, p, v)) return false;
        p += v;
        break;
      default: return false;  // groups: give up, fall back to protobuf's copies
    }
  }
  return true;
}

// raw_data locations of the graph initializers, in protobuf's order (repeated `graph` fields merge, so
// their initializers concatenate; a repeated optional field keeps its last value).
std::optional<std::vector<RawLoc>> locate_raw_data(const uint8_t* data, size_t size) {
  std::vector<RawLoc> locs;
  bool ok = scan_message(data, data + size, [&](uint32_t f, const uint8_t* gp, uint64_t gl) {
    if (f != 7) return true;  // ModelProto.graph
    return scan_message(gp, gp + gl, [&](uint32_t gf, const uint8_t* tp, uint64_t tl) {
      if (gf != 5) return true;  // GraphProto.initializer
      RawLoc loc;
      bool tok = scan_message(tp, tp + tl, [&](uint32_t tf, const uint8_t* vp, uint64_t vl) {
        if (tf == 8) loc.name = std::string_view(reinterpret_cast<const char*>(vp), vl);  // name
        if (tf == 9) {                                                                    // raw_data
          loc.offset = static_cast<uint64_t>(vp - data);
          loc.len = vl;
          loc.has = true;
        }
        return true;
      });
      locs.push_back(loc);
      return tok;
    });
  });
  if (!ok) return std::nullopt;
  return locs;
}

void read_initializer(Impl& m, onnx::TensorProto& tp, const OnnxLimits& lim, const RawLoc* loc) {
  const std::string& path = m.path;
  OnnxTensor t;
  t.name = tp.name();
  if (t.name.empty()) fail("{}: an initializer has no name", path);
  t.onnx_dtype = tp.data_type();
  const uint32_t esize = onnx_dtype_size(t.onnx_dtype);
  if (esize == 0 && t.onnx_dtype != onnx_dtype::STRING)
    fail("{}: initializer {}: unsupported data_type {}", path, t.name, t.onnx_dtype);
  if (static_cast<uint32_t>(tp.dims_size()) > lim.max_rank)
    fail("{}: initializer {}: rank {} exceeds the limit {}", path, t.name, tp.dims_size(), lim.max_rank);
  uint64_t n = 1;
  for (int i = 0; i < tp.dims_size(); ++i) {
    int64_t d = tp.dims(i);
    if (d < 0) fail("{}: initializer {}: negative dimension {}", path, t.name, d);
    t.dims.push_back(static_cast<uint64_t>(d));
    if (mul_ovf(n, static_cast<uint64_t>(d), &n))
      fail("{}: initializer {}: element count overflows (dims too large)", path, t.name);
  }
  uint64_t nbytes = 0;
  if (mul_ovf(n, esize, &nbytes) || nbytes > (uint64_t{1} << 62))
    fail("{}: initializer {}: byte size overflows (dims too large)", path, t.name);
  if (tp.has_segment()) fail("{}: initializer {}: segmented tensors are not supported", path, t.name);

  const bool has_typed = tp.float_data_size() || tp.int32_data_size() || tp.int64_data_size() ||
                         tp.double_data_size() || tp.uint64_data_size() || tp.string_data_size();
  if (tp.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) {
    if (tp.has_raw_data() || has_typed)
      fail("{}: initializer {}: external data location but inline data present", path, t.name);
    if (t.onnx_dtype == onnx_dtype::STRING)
      fail("{}: initializer {}: STRING tensors cannot use external data", path, t.name);
    std::optional<std::string> loc, off, len;
    for (const auto& kv : tp.external_data()) {
      std::optional<std::string>* slot = nullptr;
      if (kv.key() == "location") slot = &loc;
      else if (kv.key() == "offset") slot = &off;
      else if (kv.key() == "length") slot = &len;
      if (!slot) continue;  // "checksum" and unknown keys are ignored
      if (slot->has_value()) fail("{}: initializer {}: external data key \"{}\" repeated", path, t.name, kv.key());
      *slot = kv.value();
    }
    if (!loc) fail("{}: initializer {}: external data without a location", path, t.name);
    if (m.base_dir.empty())
      fail("{}: initializer {}: external data \"{}\" cannot be resolved for an in-memory model", path, t.name, *loc);
    auto rel = safe_location(*loc, path, t.name);
    std::string full = (std::filesystem::path(m.base_dir) / rel).lexically_normal().string();
    uint64_t offset = off ? parse_decimal(*off, path, t.name, "offset") : 0;
    uint64_t length = len ? parse_decimal(*len, path, t.name, "length") : nbytes;
    if (length != nbytes)
      fail("{}: initializer {}: external data length {} does not match dims {} x {} bytes = {}", path, t.name,
           length, fmt::join(t.dims, "x"), esize, nbytes);
    auto& mp = m.ext_maps[full];
    if (!mp) {
      try {
        mp = std::make_shared<MappedFile>(full);
      } catch (const Error& e) {
        m.ext_maps.erase(full);
        fail("{}: initializer {}: external data: {}", path, t.name, e.what());
      }
    }
    uint64_t end = 0;
    if (add_ovf(offset, length, &end) || end > mp->size())
      fail("{}: initializer {}: external data [{}, {}+{}) lies outside {} ({} bytes)", path, t.name, offset, offset,
           length, full, mp->size());
    t.data = nbytes ? mp->data() + offset : nullptr;
    t.nbytes = nbytes;
    t.storage = OnnxStorage::External;
    t.file = full;
    t.offset = offset;
  } else if (tp.has_raw_data()) {
    if (has_typed) fail("{}: initializer {}: both raw_data and typed data fields are set", path, t.name);
    if (t.onnx_dtype == onnx_dtype::STRING) fail("{}: initializer {}: STRING tensors cannot use raw_data", path, t.name);
    if (tp.raw_data().size() != nbytes)
      fail("{}: initializer {}: raw_data has {} bytes, dims {} x {} bytes need {}", path, t.name,
           tp.raw_data().size(), fmt::join(t.dims, "x"), esize, nbytes);
    if (loc && m.model_map && loc->has && loc->name == tp.name() && loc->len == nbytes &&
        loc->offset + nbytes <= m.model_map->size()) {
      t.data = nbytes ? m.model_map->data() + loc->offset : nullptr;  // zero-copy view into the mapped model
      t.offset = loc->offset;
    } else {
      m.raw_bufs.push_back(std::move(*tp.mutable_raw_data()));  // keeps protobuf's heap buffer, no second copy
      t.data = reinterpret_cast<const uint8_t*>(m.raw_bufs.back().data());
    }
    t.nbytes = nbytes;
    t.storage = OnnxStorage::Raw;
    t.file = path;
  } else {
    auto count_error = [&](const char* field, int have, uint64_t need) {
      fail("{}: initializer {}: {} has {} values, dims {} need {}", path, t.name, field, have,
           fmt::join(t.dims, "x"), need);
    };
    auto range = [&](int64_t lo, int64_t hi) {
      return [&, lo, hi](auto v, uint64_t i) {
        if (static_cast<int64_t>(v) < lo || static_cast<int64_t>(v) > hi)
          fail("{}: initializer {}: value {} at element {} is out of range for {}", path, t.name,
               static_cast<int64_t>(v), i, onnx_dtype_name(t.onnx_dtype));
      };
    };
    auto any = [](auto, uint64_t) {};
    std::vector<uint8_t> buf;
    if (n == 0 && !has_typed) {
      // empty tensor (or STRING tensor with no values)
    } else {
      switch (t.onnx_dtype) {
        case onnx_dtype::FLOAT:
        case onnx_dtype::COMPLEX64: {
          uint64_t need = t.onnx_dtype == onnx_dtype::FLOAT ? n : 2 * n;
          if (static_cast<uint64_t>(tp.float_data_size()) != need) count_error("float_data", tp.float_data_size(), need);
          fill_typed<float>(buf, tp.float_data(), need, any);
          break;
        }
        case onnx_dtype::DOUBLE:
        case onnx_dtype::COMPLEX128: {
          uint64_t need = t.onnx_dtype == onnx_dtype::DOUBLE ? n : 2 * n;
          if (static_cast<uint64_t>(tp.double_data_size()) != need)
            count_error("double_data", tp.double_data_size(), need);
          fill_typed<double>(buf, tp.double_data(), need, any);
          break;
        }
        case onnx_dtype::INT32:
        case onnx_dtype::INT16:
        case onnx_dtype::INT8:
        case onnx_dtype::UINT16:
        case onnx_dtype::UINT8:
        case onnx_dtype::BOOL:
        case onnx_dtype::FLOAT16:
        case onnx_dtype::BFLOAT16: {
          if (static_cast<uint64_t>(tp.int32_data_size()) != n) count_error("int32_data", tp.int32_data_size(), n);
          const auto& f = tp.int32_data();
          switch (t.onnx_dtype) {
            case onnx_dtype::INT32: fill_typed<int32_t>(buf, f, n, any); break;
            case onnx_dtype::INT16: fill_typed<int16_t>(buf, f, n, range(INT16_MIN, INT16_MAX)); break;
            case onnx_dtype::INT8: fill_typed<int8_t>(buf, f, n, range(INT8_MIN, INT8_MAX)); break;
            case onnx_dtype::UINT8: fill_typed<uint8_t>(buf, f, n, range(0, UINT8_MAX)); break;
            case onnx_dtype::BOOL: fill_typed<uint8_t>(buf, f, n, range(0, 1)); break;
            default: fill_typed<uint16_t>(buf, f, n, range(0, UINT16_MAX)); break;  // u16 and f16/bf16 bits
          }
          break;
        }
        case onnx_dtype::INT64:
          if (static_cast<uint64_t>(tp.int64_data_size()) != n) count_error("int64_data", tp.int64_data_size(), n);
          fill_typed<int64_t>(buf, tp.int64_data(), n, any);
          break;
        case onnx_dtype::UINT32:
        case onnx_dtype::UINT64:
          if (static_cast<uint64_t>(tp.uint64_data_size()) != n) count_error("uint64_data", tp.uint64_data_size(), n);
          if (t.onnx_dtype == onnx_dtype::UINT32) {
            fill_typed<uint32_t>(buf, tp.uint64_data(), n, [&](uint64_t v, uint64_t i) {
              if (v > UINT32_MAX)
                fail("{}: initializer {}: value {} at element {} is out of range for UINT32", path, t.name, v, i);
            });
          } else {
            fill_typed<uint64_t>(buf, tp.uint64_data(), n, any);
          }
          break;
        case onnx_dtype::STRING:
          if (static_cast<uint64_t>(tp.string_data_size()) != n) count_error("string_data", tp.string_data_size(), n);
          break;  // string contents are not exposed
        default: break;
      }
    }
    if (t.onnx_dtype != onnx_dtype::STRING) {
      if (buf.size() != nbytes)
        fail("{}: initializer {}: has no data (dims {} need {} bytes)", path, t.name, fmt::join(t.dims, "x"), nbytes);
      m.typed_bufs.push_back(std::move(buf));
      t.data = nbytes ? m.typed_bufs.back().data() : nullptr;
      t.nbytes = nbytes;
      t.storage = OnnxStorage::Typed;
      t.file = path;
    }
  }
  if (!m.index.emplace(t.name, m.inits.size()).second) fail("{}: initializer {} is defined twice", path, t.name);
  m.inits.push_back(std::move(t));
}

void parse_impl(Impl& mref, const uint8_t* data, size_t size, const std::string& name,
                const std::string& base_dir, const OnnxLimits& lim) {
  if (size > lim.max_model_bytes || size > static_cast<size_t>(INT_MAX))
    fail("{}: model is {} bytes, more than protobuf can parse ({}); store the weights as external data", name,
         size, std::min<uint64_t>(lim.max_model_bytes, INT_MAX));
  auto proto = std::make_unique<onnx::ModelProto>();
  {
    google::protobuf::io::CodedInputStream cis(data, static_cast<int>(size));
    cis.SetTotalBytesLimit(static_cast<int>(size));
    cis.SetRecursionLimit(lim.recursion_limit);
    if (!proto->ParseFromCodedStream(&cis) || !cis.ConsumedEntireMessage())
      fail("{}: not a valid ONNX model (protobuf parse failed: truncated or corrupt)", name);
  }
  Impl* m = &mref;
  m->path = name;
  m->base_dir = base_dir;
  m->ir_version = proto->ir_version();
  m->producer = proto->producer_name();
  if (!proto->has_graph()) fail("{}: not an ONNX model: no graph", name);
  if (proto->opset_import_size() == 0) fail("{}: not an ONNX model: no opset_import", name);
  if (m->ir_version < 3 || m->ir_version > 100) fail("{}: unsupported ONNX ir_version {}", name, m->ir_version);
  for (const auto& op : proto->opset_import())
    if (op.domain().empty() || op.domain() == "ai.onnx") m->opset = op.version();

  auto* g = proto->mutable_graph();
  std::optional<std::vector<RawLoc>> locs;
  if (m->model_map && m->model_map->data() == data) {
    locs = locate_raw_data(data, size);
    if (locs && locs->size() != static_cast<size_t>(g->initializer_size())) locs.reset();
  }
  for (int i = 0; i < g->initializer_size(); ++i)
    read_initializer(*m, *g->mutable_initializer(i), lim, locs ? &(*locs)[static_cast<size_t>(i)] : nullptr);
  if (g->sparse_initializer_size() > 0) fail("{}: sparse initializers are not supported", name);
  for (const auto& vi : g->input()) m->graph_inputs.push_back(vi.name());
  for (const auto& vi : g->output()) m->graph_outputs.push_back(vi.name());
  std::unordered_map<std::string_view, size_t> produced;
  m->nodes.reserve(static_cast<size_t>(g->node_size()));
  for (const auto& np : g->node()) {
    Node nd;
    nd.name = np.name();
    nd.op = np.op_type();
    nd.domain = np.domain();
    nd.in.assign(np.input().begin(), np.input().end());
    nd.out.assign(np.output().begin(), np.output().end());
    for (const auto& a : np.attribute()) {
      if (a.name() == "transA") nd.trans_a = a.i();
      else if (a.name() == "transB") nd.trans_b = a.i();
      else if (a.name() == "perm") {
        nd.has_perm = true;
        nd.perm.assign(a.ints().begin(), a.ints().end());
      }
    }
    m->nodes.push_back(std::move(nd));
  }
  for (size_t i = 0; i < m->nodes.size(); ++i) {
    for (const auto& o : m->nodes[i].out) {
      if (o.empty()) continue;
      if (m->index.count(o)) fail("{}: node {} output {} redefines an initializer", name, m->nodes[i].name, o);
      if (!produced.emplace(o, i).second) fail("{}: value {} is produced by two nodes", name, o);
    }
  }
}

}  // namespace

OnnxModel OnnxModel::parse(const uint8_t* data, size_t size, const std::string& name, const std::string& base_dir,
                           const OnnxLimits& limits) {
  auto impl = std::make_shared<Impl>();
  parse_impl(*impl, data, size, name, base_dir, limits);
  OnnxModel r;
  r.impl_ = std::move(impl);
  return r;
}

OnnxModel OnnxModel::open(const std::string& path, const OnnxLimits& limits) {
  auto impl = std::make_shared<Impl>();
  impl->model_map = std::make_shared<MappedFile>(path);
  auto dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  parse_impl(*impl, impl->model_map->data(), impl->model_map->size(), path, dir.string(), limits);
  // External-data ranges may coincide (a tied weight stored once) but never partly overlap: a moved offset
  // would otherwise read another tensor's bytes shifted (garbage that converts "fine").
  std::vector<const OnnxTensor*> ext;
  for (const auto& t : impl->inits)
    if (t.storage == OnnxStorage::External && t.nbytes > 0) ext.push_back(&t);
  std::sort(ext.begin(), ext.end(), [](const OnnxTensor* a, const OnnxTensor* b) {
    return a->file != b->file ? a->file < b->file : a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;
  });
  for (size_t i = 1; i < ext.size(); ++i) {
    const OnnxTensor& a = *ext[i - 1];
    const OnnxTensor& b = *ext[i];
    if (a.file == b.file && a.offset + a.nbytes > b.offset && !(a.offset == b.offset && a.nbytes == b.nbytes))
      fail("{}: initializers {} [{}, +{}) and {} [{}, +{}) overlap in {}: an external-data offset is wrong", path, a.name,
           a.offset, a.nbytes, b.name, b.offset, b.nbytes, b.file);
  }
  if (std::none_of(impl->inits.begin(), impl->inits.end(), [&](const OnnxTensor& t) {
        const uint8_t* b = impl->model_map->data();
        return t.storage == OnnxStorage::Raw && t.data && t.data >= b && t.data < b + impl->model_map->size();
      }))
    impl->model_map.reset();  // nothing points into the model file: unmap it
  OnnxModel r;
  r.impl_ = std::move(impl);
  return r;
}

const std::string& OnnxModel::path() const { return impl_->path; }
int64_t OnnxModel::ir_version() const { return impl_->ir_version; }
int64_t OnnxModel::opset_version() const { return impl_->opset; }
const std::string& OnnxModel::producer_name() const { return impl_->producer; }
size_t OnnxModel::n_nodes() const { return impl_->nodes.size(); }
const std::vector<OnnxTensor>& OnnxModel::initializers() const { return impl_->inits; }

const std::vector<OnnxNode>& OnnxModel::nodes() const { return impl_->nodes; }

const OnnxTensor* OnnxModel::find(std::string_view name) const {
  auto it = impl_->index.find(std::string(name));
  return it == impl_->index.end() ? nullptr : &impl_->inits[it->second];
}

// ---------------------------------------------------------------------------------------------
// f32 conversion

void onnx_to_f32(int32_t dtype, const uint8_t* src, float* dst, uint64_t n) {
  switch (dtype) {
    case onnx_dtype::FLOAT: std::memcpy(dst, src, n * 4); return;
    case onnx_dtype::FLOAT16:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case onnx_dtype::BFLOAT16:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case onnx_dtype::DOUBLE:
      for (uint64_t i = 0; i < n; ++i) {
        double x;
        std::memcpy(&x, src + 8 * i, 8);
        dst[i] = static_cast<float>(x);
      }
      return;
    default: break;
  }
}

void OnnxModel::tensor_to_f32(const OnnxTensor& t, float* dst) const {
  if (!onnx_dtype_is_float(t.onnx_dtype))
    fail("{}: initializer {}: data_type {} cannot be converted to f32", t.file.empty() ? impl_->path : t.file, t.name,
         onnx_dtype_name(t.onnx_dtype));
  const uint64_t n = t.n_elements();
  if (t.nbytes != n * onnx_dtype_size(t.onnx_dtype)) fail("{}: initializer {}: size mismatch", impl_->path, t.name);
  if (n) onnx_to_f32(t.onnx_dtype, t.data, dst, n);
}

}  // namespace edgeq
