#include "edgeq/base/thread_count.h"

#include <sched.h>

#include <thread>

#include "edgeq/base/error.h"

namespace edgeq {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? static_cast<int>(hc) : 1;
}

int max_threads() { return 4 * available_cores(); }

int resolve_threads(int n, std::string_view what) {
  if (n == 0) return available_cores();
  if (n < 0 || n > max_threads())
    fail("{} {}: must be 0 (all {} cores) or 1..{} on this machine", what, n, available_cores(), max_threads());
  return n;
}

}  // namespace edgeq
