#include "edgeq/formats/text_input.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "edgeq/base/error.h"
#include "edgeq/formats/mapped_file.h"

namespace edgeq {

namespace {

std::mutex g_streams_mu;
std::map<std::string, std::string> g_streams;  // texts read from pipes and other streams, by path

std::string read_stream(int fd, const std::string& path) {
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{}: read failed: {}", path, std::strerror(errno));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string raw_text(const std::string& path) {
  if (path != "-") {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) fail("{}: cannot open: {}", path, std::strerror(errno));
    if (S_ISDIR(st.st_mode)) fail("{}: is a directory, expected a text file", path);
    if (S_ISREG(st.st_mode)) return read_text_file(path);
  }
  std::lock_guard<std::mutex> lock(g_streams_mu);
  if (auto it = g_streams.find(path); it != g_streams.end()) return it->second;
  std::string text;
  if (path == "-") {
    text = read_stream(STDIN_FILENO, "standard input (-)");
  } else {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
    try {
      text = read_stream(fd, path);
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  }
  g_streams[path] = text;
  return text;
}

}  // namespace

bool is_zstd(const std::string& d) {
  return d.size() >= 4 && static_cast<unsigned char>(d[0]) == 0x28 && static_cast<unsigned char>(d[1]) == 0xB5 &&
         static_cast<unsigned char>(d[2]) == 0x2F && static_cast<unsigned char>(d[3]) == 0xFD;
}

bool is_text_input(const std::string& path) {
  if (path == "-") return true;
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode);
}

std::string read_text_input(const std::string& path) {
  std::string data = raw_text(path);
  if (is_zstd(data)) data = zstd_decompress(data, path == "-" ? "standard input (-)" : path);
  return data;
}

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

}  // namespace edgeq
