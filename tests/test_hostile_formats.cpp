// Hostile input corpus for the GGUF and safetensors parsers, generated here: truncations at every offset,
// lying counts and lengths, offsets past the end, overlaps, misalignment, bad magic, invalid UTF-8,
// overflowing dimensions. Each must give one edgeq::Error naming the input, fast, without a crash and
// without any single allocation larger than the input itself.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <nlohmann/json.hpp>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/safetensors.h"
#include "test_helpers.h"

// ---- allocation tracking: the largest single allocation while armed ------------------------------
static std::atomic<bool> g_armed{false};
static std::atomic<size_t> g_max_alloc{0};
static void* tracked_alloc(size_t n) {
  if (g_armed.load(std::memory_order_relaxed) && n > g_max_alloc.load(std::memory_order_relaxed)) g_max_alloc = n;
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  return p;
}
void* operator new(size_t n) { return tracked_alloc(n); }
void* operator new[](size_t n) { return tracked_alloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

using namespace edgeq;

namespace {

// Little GGUF builder that remembers where each field lives, so tests can corrupt one precisely.
struct Builder {
  std::vector<uint8_t> b;
  std::map<std::string, size_t> at;
  template <typename T>
  void put(T v, const std::string& mark = "") {
    if (!mark.empty()) at[mark] = b.size();
    size_t o = b.size();
    b.resize(o + sizeof(T));
    std::memcpy(b.data() + o, &v, sizeof(T));
  }
  void str(const std::string& s, const std::string& mark = "") {
    put<uint64_t>(s.size(), mark);
    b.insert(b.end(), s.begin(), s.end());
  }
};

// A valid file: 3 KVs (uint32, string, string array), 2 tensors (F32 [32,2], Q8_0 [64]).
Builder valid_gguf() {
  Builder g;
  g.put<uint32_t>(0x46554747, "magic");
  g.put<uint32_t>(3, "version");
  g.put<uint64_t>(2, "n_tensors");
  g.put<uint64_t>(3, "n_kv");
  g.str("general.alignment", "key0");
  g.put<uint32_t>(4);  // UINT32
  g.put<uint32_t>(32, "alignment");
  g.str("general.name", "key1");
  g.put<uint32_t>(8);
  g.str("tiny", "name_str");
  g.str("tokenizer.ggml.tokens", "key2");
  g.put<uint32_t>(9);
  g.put<uint32_t>(8, "arr_type");
  g.put<uint64_t>(3, "arr_count");
  g.str("a");
  g.str("bb");
  g.str("ccc");
  g.str("t0", "t0_name");
  g.put<uint32_t>(2, "t0_ndims");
  g.put<uint64_t>(32, "t0_d0");
  g.put<uint64_t>(2, "t0_d1");
  g.put<uint32_t>(0, "t0_type");
  g.put<uint64_t>(0, "t0_off");
  g.str("t1", "t1_name");
  g.put<uint32_t>(1, "t1_ndims");
  g.put<uint64_t>(64, "t1_d0");
  g.put<uint32_t>(8, "t1_type");  // Q8_0: 2 blocks x 34 bytes
  g.put<uint64_t>(256, "t1_off");
  while (g.b.size() % 32) g.b.push_back(0);
  g.at["data"] = g.b.size();
  g.b.resize(g.b.size() + 256 + 68 + 28, 0);
  return g;
}

template <typename T>
void poke(std::vector<uint8_t>& b, size_t off, T v) { std::memcpy(b.data() + off, &v, sizeof(T)); }

// Runs parse on a copy of the bytes (so ASan sees exact bounds) and checks the error contract.
// max_alloc_factor: a parsed value costs a constant number of bytes per element (a GgufValue is ~40 bytes
// even for a 1-byte uint8), so a file whose arrays are really present may allocate a small multiple of
// its size; a count or length that the file merely claims must never drive an allocation.
void expect_rejected(const std::vector<uint8_t>& bytes, const std::function<void(const uint8_t*, size_t)>& parse,
                     const std::string& what, const std::string& must_mention = "", size_t max_alloc_factor = 1) {
  SCOPED_TRACE(what);
  std::unique_ptr<uint8_t[]> copy(new uint8_t[bytes.size() ? bytes.size() : 1]);
  if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
  g_max_alloc = 0;
  auto t0 = std::chrono::steady_clock::now();
  g_armed = true;
  std::string msg;
  bool threw = false;
  try {
    parse(copy.get(), bytes.size());
  } catch (const Error& e) {
    threw = true;
    msg = e.what();
  }
  g_armed = false;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(threw) << "accepted hostile input";
  EXPECT_EQ(msg.rfind("hostile.bin:", 0), 0u) << "error must start with the file name: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "error must be one line: " << msg;
  if (!must_mention.empty()) {
    EXPECT_NE(msg.find(must_mention), std::string::npos) << msg;
  }
  EXPECT_LT(secs, 1.0);
  // Error messages and bookkeeping are small; nothing may allocate more than the input (plus a little slack).
  EXPECT_LE(g_max_alloc.load(), max_alloc_factor * bytes.size() + 4096) << "allocation larger than the input";
}

void gguf_parse(const uint8_t* p, size_t n) { GgufFile::parse(p, n, "hostile.bin"); }
void st_parse(const uint8_t* p, size_t n) { SafetensorsFile::parse(p, n, "hostile.bin"); }

}  // namespace

TEST(HostileGguf, ValidBaselineParses) {
  auto g = valid_gguf();
  auto f = GgufFile::parse(g.b.data(), g.b.size(), "ok.bin");
  EXPECT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.find("tokenizer.ggml.tokens")->as_array().items.size(), 3u);
  EXPECT_EQ(f.find_tensor("t1")->nbytes, 68u);
}

TEST(HostileGguf, TruncatedAtEveryOffset) {
  auto g = valid_gguf();
  size_t data_end = g.at["data"] + 256 + 68;  // past that is the last tensor's padding, which may be absent
  // every offset of the header, then through the tensor data
  for (size_t cut = 0; cut < data_end; cut += (cut < g.at["data"] ? 1 : 7)) {
    std::vector<uint8_t> t(g.b.begin(), g.b.begin() + static_cast<long>(cut));
    expect_rejected(t, gguf_parse, "truncated at " + std::to_string(cut));
  }
}

TEST(HostileGguf, LyingHeaders) {
  struct Case { const char* what; std::function<void(Builder&)> mutate; const char* mention; };
  std::vector<Case> cases = {
      {"wrong magic", [](Builder& g) { g.b[0] = 'X'; }, "magic"},
      {"version 99", [](Builder& g) { poke<uint32_t>(g.b, g.at["version"], 99); }, "version"},
      {"big-endian version", [](Builder& g) { poke<uint32_t>(g.b, g.at["version"], 0x03000000); }, "big-endian"},
      {"enormous tensor count", [](Builder& g) { poke<uint64_t>(g.b, g.at["n_tensors"], uint64_t{1} << 62); }, "tensors"},
      {"enormous kv count", [](Builder& g) { poke<uint64_t>(g.b, g.at["n_kv"], ~uint64_t{0}); }, "metadata"},
      {"key length past end", [](Builder& g) { poke<uint64_t>(g.b, g.at["key0"], uint64_t{1} << 40); }, "length"},
      {"string length past end", [](Builder& g) { poke<uint64_t>(g.b, g.at["name_str"], ~uint64_t{0} - 3); }, "length"},
      {"array count enormous", [](Builder& g) { poke<uint64_t>(g.b, g.at["arr_count"], uint64_t{1} << 61); }, "array"},
      {"array of unknown type", [](Builder& g) { poke<uint32_t>(g.b, g.at["arr_type"], 77); }, "type"},
      {"alignment not a power of two", [](Builder& g) { poke<uint32_t>(g.b, g.at["alignment"], 3); }, "alignment"},
      {"alignment zero", [](Builder& g) { poke<uint32_t>(g.b, g.at["alignment"], 0); }, "alignment"},
      {"tensor offset past end", [](Builder& g) { poke<uint64_t>(g.b, g.at["t1_off"], 1u << 20); }, "past the end"},
      {"tensor offset overflows", [](Builder& g) { poke<uint64_t>(g.b, g.at["t1_off"], ~uint64_t{0} - 31); }, "past the end"},
      {"overlapping tensors", [](Builder& g) { poke<uint64_t>(g.b, g.at["t1_off"], 224); }, "overlap"},
      {"misaligned tensor", [](Builder& g) { poke<uint64_t>(g.b, g.at["t1_off"], 260); }, "alignment"},
      {"five dimensions", [](Builder& g) { poke<uint32_t>(g.b, g.at["t0_ndims"], 5); }, "dimensions"},
      {"zero dimensions", [](Builder& g) { poke<uint32_t>(g.b, g.at["t0_ndims"], 0); }, "dimensions"},
      {"dims overflow 64 bits", [](Builder& g) { poke<uint64_t>(g.b, g.at["t0_d0"], uint64_t{1} << 40); poke<uint64_t>(g.b, g.at["t0_d1"], uint64_t{1} << 40); }, "overflow"},
      {"huge dims inside int64", [](Builder& g) { poke<uint64_t>(g.b, g.at["t0_d0"], uint64_t{1} << 31); poke<uint64_t>(g.b, g.at["t0_d1"], uint64_t{1} << 20); }, "past the end"},
      {"unknown ggml type", [](Builder& g) { poke<uint32_t>(g.b, g.at["t0_type"], 5); }, "unknown ggml type"},
      {"row not a block multiple", [](Builder& g) { poke<uint64_t>(g.b, g.at["t1_d0"], 48); }, "multiple"},
      {"invalid UTF-8 tensor name", [](Builder& g) { g.b[g.at["t0_name"] + 8] = 0xff; }, "UTF-8"},
      {"invalid UTF-8 key", [](Builder& g) { g.b[g.at["key1"] + 8] = 0xc3; g.b[g.at["key1"] + 9] = 0x28; }, "UTF-8"},
      {"duplicate tensor name", [](Builder& g) { g.b[g.at["t1_name"] + 9] = '0'; }, "duplicate"},
  };
  for (auto& c : cases) {
    auto g = valid_gguf();
    c.mutate(g);
    expect_rejected(g.b, gguf_parse, c.what, c.mention);
  }
}

TEST(HostileGguf, DuplicateKey) {
  Builder g;
  g.put<uint32_t>(0x46554747);
  g.put<uint32_t>(3);
  g.put<uint64_t>(0);
  g.put<uint64_t>(2);
  for (int i = 0; i < 2; ++i) {
    g.str("general.name");
    g.put<uint32_t>(8);
    g.str("x");
  }
  expect_rejected(g.b, gguf_parse, "duplicate key", "duplicate metadata key 'general.name'");
}

TEST(HostileGguf, GoldenFileTruncations) {
  // A real llama.cpp file cut at many places: every prefix must be refused cleanly.
  auto bytes = edgeq::test::read_file(edgeq::test::shared("golden/stories260K-F32.gguf"));
  ASSERT_GT(bytes.size(), 100000u);
  for (size_t cut : {size_t{3}, size_t{8}, size_t{23}, size_t{100}, size_t{1000}, size_t{5000}, size_t{20000}, bytes.size() / 2, bytes.size() - 1}) {
    std::vector<uint8_t> t(bytes.begin(), bytes.begin() + static_cast<long>(cut));
    // the vocabulary arrays really are in these prefixes: a bounded per-element overhead is allowed
    expect_rejected(t, gguf_parse, "golden cut at " + std::to_string(cut), "", 8);
  }
}

namespace {
std::vector<uint8_t> st_bytes(const std::string& header, size_t data_len, uint64_t claimed_len = 0) {
  std::vector<uint8_t> out(8 + header.size() + data_len, 0);
  uint64_t n = claimed_len ? claimed_len : header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}
std::string one(const std::string& dtype, const std::string& shape, uint64_t b, uint64_t e) {
  return R"({"w":{"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":[)" + std::to_string(b) + "," + std::to_string(e) + "]}}";
}
}  // namespace

TEST(HostileSafetensors, Corpus) {
  auto ok = st_bytes(one("F32", "[2,2]", 0, 16), 16);
  EXPECT_NO_THROW(SafetensorsFile::parse(ok.data(), ok.size(), "ok"));
  for (size_t cut = 0; cut < ok.size(); ++cut) {
    std::vector<uint8_t> t(ok.begin(), ok.begin() + static_cast<long>(cut));
    expect_rejected(t, st_parse, "truncated at " + std::to_string(cut));
  }
  struct Case { const char* what; std::vector<uint8_t> bytes; const char* mention; };
  std::vector<Case> cases = {
      {"header length enormous", st_bytes(one("F32", "[2,2]", 0, 16), 16, uint64_t{1} << 60), "header length"},
      {"header length past end", st_bytes(one("F32", "[2,2]", 0, 16), 16, 5000), "header length"},
      {"not JSON", st_bytes("{\"w\": [1,2,", 16), "JSON"},
      {"not an object", st_bytes("[1,2,3]", 0), "object"},
      {"unknown dtype", st_bytes(one("F4", "[2,2]", 0, 16), 16), "dtype"},
      {"offsets past end", st_bytes(one("F32", "[2,2]", 0, 16), 8), "past"},
      {"size mismatch", st_bytes(one("F32", "[2,3]", 0, 16), 16), "needs"},
      {"end before begin", st_bytes(one("F32", "[2,2]", 16, 0), 16), "before"},
      {"shape overflows", st_bytes(one("F32", "[4294967296,4294967296,16]", 0, 16), 16), "overflow"},
      {"negative shape", st_bytes(one("F32", "[-1,2]", 0, 16), 16), "non-negative"},
      {"huge offsets", st_bytes(one("U8", "[16]", 18446744073709551600ull, 18446744073709551615ull), 16), "past"},
      {"overlap", st_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 24), "overlap"},
      {"metadata not strings", st_bytes(R"({"__metadata__":{"x":1}})", 0), "metadata"},
  };
  for (auto& c : cases) expect_rejected(c.bytes, st_parse, c.what, c.mention);
}
