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

// A separable operator's samples: how each combines its two taps
// (roi_common.h's SampleKind: kCell, kLerp or kBilinear).
JRA_HD SampleKind separable_combination(Op op) {
  switch (op) {
    case Op::kRoiPool:
    case Op::kPsRoiPool:
    case Op::kCropAndResizeNearest:
      return SampleKind::kCell;
    case Op::kCropAndResize:
      return SampleKind::kLerp;
    case Op::kRoiAlign:
    case Op::kPsRoiAlign:
    case Op::kLegacy:
    case Op::kLegacyAvg:
    case Op::kLegacyMax:
    case Op::kRoiAlignRotated:
      break;
  }
  return SampleKind::kBilinear;
}

// One operator's per-roi geometry (only the current operator's member is set).
template <typename G>
union RoiGeometry {
  AxisPair<AxisGeometry<G>> align;   // roi_align, ps_roi_align
  AxisPair<PoolAxis<G>> pool;        // roi_pool, ps_roi_pool
  AxisPair<LegacyAxis<G>> legacy;    // legacy
  RotatedGeometry<G> rotated;        // roi_align_rotated
  AxisPair<CropAxis<G>> crop;        // crop_and_resize
};

// One roi's sampler: its geometry (computed once), and per bin its windows,
// taps and samples. Every operator but roi_align_rotated is separable: a
// sample's taps are a y tap (from the bin row and the y entry) and an x tap
// (from the bin column and the x entry), so a platform may compute the taps
// per axis and combine them per sample (the CPU plan does).
template <typename G>
struct RoiSampler {
  Op op;
  int64_t image;       // -1: invalid roi (zeros, no gradient)
  int64_t level;       // the roi's feature level
  int64_t H, W;        // the level's extent
  int64_t sampling_ratio;
  bool avg;            // avg mode: a divisor, and a chunk's multiplicity scales its taps
  RoiGeometry<G> geo;

  JRA_HD bool valid() const { return image >= 0; }
  JRA_HD bool separable() const { return op != Op::kRoiAlignRotated; }

  // The in-window entries of bin p along `axis` (0: y, 1: x), bounded as
  // sample_grid.h says. Inlined: returned from a call, a window came back
  // through memory in pieces and was read back whole (a stalled store forward).
  JRA_HD_INLINE GridAxis window(int axis, int64_t p) const {
    const int64_t extent = axis == 0 ? H : W;
    switch (op) {
      case Op::kRoiAlign:
      case Op::kPsRoiAlign: {
        GridAxis g = (axis == 0 ? geo.align.y : geo.align.x).window(p);
        g.limit(sample_bound(sampling_ratio, extent));
        return g;
      }
      case Op::kRoiPool:
      case Op::kPsRoiPool: {
        int64_t lo = 0, hi = 0;
        (axis == 0 ? geo.pool.y : geo.pool.x).cells(p, &lo, &hi);
        return hi > lo ? GridAxis{lo, hi - lo, hi - lo} : GridAxis{};
      }
      case Op::kLegacy:
      case Op::kLegacyAvg:
      case Op::kLegacyMax: {  // the in-window nodes of the span from p (positions are monotone)
        const LegacyAxis<G>& l = axis == 0 ? geo.legacy.y : geo.legacy.x;
        const int64_t span = legacy_span(op);
        int64_t lo = span, hi = 0;
        for (int64_t d = 0; d < span; ++d)
          if (l.in_window(l.position(p + d))) { lo = lo < d ? lo : d; hi = d + 1; }
        return hi > lo ? GridAxis{lo, hi - lo, hi - lo} : GridAxis{};
      }
      case Op::kRoiAlignRotated: {
        int64_t i0 = 0, i1 = 0;
        geo.rotated.candidates(axis, p, &i0, &i1);
        GridAxis g{i0, i1 - i0, i1 - i0};
        g.limit(sample_bound(sampling_ratio, H + W));
        return g;
      }
      case Op::kCropAndResize:
      case Op::kCropAndResizeNearest: {
        const CropAxis<G>& c = axis == 0 ? geo.crop.y : geo.crop.x;
        return c.in_window(c.position(p)) ? GridAxis{0, 1, 1} : GridAxis{};
      }
    }
    return GridAxis{};
  }

  // Max mode: the enumerated row from which the bin's implicit 0 precedes
  // (sample_grid.h), for the bin's windows gy, gx.
  JRA_HD int64_t outside_from(const GridAxis& gy, const GridAxis& gx) const {
    switch (op) {
      case Op::kRoiAlign:
      case Op::kPsRoiAlign:
        return outside_precedes_from(geo.align.y.grid, geo.align.x.grid, gy.lo, gy.lo + gy.n,
                                     gx.lo, gx.lo + gx.n);
      case Op::kLegacy:
      case Op::kLegacyAvg:
      case Op::kLegacyMax: {
        const int64_t span = legacy_span(op);
        return outside_precedes_from(span, span, gy.lo, gy.lo + gy.n, gx.lo, gx.lo + gx.n);
      }
      case Op::kRoiPool:
      case Op::kPsRoiPool:
      case Op::kRoiAlignRotated:
      case Op::kCropAndResize:
      case Op::kCropAndResizeNearest:
        return kNever;
    }
    return kNever;
  }

  // Avg mode: what the bin's sum is divided by; max mode: 1.
  JRA_HD double divisor(const GridAxis& gy, const GridAxis& gx) const {
    if (!avg) return 1.0;
    switch (op) {
      case Op::kRoiAlign:
      case Op::kPsRoiAlign: {  // max(gh * gw, 1), rounded to G as torchvision's `count` is
        const double n = double(geo.align.y.grid) * double(geo.align.x.grid);
        return double(G(n > 1 ? n : 1));
      }
      case Op::kRoiPool:
      case Op::kPsRoiPool: {
        const int64_t n = gy.count * gx.count;
        return n > 0 ? double(G(n)) : 1.0;
      }
      case Op::kLegacy:
      case Op::kLegacyAvg:
      case Op::kLegacyMax:
        return double(legacy_span(op) * legacy_span(op));
      case Op::kRoiAlignRotated: {
        const double n = double(geo.rotated.grid_h) * double(geo.rotated.grid_w);
        return double(G(n > 1 ? n : 1));
      }
      case Op::kCropAndResize:
      case Op::kCropAndResizeNearest:
        return 1.0;
    }
    return 1.0;
  }

  // Separable operators: the tap of entry j of window g of bin p along
  // `axis`, and, when `dpos` is given, d(sample position)/d(coordinate) for
  // every box coordinate.
  JRA_HD AxisTap<G> tap(int axis, int64_t p, const GridAxis& g, int64_t j, G* dpos) const {
    if (dpos)
      for (int64_t c = 0; c < kMaxBoxCoords; ++c) dpos[c] = G(0);
    const int64_t i = g.index(j);
    const int64_t extent = axis == 0 ? H : W;
    // The coordinate slots of the axis's low and high corners: (x1, y1, x2, y2)
    // boxes, TensorFlow's (y1, x1, y2, x2) crops.
    const int lo = axis == 0 ? 1 : 0, hi = lo + 2;
    const int crop_lo = 1 - lo, crop_hi = crop_lo + 2;
    AxisTap<G> t{};
    switch (op) {
      case Op::kRoiPool:
      case Op::kPsRoiPool:
        return cell_tap<G>(i);
      case Op::kCropAndResizeNearest: {
        const CropAxis<G>& c = axis == 0 ? geo.crop.y : geo.crop.x;
        return cell_tap<G>(c.nearest(c.position(p)));
      }
      case Op::kRoiAlign:
      case Op::kPsRoiAlign: {
        const AxisGeometry<G>& a = axis == 0 ? geo.align.y : geo.align.x;
        t = axis_tap(a.position(p, i), extent);
        if (dpos) a.position_derivative(p, i, &dpos[lo], &dpos[hi]);
        break;
      }
      case Op::kLegacy:
      case Op::kLegacyAvg:
      case Op::kLegacyMax: {  // lattice node p + i
        const LegacyAxis<G>& l = axis == 0 ? geo.legacy.y : geo.legacy.x;
        t = l.tap(l.position(p + i));
        if (dpos) l.position_derivative(p + i, &dpos[lo], &dpos[hi]);
        break;
      }
      case Op::kCropAndResize: {
        const CropAxis<G>& c = axis == 0 ? geo.crop.y : geo.crop.x;
        t = c.tap(c.position(p));
        if (dpos) c.position_derivative(p, &dpos[crop_lo], &dpos[crop_hi]);
        break;
      }
      case Op::kRoiAlignRotated:  // not separable: sample() handles it
        break;
    }
    if (avg && g.chunked()) scale_tap(&t, G(g.multiplicity(j)));
    return t;
  }

  // Separable operators: how a sample combines its two taps
  // (separable_combination).
  JRA_HD SampleKind combination() const { return separable_combination(op); }

  // The sample of taps ty, tx combined as K (combination()'s).
  template <SampleKind K>
  JRA_HD static Sample<G> combined(const AxisTap<G>& ty, const AxisTap<G>& tx, int64_t W) {
    if constexpr (K == SampleKind::kCell) return cell_sample<G>(ty.low, tx.low, W);
    else if constexpr (K == SampleKind::kLerp) return lerp_sample(ty, tx, W);
    else return make_sample(ty, tx, W);
  }

  // Separable operators: the sample of taps ty, tx; its weight slopes if asked
  // (d->dpos is the caller's, from tap()).
  JRA_HD Sample<G> combine(const AxisTap<G>& ty, const AxisTap<G>& tx, SampleSlopes<G>* d) const {
    switch (combination()) {
      case SampleKind::kCell:  // piecewise constant: no slopes
        if (d) zero_weight_slopes(d);
        return combined<SampleKind::kCell>(ty, tx, W);
      case SampleKind::kLerp:
        if (d) weight_slopes(ty, tx, d->dy, d->dx);
        return combined<SampleKind::kLerp>(ty, tx, W);
      case SampleKind::kBilinear:
      case SampleKind::kEmpty:
        break;
    }
    if (d) weight_slopes(ty, tx, d->dy, d->dx);
    return combined<SampleKind::kBilinear>(ty, tx, W);
  }

  // Sample i (row-major over the enumerated entries of windows gy, gx) of bin
  // (ph, pw); its slopes if asked.
  JRA_HD Sample<G> sample(int64_t ph, int64_t pw, const GridAxis& gy, const GridAxis& gx,
                          int64_t i, SampleSlopes<G>* d) const {
    const int64_t a = i / gx.count, b = i - a * gx.count;
    if (separable()) {
      const AxisTap<G> ty = tap(0, ph, gy, a, d ? d->dpos[0] : nullptr);
      const AxisTap<G> tx = tap(1, pw, gx, b, d ? d->dpos[1] : nullptr);
      return combine(ty, tx, d);
    }
    const RotatedGeometry<G>& r = geo.rotated;
    Sample<G> s;
    rotated_sample(ph, pw, gy, gx, a, b, r.row(ph, gy.index(a)), r.column(pw, gx.index(b)), d, &s);
    return s;
  }

  // roi_align_rotated: the sample of enumerated entries (a, b) of bin (ph, pw)'s
  // windows gy, gx, whose grid row and column are yy and xx
  // (RotatedGeometry::row, column), into *out; its slopes if asked.
  using Line = typename RotatedGeometry<G>::Line;
  JRA_HD_INLINE void rotated_sample(int64_t ph, int64_t pw, const GridAxis& gy,
                                    const GridAxis& gx, int64_t a, int64_t b, const Line& yy,
                                    const Line& xx, SampleSlopes<G>* d, Sample<G>* out) const {
    const RotatedGeometry<G>& r = geo.rotated;
    if (d) *d = SampleSlopes<G>{};
    const G y = r.y_of(yy, xx), x = r.x_of(yy, xx);
    if (!r.in_window(y, x)) {
      *out = empty_sample<G>();
      return;
    }
    AxisTap<G> ty = axis_tap(y, H);
    AxisTap<G> tx = axis_tap(x, W);
    if (d) {  // (cx, cy, w, h, angle)
      const int64_t iy = gy.index(a), ix = gx.index(b);
      G* dy_pos = d->dpos[0];
      G* dx_pos = d->dpos[1];
      const G fy = (G(ph) + (G(iy) + G(0.5)) / G(r.grid_h)) / G(r.PH) - G(0.5);
      const G fx = (G(pw) + (G(ix) + G(0.5)) / G(r.grid_w)) / G(r.PW) - G(0.5);
      const G dyy_dh = r.h_clamped ? G(0) : r.scale * fy;  // d yy / d h
      const G dxx_dw = r.w_clamped ? G(0) : r.scale * fx;  // d xx / d w
      dy_pos[1] = r.scale;
      dy_pos[2] = -r.sin_t * dxx_dw;
      dy_pos[3] = r.cos_t * dyy_dh;
      dy_pos[4] = (-yy.s - xx.c) * r.dtheta;  // d y / d theta: -yy sin t - xx cos t
      dx_pos[0] = r.scale;
      dx_pos[2] = r.cos_t * dxx_dw;
      dx_pos[3] = r.sin_t * dyy_dh;
      dx_pos[4] = (yy.c - xx.s) * r.dtheta;  // d x / d theta: yy cos t - xx sin t
    }
    if (avg && gy.chunked()) scale_tap(&ty, G(gy.multiplicity(a)));
    if (avg && gx.chunked()) scale_tap(&tx, G(gx.multiplicity(b)));
    if (d) weight_slopes(ty, tx, d->dy, d->dx);
    *out = make_sample(ty, tx, W);
  }

  // A tap standing for m samples at one position.
  JRA_HD static void scale_tap(AxisTap<G>* t, G m) {
    t->w_low *= m;
    t->w_high *= m;
    t->slope *= m;
  }

  JRA_HD static void zero_weight_slopes(SampleSlopes<G>* d) {
    for (int j = 0; j < 4; ++j) d->dy[j] = d->dx[j] = G(0);
  }
};

// The sampler of one bin: its roi's, with the bin's windows.
template <typename G>
struct BinSampler : RoiSampler<G> {
  int64_t ph, pw;        // the bin
  GridAxis gy, gx;       // the samples along y and x, as enumerated
  int64_t outside_from;  // max: enumerated row from which an implicit 0 precedes
  double divisor;        // avg: the sum is divided by this; max: 1

  JRA_HD int64_t count() const { return gy.count * gx.count; }
  // Enumerated row of sample i (for outside_from).
  JRA_HD int64_t row(int64_t i) const { return i / gx.count; }
  // Whether the bin's implicit-0 sample precedes sample i in grid order.
  JRA_HD bool outside_precedes(int64_t i) const {
    return outside_from != kNever && row(i) >= outside_from;
  }
  // Sample i (row-major over the enumerated entries); its slopes if asked.
  JRA_HD Sample<G> sample(int64_t i, SampleSlopes<G>* d = nullptr) const {
    return RoiSampler<G>::sample(ph, pw, gy, gx, i, d);
  }
};

// Roi k's sampler (invalid: image -1, for a bad batch index, level or
// coordinates, or an empty map).
template <typename G>
JRA_HD RoiSampler<G> roi_sampler(const RoiCall& s, const G* rois, const int32_t* levels,
                                 int64_t k) {
  RoiSampler<G> r{};
  r.op = s.op;
  r.level = roi_level(s, levels, k);
  r.image = r.level < 0 ? -1 : roi_image(s, rois, k);
  r.sampling_ratio = s.sampling_ratio;
  r.avg = s.mode == PoolMode::kAvg;
  if (r.image < 0) return r;
  const Level& lv = s.level[r.level];
  if (lv.H <= 0 || lv.W <= 0) {  // an empty map: nothing to read, zeros
    r.image = -1;
    return r;
  }
  r.H = lv.H;
  r.W = lv.W;
  const G* c = roi_coords(s, rois, k);
  bool valid = true;
  switch (s.op) {
    case Op::kRoiAlign:
    case Op::kPsRoiAlign: {
      AxisPair<AxisGeometry<G>>& a = r.geo.align;
      a.y = axis_geometry(c[1], c[3], lv.scale, s.aligned, s.sampling_ratio, s.PH, lv.H);
      a.x = axis_geometry(c[0], c[2], lv.scale, s.aligned, s.sampling_ratio, s.PW, lv.W);
      valid = a.y.valid && a.x.valid;
      break;
    }
    case Op::kRoiPool:
    case Op::kPsRoiPool: {
      const bool ps = position_sensitive(s.op);
      AxisPair<PoolAxis<G>>& a = r.geo.pool;
      a.y = pool_axis(c[1], c[3], lv.scale, ps, s.PH, lv.H);
      a.x = pool_axis(c[0], c[2], lv.scale, ps, s.PW, lv.W);
      valid = a.y.valid && a.x.valid;
      break;
    }
    case Op::kLegacy:
    case Op::kLegacyAvg:
    case Op::kLegacyMax: {
      AxisPair<LegacyAxis<G>>& a = r.geo.legacy;
      a.y = legacy_axis(c[1], c[3], lv.scale, legacy_nodes(s.op, s.PH), lv.H);
      a.x = legacy_axis(c[0], c[2], lv.scale, legacy_nodes(s.op, s.PW), lv.W);
      valid = a.y.valid && a.x.valid;
      break;
    }
    case Op::kRoiAlignRotated:
      r.geo.rotated = rotated_geometry(c, lv.scale, s.aligned, s.radians, s.sampling_ratio, s.PH,
                                       s.PW, lv.H, lv.W);
      valid = r.geo.rotated.valid;
      break;
    case Op::kCropAndResize:
    case Op::kCropAndResizeNearest: {  // (y1, x1, y2, x2), normalised
      AxisPair<CropAxis<G>>& a = r.geo.crop;
      a.y = crop_axis(c[0], c[2], s.PH, lv.H);
      a.x = crop_axis(c[1], c[3], s.PW, lv.W);
      valid = a.y.valid && a.x.valid;
      break;
    }
  }
  if (!valid) r.image = -1;
  return r;
}

// The sampler of bin (ph, pw) of a valid roi.
template <typename G>
JRA_HD BinSampler<G> bin_of(const RoiSampler<G>& r, int64_t ph, int64_t pw) {
  BinSampler<G> b;
  static_cast<RoiSampler<G>&>(b) = r;
  b.ph = ph;
  b.pw = pw;
  b.gy = r.window(0, ph);
  b.gx = r.window(1, pw);
  b.outside_from = r.outside_from(b.gy, b.gx);
  b.divisor = r.divisor(b.gy, b.gx);
  return b;
}

// The sampler of bin `bin` (ph * PW + pw) of roi k (image -1: invalid roi).
template <typename G>
JRA_HD BinSampler<G> bin_sampler(const RoiCall& s, const G* rois, const int32_t* levels,
                                 int64_t k, int64_t bin) {
  const RoiSampler<G> r = roi_sampler(s, rois, levels, k);
  if (r.valid()) return bin_of(r, bin / s.PW, bin % s.PW);
  BinSampler<G> b{};
  static_cast<RoiSampler<G>&>(b) = r;
  b.ph = bin / s.PW;
  b.pw = bin % s.PW;
  b.outside_from = kNever;
  b.divisor = 1.0;
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
