// Every operator's samples of one (roi, bin), enumerated, host and device:
// the single place that turns an operator's math (roi_align.h, roi_pool.h,
// legacy.h) into "sample i of this bin reads these four taps with these
// weights". The CPU plan caches a roi's samples across channels; the CUDA
// kernels enumerate them per block. Only samples that read the map are
// enumerated (in-window ones, in row-major grid order); for max mode, the
// ordinal of the first sample that is an implicit 0 decides ties.
#pragma once

#include <cmath>
#include <cstdint>

#include "legacy.h"
#include "roi_align.h"
#include "roi_pool.h"

namespace jax_roialign {

template <typename G>
struct SampleSlopes {
  G dy[4], dx[4];      // d(corner weight)/d(sample y), /d(sample x)
  G y_lo, y_hi;        // d(sample y)/d(y1), /d(y2)
  G x_lo, x_hi;        // d(sample x)/d(x1), /d(x2)
};

template <typename G>
struct BinSampler {
  Op op;
  int64_t image;       // -1: invalid roi (zeros, no gradient)
  int64_t ph, pw;      // the bin
  int64_t H, W;
  int64_t rows, cols;  // the in-window rectangle of the sample grid
  int64_t ylo, xlo;    // its first grid index
  int64_t grid_w;      // grid width (for ordinals)
  int64_t outside;     // grid ordinal of the first implicit-0 sample, -1: none
  double divisor;      // avg: the sum is divided by this; max: 1
  AxisGeometry<G> ay, ax;   // roi_align, ps_roi_align
  LegacyAxis<G> ly, lx;     // legacy

  JRA_HD int64_t count() const { return rows * cols; }
  JRA_HD int64_t ordinal(int64_t i) const { return (ylo + i / cols) * grid_w + xlo + i % cols; }

  // Sample i (row-major over the in-window rectangle); its slopes if asked.
  JRA_HD Sample<G> sample(int64_t i, SampleSlopes<G>* d = nullptr) const {
    const int64_t iy = ylo + i / cols, ix = xlo + i % cols;
    AxisTap<G> ty, tx;
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
          ay.position_derivative(ph, iy, &d->y_lo, &d->y_hi);
          ax.position_derivative(pw, ix, &d->x_lo, &d->x_hi);
        }
        break;
      case Op::kLegacy:
      case Op::kLegacyAvg:
      case Op::kLegacyMax:  // lattice node (ph + iy, pw + ix)
        ty = ly.tap(ly.position(ph + iy));
        tx = lx.tap(lx.position(pw + ix));
        if (d) {
          ly.position_derivative(ph + iy, &d->y_lo, &d->y_hi);
          lx.position_derivative(pw + ix, &d->x_lo, &d->x_hi);
        }
        break;
    }
    if (d) weight_slopes(ty, tx, d->dy, d->dx);
    return make_sample(ty, tx, W);
  }
};

template <typename G>
JRA_HD BinSampler<G> bin_sampler(const RoiCall& s, const G* rois, int64_t k, int64_t bin) {
  BinSampler<G> b{};
  b.op = s.op;
  b.image = roi_image(s, rois, k);
  b.ph = bin / s.PW;
  b.pw = bin % s.PW;
  b.H = s.H;
  b.W = s.W;
  b.outside = -1;
  b.divisor = 1.0;
  if (b.image < 0) return b;
  const G* c = roi_corners(s, rois, k);
  const bool avg = s.mode == PoolMode::kAvg;
  switch (s.op) {
    case Op::kRoiAlign:
    case Op::kPsRoiAlign: {
      b.ay = axis_geometry(c[1], c[3], s, s.PH, s.H);
      b.ax = axis_geometry(c[0], c[2], s, s.PW, s.W);
      int64_t yhi, xhi;
      window_range(b.ay, b.ph, &b.ylo, &yhi);
      window_range(b.ax, b.pw, &b.xlo, &xhi);
      b.rows = yhi - b.ylo;
      b.cols = xhi - b.xlo;
      b.grid_w = b.ax.grid;
      b.outside = first_outside_ordinal(b.ay.grid, b.ax.grid, b.ylo, yhi, b.xlo, xhi);
      // max(gh * gw, 1), rounded to G as torchvision's `count` is.
      const double n = double(b.ay.grid) * double(b.ax.grid);
      if (avg) b.divisor = double(G(n > 1 ? n : 1));
      break;
    }
    case Op::kRoiPool:
    case Op::kPsRoiPool: {
      const PoolAxis<G> py = pool_axis(c[1], c[3], s, s.PH, s.H);
      const PoolAxis<G> px = pool_axis(c[0], c[2], s, s.PW, s.W);
      int64_t y1 = 0, x1 = 0;
      b.ylo = b.xlo = 0;
      if (py.valid && px.valid) {
        py.cells(b.ph, &b.ylo, &y1);
        px.cells(b.pw, &b.xlo, &x1);
      }
      b.rows = y1 > b.ylo ? y1 - b.ylo : 0;
      b.cols = x1 > b.xlo ? x1 - b.xlo : 0;
      if (b.rows == 0) b.cols = 0;
      if (b.cols == 0) b.rows = 0;
      b.grid_w = b.cols;
      if (avg && b.count() > 0) b.divisor = double(G(b.count()));
      break;
    }
    case Op::kLegacy:
    case Op::kLegacyAvg:
    case Op::kLegacyMax: {  // the span x span lattice nodes from (ph, pw)
      const int64_t span = legacy_span(s.op);
      b.ly = legacy_axis(c[1], c[3], s, legacy_nodes(s.op, s.PH), s.H);
      b.lx = legacy_axis(c[0], c[2], s, legacy_nodes(s.op, s.PW), s.W);
      // In-window nodes of the span form a rectangle (positions are monotone).
      int64_t ylo = span, yhi = 0, xlo = span, xhi = 0;
      for (int64_t d = 0; d < span; ++d) {
        if (b.ly.in_window(b.ly.position(b.ph + d))) { ylo = ylo < d ? ylo : d; yhi = d + 1; }
        if (b.lx.in_window(b.lx.position(b.pw + d))) { xlo = xlo < d ? xlo : d; xhi = d + 1; }
      }
      b.ylo = ylo < yhi ? ylo : 0;
      b.xlo = xlo < xhi ? xlo : 0;
      b.rows = yhi > ylo ? yhi - ylo : 0;
      b.cols = xhi > xlo ? xhi - xlo : 0;
      if (b.rows == 0) b.cols = 0;
      if (b.cols == 0) b.rows = 0;
      b.grid_w = span;
      b.outside = first_outside_ordinal(span, span, ylo, yhi, xlo, xhi);
      if (avg) b.divisor = double(span * span);
      break;
    }
  }
  return b;
}

// The feature cells roi k may read, [y0, y1] x [x0, x1] (inclusive, a
// conservative bound; NaN where a coordinate is NaN, which no comparison
// excludes). The deterministic CUDA backward skips the rois whose footprint
// misses a tile.
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
JRA_HD Footprint roi_footprint(const RoiCall& s, const G* rois, int64_t k) {
  const G* c = roi_corners(s, rois, k);
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
      return near_box(double(c[0]), double(c[1]), double(c[2]), double(c[3]), s.spatial_scale,
                      4.0);
  }
  return Footprint{-1e300, 1e300, -1e300, 1e300};  // unreachable: every operator is a case
}

}  // namespace jax_roialign
