// The channel-independent part of an operator for one roi on the CPU, built
// once per roi and reused across every channel: the roi's sampler
// (bin_sampler.h) and, for the separable operators, each bin row's y taps and
// each bin column's x taps, so that a sample costs a combination of two
// precomputed taps. Memory is per axis (bins x entries), not per sample, so
// a large sampling grid costs no more than its taps; samples are produced in
// chunks on demand. roi_align_rotated, not separable, keeps each grid row's
// and column's box-frame coordinate with its rotation products instead
// (RotatedGeometry::Line), so a sample only adds them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../bin_sampler.h"

namespace jax_roialign::cpu {

// Rois by index, in the order a kernel visits them: `count` indices from
// `index` (the handlers' rois grouped by image, handler_common.h's
// roi_order). A type of its own, so that no pair of integers (a range's
// first and last; a 0, the null pointer, and a count) passes for one.
struct RoiList {
  const int64_t* index;
  int64_t count;
};

// One bin of a roi: its windows (the enumerated entries along y and x), the
// avg divisor and the max-mode tie rule.
struct BinPlan {
  int64_t ph, pw;
  GridAxis gy, gx;
  int64_t outside_from;  // max: first row an implicit-0 sample precedes (sample_grid.h);
                         // avg: kNever (no implicit 0 is ever compared)
  double divisor;        // avg: the sum is divided by this (1 for max)

  int64_t count() const { return gy.count * gx.count; }
  // Max mode: whether the bin's implicit 0 precedes its sample `index`.
  bool outside_precedes(int64_t index) const {
    return outside_from != kNever && index / gx.count >= outside_from;
  }
};

template <typename G>
class RoiPlan {
 public:
  bool valid() const { return roi_.valid(); }
  int64_t image() const { return roi_.image; }
  int64_t level() const { return roi_.level; }
  // The corners every sample reads where all samples combine them alike: 1
  // (SampleKind::kCell), 4 (kBilinear); else 0 (kLerp, roi_align_rotated).
  int uniform_corners() const {
    if (!roi_.separable()) return 0;
    switch (roi_.combination()) {
      case SampleKind::kCell:
        return 1;
      case SampleKind::kBilinear:
        return 4;
      case SampleKind::kLerp:
      case SampleKind::kEmpty:
        break;
    }
    return 0;
  }

  // Roi k's plan; with `slopes`, the position derivatives the box kernels need.
  void build(const RoiCall& s, const G* rois, const int32_t* levels, int64_t k, bool slopes) {
    roi_ = roi_sampler(s, rois, levels, k);
    slopes_ = slopes;
    if (!valid()) return;
    axis(0, s.PH, wy_, oy_, ty_, dy_, ly_);
    axis(1, s.PW, wx_, ox_, tx_, dx_, lx_);
  }

  // Separable plans: the first and last map rows bin row ph's samples read
  // (*lo > *hi where they read none).
  void rows(int64_t ph, int64_t* lo, int64_t* hi) const {
    const int64_t end = ph + 1 < int64_t(oy_.size()) ? oy_[ph + 1] : int64_t(ty_.size());
    *lo = INT64_MAX;
    *hi = INT64_MIN;
    for (int64_t i = oy_[ph]; i < end; ++i) {
      *lo = std::min(*lo, std::min(ty_[i].low, ty_[i].high));
      *hi = std::max(*hi, std::max(ty_[i].low, ty_[i].high));
    }
  }

  BinPlan bin(int64_t ph, int64_t pw) const {
    BinPlan b;
    b.ph = ph;
    b.pw = pw;
    b.gy = wy_[ph];
    b.gx = wx_[pw];
    b.outside_from = roi_.avg ? kNever : roi_.outside_from(b.gy, b.gx);
    b.divisor = roi_.divisor(b.gy, b.gx);
    return b;
  }

  // Separable plans: bin b's taps along y (b.gy.count of them) and x
  // (b.gx.count); its samples are RoiSampler<G>::combined<combination()>(
  // y[a], x[e], width()), row-major, as samples() produces them.
  bool separable() const { return roi_.separable(); }
  SampleKind combination() const { return roi_.combination(); }
  int64_t width() const { return roi_.W; }
  const AxisTap<G>* y_taps(const BinPlan& b) const { return ty_.data() + oy_[b.ph]; }
  const AxisTap<G>* x_taps(const BinPlan& b) const { return tx_.data() + ox_[b.pw]; }

  // Samples [i0, i1) of bin b into out[0, i1 - i0) (row-major over the
  // enumerated entries, as BinSampler::sample); their slopes into d if given
  // (the plan must have been built with slopes).
  void samples(const BinPlan& b, int64_t i0, int64_t i1, Sample<G>* out,
               SampleSlopes<G>* d) const {
    if (i1 <= i0) return;
    int64_t a = i0 / b.gx.count, e = i0 - a * b.gx.count;
    if (!roi_.separable()) {
      if (d) return rotated_samples<true>(b, a, e, i1 - i0, out, d);
      return rotated_samples<false>(b, a, e, i1 - i0, out, nullptr);
    }
    const AxisTap<G>* ty = ty_.data() + oy_[b.ph];
    const AxisTap<G>* tx = tx_.data() + ox_[b.pw];
    if (!d) {  // the combination chosen once, not per sample
      switch (roi_.combination()) {
        case SampleKind::kCell:
          return combine_all<SampleKind::kCell>(ty, tx, b.gx.count, a, e, i1 - i0, out);
        case SampleKind::kLerp:
          return combine_all<SampleKind::kLerp>(ty, tx, b.gx.count, a, e, i1 - i0, out);
        case SampleKind::kBilinear:
        case SampleKind::kEmpty:
          return combine_all<SampleKind::kBilinear>(ty, tx, b.gx.count, a, e, i1 - i0, out);
      }
    }
    for (int64_t i = i0; i < i1; ++i) {
      SampleSlopes<G>* di = d ? &d[i - i0] : nullptr;
      if (di) {
        const G* py = dy_.data() + (oy_[b.ph] + a) * kMaxBoxCoords;
        const G* px = dx_.data() + (ox_[b.pw] + e) * kMaxBoxCoords;
        for (int64_t j = 0; j < kMaxBoxCoords; ++j) {
          di->dpos[0][j] = py[j];
          di->dpos[1][j] = px[j];
        }
      }
      out[i - i0] = roi_.combine(ty[a], tx[e], di);
      if (++e == b.gx.count) {
        e = 0;
        ++a;
      }
    }
  }

 private:
  using Line = typename RotatedGeometry<G>::Line;

  // out[0, n) = roi_align_rotated's samples of bin b from entries (a, e)
  // onwards, row-major; their slopes into d[0, n) when kSlopes.
  template <bool kSlopes>
  void rotated_samples(const BinPlan& b, int64_t a, int64_t e, int64_t n, Sample<G>* out,
                       SampleSlopes<G>* d) const {
    const Line* ly = ly_.data() + oy_[b.ph];
    const Line* lx = lx_.data() + ox_[b.pw];
    for (int64_t i = 0; i < n; ++i) {
      roi_.rotated_sample(b.ph, b.pw, b.gy, b.gx, a, e, ly[a], lx[e], kSlopes ? &d[i] : nullptr,
                          &out[i]);
      if (++e == b.gx.count) {
        e = 0;
        ++a;
      }
    }
  }

  // out[0, n) = the samples of taps ty[a] x tx[e] onwards, row-major over
  // rows of `cols` entries, combined as K.
  template <SampleKind K>
  void combine_all(const AxisTap<G>* ty, const AxisTap<G>* tx, int64_t cols, int64_t a,
                   int64_t e, int64_t n, Sample<G>* out) const {
    const int64_t W = roi_.W;
    for (int64_t i = 0; i < n; ++a, e = 0)
      for (; e < cols && i < n; ++e, ++i)
        out[i] = RoiSampler<G>::template combined<K>(ty[a], tx[e], W);
  }

  // Windows, tap offsets and taps (and position derivatives) of every bin
  // along one axis; roi_align_rotated's lines instead of taps.
  void axis(int a, int64_t bins, std::vector<GridAxis>& w, std::vector<int64_t>& off,
            std::vector<AxisTap<G>>& taps, std::vector<G>& dpos, std::vector<Line>& lines) {
    w.resize(bins);
    off.resize(bins);
    int64_t total = 0;
    for (int64_t p = 0; p < bins; ++p) {
      w[p] = roi_.window(a, p);
      off[p] = total;
      total += w[p].count;
    }
    if (!roi_.separable()) {
      const RotatedGeometry<G>& r = roi_.geo.rotated;
      taps.clear();
      dpos.clear();
      lines.resize(total);
      for (int64_t p = 0; p < bins; ++p)
        for (int64_t j = 0; j < w[p].count; ++j)
          lines[off[p] + j] = a == 0 ? r.row(p, w[p].index(j)) : r.column(p, w[p].index(j));
      return;
    }
    // Sized first and written in place, not pushed back: a pushed tap goes
    // through the stack in pieces and is read back whole, a stalled store
    // forward per tap (13% of the small head's roi_align forward, one thread).
    lines.clear();
    taps.resize(total);
    dpos.resize(slopes_ ? total * kMaxBoxCoords : 0);
    for (int64_t p = 0; p < bins; ++p)
      for (int64_t j = 0; j < w[p].count; ++j)
        taps[off[p] + j] =
            roi_.tap(a, p, w[p], j, slopes_ ? &dpos[(off[p] + j) * kMaxBoxCoords] : nullptr);
  }

  RoiSampler<G> roi_{};
  bool slopes_ = false;
  std::vector<GridAxis> wy_, wx_;
  std::vector<int64_t> oy_, ox_;
  std::vector<AxisTap<G>> ty_, tx_;
  std::vector<G> dy_, dx_;  // kMaxBoxCoords per tap
  std::vector<Line> ly_, lx_;  // roi_align_rotated
};

}  // namespace jax_roialign::cpu
