// A byte count for people: "1.50 GiB", "12.34 MiB", "3.00 KiB", "512 B" (binary units, two decimals).
#pragma once
#include <fmt/format.h>

#include <cstdint>
#include <string>

namespace edgeq {

inline std::string human_bytes(uint64_t b) {
  if (b >= (1ull << 30)) return fmt::format("{:.2f} GiB", static_cast<double>(b) / (1ull << 30));
  if (b >= (1ull << 20)) return fmt::format("{:.2f} MiB", static_cast<double>(b) / (1ull << 20));
  if (b >= (1ull << 10)) return fmt::format("{:.2f} KiB", static_cast<double>(b) / (1ull << 10));
  return fmt::format("{} B", b);
}

}  // namespace edgeq
