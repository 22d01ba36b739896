// roi_align_rotated's math (docs/semantics.md, "roi_align_rotated"; Detectron2's
// ROIAlignRotated and mmcv's roi_align_rotated CPU kernels, operation for
// operation): a box (cx, cy, w, h, angle) sampled on a grid in its own frame,
// rotated into the map, then roi_align's bilinear rules (roi_align.h).
//
// Each bin's grid is enumerated over the rectangle of grid indices whose
// positions may fall in the window (the window's preimage under the bin's
// affine map, in double, widened by a sample), each sample then tested
// exactly; samples outside are empty (no read, no weight).
#pragma once

#include <cmath>
#include <cstdint>

#include "roi_align.h"
#include "roi_common.h"
#include "sample_grid.h"

namespace jax_roialign {

template <typename G>
struct RotatedGeometry {
  bool valid;          // finite, and a non-negative size when aligned (else bad data)
  G cw, ch;            // the centre in the map, less the 0.5 offset when aligned
  G rw, rh;            // the scaled size (unaligned: at least 1)
  bool w_clamped, h_clamped;
  G cos_t, sin_t;
  G bin_w, bin_h;
  G start_w, start_h;  // -rw / 2, -rh / 2
  int64_t grid_h, grid_w;
  G scale;
  G dtheta;            // d theta / d angle: pi / 180 for degrees, 1 for radians
  int64_t PH, PW;
  int64_t H, W;

  // The box-frame position of sample i of bin p along one axis.
  JRA_HD G along(G start, G bin, int64_t grid, int64_t p, int64_t i) const {
    return start + G(p) * bin + (G(i) + G(0.5)) * bin / G(grid);
  }
  // A box-frame coordinate v (yy for a row, xx for a column) as the products
  // v cos t and v sin t: a position only adds products, so a platform may form
  // them once per grid line (the CPU plan does).
  struct Line {
    G c, s;
  };
  JRA_HD Line line(G v) const { return Line{v * cos_t, v * sin_t}; }
  JRA_HD Line row(int64_t ph, int64_t iy) const {
    return line(along(start_h, bin_h, grid_h, ph, iy));
  }
  JRA_HD Line column(int64_t pw, int64_t ix) const {
    return line(along(start_w, bin_w, grid_w, pw, ix));
  }
  // The map position of box-frame (yy, xx): yy cos t - xx sin t + ch and
  // yy sin t + xx cos t + cw, in that order.
  JRA_HD G y_of(const Line& yy, const Line& xx) const { return yy.c - xx.s + ch; }
  JRA_HD G x_of(const Line& yy, const Line& xx) const { return yy.s + xx.c + cw; }
  JRA_HD bool in_window(G y, G x) const {
    return y >= G(-1) && y <= G(H) && x >= G(-1) && x <= G(W);
  }

  // Grid indices [i0, i1) along `axis` (0: y, 1: x) of bin p whose positions
  // may be in the window (whatever the other axis's index).
  JRA_HD void candidates(int axis, int64_t p, int64_t* i0, int64_t* i1) const {
    // Sample (iy, ix) sits at box-frame (a_y + iy * d_y, a_x + ix * d_x); the window's
    // corners, rotated back into the box frame, bound the indices that can reach it.
    const G bin = axis == 0 ? bin_h : bin_w;
    const int64_t grid = axis == 0 ? grid_h : grid_w;
    const double d = double(bin) / double(grid);
    const double a = double(axis == 0 ? start_h : start_w) + double(p) * double(bin) + 0.5 * d;
    double lo = 1e300, hi = -1e300;
    const double c = double(cos_t), s = double(sin_t);
    for (int corner = 0; corner < 4; ++corner) {
      const double y = (corner & 1 ? double(H) : -1.0) - double(ch);
      const double x = (corner & 2 ? double(W) : -1.0) - double(cw);
      const double b = axis == 0 ? y * c + x * s : -y * s + x * c;  // inverse rotation
      lo = b < lo ? b : lo;
      hi = b > hi ? b : hi;
    }
    index_range(lo, hi, a, d, grid, i0, i1);
  }

  // Indices i in [0, grid) with a + i * d in [lo, hi], widened by one sample.
  JRA_HD static void index_range(double lo, double hi, double a, double d, int64_t grid,
                                 int64_t* i0, int64_t* i1) {
    using std::ceil;
    using std::floor;
    double f, l;
    if (d > 0) {
      f = floor((lo - a) / d) - 1;
      l = ceil((hi - a) / d) + 2;
    } else if (d < 0) {
      f = floor((hi - a) / d) - 1;
      l = ceil((lo - a) / d) + 2;
    } else {  // a zero-size box: every sample at a
      const bool in = a >= lo - 1 && a <= hi + 1;
      f = 0;
      l = in ? double(grid) : 0;
    }
    const double g = double(grid);
    f = f < 0 ? 0 : (f > g ? g : f);
    l = l < 0 ? 0 : (l > g ? g : l);
    if (!(f == f) || !(l == l)) f = l = 0;  // NaN
    *i0 = int64_t(f);
    *i1 = l > f ? int64_t(l) : int64_t(f);
  }
};

template <typename G>
JRA_HD RotatedGeometry<G> rotated_geometry(const G* box, double spatial_scale, bool aligned,
                                           bool radians, int64_t sampling_ratio, int64_t PH,
                                           int64_t PW, int64_t H, int64_t W) {
  RotatedGeometry<G> r{};
  const G scale = G(spatial_scale);
  const G offset = aligned ? G(0.5) : G(0);
  r.scale = scale;
  r.cw = box[0] * scale - offset;
  r.ch = box[1] * scale - offset;
  r.rw = box[2] * scale;
  r.rh = box[3] * scale;
  // Detectron2: theta = angle * M_PI / 180.0 in double, rounded once; its CPU
  // kernel's cos(float) resolves to double cos, rounded once.
  const double theta = radians ? double(box[4]) : double(box[4]) * M_PI / 180.0;
  r.dtheta = radians ? G(1) : G(M_PI / 180.0);
  const G t = G(theta);
  using std::cos;
  using std::sin;
  r.cos_t = G(cos(double(t)));
  r.sin_t = G(sin(double(t)));
  r.valid = is_finite(r.cw) && is_finite(r.ch) && is_finite(r.rw) && is_finite(r.rh) &&
            is_finite(t) && is_finite(r.cos_t) && is_finite(r.sin_t);
  // Detectron2 and mmcv (aligned) assert a non-negative size: bad data here.
  if (aligned && (r.rw < G(0) || r.rh < G(0))) r.valid = false;
  r.w_clamped = !aligned && r.rw < G(1);
  r.h_clamped = !aligned && r.rh < G(1);
  if (r.w_clamped) r.rw = G(1);
  if (r.h_clamped) r.rh = G(1);
  r.bin_h = r.rh / G(PH);
  r.bin_w = r.rw / G(PW);
  using std::ceil;
  auto grid = [&](G size, int64_t bins) -> int64_t {
    if (sampling_ratio > 0) return sampling_ratio;
    const G g = ceil(size / G(bins));
    return g > G(0) ? (g < G(kMaxGrid) ? int64_t(g) : int64_t(kMaxGrid)) : 0;
  };
  r.grid_h = r.valid ? grid(r.rh, PH) : 0;
  r.grid_w = r.valid ? grid(r.rw, PW) : 0;
  r.start_h = -r.rh / G(2);
  r.start_w = -r.rw / G(2);
  r.PH = PH;
  r.PW = PW;
  r.H = H;
  r.W = W;
  return r;
}

}  // namespace jax_roialign
