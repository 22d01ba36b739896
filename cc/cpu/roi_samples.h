// The channel-independent part of roi_align for one roi on the CPU: every
// in-window sample of every bin, with its taps (and, for the box derivatives,
// its slopes), computed once and reused across all channels.
#pragma once

#include <cstdint>
#include <vector>

#include "../roi_align.h"

namespace jax_roialign::cpu {

template <typename G>
struct SampleSlopes {
  G dy[4], dx[4];      // d(corner weight)/d(sample y), /d(sample x)
  G y_lo, y_hi;        // d(sample y)/d(y1), /d(y2)
  G x_lo, x_hi;        // d(sample x)/d(x1), /d(x2)
};

struct BinSamples {
  int64_t begin, end;  // [begin, end) in RoiSamples::samples
  int64_t cols;        // in-window columns: the row length of the bin's list
  int64_t ylo, xlo;    // grid index of the bin's first in-window sample
  int64_t outside;     // grid ordinal of its first outside sample, -1 if none
};

template <typename G>
class RoiSamples {
 public:
  RoiGeometry<G> geometry;
  std::vector<BinSamples> bins;        // PH * PW, row-major
  std::vector<Sample<G>> samples;      // in-window samples, bin by bin, iy-major
  std::vector<SampleSlopes<G>> slopes; // parallel to samples when built with_slopes

  bool valid() const { return geometry.image >= 0; }

  // Grid ordinal (iy * gw + ix) of the bin's r-th in-window sample.
  int64_t ordinal(const BinSamples& b, int64_t r) const {
    return (b.ylo + r / b.cols) * geometry.x.grid + b.xlo + r % b.cols;
  }

  void build(const RoiAlignShape& s, const G* rois, int64_t k, bool with_slopes) {
    geometry = roi_geometry(s, rois, k);
    bins.clear();
    samples.clear();
    slopes.clear();
    if (!valid()) return;
    const AxisGeometry<G>& ay = geometry.y;
    const AxisGeometry<G>& ax = geometry.x;
    ylo_.resize(s.PH); yhi_.resize(s.PH);
    xlo_.resize(s.PW); xhi_.resize(s.PW);
    for (int64_t p = 0; p < s.PH; ++p) window_range(ay, p, &ylo_[p], &yhi_[p]);
    for (int64_t p = 0; p < s.PW; ++p) window_range(ax, p, &xlo_[p], &xhi_[p]);
    bins.resize(s.PH * s.PW);
    for (int64_t ph = 0; ph < s.PH; ++ph) {
      for (int64_t pw = 0; pw < s.PW; ++pw) {
        BinSamples& b = bins[ph * s.PW + pw];
        b.begin = int64_t(samples.size());
        b.ylo = ylo_[ph];
        b.xlo = xlo_[pw];
        b.cols = xhi_[pw] - xlo_[pw];
        b.outside = first_outside_ordinal(ay.grid, ax.grid, ylo_[ph], yhi_[ph], xlo_[pw],
                                          xhi_[pw]);
        for (int64_t iy = ylo_[ph]; iy < yhi_[ph]; ++iy) {
          const AxisTap<G> ty = axis_tap(ay.position(ph, iy), s.H);
          for (int64_t ix = xlo_[pw]; ix < xhi_[pw]; ++ix) {
            const AxisTap<G> tx = axis_tap(ax.position(pw, ix), s.W);
            samples.push_back(make_sample(ty, tx, s.W));
            if (with_slopes) {
              SampleSlopes<G> d;
              weight_slopes(ty, tx, d.dy, d.dx);
              ay.position_derivative(ph, iy, &d.y_lo, &d.y_hi);
              ax.position_derivative(pw, ix, &d.x_lo, &d.x_hi);
              slopes.push_back(d);
            }
          }
        }
        b.end = int64_t(samples.size());
      }
    }
  }

 private:
  std::vector<int64_t> ylo_, yhi_, xlo_, xhi_;
};

// Max mode: the winning in-window sample of a bin (relative index, -1 when an
// outside zero or an empty grid wins) given its values in list order.
template <typename A, typename G, typename Value>
inline int64_t max_winner(const RoiSamples<G>& r, const BinSamples& b, Value value, A* best) {
  int64_t arg = -1;
  A m = A(0);
  bool any = false;
  for (int64_t i = b.begin; i < b.end; ++i) {
    const A v = value(r.samples[i]);
    if (!any || v > m) { m = v; arg = i - b.begin; any = true; }
  }
  if (b.outside >= 0 &&
      (!any || A(0) > m || (A(0) == m && b.outside < r.ordinal(b, arg)))) {
    m = A(0);
    arg = -1;
  }
  if (!any && b.outside < 0) m = A(0);  // empty grid
  *best = m;
  return arg;
}

}  // namespace jax_roialign::cpu
