// The faster-rcnn.pytorch RoIAlign layers' math (docs/semantics.md, "legacy"): one
// bilinear point per lattice node, the lattice spanning the roi with a +1
// size and (L - 1) intervals; a node outside [0, H) x [0, W) is 0, a node on
// [H-1, H) extrapolates from rows H-2, H-1. Fixed here, unlike the original:
// H == 1 (or W == 1) reads the single row twice instead of out of bounds.
#pragma once

#include <cmath>
#include <cstdint>

#include "roi_common.h"
#include "sample_grid.h"

namespace jax_roialign {

template <typename G>
struct LegacyAxis {
  bool valid;         // corners and size finite; else the roi is bad data
  G start;            // x1 * s
  G bin;              // roi size / (L - 1)
  G scale;
  bool size_clamped;  // roi size max(.., 0) hit 0: the lattice no longer moves with hi
  int64_t intervals;  // L - 1
  int64_t extent;     // H

  JRA_HD G position(int64_t p) const { return G(p) * bin + start; }
  JRA_HD bool in_window(G v) const { return v >= G(0) && v < G(extent); }
  // Taps of an in-window node: rows min(floor(h), H-2) and the next, weight
  // slope 1 everywhere (extrapolation included); H == 1 reads row 0 twice.
  JRA_HD AxisTap<G> tap(G v) const {
    using std::floor;
    AxisTap<G> t;
    if (extent == 1) {
      t.low = t.high = 0;
    } else {
      const int64_t f = int64_t(floor(v));
      t.low = f < extent - 2 ? f : extent - 2;
      t.high = t.low + 1;
    }
    t.w_high = v - G(t.low);
    t.w_low = G(1) - t.w_high;
    t.slope = G(1);
    return t;
  }
  JRA_HD void position_derivative(int64_t p, G* d_lo, G* d_hi) const {
    if (size_clamped) { *d_lo = scale; *d_hi = G(0); return; }
    const G frac = G(p) / G(intervals);
    *d_lo = scale * (G(1) - frac);
    *d_hi = scale * frac;
  }
};

// `nodes` is the lattice size L >= 2 along this axis.
template <typename G>
JRA_HD LegacyAxis<G> legacy_axis(G lo, G hi, double spatial_scale, int64_t nodes,
                                 int64_t extent) {
  LegacyAxis<G> a;
  a.scale = G(spatial_scale);
  a.start = lo * a.scale;
  const G end = hi * a.scale;
  G size = end - a.start + G(1);
  // Non-finite corners or size: bad data (the clamp below would otherwise
  // turn a -inf size into 0 and read the map).
  a.valid = is_finite(a.start) && is_finite(end) && is_finite(size);
  a.size_clamped = size < G(0);
  if (a.size_clamped) size = G(0);
  a.intervals = nodes - 1;
  a.bin = size / G(a.intervals);
  a.extent = extent;
  return a;
}

// Lattice nodes per axis and nodes pooled per bin for a legacy op.
JRA_HD int64_t legacy_nodes(Op op, int64_t bins) { return op == Op::kLegacy ? bins : bins + 1; }
JRA_HD int64_t legacy_span(Op op) { return op == Op::kLegacy ? 1 : 2; }

}  // namespace jax_roialign
