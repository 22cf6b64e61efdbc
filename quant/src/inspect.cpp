#include "edgeq/quant/inspect.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "edgeq/base/error.h"
#include "edgeq/formats/inspect_model.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/quant/imatrix.h"

namespace edgeq::quant {

namespace {

// The legacy format has no magic: .imatrix/.dat by name, else a plausible first entry (count >= 1, a name
// length of 1..4096 that fits the file). GGUF, safetensors and protobuf files never start that way.
bool looks_like_imatrix(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".imatrix" || ext == ".dat") return true;
  if (ext == ".gguf" || ext == ".safetensors" || ext == ".onnx") return false;
  MappedFile m(path);
  if (m.size() < 8) return false;
  int32_t n = 0, len = 0;
  std::memcpy(&n, m.data(), 4);
  std::memcpy(&len, m.data() + 4, 4);
  return n >= 1 && n <= (1 << 24) && len >= 1 && len <= 4096 && static_cast<uint64_t>(len) + 8 <= m.size();
}

nlohmann::json inspect_imatrix(const std::string& path) {
  const auto f = ImatrixFile::open(path);
  nlohmann::json r;
  r["path"] = path;
  r["format"] = "imatrix";
  r["layout"] = "llama.cpp legacy binary (llama-imatrix)";
  r["file_size"] = std::filesystem::file_size(path);
  r["chunks"] = f.last_call();
  r["dataset"] = f.dataset();
  nlohmann::json es = nlohmann::json::array();
  uint64_t values = 0;
  for (const auto& e : f.entries()) {
    const auto& v = e.values;
    double sum = 0;
    for (float x : v) sum += x;
    const auto [mn, mx] = std::minmax_element(v.begin(), v.end());
    es.push_back({{"name", e.name},
                  {"ncall", e.ncall},
                  {"columns", v.size()},
                  {"mean", sum / static_cast<double>(v.size())},
                  {"min", *mn},
                  {"max", *mx},
                  {"zero_columns", std::count(v.begin(), v.end(), 0.0f)}});
    values += v.size();
  }
  r["entry_count"] = f.entries().size();
  r["values"] = values;
  r["entries"] = es;
  return r;
}

std::string render_imatrix(const nlohmann::json& r, size_t max_rows) {
  const uint64_t size = r["file_size"];
  std::string o = fmt::format("{}: imatrix, {}, {} entries, {} chunks, dataset \"{}\" ({} bytes)\n",
                              r["path"].get<std::string>(), r["layout"].get<std::string>(), r["entry_count"].get<size_t>(),
                              r["chunks"].get<int32_t>(), r["dataset"].get<std::string>(), size);
  const auto& es = r["entries"];
  o += fmt::format("\nentries ({}), importance = per-column mean of x^2:\n  {:<40} {:>6} {:>8} {:>11} {:>11} {:>11} {:>6}\n",
                   es.size(), "name", "ncall", "columns", "mean", "min", "max", "zeros");
  size_t shown = 0;
  for (const auto& e : es) {
    if (max_rows && shown == max_rows) {
      o += fmt::format("  ... {} more (use --all to list every entry)\n", es.size() - shown);
      break;
    }
    o += fmt::format("  {:<40} {:>6} {:>8} {:>11.4g} {:>11.4g} {:>11.4g} {:>6}\n", e["name"].get<std::string>(),
                     e["ncall"].get<int32_t>(), e["columns"].get<uint64_t>(), e["mean"].get<double>(),
                     e["min"].get<double>(), e["max"].get<double>(), e["zero_columns"].get<uint64_t>());
    ++shown;
  }
  o += fmt::format("\nvalues: {}\n", r["values"].get<uint64_t>());
  return o;
}

}  // namespace

nlohmann::json inspect_path(const std::string& path) {
  return looks_like_imatrix(path) ? inspect_imatrix(path) : edgeq::inspect_path(path);
}

std::string render_inspection(const nlohmann::json& report, size_t max_rows) {
  return report["format"] == "imatrix" ? render_imatrix(report, max_rows) : edgeq::render_inspection(report, max_rows);
}

}  // namespace edgeq::quant
