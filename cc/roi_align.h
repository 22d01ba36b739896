// roi_align's math, once (docs/semantics.md, "roi_align", and ps_roi_align, which is its
// aligned geometry): box geometry, the sampling grid, the window test, the
// bilinear taps and their derivatives. Compiled
// by the CPU kernels and by nvcc; every function is host+device and free of
// allocation, so a platform only decides how to loop and where to store.
//
// Floating-point order follows torchvision's CPU kernel operation for
// operation; build with FMA contraction off (-ffp-contract=off) so samples
// that land exactly on a window edge agree with it bit for bit.
#pragma once

#include <cmath>
#include <cstdint>

#include "roi_common.h"

namespace jax_roialign {

// Largest grid size we represent; beyond it a grid would never be iterated
// anyway (only in-window samples are), this only keeps int64 from overflowing.
constexpr double kMaxGrid = 4.0e18;

// One axis of one roi: start, bin size, grid size, and whether the roi size
// was clamped to 1 (unaligned rois smaller than a cell), which makes the bin
// size independent of the box.
template <typename G>
struct AxisGeometry {
  G start;          // ys (or xs)
  G bin;            // bh
  int64_t grid;     // gh: samples per bin along this axis
  bool size_clamped;
  G scale;          // spatial_scale, as G
  int64_t bins;     // PH
  int64_t extent;   // H

  // Sample position: ys + ph*bh + (iy + .5)*bh/gh, in torchvision's order.
  JRA_HD G position(int64_t p, int64_t i) const {
    return start + G(p) * bin + (G(i) + G(0.5)) * bin / G(grid);
  }
  // Inside the sampling window [-1, extent]; NaN is outside.
  JRA_HD bool in_window(G v) const { return v >= G(-1) && v <= G(extent); }
  // d position / d (low corner, high corner), before the bilinear clamp.
  JRA_HD void position_derivative(int64_t p, int64_t i, G* d_lo, G* d_hi) const {
    if (size_clamped) { *d_lo = scale; *d_hi = G(0); return; }
    const G frac = (G(p) + (G(i) + G(0.5)) / G(grid)) / G(bins);
    *d_lo = scale * (G(1) - frac);
    *d_hi = scale * frac;
  }
};

template <typename G>
JRA_HD AxisGeometry<G> axis_geometry(G lo, G hi, const RoiCall& s, int64_t bins,
                                     int64_t extent) {
  AxisGeometry<G> a;
  const G scale = G(s.spatial_scale);
  const G offset = s.aligned ? G(0.5) : G(0);
  a.start = lo * scale - offset;
  const G end = hi * scale - offset;
  G size = end - a.start;
  a.size_clamped = !s.aligned && size < G(1);
  if (a.size_clamped) size = G(1);
  a.bin = size / G(bins);
  if (s.sampling_ratio > 0) {
    a.grid = s.sampling_ratio;
  } else {
    using std::ceil;
    const G g = ceil(size / G(bins));
    // Negative (reversed aligned box) or NaN: no samples. Too large: clamp.
    a.grid = g > G(0) ? (g < G(kMaxGrid) ? int64_t(g) : int64_t(kMaxGrid)) : 0;
  }
  a.scale = scale;
  a.bins = bins;
  a.extent = extent;
  return a;
}

// The contiguous range [lo, hi) of sample indices of bin p whose position is
// inside the window. Positions are monotone in the index, so the range is an
// interval found by bisection with the exact window test: a huge box costs
// O(log grid) here and iterates only over in-window samples afterwards.
template <typename G>
JRA_HD void window_range(const AxisGeometry<G>& a, int64_t p, int64_t* lo, int64_t* hi) {
  const int64_t g = a.grid;
  *lo = *hi = 0;
  if (g <= 0 || !(a.bin == a.bin) || !(a.start == a.start)) return;
  const bool increasing = a.bin >= G(0);
  // first index at which `past_low` holds, where past_low(i) means the
  // position has crossed the window's entry edge.
  auto entered = [&](int64_t i) {
    const G v = a.position(p, i);
    return increasing ? v >= G(-1) : v <= G(a.extent);
  };
  auto left = [&](int64_t i) {
    const G v = a.position(p, i);
    return increasing ? v > G(a.extent) : v < G(-1);
  };
  int64_t b = 0, e = g;  // first i in [0, g) with entered(i)
  while (b < e) {
    const int64_t m = b + (e - b) / 2;
    if (entered(m)) e = m; else b = m + 1;
  }
  const int64_t first = b;
  b = first; e = g;      // first i in [first, g) with left(i)
  while (b < e) {
    const int64_t m = b + (e - b) / 2;
    if (left(m)) e = m; else b = m + 1;
  }
  // Samples in [first, b) passed both monotone edges; the exact test still
  // decides (it also rejects NaN positions).
  int64_t l = first, h = b;
  while (l < h && !a.in_window(a.position(p, l))) ++l;
  while (h > l && !a.in_window(a.position(p, h - 1))) --h;
  *lo = l;
  *hi = h;
}

// The bilinear taps of an in-window sample along one axis (docs/semantics.md's clamp:
// y <= 0 reads row 0, the last row reads itself; both have slope 0).
template <typename G>
JRA_HD AxisTap<G> axis_tap(G v, int64_t extent) {
  AxisTap<G> t;
  t.slope = G(1);
  if (v <= G(0)) { v = G(0); t.slope = G(0); }
  t.low = int64_t(v);
  if (t.low >= extent - 1) {
    t.low = t.high = extent - 1;
    v = G(t.low);
    t.slope = G(0);
  } else {
    t.high = t.low + 1;
  }
  t.w_high = v - G(t.low);
  t.w_low = G(1) - t.w_high;
  return t;
}

// Everything about one roi that does not depend on the channel.
template <typename G>
struct RoiGeometry {
  int64_t image;          // -1: invalid roi
  AxisGeometry<G> y, x;
  G count;                // max(gh * gw, 1): the avg divisor
  G x1, y1, x2, y2;
};

template <typename G>
JRA_HD RoiGeometry<G> roi_geometry(const RoiCall& s, const G* rois, int64_t k) {
  RoiGeometry<G> r;
  r.image = roi_image(s, rois, k);
  const G* c = roi_corners(s, rois, k);
  r.x1 = c[0]; r.y1 = c[1]; r.x2 = c[2]; r.y2 = c[3];
  r.y = axis_geometry(r.y1, r.y2, s, s.PH, s.H);
  r.x = axis_geometry(r.x1, r.x2, s, s.PW, s.W);
  const G n = G(r.y.grid) * G(r.x.grid);
  r.count = n > G(1) ? n : G(1);
  return r;
}

}  // namespace jax_roialign
