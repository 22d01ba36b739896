// crop_and_resize's math (docs/semantics.md, "crop_and_resize"; TensorFlow's
// CropAndResize CPU kernel, operation for operation): a normalised box [y1, x1,
// y2, x2] resampled to a CH x CW crop, one sample per output cell, at
// y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (CH - 1) (the box centre when
// CH == 1); a sample outside [0, H - 1] gives the extrapolation value.
// Bilinear samples are TensorFlow's lerps (SampleKind::kLerp) between the
// floor and the ceil of the position; nearest ones read the cell at
// round(position), half away from zero.
#pragma once

#include <cmath>
#include <cstdint>

#include "roi_common.h"
#include "sample_grid.h"

namespace jax_roialign {

template <typename G>
struct CropAxis {
  bool valid;      // corners and their scaled forms finite; else the roi is bad data
  G start;         // y1 * (H - 1)
  G step;          // (y2 - y1) * (H - 1) / (CH - 1); unused when CH == 1
  G centre;        // 0.5 * (y1 + y2) * (H - 1), the one sample when CH == 1
  G ratio;         // (H - 1) / (CH - 1): d position / d corner, TensorFlow's form
  int64_t cells;   // CH
  int64_t extent;  // H

  JRA_HD G position(int64_t p) const { return cells > 1 ? start + G(p) * step : centre; }
  // [0, H - 1], inclusive; NaN is outside.
  JRA_HD bool in_window(G v) const { return v >= G(0) && v <= G(extent - 1); }

  // floor and ceil of an in-window position, the lerp weight on the ceil.
  JRA_HD AxisTap<G> tap(G v) const {
    using std::ceil;
    using std::floor;
    AxisTap<G> t;
    t.low = int64_t(floor(v));
    t.high = int64_t(ceil(v));
    t.w_high = v - G(t.low);
    t.w_low = G(1) - t.w_high;
    t.slope = G(1);
    return t;
  }
  // round(v), half away from zero (C's round, TensorFlow's roundf).
  JRA_HD int64_t nearest(G v) const {
    using std::round;
    return int64_t(round(v));
  }
  // d position / d (low corner, high corner).
  JRA_HD void position_derivative(int64_t p, G* d_lo, G* d_hi) const {
    if (cells > 1) {
      *d_hi = G(p) * ratio;
      *d_lo = G(extent - 1) - *d_hi;
    } else {
      *d_lo = *d_hi = G(0.5) * G(extent - 1);
    }
  }
};

template <typename G>
JRA_HD CropAxis<G> crop_axis(G lo, G hi, int64_t cells, int64_t extent) {
  CropAxis<G> a;
  const G span = G(extent - 1);
  a.start = lo * span;
  a.step = cells > 1 ? (hi - lo) * span / G(cells - 1) : G(0);
  a.centre = G(0.5) * (lo + hi) * span;
  a.ratio = cells > 1 ? span / G(cells - 1) : G(0);
  a.cells = cells;
  a.extent = extent;
  // Bad data (docs/semantics.md): a non-finite corner, or a scaled corner,
  // size or centre that overflows, whatever the crop size (a one-cell crop
  // reads only the centre, but its box is as bad).
  a.valid = is_finite(lo) && is_finite(hi) && is_finite(a.start) && is_finite(hi * span) &&
            is_finite((hi - lo) * span) && is_finite(a.step) && is_finite(a.centre);
  return a;
}

// A kLerp sample from TensorFlow's taps: corners (top, left), (top, right),
// (bottom, left), (bottom, right); w0 the x lerp, w1 the y lerp.
template <typename G>
JRA_HD Sample<G> lerp_sample(const AxisTap<G>& ty, const AxisTap<G>& tx, int64_t W) {
  Sample<G> s = make_sample(ty, tx, W);
  s.w[0] = tx.w_high;
  s.w[1] = ty.w_high;
  s.w[2] = s.w[3] = G(0);
  s.kind = SampleKind::kLerp;
  return s;
}

}  // namespace jax_roialign
