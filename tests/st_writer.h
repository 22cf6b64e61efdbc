// Shared test code: a minimal safetensors writer for synthetic HF checkpoints (test_convert, test_convert_arch).
#pragma once
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace edgeq::test {

struct StEntry {
  std::string name;
  std::string dtype;  // F32, F16, BF16, ...
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

// An F32 tensor of N(0, 0.05) values.
inline StEntry f32_tensor(const std::string& name, std::vector<uint64_t> shape, std::mt19937& rng) {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  std::normal_distribution<float> nd(0.0f, 0.05f);
  StEntry e{name, "F32", shape, std::vector<uint8_t>(n * 4)};
  for (uint64_t i = 0; i < n; ++i) {
    float x = nd(rng);
    std::memcpy(e.bytes.data() + 4 * i, &x, 4);
  }
  return e;
}

inline void write_safetensors(const std::filesystem::path& path, const std::vector<StEntry>& ts) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  for (auto& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  h["__metadata__"] = {{"format", "pt"}};
  std::string hs = h.dump();
  while (hs.size() % 8) hs += ' ';
  std::ofstream f(path, std::ios::binary);
  uint64_t hl = hs.size();
  f.write(reinterpret_cast<const char*>(&hl), 8);
  f.write(hs.data(), static_cast<std::streamsize>(hs.size()));
  for (auto& t : ts) f.write(reinterpret_cast<const char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
}

}  // namespace edgeq::test
