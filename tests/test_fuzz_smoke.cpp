// A deterministic fuzz smoke run over the GGUF and safetensors parsers (the libFuzzer targets in fuzz/ run
// in CI with clang; this one runs in every build, including the sanitizer build): thousands of mutants of
// real files — bit flips, interesting values written over length and count fields, truncations, inserted
// and deleted bytes. Each must be parsed or refused with edgeq::Error; anything else fails the test.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/safetensors.h"
#include "test_helpers.h"

using namespace edgeq;

namespace {

// Mutates m (a copy of the seed) in place.
void mutate(std::vector<uint8_t>& m, std::mt19937_64& rng, size_t hot_prefix) {
  int n_mut = 1 + static_cast<int>(rng() % 4);
  for (int k = 0; k < n_mut && !m.empty(); ++k) {
    // mostly mutate the header region, where the parser's decisions are
    size_t pos = (rng() % 4 != 0) ? rng() % std::min(m.size(), hot_prefix) : rng() % m.size();
    switch (rng() % 6) {
      case 0: m[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
      case 1: {
        static const uint64_t interesting[] = {0, 1, 0x7f, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0xffffffff,
                                               0x7fffffffffffffffull, 0xffffffffffffffffull, 1ull << 32, 1ull << 40};
        uint64_t v = interesting[rng() % std::size(interesting)];
        size_t w = (rng() % 2) ? 8 : 4;
        if (pos + w <= m.size()) std::memcpy(m.data() + pos, &v, w);
        break;
      }
      case 2: m.resize(pos); break;
      case 3: m.insert(m.begin() + static_cast<long>(pos), static_cast<uint8_t>(rng())); break;
      case 4: m.erase(m.begin() + static_cast<long>(pos)); break;
      default: m[pos] = static_cast<uint8_t>(rng()); break;
    }
  }
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kExactCopies = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kExactCopies = true;
#else
constexpr bool kExactCopies = false;
#endif
#else
constexpr bool kExactCopies = false;
#endif

template <typename Parse>
void run(const std::vector<uint8_t>& seed, size_t hot_prefix, int iterations, Parse parse) {
  std::mt19937_64 rng(12345);
  int accepted = 0, refused = 0;
  std::vector<uint8_t> m;
  m.reserve(seed.size() + 8);
  for (int i = 0; i < iterations; ++i) {
    m.assign(seed.begin(), seed.end());  // the same buffer each time: no allocation (and no page faults) per mutant
    mutate(m, rng, hot_prefix);
    // Under ASan an exact-size copy, so an overread of the mutant is reported.
    std::unique_ptr<uint8_t[]> buf(kExactCopies ? new uint8_t[m.size() + 1] : nullptr);
    if (kExactCopies && !m.empty()) std::memcpy(buf.get(), m.data(), m.size());
    try {
      parse(kExactCopies ? buf.get() : m.data(), m.size());
      ++accepted;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_EQ(accepted + refused, iterations);
  EXPECT_GT(refused, iterations / 10);  // the mutator really produces bad files
}

int iterations() {
#if defined(__SANITIZE_ADDRESS__)
  return 4000;
#else
  return 30000;
#endif
}

}  // namespace

TEST(FuzzSmoke, Gguf) {
  auto full = edgeq::test::read_file(edgeq::test::shared("golden/stories260K-F32.gguf"));
  // the header of a real file (vocab included) plus its first tensors' data
  std::vector<uint8_t> seed(full.begin(), full.begin() + std::min<size_t>(full.size(), 40000));
  auto f = GgufFile::parse(full.data(), full.size(), "seed");
  run(seed, f.data_offset(), iterations(), [](const uint8_t* p, size_t n) {
    auto g = GgufFile::parse(p, n, "mutant.gguf");
    for (auto& t : g.tensors()) {
      auto v = g.view(t);
      if (v.nbytes) {
        ASSERT_LE(v.data + v.nbytes, p + n);
      }
    }
  });
}

// A split set (two files made by the split writer, concatenated as fuzz/fuzz_gguf.cpp takes them): mutants
// cut at their last "GGUF" magic, both parts parsed and joined.
TEST(FuzzSmoke, GgufSplitSet) {
  const auto src = GgufFile::open(edgeq::test::shared("golden/stories260K-F32.gguf"));
  edgeq::test::TempDir d;
  GgufWriter w(d.file("s.gguf"), GgufSplitOptions{0, 2});
  w.set("general.architecture", GgufValue("llama"));
  const std::vector<std::string> names = {"blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"};
  for (const auto& n : names) w.add_tensor(n, src.find_tensor(n)->dims, src.find_tensor(n)->type);
  const auto paths = w.output_paths();
  for (const auto& n : names) w.write_tensor_data(src.view(n).data, src.view(n).nbytes);
  w.finish();
  ASSERT_EQ(paths.size(), 2u);
  auto seed = edgeq::test::read_file(paths[0]);
  const auto second = edgeq::test::read_file(paths[1]);
  seed.insert(seed.end(), second.begin(), second.end());
  if (const char* dir = std::getenv("EDGEQ_FUZZ_SEED_DIR")) edgeq::test::write_file(std::string(dir) + "/split-set.gguf", seed);
  const auto parse_set = [](const uint8_t* p, size_t n) {
    size_t cut = 0;
    for (size_t i = n >= 4 ? n - 4 : 0; i > 0; --i)
      if (std::memcmp(p + i, "GGUF", 4) == 0) {
        cut = i;
        break;
      }
    if (cut == 0) throw Error("no second file");
    std::vector<uint8_t> a(p, p + cut), b(p + cut, p + n);
    std::vector<GgufFile> rest;
    rest.push_back(GgufFile::parse(b.data(), b.size(), "b.gguf"));
    auto g = GgufFile::join(GgufFile::parse(a.data(), a.size(), "a.gguf"), std::move(rest));
    for (auto& t : g.tensors()) {
      const auto v = g.view(t);
      const uint8_t* lo = t.split == 0 ? a.data() : b.data();
      const size_t len = t.split == 0 ? a.size() : b.size();
      ASSERT_GE(v.data, lo);
      ASSERT_LE(v.data + v.nbytes, lo + len);
    }
  };
  parse_set(seed.data(), seed.size());  // the seed itself joins
  run(seed, seed.size(), iterations() / 4, parse_set);
}

TEST(FuzzSmoke, Safetensors) {
  auto full = edgeq::test::read_file(edgeq::test::shared("models/stories260K-sharded/model-00003-of-00003.safetensors"));
  uint64_t hlen;
  std::memcpy(&hlen, full.data(), 8);
  run(full, 8 + hlen, iterations(), [](const uint8_t* p, size_t n) {
    auto s = SafetensorsFile::parse(p, n, "mutant.safetensors");
    for (auto& t : s.tensors())
      if (t.nbytes) {
        ASSERT_LE(t.data + t.nbytes, p + n);
      }
  });
}
