// The five CPU kernels behind every operator's primitives (kernel_list.h),
// each over a list (or a range) of rois and output channels so that the handlers can
// split work across threads:
//
//   forward            out = op(features)                (max: and the winners)
//   forward (given)    out = the linear map max mode is once its winners are fixed
//   backward_features  grad_features = op^T(cotangent)
//   forward_boxes      out_dot = d op(features)/d boxes . boxes_dot   (JVP)
//   backward_boxes     grad_boxes = (d op(features)/d boxes)^T . cotangent
//
// Avg mode divides each bin's sum by its divisor; max mode uses only the bin's
// winning sample (`winner`: index into the bin's samples, -1: an implicit 0).
// Output channel c of bin `bin` reads input channel s.input_channel(c, bin) of
// the roi's level. The features (and the feature gradients) are read through a
// View: the buffers as XLA lays them out, or a task's channel-last copy of
// its channels, where consecutive output channels are adjacent and the
// channel loops (channel_loops.h) vectorise.
//
// Compiled once per instruction set (instruction_sets.h): no include guard.
#ifndef JRA_CPU_ISA
#error "kernels.h is compiled per instruction set: include instruction_sets.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "channel_loops.h"
#include "roi_plan.h"
#include "scratch.h"

namespace jax_roialign::cpu::JRA_CPU_ISA {

// Features (or feature gradients) of element type E, as one task sees them.
template <typename E>
struct View {
  E* level[kMaxLevels];
  const RoiCall* s;
  bool packed;           // a task's channel-last copy of output channels [c0, c0 + ncout)
  int64_t image;         // packed: the one image it holds
  int64_t c0, ncout;
  int64_t nin;           // packed: input channels per pixel, ncout (x bins, position-sensitive)
  int64_t pixel;         // the step between pixels

  // The step between consecutive output channels on level l.
  int64_t channel_step(int64_t l) const {
    if (packed) return 1;
    const int64_t plane = s->layout == Layout::kNHWC ? 1 : s->level[l].H * s->level[l].W;
    return position_sensitive(s->op) ? plane * s->bins() : plane;
  }
  // Pixel 0 of output channel c, bin `bin`, image n (packed: `image`), level l.
  E* at(int64_t l, int64_t n, int64_t c, int64_t bin) const {
    if (!packed) return level[l] + s->feature_offset(l, n, s->input_channel(c, bin), 0);
    const int64_t slot = position_sensitive(s->op) ? bin * ncout + (c - c0) : c - c0;
    return level[l] + slot;
  }
};

// The buffers as XLA lays them out.
template <typename E>
View<E> direct_view(const RoiCall& s, E* const* level) {
  View<E> v{};
  for (int64_t l = 0; l < s.L; ++l) v.level[l] = level[l];
  v.s = &s;
  v.packed = false;
  v.pixel = s.layout == Layout::kNHWC ? s.C : 1;
  return v;
}

// A task's channel-last copy of output channels [c0, c1) of one image at a
// time: the input channels they read, ordered so that for each bin the output
// channels are adjacent. One image's copy, reused image after image, stays in
// cache where the whole batch's would not (the small head: 8 images of 32
// channels, 512 KiB each). Elements A: the features' own type (the forward's
// copy of the features, exact) or the accumulation type (the backward's
// feature gradient).
template <typename A>
class Packed {
 public:
  Packed(const RoiCall& s, int64_t c0, int64_t c1) : s_(s) {
    const int64_t per = position_sensitive(s.op) ? s.bins() : 1;
    view_.s = &s_;
    view_.packed = true;
    view_.image = -1;
    view_.c0 = c0;
    view_.ncout = c1 - c0;
    view_.nin = view_.ncout * per;
    view_.pixel = view_.nin;
    // Input channel (c0 * per + i)'s slot in a pixel's channel-last run.
    slot_.resize(view_.nin);
    for (int64_t i = 0; i < view_.nin; ++i) {
      const int64_t c = i / per, bin = i % per;  // ps: input channel c * bins + bin
      slot_[i] = per == 1 ? i : bin * view_.ncout + c;
    }
    int64_t total = 0;
    for (int64_t l = 0; l < s.L; ++l) total += s.level[l].H * s.level[l].W * view_.nin;
    data_ = std::make_unique<TaskScratch<A>>(size_t(total));
    for (int64_t l = 0, at = 0; l < s.L; at += s.level[l].H * s.level[l].W * view_.nin, ++l)
      view_.level[l] = data_->get() + at;
  }

  // The copy of the image last loaded (or zeroed).
  const View<A>& view() const { return view_; }

  // Copies the task's input channels of image n of `f` (as XLA lays them out) in.
  template <typename T>
  void load(const T* const* f, int64_t n) {
    view_.image = n;
    for_levels([&](int64_t l, int64_t hw, int64_t cs, int64_t ps, int64_t ic0) {
      to_channel_last(view_.level[l], view_.nin, slot_.data(),
                      f[l] + s_.feature_offset(l, n, ic0, 0), cs, ps, view_.nin, hw);
    });
  }
  // Copies the task's input channels out to image `view().image` of `f`,
  // rounded to T: streamed where `f` (every image, channel and level) is
  // kStreamGradientBytes or more.
  template <typename T>
  void store(T* const* f) const {
    int64_t bytes = 0;
    for (int64_t l = 0; l < s_.L; ++l) bytes += s_.level_size(l) * int64_t(sizeof(T));
    for_levels([&](int64_t l, int64_t hw, int64_t cs, int64_t ps, int64_t ic0) {
      from_channel_last(f[l] + s_.feature_offset(l, view_.image, ic0, 0), cs, ps,
                        view_.level[l], view_.nin, slot_.data(), view_.nin, hw,
                        bytes >= kStreamGradientBytes);
    });
  }
  // Zeroes the copy, as image n's.
  void zero(int64_t n) {
    view_.image = n;
    for (int64_t l = 0; l < s_.L; ++l)
      std::fill_n(view_.level[l], s_.level[l].H * s_.level[l].W * view_.nin, A(0));
  }

 private:
  template <typename Fn>
  void for_levels(Fn fn) const {
    const int64_t ic0 = view_.c0 * (view_.nin / std::max<int64_t>(view_.ncout, 1));
    for (int64_t l = 0; l < s_.L; ++l) {
      const int64_t hw = s_.level[l].H * s_.level[l].W;
      const int64_t cs = s_.layout == Layout::kNHWC ? 1 : hw;  // between input channels
      const int64_t ps = s_.layout == Layout::kNHWC ? s_.C : 1;
      fn(l, hw, cs, ps, ic0);
    }
  }

  RoiCall s_;
  View<A> view_{};
  std::vector<int64_t> slot_;
  std::unique_ptr<TaskScratch<A>> data_;
};

template <typename T>
struct Kernels {
  using G = typename Types<T>::Geometry;
  using A = typename Types<T>::Accum;

  // Samples are produced this many at a time (roi_plan.h).
  static constexpr int64_t kChunk = 64;
  // The largest forward_avg tile: half a core's L2 cache.
  static constexpr int64_t kTileBytes = int64_t{256} << 10;

  // What a task reuses from roi to roi.
  struct Workspace {
    RoiPlan<G> plan;
    Sample<G> samples[kChunk];
    SampleSlopes<G> slopes[kChunk];
    LineVector<A> acc;
    std::vector<int32_t> arg;
    std::vector<int64_t> cell;  // table_corners': a bin's corner offsets and weights
    std::vector<A> weight;
    std::vector<int64_t> bin_start;  // table_roi_corners': each bin's first sample in cell
    LineVector<T> tile;  // the forward's outputs of one roi, channel-last
    LineVector<T> staged;  // 16 channels of the tile transposed, to be streamed out
    LineVector<int32_t> winners;  // one roi's winners, channel-last (recorded, given, read back)
    LineVector<int32_t> staged_winners;
  };

  // Channels of [c0, c1) one roi's channel-last tile of outputs (or
  // cotangents) takes at a time: all where outputs are channel-last (NHWC: no
  // tile), else as many whole register blocks of `block` channels (kBlock's,
  // kWideBlock's: the loops' first) as fit kTileBytes (at least one) at
  // `element` bytes per channel and bin. Each output sums the same terms in
  // the same order either way.
  static int64_t tile_channels(const RoiCall& s, int64_t c0, int64_t c1, int64_t element,
                               int64_t block) {
    const int64_t n = c1 - c0;
    if (n < 2 || s.output_offset(0, c0 + 1, 0) - s.output_offset(0, c0, 0) == 1) return n;
    const int64_t fit = kTileBytes / (s.bins() * element);
    return std::max<int64_t>(block, fit / block * block);
  }

  // forward_max's and forward_given's tile bytes per channel and bin: an
  // output, and its winner where recorded or given.
  static int64_t max_tile_element(const int32_t* winner) {
    return int64_t(sizeof(T)) + (winner ? int64_t(sizeof(int32_t)) : 0);
  }

  static void zero_rows(const RoiCall& s, T* out, int32_t* winner, int64_t k, int64_t c0,
                        int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t bin = 0; bin < s.bins(); ++bin) {
        out[s.output_offset(k, c, bin)] = store_element<T>(A(0));
        if (winner) winner[s.output_offset(k, c, bin)] = -1;
      }
  }

  // Sample `index` of bin b (the workspace's chunk holds the bin's first
  // samples when `tabled`).
  static Sample<G> nth(Workspace& w, const BinPlan& b, int64_t index, bool tabled) {
    if (tabled) return w.samples[index];
    Sample<G> p;
    w.plan.samples(b, index, index + 1, &p, nullptr);
    return p;
  }

  // fn(sample) for every sample of bin b of a separable plan, in
  // RoiPlan::samples' order, each built in registers rather than stored in a
  // chunk: for loops over one channel, which would spend more on a chunk's
  // stores and loads than on the sample's reads. Here, not in RoiPlan, so
  // that fn inlines (compiled for this instruction set; roi_plan.h is not).
  template <typename Fn>
  __attribute__((always_inline)) static void each_sample(const RoiPlan<G>& plan,
                                                         const BinPlan& b, Fn&& fn) {
    switch (plan.combination()) {
      case SampleKind::kCell:
        return each_combined<SampleKind::kCell>(plan, b, fn);
      case SampleKind::kLerp:
        return each_combined<SampleKind::kLerp>(plan, b, fn);
      case SampleKind::kBilinear:
      case SampleKind::kEmpty:
        return each_combined<SampleKind::kBilinear>(plan, b, fn);
    }
  }
  template <SampleKind K, typename Fn>
  __attribute__((always_inline)) static void each_combined(const RoiPlan<G>& plan,
                                                           const BinPlan& b, Fn& fn) {
    const AxisTap<G>* ty = plan.y_taps(b);
    const AxisTap<G>* tx = plan.x_taps(b);
    const int64_t W = plan.width();
    for (int64_t a = 0; a < b.gy.count; ++a)
      for (int64_t e = 0; e < b.gx.count; ++e)
        fn(RoiSampler<G>::template combined<K>(ty[a], tx[e], W));
  }

  // Whether avg mode's loops over n channels (adjacent if Unit) take a bin's
  // samples from registers (each_sample) rather than from chunks: one
  // channel, or channels not adjacent whose samples are one cell each.
  // Measured on one thread (a task's rois of the small head's one channel,
  // the C4 head's 5 forward and 3 backward; best of 20-200 calls): one
  // channel, ps_roi_pool 1.3-1.5x faster, ps_roi_align's forward 1.45x, its
  // backward 1.05x; ps_roi_pool's 5 and 3 channels 0.9-2.5x, faster in 14 of
  // 16 alternating pairs; ps_roi_align's (bilinear) 1.0-1.5x slower, so left
  // to chunks.
  template <bool Unit>
  static bool from_registers(const RoiPlan<G>& plan, int64_t n) {
    return plan.separable() &&
           (n == 1 || (!Unit && plan.combination() == SampleKind::kCell));
  }

  // Bin b's samples in chunks of kChunk, each produced into w.samples: per
  // chunk [i0, i1), block(c, i0, i1, width) for each whole register block of
  // channels from `first` on (Unit only; `width` channels, an
  // integral_constant: kFirst's blocks, then kBlock's), then tail(c, i0, i1)
  // for the channels [c, n) left, if any.
  template <bool Unit, int64_t kFirst, typename Block, typename Tail>
  __attribute__((always_inline)) static void each_chunk(Workspace& w, const BinPlan& b,
                                                        int64_t first, int64_t n, Block&& block,
                                                        Tail&& tail) {
    for (int64_t i0 = 0; i0 < b.count(); i0 += kChunk) {
      const int64_t i1 = std::min(b.count(), i0 + kChunk);
      w.plan.samples(b, i0, i1, w.samples, nullptr);
      int64_t c = first;
      if constexpr (Unit) {
        for (; c + kFirst <= n; c += kFirst)
          block(c, i0, i1, std::integral_constant<int64_t, kFirst>{});
        if constexpr (kFirst != kBlock<A>)
          for (; c + kBlock<A> <= n; c += kBlock<A>)
            block(c, i0, i1, std::integral_constant<int64_t, kBlock<A>>{});
      }
      if (c < n) tail(c, i0, i1);
    }
  }

  // Bins few_channel_rows sums in step, and the most channels it takes.
  static constexpr int64_t kBinsInStep = 8;
  static constexpr int64_t kFewChannels = 8;
  // Several channels of one-cell samples (ps_roi_pool's) are summed in step
  // in NCHW features (a bin's cells adjacent along rows of its planes) where
  // the roi's middle bin has this many cells or more. Measured, 5 channels, one thread
  // (benchmarks/README.md): the FPN level's NCHW 1.3x faster, its NHWC 0.9x;
  // the C4 head's (windows of 1-3 cells a side) 0.97-1.0x, every roi in step
  // 0.9-0.97x.
  static constexpr int64_t kInStepCells = 4;

  // Avg mode, one roi, output channels [c0, c0 + n), n <= kFewChannels (a
  // position-sensitive operator's few, each bin in planes of its own; a map
  // of few channels), adjacent if Unit, a separable plan whose samples
  // combine as K. A bin's sum of a channel is a chain of dependent adds, one
  // per sample, and few channels make few chains; a row's bins share their y
  // taps, so up to kBinsInStep of them are summed in step, n chains each: per
  // y tap, the x taps all of them have, bin after bin, then each bin's
  // others. Each bin still adds its samples in RoiPlan::samples' order
  // (row-major), so its bits are unchanged.
  // kOne: n is 1, known when compiled (the chains' sums then stay in registers).
  template <bool Unit, SampleKind K, bool kOne, typename E>
  static void few_channel_rows(const RoiCall& s, const View<E>& f, Workspace& w, T* out,
                               int64_t k, int64_t c0, int64_t n, A fill) {
    if constexpr (kOne) n = 1;
    const int64_t l = w.plan.level(), W = w.plan.width(), cs = f.channel_step(l);
    for (int64_t ph = 0; ph < s.PH; ++ph)
      for (int64_t pw0 = 0; pw0 < s.PW; pw0 += kBinsInStep) {
        const int64_t m = std::min(kBinsInStep, s.PW - pw0);
        A sum[kBinsInStep][kFewChannels];
        const E* img[kBinsInStep];
        const AxisTap<G>* tx[kBinsInStep];
        int64_t nx[kBinsInStep];
        A divisor[kBinsInStep];
        bool empty[kBinsInStep];
        const BinPlan first = w.plan.bin(ph, pw0);
        const AxisTap<G>* ty = w.plan.y_taps(first);
        int64_t common = INT64_MAX;
        for (int64_t j = 0; j < m; ++j) {
          const BinPlan b = w.plan.bin(ph, pw0 + j);
          std::fill_n(sum[j], n, A(0));
          img[j] = f.at(l, w.plan.image(), c0, ph * s.PW + pw0 + j);
          tx[j] = w.plan.x_taps(b);
          nx[j] = b.gx.count;
          common = std::min(common, nx[j]);
          divisor[j] = A(b.divisor);
          empty[j] = b.count() == 0;
        }
        auto add = [&](int64_t j, int64_t a, int64_t e) {
          const Sample<G> p = RoiSampler<G>::template combined<K>(ty[a], tx[j][e], W);
          if constexpr (kOne) add_sample<true>(sum[j], img[j], p, f.pixel, 1, 1);
          else add_sample<Unit>(sum[j], img[j], p, f.pixel, cs, n);
        };
        for (int64_t a = 0; a < first.gy.count; ++a) {
          for (int64_t e = 0; e < common; ++e)
            for (int64_t j = 0; j < m; ++j) add(j, a, e);
          for (int64_t j = 0; j < m; ++j)
            for (int64_t e = common; e < nx[j]; ++e) add(j, a, e);
        }
        for (int64_t j = 0; j < m; ++j) {
          const int64_t bin = ph * s.PW + pw0 + j;
          for (int64_t c = 0; c < n; ++c)
            out[s.output_offset(k, c0 + c, bin)] =
                store_element<T>(empty[j] ? fill : sum[j][c] / divisor[j]);
        }
      }
  }

  // few_channel_rows for the plan's combination.
  template <bool Unit, bool kOne, typename E>
  static void few_channel_rows_as(const RoiCall& s, const View<E>& f, Workspace& w, T* out,
                                  int64_t k, int64_t c0, int64_t n, A fill) {
    switch (w.plan.combination()) {
      case SampleKind::kCell:
        return few_channel_rows<Unit, SampleKind::kCell, kOne>(s, f, w, out, k, c0, n, fill);
      case SampleKind::kLerp:
        return few_channel_rows<Unit, SampleKind::kLerp, kOne>(s, f, w, out, k, c0, n, fill);
      case SampleKind::kBilinear:
      case SampleKind::kEmpty:
        return few_channel_rows<Unit, SampleKind::kBilinear, kOne>(s, f, w, out, k, c0, n,
                                                                    fill);
    }
  }

  // Avg mode, one roi: channels [c0, c1) innermost, each bin's sums in `acc`.
  // `fill`: the value of a bin without samples (the forward's; 0 for its linear part).
  // Outputs whose channels are not adjacent (NCHW) go through the roi's
  // channel-last `tile`, transposed out at the end (each channel's bins are
  // adjacent; outputs of kStreamBytes or more transposed in cache, then
  // streamed as one run), not one strided store per channel and bin.
  template <bool Unit, typename E>
  static void forward_avg(const RoiCall& s, const View<E>& f, Workspace& w, T* out, int64_t k,
                          int64_t c0, int64_t c1, A fill) {
    const int64_t n = c1 - c0, l = w.plan.level(), cs = f.channel_step(l), bins = s.bins();
    if (n == 1 && w.plan.separable())
      return few_channel_rows_as<Unit, true>(s, f, w, out, k, c0, n, fill);
    if (n <= kFewChannels && w.plan.separable() &&
        (w.plan.combination() != SampleKind::kCell ||
         (f.pixel == 1 && w.plan.bin(s.PH / 2, s.PW / 2).count() >= kInStepCells)))
      return few_channel_rows_as<Unit, false>(s, f, w, out, k, c0, n, fill);
    const int64_t out_os =
        n > 1 ? s.output_offset(k, c0 + 1, 0) - s.output_offset(k, c0, 0) : 1;
    const bool tiled = out_os != 1 && bins * n * int64_t(sizeof(T)) <= kTileBytes;
    const bool stream = !tiled && s.K * bins * s.Cout * int64_t(sizeof(T)) >= kStreamBytes;
    const int64_t os = tiled ? 1 : out_os;
    w.acc.resize(n);
    if (tiled) w.tile.resize(bins * n);
    A* acc = w.acc.data();
    for (int64_t ph = 0; ph < s.PH; ++ph)
      for (int64_t pw = 0; pw < s.PW; ++pw) {
        const int64_t bin = ph * s.PW + pw;
        const BinPlan b = w.plan.bin(ph, pw);
        const E* img = f.at(l, w.plan.image(), c0, bin);
        T* o = tiled ? w.tile.data() + bin * n : out + s.output_offset(k, c0, bin);
        const A divisor = A(b.divisor);
        int64_t done = 0;  // channels written already
        // One chunk of samples, adjacent outputs: whole blocks never hold sums in memory.
        if (Unit && os == 1 && b.count() > 0 && b.count() <= kChunk) {
          w.plan.samples(b, 0, b.count(), w.samples, nullptr);
          const bool exact = exact_reciprocal(divisor);
          const A inv = A(1) / divisor;
          for (; done + kBlock<A> <= n; done += kBlock<A>)
            average_block(o + done, img + done, w.samples, b.count(), f.pixel, divisor, exact, inv,
                          stream);
          if (done == n) continue;
        }
        std::fill_n(acc, n, A(0));
        if (from_registers<Unit>(w.plan, n)) {
          each_sample(w.plan, b, [&](const Sample<G>& p) {
            add_sample<Unit>(acc, img, p, f.pixel, cs, n);
          });
        } else {
          each_chunk<Unit, kBlock<A>>(
              w, b, done, n,
              [&](int64_t c, int64_t i0, int64_t i1, auto) {
                add_samples_block(acc + c, img + c, w.samples, i1 - i0, f.pixel);
              },
              [&](int64_t c, int64_t i0, int64_t i1) {
                if (n - c == 1) {  // one channel left: its sum in a register, not in memory
                  A sum = acc[c];
                  for (int64_t i = 0; i < i1 - i0; ++i)
                    add_sample<Unit>(&sum, img + c * cs, w.samples[i], f.pixel, cs, 1);
                  acc[c] = sum;
                  return;
                }
                for (int64_t i = 0; i < i1 - i0; ++i)
                  add_sample<Unit>(acc + c, img + c * cs, w.samples[i], f.pixel, cs, n - c);
              });
        }
        const bool empty = b.count() == 0;
        for (int64_t c = done; c < n; ++c)
          o[c * os] = store_element<T>(empty ? fill : acc[c] / divisor);
      }
    if (!tiled) return;
    write_tile(s, out, w.tile.data(), w.staged, k, c0, n);
  }

  // Writes one roi's channel-last tile (bins x n: forward_avg's, forward_max's)
  // of outputs or winners of channels [c0, c0 + n) to their places in `out`:
  // transposed in cache where the channels' bins are one run, else element by
  // element. Outputs of kStreamBytes or more go 16 channels at a time through
  // `staged` (16 x bins elements, in L1; for 4-byte elements a multiple of 64
  // bytes), each group then streamed as one run. Measured on one thread (an
  // Intel Xeon, benchmarks/cpu_kernels.py), against the whole tile transposed
  // into an unaligned `staged` first: the C4 head's NCHW roi_align forward
  // 1.13-1.15x faster, roi_pool's 1.18-1.20x, the mask head's 1.10-1.11x;
  // the FPN level's within 3%. Aligned buffers alone did not move it; 32
  // channels a group matched 16, 64 were slower.
  template <typename D>
  static void write_tile(const RoiCall& s, D* out, const D* tile, LineVector<D>& staged,
                         int64_t k, int64_t c0, int64_t n) {
    const int64_t bins = s.bins();
    const int64_t bs = bins > 1 ? s.output_offset(k, c0, 1) - s.output_offset(k, c0, 0) : 1;
    const int64_t os = n > 1 ? s.output_offset(k, c0 + 1, 0) - s.output_offset(k, c0, 0) : 1;
    if (bs == 1 && os == bins) {  // the chunk's outputs are one run
      D* o = out + s.output_offset(k, c0, 0);
      if (s.K * bins * s.Cout * int64_t(sizeof(D)) < kStreamBytes)
        return transpose(o, bins, tile, n, bins, n);
      constexpr int64_t kGroup = 16;
      staged.resize(bins * kGroup);
      for (int64_t c = 0; c < n; c += kGroup) {
        const int64_t m = std::min(kGroup, n - c);
        transpose(staged.data(), bins, tile + c, n, bins, m);
        stream_run(o + c * bins, staged.data(), bins * m);
      }
      return;
    }
    for (int64_t c = 0; c < n; ++c) {
      D* o = out + s.output_offset(k, c0 + c, 0);
      const D* t = tile + c;
      for (int64_t bin = 0; bin < bins; ++bin) o[bin * bs] = t[bin * n];
    }
  }

  // Max mode, one roi: per channel, the first largest sample value, then the
  // implicit-0 rule. Outputs whose channels are not adjacent (NCHW) go
  // through channel-last tiles of outputs and winners, as forward_avg's.
  template <bool Unit, typename E>
  static void forward_max(const RoiCall& s, const View<E>& f, Workspace& w, T* out,
                          int32_t* winner, int64_t k, int64_t c0, int64_t c1) {
    const int64_t n = c1 - c0, l = w.plan.level(), cs = f.channel_step(l), bins = s.bins();
    const int64_t out_os =
        n > 1 ? s.output_offset(k, c0 + 1, 0) - s.output_offset(k, c0, 0) : 1;
    const bool tiled = out_os != 1 && bins * n * max_tile_element(winner) <= kTileBytes;
    const bool stream = !tiled && s.K * bins * s.Cout * int64_t(sizeof(T)) >= kStreamBytes;
    const int64_t os = tiled ? 1 : out_os;
    w.acc.resize(n);
    w.arg.resize(n);
    if (tiled) w.tile.resize(bins * n);
    if (tiled && winner) w.winners.resize(bins * n);
    A* best = w.acc.data();
    int32_t* arg = w.arg.data();
    for (int64_t ph = 0; ph < s.PH; ++ph)
      for (int64_t pw = 0; pw < s.PW; ++pw) {
        const int64_t bin = ph * s.PW + pw;
        const BinPlan b = w.plan.bin(ph, pw);
        const E* img = f.at(l, w.plan.image(), c0, bin);
        T* o = tiled ? w.tile.data() + bin * n : out + s.output_offset(k, c0, bin);
        int32_t* wo = !winner ? nullptr
                      : tiled ? w.winners.data() + bin * n
                              : winner + s.output_offset(k, c0, bin);
        const bool outside = b.outside_from != kNever;
        // Winners are tracked where recorded or where the implicit-0 rule needs them.
        const bool track = winner || outside;
        int64_t done = 0;  // channels written already
        // One chunk of samples, adjacent outputs: whole blocks never hold winners in memory.
        if (Unit && os == 1 && b.count() <= kChunk) {
          w.plan.samples(b, 0, b.count(), w.samples, nullptr);
          // The first sample the implicit 0 precedes (outside_precedes): none where it
          // comes after every row (kAfterAll; the product would overflow).
          const int64_t first_after =
              outside && b.outside_from < b.gy.count ? b.outside_from * b.gx.count : kNever;
          auto blocks = [&](auto width) {
            constexpr int64_t kWidth = decltype(width)::value;
            for (; done + kWidth <= n; done += kWidth)
              max_block<T, A, kWidth>(o + done, wo ? wo + done : nullptr, img + done, w.samples,
                                      b.count(), f.pixel, outside, first_after, stream);
          };
          blocks(std::integral_constant<int64_t, kWideBlock<A>>{});
          blocks(std::integral_constant<int64_t, kBlock<A>>{});
          if (done == n) continue;
        }
        if (track) std::fill_n(arg + done, n - done, -1);
        else std::fill_n(best + done, n - done, std::numeric_limits<A>::quiet_NaN());
        auto run = [&](auto tracking) {
          constexpr bool kTrack = decltype(tracking)::value;
          each_chunk<Unit, kWideBlock<A>>(
              w, b, done, n,
              [&](int64_t c, int64_t i0, int64_t i1, auto width) {
                max_samples_block<kTrack, decltype(width)::value>(
                    best + c, arg + c, img + c, w.samples, int32_t(i0), i1 - i0, f.pixel);
              },
              [&](int64_t c, int64_t i0, int64_t i1) {
                for (int64_t i = 0; i < i1 - i0; ++i)
                  max_sample<kTrack, Unit>(best + c, arg + c, img + c * cs, w.samples[i],
                                           int32_t(i0 + i), f.pixel, cs, n - c);
              });
        };
        if (track) run(std::true_type{});
        else run(std::false_type{});
        for (int64_t c = done; c < n; ++c) {
          const A m = best[c];
          int32_t a = track ? arg[c] : (m == m ? 0 : -1);
          if (outside && (a < 0 || A(0) > m || (A(0) == m && b.outside_precedes(a)))) a = -1;
          o[c * os] = store_element<T>(a < 0 ? A(0) : m);
          if (wo) wo[c * os] = a;
        }
      }
    if (!tiled) return;
    write_tile(s, out, w.tile.data(), w.staged, k, c0, n);
    if (winner) write_tile(s, winner, w.winners.data(), w.staged_winners, k, c0, n);
  }

  // Max mode's linear part, one roi, output channels [c0, c1): each output is
  // its given winner's sample value (sample_value's terms, in its order).
  // Winners and outputs whose channels are not adjacent (NCHW) go through
  // channel-last tiles, as forward_max's.
  template <typename E>
  static void forward_given(const RoiCall& s, const View<E>& f, Workspace& w, T* out,
                            const int32_t* given, int64_t k, int64_t c0, int64_t c1) {
    const int64_t n = c1 - c0, l = w.plan.level(), cs = f.channel_step(l), bins = s.bins();
    const int64_t out_os =
        n > 1 ? s.output_offset(k, c0 + 1, 0) - s.output_offset(k, c0, 0) : 1;
    const bool tiled = out_os != 1 && bins * n * max_tile_element(given) <= kTileBytes;
    const int64_t os = tiled ? 1 : out_os;
    if (tiled) {
      const int64_t bs = bins > 1 ? s.output_offset(k, c0, 1) - s.output_offset(k, c0, 0) : 1;
      w.tile.resize(bins * n);
      w.winners.resize(bins * n);
      load_tile(w.winners.data(), given + s.output_offset(k, c0, 0), out_os, bs, n, bins);
    }
    const int corners = w.plan.uniform_corners();
    for (int64_t ph = 0; ph < s.PH; ++ph)
      for (int64_t pw = 0; pw < s.PW; ++pw) {
        const int64_t bin = ph * s.PW + pw;
        const BinPlan b = w.plan.bin(ph, pw);
        const E* img = f.at(l, w.plan.image(), c0, bin);
        T* o = tiled ? w.tile.data() + bin * n : out + s.output_offset(k, c0, bin);
        const int32_t* win =
            tiled ? w.winners.data() + bin * n : given + s.output_offset(k, c0, bin);
        if (corners == 1) {
          gather_winners<1>(o, win, os, w, b, img, cs, f.pixel, n);
          continue;
        }
        if (corners == 4) {
          gather_winners<4>(o, win, os, w, b, img, cs, f.pixel, n);
          continue;
        }
        const bool tabled = b.count() <= kChunk;
        if (tabled) w.plan.samples(b, 0, b.count(), w.samples, nullptr);
        for (int64_t c = 0; c < n; ++c) {
          const int32_t i = win[c * os];
          A v = A(0);
          if (i >= 0 && i < b.count()) {
            const E* ch = img + c * cs;
            v = sample_value<A>(nth(w, b, i, tabled),
                                [&](int64_t at) { return load_element<A>(ch[at * f.pixel]); });
          }
          o[c * os] = store_element<T>(v);
        }
      }
    if (tiled) write_tile(s, out, w.tile.data(), w.staged, k, c0, n);
  }

  // Bin b's corner offsets (times `pixel`) and weights, kCorners per sample,
  // into cell[0, b.count() * kCorners) and weight[...].
  template <int kCorners>
  static void corners_into(Workspace& w, const BinPlan& b, int64_t pixel, int64_t* cell,
                           A* weight) {
    if constexpr (kCorners == 1) {
      // One cell per sample (uniform_corners() == 1: separable, SampleKind::kCell):
      // each cell_sample built straight from the bin's taps, not through
      // RoiPlan::samples (22% of the small head's roi_pool backward, one thread).
      const AxisTap<G>* ty = w.plan.y_taps(b);
      const AxisTap<G>* tx = w.plan.x_taps(b);
      const int64_t W = w.plan.width(), cols = b.gx.count;
      for (int64_t a = 0; a < b.gy.count; ++a, cell += cols, weight += cols)
        for (int64_t e = 0; e < cols; ++e) {
          const Sample<G> s = cell_sample<G>(ty[a].low, tx[e].low, W);
          cell[e] = s.at[0] * pixel;
          weight[e] = A(s.w[0]);
        }
      return;
    }
    for (int64_t i0 = 0; i0 < b.count(); i0 += kChunk) {
      const int64_t i1 = std::min(b.count(), i0 + kChunk);
      w.plan.samples(b, i0, i1, w.samples, nullptr);
      for (int64_t i = i0; i < i1; ++i)
        for (int j = 0; j < kCorners; ++j) {
          cell[i * kCorners + j] = w.samples[i - i0].at[j] * pixel;
          weight[i * kCorners + j] = A(w.samples[i - i0].w[j]);
        }
    }
  }

  // Bin b's corners (corners_into) into w.cell and w.weight:
  // scatter_winners' and gather_winners' table.
  template <int kCorners>
  static void table_corners(Workspace& w, const BinPlan& b, int64_t pixel) {
    w.cell.resize(b.count() * kCorners);
    w.weight.resize(b.count() * kCorners);
    corners_into<kCorners>(w, b, pixel, w.cell.data(), w.weight.data());
  }

  // forward_given for bin b of a plan whose samples all read kCorners corners
  // (RoiPlan::uniform_corners), the winners' samples looked up in the bin's
  // table rather than each decoded per channel. Channel c's winner is
  // win[c * os], its output o[c * os], c in [0, n).
  template <int kCorners, typename E>
  static void gather_winners(T* o, const int32_t* win, int64_t os, Workspace& w,
                             const BinPlan& b, const E* img, int64_t cs, int64_t pixel,
                             int64_t n) {
    each_winner<kCorners>(w, b, pixel, win, os, n, [&](int64_t c, const int64_t* at,
                                                          const A* wt) {
      A v = A(0);
      if (at) {
        const E* ch = img + c * cs;
        if constexpr (kCorners == 1) {
          v = load_element<A>(ch[at[0]]);
        } else {
          v = wt[0] * load_element<A>(ch[at[0]]) + wt[1] * load_element<A>(ch[at[1]]) +
              wt[2] * load_element<A>(ch[at[2]]) + wt[3] * load_element<A>(ch[at[3]]);
        }
      }
      o[c * os] = store_element<T>(v);
    });
  }

  // Tables bin b's corners (table_corners), then calls fn(c, at, wt) for each
  // channel c in [0, n) with its winner win[c * os]'s kCorners corner offsets
  // `at` and weights `wt`, both null where it has none.
  template <int kCorners, typename Fn>
  __attribute__((always_inline)) static void each_winner(Workspace& w, const BinPlan& b,
                                                         int64_t pixel, const int32_t* win,
                                                         int64_t os, int64_t n, Fn&& fn) {
    table_corners<kCorners>(w, b, pixel);
    const int64_t count = b.count();
    const int64_t* cell = w.cell.data();
    const A* weight = w.weight.data();
    for (int64_t c = 0; c < n; ++c) {
      const int32_t i = win[c * os];
      if (i >= 0 && i < count) fn(c, cell + i * kCorners, weight + i * kCorners);
      else fn(c, nullptr, nullptr);
    }
  }

  // The rois `list`, in its order (each roi writes only its own outputs: the
  // order changes no result), output channels [c0, c1). Max mode either
  // finds the winners (`winner` written, unless null) or, with `given`,
  // evaluates given winners. `linear`: forward_selected, the linear part (no fill).
  template <typename E>
  static void forward(const RoiCall& s, const View<E>& f, const G* rois, const int32_t* levels,
                      T* out, int32_t* winner, const int32_t* given, bool linear, RoiList list,
                      int64_t c0, int64_t c1) {
    const A fill = linear ? A(0) : A(s.fill);
    Workspace w;
    const bool unit = f.channel_step(0) == 1;  // the same on every level
    for (int64_t j = 0; j < list.count; ++j) {
      const int64_t k = list.index[j];
      w.plan.build(s, rois, levels, k, false);
      if (!w.plan.valid()) {
        zero_rows(s, out, winner, k, c0, c1);
        continue;
      }
      if (s.mode == PoolMode::kMax && given) {
        const int64_t step = tile_channels(s, c0, c1, max_tile_element(given), kBlock<A>);
        for (int64_t a = c0; a < c1; a += step)
          forward_given(s, f, w, out, given, k, a, std::min(c1, a + step));
      } else if (s.mode == PoolMode::kMax) {
        const int64_t step = tile_channels(s, c0, c1, max_tile_element(winner), kWideBlock<A>);
        for (int64_t a = c0; a < c1; a += step) {
          const int64_t b = std::min(c1, a + step);
          if (unit) forward_max<true>(s, f, w, out, winner, k, a, b);
          else forward_max<false>(s, f, w, out, winner, k, a, b);
        }
      } else {
        const int64_t step = tile_channels(s, c0, c1, int64_t(sizeof(A)), kBlock<A>);
        for (int64_t a = c0; a < c1; a += step) {
          const int64_t b = std::min(c1, a + step);
          if (unit) forward_avg<true>(s, f, w, out, k, a, b, fill);
          else forward_avg<false>(s, f, w, out, k, a, b, fill);
        }
      }
    }
    stream_fence();  // forward_avg and forward_max may have streamed
  }

  // Output channels [c0, c1) of every level's gradient (accumulator typed,
  // zeroed by the caller; the input channels those output channels read):
  // the terms of the valid rois in `list`, in its order (invalid rois have
  // none), of bins [bin0, bin1) (all bins: 0, s.bins()). Given each image's
  // rois in increasing order, each element sums its terms in (roi, bin,
  // sample, corner) order, so the result is bit-identical run to run and for
  // any thread count, and for any split of a position-sensitive operator's
  // bins (each of its input channels takes the terms of one bin).
  template <bool Unit>
  static void backward_features(const RoiCall& s, const T* ct, const G* rois,
                                const int32_t* levels, const int32_t* winner, const View<A>& grad,
                                int64_t c0, int64_t c1, RoiList list, int64_t bin0,
                                int64_t bin1) {
    Workspace w;
    // Max mode's backward adds channel by channel or sample by sample (scatter_winners), avg
    // mode's in blocks (scatter_samples_block).
    const int64_t block = s.mode == PoolMode::kMax ? kBlock<A> : kWideBlock<A>;
    const int64_t step = tile_channels(s, c0, c1, backward_tile_element(s), block);
    for (int64_t j = 0; j < list.count; ++j) {
      const int64_t k = list.index[j];
      w.plan.build(s, rois, levels, k, false);
      if (!w.plan.valid()) continue;
      if constexpr (!Unit) {
        if (s.mode == PoolMode::kMax && bin0 == 0 && bin1 == s.bins() &&
            backward_max_planes(s, ct, winner, grad, w, k, c0, c1))
          continue;
      }
      for (int64_t a = c0; a < c1; a += step)
        backward_roi<Unit>(s, ct, winner, grad, w, k, a, std::min(c1, a + step), bin0, bin1);
    }
  }

  // backward_features in max mode for all output channels where they are
  // adjacent (NHWC, the gradient in place, one level), image n, whose rois
  // are `list` (in increasing order), in bands of `band` map rows: each band
  // zeroed, then every roi that reaches it adds the terms whose cells lie in
  // it. A winner's add is a lone element's, a cache line each; a band that
  // fits the cache keeps them from missing where the whole gradient does
  // not. Each element gets the same terms in the same order as
  // backward_features adds them.
  static void backward_max_bands(const RoiCall& s, const T* ct, const G* rois,
                                 const int32_t* levels, const int32_t* winner,
                                 const View<A>& grad, int64_t n, RoiList list, int64_t band) {
    Workspace w;
    const int64_t H = s.level[0].H, W = s.level[0].W;
    // Each listed roi's first and last rows; none for an invalid roi.
    std::vector<int64_t> first(list.count, INT64_MAX), last(list.count, INT64_MIN);
    for (int64_t j = 0; j < list.count; ++j) {
      w.plan.build(s, rois, levels, list.index[j], false);
      if (!w.plan.valid()) continue;
      for (int64_t ph = 0; ph < s.PH; ++ph) {
        int64_t lo, hi;
        w.plan.rows(ph, &lo, &hi);
        first[j] = std::min(first[j], lo);
        last[j] = std::max(last[j], hi);
      }
    }
    for (int64_t r0 = 0; r0 < H; r0 += band) {
      const int64_t r1 = std::min(H, r0 + band);
      std::fill_n(grad.level[0] + s.feature_offset(0, n, 0, r0 * W), (r1 - r0) * W * s.C, A(0));
      for (int64_t j = 0; j < list.count; ++j) {
        if (last[j] < r0 || first[j] >= r1) continue;
        const int64_t k = list.index[j];
        w.plan.build(s, rois, levels, k, false);
        backward_roi<true>(s, ct, winner, grad, w, k, 0, s.Cout, 0, s.bins(), r0, r1);
      }
    }
  }

  // backward_roi's tile bytes per channel and bin: a cotangent, and its winner
  // in max mode.
  static int64_t backward_tile_element(const RoiCall& s) {
    return int64_t(sizeof(A)) + (s.mode == PoolMode::kMax ? int64_t(sizeof(int32_t)) : 0);
  }

  // tile[bin * n + c] = src[c * cs + bin * bs] as D, for n channels and `bins`
  // bins. Where each channel's bins are one run, 16 channels at a time: their
  // runs are then read in order, not n runs at once.
  template <typename D, typename S>
  static void load_tile(D* tile, const S* src, int64_t cs, int64_t bs, int64_t n, int64_t bins) {
    if (bs == 1) {
      constexpr int64_t kGroup = 16;
      for (int64_t c = 0; c < n; c += kGroup)
        transpose(tile + c, n, src + c * cs, cs, std::min(kGroup, n - c), bins);
      return;
    }
    for (int64_t c = 0; c < n; ++c)
      for (int64_t bin = 0; bin < bins; ++bin) {
        if constexpr (std::is_same_v<D, S>) tile[bin * n + c] = src[c * cs + bin * bs];
        else tile[bin * n + c] = load_element<D>(src[c * cs + bin * bs]);
      }
  }

  // backward_features' terms of roi k (its plan built in w) for output
  // channels [c0, c1) and bins [bin0, bin1); in max mode, only those whose
  // cells lie in map rows [r0, r1).
  template <bool Unit>
  static void backward_roi(const RoiCall& s, const T* ct, const int32_t* winner,
                           const View<A>& grad, Workspace& w, int64_t k, int64_t c0, int64_t c1,
                           int64_t bin0, int64_t bin1, int64_t r0 = 0,
                           int64_t r1 = INT64_MAX) {
    const int64_t n = c1 - c0, bins = s.bins();
    // Cotangents (and winners) whose channels are not adjacent (NCHW) are read
    // once into channel-last tiles, each channel's bins in a row.
    const int64_t ct_os = n > 1 ? s.output_offset(0, c0 + 1, 0) - s.output_offset(0, c0, 0) : 1;
    const bool max = s.mode == PoolMode::kMax;
    const bool tiled = ct_os != 1 && bins * n * backward_tile_element(s) <= kTileBytes;
    const int64_t bs = bins > 1 ? s.output_offset(0, c0, 1) - s.output_offset(0, c0, 0) : 1;
    w.acc.resize(tiled ? bins * n : n);
    if (tiled) load_tile(w.acc.data(), ct + s.output_offset(k, c0, 0), ct_os, bs, n, bins);
    if (tiled && max) {
      w.winners.resize(bins * n);
      load_tile(w.winners.data(), winner + s.output_offset(k, c0, 0), ct_os, bs, n, bins);
    }
    const int64_t l = w.plan.level(), cs = grad.channel_step(l);
    // The band's cells, as offsets from pixel 0.
    const int64_t H = s.level[l].H, row = s.level[l].W * grad.pixel;
    const bool banded = r0 > 0 || r1 < H;
    const int64_t p0 = r0 * row, p1 = std::min(r1, H) * row;
    for (int64_t ph = bin0 / s.PW; ph * s.PW < bin1; ++ph) {
      if (banded) {
        int64_t lo, hi;
        w.plan.rows(ph, &lo, &hi);
        if (hi < r0 || lo >= r1) continue;
      }
      const int64_t pw1 = std::min(s.PW, bin1 - ph * s.PW);
      for (int64_t pw = std::max<int64_t>(0, bin0 - ph * s.PW); pw < pw1; ++pw) {
        const int64_t bin = ph * s.PW + pw;
        const BinPlan b = w.plan.bin(ph, pw);
        A* img = grad.at(l, w.plan.image(), c0, bin);
        if (max) {
          // The FFI contract takes max mode only for operators whose samples
          // are each one cell or one bilinear sample (roi_common.h).
          const int64_t o = s.output_offset(k, c0, bin);
          const int64_t at = tiled ? bin * n : 0, os = tiled ? 1 : ct_os;
          auto scatter = [&](const auto* g, const int32_t* win) {
            const bool one = w.plan.uniform_corners() == 1;
            if (banded) {
              if (one) scatter_winners<1, true>(g, win, os, w, b, img, cs, grad.pixel, n, p0, p1);
              else scatter_winners<4, true>(g, win, os, w, b, img, cs, grad.pixel, n, p0, p1);
            } else {
              if (one) scatter_winners<1, false>(g, win, os, w, b, img, cs, grad.pixel, n, p0, p1);
              else scatter_winners<4, false>(g, win, os, w, b, img, cs, grad.pixel, n, p0, p1);
            }
          };
          if (tiled) scatter(w.acc.data() + at, w.winners.data() + at);
          else scatter(ct + o, winner + o);
          continue;
        }
        // The bin's cotangents as A, channel-last: read in place where they
        // already are (no copy), else converted into the workspace.
        const A* g = w.acc.data() + (tiled ? bin * n : 0);
        if (!tiled) {
          const T* row = ct + s.output_offset(k, c0, bin);
          A* copy = w.acc.data();
          if constexpr (std::is_same_v<T, A>) {
            if (ct_os == 1) g = row;
          }
          if (g == copy) {
            if (ct_os == 1) load_run(copy, row, n);
            else
              for (int64_t c = 0; c < n; ++c) copy[c] = load_element<A>(row[c * ct_os]);
          }
        }
        const A divisor = A(b.divisor);
        const bool exact = exact_reciprocal(divisor);
        const A inv = A(1) / divisor;
        if (from_registers<Unit>(w.plan, n)) {
          if (n == 1)
            each_sample(w.plan, b, [&](const Sample<G>& p) {
              scatter_sample_channels<true>(img, g, p, divisor, exact, inv, grad.pixel, 1, 1);
            });
          else
            each_sample(w.plan, b, [&](const Sample<G>& p) {
              scatter_sample_channels<Unit>(img, g, p, divisor, exact, inv, grad.pixel, cs, n);
            });
          continue;
        }
        each_chunk<Unit, kWideBlock<A>>(
            w, b, 0, n,
            [&](int64_t c, int64_t i0, int64_t i1, auto width) {
              scatter_samples_block<decltype(width)::value>(img + c, g + c, w.samples, i1 - i0,
                                                            divisor, exact, inv, grad.pixel);
            },
            [&](int64_t c, int64_t i0, int64_t i1) {
              for (int64_t i = 0; i < i1 - i0; ++i)
                scatter_sample_channels<Unit>(img + c * cs, g + c, w.samples[i], divisor,
                                              exact, inv, grad.pixel, cs, n - c);
            });
      }
    }
  }

  // The most samples table_roi_corners tables: beyond this (boxes far larger
  // than their bins' sampling grid), backward_roi's per-bin tables instead.
  static constexpr int64_t kRoiTableSamples = int64_t{1} << 16;

  // Every bin's corners (corners_into), bin after bin, into w.cell and
  // w.weight, bin `bin`'s first sample at w.bin_start[bin]; false, with
  // nothing tabled, beyond kRoiTableSamples samples.
  template <int kCorners>
  static bool table_roi_corners(const RoiCall& s, Workspace& w, int64_t pixel) {
    const int64_t bins = s.bins();
    w.bin_start.resize(bins + 1);
    int64_t total = 0;
    for (int64_t bin = 0; bin < bins; ++bin) {
      w.bin_start[bin] = total;
      total += w.plan.bin(bin / s.PW, bin % s.PW).count();
      if (total > kRoiTableSamples) return false;
    }
    w.bin_start[bins] = total;
    w.cell.resize(total * kCorners);
    w.weight.resize(total * kCorners);
    for (int64_t bin = 0; bin < bins; ++bin)
      corners_into<kCorners>(w, w.plan.bin(bin / s.PW, bin % s.PW), pixel,
                             w.cell.data() + w.bin_start[bin] * kCorners,
                             w.weight.data() + w.bin_start[bin] * kCorners);
    return true;
  }

  // Max mode's backward of roi k (its plan built in w), output channels
  // [c0, c1), where each output channel's bins are in a row, each input
  // channel is a plane (NCHW, the gradient in place) and each sample is one
  // cell: channel after channel, its cotangents and winners read in a row,
  // each added at its winner's cell in the channel's plane (near each
  // other: the roi's part of it), from one table of the roi's cells. Each
  // element gets its terms in bin order, as scatter_winners adds them. False,
  // with nothing done, where that does not apply (the caller then uses
  // backward_roi).
  static bool backward_max_planes(const RoiCall& s, const T* ct, const int32_t* winner,
                                  const View<A>& grad, Workspace& w, int64_t k, int64_t c0,
                                  int64_t c1) {
    if (grad.packed || position_sensitive(s.op) || s.layout != Layout::kNCHW ||
        w.plan.uniform_corners() != 1 || !table_roi_corners<1>(s, w, grad.pixel))
      return false;
    const int64_t bins = s.bins(), l = w.plan.level(), image = w.plan.image();
    const int64_t* start = w.bin_start.data();
    const int64_t* cell = w.cell.data();
    const A* weight = w.weight.data();
    for (int64_t c = c0; c < c1; ++c) {
      const T* g = ct + s.output_offset(k, c, 0);
      const int32_t* win = winner + s.output_offset(k, c, 0);
      A* img = grad.at(l, image, c, 0);
      for (int64_t bin = 0; bin < bins; ++bin) {
        const int64_t i = win[bin];
        if (i < 0 || i >= start[bin + 1] - start[bin]) continue;
        img[cell[start[bin] + i]] += load_element<A>(g[bin]) * weight[start[bin] + i] / A(1);
      }
    }
    return true;
  }

  // The most samples a bin may have for scatter_winners to add its winners
  // sample by sample (add_winners_by_sample: a vector RMW per corner and
  // sample) rather than channel by channel (a scattered element per channel
  // and corner). Measured on one thread (a C++ harness calling this struct,
  // best of 3-8 calls, NHWC): the C4 head's roi_pool backward 113-118 -> 66-71
  // ms at 8, 16 or 32; its roi_align (max) 346-355 -> 318; the mask head's
  // roi_pool 15-16 -> 11-13; the FPN level's roi_pool (bins of up to hundreds
  // of cells) 74-82 -> 70-76.
  static constexpr int64_t kSampleWiseMost = 16;

  // Max mode's backward for bin b of a plan whose samples all read kCorners
  // corners (RoiPlan::uniform_corners): per channel, the cotangent through
  // the winner's sample added at its corners, as scatter_sample adds them,
  // with the bin's corner offsets and weights tabled once rather than each
  // winner's sample decoded per channel: the loop over channels is then
  // gathers and scattered adds, short enough for many of its cache misses to
  // be in flight at once. Adjacent channels and cotangents, few samples:
  // sample by sample instead (kSampleWiseMost).
  // Channel c's cotangent is g[c * os], its winner win[c * os], c in [0, n);
  // when kBanded, only corners at offsets [p0, p1) from pixel 0 are added.
  template <int kCorners, bool kBanded, typename C>
  static void scatter_winners(const C* g, const int32_t* win, int64_t os, Workspace& w,
                              const BinPlan& b, A* img, int64_t cs, int64_t pixel, int64_t n,
                              int64_t p0, int64_t p1) {
    if (cs == 1 && os == 1 && b.count() <= kSampleWiseMost) {
      table_corners<kCorners>(w, b, pixel);
      return add_winners_by_sample<kCorners, kBanded>(img, g, win, w.cell.data(),
                                                      w.weight.data(), b.count(), n, p0, p1);
    }
    each_winner<kCorners>(w, b, pixel, win, os, n, [&](int64_t c, const int64_t* at,
                                                          const A* wt) {
      if (!at) return;
      const A gc = load_element<A>(g[c * os]);
      for (int j = 0; j < kCorners; ++j)
        if (!kBanded || (at[j] >= p0 && at[j] < p1)) img[c * cs + at[j]] += gc * wt[j] / A(1);
    });
  }

  // The samples of bin b that count for output o: all (avg), the winner
  // (max; none for an implicit 0).
  static void counted(const RoiCall& s, const BinPlan& b, const int32_t* winner, int64_t o,
                      int64_t* i0, int64_t* i1) {
    *i0 = 0;
    *i1 = b.count();
    if (s.mode != PoolMode::kMax) return;
    const bool has = winner[o] >= 0 && winner[o] < b.count();
    *i0 = has ? winner[o] : 0;
    *i1 = has ? *i0 + 1 : 0;
  }

  // d(sample value)/d(coordinate j) . t for the box tangent t, per corner:
  // the directional derivative of each corner weight.
  static void weight_derivatives(const RoiCall& s, const SampleSlopes<G>& d, const G* t,
                                 G dw[4]) {
    G ydot = G(0), xdot = G(0);
    for (int64_t j = 0; j < s.coords(); ++j) {
      if (d.dpos[0][j] != G(0)) ydot += d.dpos[0][j] * t[j];
      if (d.dpos[1][j] != G(0)) xdot += d.dpos[1][j] * t[j];
    }
    for (int j = 0; j < 4; ++j) dw[j] = d.dy[j] * ydot + d.dx[j] * xdot;
  }

  // d(out)/d(boxes) . boxes_dot, rows [k0, k1), output channels [c0, c1):
  // per output, its samples' terms in order, then the divisor.
  static void forward_boxes(const RoiCall& s, const View<const T>& f, const G* rois,
                            const int32_t* levels, const G* rois_dot, const int32_t* winner,
                            T* out_dot, int64_t k0, int64_t k1, int64_t c0, int64_t c1) {
    Workspace w;
    std::vector<G> dw(4 * kChunk);
    const int64_t n = c1 - c0;
    w.acc.resize(n);
    for (int64_t k = k0; k < k1; ++k) {
      w.plan.build(s, rois, levels, k, true);
      if (!w.plan.valid()) {
        zero_rows(s, out_dot, nullptr, k, c0, c1);
        continue;
      }
      const G* t = roi_coords(s, rois_dot, k);
      const int64_t l = w.plan.level(), cs = f.channel_step(l);
      for (int64_t ph = 0; ph < s.PH; ++ph)
        for (int64_t pw = 0; pw < s.PW; ++pw) {
          const int64_t bin = ph * s.PW + pw;
          const BinPlan b = w.plan.bin(ph, pw);
          const T* img = f.at(l, w.plan.image(), c0, bin);
          std::fill_n(w.acc.data(), n, A(0));
          for (int64_t i0 = 0; i0 < b.count(); i0 += kChunk) {
            const int64_t i1 = std::min(b.count(), i0 + kChunk);
            w.plan.samples(b, i0, i1, w.samples, w.slopes);
            for (int64_t i = 0; i < i1 - i0; ++i) weight_derivatives(s, w.slopes[i], t, &dw[4 * i]);
            for (int64_t c = 0; c < n; ++c) {
              int64_t u0, u1;
              counted(s, b, winner, s.output_offset(k, c0 + c, bin), &u0, &u1);
              const T* ch = img + c * cs;
              A v = w.acc[c];
              for (int64_t i = std::max(u0, i0); i < std::min(u1, i1); ++i) {
                const Sample<G>& p = w.samples[i - i0];
                if (p.kind == SampleKind::kEmpty) continue;  // reads nothing
                for (int j = 0; j < 4; ++j)
                  v += A(dw[4 * (i - i0) + j]) * load_element<A>(ch[p.at[j] * f.pixel]);
              }
              w.acc[c] = v;
            }
          }
          for (int64_t c = 0; c < n; ++c)
            out_dot[s.output_offset(k, c0 + c, bin)] = store_element<T>(w.acc[c] / A(b.divisor));
        }
    }
  }

  // grad_boxes rows [k0, k1): the coordinate slots of each row (a (K, 1 +
  // coords) row's batch index slot gets 0). Summed in double, in a fixed
  // order: bin, sample chunk, channel, sample.
  static void backward_boxes(const RoiCall& s, const View<const T>& f, const G* rois,
                             const int32_t* levels, const T* ct, const int32_t* winner,
                             G* grad_rois, int64_t k0, int64_t k1) {
    Workspace w;
    for (int64_t k = k0; k < k1; ++k) {
      G* out = grad_rois + k * s.roi_stride();
      for (int64_t j = 0; j < s.roi_stride(); ++j) out[j] = G(0);
      w.plan.build(s, rois, levels, k, true);
      if (!w.plan.valid()) continue;
      const int64_t l = w.plan.level(), cs = f.channel_step(l);
      double grad[kMaxBoxCoords] = {};
      for (int64_t ph = 0; ph < s.PH; ++ph)
        for (int64_t pw = 0; pw < s.PW; ++pw) {
          const int64_t bin = ph * s.PW + pw;
          const BinPlan b = w.plan.bin(ph, pw);
          const T* img = f.at(l, w.plan.image(), 0, bin);
          for (int64_t i0 = 0; i0 < b.count(); i0 += kChunk) {
            const int64_t i1 = std::min(b.count(), i0 + kChunk);
            w.plan.samples(b, i0, i1, w.samples, w.slopes);
            for (int64_t c = 0; c < s.Cout; ++c) {
              const int64_t o = s.output_offset(k, c, bin);
              const double g = double(load_element<A>(ct[o])) / b.divisor;
              if (g == 0) continue;
              int64_t u0, u1;
              counted(s, b, winner, o, &u0, &u1);
              const T* ch = img + c * cs;
              for (int64_t i = std::max(u0, i0); i < std::min(u1, i1); ++i) {
                const SampleSlopes<G>& d = w.slopes[i - i0];
                const Sample<G>& p = w.samples[i - i0];
                if (p.kind == SampleKind::kEmpty) continue;  // reads nothing
                double dy = 0, dx = 0;  // d(sample value)/d(sample y), /d(sample x)
                for (int j = 0; j < 4; ++j) {
                  const double v = double(load_element<A>(ch[p.at[j] * f.pixel]));
                  dy += double(d.dy[j]) * v;
                  dx += double(d.dx[j]) * v;
                }
                for (int64_t j = 0; j < s.coords(); ++j) {
                  if (d.dpos[0][j] != G(0)) grad[j] += g * dy * double(d.dpos[0][j]);
                  if (d.dpos[1][j] != G(0)) grad[j] += g * dx * double(d.dpos[1][j]);
                }
              }
            }
          }
        }
      G* coords = out + (s.per_image ? 0 : 1);
      for (int64_t j = 0; j < s.coords(); ++j) coords[j] = G(grad[j]);
    }
  }
};

}  // namespace jax_roialign::cpu::JRA_CPU_ISA
