// libFuzzer target: the GGUF parser, then every accessor a consumer would touch; and the split-set join:
// an input holding a second "GGUF" magic is also cut there into a first split file and a second one, parsed
// and joined (GgufFile::join: the split keys, duplicate tensors, split.tensors.count).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "edgeq/base/error.h"
#include "edgeq/formats/gguf.h"

namespace {

void touch(const edgeq::GgufFile& f) {
  for (auto& [k, v] : f.metadata()) (void)v.to_display(4);
  uint64_t sum = 0;
  for (auto& t : f.tensors()) {
    auto v = f.view(t);
    if (v.nbytes) sum += v.data[0] + v.data[v.nbytes - 1];  // touch both ends: must be inside the buffer
  }
  (void)sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    touch(edgeq::GgufFile::parse(data, size, "fuzz.gguf"));
  } catch (const edgeq::Error&) {
  }
  size_t cut = 0;
  for (size_t i = size >= 4 ? size - 4 : 0; i > 0; --i)
    if (std::memcmp(data + i, "GGUF", 4) == 0) {
      cut = i;
      break;
    }
  if (cut == 0) return 0;
  // Exact-size copies, so reads past either part are caught by the sanitizers.
  std::vector<uint8_t> a(data, data + cut), b(data + cut, data + size);
  try {
    auto first = edgeq::GgufFile::parse(a.data(), a.size(), "fuzz-00001-of-00002.gguf");
    std::vector<edgeq::GgufFile> rest;
    rest.push_back(edgeq::GgufFile::parse(b.data(), b.size(), "fuzz-00002-of-00002.gguf"));
    touch(edgeq::GgufFile::join(std::move(first), std::move(rest)));
  } catch (const edgeq::Error&) {
  }
  return 0;
}
