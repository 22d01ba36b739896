// Every operator's samples of one (roi, bin), enumerated, host and device:
// the single place that turns an operator's math (roi_align.h, roi_pool.h,
// legacy.h, rotated.h, crop.h) into "sample i of this bin reads these four taps
// with these weights". The CPU plan caches a roi's samples across channels;
// the CUDA kernels enumerate them per block. Only samples that may read the
// map are enumerated (in row-major grid order, bounded as sample_grid.h says);
// for max mode, where the first implicit-0 sample falls decides ties.
#pragma once

#include <cmath>
#include <cstdint>

#include "crop.h"
#include "legacy.h"
#include "roi_align.h"
#include "roi_pool.h"
#include "rotated.h"
#include "sample_grid.h"

namespace jax_roialign {

template <typename G>
struct SampleSlopes {
  G dy[4], dx[4];               // d(corner weight)/d(sample y), /d(sample x)
  G dpos[2][kMaxBoxCoords];     // d(sample y)/d(coordinate j), d(sample x)/d(coordinate j)
};

template <typename A>
struct AxisPair {
  A y, x;
};

// One operator's per-roi geometry (only the current operator's member is set).
template <typename G>
union RoiGeometry {
  AxisPair<AxisGeometry<G>> align;   // roi_align, ps_roi_align
  AxisPair<LegacyAxis<G>> legacy;    // legacy
  RotatedGeometry<G> rotated;        // roi_align_rotated
  AxisPair<CropAxis<G>> crop;        // crop_and_resize
};

template <typename G>
struct BinSampler {
  Op op;
  int64_t image;       // -1: invalid roi (zeros, no gradient)
  int64_t level;       // the roi's feature level
  int64_t ph, pw;      // the bin
  int64_t H, W;        // the level's extent
  GridAxis gy, gx;     // the samples along y and x, as enumerated
  int64_t outside_from;  // max: enumerated row from which an implicit 0 precedes
  double divisor;      // avg: the sum is divided by this; max: 1
  bool weighted;       // avg: an entry's multiplicity scales its weights
  RoiGeometry<G> geo;

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
    if (d) {
      for (int64_t j = 0; j < kMaxBoxCoords; ++j) d->dpos[0][j] = d->dpos[1][j] = G(0);
    }
    G* dy_pos = d ? d->dpos[0] : nullptr;  // d(sample y)/d(coordinates)
    G* dx_pos = d ? d->dpos[1] : nullptr;
    switch (op) {
      case Op::kRoiPool:
      case Op::kPsRoiPool:
      case Op::kCropAndResizeNearest: {
        if (d) *d = SampleSlopes<G>{};
        if (op != Op::kCropAndResizeNearest) return cell_sample<G>(iy, ix, W);
        const CropAxis<G>& cy = geo.crop.y;
        const CropAxis<G>& cx = geo.crop.x;
        return cell_sample<G>(cy.nearest(cy.position(ph)), cx.nearest(cx.position(pw)), W);
      }
      case Op::kRoiAlign:
      case Op::kPsRoiAlign: {
        const AxisGeometry<G>& ay = geo.align.y;
        const AxisGeometry<G>& ax = geo.align.x;
        ty = axis_tap(ay.position(ph, iy), H);
        tx = axis_tap(ax.position(pw, ix), W);
        if (d) {  // (x1, y1, x2, y2)
          ay.position_derivative(ph, iy, &dy_pos[1], &dy_pos[3]);
          ax.position_derivative(pw, ix, &dx_pos[0], &dx_pos[2]);
        }
        break;
      }
      case Op::kLegacy:
      case Op::kLegacyAvg:
      case Op::kLegacyMax: {  // lattice node (ph + iy, pw + ix)
        const LegacyAxis<G>& ly = geo.legacy.y;
        const LegacyAxis<G>& lx = geo.legacy.x;
        ty = ly.tap(ly.position(ph + iy));
        tx = lx.tap(lx.position(pw + ix));
        if (d) {
          ly.position_derivative(ph + iy, &dy_pos[1], &dy_pos[3]);
          lx.position_derivative(pw + ix, &dx_pos[0], &dx_pos[2]);
        }
        break;
      }
      case Op::kRoiAlignRotated: {
        const RotatedGeometry<G>& r = geo.rotated;
        const G yy = r.yy(ph, iy), xx = r.xx(pw, ix);
        const G y = r.y_of(yy, xx), x = r.x_of(yy, xx);
        if (!r.in_window(y, x)) {
          if (d) *d = SampleSlopes<G>{};
          return empty_sample<G>();
        }
        ty = axis_tap(y, H);
        tx = axis_tap(x, W);
        if (d) {  // (cx, cy, w, h, angle)
          const G fy = (G(ph) + (G(iy) + G(0.5)) / G(r.grid_h)) / G(r.PH) - G(0.5);
          const G fx = (G(pw) + (G(ix) + G(0.5)) / G(r.grid_w)) / G(r.PW) - G(0.5);
          const G dyy_dh = r.h_clamped ? G(0) : r.scale * fy;  // d yy / d h
          const G dxx_dw = r.w_clamped ? G(0) : r.scale * fx;  // d xx / d w
          dy_pos[1] = r.scale;
          dy_pos[2] = -r.sin_t * dxx_dw;
          dy_pos[3] = r.cos_t * dyy_dh;
          dy_pos[4] = (-yy * r.sin_t - xx * r.cos_t) * r.dtheta;
          dx_pos[0] = r.scale;
          dx_pos[2] = r.cos_t * dxx_dw;
          dx_pos[3] = r.sin_t * dyy_dh;
          dx_pos[4] = (yy * r.cos_t - xx * r.sin_t) * r.dtheta;
        }
        break;
      }
      case Op::kCropAndResize: {  // one sample per bin; (y1, x1, y2, x2)
        const CropAxis<G>& cy = geo.crop.y;
        const CropAxis<G>& cx = geo.crop.x;
        ty = cy.tap(cy.position(ph));
        tx = cx.tap(cx.position(pw));
        if (d) {
          cy.position_derivative(ph, &dy_pos[0], &dy_pos[2]);
          cx.position_derivative(pw, &dx_pos[1], &dx_pos[3]);
          weight_slopes(ty, tx, d->dy, d->dx);
        }
        return lerp_sample(ty, tx, W);
      }
    }
    if (weighted && (gy.chunked() || gx.chunked())) {
      scale_tap(&ty, G(gy.multiplicity(a)));
      scale_tap(&tx, G(gx.multiplicity(b)));
    }
    if (d) weight_slopes(ty, tx, d->dy, d->dx);
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
  auto invalid = [&]() {
    b.image = -1;
    return b;
  };
  switch (s.op) {
    case Op::kRoiAlign:
    case Op::kPsRoiAlign: {
      AxisGeometry<G>& ay = b.geo.align.y;
      AxisGeometry<G>& ax = b.geo.align.x;
      ay = axis_geometry(c[1], c[3], lv.scale, s.aligned, s.sampling_ratio, s.PH, lv.H);
      ax = axis_geometry(c[0], c[2], lv.scale, s.aligned, s.sampling_ratio, s.PW, lv.W);
      if (!ay.valid || !ax.valid) return invalid();
      b.gy = ay.window(b.ph);
      b.gx = ax.window(b.pw);
      b.outside_from = outside_precedes_from(ay.grid, ax.grid, b.gy.lo, b.gy.lo + b.gy.n,
                                             b.gx.lo, b.gx.lo + b.gx.n);
      b.gy.limit(sample_bound(s.sampling_ratio, lv.H));
      b.gx.limit(sample_bound(s.sampling_ratio, lv.W));
      // max(gh * gw, 1), rounded to G as torchvision's `count` is.
      const double n = double(ay.grid) * double(ax.grid);
      if (avg) b.divisor = double(G(n > 1 ? n : 1));
      break;
    }
    case Op::kRoiPool:
    case Op::kPsRoiPool: {
      const bool ps = position_sensitive(s.op);
      const PoolAxis<G> py = pool_axis(c[1], c[3], lv.scale, ps, s.PH, lv.H);
      const PoolAxis<G> px = pool_axis(c[0], c[2], lv.scale, ps, s.PW, lv.W);
      if (!py.valid || !px.valid) return invalid();
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
      LegacyAxis<G>& ly = b.geo.legacy.y;
      LegacyAxis<G>& lx = b.geo.legacy.x;
      ly = legacy_axis(c[1], c[3], lv.scale, legacy_nodes(s.op, s.PH), lv.H);
      lx = legacy_axis(c[0], c[2], lv.scale, legacy_nodes(s.op, s.PW), lv.W);
      if (!ly.valid || !lx.valid) return invalid();
      // In-window nodes of the span form a rectangle (positions are monotone).
      int64_t ylo = span, yhi = 0, xlo = span, xhi = 0;
      for (int64_t d = 0; d < span; ++d) {
        if (ly.in_window(ly.position(b.ph + d))) { ylo = ylo < d ? ylo : d; yhi = d + 1; }
        if (lx.in_window(lx.position(b.pw + d))) { xlo = xlo < d ? xlo : d; xhi = d + 1; }
      }
      const bool empty = yhi <= ylo || xhi <= xlo;
      b.gy = GridAxis{empty ? 0 : ylo, empty ? 0 : yhi - ylo, empty ? 0 : yhi - ylo};
      b.gx = GridAxis{empty ? 0 : xlo, empty ? 0 : xhi - xlo, empty ? 0 : xhi - xlo};
      b.outside_from = outside_precedes_from(span, span, ylo, yhi, xlo, xhi);
      if (avg) b.divisor = double(span * span);
      break;
    }
    case Op::kRoiAlignRotated: {
      RotatedGeometry<G>& r = b.geo.rotated;
      r = rotated_geometry(c, lv.scale, s.aligned, s.radians, s.sampling_ratio, s.PH, s.PW,
                           lv.H, lv.W);
      if (!r.valid) return invalid();
      int64_t iy0, iy1, ix0, ix1;
      r.candidates(b.ph, b.pw, &iy0, &iy1, &ix0, &ix1);
      b.gy = GridAxis{iy0, iy1 - iy0, iy1 - iy0};
      b.gx = GridAxis{ix0, ix1 - ix0, ix1 - ix0};
      const int64_t bound = sample_bound(s.sampling_ratio, lv.H + lv.W);
      b.gy.limit(bound);
      b.gx.limit(bound);
      const double n = double(r.grid_h) * double(r.grid_w);
      if (avg) b.divisor = double(G(n > 1 ? n : 1));
      break;
    }
    case Op::kCropAndResize:
    case Op::kCropAndResizeNearest: {  // (y1, x1, y2, x2), normalised
      CropAxis<G>& cy = b.geo.crop.y;
      CropAxis<G>& cx = b.geo.crop.x;
      cy = crop_axis(c[0], c[2], s.PH, lv.H);
      cx = crop_axis(c[1], c[3], s.PW, lv.W);
      if (!cy.valid || !cx.valid) return invalid();
      const bool in = cy.in_window(cy.position(b.ph)) && cx.in_window(cx.position(b.pw));
      b.gy = GridAxis{0, in ? 1 : 0, in ? 1 : 0};
      b.gx = GridAxis{0, in ? 1 : 0, in ? 1 : 0};
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

// The box [x1, x2] x [y1, y2] widened by `margin` cells and the rounding of
// its corners.
JRA_HD Footprint near_box(double x1, double y1, double x2, double y2, double margin) {
  using std::fabs;
  using std::fmax;
  using std::fmin;
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
      return near_box(double(c[0]) * scale, double(c[1]) * scale, double(c[2]) * scale,
                      double(c[3]) * scale, 4.0);
    case Op::kRoiAlignRotated: {  // the rotated box's bounding box, the size clamp to 1
      using std::fabs;
      const double w = fabs(double(c[2]) * scale) + 1, h = fabs(double(c[3]) * scale) + 1;
      const double t = s.radians ? double(c[4]) : double(c[4]) * M_PI / 180.0;
      using std::cos;
      using std::sin;
      const double hw = 0.5 * (fabs(w * cos(t)) + fabs(h * sin(t)));
      const double hh = 0.5 * (fabs(w * sin(t)) + fabs(h * cos(t)));
      const double cx = double(c[0]) * scale, cy = double(c[1]) * scale;
      return near_box(cx - hw, cy - hh, cx + hw, cy + hh, 4.0);
    }
    case Op::kCropAndResize:
    case Op::kCropAndResizeNearest: {  // (y1, x1, y2, x2) * (extent - 1)
      const double sy = double(s.level[level].H - 1), sx = double(s.level[level].W - 1);
      return near_box(double(c[1]) * sx, double(c[0]) * sy, double(c[3]) * sx,
                      double(c[2]) * sy, 2.0);
    }
  }
  return Footprint{-1e300, 1e300, -1e300, 1e300};  // unreachable: every operator is a case
}

}  // namespace jax_roialign
