// The operators' FFI contract, shared by the CPU and CUDA handlers: the
// attributes every target receives, each kernel's argument list, and the check
// that the buffers XLA hands over agree with the attributes. The Python layer
// validates user arguments; this guards the boundary, returning errors that
// name the argument.
#pragma once

#include <cstdint>
#include <string>

#include "roi_common.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roialign {

namespace ffi = xla::ffi;

struct RoiAttrs {
  int64_t op;      // Op
  int64_t pooled_height;
  int64_t pooled_width;
  ffi::Span<const double> spatial_scales;  // one per feature level
  int64_t sampling_ratio;
  int64_t aligned;
  int64_t mode;    // PoolMode
  int64_t layout;  // Layout
  int64_t deterministic;  // CUDA backward: 1 = no atomics, bit-identical runs (CPU always is)
  double extrapolation_value;  // crop_and_resize: the value of a sample outside the image
  int64_t radians;        // roi_align_rotated: 1 = angles in radians, 0 = degrees
};

}  // namespace jax_roialign

XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(
    ::jax_roialign::RoiAttrs,
    ::xla::ffi::StructMember<int64_t>("op"),
    ::xla::ffi::StructMember<int64_t>("pooled_height"),
    ::xla::ffi::StructMember<int64_t>("pooled_width"),
    ::xla::ffi::StructMember<::xla::ffi::Span<const double>>("spatial_scales"),
    ::xla::ffi::StructMember<int64_t>("sampling_ratio"),
    ::xla::ffi::StructMember<int64_t>("aligned"),
    ::xla::ffi::StructMember<int64_t>("mode"),
    ::xla::ffi::StructMember<int64_t>("layout"),
    ::xla::ffi::StructMember<int64_t>("deterministic"),
    ::xla::ffi::StructMember<double>("extrapolation_value"),
    ::xla::ffi::StructMember<int64_t>("radians"));

namespace jax_roialign {

inline std::string dims_string(ffi::AnyBuffer::Dimensions d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

inline ffi::Error invalid(const std::string& what) {
  return ffi::Error::InvalidArgument("jax_roialign: " + what);
}

inline ffi::Error shape_error(const std::string& name, const std::string& expected,
                              ffi::AnyBuffer::Dimensions got) {
  return invalid(name + " must be " + expected + ", got shape " + dims_string(got));
}

// Geometry dtype for a features dtype: F64 for F64, else F32.
inline ffi::DataType geometry_dtype(ffi::DataType features) {
  return features == ffi::DataType::F64 ? ffi::DataType::F64 : ffi::DataType::F32;
}

// Calls fn(T{}) with the storage type T of `dtype` (features and their
// gradients); any other dtype is an error, returned through `fail`.
template <typename Fn, typename Fail>
auto dispatch_float(ffi::DataType dtype, Fn&& fn, Fail fail) -> decltype(fn(float{})) {
  switch (dtype) {
    case ffi::DataType::F32: return fn(float{});
    case ffi::DataType::F64: return fn(double{});
    case ffi::DataType::F16: return fn(Half{});
    case ffi::DataType::BF16: return fn(BFloat16{});
    default:
      return fail(invalid("features must be float16, bfloat16, float32 or float64"));
  }
}

// The feature levels of a call (features, or their gradients): L buffers of
// one dtype, (N, C, H_l, W_l) in the layout, N and C shared.
struct LevelBuffers {
  int64_t count = 0;
  ffi::DataType dtype[kMaxLevels];
  ffi::AnyBuffer::Dimensions dims[kMaxLevels];
  void* data[kMaxLevels];

  template <typename T>
  T* typed(int64_t l) const { return static_cast<T*>(data[l]); }
};

inline void add_level(LevelBuffers* out, const ffi::AnyBuffer& b) {
  out->dtype[out->count] = b.element_type();
  out->dims[out->count] = b.dimensions();
  out->data[out->count] = b.untyped_data();
  ++out->count;
}

inline ffi::Error level_count_error(const char* name, size_t count) {
  return invalid(std::string(name) + ": 1 to " + std::to_string(kMaxLevels) +
                 " feature levels, got " + std::to_string(count));
}

inline ffi::Error collect(const ffi::RemainingArgs& args, const char* name, LevelBuffers* out) {
  if (args.size() < 1 || args.size() > size_t(kMaxLevels)) return level_count_error(name, args.size());
  for (size_t l = 0; l < args.size(); ++l) {
    auto b = args.get<ffi::AnyBuffer>(l);
    if (!b.has_value()) return b.error();
    add_level(out, *b);
  }
  return ffi::Error::Success();
}

inline ffi::Error collect(ffi::RemainingRets& rets, const char* name, LevelBuffers* out) {
  if (rets.size() < 1 || rets.size() > size_t(kMaxLevels)) return level_count_error(name, rets.size());
  for (size_t l = 0; l < rets.size(); ++l) {
    auto b = rets.get<ffi::AnyBuffer>(l);
    if (!b.has_value()) return b.error();
    add_level(out, **b);
  }
  return ffi::Error::Success();
}

// Builds the call from the feature levels (`features_name` for errors), the
// rois and levels buffers, and the attributes.
inline ffi::Error make_call(const LevelBuffers& features, const char* features_name,
                            const ffi::AnyBuffer& rois, const ffi::AnyBuffer& levels,
                            const RoiAttrs& a, RoiCall* s) {
  if (a.op < 0 || a.op >= kNumOps) return invalid("unknown op attribute " + std::to_string(a.op));
  s->op = Op(a.op);
  if (a.layout != int64_t(Layout::kNCHW) && a.layout != int64_t(Layout::kNHWC))
    return invalid("layout attribute must be 0 (NCHW) or 1 (NHWC), got " +
                   std::to_string(a.layout));
  if (a.mode != int64_t(PoolMode::kAvg) && a.mode != int64_t(PoolMode::kMax))
    return invalid("mode attribute must be 0 (avg) or 1 (max), got " + std::to_string(a.mode));
  if (a.pooled_height < 1 || a.pooled_width < 1)
    return invalid("output size must be >= 1, got (" + std::to_string(a.pooled_height) + ", " +
                   std::to_string(a.pooled_width) + ")");
  if (a.sampling_ratio > kMaxSamplingRatio)
    return invalid("sampling_ratio must be <= " + std::to_string(kMaxSamplingRatio) + ", got " +
                   std::to_string(a.sampling_ratio));
  if (int64_t(a.spatial_scales.size()) != features.count)
    return invalid("spatial_scales must hold one scale per feature level (" +
                   std::to_string(features.count) + "), got " +
                   std::to_string(a.spatial_scales.size()));
  s->layout = Layout(a.layout);
  s->mode = PoolMode(a.mode);
  if (!takes_mode(s->op, s->mode))
    return invalid(std::string(op_name(s->op)) + " does not take mode attribute " +
                   std::to_string(a.mode) + (s->mode == PoolMode::kMax ? " (max)" : " (avg)"));
  s->L = features.count;
  const ffi::DataType dtype = features.dtype[0];
  for (int64_t l = 0; l < s->L; ++l) {
    const auto d = features.dims[l];
    const std::string name = std::string(features_name) + "[" + std::to_string(l) + "]";
    if (d.size() != 4) return shape_error(name, "rank 4", d);
    if (features.dtype[l] != dtype) return invalid(name + " must have the dtype of level 0");
    const int64_t n = d[0], c = s->layout == Layout::kNCHW ? d[1] : d[3];
    if (l == 0) {
      s->N = n;
      s->C = c;
    } else if (n != s->N || c != s->C) {
      return shape_error(name, "(N, C) = (" + std::to_string(s->N) + ", " +
                                   std::to_string(s->C) + ") in its layout, as level 0", d);
    }
    s->level[l].H = s->layout == Layout::kNCHW ? d[2] : d[1];
    s->level[l].W = s->layout == Layout::kNCHW ? d[3] : d[2];
    s->level[l].scale = a.spatial_scales[l];
  }
  if (rois.element_type() != geometry_dtype(dtype))
    return invalid("rois must be float64 for float64 features and float32 otherwise");
  const int64_t coords = box_coords(s->op);
  const auto r = rois.dimensions();
  if (r.size() == 2 && r[1] == coords + 1) {
    s->K = r[0];
    s->R = 0;
    s->per_image = false;
  } else if (r.size() == 3 && r[2] == coords && r[0] == s->N) {
    s->K = r[0] * r[1];
    s->R = r[1];
    s->per_image = true;
  } else {
    return shape_error("rois", "(K, " + std::to_string(coords + 1) + ") or (N, R, " +
                                   std::to_string(coords) + ") with N = " + std::to_string(s->N),
                       r);
  }
  const int64_t n_levels = int64_t(levels.element_count());
  if (levels.element_type() != ffi::DataType::S32 || (n_levels != 0 && n_levels != s->K) ||
      (n_levels == 0 && s->L > 1 && s->K > 0))
    return shape_error("levels", "int32 with one entry per roi (" + std::to_string(s->K) +
                                     "), or empty for one level",
                       levels.dimensions());
  s->has_levels = n_levels > 0;
  s->PH = a.pooled_height;
  s->PW = a.pooled_width;
  s->Cout = s->C;
  if (position_sensitive(s->op)) {
    if (s->C % (s->PH * s->PW) != 0)
      return invalid("position-sensitive features need channels divisible by PH * PW = " +
                     std::to_string(s->PH * s->PW) + ", got " + std::to_string(s->C));
    s->Cout = s->C / (s->PH * s->PW);
  }
  if (s->op == Op::kLegacy && (s->PH < 2 || s->PW < 2))
    return invalid("legacy roi_align needs output size >= 2");
  s->sampling_ratio = a.sampling_ratio;
  s->aligned = a.aligned != 0;
  s->radians = a.radians != 0;
  s->fill = a.extrapolation_value;
  return ffi::Error::Success();
}

// Dimensions of the pooled output (K rows flattened): (K, C, PH, PW) or
// (K, PH, PW, C); the (N, R, ...) form has the same element order.
inline bool output_matches(const RoiCall& s, ffi::AnyBuffer::Dimensions d) {
  int64_t rows = 1;
  const size_t lead = s.per_image ? 2 : 1;
  if (d.size() != lead + 3) return false;
  for (size_t i = 0; i < lead; ++i) rows *= d[i];
  const int64_t a = d[lead], b = d[lead + 1], c = d[lead + 2];
  return rows == s.K && (s.layout == Layout::kNCHW ? (a == s.Cout && b == s.PH && c == s.PW)
                                                   : (a == s.PH && b == s.PW && c == s.Cout));
}

inline std::string output_expected(const RoiCall& s) {
  const std::string lead = s.per_image ? "(N, R, " : "(K, ";
  const std::string dims = s.layout == Layout::kNCHW ? "C, PH, PW)" : "PH, PW, C)";
  return lead + dims + " with rows " + std::to_string(s.K) + ", C " + std::to_string(s.Cout) +
         ", PH " + std::to_string(s.PH) + ", PW " + std::to_string(s.PW);
}

inline ffi::Error check_pooled(const RoiCall& s, const char* name, const ffi::AnyBuffer& b,
                               ffi::DataType dtype) {
  if (b.element_type() != dtype || !output_matches(s, b.dimensions()))
    return shape_error(name, output_expected(s), b.dimensions());
  return ffi::Error::Success();
}

// Max mode needs the winners buffer shaped like the output; avg ignores it.
// `optional`: a forward, which may be handed (0,) instead and record none.
inline ffi::Error check_winner(const RoiCall& s, const ffi::AnyBuffer& winner, bool optional) {
  if (s.mode == PoolMode::kAvg) return ffi::Error::Success();
  const auto d = winner.dimensions();
  const bool none = optional && d.size() == 1 && d[0] == 0;
  if (winner.element_type() != ffi::DataType::S32 || !(none || output_matches(s, d)))
    return shape_error("winner", "int32 " + output_expected(s) + (optional ? " or (0,)" : ""),
                       d);
  return ffi::Error::Success();
}

// Box-shaped buffers (rois_dot, grad_rois) match the rois.
inline ffi::Error check_rois_like(const ffi::AnyBuffer& rois, const char* name,
                                  const ffi::AnyBuffer& b) {
  const auto r = rois.dimensions(), d = b.dimensions();
  bool same = b.element_type() == rois.element_type() && r.size() == d.size();
  for (size_t i = 0; same && i < r.size(); ++i) same = r[i] == d[i];
  return same ? ffi::Error::Success()
              : shape_error(name, "the shape and dtype of rois " + dims_string(r), d);
}

// Each kernel's binding (kernel_list.h), given the platform's context:
// ffi::ThreadPool on the CPU, ffi::PlatformStream<cudaStream_t> on CUDA.
// Feature levels come last (one buffer per level).
template <typename Context>
auto forward_binding() {
  return ffi::Ffi::Bind()
      .template Ctx<Context>()
      .template Arg<ffi::AnyBuffer>()   // rois, geometry dtype
      .template Arg<ffi::AnyBuffer>()   // levels: int32 per roi; (0,) for one level
      .RemainingArgs()                  // features, one per level
      .template Ret<ffi::AnyBuffer>()   // out
      .template Ret<ffi::AnyBuffer>()   // winner: int32 shaped like out, or (0,): none
                                        // recorded (avg mode, or max mode not differentiated)
      .template Attrs<RoiAttrs>();
}

template <typename Context>
auto forward_selected_binding() {
  return ffi::Ffi::Bind()
      .template Ctx<Context>()
      .template Arg<ffi::AnyBuffer>()   // rois
      .template Arg<ffi::AnyBuffer>()   // levels
      .template Arg<ffi::AnyBuffer>()   // winner to evaluate (max mode)
      .RemainingArgs()                  // features
      .template Ret<ffi::AnyBuffer>()   // out
      .template Attrs<RoiAttrs>();
}

template <typename Context>
auto backward_features_binding() {
  return ffi::Ffi::Bind()
      .template Ctx<Context>()
      .template Arg<ffi::AnyBuffer>()   // cotangent of out
      .template Arg<ffi::AnyBuffer>()   // rois
      .template Arg<ffi::AnyBuffer>()   // levels
      .template Arg<ffi::AnyBuffer>()   // winner
      .RemainingRets()                  // grad_features, one per level
      .template Attrs<RoiAttrs>();
}

template <typename Context>
auto forward_boxes_binding() {
  return ffi::Ffi::Bind()
      .template Ctx<Context>()
      .template Arg<ffi::AnyBuffer>()   // rois
      .template Arg<ffi::AnyBuffer>()   // levels
      .template Arg<ffi::AnyBuffer>()   // rois tangent
      .template Arg<ffi::AnyBuffer>()   // winner
      .RemainingArgs()                  // features
      .template Ret<ffi::AnyBuffer>()   // out tangent
      .template Attrs<RoiAttrs>();
}

template <typename Context>
auto backward_boxes_binding() {
  return ffi::Ffi::Bind()
      .template Ctx<Context>()
      .template Arg<ffi::AnyBuffer>()   // rois
      .template Arg<ffi::AnyBuffer>()   // levels
      .template Arg<ffi::AnyBuffer>()   // cotangent of out
      .template Arg<ffi::AnyBuffer>()   // winner
      .RemainingArgs()                  // features
      .template Ret<ffi::AnyBuffer>()   // grad_rois
      .template Attrs<RoiAttrs>();
}

// The buffers of one kernel call, checked, with the call's shape: what every
// platform's handler starts from.
struct CheckedCall {
  RoiCall s;
  LevelBuffers features;
};

// The checked buffers, typed as the kernels take them (G: the geometry type of
// the features' dtype, Types<T>::Geometry).
template <typename G>
const G* geometry(const ffi::AnyBuffer& rois) {
  return rois.reinterpret_data<G>();
}

inline const int32_t* level_indices(const ffi::AnyBuffer& levels) {
  return levels.reinterpret_data<int32_t>();
}

// The winners buffer in max mode; null (unused) in avg mode.
inline const int32_t* winners(const RoiCall& s, const ffi::AnyBuffer& winner) {
  return s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
}

// The winners a forward records: null in avg mode and where handed (0,).
inline int32_t* recorded_winners(const RoiCall& s, ffi::AnyBuffer& winner) {
  return s.mode == PoolMode::kMax && winner.element_count() > 0
             ? winner.reinterpret_data<int32_t>()
             : nullptr;
}

// forward (`records`: winners written, if asked for), forward_selected (winners
// read): the output and the winners.
inline ffi::Error check_forward(const ffi::AnyBuffer& rois, const ffi::AnyBuffer& levels,
                                const ffi::RemainingArgs& features, const ffi::AnyBuffer& winner,
                                const ffi::AnyBuffer& out, const RoiAttrs& attrs, bool records,
                                CheckedCall* c) {
  if (auto e = collect(features, "features", &c->features); e.failure())
    return e;
  if (auto e = make_call(c->features, "features", rois, levels, attrs, &c->s); e.failure())
    return e;
  if (auto e = check_pooled(c->s, "output", out, c->features.dtype[0]);
      e.failure())
    return e;
  return check_winner(c->s, winner, records);
}

// backward_features: the gradients (one per level) and the cotangent.
inline ffi::Error check_backward_features(const ffi::AnyBuffer& cotangent,
                                          const ffi::AnyBuffer& rois,
                                          const ffi::AnyBuffer& levels,
                                          const ffi::AnyBuffer& winner,
                                          ffi::RemainingRets& grads, const RoiAttrs& attrs,
                                          CheckedCall* c) {
  if (auto e = collect(grads, "grad_features", &c->features); e.failure())
    return e;
  if (auto e = make_call(c->features, "grad_features", rois, levels, attrs, &c->s); e.failure())
    return e;
  if (auto e = check_pooled(c->s, "cotangent", cotangent,
                            c->features.dtype[0]);
      e.failure())
    return e;
  return check_winner(c->s, winner, false);
}

// forward_boxes, backward_boxes: a rois-shaped buffer and an output-shaped one.
inline ffi::Error check_boxes(const ffi::AnyBuffer& rois, const ffi::AnyBuffer& levels,
                              const ffi::RemainingArgs& features, const ffi::AnyBuffer& winner,
                              const ffi::AnyBuffer& rois_like, const char* rois_like_name,
                              const ffi::AnyBuffer& out_like, const char* out_like_name,
                              const RoiAttrs& attrs, CheckedCall* c) {
  if (auto e = collect(features, "features", &c->features); e.failure())
    return e;
  if (auto e = make_call(c->features, "features", rois, levels, attrs, &c->s); e.failure())
    return e;
  if (!has_box_derivative(c->s.op))
    return invalid("this operator is piecewise constant in the boxes; no box kernel");
  if (auto e = check_rois_like(rois, rois_like_name, rois_like); e.failure()) return e;
  if (auto e = check_pooled(c->s, out_like_name, out_like,
                            c->features.dtype[0]);
      e.failure())
    return e;
  return check_winner(c->s, winner, false);
}

}  // namespace jax_roialign
