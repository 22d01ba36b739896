// Every operator's samples of one (roi, bin), enumerated, host and device:
// the single place that turns an operator's math (roi_align.h, roi_pool.h,
// legacy.h) into "sample i of this bin reads these four taps with these
// weights". The CPU plan caches a roi's samples across channels; the CUDA
// kernels enumerate them per block. Only samples that read the map are
// enumerated (in-window ones, in row-major grid order, bounded as
// sample_grid.h says); for max mode, where the first implicit-0 sample falls
// decides ties.
#pragma once

#include <cmath>
#include <cstdint>

#include "legacy.h"
#include "roi_align.h"
#include "roi_pool.h"
#include "sample_grid.h"

namespace jax_roialign {

template <typename G>
struct SampleSlopes {
  G dy[4], dx[4];               // d(corner weight)/d(sample y), /d(sample x)
  G dpos[2][kMaxBoxCoords];     // d(sample y)/d(coordinate j), d(sample x)/d(coordinate j)
};

template <typename G>
struct BinSampler {
  Op op;
  int64_t image;       // -1: invalid roi (zeros, no gradient)
  int64_t level;       // the roi's feature level
  int64_t ph, pw;      // the bin
  int64_t H, W;        // the level's extent
  GridAxis gy, gx;     // the in-window samples along y and x, as enumerated
  int64_t outside_from;  // max: enumerated row from which an implicit 0 precedes
  double divisor;      // avg: the sum is divided by this; max: 1
  bool weighted;       // avg: an entry's multiplicity scales its weights
  AxisGeometry<G> ay, ax;   // roi_align, ps_roi_align
  LegacyAxis<G> ly, lx;     // legacy

  JRA_HD int64_t count() const { return gy.count * gx.count; }
  // Enumerated row of sample i (for outside_from).
  JRA_HD int64_t row(int64_t i) const { return i / gx.count; }
  // Whether the bin's implicit-0 sample precedes sample i in grid order.
  JRA_HD bool outside_precedes(int64_t i) const {
    return outside_from != kNever && row(i) >= outside_from;
  }

  // Sample i (row-major over the enumerated entries); its slopes if asked.
  JRA_HD Sample<G> sample(int64_t i, SampleSlopes<G>* d = nullptr) const {
    const int64_t a = i / gx.count, b = i - a * gx.count;
    const int64_t iy = gy.index(a), ix = gx.index(b);
    AxisTap<G> ty, tx;
    G y_lo = G(0), y_hi = G(0), x_lo = G(0), x_hi = G(0);  // d position / d corners
    switch (op) {
      case Op::kRoiPool:
      case Op::kPsRoiPool:
        if (d) *d = SampleSlopes<G>{};
        return cell_sample<G>(iy, ix, W);
      case Op::kRoiAlign:
      case Op::kPsRoiAlign:
        ty = axis_tap(ay.position(ph, iy), H);
        tx = axis_tap(ax.position(pw, ix), W);
        if (d) {
          ay.position_derivative(ph, iy, &y_lo, &y_hi);
          ax.position_derivative(pw, ix, &x_lo, &x_hi);
        }
        break;
      case Op::kLegacy:
      case Op::kLegacyAvg:
      case Op::kLegacyMax:  // lattice node (ph + iy, pw + ix)
        ty = ly.tap(ly.position(ph + iy));
        tx = lx.tap(lx.position(pw + ix));
        if (d) {
          ly.position_derivative(ph + iy, &y_lo, &y_hi);
          lx.position_derivative(pw + ix, &x_lo, &x_hi);
        }
        break;
    }
    if (weighted && (gy.chunked() || gx.chunked())) {
      scale_tap(&ty, G(gy.multiplicity(a)));
      scale_tap(&tx, G(gx.multiplicity(b)));
    }
    if (d) {
      weight_slopes(ty, tx, d->dy, d->dx);
      for (int64_t j = 0; j < kMaxBoxCoords; ++j) d->dpos[0][j] = d->dpos[1][j] = G(0);
      // (x1, y1, x2, y2)
      d->dpos[1][0] = x_lo;
      d->dpos[0][1] = y_lo;
      d->dpos[1][2] = x_hi;
      d->dpos[0][3] = y_hi;
    }
    return make_sample(ty, tx, W);
  }

  // A tap standing for m samples at one position.
  JRA_HD static void scale_tap(AxisTap<G>* t, G m) {
    t->w_low *= m;
    t->w_high *= m;
    t->slope *= m;
  }
};

template <typename G>
JRA_HD BinSampler<G> bin_sampler(const RoiCall& s, const G* rois, const int32_t* levels,
                                 int64_t k, int64_t bin) {
  BinSampler<G> b{};
  b.op = s.op;
  b.level = roi_level(s, levels, k);
  b.image = b.level < 0 ? -1 : roi_image(s, rois, k);
  b.ph = bin / s.PW;
  b.pw = bin % s.PW;
  b.outside_from = kNever;
  b.divisor = 1.0;
  b.weighted = s.mode == PoolMode::kAvg;
  if (b.image < 0) return b;
  const Level& lv = s.level[b.level];
  if (lv.H <= 0 || lv.W <= 0) {  // an empty map: nothing to read, zeros
    b.image = -1;
    return b;
  }
  b.H = lv.H;
  b.W = lv.W;
  const G* c = roi_coords(s, rois, k);
  const bool avg = s.mode == PoolMode::kAvg;
  switch (s.op) {
    case Op::kRoiAlign:
    case Op::kPsRoiAlign: {
      b.ay = axis_geometry(c[1], c[3], lv.scale, s.aligned, s.sampling_ratio, s.PH, lv.H);
      b.ax = axis_geometry(c[0], c[2], lv.scale, s.aligned, s.sampling_ratio, s.PW, lv.W);
      if (!b.ay.valid || !b.ax.valid) {
        b.image = -1;
        return b;
      }
      b.gy = b.ay.window(b.ph);
      b.gx = b.ax.window(b.pw);
      b.outside_from = outside_precedes_from(b.ay.grid, b.ax.grid, b.gy.lo, b.gy.lo + b.gy.n,
                                             b.gx.lo, b.gx.lo + b.gx.n);
      b.gy.limit(sample_bound(s.sampling_ratio, lv.H));
      b.gx.limit(sample_bound(s.sampling_ratio, lv.W));
      // max(gh * gw, 1), rounded to G as torchvision's `count` is.
      const double n = double(b.ay.grid) * double(b.ax.grid);
      if (avg) b.divisor = double(G(n > 1 ? n : 1));
      break;
    }
    case Op::kRoiPool:
    case Op::kPsRoiPool: {
      const bool ps = position_sensitive(s.op);
      const PoolAxis<G> py = pool_axis(c[1], c[3], lv.scale, ps, s.PH, lv.H);
      const PoolAxis<G> px = pool_axis(c[0], c[2], lv.scale, ps, s.PW, lv.W);
      if (!py.valid || !px.valid) {
        b.image = -1;
        return b;
      }
      int64_t y0 = 0, y1 = 0, x0 = 0, x1 = 0;
      py.cells(b.ph, &y0, &y1);
      px.cells(b.pw, &x0, &x1);
      const bool empty = y1 <= y0 || x1 <= x0;
      b.gy = GridAxis{y0, empty ? 0 : y1 - y0, empty ? 0 : y1 - y0};
      b.gx = GridAxis{x0, empty ? 0 : x1 - x0, empty ? 0 : x1 - x0};
      if (avg && b.count() > 0) b.divisor = double(G(b.count()));
      break;
    }
    case Op::kLegacy:
    case Op::kLegacyAvg:
    case Op::kLegacyMax: {  // the span x span lattice nodes from (ph, pw)
      const int64_t span = legacy_span(s.op);
      b.ly = legacy_axis(c[1], c[3], lv.scale, legacy_nodes(s.op, s.PH), lv.H);
      b.lx = legacy_axis(c[0], c[2], lv.scale, legacy_nodes(s.op, s.PW), lv.W);
      if (!b.ly.valid || !b.lx.valid) {
        b.image = -1;
        return b;
      }
      // In-window nodes of the span form a rectangle (positions are monotone).
      int64_t ylo = span, yhi = 0, xlo = span, xhi = 0;
      for (int64_t d = 0; d < span; ++d) {
        if (b.ly.in_window(b.ly.position(b.ph + d))) { ylo = ylo < d ? ylo : d; yhi = d + 1; }
        if (b.lx.in_window(b.lx.position(b.pw + d))) { xlo = xlo < d ? xlo : d; xhi = d + 1; }
      }
      const bool empty = yhi <= ylo || xhi <= xlo;
      b.gy = GridAxis{empty ? 0 : ylo, empty ? 0 : yhi - ylo, empty ? 0 : yhi - ylo};
      b.gx = GridAxis{empty ? 0 : xlo, empty ? 0 : xhi - xlo, empty ? 0 : xhi - xlo};
      b.outside_from = outside_precedes_from(span, span, ylo, yhi, xlo, xhi);
      if (avg) b.divisor = double(span * span);
      break;
    }
  }
  return b;
}

// The feature cells roi k may read, [y0, y1] x [x0, x1] of its level
// (inclusive, a conservative bound; NaN where a coordinate is NaN, which no
// comparison excludes). The deterministic CUDA backward skips the rois whose
// footprint misses a tile.
struct Footprint {
  double y0, y1, x0, x1;
};

// The scaled box widened by `margin` cells and the rounding of its corners.
JRA_HD Footprint near_box(double x1, double y1, double x2, double y2, double scale,
                          double margin) {
  using std::fabs;
  using std::fmax;
  using std::fmin;
  x1 *= scale; y1 *= scale; x2 *= scale; y2 *= scale;
  const double my = margin + 1e-5 * (fabs(y1) + fabs(y2));
  const double mx = margin + 1e-5 * (fabs(x1) + fabs(x2));
  return Footprint{fmin(y1, y2) - my, fmax(y1, y2) + my, fmin(x1, x2) - mx, fmax(x1, x2) + mx};
}

template <typename G>
JRA_HD Footprint roi_footprint(const RoiCall& s, const G* rois, int64_t k, int64_t level) {
  const G* c = roi_coords(s, rois, k);
  const double scale = s.level[level].scale;
  switch (s.op) {
    // Each reads within a cell or two of its scaled box: the taps, the
    // unaligned size clamp to 1, the 0.5 offset, legacy's +1 size, roi_pool's
    // rounding and +1. Four cells of margin hold them all.
    case Op::kRoiAlign:
    case Op::kPsRoiAlign:
    case Op::kRoiPool:
    case Op::kPsRoiPool:
    case Op::kLegacy:
    case Op::kLegacyAvg:
    case Op::kLegacyMax:
      return near_box(double(c[0]), double(c[1]), double(c[2]), double(c[3]), scale, 4.0);
  }
  return Footprint{-1e300, 1e300, -1e300, 1e300};  // unreachable: every operator is a case
}

}  // namespace jax_roialign
