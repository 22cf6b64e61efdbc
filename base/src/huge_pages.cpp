#include "edgeq/base/huge_pages.h"

#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace edgeq {

void* huge_pages_alloc(size_t bytes) {
  if (bytes < kHugePage) {
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  const size_t size = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, size);
  if (p == nullptr) throw std::bad_alloc();
  ::madvise(p, size, MADV_HUGEPAGE);  // a hint: without huge pages the buffer still works
  return p;
}

void huge_pages_free(void* p) noexcept { std::free(p); }

}  // namespace edgeq
