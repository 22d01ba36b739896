// What every RoI operator shares, host and device: the call's shape, the
// operator table, where a roi's image and corners are, and the 4-tap sample
// (bilinear, or a single cell) with its derivatives. Each operator's own math
// (where its samples are, what weights they carry) is in <op>.h.
#pragma once

#include <cstdint>

#include "numeric.h"

namespace jax_roialign {

enum class Layout : int64_t { kNCHW = 0, kNHWC = 1 };
enum class PoolMode : int64_t { kAvg = 0, kMax = 1 };

// The operators, listed once: X(enum name, Python name, position-sensitive
// channels, has a box derivative). The Python name is the operator's key in
// jax_roialign/_src/operators.py; the compiled modules export this table
// (bindings.h), and the code of an operator is its position here. The math of
// each is in its header (docs/semantics.md defines it).
//   roi_align      roi_align.h, avg or max
//   roi_pool       roi_pool.h, max over cells (piecewise constant in the box)
//   ps_roi_align   roi_align.h geometry, position-sensitive channels, avg
//   ps_roi_pool    roi_pool.h cells, position-sensitive channels, avg
//   legacy         legacy.h: one lattice point per bin
//   legacy_avg     legacy.h: 2x2 average of lattice points
//   legacy_max     legacy.h: 2x2 max of lattice points
#define JRA_OPERATORS(X)                              \
  X(kRoiAlign, roi_align, false, true)                \
  X(kRoiPool, roi_pool, false, false)                 \
  X(kPsRoiAlign, ps_roi_align, true, true)            \
  X(kPsRoiPool, ps_roi_pool, true, false)             \
  X(kLegacy, legacy, false, true)                     \
  X(kLegacyAvg, legacy_avg, false, true)              \
  X(kLegacyMax, legacy_max, false, true)

#define JRA_OP_ENUM(id, name, ps, box) id,
enum class Op : int64_t { JRA_OPERATORS(JRA_OP_ENUM) };
#undef JRA_OP_ENUM
#define JRA_OP_COUNT(id, name, ps, box) +1
constexpr int64_t kNumOps = 0 JRA_OPERATORS(JRA_OP_COUNT);
#undef JRA_OP_COUNT

JRA_HD bool position_sensitive(Op op) {
#define JRA_OP_PS(id, name, ps, box) if (op == Op::id) return ps;
  JRA_OPERATORS(JRA_OP_PS)
#undef JRA_OP_PS
  return false;
}

// The pool ops are piecewise constant in the box corners: no box derivative.
JRA_HD bool has_box_derivative(Op op) {
#define JRA_OP_BOX(id, name, ps, box) if (op == Op::id) return box;
  JRA_OPERATORS(JRA_OP_BOX)
#undef JRA_OP_BOX
  return false;
}

// The static shape and the attributes of one kernel call.
struct RoiCall {
  Op op;
  int64_t N, C, H, W;     // features (C input channels)
  int64_t Cout;           // output channels: C, or C / (PH * PW) position-sensitive
  int64_t K;              // rois (rows of the output)
  int64_t R;              // rois per image for the (N, R, 4) form; 0 for (K, 5)
  int64_t PH, PW;         // output bins
  double spatial_scale;
  int64_t sampling_ratio; // > 0 fixed grid, <= 0 adaptive per roi (align ops)
  bool aligned;
  PoolMode mode;
  Layout layout;

  JRA_HD int64_t roi_stride() const { return R > 0 ? 4 : 5; }
  JRA_HD int64_t bins() const { return PH * PW; }
  // Input channel read by output channel c in bin `bin`.
  JRA_HD int64_t input_channel(int64_t c, int64_t bin) const {
    return position_sensitive(op) ? c * PH * PW + bin : c;
  }
  // Offset of feature element (n, c, y, x); `spatial` is y * W + x.
  JRA_HD int64_t feature_offset(int64_t n, int64_t c, int64_t spatial) const {
    return layout == Layout::kNCHW ? (n * C + c) * H * W + spatial
                                   : (n * H * W + spatial) * C + c;
  }
  // Offset of output element (k, c, bin); `bin` is ph * PW + pw.
  JRA_HD int64_t output_offset(int64_t k, int64_t c, int64_t bin) const {
    return layout == Layout::kNCHW ? (k * Cout + c) * PH * PW + bin
                                   : (k * PH * PW + bin) * Cout + c;
  }
};

// Image of roi k, or -1 when its batch index is not an integer in [0, N)
// (NaN included): such a roi reads nothing, writes zeros, gets no gradient.
template <typename G>
JRA_HD int64_t roi_image(const RoiCall& s, const G* rois, int64_t k) {
  if (s.R > 0) return k / s.R;
  const G b = rois[k * 5];
  if (!(b >= G(0) && b < G(s.N)) || b != G(int64_t(b))) return -1;
  return int64_t(b);
}

// Pointer to roi k's (x1, y1, x2, y2).
template <typename G>
JRA_HD const G* roi_corners(const RoiCall& s, const G* rois, int64_t k) {
  return rois + k * s.roi_stride() + (s.R > 0 ? 0 : 1);
}

// The taps of one sample along one axis: two cell indices, their weights,
// and d(w_high)/d(position) (0 where the operator clamps the position).
template <typename G>
struct AxisTap {
  int64_t low, high;
  G w_low, w_high;
  G slope;
};

// A sample: four corner offsets (y * W + x) and weights in torchvision's
// order (yl,xl), (yl,xh), (yh,xl), (yh,xh). A single cell is a sample with
// `single` set: weight 1 on corner 0 and nothing else read.
template <typename G>
struct Sample {
  int64_t at[4];
  G w[4];
  bool single;
};

template <typename G>
JRA_HD Sample<G> make_sample(const AxisTap<G>& ty, const AxisTap<G>& tx, int64_t W) {
  Sample<G> s;
  s.at[0] = ty.low * W + tx.low;
  s.at[1] = ty.low * W + tx.high;
  s.at[2] = ty.high * W + tx.low;
  s.at[3] = ty.high * W + tx.high;
  s.w[0] = ty.w_low * tx.w_low;
  s.w[1] = ty.w_low * tx.w_high;
  s.w[2] = ty.w_high * tx.w_low;
  s.w[3] = ty.w_high * tx.w_high;
  s.single = false;
  return s;
}

template <typename G>
JRA_HD Sample<G> cell_sample(int64_t y, int64_t x, int64_t W) {
  Sample<G> s;
  s.at[0] = s.at[1] = s.at[2] = s.at[3] = y * W + x;
  s.w[0] = G(1);
  s.w[1] = s.w[2] = s.w[3] = G(0);
  s.single = true;
  return s;
}

// A sample's value from a reader f(offset) -> accumulator, summed in
// torchvision's order.
template <typename A, typename G, typename Read>
JRA_HD A sample_value(const Sample<G>& s, Read f) {
  if (s.single) return f(s.at[0]);
  return A(s.w[0]) * f(s.at[0]) + A(s.w[1]) * f(s.at[1]) + A(s.w[2]) * f(s.at[2]) +
         A(s.w[3]) * f(s.at[3]);
}

// d(corner weights)/d(sample y) and /d(sample x).
template <typename G>
JRA_HD void weight_slopes(const AxisTap<G>& ty, const AxisTap<G>& tx, G dy[4], G dx[4]) {
  dy[0] = -ty.slope * tx.w_low;  dx[0] = -ty.w_low * tx.slope;
  dy[1] = -ty.slope * tx.w_high; dx[1] = ty.w_low * tx.slope;
  dy[2] = ty.slope * tx.w_low;   dx[2] = -ty.w_high * tx.slope;
  dy[3] = ty.slope * tx.w_high;  dx[3] = ty.w_high * tx.slope;
}

// Max over a bin's samples where samples outside the window are 0 and can
// win; ties go to the first sample in (row-major) grid order. The in-window
// samples form the rectangle [ylo, yhi) x [xlo, xhi) of a gh x gw grid; the
// grid ordinal of the first outside sample, or -1 if there is none.
JRA_HD int64_t first_outside_ordinal(int64_t gh, int64_t gw, int64_t ylo, int64_t yhi,
                                     int64_t xlo, int64_t xhi) {
  if (gh <= 0 || gw <= 0) return -1;
  if (ylo >= yhi || xlo >= xhi) return 0;          // every sample outside
  if (ylo > 0 || xlo > 0) return 0;
  if (xhi < gw) return xhi;                        // row 0, past the window
  if (yhi < gh) return yhi * gw;                   // first row past the window
  return -1;                                       // no outside sample
}

}  // namespace jax_roialign
