// ONNX reader: small models serialised by hand in protobuf wire format (inline raw/typed data, external
// data in a temp directory), a synthetic Llama graph for role recovery, and hostile inputs.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/base/half.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/convert/onnx_roles.h"
#include "edgeq/formats/onnx.h"

namespace fs = std::filesystem;
using edgeq::OnnxModel;
namespace dt = edgeq::onnx_dtype;

namespace {

// ---------------------------------------------------------------------------------------------
// A minimal protobuf wire-format writer (field numbers from onnx.proto).
struct Pb {
  std::string b;
  void varint(uint64_t v) {
    while (v >= 0x80) {
      b.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    b.push_back(static_cast<char>(v));
  }
  void tag(int field, int wt) { varint((static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wt)); }
  Pb& u(int f, uint64_t v) { tag(f, 0); varint(v); return *this; }
  Pb& i(int f, int64_t v) { return u(f, static_cast<uint64_t>(v)); }
  Pb& s(int f, std::string_view x) { tag(f, 2); varint(x.size()); b.append(x); return *this; }
  Pb& m(int f, const Pb& x) { return s(f, x.b); }
  template <typename T>
  Pb& packed_fixed(int f, const std::vector<T>& v) {
    std::string tmp(v.size() * sizeof(T), '\0');
    if (!v.empty()) std::memcpy(tmp.data(), v.data(), tmp.size());
    return s(f, tmp);
  }
  Pb& packed_varint(int f, const std::vector<int64_t>& v) {
    Pb tmp;
    for (auto x : v) tmp.varint(static_cast<uint64_t>(x));
    return s(f, tmp.b);
  }
};

// TensorProto fields
enum { T_DIMS = 1, T_DTYPE = 2, T_SEGMENT = 3, T_FLOAT = 4, T_INT32 = 5, T_STRING = 6, T_INT64 = 7, T_NAME = 8,
       T_RAW = 9, T_DOUBLE = 10, T_UINT64 = 11, T_EXT = 13, T_LOC = 14 };

Pb tensor_head(const std::string& name, int dtype, const std::vector<int64_t>& dims) {
  Pb t;
  for (auto d : dims) t.i(T_DIMS, d);
  t.i(T_DTYPE, dtype);
  t.s(T_NAME, name);
  return t;
}

Pb ext_tensor(const std::string& name, int dtype, const std::vector<int64_t>& dims,
              const std::vector<std::pair<std::string, std::string>>& kv) {
  Pb t = tensor_head(name, dtype, dims);
  for (const auto& [k, v] : kv) {
    Pb e;
    e.s(1, k).s(2, v);
    t.m(T_EXT, e);
  }
  t.i(T_LOC, 1);  // EXTERNAL
  return t;
}

Pb attr_int(const std::string& name, int64_t v) {
  Pb a;
  a.s(1, name).i(3, v).i(20, 2);
  return a;
}
Pb attr_ints(const std::string& name, const std::vector<int64_t>& v) {
  Pb a;
  a.s(1, name);
  for (auto x : v) a.i(8, x);
  a.i(20, 7);
  return a;
}

Pb node(const std::string& op, const std::vector<std::string>& in, const std::vector<std::string>& out,
        const std::string& name = "", const std::vector<Pb>& attrs = {}) {
  Pb n;
  for (const auto& x : in) n.s(1, x);
  for (const auto& x : out) n.s(2, x);
  if (!name.empty()) n.s(3, name);
  n.s(4, op);
  for (const auto& a : attrs) n.m(5, a);
  return n;
}

std::string model_bytes(const std::vector<Pb>& nodes, const std::vector<Pb>& inits, int64_t ir = 8,
                        int64_t opset = 17, bool with_opset = true) {
  Pb g;
  for (const auto& n : nodes) g.m(1, n);
  g.s(2, "g");
  for (const auto& t : inits) g.m(5, t);
  Pb in;
  in.s(1, "input_ids");
  g.m(11, in);
  Pb m;
  m.i(1, ir).s(2, "edgeq-test").m(7, g);
  if (with_opset) {
    Pb op;
    op.i(2, opset);
    m.m(8, op);
  }
  return m.b;
}

OnnxModel parse(const std::string& bytes, const std::string& base_dir = {}) {
  return OnnxModel::parse(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "mem.onnx", base_dir);
}

// Expects an edgeq::Error whose message contains every needle.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing \"" << needles[0] << "\"";
  } catch (const edgeq::Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

std::vector<float> f32s(const OnnxModel& m, const std::string& name) {
  const auto* t = m.find(name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return {};
  std::vector<float> v(t->n_elements());
  m.tensor_to_f32(*t, v.data());
  return v;
}

std::string raw_of(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

struct TempDir {
  fs::path p;
  TempDir() {
    p = fs::temp_directory_path() / ("edgeq_onnx_test_" + std::to_string(::getpid()) + "_" +
                                     std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(p);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(p, ec);
  }
  void write(const std::string& name, const std::string& bytes) const {
    fs::create_directories((p / name).parent_path());
    std::ofstream(p / name, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
};

// ---------------------------------------------------------------------------------------------
// Inline initializers

TEST(OnnxParse, RawAndTypedFloatData) {
  const std::vector<float> vals = {1.5f, -2.25f, 3.0e-8f, 65504.0f, -0.0f, 7.0f};
  std::vector<Pb> inits;
  {
    Pb t = tensor_head("raw", dt::FLOAT, {2, 3});
    t.s(T_RAW, raw_of(vals));
    inits.push_back(t);
  }
  {
    Pb t = tensor_head("typed", dt::FLOAT, {3, 2});
    t.packed_fixed(T_FLOAT, vals);
    inits.push_back(t);
  }
  {
    Pb t = tensor_head("typed_unpacked", dt::FLOAT, {6});  // non-packed encoding is valid protobuf too
    for (float v : vals) {
      t.tag(T_FLOAT, 5);
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      for (int k = 0; k < 4; ++k) t.b.push_back(static_cast<char>((bits >> (8 * k)) & 0xff));
    }
    inits.push_back(t);
  }
  auto m = parse(model_bytes({}, inits));
  EXPECT_EQ(m.ir_version(), 8);
  EXPECT_EQ(m.opset_version(), 17);
  ASSERT_EQ(m.initializers().size(), 3u);
  const auto* raw = m.find("raw");
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(raw->storage, edgeq::OnnxStorage::Raw);
  EXPECT_EQ(raw->dims, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(raw->nbytes, 24u);
  EXPECT_EQ(0, std::memcmp(raw->data, vals.data(), 24));
  EXPECT_EQ(m.find("typed")->storage, edgeq::OnnxStorage::Typed);
  for (const char* n : {"raw", "typed", "typed_unpacked"}) {
    auto v = f32s(m, n);
    ASSERT_EQ(v.size(), vals.size()) << n;
    EXPECT_EQ(0, std::memcmp(v.data(), vals.data(), 24)) << n;  // bit for bit, -0.0 included
  }
  EXPECT_EQ(m.find("missing"), nullptr);
}

TEST(OnnxParse, EveryTypedField) {
  std::vector<Pb> inits;
  const std::vector<float> hv = {1.0f, -0.5f, 0.333251953125f, 1024.0f};  // exact in f16
  std::vector<int64_t> h16, b16;
  for (float f : hv) {
    h16.push_back(edgeq::f32_to_f16(f));
    b16.push_back(edgeq::f32_to_bf16(f));
  }
  inits.push_back(tensor_head("f16", dt::FLOAT16, {4}).packed_varint(T_INT32, h16));
  inits.push_back(tensor_head("bf16", dt::BFLOAT16, {2, 2}).packed_varint(T_INT32, b16));
  {
    std::string raw;
    for (auto b : b16) raw.append({static_cast<char>(b & 0xff), static_cast<char>(b >> 8)});
    inits.push_back(tensor_head("bf16raw", dt::BFLOAT16, {4}).s(T_RAW, raw));
  }
  inits.push_back(tensor_head("f64", dt::DOUBLE, {2}).packed_fixed<double>(T_DOUBLE, {0.1, -3.0}));
  inits.push_back(tensor_head("i8", dt::INT8, {3}).packed_varint(T_INT32, {-128, 0, 127}));
  inits.push_back(tensor_head("u8", dt::UINT8, {2}).packed_varint(T_INT32, {0, 255}));
  inits.push_back(tensor_head("i16", dt::INT16, {2}).packed_varint(T_INT32, {-32768, 32767}));
  inits.push_back(tensor_head("u16", dt::UINT16, {1}).packed_varint(T_INT32, {65535}));
  inits.push_back(tensor_head("i32", dt::INT32, {2}).packed_varint(T_INT32, {-7, 2147483647}));
  inits.push_back(tensor_head("i64", dt::INT64, {2}).packed_varint(T_INT64, {-1, int64_t{1} << 40}));
  inits.push_back(tensor_head("u32", dt::UINT32, {1}).packed_varint(T_UINT64, {4000000000}));
  inits.push_back(tensor_head("u64", dt::UINT64, {1}).packed_varint(T_UINT64, {-1}));
  inits.push_back(tensor_head("bool", dt::BOOL, {3}).packed_varint(T_INT32, {1, 0, 1}));
  inits.push_back(tensor_head("scalar", dt::FLOAT, {}).packed_fixed<float>(T_FLOAT, {42.0f}));
  inits.push_back(tensor_head("empty", dt::FLOAT, {0, 5}));
  inits.push_back(tensor_head("str", dt::STRING, {2}).s(T_STRING, "a").s(T_STRING, "bc"));
  auto m = parse(model_bytes({}, inits));
  ASSERT_EQ(m.initializers().size(), inits.size());

  EXPECT_EQ(f32s(m, "f16"), hv);
  EXPECT_EQ(f32s(m, "bf16"), (std::vector<float>{1.0f, -0.5f, edgeq::bf16_to_f32(static_cast<uint16_t>(b16[2])), 1024.0f}));
  EXPECT_EQ(f32s(m, "bf16raw"), f32s(m, "bf16"));
  EXPECT_EQ(f32s(m, "f64"), (std::vector<float>{0.1f, -3.0f}));
  EXPECT_EQ(f32s(m, "scalar"), (std::vector<float>{42.0f}));
  EXPECT_EQ(m.find("scalar")->n_elements(), 1u);
  EXPECT_EQ(m.find("empty")->n_elements(), 0u);
  EXPECT_EQ(m.find("empty")->nbytes, 0u);
  EXPECT_EQ(m.find("str")->data, nullptr);

  auto bytes_of = [&](const char* n) {
    const auto* t = m.find(n);
    return std::vector<uint8_t>(t->data, t->data + t->nbytes);
  };
  EXPECT_EQ(bytes_of("i8"), (std::vector<uint8_t>{0x80, 0x00, 0x7f}));
  EXPECT_EQ(bytes_of("u8"), (std::vector<uint8_t>{0x00, 0xff}));
  EXPECT_EQ(bytes_of("i16"), (std::vector<uint8_t>{0x00, 0x80, 0xff, 0x7f}));
  EXPECT_EQ(bytes_of("u16"), (std::vector<uint8_t>{0xff, 0xff}));
  EXPECT_EQ(bytes_of("bool"), (std::vector<uint8_t>{1, 0, 1}));
  int32_t i32[2];
  std::memcpy(i32, m.find("i32")->data, 8);
  EXPECT_EQ(i32[0], -7);
  EXPECT_EQ(i32[1], 2147483647);
  int64_t i64[2];
  std::memcpy(i64, m.find("i64")->data, 16);
  EXPECT_EQ(i64[0], -1);
  EXPECT_EQ(i64[1], int64_t{1} << 40);
  uint32_t u32;
  std::memcpy(&u32, m.find("u32")->data, 4);
  EXPECT_EQ(u32, 4000000000u);
  uint64_t u64;
  std::memcpy(&u64, m.find("u64")->data, 8);
  EXPECT_EQ(u64, ~uint64_t{0});

  expect_error([&] { f32s(m, "i8"); }, {"initializer i8", "INT8 cannot be converted"});
  EXPECT_EQ(edgeq::onnx_dtype_size(dt::BFLOAT16), 2u);
  EXPECT_STREQ(edgeq::onnx_dtype_name(dt::FLOAT16), "FLOAT16");
  EXPECT_FALSE(edgeq::onnx_dtype_is_float(dt::INT64));
}

TEST(OnnxParse, BadInitializers) {
  auto one = [](Pb t) { return model_bytes({}, {t}); };
  const std::vector<float> six(6, 1.0f);
  expect_error([&] { parse(one(tensor_head("x", dt::FLOAT, {2, 3}).s(T_RAW, raw_of({1, 2, 3})))); },
               {"mem.onnx", "initializer x", "raw_data has 12 bytes", "need 24"});
  expect_error([&] { parse(one(tensor_head("x", dt::FLOAT, {2, 3}).packed_fixed<float>(T_FLOAT, {1, 2}))); },
               {"initializer x", "float_data has 2 values"});
  expect_error([&] { parse(one(tensor_head("x", dt::FLOAT, {2, 3}))); }, {"initializer x", "float_data has 0 values, dims 2x3 need 6"});
  expect_error([&] { parse(one(tensor_head("x", dt::FLOAT, {6}).s(T_RAW, raw_of(six)).packed_fixed(T_FLOAT, six))); },
               {"initializer x", "both raw_data and typed"});
  expect_error([&] { parse(one(tensor_head("x", dt::FLOAT, {2, -3}).s(T_RAW, ""))); }, {"negative dimension -3"});
  // Product of dims overflows 64 bits: must be refused before any allocation.
  expect_error([&] { parse(one(tensor_head("x", dt::FLOAT, {int64_t{1} << 40, int64_t{1} << 40}).s(T_RAW, "abcd"))); },
               {"initializer x", "overflows"});
  expect_error([&] { parse(one(tensor_head("x", dt::DOUBLE, {int64_t{1} << 61}).s(T_RAW, "abcd"))); },
               {"initializer x", "overflows"});
  // Huge but non-overflowing dims with a tiny payload: a size mismatch, no huge allocation.
  expect_error([&] { parse(one(tensor_head("x", dt::FLOAT, {int64_t{1} << 30, 64}).packed_fixed<float>(T_FLOAT, {1}))); },
               {"float_data has 1 values"});
  expect_error([&] { parse(one(tensor_head("x", dt::INT8, {1}).packed_varint(T_INT32, {300}))); },
               {"value 300", "out of range for INT8"});
  expect_error([&] { parse(one(tensor_head("x", dt::FLOAT16, {1}).packed_varint(T_INT32, {70000}))); },
               {"out of range for FLOAT16"});
  expect_error([&] { parse(one(tensor_head("x", 99, {1}).s(T_RAW, "a"))); }, {"unsupported data_type 99"});
  expect_error([&] { parse(one(tensor_head("x", dt::FLOAT, std::vector<int64_t>(17, 1)).s(T_RAW, "abcd"))); },
               {"rank 17"});
  expect_error([&] { parse(one(tensor_head("", dt::FLOAT, {1}).s(T_RAW, "abcd"))); }, {"has no name"});
  expect_error([&] { parse(one(tensor_head("x", dt::INT64, {2}))); }, {"initializer x", "int64_data has 0 values"});
  {
    Pb seg = tensor_head("x", dt::FLOAT, {1}).s(T_RAW, "abcd");
    Pb range;
    range.i(1, 0).i(2, 1);
    seg.m(T_SEGMENT, range);
    expect_error([&] { parse(one(seg)); }, {"segmented"});
  }
  Pb a = tensor_head("dup", dt::FLOAT, {1}).s(T_RAW, "abcd");
  expect_error([&] { parse(model_bytes({}, {a, a})); }, {"initializer dup is defined twice"});
}

TEST(OnnxParse, MalformedModels) {
  expect_error([&] { parse(""); }, {"mem.onnx", "no graph"});
  expect_error([&] { parse(model_bytes({}, {}, 8, 17, false)); }, {"no opset_import"});
  expect_error([&] { parse(model_bytes({}, {}, 1)); }, {"ir_version 1"});
  expect_error([&] { parse(std::string("\x0a\xff\xff\xff\xff\x0f", 6)); }, {"mem.onnx", "not a valid ONNX model"});
  // Two nodes producing one value; a node redefining an initializer.
  expect_error([&] { parse(model_bytes({node("Relu", {"a"}, {"v"}), node("Relu", {"b"}, {"v"})}, {})); },
               {"value v is produced by two nodes"});
  expect_error([&] {
    parse(model_bytes({node("Relu", {"a"}, {"w"})}, {tensor_head("w", dt::FLOAT, {1}).s(T_RAW, "abcd")}));
  }, {"redefines an initializer"});
  // Deeply nested subgraphs exceed the recursion limit: an error, not a stack overflow.
  {
    Pb g;
    g.s(2, "leaf");
    for (int d = 0; d < 200; ++d) {
      Pb a;
      a.s(1, "body").m(6, g).i(20, 5);
      Pb n;
      n.s(4, "Loop").m(5, a);
      Pb g2;
      g2.m(1, n);
      g = g2;
    }
    Pb m;
    m.i(1, 8).m(7, g);
    expect_error([&] { parse(m.b); }, {"not a valid ONNX model"});
  }
  // Random bytes never crash.
  std::mt19937 rng(7);
  int errors = 0;
  for (int k = 0; k < 300; ++k) {
    std::string junk(1 + rng() % 200, '\0');
    for (auto& c : junk) c = static_cast<char>(rng());
    try {
      parse(junk);
    } catch (const edgeq::Error&) {
      ++errors;
    }
  }
  EXPECT_EQ(errors, 300);
}

TEST(OnnxParse, LoadF32TransposesBlockEdgesAndRejectsBadData) {
  // Stored [in=70, out=130] (not multiples of the 64-wide tile); HF layout [130, 70].
  const int in = 70, out = 130;
  std::vector<float> stored(static_cast<size_t>(in * out));
  for (size_t k = 0; k < stored.size(); ++k) stored[k] = static_cast<float>(k) * 0.5f - 1000.0f;
  std::vector<float> bad = {1.0f, NAN, 2.0f, 3.0f};
  auto m = parse(model_bytes({}, {tensor_head("w", dt::FLOAT, {in, out}).s(T_RAW, raw_of(stored)),
                                  tensor_head("nan", dt::FLOAT, {2, 2}).s(T_RAW, raw_of(bad)),
                                  tensor_head("ints", dt::INT32, {2}).packed_varint(T_INT32, {1, 2})}));
  edgeq::convert::OnnxWeight w{"model.layers.0.mlp.up_proj.weight", "w", {130, 70}, true, dt::FLOAT};
  std::vector<float> got(stored.size());
  edgeq::convert::load_onnx_weight(m, w, got.data());
  for (int o = 0; o < out; ++o)
    for (int i = 0; i < in; ++i)
      ASSERT_EQ(got[static_cast<size_t>(o * in + i)], stored[static_cast<size_t>(i * out + o)]) << o << "," << i;
  w.transposed = false;
  w.hf_shape = {70, 130};
  edgeq::convert::load_onnx_weight(m, w, got.data());
  EXPECT_EQ(got, stored);
  w.transposed = true;
  w.hf_shape = {70, 130};  // not the transpose of the stored dims
  expect_error([&] { edgeq::convert::load_onnx_weight(m, w, got.data()); }, {"initializer w", "not the transpose"});
  w.hf_shape = {10, 10};
  expect_error([&] { edgeq::convert::load_onnx_weight(m, w, got.data()); }, {"9100 elements, HF shape needs 100"});
  edgeq::convert::OnnxWeight wn{"model.norm.weight", "nan", {2, 2}, true, dt::FLOAT};
  expect_error([&] { edgeq::convert::load_onnx_weight(m, wn, got.data()); }, {"mem.onnx", "initializer nan", "model.norm.weight", "non-finite", "element 2"});
  edgeq::convert::OnnxWeight wi{"x", "ints", {2}, false, dt::INT32};
  expect_error([&] { edgeq::convert::load_onnx_weight(m, wi, got.data()); }, {"INT32 cannot be converted"});
  edgeq::convert::OnnxWeight wm{"x", "absent", {2}, false, dt::FLOAT};
  expect_error([&] { edgeq::convert::load_onnx_weight(m, wm, got.data()); }, {"no initializer absent"});
}

// ---------------------------------------------------------------------------------------------
// External data

TEST(OnnxExternal, ReadsAtUnalignedOffsetsAndMapsOnce) {
  TempDir d;
  std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {-1.5f, 0.25f};
  std::string data = "xyz" + raw_of(a) + raw_of(b);  // offset 3: unaligned on purpose
  d.write("weights/model.data", data);
  auto inits = std::vector<Pb>{
      ext_tensor("a", dt::FLOAT, {2, 3}, {{"location", "weights/model.data"}, {"offset", "3"}, {"length", "24"}}),
      ext_tensor("b", dt::FLOAT, {2}, {{"location", "./weights/model.data"}, {"offset", "27"}, {"checksum", "x"}})};
  d.write("model.onnx", model_bytes({}, inits));
  auto m = OnnxModel::open((d.p / "model.onnx").string());
  EXPECT_EQ(f32s(m, "a"), a);
  EXPECT_EQ(f32s(m, "b"), b);
  const auto* ta = m.find("a");
  const auto* tb = m.find("b");
  EXPECT_EQ(ta->storage, edgeq::OnnxStorage::External);
  EXPECT_EQ(ta->offset, 3u);
  EXPECT_EQ(tb->data - ta->data, 24);  // the same mapping serves both tensors
  EXPECT_EQ(ta->file, tb->file);
  // In-memory parsing without a base directory refuses external data.
  std::string bytes = model_bytes({}, inits);
  expect_error([&] { parse(bytes); }, {"initializer a", "in-memory"});
  // With a base directory it resolves relative to it.
  auto m2 = parse(bytes, d.p.string());
  EXPECT_EQ(f32s(m2, "a"), a);
}

TEST(OnnxExternal, OpenViewsRawDataInTheMappedFile) {
  TempDir d;
  const std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {9, 8};
  // Two graph fields: protobuf merges them (initializers concatenate); the views must follow that order.
  Pb g1, g2;
  g1.m(5, tensor_head("a", dt::FLOAT, {2, 3}).s(T_RAW, raw_of(a)));
  g2.m(5, tensor_head("b", dt::FLOAT, {2}).s(T_RAW, raw_of({0, 0})).s(T_RAW, raw_of(b)));  // last raw_data wins
  g2.m(5, tensor_head("c", dt::FLOAT, {2}).packed_fixed<float>(T_FLOAT, {7, 7}));
  Pb op;
  op.i(2, 17);
  Pb mb;
  mb.i(1, 8).m(7, g1).m(7, g2).m(8, op);
  d.write("model.onnx", mb.b);
  auto m = OnnxModel::open((d.p / "model.onnx").string());
  ASSERT_EQ(m.initializers().size(), 3u);
  EXPECT_EQ(f32s(m, "a"), a);
  EXPECT_EQ(f32s(m, "b"), b);
  EXPECT_EQ(f32s(m, "c"), (std::vector<float>{7, 7}));
  const auto* ta = m.find("a");
  const auto* tb = m.find("b");
  EXPECT_EQ(ta->storage, edgeq::OnnxStorage::Raw);
  const size_t pa = mb.b.find(raw_of(a)), pb = mb.b.rfind(raw_of(b));
  ASSERT_NE(pa, std::string::npos);
  EXPECT_EQ(ta->offset, pa);  // zero-copy: the view sits at the bytes' position in the file
  EXPECT_EQ(tb->offset, pb);
  EXPECT_EQ(tb->data - ta->data, static_cast<std::ptrdiff_t>(pb - pa));  // both in the one mapping
  // parse() of a caller's buffer keeps its own copy: the buffer may go away.
  std::string copy = mb.b;
  auto m2 = parse(copy);
  copy.assign(copy.size(), '\0');
  EXPECT_EQ(f32s(m2, "a"), a);
  EXPECT_EQ(f32s(m2, "b"), b);
}

TEST(OnnxExternal, HostileReferences) {
  TempDir d;
  d.write("sub/model.onnx.data", std::string(64, '\x01'));
  auto check = [&](const std::string& loc, const std::string& off, const std::string& len,
                   std::vector<int64_t> dims, const std::vector<std::string>& needles) {
    std::vector<std::pair<std::string, std::string>> kv = {{"location", loc}};
    if (!off.empty()) kv.push_back({"offset", off});
    if (!len.empty()) kv.push_back({"length", len});
    std::string bytes = model_bytes({}, {ext_tensor("w", dt::FLOAT, dims, kv)});
    d.write("sub/model.onnx", bytes);
    auto n = needles;
    n.push_back("initializer w");
    expect_error([&] { OnnxModel::open((d.p / "sub/model.onnx").string()); }, n);
  };
  check("model.onnx.data", "60", "8", {2}, {"model.onnx", "outside", "64 bytes"});              // past the end
  check("model.onnx.data", "18446744073709551615", "8", {2}, {"outside"});                      // offset+length wraps
  check("model.onnx.data", "0", "", {17}, {"outside"});                                         // implied length too big
  check("model.onnx.data", "0", "12", {2}, {"length 12 does not match", "= 8"});                // length != dims
  check("model.onnx.data", "0", "8", {int64_t{1} << 40, int64_t{1} << 40}, {"overflows"});      // dims overflow
  check("model.onnx.data", "0x10", "8", {2}, {"offset \"0x10\""});                              // not decimal
  check("model.onnx.data", "-4", "8", {2}, {"offset \"-4\""});
  check("model.onnx.data", "99999999999999999999999", "8", {2}, {"offset"});                    // u64 overflow
  check("../sub/model.onnx.data", "0", "8", {2}, {"escapes the model's directory"});
  check("x/../../sub/model.onnx.data", "0", "8", {2}, {"escapes"});
  check((d.p / "sub/model.onnx.data").string(), "0", "8", {2}, {"is absolute"});
  check("", "0", "8", {2}, {"empty location"});
  check("missing.data", "0", "8", {2}, {"missing.data", "cannot open"});
  check(".", "0", "8", {2}, {"does not name a file"});
  {
    std::string bytes = model_bytes({}, {ext_tensor("w", dt::FLOAT, {2}, {{"offset", "0"}})});
    d.write("sub/model.onnx", bytes);
    expect_error([&] { OnnxModel::open((d.p / "sub/model.onnx").string()); }, {"without a location"});
  }
  {
    std::string bytes = model_bytes(
        {}, {ext_tensor("w", dt::FLOAT, {2}, {{"location", "model.onnx.data"}, {"offset", "0"}, {"offset", "8"}})});
    d.write("sub/model.onnx", bytes);
    expect_error([&] { OnnxModel::open((d.p / "sub/model.onnx").string()); }, {"\"offset\" repeated"});
  }
}

TEST(OnnxExternal, TruncatedRealModelIsAlwaysAnError) {
  const std::string dir = std::string(EDGEQ_SHARED_DIR) + "/models/tl-8m-onnx-ext";
  edgeq::MappedFile f(dir + "/model.onnx");
  const size_t size = f.size();
  ASSERT_GT(size, 300000u);
  // The whole file parses (this is the control) ...
  auto m = OnnxModel::parse(f.data(), size, "model.onnx", dir);
  EXPECT_EQ(m.initializers().size(), 75u);
  // ... and every truncation is a clean error.
  std::vector<size_t> cuts = {0, 1, 2, 3, 7, 16, 100, size - 1, size - 2, size - 3, size - 8, size - 100};
  for (size_t c = 997; c < size; c += 1709) cuts.push_back(c);
  for (size_t c : cuts) {
    try {
      OnnxModel::parse(f.data(), c, "model.onnx", dir);
      ADD_FAILURE() << "truncation at " << c << " parsed";
    } catch (const edgeq::Error& e) {
      EXPECT_NE(std::string(e.what()).find("model.onnx"), std::string::npos);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A synthetic Llama graph in the shape torch.onnx exports it.

struct Synth {
  int H = 8, NH = 2, NKV = 1, HD = 4, I = 12, V = 16, L = 2;
  bool torch_node_names = true;
  bool hf_norm_names = true;
  bool tied = false;
  bool gemm_o = false;        // o_proj as Gemm(transB=1) with the weight stored [out, in]
  bool no_sigmoid = false;    // the MLP has no activation: gate and up indistinguishable
  bool shuffle = false;       // nodes out of topological order
  bool q_bias = false;        // q_proj followed by Add(bias)
  std::string rename_node;    // node whose torch name gets replaced ...
  std::string rename_to;      // ... by this one
  std::string init_name_override_for;  // HF name whose initializer gets the name init_name_override
  std::string init_name_override;

  std::vector<Pb> nodes, inits;
  std::map<std::string, std::vector<float>> hf_values;  // HF name -> values in HF layout
  std::map<std::string, std::string> onnx_name;         // HF name -> initializer name
  int counter = 1000, tid = 0;

  float value(int id, size_t k) const { return static_cast<float>((id * 37 + static_cast<int>(k) * 7) % 200 - 100) / 64.0f; }

  // Stores an initializer in one of four encodings, chosen by tensor id.
  void store(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& stored) {
    int enc = tid % 4;
    Pb t;
    if (enc == 0) {
      t = tensor_head(name, dt::FLOAT, dims).s(T_RAW, raw_of(stored));
    } else if (enc == 1) {
      t = tensor_head(name, dt::FLOAT, dims).packed_fixed(T_FLOAT, stored);
    } else if (enc == 2) {
      std::vector<int64_t> h;
      for (float f : stored) h.push_back(edgeq::f32_to_f16(f));
      t = tensor_head(name, dt::FLOAT16, dims).packed_varint(T_INT32, h);
    } else {
      std::string raw;
      for (float f : stored) {
        uint16_t b = edgeq::f32_to_bf16(f);
        raw.append({static_cast<char>(b & 0xff), static_cast<char>(b >> 8)});
      }
      t = tensor_head(name, dt::BFLOAT16, dims).s(T_RAW, raw);
    }
    inits.push_back(t);
  }

  std::string name_for(const std::string& hf, const std::string& dflt) {
    return hf == init_name_override_for ? init_name_override : dflt;
  }

  // A linear weight [out, in] in HF terms; returns the initializer name. transposed: stored [in, out].
  std::string linear(const std::string& hf, int out, int in, bool transposed = true) {
    int id = ++tid;
    std::vector<float> w(static_cast<size_t>(out * in));
    for (size_t k = 0; k < w.size(); ++k) w[k] = value(id, k);
    hf_values[hf] = w;
    std::string name = name_for(hf, "onnx::MatMul_" + std::to_string(counter++));
    onnx_name[hf] = name;
    if (transposed) {
      std::vector<float> s(w.size());
      for (int o = 0; o < out; ++o)
        for (int i = 0; i < in; ++i) s[static_cast<size_t>(i * out + o)] = w[static_cast<size_t>(o * in + i)];
      store(name, {in, out}, s);
    } else {
      store(name, {out, in}, w);
    }
    return name;
  }

  std::string vec(const std::string& hf, int n, const std::string& dflt_name) {
    int id = ++tid;
    std::vector<float> w(static_cast<size_t>(n));
    for (size_t k = 0; k < w.size(); ++k) w[k] = value(id, k);
    hf_values[hf] = w;
    std::string name = name_for(hf, dflt_name);
    onnx_name[hf] = name;
    store(name, {n}, w);
    return name;
  }

  void add(const std::string& op, const std::vector<std::string>& in, const std::vector<std::string>& out,
           std::string name = "", const std::vector<Pb>& attrs = {}) {
    if (!torch_node_names && name.find("_proj") != std::string::npos) name = "";
    if (!rename_node.empty() && name == rename_node) name = rename_to;
    nodes.push_back(node(op, in, out, name, attrs));
  }

  std::string norm(const std::string& x, const std::string& hf, const std::string& p) {
    std::string w = vec(hf, H, hf_norm_names ? hf : "onnx::Mul_" + std::to_string(counter++));
    add("Pow", {x, "two"}, {p + "/Pow"}, p + "/Pow");
    add("ReduceMean", {p + "/Pow"}, {p + "/Mean"}, p + "/ReduceMean");
    add("Add", {p + "/Mean", "eps"}, {p + "/AddEps"}, p + "/Add");
    add("Sqrt", {p + "/AddEps"}, {p + "/Sqrt"}, p + "/Sqrt");
    add("Div", {x, p + "/Sqrt"}, {p + "/Div"}, p + "/Div");
    add("Mul", {w, p + "/Div"}, {p + "/Out"}, p + "/Mul_1");
    return p + "/Out";
  }

  std::string build() {
    {
      int id = ++tid;
      std::vector<float> w(static_cast<size_t>(V * H));
      for (size_t k = 0; k < w.size(); ++k) w[k] = value(id, k);
      hf_values["model.embed_tokens.weight"] = w;
      onnx_name["model.embed_tokens.weight"] = name_for("model.embed_tokens.weight", "model.embed_tokens.weight");
      store(onnx_name["model.embed_tokens.weight"], {V, H}, w);
    }
    add("Gather", {onnx_name["model.embed_tokens.weight"], "input_ids"}, {"x0"}, "/embed_tokens/Gather");
    std::string x = "x0";
    for (int l = 0; l < L; ++l) {
      const std::string pl = "/model/layers." + std::to_string(l);
      const std::string hl = "model.layers." + std::to_string(l);
      std::string y = norm(x, hl + ".input_layernorm.weight", pl + "/input_layernorm");
      std::string wq = linear(hl + ".self_attn.q_proj.weight", NH * HD, H);
      std::string wk = linear(hl + ".self_attn.k_proj.weight", NKV * HD, H);
      std::string wv = linear(hl + ".self_attn.v_proj.weight", NKV * HD, H);
      add("MatMul", {y, wq}, {pl + "/q"}, pl + "/self_attn/q_proj/MatMul");
      std::string q = pl + "/q";
      if (q_bias) {
        std::string b = vec(hl + ".self_attn.q_proj.bias", NH * HD, hl + ".self_attn.q_proj.bias");
        add("Add", {b, q}, {pl + "/qb"}, pl + "/self_attn/q_proj/Add");
        q = pl + "/qb";
      }
      add("MatMul", {y, wk}, {pl + "/k"}, pl + "/self_attn/k_proj/MatMul");
      add("MatMul", {y, wv}, {pl + "/v"}, pl + "/self_attn/v_proj/MatMul");
      add("Shape", {q}, {pl + "/qshape"}, pl + "/self_attn/Shape");
      // RoPE on q and k: x*cos + rotate_half(x)*sin
      for (const std::string& t : {std::string("q"), std::string("k")}) {
        std::string src = t == "q" ? q : pl + "/k";
        add("Reshape", {src, pl + "/qshape"}, {pl + "/" + t + "r"}, pl + "/self_attn/Reshape_" + t);
        add("Mul", {pl + "/" + t + "r", "cos"}, {pl + "/" + t + "c"}, pl + "/self_attn/Mul_" + t);
        add("Slice", {pl + "/" + t + "r", "s0", "s1"}, {pl + "/" + t + "s"}, pl + "/self_attn/Slice_" + t);
        add("Neg", {pl + "/" + t + "s"}, {pl + "/" + t + "n"}, pl + "/self_attn/Neg_" + t);
        add("Concat", {pl + "/" + t + "n", pl + "/" + t + "s"}, {pl + "/" + t + "h"}, pl + "/self_attn/Concat_" + t);
        add("Mul", {pl + "/" + t + "h", "sin"}, {pl + "/" + t + "hs"}, pl + "/self_attn/Mul_s" + t);
        add("Add", {pl + "/" + t + "c", pl + "/" + t + "hs"}, {pl + "/" + t + "rot"}, pl + "/self_attn/Add_" + t);
      }
      add("Transpose", {pl + "/krot"}, {pl + "/kt"}, pl + "/self_attn/Transpose", {attr_ints("perm", {0, 2, 1})});
      add("MatMul", {pl + "/qrot", pl + "/kt"}, {pl + "/scores"}, pl + "/self_attn/MatMul");
      add("Mul", {pl + "/scores", "scale"}, {pl + "/scaled"}, pl + "/self_attn/Mul_scale");
      add("Softmax", {pl + "/scaled"}, {pl + "/probs"}, pl + "/self_attn/Softmax");
      add("MatMul", {pl + "/probs", pl + "/v"}, {pl + "/ctx"}, pl + "/self_attn/MatMul_1");
      add("Reshape", {pl + "/ctx", "shape2"}, {pl + "/ctx2"}, pl + "/self_attn/Reshape_ctx");
      if (gemm_o) {
        std::string wo = linear(hl + ".self_attn.o_proj.weight", H, NH * HD, false);
        add("Gemm", {pl + "/ctx2", wo}, {pl + "/o"}, pl + "/self_attn/o_proj/Gemm", {attr_int("transB", 1)});
      } else {
        std::string wo = linear(hl + ".self_attn.o_proj.weight", H, NH * HD);
        add("MatMul", {pl + "/ctx2", wo}, {pl + "/o"}, pl + "/self_attn/o_proj/MatMul");
      }
      add("Add", {x, pl + "/o"}, {pl + "/x1"}, pl + "/Add");
      std::string y2 = norm(pl + "/x1", hl + ".post_attention_layernorm.weight", pl + "/post_attention_layernorm");
      std::string wg = linear(hl + ".mlp.gate_proj.weight", I, H);
      std::string wu = linear(hl + ".mlp.up_proj.weight", I, H);
      std::string wd = linear(hl + ".mlp.down_proj.weight", H, I);
      add("MatMul", {y2, wg}, {pl + "/g"}, pl + "/mlp/gate_proj/MatMul");
      if (no_sigmoid) {
        add("Mul", {pl + "/g", pl + "/g"}, {pl + "/act"}, pl + "/mlp/Mul");
      } else {
        add("Sigmoid", {pl + "/g"}, {pl + "/sig"}, pl + "/mlp/Sigmoid");
        add("Mul", {pl + "/g", pl + "/sig"}, {pl + "/act"}, pl + "/mlp/Mul");
      }
      add("MatMul", {y2, wu}, {pl + "/u"}, pl + "/mlp/up_proj/MatMul");
      add("Mul", {pl + "/act", pl + "/u"}, {pl + "/h"}, pl + "/mlp/Mul_1");
      add("MatMul", {pl + "/h", wd}, {pl + "/d"}, pl + "/mlp/down_proj/MatMul");
      add("Add", {pl + "/x1", pl + "/d"}, {pl + "/x2"}, pl + "/Add_1");
      x = pl + "/x2";
    }
    std::string yf = norm(x, "model.norm.weight", "/model/norm");
    if (tied) {
      add("Transpose", {onnx_name["model.embed_tokens.weight"]}, {"embT"}, "/lm_head/Transpose");
      add("MatMul", {yf, "embT"}, {"logits"}, "/lm_head/MatMul");
    } else {
      std::string wl = linear("lm_head.weight", V, H);
      add("MatMul", {yf, wl}, {"logits"}, "/lm_head/MatMul");
    }
    if (shuffle) {
      std::mt19937 rng(123);
      std::shuffle(nodes.begin(), nodes.end(), rng);
    }
    return model_bytes(nodes, inits);
  }

  edgeq::convert::OnnxLlamaShape cfg() const {
    edgeq::convert::OnnxLlamaShape c;
    c.hidden_size = static_cast<uint64_t>(H);
    c.intermediate_size = static_cast<uint64_t>(I);
    c.n_layers = static_cast<uint64_t>(L);
    c.n_heads = static_cast<uint64_t>(NH);
    c.n_kv_heads = static_cast<uint64_t>(NKV);
    c.head_dim = static_cast<uint64_t>(HD);
    c.vocab_size = static_cast<uint64_t>(V);
    c.tie_word_embeddings = tied;
    return c;
  }
};

// Recovers the weights and checks names, initializers and values against the builder's truth.
void check_recovery(Synth& s) {
  std::string bytes = s.build();
  if (const char* seeds = std::getenv("EDGEQ_ONNX_SEED_DIR")) {  // seed corpus for fuzz/fuzz_onnx.cpp
    static int k = 0;
    std::ofstream(fs::path(seeds) / ("synth" + std::to_string(k++) + ".onnx"), std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  auto m = parse(bytes);
  auto ws = edgeq::convert::recover_hf_weights(m, s.cfg());
  std::map<std::string, std::string> got;
  for (const auto& w : ws) {
    EXPECT_TRUE(got.emplace(w.hf_name, w.onnx_name).second) << "duplicate " << w.hf_name;
    std::vector<float> v(s.hf_values.count(w.hf_name) ? s.hf_values[w.hf_name].size() : 0);
    ASSERT_TRUE(s.hf_values.count(w.hf_name)) << "unexpected " << w.hf_name;
    uint64_t n = 1;
    for (auto d : w.hf_shape) n *= d;
    ASSERT_EQ(n, v.size()) << w.hf_name;
    edgeq::convert::load_onnx_weight(m, w, v.data());
    EXPECT_EQ(v, s.hf_values[w.hf_name]) << w.hf_name;
  }
  EXPECT_EQ(got, s.onnx_name);
  // Order: embedding first, then layer 0's input norm and q.
  ASSERT_GE(ws.size(), 3u);
  EXPECT_EQ(ws[0].hf_name, "model.embed_tokens.weight");
  EXPECT_EQ(ws[1].hf_name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(ws[2].hf_name, "model.layers.0.self_attn.q_proj.weight");
}

TEST(OnnxRoles, SyntheticTorchStyleExport) {
  Synth s;
  check_recovery(s);
  EXPECT_EQ(s.onnx_name.size(), 1u + 2u * 9u + 2u);
}

TEST(OnnxRoles, StructureAloneWithoutNamesMhaAndShuffledNodes) {
  Synth s;
  s.torch_node_names = false;  // no "/q_proj/" hints
  s.hf_norm_names = false;     // norms called onnx::Mul_N
  s.NKV = 2;                   // MHA: q, k, v all the same width, only the data flow tells them apart
  s.shuffle = true;            // nodes not in topological order
  s.L = 3;
  check_recovery(s);
}

TEST(OnnxRoles, HugeAndOddNodeNamesAreHandled) {
  Synth s;  // a 400 KB node name that still ends in the right module path (and a leading zero)
  s.rename_node = "/model/layers.1/self_attn/q_proj/MatMul";
  std::string big;
  for (int k = 0; k < 50000; ++k) big += "layers.1";
  s.rename_to = big + "/model/layers.01/self_attn/q_proj/MatMul";
  check_recovery(s);
  Synth s2;  // the same name pointing at the wrong layer is caught
  s2.rename_node = s.rename_node;
  s2.rename_to = big + "/model/layers.0/self_attn/q_proj/MatMul";
  std::string b = s2.build();
  expect_error([&] { edgeq::convert::recover_hf_weights(parse(b), s2.cfg()); },
               {"is named as model.layers.0.self_attn.q_proj", "makes its weight model.layers.1.self_attn.q_proj"});
}

TEST(OnnxRoles, DeepModelStaysWithinTheSearchBudget) {
  Synth s;  // 48 layers, shuffled: the per-layer searches must not grow with depth
  s.L = 48;
  s.shuffle = true;
  check_recovery(s);
  EXPECT_EQ(s.onnx_name.size(), 1u + 48u * 9u + 2u);
}

TEST(OnnxRoles, GemmTiedAndBias) {
  Synth s;
  s.gemm_o = true;
  s.tied = true;
  s.q_bias = true;
  check_recovery(s);
  EXPECT_EQ(s.onnx_name.count("lm_head.weight"), 0u);
  EXPECT_EQ(s.onnx_name.count("model.layers.1.self_attn.q_proj.bias"), 1u);
}

TEST(OnnxRoles, TiedWeightsInAnUntiedConfigGiveLmHeadFromTheEmbedding) {
  Synth s;
  s.tied = true;
  std::string bytes = s.build();
  auto c = s.cfg();
  c.tie_word_embeddings = false;
  auto ws = edgeq::convert::recover_hf_weights(parse(bytes), c);
  ASSERT_EQ(ws.back().hf_name, "lm_head.weight");
  EXPECT_EQ(ws.back().onnx_name, "model.embed_tokens.weight");
  EXPECT_FALSE(ws.back().transposed);
  EXPECT_EQ(ws.back().hf_shape, (std::vector<uint64_t>{16, 8}));
}

TEST(OnnxRoles, ErrorsNameWhatIsWrong) {
  {
    Synth s;
    s.no_sigmoid = true;
    std::string b = s.build();
    expect_error([&] { edgeq::convert::recover_hf_weights(parse(b), s.cfg()); }, {"mem.onnx", "layer 0", "cannot tell gate from up"});
  }
  {
    Synth s;  // node name contradicts the structure
    s.rename_node = "/model/layers.1/self_attn/k_proj/MatMul";
    s.rename_to = "/model/layers.1/self_attn/v_proj/MatMul";
    std::string b = s.build();
    expect_error([&] { edgeq::convert::recover_hf_weights(parse(b), s.cfg()); },
                 {"node /model/layers.1/self_attn/v_proj/MatMul is named as model.layers.1.self_attn.v_proj",
                  "makes its weight model.layers.1.self_attn.k_proj"});
  }
  {
    Synth s;  // initializer with an HF name that contradicts its role
    s.init_name_override_for = "model.layers.0.self_attn.q_proj.weight";
    s.init_name_override = "model.layers.0.self_attn.k_proj.weight";
    std::string b = s.build();
    expect_error([&] { edgeq::convert::recover_hf_weights(parse(b), s.cfg()); },
                 {"initializer model.layers.0.self_attn.k_proj.weight is named like an HF weight",
                  "model.layers.0.self_attn.q_proj.weight"});
  }
  {
    Synth s;
    std::string b = s.build();
    auto m = parse(b);
    auto c = s.cfg();
    c.n_layers = 3;
    expect_error([&] { edgeq::convert::recover_hf_weights(m, c); }, {"expected 7 RMSNorm weights", "found 5"});
    c = s.cfg();
    c.head_dim = 8;  // q would be [16, 8]
    expect_error([&] { edgeq::convert::recover_hf_weights(m, c); },
                 {"model.layers.0.self_attn.q_proj.weight (initializer onnx::MatMul_", "HF shape [8, 8]",
                  "the config implies [16, 8]"});
    c = s.cfg();
    c.hidden_size = 0;
    expect_error([&] { edgeq::convert::recover_hf_weights(m, c); }, {"needs positive"});
  }
}

}  // namespace
