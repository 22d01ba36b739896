// The five RoI kernels on CUDA, for every operator and storage type. The
// samples come from cc/bin_sampler.h (which turns roi_align.h, roi_pool.h and
// legacy.h into "sample i of this (roi, bin)"), exactly as on the CPU: the same
// in-window samples in the same order, the same max-mode winners (index of
// the winning sample among the bin's in-window samples, iy-major; -1 when an
// implicit outside zero or an empty grid wins), the same divisors, the same
// per-element expressions as cc/cpu/kernels.h. Floating-point results may
// differ from the CPU's in the last bits: nvcc contracts a*b+c into FMA (as
// torchvision's CUDA kernels are built); the CPU build does not.
//
// Work mapping
// ------------
// A block takes a "unit": one roi, up to kUnitBins of its bins, and a range of
// output channels. It builds the BinSampler of each of its bins in shared
// memory (one thread per bin), then enumerates the bins' samples into a
// shared-memory table (one thread per sample: taps, weights, and for the box
// kernels the slopes), and only then walks the unit's output elements
// ("items"), reading every sample's geometry from the table: the geometry is
// computed once per block and reused by every channel. Items are walked in
// output order so that stores coalesce:
//   NHWC  item (bin, c), c fastest: a warp covers 32 consecutive channels of a
//         bin, each corner load of a sample is one coalesced access, and the
//         loop bounds are warp-uniform;
//   NCHW  item (c, bin), bin fastest: a warp covers neighbouring bins of one
//         channel plane (torchvision's mapping); their loads share the
//         plane's cache lines.
// Bins whose samples exceed the table are processed in several passes; a
// single bin larger than the table (a huge fixed sampling_ratio, or a huge box
// on a huge map) computes its samples where they are used, from the same
// sampler. Only in-window samples exist: a huge box costs what a box the size
// of the map costs. With few rois, a roi's channels are split over several
// blocks (each rebuilds the cheap geometry) so that the GPU fills.
//
// backward_features
// -----------------
// Fast path (float32/float64, deterministic=0): the forward mapping, each item
// scattering g * w / count into the gradient, zeroed first with
// cudaMemsetAsync on the stream, by atomicAdd; the order of the additions, so
// the last bits, vary run to run.
// Deterministic path (deterministic=1; always for float16/bfloat16, which so
// accumulate in float32 with no scratch buffer and round once): a block owns
// a spatial tile x up to 64 (float64: 32) input channels of one image,
// accumulated in shared memory, one thread per channel. It walks the rois of
// its image in index order -- an order-preserving parallel filter drops those
// whose box (plus a margin) misses the tile -- builds each remaining roi's
// sample tables with corner positions relative to the tile, and each thread
// adds its channel's contributions in (roi, bin, sample, corner) order: the CPU
// kernel's order, so results are bit-identical run to run. Each gradient
// element is written once: no memset, no atomics, no scratch memory. Cost over
// the atomic path (not measured here; no GPU on the build machine): every
// block reads the boxes of its whole image (all K rows for the (K, 5) form),
// and a roi overlapping T tiles has its samplers and tables built, and its
// samples scanned, T times per channel group; the additions themselves are as
// many as in the atomic path, in shared instead of global memory. Expect a few
// times the atomic path's time for Detectron-sized workloads.
//
// backward_boxes: one block per roi over all its bins and channels; every
// thread sums its items' terms in double in a fixed order, then a fixed tree
// reduces the block: deterministic.
#include <cuda_runtime.h>  // the toolkit's; the tests' emulator's in cc/cuda/emulator/

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "../bin_sampler.h"
#include "launch.h"

namespace jax_roialign::cuda {
namespace {

constexpr int kThreads = 256;               // items and box-gradient kernels
constexpr int kMinBlocks = 3;               // resident blocks per SM they are built for
constexpr size_t kSmemBytes = 48 * 1024;     // static + dynamic shared memory without opt-in
constexpr size_t kStaticSmemMargin = 1024;  // the kernels' static shared arrays, bounded
constexpr int64_t kUnitBins = 32;           // samplers a block holds at once
constexpr size_t kItemsTableBytes = 16 * 1024;  // sample table of the items kernels
constexpr int64_t kMaxCount = int64_t(1) << 40;  // saturates sample counts in sums

template <typename X>
JRA_HD X imin(X a, X b) { return a < b ? a : b; }
template <typename X>
JRA_HD X imax(X a, X b) { return a < b ? b : a; }

JRA_HD size_t align16(size_t n) { return (n + 15) & ~size_t(15); }

// a / b and a % b, in 32 bits when both fit (64-bit division is slow on GPUs).
JRA_HD void divmod(int64_t a, int64_t b, int64_t* q, int64_t* r) {
  if (((a | b) >> 31) == 0) {
    const uint32_t ua = uint32_t(a), ub = uint32_t(b), uq = ua / ub;
    *q = uq;
    *r = ua - uq * ub;
  } else {
    *q = a / b;
    *r = a - *q * b;
  }
}

JRA_HD int64_t pixel_stride(const RoiCall& s) { return s.layout == Layout::kNHWC ? s.C : 1; }

// The block's dynamic shared memory, 16-byte aligned. The host emulator of
// the tests (cc/cuda/emulator/) has no `extern __shared__`: it gives each
// block its own buffer.
__device__ __forceinline__ unsigned char* dynamic_smem() {
#if defined(JRA_CUDA_EMULATOR)
  return jra_emu::dynamic_shared();
#else
  extern __shared__ __align__(16) unsigned char smem[];
  return smem;
#endif
}

// ------------------------------------------------------------- sample tables

template <typename G>
struct ValueEntry {   // forward, forward_selected, atomic backward
  int32_t at[4];      // corner offsets y * W + x
  G w[4];
  SampleKind kind;

  __device__ Sample<G> sample() const {
    Sample<G> p;
    p.kind = kind;
    for (int j = 0; j < 4; ++j) {
      p.at[j] = at[j];
      p.w[j] = w[j];
    }
    return p;
  }
};

template <typename G_>
struct ValueMaker {
  using G = G_;
  using Entry = ValueEntry<G_>;
  __device__ Entry operator()(const BinSampler<G>& b, int64_t i) const {
    const Sample<G> p = b.sample(i);
    Entry e;
    for (int j = 0; j < 4; ++j) {
      e.at[j] = int32_t(p.at[j]);
      e.w[j] = p.w[j];
    }
    e.kind = p.kind;
    return e;
  }
};

// The directional derivative of each corner weight along the box tangent t.
template <typename G>
__device__ void weight_derivatives(const SampleSlopes<G>& d, const G* t, int64_t coords,
                                   G dw[4]) {
  G ydot = G(0), xdot = G(0);
  for (int64_t j = 0; j < coords; ++j) {
    if (d.dpos[0][j] != G(0)) ydot += d.dpos[0][j] * t[j];
    if (d.dpos[1][j] != G(0)) xdot += d.dpos[1][j] * t[j];
  }
  for (int j = 0; j < 4; ++j) dw[j] = d.dy[j] * ydot + d.dx[j] * xdot;
}

template <typename G>
struct JvpEntry {     // forward_boxes: directional derivative of each corner weight
  int32_t at[4];
  G dw[4];
};

template <typename G_>
struct JvpMaker {
  using G = G_;
  using Entry = JvpEntry<G_>;
  G t[kMaxBoxCoords];  // the roi's rois_dot coordinates
  int64_t coords;
  __device__ Entry operator()(const BinSampler<G>& b, int64_t i) const {
    SampleSlopes<G> d;
    const Sample<G> p = b.sample(i, &d);
    Entry e;
    for (int j = 0; j < 4; ++j) e.at[j] = int32_t(p.at[j]);  // reads all four, as the CPU
    weight_derivatives(d, t, coords, e.dw);
    return e;
  }
};

template <typename G>
struct VjpEntry {     // backward_boxes
  int32_t at[4];
  G dy[4], dx[4];
  G dpos[2][kMaxBoxCoords];
};

template <typename G_>
struct VjpMaker {
  using G = G_;
  using Entry = VjpEntry<G_>;
  __device__ Entry operator()(const BinSampler<G>& b, int64_t i) const {
    SampleSlopes<G> d;
    const Sample<G> p = b.sample(i, &d);
    Entry e;
    for (int j = 0; j < 4; ++j) {
      e.at[j] = int32_t(p.at[j]);
      e.dy[j] = d.dy[j];
      e.dx[j] = d.dx[j];
    }
    for (int a = 0; a < 2; ++a)
      for (int64_t j = 0; j < kMaxBoxCoords; ++j) e.dpos[a][j] = d.dpos[a][j];
    return e;
  }
};

template <typename G>
struct alignas(16) TileEntry {  // deterministic backward: corners as tile-local pixels, -1 outside
  int32_t loc[4];
  G w[4];
  SampleKind kind;

  // The sample with tile-local corners.
  __device__ Sample<G> sample() const {
    Sample<G> p;
    p.kind = kind;
    for (int j = 0; j < 4; ++j) {
      p.at[j] = loc[j];
      p.w[j] = w[j];
    }
    return p;
  }
};

template <typename G_>
struct TileMaker {
  using G = G_;
  using Entry = TileEntry<G_>;
  int64_t y0, x0, tile_h, tile_w, W;
  __device__ Entry operator()(const BinSampler<G>& b, int64_t i) const {
    const Sample<G> p = b.sample(i);
    Entry e;
    e.kind = p.kind;
    for (int j = 0; j < 4; ++j) {
      e.w[j] = p.w[j];
      e.loc[j] = -1;
      const int64_t y = p.at[j] / W, x = p.at[j] - y * W;
      if (y >= y0 && y < y0 + tile_h && x >= x0 && x < x0 + tile_w)
        e.loc[j] = int32_t((y - y0) * tile_w + (x - x0));
    }
    return e;
  }
};

// A block's samplers and sample table in shared memory.
template <typename G, typename Entry>
struct Unit {
  BinSampler<G>* samplers;   // kUnitBins
  int64_t* off;              // kUnitBins + 1: prefix sums of the (saturated) counts
  Entry* table;              // cap entries
  int64_t cap;
};

template <typename G, typename Entry>
JRA_HD size_t unit_bytes(int64_t cap) {
  return align16(sizeof(BinSampler<G>) * kUnitBins) + align16(sizeof(int64_t) * (kUnitBins + 1)) +
         align16(sizeof(Entry) * size_t(cap));
}

template <typename G, typename Entry>
__device__ Unit<G, Entry> unit_at(unsigned char* p, int64_t cap) {
  Unit<G, Entry> u;
  u.samplers = reinterpret_cast<BinSampler<G>*>(p);
  p += align16(sizeof(BinSampler<G>) * kUnitBins);
  u.off = reinterpret_cast<int64_t*>(p);
  p += align16(sizeof(int64_t) * (kUnitBins + 1));
  u.table = reinterpret_cast<Entry*>(p);
  u.cap = cap;
  return u;
}

// Samplers of bins [b0, b0 + nb) of roi k, and their offsets. Every thread of
// the block calls it (it synchronises; it starts with a barrier, so the
// previous samplers and table may be read until the call).
template <typename G, typename Entry>
__device__ void load_samplers(const RoiCall& s, const G* rois, const int32_t* levels, int64_t k,
                              int64_t b0, int64_t nb, const Unit<G, Entry>& u) {
  __syncthreads();
  for (int64_t t = threadIdx.x; t < nb; t += blockDim.x)
    u.samplers[t] = bin_sampler(s, rois, levels, k, b0 + t);
  __syncthreads();
  if (threadIdx.x < 32) {  // nb <= 32: one lane per bin, a warp scan
    const unsigned lane = threadIdx.x;
    const int64_t count = lane < nb ? imin(imax<int64_t>(u.samplers[lane].count(), 0), kMaxCount) : 0;
    int64_t incl = count;
    for (unsigned d = 1; d < 32; d <<= 1) {
      const int64_t v = __shfl_up_sync(0xffffffffu, incl, d);
      if (lane >= d) incl += v;
    }
    if (lane == 0) u.off[0] = 0;
    if (lane < nb) u.off[lane + 1] = incl;
  }
  __syncthreads();
}

// The pass after bin p0: bins [p0, p1) whose samples fit the table together
// (at least one bin; a lone bin that does not fit is not tabled).
template <typename G, typename Entry>
__device__ int64_t pass_end(const Unit<G, Entry>& u, int64_t p0, int64_t nb) {
  int64_t p1 = p0 + 1;
  while (p1 < nb && u.off[p1 + 1] - u.off[p0] <= u.cap) ++p1;
  return p1;
}

// A sample's entry, computed out of line: it runs once per sample per block
// (or, for a bin larger than the table, where used), and inlining the
// operator's geometry would cost the hot loops their registers.
template <typename Maker>
__device__ __noinline__ typename Maker::Entry make_entry(const Maker& make,
                                                         const BinSampler<typename Maker::G>& b,
                                                         int64_t i) {
  return make(b, i);
}

// Fills the table with the samples of bins [p0, p1) (when they fit).
template <typename G, typename Maker>
__device__ void fill_table(const Unit<G, typename Maker::Entry>& u, int64_t p0, int64_t p1,
                           const Maker& make) {
  const int64_t base = u.off[p0], n = u.off[p1] - base;
  for (int64_t e = threadIdx.x; e < n; e += blockDim.x) {
    int64_t lo = p0, hi = p1;  // the last bin p with off[p] <= base + e
    while (hi - lo > 1) {
      const int64_t m = lo + (hi - lo) / 2;
      if (u.off[m] <= base + e) lo = m; else hi = m;
    }
    u.table[e] = make_entry(make, u.samplers[lo], base + e - u.off[lo]);
  }
  __syncthreads();
}

// Sample i of local bin bl in the current pass: from the table, or computed.
template <typename G, typename Maker>
struct PassView {
  const Unit<G, typename Maker::Entry>* u;
  const Maker* make;
  int64_t base;
  bool tabled;

  __device__ typename Maker::Entry operator()(int64_t bl, int64_t i) const {
    return tabled ? u->table[u->off[bl] - base + i] : make_entry(*make, u->samplers[bl], i);
  }
};

// ------------------------------------------------------------------ kernels

// The launch parameters of every kernel.
template <typename T>
struct Args {
  using G = typename Types<T>::Geometry;
  using A = typename Types<T>::Accum;
  RoiCall s;
  const T* features[kMaxLevels];  // one per level
  const T* in;               // the cotangent of backward_features
  const G* rois;
  const int32_t* levels;     // per roi; empty for one level
  const G* rois_dot;         // forward_boxes
  const int32_t* winner_in;
  int32_t* winner_out;        // forward, max mode: null where not recorded
  T* out;                    // forward outputs
  T* grad_out[kMaxLevels];   // grad_features (deterministic path)
  A* grad[kMaxLevels];       // atomic backward: grad_features, zeroed
  const T* ct;               // backward_boxes cotangent
  G* grad_rois;
  int64_t splits;            // channel ranges per (roi, bin chunk)
  int64_t cap;               // table entries
};

enum class Kind : int { kForward, kForwardSelected, kForwardBoxes, kBackwardFeatures };

template <typename T, Kind K>
struct KindMaker {
  using type = ValueMaker<typename Types<T>::Geometry>;
};
template <typename T>
struct KindMaker<T, Kind::kForwardBoxes> {
  using type = JvpMaker<typename Types<T>::Geometry>;
};

// Item (c, bin) of the unit's roi at output offset o; `bl` is the bin's local
// index, `sample(bl, i)` its samples.
template <typename T, Kind K, typename View>
__device__ void item(const Args<T>& a, const BinSampler<typename Types<T>::Geometry>& b,
                     const View& sample, int64_t bl, int64_t c, int64_t bin, int64_t o) {
  using G = typename Types<T>::Geometry;
  using A = typename Types<T>::Accum;
  const RoiCall& s = a.s;
  const int64_t ps = pixel_stride(s);
  const int64_t base = s.feature_offset(b.level, b.image, s.input_channel(c, bin), 0);
  const int64_t n = b.count();
  const bool avg = s.mode == PoolMode::kAvg;

  if constexpr (K == Kind::kBackwardFeatures) {
    const A g = load<A>(a.in[o]);
    if (g == A(0)) return;  // it would add exact zeros
    A* img = a.grad[b.level] + base;
    auto add = [&](int64_t at, A v) { atomicAdd(img + at * ps, v); };
    if (avg) {
      const A divisor = A(b.divisor);
      for (int64_t i = 0; i < n; ++i) scatter_sample(sample(bl, i).sample(), g, divisor, add);
    } else {
      const int32_t w = a.winner_in[o];
      if (w < 0 || w >= n) return;
      scatter_sample(sample(bl, w).sample(), g, A(1), add);
    }
  } else if constexpr (K == Kind::kForwardBoxes) {
    const T* img = a.features[b.level] + base;
    A v = A(0);
    int64_t i0 = 0, i1 = n;
    if (!avg) {
      const int32_t w = a.winner_in[o];
      i0 = w >= 0 && w < n ? w : n;
      i1 = i0 < n ? i0 + 1 : n;
    }
    for (int64_t i = i0; i < i1; ++i) {
      const JvpEntry<G> e = sample(bl, i);
      for (int j = 0; j < 4; ++j) v += A(e.dw[j]) * load<A>(img[int64_t(e.at[j]) * ps]);
    }
    a.out[o] = store<T>(v / A(b.divisor));
  } else {
    const T* img = a.features[b.level] + base;
    auto read = [&](int64_t at) { return load<A>(img[at * ps]); };
    if (avg) {
      A acc = A(0);
      for (int64_t i = 0; i < n; ++i) acc += sample_value<A>(sample(bl, i).sample(), read);
      // A bin without samples: the forward's fill (crop_and_resize's extrapolation
      // value), the linear part's 0.
      const bool fill = n == 0 && K == Kind::kForward;
      a.out[o] = store<T>(fill ? A(s.fill) : acc / A(b.divisor));
    } else if constexpr (K == Kind::kForwardSelected) {
      const int32_t w = a.winner_in[o];
      a.out[o] = store<T>(w >= 0 && w < n ? sample_value<A>(sample(bl, w).sample(), read) : A(0));
    } else {
      // cpu/channel_loops.h max_sample: the first maximum in grid order; an implicit
      // outside zero wins ties against the samples after it.
      int64_t arg = -1;
      A m = A(0);
      for (int64_t i = 0; i < n; ++i) {
        const A v = sample_value<A>(sample(bl, i).sample(), read);
        if ((arg < 0 && v == v) || v > m) {  // NaN never wins
          m = v;
          arg = i;
        }
      }
      if (b.outside_from != kNever &&
          (arg < 0 || A(0) > m || (A(0) == m && b.outside_precedes(arg)))) {
        m = A(0);
        arg = -1;
      }
      if (a.winner_out) a.winner_out[o] = int32_t(arg);
      a.out[o] = store<T>(arg < 0 ? A(0) : m);
    }
  }
}

// Forward, forward_selected, forward_boxes, and the atomic backward.
template <typename T, Kind K>
__global__ void __launch_bounds__(kThreads, kMinBlocks) items_kernel(const Args<T> a) {
  using G = typename Types<T>::Geometry;
  using A = typename Types<T>::Accum;
  using Maker = typename KindMaker<T, K>::type;
  unsigned char* const smem = dynamic_smem();
  const RoiCall& s = a.s;
  const Unit<G, typename Maker::Entry> u = unit_at<G, typename Maker::Entry>(smem, a.cap);
  const int64_t bins = s.bins();
  const int64_t chunks = (bins + kUnitBins - 1) / kUnitBins;
  const int64_t per_roi = chunks * a.splits;
  const int64_t per_split = (s.Cout + a.splits - 1) / a.splits;
  for (int64_t unit = blockIdx.x; unit < s.K * per_roi; unit += gridDim.x) {
    const int64_t k = unit / per_roi;
    const int64_t chunk = (unit - k * per_roi) / a.splits;
    const int64_t split = unit - k * per_roi - chunk * a.splits;
    const int64_t b0 = chunk * kUnitBins, nb = imin(kUnitBins, bins - b0);
    const int64_t c0 = split * per_split, nc = imin(per_split, s.Cout - c0);
    load_samplers(s, a.rois, a.levels, k, b0, nb, u);
    const bool valid = u.samplers[0].image >= 0;
    Maker make{};
    if constexpr (K == Kind::kForwardBoxes) {
      const G* t = roi_coords(s, a.rois_dot, k);
      make.coords = s.coords();
      for (int64_t j = 0; j < s.coords(); ++j) make.t[j] = t[j];
    }
    for (int64_t p0 = 0, p1; p0 < nb; p0 = p1) {
      p1 = pass_end(u, p0, nb);
      const bool tabled = u.off[p1] - u.off[p0] <= u.cap;
      if (valid && tabled) fill_table(u, p0, p1, make);
      const PassView<G, Maker> view{&u, &make, u.off[p0], tabled};
      const int64_t np = p1 - p0;
      for (int64_t idx = threadIdx.x; idx < np * imax<int64_t>(nc, 0); idx += blockDim.x) {
        int64_t bl, c;
        if (s.layout == Layout::kNHWC) divmod(idx, nc, &bl, &c); else divmod(idx, np, &c, &bl);
        bl += p0;
        c += c0;
        const int64_t bin = b0 + bl;
        const int64_t o = s.output_offset(k, c, bin);
        if (!valid) {  // zeros, and no winner
          if constexpr (K != Kind::kBackwardFeatures) {
            a.out[o] = store<T>(A(0));
            if (K == Kind::kForward && a.winner_out) a.winner_out[o] = -1;
          }
          continue;
        }
        item<T, K>(a, u.samplers[bl], view, bl, c, bin, o);
      }
      __syncthreads();  // the next pass rewrites the table
    }
  }
}

// grad_rois: one block per roi; per-thread sums in double, then a fixed tree.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks) boxes_grad_kernel(const Args<T> a) {
  using G = typename Types<T>::Geometry;
  using A = typename Types<T>::Accum;
  using Maker = VjpMaker<G>;
  unsigned char* const smem = dynamic_smem();
  __shared__ double red[kMaxBoxCoords][kThreads];
  const RoiCall& s = a.s;
  const Unit<G, VjpEntry<G>> u = unit_at<G, VjpEntry<G>>(smem, a.cap);
  const int64_t bins = s.bins();
  const int64_t ps = pixel_stride(s);
  const Maker make{};
  for (int64_t k = blockIdx.x; k < s.K; k += gridDim.x) {
    double grad[kMaxBoxCoords] = {};
    for (int64_t b0 = 0; b0 < bins; b0 += kUnitBins) {
      const int64_t nb = imin(kUnitBins, bins - b0);
      load_samplers(s, a.rois, a.levels, k, b0, nb, u);
      if (u.samplers[0].image < 0) break;  // uniform: the roi gets zeros
      for (int64_t p0 = 0, p1; p0 < nb; p0 = p1) {
        p1 = pass_end(u, p0, nb);
        const bool tabled = u.off[p1] - u.off[p0] <= u.cap;
        if (tabled) fill_table(u, p0, p1, make);
        const PassView<G, Maker> sample{&u, &make, u.off[p0], tabled};
        const int64_t np = p1 - p0;
        for (int64_t idx = threadIdx.x; idx < np * s.Cout; idx += blockDim.x) {
          int64_t bl, c;
          if (s.layout == Layout::kNHWC) divmod(idx, s.Cout, &bl, &c); else divmod(idx, np, &c, &bl);
          bl += p0;
          const int64_t bin = b0 + bl;
          const int64_t o = s.output_offset(k, c, bin);
          const BinSampler<G>& b = u.samplers[bl];
          const int64_t n = b.count();
          const double g = double(load<A>(a.ct[o])) / b.divisor;
          int64_t i0 = 0, i1 = n;
          if (s.mode == PoolMode::kMax) {
            const int32_t w = a.winner_in[o];
            i0 = w >= 0 && w < n ? w : n;
            i1 = i0 < n ? i0 + 1 : n;
          }
          if (g == 0) continue;
          const T* img = a.features[b.level] +
                         s.feature_offset(b.level, b.image, s.input_channel(c, bin), 0);
          for (int64_t i = i0; i < i1; ++i) {
            const VjpEntry<G> e = sample(bl, i);
            double sy = 0, sx = 0;  // d(sample value)/d(sample y), /d(sample x)
            for (int j = 0; j < 4; ++j) {
              const double v = double(load<A>(img[int64_t(e.at[j]) * ps]));
              sy += double(e.dy[j]) * v;
              sx += double(e.dx[j]) * v;
            }
            for (int64_t j = 0; j < s.coords(); ++j) {
              if (e.dpos[0][j] != G(0)) grad[j] += g * sy * double(e.dpos[0][j]);
              if (e.dpos[1][j] != G(0)) grad[j] += g * sx * double(e.dpos[1][j]);
            }
          }
        }
        __syncthreads();  // the next pass rewrites the table
      }
    }
    const unsigned tid = threadIdx.x;
    for (int64_t j = 0; j < kMaxBoxCoords; ++j) red[j][tid] = grad[j];
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
      if (tid < half)
        for (int64_t j = 0; j < kMaxBoxCoords; ++j) red[j][tid] += red[j][tid + half];
      __syncthreads();
    }
    if (tid == 0) {
      G* row = a.grad_rois + k * s.roi_stride();
      for (int64_t j = 0; j < s.roi_stride(); ++j) row[j] = G(0);
      G* coords = row + (s.per_image ? 0 : 1);
      for (int64_t j = 0; j < s.coords(); ++j) coords[j] = G(red[j][0]);
    }
    // load_samplers' leading barrier orders these reads before `red` is rewritten.
  }
}

// ---------------------------------------------------- deterministic backward

struct TileShape {
  int64_t tile_h, tile_w;    // pixels of a tile
  int64_t group;             // input channels per block (= blockDim.x)
  int64_t groups;
  int64_t tiles_y[kMaxLevels], tiles_x[kMaxLevels];  // per level
  int64_t first_block[kMaxLevels + 1];  // blocks of levels before l: N * groups * tiles
};

// Whether roi k of image n and level l may read the tile [y0, y1] x [x0, x1]
// (inclusive): its footprint (bin_sampler.h) meets the tile. NaN footprints
// pass (the exact tables then find no sample).
template <typename G>
__device__ bool may_touch(const RoiCall& s, const G* rois, const int32_t* levels, int64_t k,
                          int64_t n, int64_t l, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
  if (roi_level(s, levels, k) != l || roi_image(s, rois, k) != n) return false;
  const Footprint f = roi_footprint(s, rois, k, l);
  return !(f.y1 < double(y0) || f.y0 > double(y1) || f.x1 < double(x0) || f.x0 > double(x1));
}

template <typename T>
__global__ void tiled_backward_features_kernel(const Args<T> a, const TileShape ts) {
  using G = typename Types<T>::Geometry;
  using A = typename Types<T>::Accum;
  using Maker = TileMaker<G>;
  unsigned char* const smem = dynamic_smem();
  __shared__ int32_t warp_counts[32];
  const RoiCall& s = a.s;
  const int64_t tile_px = ts.tile_h * ts.tile_w;
  const int64_t stride = ts.group + 1;  // padded: conflict-free in both write-out orders
  A* acc = reinterpret_cast<A*>(smem);
  unsigned char* p = smem + align16(sizeof(A) * size_t(tile_px * stride));
  int64_t* list = reinterpret_cast<int64_t*>(p);
  p += align16(sizeof(int64_t) * size_t(ts.group));
  const Unit<G, TileEntry<G>> u = unit_at<G, TileEntry<G>>(p, a.cap);
  const int64_t blocks = ts.first_block[s.L];
  const int64_t bins = s.bins();
  const bool ps_op = position_sensitive(s.op);
  const unsigned tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;

  for (int64_t blk = blockIdx.x; blk < blocks; blk += gridDim.x) {
    int64_t l = 0;  // the block's level: first_block[l] <= blk < first_block[l + 1]
    while (ts.first_block[l + 1] <= blk) ++l;
    const int64_t H = s.level[l].H, W = s.level[l].W;
    const int64_t tiles = ts.tiles_y[l] * ts.tiles_x[l];
    const int64_t lb = blk - ts.first_block[l];
    const int64_t n = lb / (ts.groups * tiles);
    const int64_t group = (lb - n * ts.groups * tiles) / tiles;
    const int64_t tile = lb - n * ts.groups * tiles - group * tiles;
    const int64_t y0 = (tile / ts.tiles_x[l]) * ts.tile_h, x0 = (tile % ts.tiles_x[l]) * ts.tile_w;
    const int64_t ci = group * ts.group + tid;  // this thread's input channel
    const bool active = ci < s.C;
    const int64_t c = ps_op ? ci / bins : ci;   // the output channel that reads it
    const int64_t my_bin = ps_op ? ci - c * bins : -1;
    const Maker make{y0, x0, ts.tile_h, ts.tile_w, W};
    __syncthreads();  // the previous tile's write-out is done with acc
    for (int64_t i = tid; i < tile_px * stride; i += blockDim.x) acc[i] = A(0);

    const int64_t first = s.per_image ? n * s.R : 0, last = s.per_image ? (n + 1) * s.R : s.K;
    for (int64_t start = first; start < last; start += blockDim.x) {
      // The rois of this batch that may touch the tile, in index order.
      const int64_t mine = start + tid;
      const bool hit = mine < last && may_touch(s, a.rois, a.levels, mine, n, l, y0,
                                                y0 + ts.tile_h - 1, x0, x0 + ts.tile_w - 1);
      const unsigned ballot = __ballot_sync(0xffffffffu, hit);
      __syncthreads();  // the previous batch is done with list and warp_counts
      if (lane == 0) warp_counts[warp] = __popc(ballot);
      __syncthreads();
      int64_t before = 0, count = 0;
      for (unsigned w = 0; w < blockDim.x / 32; ++w) {
        if (w < warp) before += warp_counts[w];
        count += warp_counts[w];
      }
      if (hit) list[before + __popc(ballot & ((1u << lane) - 1u))] = mine;
      __syncthreads();

      for (int64_t li = 0; li < count; ++li) {
        const int64_t k = list[li];
        for (int64_t b0 = 0; b0 < bins; b0 += kUnitBins) {
          const int64_t nb = imin(kUnitBins, bins - b0);
          load_samplers(s, a.rois, a.levels, k, b0, nb, u);
          for (int64_t p0 = 0, p1; p0 < nb; p0 = p1) {
            p1 = pass_end(u, p0, nb);
            const bool tabled = u.off[p1] - u.off[p0] <= u.cap;
            if (tabled) fill_table(u, p0, p1, make);
            const PassView<G, Maker> sample{&u, &make, u.off[p0], tabled};
            for (int64_t bl = p0; active && bl < p1; ++bl) {
              const int64_t bin = b0 + bl;
              if (ps_op && bin != my_bin) continue;
              const int64_t o = s.output_offset(k, c, bin);
              const A g = load<A>(a.in[o]);
              if (g == A(0)) continue;  // it would add exact zeros
              const BinSampler<G>& b = u.samplers[bl];
              const int64_t nsamples = b.count();
              // The CPU kernel's expressions (scatter_sample), corners in this tile only.
              auto add = [&](int64_t loc, A v) {
                if (loc >= 0) acc[loc * stride + tid] += v;
              };
              if (s.mode == PoolMode::kAvg) {
                const A divisor = A(b.divisor);
                for (int64_t i = 0; i < nsamples; ++i)
                  scatter_sample(sample(bl, i).sample(), g, divisor, add);
              } else {
                const int32_t w = a.winner_in[o];
                if (w < 0 || w >= nsamples) continue;
                scatter_sample(sample(bl, w).sample(), g, A(1), add);
              }
            }
            __syncthreads();  // the next pass rewrites the table
          }
        }
      }
    }
    __syncthreads();
    // Write the tile: channel-fastest for NHWC, pixel-fastest for NCHW.
    const int64_t cells = tile_px * ts.group;
    for (int64_t i = tid; i < cells; i += blockDim.x) {
      int64_t px, cl, py, pxx;
      if (s.layout == Layout::kNHWC) divmod(i, ts.group, &px, &cl); else divmod(i, tile_px, &cl, &px);
      divmod(px, ts.tile_w, &py, &pxx);
      const int64_t yy = y0 + py, xx = x0 + pxx;
      const int64_t c_in = group * ts.group + cl;
      if (yy < H && xx < W && c_in < s.C)
        a.grad_out[l][s.feature_offset(l, n, c_in, yy * W + xx)] = store<T>(acc[px * stride + cl]);
    }
  }
}

// ------------------------------------------------------------------ host side

int multiprocessors() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      sms <= 0)
    return 132;
  return sms;
}

unsigned grid_size(int64_t blocks) {
  return unsigned(imax<int64_t>(1, imin<int64_t>(blocks, int64_t(1) << 30)));
}

// kernel<<<grid, block, bytes, stream>>>(args...), through the runtime call
// that the tests' host emulator also provides; returns cudaGetLastError().
template <typename... P, typename... A>
cudaError_t launch(void (*kernel)(P...), unsigned grid, unsigned block, size_t bytes,
                   cudaStream_t stream, A&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(grid);
  config.blockDim = dim3(block);
  config.dynamicSmemBytes = bytes;
  config.stream = stream;
  cudaLaunchKernelEx(&config, kernel, std::forward<A>(args)...);
  return cudaGetLastError();
}

template <typename T>
Args<T> base_args(const RoiCall& s, const typename Types<T>::Geometry* rois) {
  Args<T> a{};
  a.s = s;
  a.rois = rois;
  a.splits = 1;
  return a;
}

template <typename T, Kind K>
cudaError_t launch_items(Args<T> a, cudaStream_t stream) {
  using G = typename Types<T>::Geometry;
  using Entry = typename KindMaker<T, K>::type::Entry;
  const RoiCall& s = a.s;
  const int64_t bins = s.bins();
  if (s.K == 0 || s.Cout == 0) return cudaSuccess;
  a.cap = int64_t(kItemsTableBytes / sizeof(Entry));
  // Units: (roi, chunk of bins, channel range). Split channels only when the
  // rois alone do not give ~8 resident blocks per multiprocessor, keeping
  // >= 256 items per block.
  const int64_t chunks = (bins + kUnitBins - 1) / kUnitBins;
  const int64_t units = s.K * chunks;
  const int64_t target = int64_t(multiprocessors()) * 8;
  if (units < target) {
    const int64_t items = imin(bins, kUnitBins) * s.Cout;
    a.splits = imax<int64_t>(1, imin((target + units - 1) / units, items / 256));
    a.splits = imin(a.splits, s.Cout);
  }
  return launch(items_kernel<T, K>, grid_size(units * a.splits), kThreads,
                unit_bytes<G, Entry>(a.cap), stream, a);
}

template <typename T>
cudaError_t tiled_backward_features(Args<T> a, cudaStream_t stream) {
  using G = typename Types<T>::Geometry;
  using A = typename Types<T>::Accum;
  const RoiCall& s = a.s;
  if (s.N == 0 || s.C == 0) return cudaSuccess;
  TileShape ts;
  ts.group = imin<int64_t>((s.C + 31) / 32 * 32, sizeof(A) == 8 ? 32 : 64);
  // ~26 KiB of accumulators in 16-pixel-wide tiles (a 64-byte float32 row per plane).
  ts.tile_w = 16;
  ts.tile_h = imax<int64_t>(
      1, imin<int64_t>(16, int64_t(26 * 1024 / sizeof(A)) / ((ts.group + 1) * ts.tile_w)));
  ts.groups = (s.C + ts.group - 1) / ts.group;
  ts.first_block[0] = 0;
  for (int64_t l = 0; l < s.L; ++l) {
    ts.tiles_y[l] = (s.level[l].H + ts.tile_h - 1) / ts.tile_h;
    ts.tiles_x[l] = (s.level[l].W + ts.tile_w - 1) / ts.tile_w;
    ts.first_block[l + 1] = ts.first_block[l] + s.N * ts.groups * ts.tiles_y[l] * ts.tiles_x[l];
  }
  if (ts.first_block[s.L] == 0) return cudaSuccess;
  const size_t head = align16(sizeof(A) * size_t(ts.tile_h * ts.tile_w * (ts.group + 1))) +
                      align16(sizeof(int64_t) * size_t(ts.group));
  const size_t fixed = head + unit_bytes<G, TileEntry<G>>(0);
  // Entries are 16-byte multiples (alignas), so the table adds no alignment padding.
  a.cap = imax<int64_t>(
      1, int64_t((kSmemBytes - kStaticSmemMargin - fixed) / sizeof(TileEntry<G>)));
  const size_t bytes = head + unit_bytes<G, TileEntry<G>>(a.cap);
  return launch(tiled_backward_features_kernel<T>, grid_size(ts.first_block[s.L]),
                unsigned(ts.group), bytes, stream, a, ts);
}

template <typename T>
Args<T> call_args(const RoiCall& s, Levels<const T> features,
                  const typename Types<T>::Geometry* rois, const int32_t* levels,
                  const int32_t* winner) {
  Args<T> a = base_args<T>(s, rois);
  for (int64_t l = 0; l < s.L; ++l) a.features[l] = features.data[l];
  a.levels = levels;
  a.winner_in = s.mode == PoolMode::kMax ? winner : nullptr;
  return a;
}

}  // namespace

template <typename T>
cudaError_t Launch<T>::forward(const RoiCall& s, Levels<const T> features, const G* rois,
                               const int32_t* levels, T* out, int32_t* winner,
                               cudaStream_t stream) {
  Args<T> a = call_args<T>(s, features, rois, levels, nullptr);
  a.out = out;
  a.winner_out = s.mode == PoolMode::kMax ? winner : nullptr;
  return launch_items<T, Kind::kForward>(a, stream);
}

template <typename T>
cudaError_t Launch<T>::forward_selected(const RoiCall& s, Levels<const T> features,
                                        const G* rois, const int32_t* levels,
                                        const int32_t* winner, T* out, cudaStream_t stream) {
  Args<T> a = call_args<T>(s, features, rois, levels, winner);
  a.out = out;
  return launch_items<T, Kind::kForwardSelected>(a, stream);
}

template <typename T>
cudaError_t Launch<T>::backward_features(const RoiCall& s, const T* cotangent, const G* rois,
                                         const int32_t* levels, const int32_t* winner,
                                         Levels<T> grad_features, bool deterministic,
                                         cudaStream_t stream) {
  using A = typename Types<T>::Accum;
  Args<T> a = call_args<T>(s, Levels<const T>{}, rois, levels, winner);
  a.in = cotangent;
  if constexpr (std::is_same_v<T, A>) {
    if (!deterministic) {
      for (int64_t l = 0; l < s.L; ++l) {
        const size_t n = size_t(s.level_size(l));
        if (n != 0) cudaMemsetAsync(grad_features.data[l], 0, n * sizeof(T), stream);  // +0.0
        a.grad[l] = grad_features.data[l];
      }
      if (auto e = cudaGetLastError(); e != cudaSuccess) return e;
      return launch_items<T, Kind::kBackwardFeatures>(a, stream);
    }
  }
  for (int64_t l = 0; l < s.L; ++l) a.grad_out[l] = grad_features.data[l];
  return tiled_backward_features<T>(a, stream);
}

template <typename T>
cudaError_t Launch<T>::forward_boxes(const RoiCall& s, Levels<const T> features, const G* rois,
                                     const int32_t* levels, const G* rois_dot,
                                     const int32_t* winner, T* out_dot, cudaStream_t stream) {
  Args<T> a = call_args<T>(s, features, rois, levels, winner);
  a.rois_dot = rois_dot;
  a.out = out_dot;
  return launch_items<T, Kind::kForwardBoxes>(a, stream);
}

template <typename T>
cudaError_t Launch<T>::backward_boxes(const RoiCall& s, Levels<const T> features, const G* rois,
                                      const int32_t* levels, const T* cotangent,
                                      const int32_t* winner, G* grad_rois, cudaStream_t stream) {
  if (s.K == 0) return cudaSuccess;
  Args<T> a = call_args<T>(s, features, rois, levels, winner);
  a.ct = cotangent;
  a.grad_rois = grad_rois;
  a.cap = int64_t(kItemsTableBytes / sizeof(VjpEntry<G>));
  return launch(boxes_grad_kernel<T>, grid_size(s.K), kThreads,
                unit_bytes<G, VjpEntry<G>>(a.cap), stream, a);
}

template struct Launch<float>;
template struct Launch<double>;
template struct Launch<Half>;
template struct Launch<BFloat16>;

}  // namespace jax_roialign::cuda
