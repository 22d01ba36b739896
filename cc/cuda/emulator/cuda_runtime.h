// A host emulation of what cc/cuda/ uses of the CUDA runtime and device
// language, for tests only. The test module _cuda_emulated (CMake option
// JAX_ROIALIGN_CUDA_EMULATION) puts this directory first on its include path,
// so cc/cuda/kernels.cu and ffi_handlers.cc compile as host C++ and run on the
// CPU: tests/test_gpu.py runs the CUDA code where no GPU is.
//
// Faithful, so that the kernels' bugs show here:
//  - a block's threads are concurrent OS threads: a missing barrier is a race
//    (a wrong result, and a ThreadSanitizer report);
//  - __syncthreads() is a real barrier of the block, and every thread must
//    reach the same one; warp intrinsics are real rendezvous of the warp's
//    lanes, whose mask must name exactly the warp's lanes (the only masks our
//    kernels use; naming absent lanes is undefined on a GPU). A barrier that
//    some thread never reaches is reported as a deadlock;
//  - shared memory has one instance per block; the dynamic part is a fresh
//    allocation of exactly the launch's size (AddressSanitizer bounds it),
//    filled with 0xff bytes (NaN, -1) so that reading it unwritten shows;
//  - atomicAdd is atomic; a launch checks the limits a GPU enforces (threads
//    per block, grid size, 48 KiB of dynamic shared memory without opt-in)
//    and fails as the runtime does, with the error kept for cudaGetLastError.
// Not emulated: blocks run one after another and launches one at a time (a
// block may never wait for another block; ours do not); streams are
// synchronous; the memory model and arithmetic are the host's (no FMA unless
// the compiler contracts); static __shared__ arrays are function statics (one
// instance, as blocks do not overlap) and are not counted against the 48 KiB;
// __launch_bounds__ is ignored; timing means nothing.
// Violations of the above abort the process with a message on stderr.
#pragma once

#define JRA_CUDA_EMULATOR 1

// Standard headers first: <memory> spells __attribute__((__noinline__)),
// which the macro below would break.
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static

// ------------------------------------------------------------ runtime types

enum cudaError {  // the runtime's codes, for those the emulator returns
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
};
typedef enum cudaError cudaError_t;

enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };

typedef struct CUstream_st* cudaStream_t;  // opaque; every stream is synchronous

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct cudaLaunchConfig_t {
  dim3 gridDim, blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  void* attrs;        // launch attributes: none supported
  unsigned numAttrs;
};

// The built-in variables: per thread, set for each block it runs.
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

namespace jra_emu {

constexpr unsigned kWarp = 32;
constexpr size_t kSharedPerBlock = 48 * 1024;  // without cudaFuncSetAttribute opt-in
constexpr int kSmCount = 132;                  // an H100's multiprocessors
constexpr auto kDeadlock = std::chrono::seconds(120);  // a barrier wait this long is one

inline std::atomic<size_t> shared_limit{kSharedPerBlock};  // tests lower it: a launch fails
inline std::atomic<uint64_t> launches{0};      // kernels launched, for the tests
inline thread_local cudaError_t last_error = cudaSuccess;

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "CUDA emulator: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

inline cudaError_t record(cudaError_t e) {
  if (e != cudaSuccess) last_error = e;
  return e;
}

// Where a thread waits: a barrier's name and call site.
struct Site {
  const char* what;
  const char* file;
  int line;
  bool operator==(const Site& o) const {
    return line == o.line && std::strcmp(what, o.what) == 0 && std::strcmp(file, o.file) == 0;
  }
};

[[noreturn]] inline void fail(const char* what, const Site& site) {
  std::fprintf(stderr, "CUDA emulator: %s: %s at %s:%d\n", what, site.what, site.file, site.line);
  std::fflush(stderr);
  std::abort();
}

// Waiting on a 32-bit word with a futex: no lock between the waker and the
// woken, so that a barrier of 256 threads on 2 cores costs little more than
// 256 context switches. The words' atomics order the memory; the futex only
// sleeps.
inline void futex_wait(std::atomic<uint32_t>& word, uint32_t value, const timespec* timeout) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, value, timeout,
          nullptr, 0);
}
inline void wake_all(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr,
          nullptr, 0);
}
// Returns once `word` differs from `value` (acquiring); with a `site`, a wait
// longer than kDeadlock is reported as a deadlock there. Yielding twice first
// lets the group's other threads arrive, so that a waiter often sees the round
// end without sleeping (barriers twice as fast, 256 threads on 2 cores).
inline void wait_while(std::atomic<uint32_t>& word, uint32_t value, const Site* site = nullptr) {
  for (int i = 0; i < 2 && word.load(std::memory_order_acquire) == value; ++i) sched_yield();
  const auto deadline = std::chrono::steady_clock::now() + kDeadlock;
  const timespec second{1, 0};
  while (word.load(std::memory_order_acquire) == value) {
    futex_wait(word, value, site ? &second : nullptr);
    if (site && std::chrono::steady_clock::now() > deadline)
      fail("deadlock: a thread of the group never reached this barrier", *site);
  }
}

// A reusable barrier of n threads. All arrivals of a round must come from one
// call site: threads of a block waiting at different barriers is an error.
class Barrier {
 public:
  void reset(unsigned n) { n_ = n; }
  void wait(const Site& site) {
    // Read the round before arriving: the last arrival ends it.
    const uint32_t round = round_.load(std::memory_order_acquire);
    const Site* first = nullptr;  // the round's first arrival's site, alive until it ends
    if (!first_.compare_exchange_strong(first, &site, std::memory_order_acq_rel) &&
        !(*first == site))
      fail("threads of one group wait at different barriers", site);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      arrived_.store(0, std::memory_order_relaxed);
      first_.store(nullptr, std::memory_order_relaxed);
      round_.fetch_add(1, std::memory_order_release);
      wake_all(round_);
      return;
    }
    wait_while(round_, round, &site);
  }

 private:
  unsigned n_ = 0;
  std::atomic<unsigned> arrived_{0};
  std::atomic<uint32_t> round_{0};
  std::atomic<const Site*> first_{nullptr};
};

struct Warp {
  Barrier barrier;
  unsigned lanes = 0;         // the block's threads in this warp
  uint64_t slot[2][kWarp];    // one value per lane, in alternate exchanges
  unsigned exchanges[kWarp] = {};  // per lane: exchanges it has entered
};

struct Block {
  Barrier barrier;
  std::unique_ptr<Warp[]> warps;
  std::unique_ptr<unsigned char[]> shared;  // dynamic shared memory
};

inline thread_local Block* block = nullptr;  // the block this thread runs
inline thread_local unsigned thread_rank = 0;  // x fastest, then y, z

inline unsigned lane() { return thread_rank % kWarp; }

// The calling lane's warp; `mask` must name exactly its lanes.
inline Warp& warp(unsigned mask, const Site& site) {
  if (!block) fail("warp intrinsic outside a kernel", site);
  Warp& w = block->warps[thread_rank / kWarp];
  const unsigned all = w.lanes == kWarp ? ~0u : (1u << w.lanes) - 1u;
  if (mask != all) fail("warp mask other than the warp's lanes (absent lanes are undefined)", site);
  return w;
}

// Every lane of the warp publishes `value` and, after the warp's barrier, sees
// all lanes' values. The two slot arrays alternate: a lane rewrites one only
// after the next exchange's barrier, which each lane reaches after reading it.
inline const uint64_t* exchange(Warp& w, uint64_t value, const Site& site) {
  const unsigned l = lane();
  uint64_t* slots = w.slot[w.exchanges[l]++ % 2];
  slots[l] = value;
  w.barrier.wait(site);
  return slots;
}

// n threads that run fn(i), i in [0, n), each on its own thread, and return
// when all have. One run at a time (the caller holds the launch lock).
class Pool {
 public:
  explicit Pool(unsigned n) {
    for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this, i] { work(i); });
  }
  ~Pool() {
    stop_.store(true, std::memory_order_relaxed);
    round_.fetch_add(1, std::memory_order_release);
    wake_all(round_);
    for (std::thread& t : threads_) t.join();
  }
  void run(const std::function<void(unsigned)>& fn) {
    fn_ = &fn;
    pending_.store(unsigned(threads_.size()), std::memory_order_relaxed);
    round_.fetch_add(1, std::memory_order_release);
    wake_all(round_);
    for (uint32_t p; (p = pending_.load(std::memory_order_acquire)) != 0;)
      futex_wait(pending_, p, nullptr);
  }

 private:
  void work(unsigned i) {
    for (uint32_t round = 0;; ++round) {
      wait_while(round_, round);
      if (stop_.load(std::memory_order_relaxed)) return;
      (*fn_)(i);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) wake_all(pending_);
    }
  }

  std::vector<std::thread> threads_;
  const std::function<void(unsigned)>* fn_ = nullptr;
  std::atomic<uint32_t> round_{0}, pending_{0};
  std::atomic<bool> stop_{false};
};

inline std::mutex& launch_lock() {
  static std::mutex m;
  return m;
}

// Runs `body` as a kernel of configuration `c`, block after block.
inline cudaError_t launch(const cudaLaunchConfig_t& c, const std::function<void()>& body) {
  const dim3 g = c.gridDim, b = c.blockDim;
  const uint64_t threads = uint64_t(b.x) * b.y * b.z;
  if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 ||
      threads > 1024 || g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu ||
      g.y > 65535 || g.z > 65535)
    return record(cudaErrorInvalidConfiguration);
  if (c.dynamicSmemBytes > shared_limit || c.numAttrs != 0) return record(cudaErrorInvalidValue);

  std::lock_guard<std::mutex> one_launch(launch_lock());
  ++launches;
  const unsigned n = unsigned(threads), warps = (n + kWarp - 1) / kWarp;
  static std::vector<std::unique_ptr<Pool>> pools;  // [n]: n threads, for blocks of n
  if (pools.size() <= n) pools.resize(n + 1);
  if (!pools[n]) pools[n] = std::make_unique<Pool>(n);
  Block blk;
  blk.barrier.reset(n);
  blk.warps.reset(new Warp[warps]);
  for (unsigned w = 0; w < warps; ++w) {
    blk.warps[w].lanes = w + 1 < warps ? kWarp : n - w * kWarp;
    blk.warps[w].barrier.reset(blk.warps[w].lanes);
  }
  for (unsigned z = 0; z < g.z; ++z)
    for (unsigned y = 0; y < g.y; ++y)
      for (unsigned x = 0; x < g.x; ++x) {
        blk.shared.reset(new unsigned char[c.dynamicSmemBytes]);
        std::memset(blk.shared.get(), 0xff, c.dynamicSmemBytes);
        pools[n]->run([&](unsigned r) {
          threadIdx = uint3{r % b.x, r / b.x % b.y, r / (b.x * b.y)};
          blockIdx = uint3{x, y, z};
          blockDim = b;
          gridDim = g;
          block = &blk;
          thread_rank = r;
          body();
          block = nullptr;
        });
      }
  return cudaSuccess;
}

inline unsigned char* dynamic_shared() {
  if (!block) fail("dynamic shared memory outside a kernel");
  return block->shared.get();
}

}  // namespace jra_emu

// ------------------------------------------------------------ device side

// Trailing parameters whose defaults are the caller's file and line.
#define JRA_EMU_CALLER const char *file = __builtin_FILE(), int line = __builtin_LINE()
#define JRA_EMU_HERE(what) jra_emu::Site{what, file, line}

inline void __syncthreads(JRA_EMU_CALLER) {
  if (!jra_emu::block) jra_emu::fail("__syncthreads() outside a kernel");
  jra_emu::block->barrier.wait(JRA_EMU_HERE("__syncthreads()"));
}

template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = int(jra_emu::kWarp),
                 JRA_EMU_CALLER) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(uint64_t), "shfl type");
  const jra_emu::Site site = JRA_EMU_HERE("__shfl_up_sync");
  if (width != int(jra_emu::kWarp)) jra_emu::fail("width other than 32", site);
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof var);
  const uint64_t* slots = jra_emu::exchange(jra_emu::warp(mask, site), bits, site);
  const unsigned lane = jra_emu::lane();
  T out = var;  // lanes below `delta` keep their own value
  if (lane >= delta) std::memcpy(&out, &slots[lane - delta], sizeof out);
  return out;
}

inline unsigned __ballot_sync(unsigned mask, int predicate, JRA_EMU_CALLER) {
  const jra_emu::Site site = JRA_EMU_HERE("__ballot_sync");
  jra_emu::Warp& w = jra_emu::warp(mask, site);
  const uint64_t* slots = jra_emu::exchange(w, predicate != 0, site);
  unsigned bits = 0;
  for (unsigned l = 0; l < w.lanes; ++l) bits |= unsigned(slots[l]) << l;
  return bits;
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }

template <typename T>
T atomicAdd(T* address, T value) {
  T old, sum;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  do sum = old + value;
  while (!__atomic_compare_exchange(address, &old, &sum, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}

// ------------------------------------------------------------ host side

template <typename... Params, typename... Args>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(Params...),
                               Args&&... args) {
  // The kernel's parameters, converted as a launch converts them; each thread
  // receives its own copy.
  const std::tuple<Params...> params(std::forward<Args>(args)...);
  return jra_emu::launch(*config, [&] { std::apply(kernel, params); });
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = jra_emu::last_error;
  jra_emu::last_error = cudaSuccess;
  return e;
}

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (attr != cudaDevAttrMultiProcessorCount || device != 0)
    return jra_emu::record(cudaErrorInvalidValue);
  *value = jra_emu::kSmCount;
  return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}

inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
  }
  return "cudaErrorUnknown";
}

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}
