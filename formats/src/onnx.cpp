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

#include "edgeq/formats/error.h"
#include "edgeq/formats/half.h"
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

OnnxLlamaShape OnnxLlamaShape::from_config_json(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot open", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  if (!j.is_object()) fail("{}: expected a JSON object", path);
  auto get = [&](const char* key, bool required, uint64_t dflt) -> uint64_t {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      if (required) fail("{}: missing key \"{}\"", path, key);
      return dflt;
    }
    if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > (int64_t{1} << 31))
      fail("{}: key \"{}\" must be a positive integer", path, key);
    return it->get<uint64_t>();
  };
  OnnxLlamaShape s;
  s.hidden_size = get("hidden_size", true, 0);
  s.intermediate_size = get("intermediate_size", true, 0);
  s.n_layers = get("num_hidden_layers", true, 0);
  s.n_heads = get("num_attention_heads", true, 0);
  s.n_kv_heads = get("num_key_value_heads", false, s.n_heads);
  s.head_dim = get("head_dim", false, s.hidden_size / s.n_heads);
  s.vocab_size = get("vocab_size", true, 0);
  auto it = j.find("tie_word_embeddings");
  if (it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) fail("{}: key \"tie_word_embeddings\" must be a boolean", path);
    s.tie_word_embeddings = it->get<bool>();
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Parsed model

namespace {

struct Node {
  std::string name, op, domain;
  std::vector<std::string> in, out;
  int64_t trans_a = 0, trans_b = 0;
  bool has_perm = false;
  std::vector<int64_t> perm;
};

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

const OnnxTensor* OnnxModel::find(std::string_view name) const {
  auto it = impl_->index.find(std::string(name));
  return it == impl_->index.end() ? nullptr : &impl_->inits[it->second];
}

// ---------------------------------------------------------------------------------------------
// f32 conversion

namespace {

void convert_f32(int32_t dtype, const uint8_t* src, float* dst, uint64_t n) {
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

}  // namespace

void OnnxModel::tensor_to_f32(const OnnxTensor& t, float* dst) const {
  if (!onnx_dtype_is_float(t.onnx_dtype))
    fail("{}: initializer {}: data_type {} cannot be converted to f32", t.file.empty() ? impl_->path : t.file, t.name,
         onnx_dtype_name(t.onnx_dtype));
  const uint64_t n = t.n_elements();
  if (t.nbytes != n * onnx_dtype_size(t.onnx_dtype)) fail("{}: initializer {}: size mismatch", impl_->path, t.name);
  if (n) convert_f32(t.onnx_dtype, t.data, dst, n);
}

void OnnxModel::load_f32(const OnnxWeight& w, float* dst) const {
  const OnnxTensor* t = find(w.onnx_name);
  if (!t) fail("{}: no initializer {} (for {})", impl_->path, w.onnx_name, w.hf_name);
  const std::string& file = t->file.empty() ? impl_->path : t->file;
  if (!onnx_dtype_is_float(t->onnx_dtype))
    fail("{}: initializer {} ({}): data_type {} cannot be converted to f32", file, t->name, w.hf_name,
         onnx_dtype_name(t->onnx_dtype));
  uint64_t n = 1;
  for (auto d : w.hf_shape) n *= d;
  if (n != t->n_elements())
    fail("{}: initializer {} ({}): {} elements, HF shape needs {}", file, t->name, w.hf_name, t->n_elements(), n);
  const uint32_t es = onnx_dtype_size(t->onnx_dtype);
  if (!w.transposed) {
    tensor_to_f32(*t, dst);
  } else {
    if (w.hf_shape.size() != 2 || t->dims.size() != 2 || t->dims[0] != w.hf_shape[1] || t->dims[1] != w.hf_shape[0])
      fail("{}: initializer {} ({}): stored dims [{}] are not the transpose of [{}]", file, t->name, w.hf_name,
           fmt::join(t->dims, ", "), fmt::join(w.hf_shape, ", "));
    // Stored [in, out]; HF wants [out, in]: dst[o * in + i] = src[i * out + o]. Blocked through a tile.
    const uint64_t rows_in = t->dims[0], cols_out = t->dims[1];
    constexpr uint64_t B = 64;
    float tile[B][B];
    for (uint64_t i0 = 0; i0 < rows_in; i0 += B) {
      const uint64_t bi = std::min(B, rows_in - i0);
      for (uint64_t o0 = 0; o0 < cols_out; o0 += B) {
        const uint64_t bo = std::min(B, cols_out - o0);
        for (uint64_t i = 0; i < bi; ++i)
          convert_f32(t->onnx_dtype, t->data + ((i0 + i) * cols_out + o0) * es, tile[i], bo);
        for (uint64_t o = 0; o < bo; ++o) {
          float* d = dst + (o0 + o) * rows_in + i0;
          for (uint64_t i = 0; i < bi; ++i) d[i] = tile[i][o];
        }
      }
    }
  }
  for (uint64_t i = 0; i < n; ++i) {
    if (!std::isfinite(dst[i]))
      fail("{}: initializer {} ({}): non-finite value {} at element {}", file, t->name, w.hf_name, dst[i], i);
  }
}

// ---------------------------------------------------------------------------------------------
// Role recovery

namespace {

struct WeightRef {
  const OnnxTensor* t = nullptr;
  bool flipped = false;  // a Transpose node sits between the initializer and its use
};

struct WeightMM {
  int node = -1;
  const OnnxTensor* t = nullptr;
  bool transposed = false;  // stored [in, out]
  uint64_t in = 0, out = 0;
};

enum class Role { None, Q, K, V, O, Gate, Up, Down, LmHead };

class Graph {
 public:
  explicit Graph(const Impl& m) : m_(m) {
    const size_t n = m.nodes.size();
    // Budget for all searches together: plenty for real graphs, bounded for hostile ones.
    budget_ = 64 * static_cast<uint64_t>(n) + 100000;
    producer_.reserve(n);
    for (size_t i = 0; i < n; ++i)
      for (const auto& o : m.nodes[i].out)
        if (!o.empty()) producer_[o] = static_cast<int>(i);
    for (size_t i = 0; i < n; ++i) {
      const auto& in = m.nodes[i].in;
      for (size_t s = 0; s < in.size(); ++s)
        if (!in[s].empty()) consumers_[in[s]].push_back({static_cast<int>(i), static_cast<int>(s)});
    }
    // Topological order (Kahn); a cycle is an error.
    std::vector<int> indeg(n, 0);
    for (size_t i = 0; i < n; ++i)
      for (const auto& v : m.nodes[i].in)
        if (!v.empty() && producer_.count(v)) ++indeg[i];
    std::vector<int> queue;
    for (size_t i = 0; i < n; ++i)
      if (indeg[i] == 0) queue.push_back(static_cast<int>(i));
    topo_.assign(n, -1);
    int pos = 0;
    for (size_t qi = 0; qi < queue.size(); ++qi) {
      int u = queue[qi];
      topo_[u] = pos++;
      for (const auto& o : m.nodes[u].out) {
        auto it = consumers_.find(o);
        if (o.empty() || it == consumers_.end()) continue;
        for (auto [c, s] : it->second)
          if (--indeg[c] == 0) queue.push_back(c);
      }
    }
    if (static_cast<size_t>(pos) != n) fail("{}: the graph has a cycle", m.path);
    // Weight matmuls.
    for (size_t i = 0; i < n; ++i) {
      const Node& nd = m.nodes[i];
      if (!nd.domain.empty() && nd.domain != "ai.onnx") continue;
      const bool mm = nd.op == "MatMul" && nd.in.size() == 2;
      const bool gemm = nd.op == "Gemm" && nd.in.size() >= 2 && nd.trans_a == 0;
      if (!mm && !gemm) continue;
      WeightRef a = resolve(nd.in[0]);
      WeightRef w = resolve(nd.in[1]);
      if (a.t) continue;  // a constant on the left: not a linear layer on activations
      if (!w.t) {
        if (mm) act_mm_.insert(static_cast<int>(i));
        continue;
      }
      if (w.t->dims.size() != 2 || !onnx_dtype_is_float(w.t->onnx_dtype)) continue;
      WeightMM wm;
      wm.node = static_cast<int>(i);
      wm.t = w.t;
      // MatMul: y = x W with W [in, out]: stored transposed relative to HF's [out, in]; Gemm transB=1 is not.
      wm.transposed = (gemm && nd.trans_b) ? w.flipped : !w.flipped;
      wm.in = wm.transposed ? w.t->dims[0] : w.t->dims[1];
      wm.out = wm.transposed ? w.t->dims[1] : w.t->dims[0];
      wmm_index_[static_cast<int>(i)] = weight_mms_.size();
      weight_mms_.push_back(wm);
    }
  }

  const Impl& m() const { return m_; }
  const Node& node(int i) const { return m_.nodes[static_cast<size_t>(i)]; }
  int topo(int i) const { return topo_[static_cast<size_t>(i)]; }
  const std::vector<WeightMM>& weight_mms() const { return weight_mms_; }
  const WeightMM* weight_mm(int node) const {
    auto it = wmm_index_.find(node);
    return it == wmm_index_.end() ? nullptr : &weight_mms_[it->second];
  }
  bool is_act_mm(int node) const { return act_mm_.count(node) > 0; }

  const OnnxTensor* init(const std::string& v) const {
    auto it = m_.index.find(v);
    return it == m_.index.end() ? nullptr : &m_.inits[it->second];
  }
  int producer(const std::string& v) const {
    auto it = producer_.find(v);
    return it == producer_.end() ? -1 : it->second;
  }
  const std::vector<std::pair<int, int>>& consumers(const std::string& v) const {
    static const std::vector<std::pair<int, int>> none;
    auto it = consumers_.find(v);
    return it == consumers_.end() ? none : it->second;
  }

  // Follows Cast/Identity/2-D Transpose back to an initializer.
  WeightRef resolve(const std::string& v) const {
    WeightRef r;
    std::string cur = v;
    for (int step = 0; step < 8; ++step) {
      if (const OnnxTensor* t = init(cur)) {
        r.t = t;
        return r;
      }
      int p = producer(cur);
      if (p < 0) return {};
      const Node& nd = node(p);
      if (nd.in.empty()) return {};
      if (nd.op == "Cast" || nd.op == "Identity") {
        cur = nd.in[0];
      } else if (nd.op == "Transpose" && (!nd.has_perm || nd.perm == std::vector<int64_t>{1, 0})) {
        r.flipped = !r.flipped;
        cur = nd.in[0];
      } else {
        return {};
      }
    }
    return {};
  }

  void spend() {
    if (budget_ == 0) fail("{}: graph too large or too irregular for role recovery", m_.path);
    --budget_;
  }

  struct Reach {
    std::vector<std::pair<int, int>> weight;  // (node, slot) of weight matmuls reached
    std::vector<std::pair<int, int>> act;     // (node, slot) of activation matmuls reached
    std::set<std::string> ops;                // op types passed through
    std::vector<int> adds;                    // Add nodes passed through
  };

  // Forward data-flow search from value v. pass_only: follow shape-only ops (Cast, Reshape, ...) only.
  // Stops at matmuls. Shape/Size consumers carry no values and are not followed.
  Reach forward(const std::string& v, bool pass_only) {
    static const std::set<std::string> pass = {"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"};
    Reach r;
    std::set<int> seen;
    std::set<std::pair<int, int>> hit;
    std::vector<std::string> todo{v};
    while (!todo.empty()) {
      std::string cur = std::move(todo.back());
      todo.pop_back();
      for (auto [c, s] : consumers(cur)) {
        spend();
        const Node& nd = node(c);
        if (weight_mm(c) || is_act_mm(c)) {
          if (!hit.insert({c, s}).second) continue;
          if (weight_mm(c)) {
            if (s == 0) r.weight.push_back({c, s});
          } else {
            r.act.push_back({c, s});
          }
          continue;
        }
        if (nd.op == "Shape" || nd.op == "Size") continue;
        if (nd.op == "Add") r.adds.push_back(c);
        if (pass_only && (!pass.count(nd.op) || s != 0)) continue;
        if (!seen.insert(c).second) continue;
        r.ops.insert(nd.op);
        for (const auto& o : nd.out)
          if (!o.empty()) todo.push_back(o);
      }
    }
    return r;
  }

  // Whether node `to` is downstream of node `from` (data flow, ignoring Shape/Size).
  bool reaches(int from, int to) {
    const int limit = topo(to);
    std::set<int> seen{from};
    std::vector<int> todo{from};
    while (!todo.empty()) {
      int u = todo.back();
      todo.pop_back();
      for (const auto& o : node(u).out) {
        if (o.empty()) continue;
        for (auto [c, s] : consumers(o)) {
          spend();
          if (c == to) return true;
          if (topo(c) > limit || node(c).op == "Shape" || node(c).op == "Size") continue;
          if (seen.insert(c).second) todo.push_back(c);
        }
      }
    }
    return false;
  }

 private:
  const Impl& m_;
  uint64_t budget_ = 0;
  std::unordered_map<std::string, int> producer_;
  std::unordered_map<std::string, std::vector<std::pair<int, int>>> consumers_;
  std::vector<int> topo_;
  std::vector<WeightMM> weight_mms_;
  std::unordered_map<int, size_t> wmm_index_;
  std::set<int> act_mm_;
};

struct NormInfo {
  int node = -1;
  const OnnxTensor* t = nullptr;
  std::vector<int> feeds;  // weight matmul nodes fed (through shape-only ops)
};

const char* role_proj(Role r) {
  switch (r) {
    case Role::Q: return "self_attn.q_proj";
    case Role::K: return "self_attn.k_proj";
    case Role::V: return "self_attn.v_proj";
    case Role::O: return "self_attn.o_proj";
    case Role::Gate: return "mlp.gate_proj";
    case Role::Up: return "mlp.up_proj";
    case Role::Down: return "mlp.down_proj";
    default: return "lm_head";
  }
}

// Names that look like HF checkpoint names (an exporter that kept the module's parameter name).
bool looks_like_hf_name(std::string_view n) {
  const bool suffix = n.ends_with(".weight") || n.ends_with(".bias");
  return suffix && (n.starts_with("model.embed_tokens.") || n.starts_with("model.norm.") ||
                    n.starts_with("model.layers.") || n.starts_with("lm_head."));
}

// "layers.N/self_attn/q_proj/" (torch module path) anywhere in a node name -> "model.layers.N.self_attn.q_proj".
// Hand-written rather than std::regex: node names are untrusted and may be huge.
std::optional<std::string> hf_from_node_name(std::string_view n) {
  static const char* const projs[] = {"self_attn/q_proj/", "self_attn/k_proj/", "self_attn/v_proj/",
                                      "self_attn/o_proj/", "mlp/gate_proj/",    "mlp/up_proj/",
                                      "mlp/down_proj/"};
  for (size_t pos = n.find("layers."); pos != std::string_view::npos; pos = n.find("layers.", pos + 1)) {
    size_t p = pos + 7;
    uint64_t layer = 0;
    size_t digits = 0;
    while (p < n.size() && n[p] >= '0' && n[p] <= '9' && digits < 9) {
      layer = layer * 10 + static_cast<uint64_t>(n[p++] - '0');
      ++digits;
    }
    if (digits == 0 || p >= n.size() || n[p] != '/') continue;
    std::string_view rest = n.substr(p + 1);
    for (const char* pr : projs) {
      std::string_view sv(pr);
      if (rest.starts_with(sv)) {
        std::string dotted(sv.substr(0, sv.size() - 1));
        std::replace(dotted.begin(), dotted.end(), '/', '.');
        return fmt::format("model.layers.{}.{}", layer, dotted);
      }
    }
  }
  return std::nullopt;
}

std::string role_name(Role r, int layer) {
  if (r == Role::LmHead) return "lm_head";
  return fmt::format("model.layers.{}.{}", layer, role_proj(r));
}

}  // namespace

std::vector<OnnxWeight> OnnxModel::recover_hf_weights(const OnnxLlamaShape& cfg_in) const {
  const onnx_detail::ModelData& m = *impl_;
  const std::string& path = m.path;
  OnnxLlamaShape cfg = cfg_in;
  if (cfg.n_kv_heads == 0) cfg.n_kv_heads = cfg.n_heads;
  if (cfg.head_dim == 0 && cfg.n_heads) cfg.head_dim = cfg.hidden_size / cfg.n_heads;
  const uint64_t kLim = uint64_t{1} << 31;
  for (uint64_t v : {cfg.hidden_size, cfg.intermediate_size, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
                     cfg.head_dim, cfg.vocab_size})
    if (v == 0 || v > kLim)
      fail("{}: role recovery needs positive hidden/intermediate/layers/heads/kv heads/head_dim/vocab sizes "
           "(got {}/{}/{}/{}/{}/{}/{})", path, cfg.hidden_size, cfg.intermediate_size, cfg.n_layers, cfg.n_heads,
           cfg.n_kv_heads, cfg.head_dim, cfg.vocab_size);
  if (cfg.n_layers > 100000) fail("{}: {} layers is not plausible", path, cfg.n_layers);
  const uint64_t q_out = cfg.n_heads * cfg.head_dim, kv_out = cfg.n_kv_heads * cfg.head_dim;

  Graph g(m);

  // Embedding: Gather from a [vocab, hidden] float initializer.
  const OnnxTensor* embed = nullptr;
  for (size_t i = 0; i < m.nodes.size(); ++i) {
    const Node& nd = m.nodes[i];
    if (nd.op != "Gather" || nd.in.size() != 2) continue;
    WeightRef w = g.resolve(nd.in[0]);
    if (!w.t || w.flipped || w.t->dims.size() != 2 || !onnx_dtype_is_float(w.t->onnx_dtype)) continue;
    if (w.t->dims[0] != cfg.vocab_size || w.t->dims[1] != cfg.hidden_size) continue;
    if (embed && embed != w.t)
      fail("{}: ambiguous token embedding: both {} and {} are gathered as [{}, {}] tables", path, embed->name,
           w.t->name, cfg.vocab_size, cfg.hidden_size);
    embed = w.t;
  }
  if (!embed)
    fail("{}: no token embedding found (a Gather from a [{}, {}] float initializer)", path, cfg.vocab_size,
         cfg.hidden_size);

  // Norm candidates: Mul by a [hidden] float initializer (RMSNorm's weight), or a *Normalization op's scale,
  // whose output feeds weight matmuls through shape-only ops.
  std::vector<NormInfo> norms;
  for (size_t i = 0; i < m.nodes.size(); ++i) {
    const Node& nd = m.nodes[i];
    const OnnxTensor* w = nullptr;
    auto is_norm_w = [&](const std::string& v) -> const OnnxTensor* {
      WeightRef r = g.resolve(v);
      if (r.t && r.t->dims.size() == 1 && r.t->dims[0] == cfg.hidden_size && onnx_dtype_is_float(r.t->onnx_dtype))
        return r.t;
      return nullptr;
    };
    if (nd.op == "Mul" && nd.in.size() == 2) {
      const OnnxTensor* a = is_norm_w(nd.in[0]);
      const OnnxTensor* b = is_norm_w(nd.in[1]);
      if (a && b) continue;
      w = a ? a : b;
      if (w && g.resolve(a ? nd.in[1] : nd.in[0]).t) continue;
    } else if ((nd.op == "SimplifiedLayerNormalization" || nd.op == "RMSNormalization" ||
                nd.op == "SkipSimplifiedLayerNormalization") &&
               nd.in.size() >= 2) {
      const bool skip = nd.op == "SkipSimplifiedLayerNormalization";
      if (skip && nd.in.size() < 3) continue;
      w = is_norm_w(skip ? nd.in[2] : nd.in[1]);
    }
    if (!w || nd.out.empty() || nd.out[0].empty()) continue;
    NormInfo ni;
    ni.node = static_cast<int>(i);
    ni.t = w;
    auto r = g.forward(nd.out[0], true);
    for (auto [c, s] : r.weight) ni.feeds.push_back(c);
    if (ni.feeds.empty()) continue;
    norms.push_back(std::move(ni));
  }
  std::sort(norms.begin(), norms.end(), [&](const NormInfo& a, const NormInfo& b) { return g.topo(a.node) < g.topo(b.node); });

  const size_t L = static_cast<size_t>(cfg.n_layers);
  if (norms.size() != 2 * L + 1)
    fail("{}: expected {} RMSNorm weights feeding projections ({} layers x 2 + final), found {}", path, 2 * L + 1, L,
         norms.size());
  // The norms must form one chain along the residual stream.
  for (size_t i = 0; i + 1 < norms.size(); ++i)
    if (!g.reaches(norms[i].node, norms[i + 1].node))
      fail("{}: norm {} (node {}) does not lead to norm {} (node {}) along the residual stream", path,
           norms[i].t->name, g.node(norms[i].node).name, norms[i + 1].t->name, g.node(norms[i + 1].node).name);

  std::vector<OnnxWeight> out;
  std::map<const OnnxTensor*, std::string> used;  // initializer -> HF name
  auto add = [&](const std::string& hf, const OnnxTensor* t, bool transposed, std::vector<uint64_t> expect) {
    std::vector<uint64_t> hf_shape = t->dims;
    if (transposed) std::reverse(hf_shape.begin(), hf_shape.end());
    if (hf_shape != expect)
      fail("{}: {} (initializer {}): HF shape [{}], the config implies [{}]", path, hf, t->name,
           fmt::join(hf_shape, ", "), fmt::join(expect, ", "));
    auto [it, fresh] = used.emplace(t, hf);
    if (!fresh && !(hf == "lm_head.weight" && it->second == "model.embed_tokens.weight"))
      fail("{}: initializer {} is used both as {} and as {}", path, t->name, it->second, hf);
    // An initializer already carrying an HF-style name must carry this one.
    if (fresh && t->name != hf && looks_like_hf_name(t->name))
      fail("{}: initializer {} is named like an HF weight, but the graph structure makes it {}", path, t->name, hf);
    OnnxWeight w;
    w.hf_name = hf;
    w.onnx_name = t->name;
    w.hf_shape = std::move(hf_shape);
    w.transposed = transposed;
    w.onnx_dtype = t->onnx_dtype;
    out.push_back(std::move(w));
  };
  // Node names exported from module paths ("/model/layers.3/self_attn/q_proj/MatMul") must agree.
  std::set<int> assigned;
  auto add_proj = [&](int node, Role role, int layer, std::vector<uint64_t> expect) {
    const WeightMM* wm = g.weight_mm(node);
    const std::string base = role_name(role, layer);
    const std::string& nn = g.node(node).name;
    if (auto named_opt = hf_from_node_name(nn)) {
      const std::string& named = *named_opt;
      if (named != base)
        fail("{}: node {} is named as {}, but the graph structure makes its weight {}", path, nn, named, base);
    } else if (nn.find("lm_head") != std::string::npos && role != Role::LmHead) {
      fail("{}: node {} is named as lm_head, but the graph structure makes its weight {}", path, nn, base);
    }
    if (!assigned.insert(node).second) fail("{}: matmul {} gets two roles", path, nn);
    add(base + ".weight", wm->t, wm->transposed, std::move(expect));
    // Optional bias: the projection's only consumer is an Add with a [out] initializer (or Gemm's C input).
    const Node& nd = g.node(node);
    const OnnxTensor* bias = nullptr;
    if (nd.op == "Gemm" && nd.in.size() >= 3 && !nd.in[2].empty()) {
      bias = g.resolve(nd.in[2]).t;
    } else if (!nd.out.empty() && g.consumers(nd.out[0]).size() == 1) {
      const Node& c = g.node(g.consumers(nd.out[0])[0].first);
      if (c.op == "Add" && c.in.size() == 2) bias = g.resolve(c.in[0] == nd.out[0] ? c.in[1] : c.in[0]).t;
    }
    if (bias) add(base + ".bias", bias, false, {wm->out});
  };
  auto describe = [&](int node) {
    const WeightMM* wm = g.weight_mm(node);
    return fmt::format("{} (initializer {})", g.node(node).name, wm ? wm->t->name : "?");
  };
  // Output of a projection after an optional bias Add.
  auto proj_out = [&](int node) { return g.node(node).out.empty() ? std::string() : g.node(node).out[0]; };

  add("model.embed_tokens.weight", embed, false, {cfg.vocab_size, cfg.hidden_size});
  for (size_t l = 0; l < L; ++l) {
    const int li = static_cast<int>(l);
    const NormInfo& an = norms[2 * l];
    const NormInfo& fn = norms[2 * l + 1];
    // --- attention
    if (an.feeds.size() != 3)
      fail("{}: layer {}: input_layernorm {} feeds {} projections, expected 3 (q, k, v){}", path, l, an.t->name,
           an.feeds.size(), an.feeds.size() == 1 ? " (fused QKV is not supported)" : "");
    add(fmt::format("model.layers.{}.input_layernorm.weight", l), an.t, false, {cfg.hidden_size});
    struct P {
      int node;
      Graph::Reach r;
    };
    std::vector<P> ps;
    for (int n : an.feeds) ps.push_back({n, g.forward(proj_out(n), false)});
    // q and k meet in the score matmul Q·Kᵀ (q on the left, k on the right); v enters the context matmul on the right.
    int q = -1, k = -1, v = -1, scores = -1;
    for (size_t a = 0; a < 3 && scores < 0; ++a)
      for (size_t b = 0; b < 3 && scores < 0; ++b) {
        if (a == b) continue;
        for (auto [ca, sa] : ps[a].r.act)
          for (auto [cb, sb] : ps[b].r.act)
            if (ca == cb && sa == 0 && sb == 1 && scores < 0) {
              scores = ca;
              q = static_cast<int>(a);
              k = static_cast<int>(b);
            }
      }
    if (scores < 0)
      fail("{}: layer {}: no attention score matmul (Q·Kᵀ) fed by two of the projections {}, {}, {}", path, l,
           describe(ps[0].node), describe(ps[1].node), describe(ps[2].node));
    v = 3 - q - k;
    int context = -1;
    for (auto [c, s] : ps[v].r.act)
      if (s == 1 && c != scores) {
        if (context >= 0 && context != c) fail("{}: layer {}: v projection {} feeds two attention matmuls", path, l, describe(ps[v].node));
        context = c;
      }
    if (context < 0)
      fail("{}: layer {}: v projection {} does not reach the attention context matmul (softmax·V)", path, l,
           describe(ps[v].node));
    {
      auto sr = g.forward(g.node(scores).out.empty() ? std::string() : g.node(scores).out[0], false);
      bool ok = sr.ops.count("Softmax") > 0;
      bool reach = false;
      for (auto [c, s] : sr.act) reach |= (c == context && s == 0);
      if (!ok || !reach)
        fail("{}: layer {}: the score matmul {} does not feed the context matmul {} through a Softmax", path, l,
             g.node(scores).name, g.node(context).name);
    }
    auto cr = g.forward(g.node(context).out.empty() ? std::string() : g.node(context).out[0], false);
    if (cr.weight.size() != 1)
      fail("{}: layer {}: attention output feeds {} projections, expected exactly one (o_proj)", path, l,
           cr.weight.size());
    const int o = cr.weight[0].first;
    {
      auto orr = g.forward(proj_out(o), true);
      if (orr.adds.empty()) fail("{}: layer {}: o_proj {} does not feed a residual Add", path, l, describe(o));
    }
    add_proj(ps[q].node, Role::Q, li, {q_out, cfg.hidden_size});
    add_proj(ps[k].node, Role::K, li, {kv_out, cfg.hidden_size});
    add_proj(ps[v].node, Role::V, li, {kv_out, cfg.hidden_size});
    add_proj(o, Role::O, li, {cfg.hidden_size, q_out});
    // --- MLP
    if (fn.feeds.size() != 2)
      fail("{}: layer {}: post_attention_layernorm {} feeds {} projections, expected 2 (gate, up){}", path, l,
           fn.t->name, fn.feeds.size(), fn.feeds.size() == 1 ? " (fused gate_up is not supported)" : "");
    add(fmt::format("model.layers.{}.post_attention_layernorm.weight", l), fn.t, false, {cfg.hidden_size});
    static const std::set<std::string> nonlin = {"Sigmoid", "Tanh", "Erf", "Relu", "Gelu", "FastGelu", "HardSigmoid",
                                                 "HardSwish", "Softplus", "Elu", "Selu", "QuickGelu"};
    int gate = -1, up = -1, down = -1;
    for (int j = 0; j < 2; ++j) {
      auto r = g.forward(proj_out(fn.feeds[static_cast<size_t>(j)]), false);
      bool act = false;
      for (const auto& op : r.ops) act |= nonlin.count(op) > 0;
      if (r.weight.size() != 1)
        fail("{}: layer {}: MLP projection {} feeds {} projections, expected exactly one (down_proj)", path, l,
             describe(fn.feeds[static_cast<size_t>(j)]), r.weight.size());
      if (down >= 0 && down != r.weight[0].first)
        fail("{}: layer {}: gate and up projections feed different down projections", path, l);
      down = r.weight[0].first;
      int& slot = act ? gate : up;
      if (slot >= 0)
        fail("{}: layer {}: cannot tell gate from up: {} an activation function", path, l,
             act ? "both pass through" : "neither passes through");
      slot = fn.feeds[static_cast<size_t>(j)];
    }
    add_proj(gate, Role::Gate, li, {cfg.intermediate_size, cfg.hidden_size});
    add_proj(up, Role::Up, li, {cfg.intermediate_size, cfg.hidden_size});
    add_proj(down, Role::Down, li, {cfg.hidden_size, cfg.intermediate_size});
  }
  const NormInfo& fin = norms[2 * L];
  if (fin.feeds.size() != 1)
    fail("{}: final norm {} feeds {} projections, expected 1 (lm_head)", path, fin.t->name, fin.feeds.size());
  add("model.norm.weight", fin.t, false, {cfg.hidden_size});
  {
    const int head = fin.feeds[0];
    const WeightMM* wm = g.weight_mm(head);
    if (wm->t == embed) {
      assigned.insert(head);  // tied: the output projection reuses the embedding
      if (!cfg.tie_word_embeddings)
        add("lm_head.weight", embed, false, {cfg.vocab_size, cfg.hidden_size});
    } else if (cfg.tie_word_embeddings) {
      assigned.insert(head);  // a folded copy of the tied embedding: the HF checkpoint has no lm_head
      if (wm->out != cfg.vocab_size || wm->in != cfg.hidden_size)
        fail("{}: lm_head {}: shape does not match [{}, {}]", path, describe(head), cfg.vocab_size, cfg.hidden_size);
    } else {
      add_proj(head, Role::LmHead, 0, {cfg.vocab_size, cfg.hidden_size});
    }
  }
  for (const auto& wm : g.weight_mms())
    if (!assigned.count(wm.node)) fail("{}: weight matmul {} has no recognised role", path, describe(wm.node));
  return out;
}

}  // namespace edgeq
