// What every RoI operator shares, host and device: the operator table, the
// call's shape (feature levels, rois, bins), where a roi's image, level and
// coordinates are, and the sample (bilinear, a single cell, or TensorFlow's
// lerp) with its derivatives. Each operator's own math (where its samples are,
// what weights they carry) is in its header; docs/semantics.md defines it.
#pragma once

#include <cstdint>

#include "numeric.h"

namespace jax_roialign {

enum class Layout : int64_t { kNCHW = 0, kNHWC = 1 };
enum class PoolMode : int64_t { kAvg = 0, kMax = 1 };

// The pool modes an operator takes (its table entry's `modes`): bits 1 << PoolMode.
constexpr int64_t kTakesAvg = int64_t(1) << int64_t(PoolMode::kAvg);
constexpr int64_t kTakesMax = int64_t(1) << int64_t(PoolMode::kMax);

// The operators, listed once: X(enum name, Python name, position-sensitive
// channels, has a box derivative, box coordinates, modes). The Python name is
// the operator's key in jax_roialign/_src/operators.py; the compiled modules
// export this table (bindings.h), and the code of an operator is its position
// here. Max mode is taken only where every sample is one cell or one bilinear
// sample (the CPU backward's winner tables rely on it).
//   roi_align      roi_align.h, avg or max
//   roi_pool       roi_pool.h, max over cells (piecewise constant in the box)
//   ps_roi_align   roi_align.h geometry, position-sensitive channels, avg
//   ps_roi_pool    roi_pool.h cells, position-sensitive channels, avg
//   legacy         legacy.h: one lattice point per bin
//   legacy_avg     legacy.h: 2x2 average of lattice points
//   legacy_max     legacy.h: 2x2 max of lattice points
//   roi_align_rotated        rotated.h: (cx, cy, w, h, angle) boxes, avg
//   crop_and_resize          crop.h: TensorFlow's bilinear crops of normalised boxes
//   crop_and_resize_nearest  crop.h: the nearest cell (piecewise constant in the box)
#define JRA_OPERATORS(X)                                                        \
  X(kRoiAlign, roi_align, false, true, 4, kTakesAvg | kTakesMax)                \
  X(kRoiPool, roi_pool, false, false, 4, kTakesMax)                             \
  X(kPsRoiAlign, ps_roi_align, true, true, 4, kTakesAvg)                        \
  X(kPsRoiPool, ps_roi_pool, true, false, 4, kTakesAvg)                         \
  X(kLegacy, legacy, false, true, 4, kTakesAvg)                                 \
  X(kLegacyAvg, legacy_avg, false, true, 4, kTakesAvg)                          \
  X(kLegacyMax, legacy_max, false, true, 4, kTakesMax)                          \
  X(kRoiAlignRotated, roi_align_rotated, false, true, 5, kTakesAvg)             \
  X(kCropAndResize, crop_and_resize, false, true, 4, kTakesAvg)                 \
  X(kCropAndResizeNearest, crop_and_resize_nearest, false, false, 4, kTakesAvg)

#define JRA_OP_ENUM(id, name, ps, box, coords, modes) id,
enum class Op : int64_t { JRA_OPERATORS(JRA_OP_ENUM) };
#undef JRA_OP_ENUM
#define JRA_OP_COUNT(id, name, ps, box, coords, modes) +1
constexpr int64_t kNumOps = 0 JRA_OPERATORS(JRA_OP_COUNT);
#undef JRA_OP_COUNT

JRA_HD bool position_sensitive(Op op) {
#define JRA_OP_PS(id, name, ps, box, coords, modes) if (op == Op::id) return ps;
  JRA_OPERATORS(JRA_OP_PS)
#undef JRA_OP_PS
  return false;
}

// The pool ops are piecewise constant in the box corners: no box derivative.
JRA_HD bool has_box_derivative(Op op) {
#define JRA_OP_BOX(id, name, ps, box, coords, modes) if (op == Op::id) return box;
  JRA_OPERATORS(JRA_OP_BOX)
#undef JRA_OP_BOX
  return false;
}

// Coordinates of one box, after the batch index of a (K, 1 + coords) row.
JRA_HD int64_t box_coords(Op op) {
#define JRA_OP_COORDS(id, name, ps, box, coords, modes) if (op == Op::id) return coords;
  JRA_OPERATORS(JRA_OP_COORDS)
#undef JRA_OP_COORDS
  return 4;
}
constexpr int64_t kMaxBoxCoords = 5;

// The Python name of operator `op` (for errors).
inline const char* op_name(Op op) {
#define JRA_OP_NAME(id, name, ps, box, coords, modes) \
  if (op == Op::id) return #name;
  JRA_OPERATORS(JRA_OP_NAME)
#undef JRA_OP_NAME
  return "?";
}

// Whether operator `op` takes pool mode `mode`.
JRA_HD bool takes_mode(Op op, PoolMode mode) {
#define JRA_OP_MODES(id, name, ps, box, coords, modes) \
  if (op == Op::id) return ((modes) >> int64_t(mode)) & 1;
  JRA_OPERATORS(JRA_OP_MODES)
#undef JRA_OP_MODES
  return false;
}

// Feature levels one call may take (an FPN pyramid has 4 to 6).
constexpr int64_t kMaxLevels = 8;

// The sampling grid per bin and axis is at most this (sampling_ratio is
// bounded at trace time; here it only keeps `rows * cols` within int64).
constexpr int64_t kMaxSamplingRatio = 1024;

// One feature level: its extent and the scale from input-image coordinates.
struct Level {
  int64_t H, W;
  double scale;
};

// The static shape and the attributes of one kernel call.
struct RoiCall {
  Op op;
  PoolMode mode;
  Layout layout;
  int64_t N, C;           // images and input channels, the same on every level
  int64_t Cout;           // output channels: C, or C / (PH * PW) position-sensitive
  int64_t K;              // rois (rows of the output)
  int64_t R;              // rois per image for the (N, R, coords) form
  bool per_image;         // (N, R, coords) boxes; else (K, 1 + coords) rows
  int64_t PH, PW;         // output bins
  int64_t sampling_ratio; // > 0 fixed grid, <= 0 adaptive per roi (align ops)
  bool aligned;
  bool radians;           // roi_align_rotated: angles in radians (else degrees)
  double fill;            // the forward's value of a bin with no sample (crop_and_resize's
                          // extrapolation value; 0 for every other operator)
  int64_t L;              // feature levels
  bool has_levels;        // a level per roi in the levels buffer; else every roi is on level 0
  Level level[kMaxLevels];

  JRA_HD int64_t coords() const { return box_coords(op); }
  JRA_HD int64_t roi_stride() const { return per_image ? coords() : coords() + 1; }
  JRA_HD int64_t bins() const { return PH * PW; }
  // Input channel read by output channel c in bin `bin`.
  JRA_HD int64_t input_channel(int64_t c, int64_t bin) const {
    return position_sensitive(op) ? c * PH * PW + bin : c;
  }
  // Offset of feature element (n, c, y, x) of level l; `spatial` is y * W + x.
  JRA_HD int64_t feature_offset(int64_t l, int64_t n, int64_t c, int64_t spatial) const {
    const int64_t hw = level[l].H * level[l].W;
    return layout == Layout::kNCHW ? (n * C + c) * hw + spatial : (n * hw + spatial) * C + c;
  }
  // Elements of level l's features.
  JRA_HD int64_t level_size(int64_t l) const { return N * C * level[l].H * level[l].W; }
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
  if (s.per_image) return k / s.R;
  const G b = rois[k * s.roi_stride()];
  if (!(b >= G(0) && b < G(s.N)) || b != G(int64_t(b))) return -1;
  return int64_t(b);
}

// Level of roi k from the int32 levels buffer (0 without one), or -1 when it
// is outside [0, L): such a roi is invalid like a bad batch index.
JRA_HD int64_t roi_level(const RoiCall& s, const int32_t* levels, int64_t k) {
  if (!s.has_levels) return 0;
  const int64_t l = levels[k];
  return l >= 0 && l < s.L ? l : -1;
}

// Pointer to roi k's coordinates (x1, y1, x2, y2 for the axis-aligned ops).
template <typename G>
JRA_HD const G* roi_coords(const RoiCall& s, const G* rois, int64_t k) {
  return rois + k * s.roi_stride() + (s.per_image ? 0 : 1);
}

// The taps of one sample along one axis: two cell indices, their weights,
// and d(w_high)/d(position) (0 where the operator clamps the position).
template <typename G>
struct AxisTap {
  int64_t low, high;
  G w_low, w_high;
  G slope;
};

// How a sample combines its four corners (y * W + x offsets (yl,xl), (yl,xh),
// (yh,xl), (yh,xh)):
//   kBilinear  ((w0*f0 + w1*f1) + w2*f2) + w3*f3, torchvision's order
//   kCell      f0 alone (w0 = 1); nothing else is read
//   kLerp      TensorFlow's crop_and_resize: top = f0 + (f1 - f0)*w0,
//              bottom = f2 + (f3 - f2)*w0, top + (bottom - top)*w1, with
//              w0 = x_lerp, w1 = y_lerp
//   kEmpty     outside the window: 0, nothing read (a grid that is not a rectangle)
enum class SampleKind : int32_t { kBilinear = 0, kCell = 1, kLerp = 2, kEmpty = 3 };

template <typename G>
struct Sample {
  int64_t at[4];
  G w[4];
  SampleKind kind;
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
  s.kind = SampleKind::kBilinear;
  return s;
}

template <typename G>
JRA_HD Sample<G> empty_sample() {
  Sample<G> s;
  s.at[0] = s.at[1] = s.at[2] = s.at[3] = 0;
  s.w[0] = s.w[1] = s.w[2] = s.w[3] = G(0);
  s.kind = SampleKind::kEmpty;
  return s;
}

// The tap of a single cell (the pool operators, nearest crops): no slope.
template <typename G>
JRA_HD AxisTap<G> cell_tap(int64_t i) {
  AxisTap<G> t;
  t.low = t.high = i;
  t.w_low = G(1);
  t.w_high = G(0);
  t.slope = G(0);
  return t;
}

template <typename G>
JRA_HD Sample<G> cell_sample(int64_t y, int64_t x, int64_t W) {
  Sample<G> s;
  s.at[0] = s.at[1] = s.at[2] = s.at[3] = y * W + x;
  s.w[0] = G(1);
  s.w[1] = s.w[2] = s.w[3] = G(0);
  s.kind = SampleKind::kCell;
  return s;
}

// A sample's value from a reader f(offset) -> accumulator.
template <typename A, typename G, typename Read>
JRA_HD A sample_value(const Sample<G>& s, Read f) {
  switch (s.kind) {
    case SampleKind::kEmpty:
      return A(0);
    case SampleKind::kCell:
      return f(s.at[0]);
    case SampleKind::kLerp: {
      const A f0 = f(s.at[0]), f1 = f(s.at[1]), f2 = f(s.at[2]), f3 = f(s.at[3]);
      const A top = f0 + (f1 - f0) * A(s.w[0]);
      const A bottom = f2 + (f3 - f2) * A(s.w[0]);
      return top + (bottom - top) * A(s.w[1]);
    }
    case SampleKind::kBilinear:
      break;
  }
  return A(s.w[0]) * f(s.at[0]) + A(s.w[1]) * f(s.at[1]) + A(s.w[2]) * f(s.at[2]) +
         A(s.w[3]) * f(s.at[3]);
}

// The four corner contributions of gradient g through a sample, in the order
// the sample's peer accumulates them: g * w / divisor (torchvision), or, for
// kLerp, (1 - x_lerp or x_lerp) * ((1 - y_lerp or y_lerp) * g) (TensorFlow).
// `add(offset, value)` is called for each corner the sample reads.
template <typename A, typename G, typename Add>
JRA_HD void scatter_sample(const Sample<G>& s, A g, A divisor, Add add) {
  switch (s.kind) {
    case SampleKind::kEmpty:
      return;
    case SampleKind::kCell:
      add(s.at[0], g * A(s.w[0]) / divisor);
      return;
    case SampleKind::kLerp: {
      const A xl = A(s.w[0]), yl = A(s.w[1]);
      const A dtop = (A(1) - yl) * g, dbottom = yl * g;
      add(s.at[0], (A(1) - xl) * dtop);
      add(s.at[1], xl * dtop);
      add(s.at[2], (A(1) - xl) * dbottom);
      add(s.at[3], xl * dbottom);
      return;
    }
    case SampleKind::kBilinear:
      break;
  }
  for (int j = 0; j < 4; ++j) add(s.at[j], g * A(s.w[j]) / divisor);
}

// d(corner weights)/d(sample y) and /d(sample x).
template <typename G>
JRA_HD void weight_slopes(const AxisTap<G>& ty, const AxisTap<G>& tx, G dy[4], G dx[4]) {
  dy[0] = -ty.slope * tx.w_low;  dx[0] = -ty.w_low * tx.slope;
  dy[1] = -ty.slope * tx.w_high; dx[1] = ty.w_low * tx.slope;
  dy[2] = ty.slope * tx.w_low;   dx[2] = -ty.w_high * tx.slope;
  dy[3] = ty.slope * tx.w_high;  dx[3] = ty.w_high * tx.slope;
}

}  // namespace jax_roialign
