#include "edgeq/calibrate/data.h"

#include <zstd.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "edgeq/base/error.h"
#include "edgeq/formats/mapped_file.h"

namespace edgeq::calibrate {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_zstd(const std::string& d) {
  return d.size() >= 4 && static_cast<unsigned char>(d[0]) == 0x28 && static_cast<unsigned char>(d[1]) == 0xB5 &&
         static_cast<unsigned char>(d[2]) == 0x2F && static_cast<unsigned char>(d[3]) == 0xFD;
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

std::string zstd_decompress(const std::string& data, const std::string& what, size_t max_bytes) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx) fail("{}: cannot create a zstd decoder", what);
  std::string out;
  std::string buf(ZSTD_DStreamOutSize(), '\0');
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  size_t last = 0;
  while (in.pos < in.size) {
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    last = ZSTD_decompressStream(dctx.get(), &o, &in);
    if (ZSTD_isError(last)) fail("{}: corrupt zstd data: {}", what, ZSTD_getErrorName(last));
    if (out.size() + o.pos > max_bytes) fail("{}: decompressed data exceeds {} bytes", what, max_bytes);
    out.append(buf.data(), o.pos);
    if (o.pos == 0 && in.pos == in.size) break;
  }
  // Drain output the decoder still holds for the consumed input.
  while (last != 0) {
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    last = ZSTD_decompressStream(dctx.get(), &o, &in);
    if (ZSTD_isError(last)) fail("{}: corrupt zstd data: {}", what, ZSTD_getErrorName(last));
    if (o.pos == 0) break;
    if (out.size() + o.pos > max_bytes) fail("{}: decompressed data exceeds {} bytes", what, max_bytes);
    out.append(buf.data(), o.pos);
  }
  if (last != 0) fail("{}: truncated zstd data (the last frame is incomplete)", what);
  return out;
}

std::string load_calibration_text(const std::vector<std::string>& files) {
  if (files.empty()) fail("calibration: no data file given");
  std::string text;
  for (const auto& f : files) {
    std::string data = read_text_file(f);
    if (data.empty()) fail("{}: empty file", f);
    std::string name = f;
    if (is_zstd(data)) {
      data = zstd_decompress(data, f);
      if (ends_with(name, ".zst")) name.resize(name.size() - 4);
    }
    if (ends_with(name, ".jsonl")) data = jsonl_text(data, f);
    if (data.empty()) fail("{}: no text", f);
    if (!text.empty() && text.back() != '\n') text += '\n';
    text += data;
  }
  return text;
}

}  // namespace edgeq::calibrate
