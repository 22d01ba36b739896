// roi_align's math, once (docs/semantics.md, "roi_align", and ps_roi_align,
// which is its aligned geometry): box geometry, the sampling grid, the window
// test, the bilinear taps and their derivatives. Compiled by the CPU kernels
// and by nvcc; every function is host+device and free of allocation, so a
// platform only decides how to loop and where to store.
//
// Floating-point order follows torchvision's CPU kernel operation for
// operation; build with FMA contraction off (-ffp-contract=off) so samples
// that land exactly on a window edge agree with it bit for bit.
#pragma once

#include <cmath>
#include <cstdint>

#include "roi_common.h"
#include "sample_grid.h"

namespace jax_roialign {

// One axis of one roi: start, bin size, grid size, and whether the roi size
// was clamped to 1 (unaligned rois smaller than a cell), which makes the bin
// size independent of the box.
template <typename G>
struct AxisGeometry {
  bool valid;       // start, end and size finite; else the roi is bad data
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
  // The in-window samples of bin p (sample_grid.h).
  JRA_HD GridAxis window(int64_t p) const {
    if (!valid) return GridAxis{};
    const bool increasing = bin >= G(0);
    return in_window_range(grid, [&](int64_t i) {
      const G v = position(p, i);
      return increasing ? v >= G(-1) : v <= G(extent);
    }, [&](int64_t i) {
      const G v = position(p, i);
      return increasing ? v > G(extent) : v < G(-1);
    }, [&](int64_t i) { return in_window(position(p, i)); });
  }
};

template <typename G>
JRA_HD AxisGeometry<G> axis_geometry(G lo, G hi, double spatial_scale, bool aligned,
                                     int64_t sampling_ratio, int64_t bins, int64_t extent) {
  AxisGeometry<G> a;
  const G scale = G(spatial_scale);
  const G offset = aligned ? G(0.5) : G(0);
  a.start = lo * scale - offset;
  const G end = hi * scale - offset;
  G size = end - a.start;
  // Non-finite corners or size: bad data (the size clamp below would
  // otherwise turn a -inf size into 1 and read the map).
  a.valid = is_finite(a.start) && is_finite(end) && is_finite(size);
  a.size_clamped = !aligned && size < G(1);
  if (a.size_clamped) size = G(1);
  a.bin = size / G(bins);
  if (sampling_ratio > 0) {
    a.grid = sampling_ratio;
  } else {
    using std::ceil;
    const G g = ceil(size / G(bins));
    // Negative (reversed aligned box) or NaN: no samples. Too large: clamp.
    a.grid = g > G(0) ? (g < G(kMaxGrid) ? int64_t(g) : int64_t(kMaxGrid)) : 0;
  }
  a.scale = scale;
  a.bins = bins;
  a.extent = extent;
  if (!a.valid) a.grid = 0;
  return a;
}

// The bilinear taps of an in-window sample along one axis (docs/semantics.md's
// clamp: y <= 0 reads row 0, the last row reads itself; both have slope 0).
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

}  // namespace jax_roialign
