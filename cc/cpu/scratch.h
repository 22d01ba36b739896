// Per-task scratch: large buffers (a task's channel-last copy of the
// features), and cache-line-aligned vectors (LineVector). A fresh large
// buffer's pages fault in on first touch, one per 4 KiB page, which for a
// feature map's copy costs about as much as the copy: so a thread keeps its
// largest buffer (up to kKeptBytes) for its next task, and a new buffer is
// aligned and advised for transparent huge pages on Linux.
#ifndef JAX_ROIALIGN_CC_CPU_SCRATCH_H_
#define JAX_ROIALIGN_CC_CPU_SCRATCH_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace jax_roialign::cpu {

// Advises the whole 2 MiB pages inside [p, p + bytes) for transparent huge
// pages (Linux, THP in "madvise" mode): a fresh buffer then faults in 2 MiB at
// a time instead of 4 KiB. Advice only: the contents are unchanged and a
// failure is harmless. Buffers under 4 MiB are left alone.
inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (bytes < 2 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

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
  advise_huge_pages(p, bytes);
  return Scratch<A>(static_cast<A*>(p));
}

// The most a thread keeps between tasks: the channel-last copy of one image's
// channels of a large FPN level is ~30 MB (a task's 128 of 256 channels of
// 200 x 272); beyond this, each task allocates its own.
constexpr size_t kKeptBytes = size_t{1} << 30;

// A buffer of n elements for the calling thread's current task, valid until
// its next call on this thread (a task runs to completion on one thread and
// calls this once). Throws std::bad_alloc.
template <typename A>
class TaskScratch {
 public:
  explicit TaskScratch(size_t n) {
    const size_t bytes = (n > 0 ? n : 1) * sizeof(A);
    if (bytes > kKeptBytes) {
      own_ = allocate_scratch<unsigned char>(bytes);
      data_ = reinterpret_cast<A*>(own_.get());
      return;
    }
    thread_local Scratch<unsigned char> kept;
    thread_local size_t kept_bytes = 0;
    if (kept_bytes < bytes) {
      kept.reset();
      kept_bytes = 0;
      kept = allocate_scratch<unsigned char>(bytes);
      kept_bytes = bytes;
    }
    data_ = reinterpret_cast<A*>(kept.get());
  }
  A* get() const { return data_; }

 private:
  Scratch<unsigned char> own_;
  A* data_ = nullptr;
};

// An allocator of cache-line-aligned (64-byte) storage: for a task's per-roi
// tiles, whose vector loads and stores at multiples of 64 bytes from the
// start then split no cache line.
template <typename T>
struct LineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  LineAllocator() = default;
  template <typename U>
  LineAllocator(const LineAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlign); }
  template <typename U>
  bool operator==(const LineAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const LineAllocator<U>&) const { return false; }
};

template <typename T>
using LineVector = std::vector<T, LineAllocator<T>>;

}  // namespace jax_roialign::cpu

#endif  // JAX_ROIALIGN_CC_CPU_SCRATCH_H_
