#include "edgeq/calibrate/data.h"

#include <memory>
#include <nlohmann/json.hpp>

#include "edgeq/base/error.h"
#include "edgeq/formats/mapped_file.h"
#include "edgeq/formats/text_input.h"

namespace edgeq::calibrate {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string jsonl_text(const std::string& data, const std::string& file) {
  std::string out;
  size_t pos = 0, line_no = 0, records = 0;
  while (pos < data.size()) {
    size_t end = data.find('\n', pos);
    if (end == std::string::npos) end = data.size();
    ++line_no;
    std::string_view line(data.data() + pos, end - pos);
    pos = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) fail("{}: line {}: invalid JSON", file, line_no);
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      fail("{}: line {}: not a JSON object with a string field \"text\"", file, line_no);
    if (records++) out += '\n';
    out += j["text"].get<std::string>();
  }
  return out;
}

}  // namespace

std::string load_calibration_text(const std::vector<std::string>& files) {
  if (files.empty()) fail("calibration: no data file given");
  std::string text;
  for (const auto& f : files) {
    std::string data = read_text_input(f);  // "-", pipes, zstd: the one text reader
    if (data.empty()) fail("{}: empty file", f);
    std::string name = f;
    if (ends_with(name, ".zst")) name.resize(name.size() - 4);
    if (ends_with(name, ".jsonl")) data = jsonl_text(data, f);
    if (data.empty()) fail("{}: no text", f);
    if (!text.empty() && text.back() != '\n') text += '\n';
    text += data;
  }
  return text;
}

}  // namespace edgeq::calibrate
