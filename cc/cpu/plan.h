// The channel-independent part of an operator for one roi on the CPU: every
// sample of every bin that reads the map, its taps (and, for the box
// derivatives, its slopes), the bin's divisor and max-mode tie information,
// computed once and reused across all channels. Each operator contributes
// only a builder, written from its math header.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../legacy.h"
#include "../roi_align.h"
#include "../roi_pool.h"

namespace jax_roialign::cpu {

template <typename G>
struct SampleSlopes {
  G dy[4], dx[4];      // d(corner weight)/d(sample y), /d(sample x)
  G y_lo, y_hi;        // d(sample y)/d(y1), /d(y2)
  G x_lo, x_hi;        // d(sample x)/d(x1), /d(x2)
};

struct PlanBin {
  int64_t begin, end;  // [begin, end) in RoiPlan::samples
  double divisor;      // avg: the sum is divided by this (1 for max)
  int64_t outside;     // max: grid ordinal of the first sample that is an
                       // implicit 0 (outside the window), -1 if none
};

template <typename G>
class RoiPlan {
 public:
  int64_t image = -1;                  // -1: invalid roi (zeros, no gradient)
  std::vector<PlanBin> bins;           // PH * PW, row-major
  std::vector<Sample<G>> samples;      // samples that read the map, bin by bin
  std::vector<int64_t> ordinals;       // grid ordinal of each sample (max ties)
  std::vector<SampleSlopes<G>> slopes; // parallel to samples, when asked for

  bool valid() const { return image >= 0; }

  void build(const RoiShape& s, const G* rois, int64_t k, bool with_slopes) {
    bins.clear();
    samples.clear();
    ordinals.clear();
    slopes.clear();
    image = roi_image(s, rois, k);
    if (image < 0) return;
    const G* c = roi_corners(s, rois, k);
    switch (s.op) {
      case Op::kRoiAlign:
      case Op::kPsRoiAlign: build_align(s, c, with_slopes); break;
      case Op::kRoiPool:
      case Op::kPsRoiPool: build_pool(s, c); break;
      case Op::kLegacy:
      case Op::kLegacyAvg:
      case Op::kLegacyMax: build_legacy(s, c, with_slopes); break;
    }
  }

 private:
  std::vector<int64_t> ylo_, yhi_, xlo_, xhi_;

  void push(const Sample<G>& p, int64_t ordinal) {
    samples.push_back(p);
    ordinals.push_back(ordinal);
  }

  // roi_align / ps_roi_align: a gh x gw grid per bin; only in-window samples.
  void build_align(const RoiShape& s, const G* c, bool with_slopes) {
    const AxisGeometry<G> ay = axis_geometry(c[1], c[3], s, s.PH, s.H);
    const AxisGeometry<G> ax = axis_geometry(c[0], c[2], s, s.PW, s.W);
    const double n = double(ay.grid) * double(ax.grid);
    const double divisor = double(G(n > 1 ? n : 1));  // max(gh*gw, 1), as G
    ylo_.resize(s.PH); yhi_.resize(s.PH);
    xlo_.resize(s.PW); xhi_.resize(s.PW);
    for (int64_t p = 0; p < s.PH; ++p) window_range(ay, p, &ylo_[p], &yhi_[p]);
    for (int64_t p = 0; p < s.PW; ++p) window_range(ax, p, &xlo_[p], &xhi_[p]);
    bins.resize(s.bins());
    for (int64_t ph = 0; ph < s.PH; ++ph) {
      for (int64_t pw = 0; pw < s.PW; ++pw) {
        PlanBin& b = bins[ph * s.PW + pw];
        b.begin = int64_t(samples.size());
        b.divisor = s.mode == PoolMode::kAvg ? divisor : 1.0;
        b.outside = first_outside_ordinal(ay.grid, ax.grid, ylo_[ph], yhi_[ph], xlo_[pw],
                                          xhi_[pw]);
        for (int64_t iy = ylo_[ph]; iy < yhi_[ph]; ++iy) {
          const AxisTap<G> ty = axis_tap(ay.position(ph, iy), s.H);
          for (int64_t ix = xlo_[pw]; ix < xhi_[pw]; ++ix) {
            const AxisTap<G> tx = axis_tap(ax.position(pw, ix), s.W);
            push(make_sample(ty, tx, s.W), iy * ax.grid + ix);
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

  // roi_pool (max) / ps_roi_pool (avg over the bin's area): cells; no box
  // derivative (the function is piecewise constant in the corners).
  void build_pool(const RoiShape& s, const G* c) {
    const PoolAxis<G> ay = pool_axis(c[1], c[3], s, s.PH, s.H);
    const PoolAxis<G> ax = pool_axis(c[0], c[2], s, s.PW, s.W);
    bins.resize(s.bins());
    for (int64_t ph = 0; ph < s.PH; ++ph) {
      int64_t y0 = 0, y1 = 0;
      if (ay.valid && ax.valid) ay.cells(ph, &y0, &y1);
      for (int64_t pw = 0; pw < s.PW; ++pw) {
        int64_t x0 = 0, x1 = 0;
        if (ay.valid && ax.valid) ax.cells(pw, &x0, &x1);
        PlanBin& b = bins[ph * s.PW + pw];
        b.begin = int64_t(samples.size());
        b.outside = -1;
        const int64_t area = std::max<int64_t>(y1 - y0, 0) * std::max<int64_t>(x1 - x0, 0);
        b.divisor = s.mode == PoolMode::kAvg && area > 0 ? double(G(area)) : 1.0;
        for (int64_t y = y0; y < y1; ++y)
          for (int64_t x = x0; x < x1; ++x) push(cell_sample<G>(y, x, s.W), (y - y0) * (x1 - x0) + x - x0);
        b.end = int64_t(samples.size());
      }
    }
  }

  // legacy: lattice nodes; bin (ph, pw) pools the span x span nodes from
  // (ph, pw). Nodes outside [0, H) x [0, W) are 0 (they count in the average
  // and can win the max).
  void build_legacy(const RoiShape& s, const G* c, bool with_slopes) {
    const int64_t span = legacy_span(s.op);
    const LegacyAxis<G> ay = legacy_axis(c[1], c[3], s, legacy_nodes(s.op, s.PH), s.H);
    const LegacyAxis<G> ax = legacy_axis(c[0], c[2], s, legacy_nodes(s.op, s.PW), s.W);
    bins.resize(s.bins());
    for (int64_t ph = 0; ph < s.PH; ++ph) {
      for (int64_t pw = 0; pw < s.PW; ++pw) {
        PlanBin& b = bins[ph * s.PW + pw];
        b.begin = int64_t(samples.size());
        b.divisor = s.mode == PoolMode::kAvg ? double(span * span) : 1.0;
        // In-window nodes of the span form a rectangle (positions are monotone).
        int64_t ylo = span, yhi = 0, xlo = span, xhi = 0;
        for (int64_t d = 0; d < span; ++d) {
          if (ay.in_window(ay.position(ph + d))) { ylo = std::min(ylo, d); yhi = d + 1; }
          if (ax.in_window(ax.position(pw + d))) { xlo = std::min(xlo, d); xhi = d + 1; }
        }
        b.outside = first_outside_ordinal(span, span, ylo, yhi, xlo, xhi);
        for (int64_t dy = ylo; dy < yhi; ++dy) {
          const AxisTap<G> ty = ay.tap(ay.position(ph + dy));
          for (int64_t dx = xlo; dx < xhi; ++dx) {
            const AxisTap<G> tx = ax.tap(ax.position(pw + dx));
            push(make_sample(ty, tx, s.W), dy * span + dx);
            if (with_slopes) {
              SampleSlopes<G> d;
              weight_slopes(ty, tx, d.dy, d.dx);
              ay.position_derivative(ph + dy, &d.y_lo, &d.y_hi);
              ax.position_derivative(pw + dx, &d.x_lo, &d.x_hi);
              slopes.push_back(d);
            }
          }
        }
        b.end = int64_t(samples.size());
      }
    }
  }
};

// Max mode: the winning sample of a bin (index relative to the bin's first,
// -1 when an implicit outside 0 or an empty bin wins) given the samples'
// values; ties go to the first in grid order.
template <typename A, typename G, typename Value>
inline int64_t max_winner(const RoiPlan<G>& r, const PlanBin& b, Value value, A* best) {
  int64_t arg = -1;
  A m = A(0);
  for (int64_t i = b.begin; i < b.end; ++i) {
    const A v = value(r.samples[i]);
    if (arg < 0 || v > m) { m = v; arg = i - b.begin; }
  }
  if (b.outside >= 0 &&
      (arg < 0 || A(0) > m || (A(0) == m && b.outside < r.ordinals[b.begin + arg]))) {
    m = A(0);
    arg = -1;
  }
  *best = arg < 0 ? A(0) : m;
  return arg;
}

}  // namespace jax_roialign::cpu
