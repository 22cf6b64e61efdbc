// Hashes that key cached work in compare/ (the sweep's entries, the budget search's sensitivities): FNV-1a over
// file names, sizes and contents. Internal to compare/.
#pragma once
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"
#include "edgeq/formats/model_path.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/formats/text_input.h"

namespace edgeq::compare {

namespace fs = std::filesystem;

struct Hasher {
  uint64_t h = 1469598103934665603ull;
  void bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  void str(const std::string& s) {
    const uint64_t n = s.size();
    bytes(&n, sizeof n);
    bytes(s.data(), s.size());
  }
  void i64(int64_t v) { bytes(&v, sizeof v); }
  void file(const fs::path& p) {
    str(p.filename().string());
    const uint64_t size = fs::file_size(p);
    i64(static_cast<int64_t>(size));
    if (size == 0) return;
    MappedFile m(p.string());
    bytes(m.data(), m.size());
  }
  std::string hex() const { return fmt::format("{:016x}", h); }
};

// Every file the source consists of: a GGUF alone (or all files of a split GGUF); an HF checkpoint's or ONNX
// export's directory (its regular files: weights, external data, config, tokenizer).
inline std::string hash_source(const std::string& src) {
  const ModelPath m = classify_model_path(src);
  Hasher h;
  std::vector<fs::path> files;
  if (m.is_gguf()) {
    const GgufFile g = GgufFile::open(src);
    for (const auto& s : g.splits()) files.push_back(s.path);  // every file of a split set
  } else {
    for (auto& e : fs::directory_iterator(m.dir)) if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (auto& f : files) h.file(f);
  return h.hex();
}

inline std::string hash_file(const std::string& path) {
  require_regular_file(path);
  Hasher h;
  h.file(path);
  return h.hex();
}

// A text input's hash: of its (decompressed) text, so a pipe or "-" hashes what was read.
inline std::string hash_text(const std::string& path) {
  Hasher h;
  h.str(read_text_input(path));
  return h.hex();
}

}  // namespace edgeq::compare
