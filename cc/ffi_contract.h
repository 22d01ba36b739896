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

struct RoiAttrs {
  int64_t op;      // Op
  int64_t pooled_height;
  int64_t pooled_width;
  double spatial_scale;
  int64_t sampling_ratio;
  int64_t aligned;
  int64_t mode;    // PoolMode
  int64_t layout;  // Layout
  int64_t deterministic;  // CUDA backward: 1 = no atomics, bit-identical runs (CPU always is)
};

}  // namespace jax_roialign

XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(
    ::jax_roialign::RoiAttrs,
    ::xla::ffi::StructMember<int64_t>("op"),
    ::xla::ffi::StructMember<int64_t>("pooled_height"),
    ::xla::ffi::StructMember<int64_t>("pooled_width"),
    ::xla::ffi::StructMember<double>("spatial_scale"),
    ::xla::ffi::StructMember<int64_t>("sampling_ratio"),
    ::xla::ffi::StructMember<int64_t>("aligned"),
    ::xla::ffi::StructMember<int64_t>("mode"),
    ::xla::ffi::StructMember<int64_t>("layout"),
    ::xla::ffi::StructMember<int64_t>("deterministic"));

namespace jax_roialign {

namespace ffi = xla::ffi;

inline std::string dims_string(ffi::AnyBuffer::Dimensions d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

inline ffi::Error shape_error(const char* name, const std::string& expected,
                              ffi::AnyBuffer::Dimensions got) {
  return ffi::Error::InvalidArgument(std::string("jax_roialign: ") + name + " must be " +
                                     expected + ", got shape " + dims_string(got));
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
      return fail(ffi::Error::InvalidArgument(
          "jax_roialign: features must be float16, bfloat16, float32 or float64"));
  }
}

// Builds the call's shape from the features dimensions (N, C, H, W in the
// attribute's layout), the rois, and the attributes; checks the rois dtype.
inline ffi::Error make_shape(ffi::AnyBuffer::Dimensions features, ffi::DataType features_dtype,
                             const ffi::AnyBuffer& rois, const RoiAttrs& a, RoiCall* s) {
  if (a.op < 0 || a.op >= kNumOps)
    return ffi::Error::InvalidArgument("jax_roialign: unknown op attribute " + std::to_string(a.op));
  s->op = Op(a.op);
  if (a.layout != int64_t(Layout::kNCHW) && a.layout != int64_t(Layout::kNHWC))
    return ffi::Error::InvalidArgument("jax_roialign: layout attribute must be 0 (NCHW) or 1 (NHWC), got " +
                                       std::to_string(a.layout));
  if (a.mode != int64_t(PoolMode::kAvg) && a.mode != int64_t(PoolMode::kMax))
    return ffi::Error::InvalidArgument("jax_roialign: mode attribute must be 0 (avg) or 1 (max), got " +
                                       std::to_string(a.mode));
  if (a.pooled_height < 1 || a.pooled_width < 1)
    return ffi::Error::InvalidArgument("jax_roialign: output size must be >= 1, got (" +
                                       std::to_string(a.pooled_height) + ", " +
                                       std::to_string(a.pooled_width) + ")");
  if (features.size() != 4) return shape_error("features", "rank 4", features);
  s->layout = Layout(a.layout);
  s->mode = PoolMode(a.mode);
  s->N = features[0];
  if (s->layout == Layout::kNCHW) {
    s->C = features[1]; s->H = features[2]; s->W = features[3];
  } else {
    s->H = features[1]; s->W = features[2]; s->C = features[3];
  }
  if (rois.element_type() != geometry_dtype(features_dtype))
    return ffi::Error::InvalidArgument(
        "jax_roialign: rois must be float64 for float64 features and float32 otherwise");
  const auto r = rois.dimensions();
  if (r.size() == 2 && r[1] == 5) {
    s->K = r[0];
    s->R = 0;
  } else if (r.size() == 3 && r[2] == 4 && r[0] == s->N) {
    s->K = r[0] * r[1];
    s->R = r[1];
  } else {
    return shape_error("rois", "(K, 5) or (N, R, 4) with N = " + std::to_string(s->N), r);
  }
  s->PH = a.pooled_height;
  s->PW = a.pooled_width;
  s->Cout = s->C;
  if (position_sensitive(s->op)) {
    if (s->C % (s->PH * s->PW) != 0)
      return ffi::Error::InvalidArgument(
          "jax_roialign: position-sensitive features need channels divisible by PH * PW = " +
          std::to_string(s->PH * s->PW) + ", got " + std::to_string(s->C));
    s->Cout = s->C / (s->PH * s->PW);
  }
  if (s->op == Op::kLegacy && (s->PH < 2 || s->PW < 2))
    return ffi::Error::InvalidArgument("jax_roialign: legacy roi_align needs output size >= 2");
  s->spatial_scale = a.spatial_scale;
  s->sampling_ratio = a.sampling_ratio;
  s->aligned = a.aligned != 0;
  return ffi::Error::Success();
}

// Dimensions of the pooled output (K rows flattened): (K, C, PH, PW) or
// (K, PH, PW, C); the (N, R, 4) form's (N, R, ...) has the same element order.
inline bool output_matches(const RoiCall& s, ffi::AnyBuffer::Dimensions d) {
  int64_t rows = 1;
  const size_t lead = s.R > 0 ? 2 : 1;
  if (d.size() != lead + 3) return false;
  for (size_t i = 0; i < lead; ++i) rows *= d[i];
  const int64_t a = d[lead], b = d[lead + 1], c = d[lead + 2];
  return rows == s.K && (s.layout == Layout::kNCHW ? (a == s.Cout && b == s.PH && c == s.PW)
                                                   : (a == s.PH && b == s.PW && c == s.Cout));
}

inline std::string output_expected(const RoiCall& s) {
  const std::string lead = s.R > 0 ? "(N, R, " : "(K, ";
  const std::string dims = s.layout == Layout::kNCHW ? "C, PH, PW)" : "PH, PW, C)";
  return lead + dims + " with rows " + std::to_string(s.K) + ", C " + std::to_string(s.Cout) +
         ", PH " + std::to_string(s.PH) + ", PW " + std::to_string(s.PW);
}

// Max mode needs the winners buffer shaped like the output; avg ignores it.
inline ffi::Error check_winner(const RoiCall& s, ffi::AnyBuffer::Dimensions winner,
                               ffi::AnyBuffer::Dimensions output) {
  if (s.mode == PoolMode::kAvg) return ffi::Error::Success();
  bool same = winner.size() == output.size();
  for (size_t i = 0; same && i < winner.size(); ++i) same = winner[i] == output[i];
  return same ? ffi::Error::Success()
              : shape_error("winner", "the output's shape " + dims_string(output), winner);
}

// The buffer checks of each kernel, shared by every platform. Each fills `s`.

// forward / forward_selected: (features, rois) -> out, with winners (either).
inline ffi::Error check_forward(const ffi::AnyBuffer& features, const ffi::AnyBuffer& rois,
                                ffi::AnyBuffer::Dimensions winner, const ffi::AnyBuffer& out,
                                const RoiAttrs& attrs, RoiCall* s) {
  if (auto e = make_shape(features.dimensions(), features.element_type(), rois, attrs, s);
      e.failure())
    return e;
  if (out.element_type() != features.element_type() || !output_matches(*s, out.dimensions()))
    return shape_error("output", output_expected(*s), out.dimensions());
  return check_winner(*s, winner, out.dimensions());
}

// backward_features: (cotangent, rois, winner) -> grad_features.
inline ffi::Error check_backward_features(const ffi::AnyBuffer& cotangent,
                                          const ffi::AnyBuffer& rois,
                                          const ffi::AnyBuffer& winner,
                                          const ffi::AnyBuffer& grad_features,
                                          const RoiAttrs& attrs, RoiCall* s) {
  if (auto e = make_shape(grad_features.dimensions(), grad_features.element_type(), rois, attrs,
                          s);
      e.failure())
    return e;
  if (cotangent.element_type() != grad_features.element_type() ||
      !output_matches(*s, cotangent.dimensions()))
    return shape_error("cotangent", output_expected(*s), cotangent.dimensions());
  return check_winner(*s, winner.dimensions(), cotangent.dimensions());
}

// forward_boxes / backward_boxes: (features, rois, rois-shaped `boxes_like`,
// output-shaped `out_like`, winner); `boxes_name`, `out_name` for errors.
inline ffi::Error check_boxes(const ffi::AnyBuffer& features, const ffi::AnyBuffer& rois,
                              const ffi::AnyBuffer& boxes_like, const char* boxes_name,
                              const ffi::AnyBuffer& out_like, const char* out_name,
                              const ffi::AnyBuffer& winner, const RoiAttrs& attrs, RoiCall* s) {
  if (auto e = make_shape(features.dimensions(), features.element_type(), rois, attrs, s);
      e.failure())
    return e;
  if (!has_box_derivative(s->op))
    return ffi::Error::InvalidArgument(
        "jax_roialign: this operator is piecewise constant in the boxes; no box kernel");
  if (boxes_like.element_type() != rois.element_type() ||
      boxes_like.element_count() != rois.element_count())
    return shape_error(boxes_name, "the shape of rois " + dims_string(rois.dimensions()),
                       boxes_like.dimensions());
  if (out_like.element_type() != features.element_type() ||
      !output_matches(*s, out_like.dimensions()))
    return shape_error(out_name, output_expected(*s), out_like.dimensions());
  return check_winner(*s, winner.dimensions(), out_like.dimensions());
}

// Each kernel's binding (kernel_list.h), given the platform's context:
// ffi::ThreadPool on the CPU, ffi::PlatformStream<cudaStream_t> on CUDA.
template <typename Context>
auto forward_binding() {
  return ffi::Ffi::Bind()
      .template Ctx<Context>()
      .template Arg<ffi::AnyBuffer>()   // features
      .template Arg<ffi::AnyBuffer>()   // rois, geometry dtype
      .template Ret<ffi::AnyBuffer>()   // out
      .template Ret<ffi::AnyBuffer>()   // winner (int32 shaped like out; (0,) in avg mode)
      .template Attrs<RoiAttrs>();
}

template <typename Context>
auto forward_selected_binding() {
  return ffi::Ffi::Bind()
      .template Ctx<Context>()
      .template Arg<ffi::AnyBuffer>()   // features
      .template Arg<ffi::AnyBuffer>()   // rois
      .template Arg<ffi::AnyBuffer>()   // winner to evaluate (max mode)
      .template Ret<ffi::AnyBuffer>()   // out
      .template Attrs<RoiAttrs>();
}

template <typename Context>
auto backward_features_binding() {
  return ffi::Ffi::Bind()
      .template Ctx<Context>()
      .template Arg<ffi::AnyBuffer>()   // cotangent of out
      .template Arg<ffi::AnyBuffer>()   // rois
      .template Arg<ffi::AnyBuffer>()   // winner
      .template Ret<ffi::AnyBuffer>()   // grad_features
      .template Attrs<RoiAttrs>();
}

template <typename Context>
auto forward_boxes_binding() {
  return ffi::Ffi::Bind()
      .template Ctx<Context>()
      .template Arg<ffi::AnyBuffer>()   // features
      .template Arg<ffi::AnyBuffer>()   // rois
      .template Arg<ffi::AnyBuffer>()   // rois tangent
      .template Arg<ffi::AnyBuffer>()   // winner
      .template Ret<ffi::AnyBuffer>()   // out tangent
      .template Attrs<RoiAttrs>();
}

template <typename Context>
auto backward_boxes_binding() {
  return ffi::Ffi::Bind()
      .template Ctx<Context>()
      .template Arg<ffi::AnyBuffer>()   // features
      .template Arg<ffi::AnyBuffer>()   // rois
      .template Arg<ffi::AnyBuffer>()   // cotangent of out
      .template Arg<ffi::AnyBuffer>()   // winner
      .template Ret<ffi::AnyBuffer>()   // grad_rois
      .template Attrs<RoiAttrs>();
}

}  // namespace jax_roialign
