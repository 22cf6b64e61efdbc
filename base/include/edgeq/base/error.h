// edgeq::Error — the one exception type the libraries throw for bad input or I/O failure.
// Its message is one line that names the file (and tensor/offset where known) and the problem;
// the CLI prints it as "edgeq: error: <message>" and exits non-zero.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace edgeq {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

template <typename... Args>
[[noreturn]] inline void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

// Overflow-checked arithmetic for sizes read from untrusted files.
bool mul_overflow_u64(uint64_t a, uint64_t b, uint64_t* out);
bool add_overflow_u64(uint64_t a, uint64_t b, uint64_t* out);

}  // namespace edgeq
