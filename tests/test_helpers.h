// Shared helpers for the test programs: paths to ../shared and temp dirs.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

// EDGEQ_SANITIZED: 1 in the ASan build, where heavy tests run a smaller slice of their work.
#if defined(__SANITIZE_ADDRESS__)
#define EDGEQ_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EDGEQ_SANITIZED 1
#endif
#endif
#ifndef EDGEQ_SANITIZED
#define EDGEQ_SANITIZED 0
#endif

namespace edgeq::test {

inline std::string shared(const std::string& rel) { return std::string(EDGEQ_SHARED_DIR) + "/" + rel; }

// One read of the whole file (the tests build at -O0, where a byte-by-byte stream iterator took seconds on the
// goldens); a stream that cannot seek is read to its end the slow way.
inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  const std::streamoff n = f ? static_cast<std::streamoff>(f.tellg()) : -1;
  if (n < 0) {
    f.clear();
    f.seekg(0);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  std::vector<uint8_t> v(static_cast<size_t>(n));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n));
  v.resize(static_cast<size_t>(f.gcount()));
  return v;
}

inline std::string read_text(const std::string& path) {
  const auto b = read_file(path);
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

inline void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// A fresh directory under the system temp dir, removed when the object goes away.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "edgeq-test-XXXXXX").string();
    char* p = mkdtemp(tmpl.data());
    path = p ? p : tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// A shell command line's exit code, standard output and standard error (to a temp file, so not a terminal).
struct CmdResult {
  int code = -1;
  std::string out, err;
};
inline CmdResult run_shell(const std::string& cmdline) {
  const std::string errf =
      (std::filesystem::temp_directory_path() / ("edgeq-cmd-" + std::to_string(getpid()) + ".err")).string();
  const std::string cmd = cmdline + " 2>" + errf;
  CmdResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.err = read_text(errf);
  std::remove(errf.c_str());
  return r;
}

// Every GGUF file in ../shared/golden and ../shared/vocab.
inline std::vector<std::string> golden_ggufs() {
  std::vector<std::string> out;
  for (const char* dir : {"golden", "vocab"})
    for (auto& e : std::filesystem::directory_iterator(shared(dir)))
      if (e.path().extension() == ".gguf") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace edgeq::test
