// The CPU kernels' inner loops: one sample (or one corner) over a run of n
// output channels, `Unit` when consecutive channels are adjacent in memory
// (channel-last data; the compiler then vectorises across channels), and the
// transpositions between the features' layout and a task's channel-last
// copy. Each channel's arithmetic, and its order, is the per-channel loop's
// (the peers'), so vectorising changes no bit.
//
// Compiled once per instruction set (instruction_sets.h): no include guard,
// everything lives in namespace jax_roialign::cpu::JRA_CPU_ISA.
#ifndef JRA_CPU_ISA
#error "channel_loops.h is compiled per instruction set: include instruction_sets.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../roi_common.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace jax_roialign::cpu::JRA_CPU_ISA {

// One element as A, and one A rounded to T: load<A> and store<T>, with the
// avx2 build's F16C instructions for float16 (the same bits: the conversion
// to float is exact, the one back rounds to nearest even as to_half does).
template <typename A, typename E>
inline A load_element(E v) {
  if constexpr (std::is_same_v<A, E>) {
    return v;
  } else {
#if JRA_CPU_F16C
    if constexpr (std::is_same_v<E, Half>) return A(_cvtsh_ss(v.bits));
#endif
    return load<A>(v);
  }
}
template <typename T, typename A>
inline T store_element(A a) {
#if JRA_CPU_F16C
  if constexpr (std::is_same_v<T, Half> && std::is_same_v<A, float>)
    return Half{uint16_t(_cvtss_sh(a, _MM_FROUND_TO_NEAREST_INT))};
#endif
  return store<T>(a);
}

// acc[c] += the sample's value at channel c, for c in [0, n); `img` is channel
// 0 of pixel 0, `ps` the pixel stride, `cs` the channel stride (1 if Unit).
template <bool Unit, typename A, typename E, typename G>
inline void add_sample(A* __restrict acc, const E* img, const Sample<G>& p, int64_t ps,
                       int64_t cs, int64_t n) {
  const int64_t step = Unit ? 1 : cs;
  const E* __restrict q0 = img + p.at[0] * ps;
  switch (p.kind) {
    case SampleKind::kEmpty:
      return;
    case SampleKind::kCell:
      for (int64_t c = 0; c < n; ++c) acc[c] += load_element<A>(q0[c * step]);
      return;
    case SampleKind::kLerp: {
      const E* __restrict q1 = img + p.at[1] * ps;
      const E* __restrict q2 = img + p.at[2] * ps;
      const E* __restrict q3 = img + p.at[3] * ps;
      const A xl = A(p.w[0]), yl = A(p.w[1]);
      for (int64_t c = 0; c < n; ++c) {
        const A f0 = load_element<A>(q0[c * step]), f1 = load_element<A>(q1[c * step]);
        const A f2 = load_element<A>(q2[c * step]), f3 = load_element<A>(q3[c * step]);
        const A top = f0 + (f1 - f0) * xl;
        const A bottom = f2 + (f3 - f2) * xl;
        acc[c] += top + (bottom - top) * yl;
      }
      return;
    }
    case SampleKind::kBilinear:
      break;
  }
  const E* __restrict q1 = img + p.at[1] * ps;
  const E* __restrict q2 = img + p.at[2] * ps;
  const E* __restrict q3 = img + p.at[3] * ps;
  const A w0 = A(p.w[0]), w1 = A(p.w[1]), w2 = A(p.w[2]), w3 = A(p.w[3]);
  for (int64_t c = 0; c < n; ++c)
    acc[c] += w0 * load_element<A>(q0[c * step]) + w1 * load_element<A>(q1[c * step]) +
              w2 * load_element<A>(q2[c * step]) + w3 * load_element<A>(q3[c * step]);
}

// The bytes of one vector: an AVX-512 register in the avx512 build; else 32
// (one AVX2 register, two SSE2 or NEON registers).
constexpr int kVectorBytes = JRA_CPU_VECTOR_BYTES;

// Channels per register block of add_samples_block: 128 bytes of A in every
// build (four 32-byte vectors, two 64-byte ones), so that every build runs
// the same channel counts (multiples of 32 float32 channels) in whole blocks.
template <typename A>
constexpr int64_t kBlock = 128 / sizeof(A);

// Channels per wide register block, kBlock's multiple: max mode's loops and
// the avg backward's (max_block, max_samples_block, scatter_samples_block)
// run these first, then kBlock's, then the channels left. 256 bytes of A
// (four vectors) in the avx512 build, else kBlock (the avx2 build's 16
// registers hold no more). Measured on one thread (benchmarks/cpu_kernels.py,
// best of 5 calls, alternating; benchmarks/README.md, "16 x 16 transposes,
// wide blocks"): the avg backward 1.05-1.17x faster on the FPN level and the
// C4 and mask heads, roi_pool's forward 1.1x on the FPN level and the mask
// head; the avg forward ran 5% slower on the C4 head with it, so keeps kBlock.
template <typename A>
constexpr int64_t kWideBlock = kVectorBytes == 64 ? 256 / sizeof(A) : kBlock<A>;

template <typename A>
struct Vector;  // kVectorBytes of A
template <>
struct Vector<float> { typedef float type __attribute__((vector_size(kVectorBytes))); };
template <>
struct Vector<double> { typedef double type __attribute__((vector_size(kVectorBytes))); };

// Elements of A in a vector.
template <typename A>
constexpr int kLanesOf = kVectorBytes / sizeof(A);

// The kLanesOf<A> elements at q, as a vector of A (exact conversions).
template <typename A>
inline typename Vector<A>::type load_vector(const A* q) {
  typename Vector<A>::type v;
  std::memcpy(&v, q, sizeof v);
  return v;
}
inline Vector<float>::type load_vector(const BFloat16* q) {
#if defined(__x86_64__) && JRA_CPU_VECTOR_BYTES == 64
  // One widening load (vpmovzxwd zmm): GCC builds the generic form below from
  // two 8-lane halves and an insert (bfloat16 forward measured 25% slower
  // than float16's).
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  return __builtin_bit_cast(Vector<float>::type,
                            _mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
#else
  typedef uint16_t Bits16 __attribute__((vector_size(kVectorBytes / 2)));
  typedef uint32_t Bits32 __attribute__((vector_size(kVectorBytes)));
  Bits16 b;
  std::memcpy(&b, q, sizeof b);
  const Bits32 u = __builtin_convertvector(b, Bits32) << 16;
  return __builtin_bit_cast(Vector<float>::type, u);
#endif
}
inline Vector<float>::type load_vector(const Half* q) {
#if JRA_CPU_F16C && JRA_CPU_VECTOR_BYTES == 64
  // One conversion: two 32-byte halves joined through memory cost a failed
  // store-to-load forward per load (float16 forward measured 4x slower). GCC
  // 12 warns, wrongly, of an uninitialised variable inside _mm512_cvtph_ps.
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  return __builtin_bit_cast(Vector<float>::type, _mm512_cvtph_ps(bits));
#elif JRA_CPU_F16C
  return __builtin_bit_cast(Vector<float>::type,
                            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
#else
  float f[kLanesOf<float>];
  for (int i = 0; i < kLanesOf<float>; ++i) f[i] = to_float(q[i]);
  return load_vector(f);
#endif
}

// to_bfloat16's bits for each lane of u, a vector of floats' bits: its
// integer rounding to nearest even, NaN kept quiet, across the lanes.
template <typename U16, typename U32>
inline U16 bfloat16_lanes(const U32& u) {
  const U32 nan = (u & 0x7fffffffu) > 0x7f800000u;
  const U32 rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return __builtin_convertvector(nan ? (u >> 16) | 0x40u : rounded, U16);
}

// out[0, n) = src[0, n) rounded to T (store_element), eight at a time for
// bfloat16 (bfloat16_lanes) and, in the avx2 build, float16.
template <typename T, typename A>
inline void store_run(T* __restrict out, const A* __restrict src, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, BFloat16> && std::is_same_v<A, float>) {
    typedef uint32_t U32 __attribute__((vector_size(32)));
    typedef uint16_t U16 __attribute__((vector_size(16)));
    for (; i + 8 <= n; i += 8) {
      U32 u;
      std::memcpy(&u, src + i, sizeof u);
      const U16 b = bfloat16_lanes<U16>(u);
      std::memcpy(out + i, &b, sizeof b);
    }
  }
#if JRA_CPU_F16C
  if constexpr (std::is_same_v<T, Half> && std::is_same_v<A, float>)
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; ++i) out[i] = store_element<T>(src[i]);
}

// out[0, n) = src[0, n) as A, exactly (load_element's values), a vector at a
// time where src holds 16-bit floats and A is float (load_vector).
template <typename A, typename E>
inline void load_run(A* __restrict out, const E* __restrict src, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<A, float> && (std::is_same_v<E, Half> ||
                                             std::is_same_v<E, BFloat16>))
    for (; i + kLanesOf<float> <= n; i += kLanesOf<float>) {
      const Vector<float>::type v = load_vector(src + i);
      std::memcpy(out + i, &v, sizeof v);
    }
  for (; i < n; ++i) out[i] = load_element<A>(src[i]);
}

// fn(v, value) for v in [0, kVecs): sample s's value (sample_value's, lane by
// lane) at vector v of the kVecs * kLanesOf<A> adjacent channels starting
// at `img` (channel c of pixel 0). One switch per sample, outside the vectors.
template <int kVecs, typename A, typename E, typename G, typename Fn>
__attribute__((always_inline)) inline void each_vector(const Sample<G>& s, const E* img,
                                                       int64_t ps, Fn&& fn) {
  using Vec = typename Vector<A>::type;
  constexpr int kLanes = kLanesOf<A>;
  switch (s.kind) {
    case SampleKind::kEmpty:
      for (int v = 0; v < kVecs; ++v) fn(v, Vec{} + A(0));
      return;
    case SampleKind::kCell: {
      const E* q0 = img + s.at[0] * ps;
      for (int v = 0; v < kVecs; ++v) fn(v, load_vector(q0 + v * kLanes));
      return;
    }
    case SampleKind::kLerp: {
      const E *q0 = img + s.at[0] * ps, *q1 = img + s.at[1] * ps;
      const E *q2 = img + s.at[2] * ps, *q3 = img + s.at[3] * ps;
      const A xl = A(s.w[0]), yl = A(s.w[1]);
      for (int v = 0; v < kVecs; ++v) {
        const Vec f0 = load_vector(q0 + v * kLanes), f1 = load_vector(q1 + v * kLanes);
        const Vec f2 = load_vector(q2 + v * kLanes), f3 = load_vector(q3 + v * kLanes);
        const Vec top = f0 + (f1 - f0) * xl;
        const Vec bottom = f2 + (f3 - f2) * xl;
        fn(v, top + (bottom - top) * yl);
      }
      return;
    }
    case SampleKind::kBilinear: {
      const E *q0 = img + s.at[0] * ps, *q1 = img + s.at[1] * ps;
      const E *q2 = img + s.at[2] * ps, *q3 = img + s.at[3] * ps;
      const A w0 = A(s.w[0]), w1 = A(s.w[1]), w2 = A(s.w[2]), w3 = A(s.w[3]);
      for (int v = 0; v < kVecs; ++v)
        fn(v, w0 * load_vector(q0 + v * kLanes) + w1 * load_vector(q1 + v * kLanes) +
                  w2 * load_vector(q2 + v * kLanes) + w3 * load_vector(q3 + v * kLanes));
      return;
    }
  }
}


// add_sample over samples p[0, count) for kBlock<A> adjacent channels, the
// block's sums held in registers across the samples: per channel the same
// operations, in the same order, as add_sample's.
template <typename A, typename E, typename G>
inline void add_samples_block(A* __restrict acc, const E* img, const Sample<G>* p, int64_t count,
                              int64_t ps) {
  using Vec = typename Vector<A>::type;
  constexpr int kLanes = kLanesOf<A>, kVecs = kBlock<A> / kLanes;
  Vec a[kVecs];
  for (int v = 0; v < kVecs; ++v) a[v] = load_vector(acc + v * kLanes);
  for (int64_t i = 0; i < count; ++i) {
    if (p[i].kind == SampleKind::kEmpty) continue;  // add_sample adds nothing
    each_vector<kVecs, A>(p[i], img, ps, [&](int v, const Vec& x) { a[v] += x; });
  }
  for (int v = 0; v < kVecs; ++v) std::memcpy(acc + v * kLanes, &a[v], sizeof a[v]);
}

// Max mode's running winner of a channel (or of each lane): the first largest
// sample value so far. NaN never wins (docs/semantics.md). Branch-free (select,
// not jump): comparisons of random data would mispredict and the loop would not
// vectorise. `Track`: the winner's sample index too, < 0 while there is none;
// else the value alone, which is NaN while there is none (a winner never is).
template <bool Track, typename V, typename I, typename Index>
__attribute__((always_inline)) inline void update_max(V& best, I& arg, const V& x, Index index) {
  if constexpr (Track) {
    const auto better = ((arg < 0) & (x == x)) | (x > best);
    best = better ? x : best;
    arg = better ? index : arg;
  } else {
    const auto better = (best != best) | (x > best);
    best = better ? x : best;
  }
}

// update_max of n channels with sample `index` (its value p at each).
template <bool Track, bool Unit, typename A, typename E, typename G>
inline void max_sample(A* __restrict best, int32_t* __restrict arg, const E* img,
                       const Sample<G>& p, int32_t index, int64_t ps, int64_t cs, int64_t n) {
  const int64_t step = Unit ? 1 : cs;
  int32_t none = -1;  // the index update_max ignores when not tracking
  auto update = [&](int64_t c, A v) { update_max<Track>(best[c], Track ? arg[c] : none, v, index); };
  if (p.kind != SampleKind::kBilinear) {
    for (int64_t c = 0; c < n; ++c)
      update(c, sample_value<A>(
                    p, [&](int64_t at) { return load_element<A>(img[at * ps + c * step]); }));
    return;
  }
  const E* __restrict q0 = img + p.at[0] * ps;
  const E* __restrict q1 = img + p.at[1] * ps;
  const E* __restrict q2 = img + p.at[2] * ps;
  const E* __restrict q3 = img + p.at[3] * ps;
  const A w0 = A(p.w[0]), w1 = A(p.w[1]), w2 = A(p.w[2]), w3 = A(p.w[3]);
  for (int64_t c = 0; c < n; ++c)
    update(c, w0 * load_element<A>(q0[c * step]) + w1 * load_element<A>(q1[c * step]) +
                  w2 * load_element<A>(q2[c * step]) + w3 * load_element<A>(q3[c * step]));
}

// Whether dividing by d is multiplying by 1 / d exactly (d a power of two):
// both round the same exact quotient once. A bit test, not frexp: it runs once
// per bin.
template <typename A>
inline bool exact_reciprocal(A d) {
  static_assert(std::numeric_limits<A>::is_iec559);
  using Bits = std::conditional_t<sizeof(A) == 4, uint32_t, uint64_t>;
  constexpr int kMantissa = std::numeric_limits<A>::digits - 1;
  constexpr Bits kExponentMax = (Bits(1) << (8 * sizeof(A) - 1 - kMantissa)) - 1;
  const Bits b = __builtin_bit_cast(Bits, d);
  const Bits exponent = b >> kMantissa;  // d > 0: no sign bit
  // A normal power of two: no mantissa bits, an exponent neither 0 nor all ones.
  return d > A(0) && (b & ((Bits(1) << kMantissa) - 1)) == 0 && exponent != 0 &&
         exponent != kExponentMax;
}

// Outputs at least this large are written with streaming (non-temporal)
// stores: they cannot stay in the last-level cache for their reader anyway,
// and a streaming store skips reading each line before writing it. Writers
// that stream end with stream_fence().
constexpr int64_t kStreamBytes = int64_t{32} << 20;

// An NCHW feature gradient summed in channel-last copies (kernels.h's Packed)
// is copied back into its planes with streaming stores from this size, below
// kStreamBytes: the copy writes many planes' runs interleaved, and a plain
// store first reads each line. Measured through jax on two threads (a jitted
// backward, then a jitted sum of the gradient's squares; medians of 20 calls,
// an Intel Xeon): the mask head's NCHW roi_align backward (a 27.9 MB gradient)
// 11.7-11.8 (once 17.9) -> 9.4-9.6 ms streamed, with its reader 11.8-15.6
// -> 10.7-10.9; its roi_pool's 11.7-12.5 -> 9.7-10.5, with its reader
// 11.3-12.6 -> 11.0-12.1. The small head's (8.4 MB) streamed: the backward
// unchanged, with its reader 1.8-2.1 -> 2.2-3.3 ms.
constexpr int64_t kStreamGradientBytes = int64_t{16} << 20;

// Stores the vector v at q: streaming when asked, on x86-64, and q is aligned
// to the vector; plainly otherwise.
template <typename A, typename Vec>
inline void store_vector(A* q, const Vec& v, bool stream) {
  static_assert(sizeof v == kVectorBytes);
#if defined(__x86_64__)
  if (stream && (reinterpret_cast<uintptr_t>(q) & (kVectorBytes - 1)) == 0) {
    // The bytes as they are, whatever A is: a streaming store moves bits.
    float* f = reinterpret_cast<float*>(q);
#if JRA_CPU_VECTOR_BYTES == 64  // the avx512 build
    _mm512_stream_ps(f, __builtin_bit_cast(__m512, v));
#elif JRA_CPU_F16C  // the avx2 build
    _mm256_stream_ps(f, __builtin_bit_cast(__m256, v));
#else
    __m128 h[2];
    std::memcpy(h, &v, sizeof v);
    _mm_stream_ps(f, h[0]);
    _mm_stream_ps(f + 4, h[1]);
#endif
    return;
  }
#else
  (void)stream;
#endif
  std::memcpy(q, &v, sizeof v);
}

// out[0, n) = src[0, n), streamed (store_vector) from the first vector-aligned
// element of out on.
template <typename T>
inline void stream_run(T* __restrict out, const T* __restrict src, int64_t n) {
  constexpr int64_t kStep = kVectorBytes / int64_t(sizeof(T));
  int64_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(out + i) & (kVectorBytes - 1)) != 0; ++i)
    out[i] = src[i];
  typedef char Bytes __attribute__((vector_size(kVectorBytes)));
  for (; i + kStep <= n; i += kStep) {
    Bytes v;
    std::memcpy(&v, src + i, sizeof v);
    store_vector(out + i, v, true);
  }
  for (; i < n; ++i) out[i] = src[i];
}

// Orders a task's streaming stores before whatever signals its completion.
inline void stream_fence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

// Half a vector's bytes: a vector of float rounded to a 16-bit type.
typedef uint16_t HalfVector __attribute__((vector_size(kVectorBytes / 2)));

// The vector q rounded to T, a 16-bit float (store_element's bits): F16C for
// float16 where the build has it, else lane by lane; bfloat16 by
// bfloat16_lanes.
template <typename T>
inline HalfVector narrow(const Vector<float>::type& q) {
  static_assert(std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>);
  if constexpr (std::is_same_v<T, BFloat16>) {
    typedef uint32_t U32 __attribute__((vector_size(kVectorBytes)));
    return bfloat16_lanes<HalfVector>(__builtin_bit_cast(U32, q));
  } else {
#if JRA_CPU_F16C && JRA_CPU_VECTOR_BYTES == 64
    return __builtin_bit_cast(HalfVector, _mm512_cvtps_ph(__builtin_bit_cast(__m512, q),
                                                          _MM_FROUND_TO_NEAREST_INT));
#elif JRA_CPU_F16C
    return __builtin_bit_cast(HalfVector, _mm256_cvtps_ph(__builtin_bit_cast(__m256, q),
                                                          _MM_FROUND_TO_NEAREST_INT));
#else
    HalfVector h;
    for (int i = 0; i < kLanesOf<float>; ++i) h[i] = store_element<Half>(q[i]).bits;
    return h;
#endif
  }
}

// The vector q of A at `out` as T: store_vector where T is A; a 16-bit T
// rounded in registers (narrow) and stored as half a vector. Streamed when
// `stream` and `out` is aligned to what is stored, on x86-64.
template <typename T, typename A>
inline void store_output(T* out, const typename Vector<A>::type& q, bool stream) {
  if constexpr (std::is_same_v<T, A>) {
    store_vector(out, q, stream);
  } else if constexpr (std::is_same_v<A, float> && sizeof(T) == 2) {
    const HalfVector h = narrow<T>(q);
#if defined(__x86_64__)
    if (stream && (reinterpret_cast<uintptr_t>(out) & (sizeof h - 1)) == 0) {
#if JRA_CPU_VECTOR_BYTES == 64
      _mm256_stream_si256(reinterpret_cast<__m256i*>(out), __builtin_bit_cast(__m256i, h));
#else
      _mm_stream_si128(reinterpret_cast<__m128i*>(out), __builtin_bit_cast(__m128i, h));
#endif
      return;
    }
#endif
    std::memcpy(out, &h, sizeof h);
  } else {
    static_assert(std::is_same_v<T, A>,
                  "a 16-bit output accumulates in float, every other in its own type");
  }
}

// out[c] = (the sum of samples p[0, count) at channel c) / divisor, rounded to
// T, for kBlock<A> adjacent channels of `img` and of `out`: add_samples_block
// from zero, then forward_avg's division (a product by `inv` when `exact`, as
// in scatter_corner), without the round trip through memory; streamed
// (store_vector) when `stream`.
template <typename T, typename A, typename E, typename G>
inline void average_block(T* out, const E* img, const Sample<G>* p, int64_t count, int64_t ps,
                          A divisor, bool exact, A inv, bool stream) {
  using Vec = typename Vector<A>::type;
  constexpr int kLanes = kLanesOf<A>, kVecs = kBlock<A> / kLanes;
  Vec a[kVecs];
  for (int v = 0; v < kVecs; ++v) a[v] = Vec{} + A(0);
  for (int64_t i = 0; i < count; ++i) {
    if (p[i].kind == SampleKind::kEmpty) continue;
    each_vector<kVecs, A>(p[i], img, ps, [&](int v, const Vec& x) { a[v] += x; });
  }
  for (int v = 0; v < kVecs; ++v)
    store_output<T, A>(out + v * kLanes, exact ? a[v] * inv : a[v] / divisor, stream);
}

// max_sample over samples p[0, count) (indices first, first + 1, ...) for
// kChannels (kBlock's or kWideBlock's) adjacent channels, the block's best
// values (and winners) held in registers: per channel the same comparisons,
// in the same order.
template <bool Track, int64_t kChannels, typename A, typename E, typename G>
inline void max_samples_block(A* __restrict best, int32_t* __restrict arg, const E* img,
                              const Sample<G>* p, int32_t first, int64_t count, int64_t ps) {
  using Vec = typename Vector<A>::type;
  using Int = std::conditional_t<sizeof(A) == 4, int32_t, int64_t>;  // a lane's mask and index
  typedef Int Ints __attribute__((vector_size(kVectorBytes)));
  constexpr int kLanes = kLanesOf<A>, kVecs = kChannels / kLanes;
  typedef int32_t Int32s __attribute__((vector_size(kLanes * 4)));
  Vec b[kVecs];
  Ints a[kVecs];
  for (int v = 0; v < kVecs; ++v) {
    b[v] = load_vector(best + v * kLanes);
    if constexpr (Track) {
      Int32s a32;
      std::memcpy(&a32, arg + v * kLanes, sizeof a32);
      a[v] = __builtin_convertvector(a32, Ints);
    }
  }
  for (int64_t i = 0; i < count; ++i) {
    const Int index = Int(first + i);
    each_vector<kVecs, A>(p[i], img, ps,
                          [&](int v, const Vec& x) { update_max<Track>(b[v], a[v], x, index); });
  }
  for (int v = 0; v < kVecs; ++v) {
    std::memcpy(best + v * kLanes, &b[v], sizeof b[v]);
    if constexpr (Track) {
      const Int32s a32 = __builtin_convertvector(a[v], Int32s);
      std::memcpy(arg + v * kLanes, &a32, sizeof a32);
    }
  }
}

// A max-mode forward's outputs of kChannels (kBlock's or kWideBlock's)
// adjacent channels of one bin whose samples p[0, count) are one chunk:
// max_samples_block from no winner, then the implicit-0 rule (kernels.h
// forward_max's; `outside`: the bin has outside samples, the first preceding
// sample `first_after`), without the round trip through memory. The outputs
// go to `out` (streamed when `stream`, as store_vector), the winners to `win`
// unless it is null. Winners are tracked only where recorded or the rule
// needs them.
template <typename T, typename A, int64_t kChannels, typename E, typename G>
inline void max_block(T* out, int32_t* win, const E* img, const Sample<G>* p, int64_t count,
                      int64_t ps, bool outside, int64_t first_after, bool stream) {
  using Vec = typename Vector<A>::type;
  using Int = std::conditional_t<sizeof(A) == 4, int32_t, int64_t>;
  typedef Int Ints __attribute__((vector_size(kVectorBytes)));
  constexpr int kLanes = kLanesOf<A>, kVecs = kChannels / kLanes;
  typedef int32_t Int32s __attribute__((vector_size(kLanes * 4)));
  Vec b[kVecs];
  Ints a[kVecs];
  auto store = [&](int v, const Vec& q) { store_output<T, A>(out + v * kLanes, q, stream); };
  if (!win && !outside) {
    for (int v = 0; v < kVecs; ++v) b[v] = Vec{} + std::numeric_limits<A>::quiet_NaN();
    for (int64_t i = 0; i < count; ++i)
      each_vector<kVecs, A>(p[i], img, ps,
                            [&](int v, const Vec& x) { update_max<false>(b[v], a[v], x, 0); });
    for (int v = 0; v < kVecs; ++v) store(v, b[v] != b[v] ? Vec{} + A(0) : b[v]);
    return;
  }
  for (int v = 0; v < kVecs; ++v) b[v] = Vec{} + A(0), a[v] = Ints{} - 1;
  for (int64_t i = 0; i < count; ++i) {
    const Int index = Int(i);
    each_vector<kVecs, A>(p[i], img, ps,
                          [&](int v, const Vec& x) { update_max<true>(b[v], a[v], x, index); });
  }
  const Int after = Int(std::min<int64_t>(first_after, std::numeric_limits<Int>::max()));
  for (int v = 0; v < kVecs; ++v) {
    const Vec zero = Vec{} + A(0);
    Ints none = a[v] < 0;
    if (outside) none |= (zero > b[v]) | ((zero == b[v]) & (a[v] >= after));
    a[v] = none ? Int(-1) : a[v];
    store(v, none ? zero : b[v]);
    if (win) {
      const Int32s a32 = __builtin_convertvector(a[v], Int32s);
      std::memcpy(win + v * kLanes, &a32, sizeof a32);
    }
  }
}

// dst[c] += g[c] * w / divisor (torchvision's order), c in [0, n); `inv`, when
// exact_reciprocal(divisor), is 1 / divisor.
template <bool Unit, typename A>
inline void scatter_corner(A* __restrict dst, const A* __restrict g, A w, A divisor, bool exact,
                           A inv, int64_t cs, int64_t n) {
  const int64_t step = Unit ? 1 : cs;
  if (exact) {
    for (int64_t c = 0; c < n; ++c) dst[c * step] += g[c] * w * inv;
  } else {
    for (int64_t c = 0; c < n; ++c) dst[c * step] += g[c] * w / divisor;
  }
}

// The gradient g[c] through one sample into its corners of `img` (a
// channel-0, pixel-0 pointer), in the order scatter_sample (roi_common.h) adds them.
template <bool Unit, typename A, typename G>
inline void scatter_sample_channels(A* img, const A* g, const Sample<G>& p, A divisor, bool exact,
                                    A inv, int64_t ps, int64_t cs, int64_t n) {
  const int64_t step = Unit ? 1 : cs;
  switch (p.kind) {
    case SampleKind::kEmpty:
      return;
    case SampleKind::kCell:
      scatter_corner<Unit>(img + p.at[0] * ps, g, A(p.w[0]), divisor, exact, inv, cs, n);
      return;
    case SampleKind::kLerp: {  // TensorFlow: (1 - x_lerp or x_lerp) * ((1 - y_lerp or y_lerp) * g)
      const A xl = A(p.w[0]), yl = A(p.w[1]);
      A* __restrict q0 = img + p.at[0] * ps;
      for (int64_t c = 0; c < n; ++c) q0[c * step] += (A(1) - xl) * ((A(1) - yl) * g[c]);
      A* __restrict q1 = img + p.at[1] * ps;
      for (int64_t c = 0; c < n; ++c) q1[c * step] += xl * ((A(1) - yl) * g[c]);
      A* __restrict q2 = img + p.at[2] * ps;
      for (int64_t c = 0; c < n; ++c) q2[c * step] += (A(1) - xl) * (yl * g[c]);
      A* __restrict q3 = img + p.at[3] * ps;
      for (int64_t c = 0; c < n; ++c) q3[c * step] += xl * (yl * g[c]);
      return;
    }
    case SampleKind::kBilinear:
      break;
  }
  for (int j = 0; j < 4; ++j)
    scatter_corner<Unit>(img + p.at[j] * ps, g, A(p.w[j]), divisor, exact, inv, cs, n);
}

// scatter_sample_channels over samples p[0, count) for kChannels (kBlock's
// or kWideBlock's) adjacent channels, the block's cotangents held in
// registers: per element the same terms, in the same order, as
// scatter_sample_channels adds them.
template <int64_t kChannels, typename A, typename G>
inline void scatter_samples_block(A* img, const A* g, const Sample<G>* p, int64_t count,
                                  A divisor, bool exact, A inv, int64_t ps) {
  using Vec = typename Vector<A>::type;
  constexpr int kLanes = kLanesOf<A>, kVecs = kChannels / kLanes;
  Vec gv[kVecs];
  for (int v = 0; v < kVecs; ++v) std::memcpy(&gv[v], g + v * kLanes, sizeof gv[v]);
  auto add = [](A* q, const Vec& term) {
    Vec d;
    std::memcpy(&d, q, sizeof d);
    d += term;
    std::memcpy(q, &d, sizeof d);
  };
  auto corner = [&](A* q, A w) {
    if (exact) {
      for (int v = 0; v < kVecs; ++v) add(q + v * kLanes, gv[v] * w * inv);
    } else {
      for (int v = 0; v < kVecs; ++v) add(q + v * kLanes, gv[v] * w / divisor);
    }
  };
  for (int64_t i = 0; i < count; ++i) {
    const Sample<G>& s = p[i];
    switch (s.kind) {
      case SampleKind::kEmpty:
        break;
      case SampleKind::kCell:
        corner(img + s.at[0] * ps, A(s.w[0]));
        break;
      case SampleKind::kLerp: {  // scatter_sample_channels' order and rounding
        const A xl = A(s.w[0]), yl = A(s.w[1]);
        for (int v = 0; v < kVecs; ++v)
          add(img + s.at[0] * ps + v * kLanes, (A(1) - xl) * ((A(1) - yl) * gv[v]));
        for (int v = 0; v < kVecs; ++v)
          add(img + s.at[1] * ps + v * kLanes, xl * ((A(1) - yl) * gv[v]));
        for (int v = 0; v < kVecs; ++v)
          add(img + s.at[2] * ps + v * kLanes, (A(1) - xl) * (yl * gv[v]));
        for (int v = 0; v < kVecs; ++v)
          add(img + s.at[3] * ps + v * kLanes, xl * (yl * gv[v]));
        break;
      }
      case SampleKind::kBilinear:
        for (int j = 0; j < 4; ++j) corner(img + s.at[j] * ps, A(s.w[j]));
        break;
    }
  }
}

// Max mode's backward for one bin over n adjacent channels, sample by
// sample: for each of the bin's `count` samples i, the channels whose winner
// win[c] is i add g[c] * weight / 1 at each of its kCorners corners in turn
// (offsets cell[i * kCorners + j], weights weight[...]; those outside
// [p0, p1) skipped where kBanded): scatter_winners' terms, bit for bit; the
// rest keep their value. A channel has one winner per bin, so each element
// gets its terms in scatter_winners' order. A vector of channels per corner
// rather than a scattered element per channel and corner: fewer
// instructions where the bin has few samples.
template <int kCorners, bool kBanded, typename A, typename C>
inline void add_winners_by_sample(A* img, const C* g, const int32_t* win, const int64_t* cell,
                                  const A* weight, int64_t count, int64_t n, int64_t p0,
                                  int64_t p1) {
  using Vec = typename Vector<A>::type;
  using Lane = std::conditional_t<sizeof(A) == 8, int64_t, int32_t>;
  constexpr int kLanes = kLanesOf<A>;
  typedef Lane Lanes __attribute__((vector_size(kVectorBytes)));
  typedef int32_t Wins __attribute__((vector_size(kLanes * 4)));
  auto inside = [&](int64_t at) { return !kBanded || (at >= p0 && at < p1); };
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    const Vec gv = load_vector(g + c);
    Wins wi;
    std::memcpy(&wi, win + c, sizeof wi);
    const Lanes wv = __builtin_convertvector(wi, Lanes);
    for (int64_t i = 0; i < count; ++i) {
      const Lanes mine = wv == Lane(i);
      for (int j = 0; j < kCorners; ++j) {
        const int64_t at = cell[i * kCorners + j];
        if (!inside(at)) continue;
        A* q = img + at + c;
        Vec d;
        std::memcpy(&d, q, sizeof d);
        d = mine ? d + gv * weight[i * kCorners + j] / A(1) : d;
        std::memcpy(q, &d, sizeof d);
      }
    }
  }
  for (; c < n; ++c) {
    const int32_t i = win[c];
    if (i < 0 || i >= count) continue;
    const A gc = load_element<A>(g[c]);
    for (int j = 0; j < kCorners; ++j) {
      const int64_t at = cell[i * kCorners + j];
      if (inside(at)) img[at + c] += gc * weight[i * kCorners + j] / A(1);
    }
  }
}

#if JRA_CPU_F16C
// Eight elements at q as floats, exactly (load_element's values): 4-byte
// types as their bits, float16 with F16C, bfloat16 shifted into place.
template <typename S>
inline __m256 load8(const S* q) {
  const __m128i* h = reinterpret_cast<const __m128i*>(q);
  if constexpr (std::is_same_v<S, Half>) return _mm256_cvtph_ps(_mm_loadu_si128(h));
  if constexpr (std::is_same_v<S, BFloat16>)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(h)), 16));
  if constexpr (sizeof(S) == 4) return _mm256_loadu_ps(reinterpret_cast<const float*>(q));
}
#endif

#if JRA_CPU_F16C
// Stores v's eight floats at q as D: 4-byte types as their bits, 16-bit
// floats rounded as store_element rounds them (store_run's conversions).
template <typename D>
inline void store8(D* q, __m256 v) {
  __m128i* h = reinterpret_cast<__m128i*>(q);
  if constexpr (std::is_same_v<D, Half>) {
    _mm_storeu_si128(h, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  } else if constexpr (std::is_same_v<D, BFloat16>) {
    store_run(q, reinterpret_cast<const float*>(&v), 8);
  } else {
    static_assert(sizeof(D) == 4);
    _mm256_storeu_ps(reinterpret_cast<float*>(q), v);
  }
}
#endif

template <typename T>
constexpr bool kFloat16 = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

// dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols, as D
// (load_element widening, store_element rounding). Through register tiles,
// columns outer (each tile column's rows written in turn): 16 x 16 with
// AVX-512 where D and S are the same 4-byte type; 8 x 8 with AVX where they
// are, or one is float and the other a 16-bit float; 4 x 4 with SSE2 for the
// same 4-byte type; 8 x 8 with SSE2 for the same 2-byte type; element by
// element where none applies.
// kStream: the 16 x 16 tiles' rows that start on a cache line are written
// with streaming stores (the avx512 build; the AVX tiles' half lines measured
// slower streamed).
template <typename D, typename S, bool kStream = false>
inline void transpose(D* __restrict dst, int64_t ds, const S* __restrict src, int64_t ss,
                      int64_t rows, int64_t cols) {
  auto one = [&](int64_t i, int64_t j) {
    if constexpr (std::is_same_v<D, S>) dst[j * ds + i] = src[i * ss + j];
    else if constexpr (sizeof(D) < sizeof(S)) dst[j * ds + i] = store_element<D>(src[i * ss + j]);
    else dst[j * ds + i] = load_element<D>(src[i * ss + j]);
  };
  auto ones = [&](int64_t i0, int64_t j0, int64_t width) {  // rows [i0, rows) of `width` columns
    for (int64_t j = j0; j < j0 + width; ++j)
      for (int64_t i = i0; i < rows; ++i) one(i, j);
  };
  int64_t j0 = 0;
#if defined(__x86_64__)
  constexpr bool kBits = sizeof(D) == 4 && std::is_same_v<D, S>;
  constexpr bool kConvert = (std::is_same_v<D, float> && kFloat16<S>) ||
                          (std::is_same_v<S, float> && kFloat16<D>);
  auto tile4 = [&](int64_t i, int64_t j) {  // rows [i, i + 4) x columns [j, j + 4)
    const float* s = reinterpret_cast<const float*>(src + i * ss + j);
    float* d = reinterpret_cast<float*>(dst + j * ds + i);
    __m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + ss), r2 = _mm_loadu_ps(s + 2 * ss),
           r3 = _mm_loadu_ps(s + 3 * ss);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_storeu_ps(d, r0);
    _mm_storeu_ps(d + ds, r1);
    _mm_storeu_ps(d + 2 * ds, r2);
    _mm_storeu_ps(d + 3 * ds, r3);
  };
#if JRA_CPU_F16C  // the avx2 and avx512 builds: AVX
  // Generic: instantiated only where called (load8 and store8 take 4- and 2-byte types).
  auto tile8 = [&](auto i, auto j) {  // rows [i, i + 8) x columns [j, j + 8)
    const S* s = src + i * ss + j;
    D* d = dst + j * ds + i;
    __m256 r[8], t[8];
    for (int q = 0; q < 8; ++q) r[q] = load8(s + q * ss);
    for (int q = 0; q < 8; q += 2) {
      t[q] = _mm256_unpacklo_ps(r[q], r[q + 1]);
      t[q + 1] = _mm256_unpackhi_ps(r[q], r[q + 1]);
    }
    for (int h = 0; h < 8; h += 4) {
      r[h] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
      r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
      r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
      r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // r[q] (q < 4): columns q (low half) and q + 4 (high), rows 0-3 of
    // the tile; r[q + 4]: the same of rows 4-7.
    for (int q = 0; q < 4; ++q) {
      store8(d + q * ds, _mm256_permute2f128_ps(r[q], r[q + 4], 0x20));
      store8(d + (q + 4) * ds, _mm256_permute2f128_ps(r[q], r[q + 4], 0x31));
    }
  };
#endif
#if JRA_CPU_VECTOR_BYTES == 64  // the avx512 build
  if constexpr (kBits) {
    // The masked forms, all lanes set (GCC 12's unmasked ones pass the
    // builtins an "undefined" register that -Wuninitialized reports).
    constexpr __mmask16 kAll = 0xFFFF;
    // Rows [i, i + 16) x columns [j, j + 16). Within each 128-bit lane L,
    // as tile8: u[4g + q] holds column 4L + q of rows 4g to 4g + 3. Column
    // 4L + q is then lane L of u[q], u[4 + q], u[8 + q], u[12 + q]: a 4 x 4
    // transpose of lanes.
    auto tile16 = [&](int64_t i, int64_t j) {
      const float* s = reinterpret_cast<const float*>(src + i * ss + j);
      float* d = reinterpret_cast<float*>(dst + j * ds + i);
      __m512 r[16], t[16];
      for (int q = 0; q < 16; ++q) r[q] = _mm512_loadu_ps(s + q * ss);
      for (int q = 0; q < 16; q += 2) {
        t[q] = _mm512_mask_unpacklo_ps(r[q], kAll, r[q], r[q + 1]);
        t[q + 1] = _mm512_mask_unpackhi_ps(r[q], kAll, r[q], r[q + 1]);
      }
      for (int h = 0; h < 16; h += 4) {  // r = u
        const __m512 *a = t + h, *b = t + h + 2;  // then t + h + 1, t + h + 3
        for (int k = 0; k < 4; k += 2, ++a, ++b) {
          r[h + k] = _mm512_mask_shuffle_ps(*a, kAll, *a, *b, _MM_SHUFFLE(1, 0, 1, 0));
          r[h + k + 1] = _mm512_mask_shuffle_ps(*a, kAll, *a, *b, _MM_SHUFFLE(3, 2, 3, 2));
        }
      }
      auto lanes = [&](__m512 a, __m512 b, auto imm) {
        return _mm512_mask_shuffle_f32x4(a, kAll, a, b, decltype(imm)::value);
      };
      using Lo = std::integral_constant<int, 0x44>;  // lanes 0, 1 of a, then of b
      using Hi = std::integral_constant<int, 0xEE>;  // lanes 2, 3
      using Even = std::integral_constant<int, 0x88>;  // lanes 0, 2 of a, then of b
      using Odd = std::integral_constant<int, 0xDD>;  // lanes 1, 3
      auto put = [](float* at, __m512 v) {
        if (kStream && (reinterpret_cast<uintptr_t>(at) & 63) == 0) _mm512_stream_ps(at, v);
        else _mm512_storeu_ps(at, v);
      };
      for (int q = 0; q < 4; ++q) {
        // e: lanes 0, 1 of u[q], then of u[4 + q]; f: lanes 2, 3; g, h: the
        // same of u[8 + q] and u[12 + q].
        const __m512 e = lanes(r[q], r[4 + q], Lo{}), f = lanes(r[q], r[4 + q], Hi{});
        const __m512 g = lanes(r[8 + q], r[12 + q], Lo{}), h = lanes(r[8 + q], r[12 + q], Hi{});
        put(d + q * ds, lanes(e, g, Even{}));
        put(d + (4 + q) * ds, lanes(e, g, Odd{}));
        put(d + (8 + q) * ds, lanes(f, h, Even{}));
        put(d + (12 + q) * ds, lanes(f, h, Odd{}));
      }
    };
    for (; j0 + 16 <= cols; j0 += 16) {
      int64_t i0 = 0;
      for (; i0 + 16 <= rows; i0 += 16) tile16(i0, j0);
      for (; i0 + 8 <= rows; i0 += 8) tile8(i0, j0), tile8(i0, j0 + 8);
      for (; i0 + 4 <= rows; i0 += 4)
        for (int64_t j = j0; j < j0 + 16; j += 4) tile4(i0, j);
      ones(i0, j0, 16);
    }
  }
#endif
  if constexpr (sizeof(D) == 2 && std::is_same_v<D, S>) {
    for (; j0 + 8 <= cols; j0 += 8) {
      int64_t i0 = 0;
      for (; i0 + 8 <= rows; i0 += 8) {
        const S* s = src + i0 * ss + j0;
        D* d = dst + j0 * ds + i0;
        __m128i r[8], t[8];
        for (int q = 0; q < 8; ++q)
          r[q] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + q * ss));
        // t[q], t[q + 1] (q even): rows q and q + 1 interleaved, columns 0-3 and 4-7.
        for (int q = 0; q < 8; q += 2) {
          t[q] = _mm_unpacklo_epi16(r[q], r[q + 1]);
          t[q + 1] = _mm_unpackhi_epi16(r[q], r[q + 1]);
        }
        // r[k] (k < 4): rows 0-3 of columns 2k and 2k + 1; r[k + 4]: rows 4-7.
        for (int h = 0; h < 8; h += 4) {
          r[h] = _mm_unpacklo_epi32(t[h], t[h + 2]);
          r[h + 1] = _mm_unpackhi_epi32(t[h], t[h + 2]);
          r[h + 2] = _mm_unpacklo_epi32(t[h + 1], t[h + 3]);
          r[h + 3] = _mm_unpackhi_epi32(t[h + 1], t[h + 3]);
        }
        for (int k = 0; k < 4; ++k) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 2 * k * ds),
                           _mm_unpacklo_epi64(r[k], r[k + 4]));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(d + (2 * k + 1) * ds),
                           _mm_unpackhi_epi64(r[k], r[k + 4]));
        }
      }
      ones(i0, j0, 8);
    }
  }
  if constexpr (kBits || kConvert) {
    for (; j0 + 4 <= cols;) {
      int64_t i0 = 0;
#if JRA_CPU_F16C
      if (j0 + 8 <= cols) {
        for (; i0 + 8 <= rows; i0 += 8) tile8(i0, j0);
        // The rows left: 4 x 4 tiles of 4-byte types, then element by element.
        if constexpr (kBits)
          for (; i0 + 4 <= rows; i0 += 4) tile4(i0, j0), tile4(i0, j0 + 4);
        ones(i0, j0, 8);
        j0 += 8;
        continue;
      }
#endif
      if constexpr (kBits)
        for (; i0 + 4 <= rows; i0 += 4) tile4(i0, j0);
      ones(i0, j0, 4);
      j0 += 4;
    }
  }
#endif
  ones(0, j0, cols - j0);
}

// A task's channel-last copy of one image: dst[p * stride + slot[i]] = the
// image's channel i at pixel p (src[i * cs + p * ps]), for the m channels i and
// the hw pixels p. Planes (ps == 1) are transposed in tiles, so that a tile's
// row reads and column writes stay in cache.
template <typename A, typename E>
inline void to_channel_last(A* dst, int64_t stride, const int64_t* slot, const E* src, int64_t cs,
                            int64_t ps, int64_t m, int64_t hw) {
  if (ps != 1) {
    for (int64_t p = 0; p < hw; ++p)
      for (int64_t i = 0; i < m; ++i)
        dst[p * stride + slot[i]] = load_element<A>(src[i * cs + p * ps]);
    return;
  }
  bool identity = true;
  for (int64_t i = 0; i < m; ++i) identity &= slot[i] == i;
  // Planes are transposed kGroup at a time, in runs of kRun pixels (128
  // bytes of float32: a pair of lines). Measured on one thread
  // (benchmarks/cpu_kernels.py, an Intel Xeon) against all planes at once in
  // 16-pixel runs (8 at a time in 128-pixel runs where the planes are a power
  // of two apart), the NCHW forward: the FPN level's roi_align 1.15x faster,
  // its roi_pool 1.12x, the mask head's 1.16x and 1.19x, the small head's
  // roi_align 1.10x; the C4 head's 0.98x, within its spread. 16 or 64 planes
  // at a time measured within 32's spread; runs of 16, 64 or 128 pixels,
  // slower on the FPN level.
  constexpr int64_t kGroup = 32, kRun = 32;
  const int64_t group = std::min(kGroup, m), tile = kRun;
  for (int64_t p0 = 0; p0 < hw; p0 += tile) {
    const int64_t np = std::min(tile, hw - p0);
    if (identity) {  // whole pixel runs: no slot lookups
      for (int64_t i0 = 0; i0 < m; i0 += group) {
        // The group's next runs prefetched first: the planes are read as m
        // interleaved streams, more than the hardware prefetchers appear to
        // follow. Measured on one thread (benchmarks/cpu_kernels.py, an Intel
        // Xeon): the FPN level's NCHW roi_align forward 71-74 -> 56-57 ms, the
        // mask head's 20.0-20.4 -> 18.8-19.1; the C4 and small heads' within
        // their spread.
        if (p0 + tile < hw) {
          const int64_t bytes = std::min(tile, hw - p0 - tile) * int64_t(sizeof(E));
          for (int64_t i = i0; i < std::min(m, i0 + group); ++i)
            for (int64_t b = 0; b < bytes; b += 64)
              __builtin_prefetch(reinterpret_cast<const char*>(src + i * cs + p0 + tile) + b);
        }
        transpose(dst + p0 * stride + i0, stride, src + i0 * cs + p0, cs,
                  std::min(group, m - i0), np);
      }
      continue;
    }
    for (int64_t i = 0; i < m; ++i) {
      const E* __restrict s = src + i * cs + p0;
      A* __restrict d = dst + p0 * stride + slot[i];
      for (int64_t p = 0; p < np; ++p) d[p * stride] = load_element<A>(s[p]);
    }
  }
}

// The inverse, rounding to the storage type: the image's channel i at pixel p
// (dst[i * cs + p * ps]) = src[p * stride + slot[i]]. `stream`: planes are
// written with streaming stores where transpose takes them (a gradient of
// kStreamGradientBytes or more). Measured on one thread
// (benchmarks/cpu_kernels.py, an Intel Xeon): the FPN level's NCHW roi_align
// backward 78 -> 44-49 ms; the mask head's (a 28 MB gradient) 22.2 -> 17.6.
template <typename T, typename A>
inline void from_channel_last(T* dst, int64_t cs, int64_t ps, const A* src, int64_t stride,
                              const int64_t* slot, int64_t m, int64_t hw, bool stream) {
  bool identity = true;
  for (int64_t i = 0; i < m; ++i) identity &= slot[i] == i;
  if (ps != 1) {
    if (identity && cs == 1) {  // channel-last both: a pixel's run at a time
      for (int64_t p = 0; p < hw; ++p) store_run(dst + p * ps, src + p * stride, m);
      return;
    }
    for (int64_t p = 0; p < hw; ++p)
      for (int64_t i = 0; i < m; ++i)
        dst[i * cs + p * ps] = store_element<T>(src[p * stride + slot[i]]);
    return;
  }
  // Runs of 128 pixels into each plane (16 pixels: the copy measured 20-30%
  // slower on the small, mask and C4 heads' gradients).
  constexpr int64_t kTile = 128;
  for (int64_t p0 = 0; p0 < hw; p0 += kTile) {
    const int64_t np = std::min(kTile, hw - p0);
    if (identity) {
      if (stream) transpose<T, A, true>(dst + p0, cs, src + p0 * stride, stride, np, m);
      else transpose(dst + p0, cs, src + p0 * stride, stride, np, m);
      continue;
    }
    for (int64_t i = 0; i < m; ++i) {
      T* __restrict d = dst + i * cs + p0;
      const A* __restrict s = src + p0 * stride + slot[i];
      for (int64_t p = 0; p < np; ++p) d[p] = store_element<T>(s[p * stride]);
    }
  }
  if (stream) stream_fence();
}

}  // namespace jax_roialign::cpu::JRA_CPU_ISA
