// Large per-call scratch buffers. A fresh buffer's pages fault in on first
// touch, one per 4 KiB page, which for a feature map's copy costs as much as
// the copy itself; on Linux the buffer is aligned and advised for transparent
// huge pages, so it faults in 2 MiB at a time where the system allows.
#ifndef JAX_ROIALIGN_CC_CPU_SCRATCH_H_
#define JAX_ROIALIGN_CC_CPU_SCRATCH_H_

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace jax_roialign::cpu {

struct FreeScratch {
  void operator()(void* p) const { std::free(p); }
};

template <typename A>
using Scratch = std::unique_ptr<A[], FreeScratch>;

// An uninitialised buffer of n elements (at least one). Throws
// std::bad_alloc, like new; callers size it by the features, not by data.
template <typename A>
Scratch<A> allocate_scratch(size_t n) {
  constexpr size_t kHuge = size_t{2} << 20;
  size_t bytes = (n > 0 ? n : 1) * sizeof(A);
  const size_t align = bytes >= kHuge ? kHuge : alignof(std::max_align_t) * 4;
  bytes = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes);
  if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == kHuge) madvise(p, bytes, MADV_HUGEPAGE);  // advice: failure is harmless
#endif
  return Scratch<A>(static_cast<A*>(p));
}

}  // namespace jax_roialign::cpu

#endif  // JAX_ROIALIGN_CC_CPU_SCRATCH_H_
