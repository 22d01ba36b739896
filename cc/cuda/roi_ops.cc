// The CUDA FFI handlers of every operator (the `op` attribute picks it): check
// the buffers (roi_ffi.h, shared with the CPU handlers), dispatch once on the
// features dtype, enqueue the kernels on XLA's stream (roi_launch.h). They
// only launch work on the given stream -- no allocation, no synchronisation --
// so they are declared compatible with command buffers (CUDA graphs).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "../roi_ffi.h"
#include "handlers.h"
#include "roi_launch.h"

namespace jax_roialign::cuda {
namespace {

// Calls fn(T{}) with the storage type of `dtype`.
template <typename Fn>
ffi::Error dispatch_float(ffi::DataType dtype, Fn&& fn) {
  switch (dtype) {
    case ffi::DataType::F32: return fn(float{});
    case ffi::DataType::F64: return fn(double{});
    case ffi::DataType::F16: return fn(Half{});
    case ffi::DataType::BF16: return fn(BFloat16{});
    default:
      return ffi::Error::InvalidArgument(
          "jax_roialign: features must be float16, bfloat16, float32 or float64");
  }
}

ffi::Error launch_error(cudaError_t e, const char* kernel) {
  if (e == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("jax_roialign: CUDA ") + kernel + " failed: " +
                              cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

// The kernels keep a sample's corner offsets within a feature plane in int32.
ffi::Error check_plane(const RoiShape& s) {
  if (s.H > 0 && s.W > INT32_MAX / s.H)
    return ffi::Error::InvalidArgument(
        "jax_roialign: the CUDA kernels need H * W < 2^31 per feature plane, got H = " +
        std::to_string(s.H) + ", W = " + std::to_string(s.W));
  return ffi::Error::Success();
}

ffi::Error Forward(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                   ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> winner,
                   RoiAttrs attrs) {
  RoiShape s;
  if (auto e = check_forward(features, rois, winner->dimensions(), *out, attrs, &s); e.failure())
    return e;
  if (auto e = check_plane(s); e.failure()) return e;
  return dispatch_float(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    int32_t* w = s.mode == PoolMode::kMax ? winner->reinterpret_data<int32_t>() : nullptr;
    return launch_error(Launch<T>::forward(s, features.reinterpret_data<T>(),
                                           rois.reinterpret_data<G>(), out->reinterpret_data<T>(),
                                           w, stream),
                        "roi_forward");
  });
}

ffi::Error ForwardSelected(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                           ffi::AnyBuffer winner, ffi::Result<ffi::AnyBuffer> out,
                           RoiAttrs attrs) {
  RoiShape s;
  if (auto e = check_forward(features, rois, winner.dimensions(), *out, attrs, &s); e.failure())
    return e;
  if (auto e = check_plane(s); e.failure()) return e;
  return dispatch_float(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    return launch_error(
        Launch<T>::forward_selected(s, features.reinterpret_data<T>(), rois.reinterpret_data<G>(),
                                    w, out->reinterpret_data<T>(), stream),
        "roi_forward_selected");
  });
}

ffi::Error BackwardFeatures(cudaStream_t stream, ffi::AnyBuffer cotangent, ffi::AnyBuffer rois,
                            ffi::AnyBuffer winner, ffi::Result<ffi::AnyBuffer> grad_features,
                            RoiAttrs attrs) {
  RoiShape s;
  if (auto e = check_backward_features(cotangent, rois, winner, *grad_features, attrs, &s);
      e.failure())
    return e;
  if (auto e = check_plane(s); e.failure()) return e;
  return dispatch_float(grad_features->element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    return launch_error(
        Launch<T>::backward_features(s, cotangent.reinterpret_data<T>(),
                                     rois.reinterpret_data<G>(), w,
                                     grad_features->reinterpret_data<T>(),
                                     attrs.deterministic != 0, stream),
        "roi_backward_features");
  });
}

ffi::Error ForwardBoxes(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                        ffi::AnyBuffer rois_dot, ffi::AnyBuffer winner,
                        ffi::Result<ffi::AnyBuffer> out_dot, RoiAttrs attrs) {
  RoiShape s;
  if (auto e = check_boxes(features, rois, rois_dot, "rois_dot", *out_dot, "out_dot", winner,
                           attrs, &s);
      e.failure())
    return e;
  if (auto e = check_plane(s); e.failure()) return e;
  return dispatch_float(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    return launch_error(
        Launch<T>::forward_boxes(s, features.reinterpret_data<T>(), rois.reinterpret_data<G>(),
                                 rois_dot.reinterpret_data<G>(), w,
                                 out_dot->reinterpret_data<T>(), stream),
        "roi_forward_boxes");
  });
}

ffi::Error BackwardBoxes(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                         ffi::AnyBuffer cotangent, ffi::AnyBuffer winner,
                         ffi::Result<ffi::AnyBuffer> grad_rois, RoiAttrs attrs) {
  RoiShape s;
  if (auto e = check_boxes(features, rois, *grad_rois, "grad_rois", cotangent, "cotangent",
                           winner, attrs, &s);
      e.failure())
    return e;
  if (auto e = check_plane(s); e.failure()) return e;
  return dispatch_float(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    return launch_error(
        Launch<T>::backward_boxes(s, features.reinterpret_data<T>(), rois.reinterpret_data<G>(),
                                  cotangent.reinterpret_data<T>(), w,
                                  grad_rois->reinterpret_data<G>(), stream),
        "roi_backward_boxes");
  });
}

}  // namespace
}  // namespace jax_roialign::cuda

namespace ffi = xla::ffi;
using jax_roialign::RoiAttrs;

XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_roi_forward_cuda,
                              jax_roialign::cuda::Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()   // features
                                  .Arg<ffi::AnyBuffer>()   // rois, geometry dtype
                                  .Ret<ffi::AnyBuffer>()   // out
                                  .Ret<ffi::AnyBuffer>()   // winner (int32; (0,) in avg mode)
                                  .Attrs<RoiAttrs>(),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_roi_forward_selected_cuda,
                              jax_roialign::cuda::ForwardSelected,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()   // features
                                  .Arg<ffi::AnyBuffer>()   // rois
                                  .Arg<ffi::AnyBuffer>()   // winner to evaluate (max mode)
                                  .Ret<ffi::AnyBuffer>()   // out
                                  .Attrs<RoiAttrs>(),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_roi_backward_features_cuda,
                              jax_roialign::cuda::BackwardFeatures,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()   // cotangent of out
                                  .Arg<ffi::AnyBuffer>()   // rois
                                  .Arg<ffi::AnyBuffer>()   // winner
                                  .Ret<ffi::AnyBuffer>()   // grad_features
                                  .Attrs<RoiAttrs>(),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_roi_forward_boxes_cuda,
                              jax_roialign::cuda::ForwardBoxes,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()   // features
                                  .Arg<ffi::AnyBuffer>()   // rois
                                  .Arg<ffi::AnyBuffer>()   // rois tangent
                                  .Arg<ffi::AnyBuffer>()   // winner
                                  .Ret<ffi::AnyBuffer>()   // out tangent
                                  .Attrs<RoiAttrs>(),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_roi_backward_boxes_cuda,
                              jax_roialign::cuda::BackwardBoxes,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()   // features
                                  .Arg<ffi::AnyBuffer>()   // rois
                                  .Arg<ffi::AnyBuffer>()   // cotangent of out
                                  .Arg<ffi::AnyBuffer>()   // winner
                                  .Ret<ffi::AnyBuffer>()   // grad_rois
                                  .Attrs<RoiAttrs>(),
                              {ffi::Traits::kCmdBufferCompatible});
