// The CUDA FFI handlers of every operator (the `op` attribute picks it): check
// the buffers (ffi_contract.h, shared with the CPU handlers), dispatch once on the
// features dtype, enqueue the kernels on XLA's stream (launch.h). They
// only launch work on the given stream -- no allocation, no synchronisation --
// so they are declared compatible with command buffers (CUDA graphs).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "../ffi_contract.h"
#include "handlers.h"
#include "launch.h"

namespace jax_roialign::cuda {
namespace {

template <typename Fn>
ffi::Error dispatch_cuda(ffi::DataType dtype, Fn&& fn) {
  return dispatch_float(dtype, fn, [](ffi::Error e) { return e; });
}

ffi::Error launch_error(cudaError_t e, const char* kernel) {
  if (e == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("jax_roialign: CUDA ") + kernel + " failed: " +
                              cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

// The kernels keep a sample's corner offsets within a feature plane in int32.
ffi::Error check_plane(const RoiCall& s) {
  if (s.H > 0 && s.W > INT32_MAX / s.H)
    return ffi::Error::InvalidArgument(
        "jax_roialign: the CUDA kernels need H * W < 2^31 per feature plane, got H = " +
        std::to_string(s.H) + ", W = " + std::to_string(s.W));
  return ffi::Error::Success();
}

ffi::Error Forward(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                   ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> winner,
                   RoiAttrs attrs) {
  RoiCall s;
  if (auto e = check_forward(features, rois, winner->dimensions(), *out, attrs, &s); e.failure())
    return e;
  if (auto e = check_plane(s); e.failure()) return e;
  return dispatch_cuda(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    int32_t* w = s.mode == PoolMode::kMax ? winner->reinterpret_data<int32_t>() : nullptr;
    return launch_error(Launch<T>::forward(s, features.reinterpret_data<T>(),
                                           rois.reinterpret_data<G>(), out->reinterpret_data<T>(),
                                           w, stream),
                        "forward");
  });
}

ffi::Error ForwardSelected(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                           ffi::AnyBuffer winner, ffi::Result<ffi::AnyBuffer> out,
                           RoiAttrs attrs) {
  RoiCall s;
  if (auto e = check_forward(features, rois, winner.dimensions(), *out, attrs, &s); e.failure())
    return e;
  if (auto e = check_plane(s); e.failure()) return e;
  return dispatch_cuda(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    return launch_error(
        Launch<T>::forward_selected(s, features.reinterpret_data<T>(), rois.reinterpret_data<G>(),
                                    w, out->reinterpret_data<T>(), stream),
        "forward_selected");
  });
}

ffi::Error BackwardFeatures(cudaStream_t stream, ffi::AnyBuffer cotangent, ffi::AnyBuffer rois,
                            ffi::AnyBuffer winner, ffi::Result<ffi::AnyBuffer> grad_features,
                            RoiAttrs attrs) {
  RoiCall s;
  if (auto e = check_backward_features(cotangent, rois, winner, *grad_features, attrs, &s);
      e.failure())
    return e;
  if (auto e = check_plane(s); e.failure()) return e;
  return dispatch_cuda(grad_features->element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    return launch_error(
        Launch<T>::backward_features(s, cotangent.reinterpret_data<T>(),
                                     rois.reinterpret_data<G>(), w,
                                     grad_features->reinterpret_data<T>(),
                                     attrs.deterministic != 0, stream),
        "backward_features");
  });
}

ffi::Error ForwardBoxes(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                        ffi::AnyBuffer rois_dot, ffi::AnyBuffer winner,
                        ffi::Result<ffi::AnyBuffer> out_dot, RoiAttrs attrs) {
  RoiCall s;
  if (auto e = check_boxes(features, rois, rois_dot, "rois_dot", *out_dot, "out_dot", winner,
                           attrs, &s);
      e.failure())
    return e;
  if (auto e = check_plane(s); e.failure()) return e;
  return dispatch_cuda(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    return launch_error(
        Launch<T>::forward_boxes(s, features.reinterpret_data<T>(), rois.reinterpret_data<G>(),
                                 rois_dot.reinterpret_data<G>(), w,
                                 out_dot->reinterpret_data<T>(), stream),
        "forward_boxes");
  });
}

ffi::Error BackwardBoxes(cudaStream_t stream, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                         ffi::AnyBuffer cotangent, ffi::AnyBuffer winner,
                         ffi::Result<ffi::AnyBuffer> grad_rois, RoiAttrs attrs) {
  RoiCall s;
  if (auto e = check_boxes(features, rois, *grad_rois, "grad_rois", cotangent, "cotangent",
                           winner, attrs, &s);
      e.failure())
    return e;
  if (auto e = check_plane(s); e.failure()) return e;
  return dispatch_cuda(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    return launch_error(
        Launch<T>::backward_boxes(s, features.reinterpret_data<T>(), rois.reinterpret_data<G>(),
                                  cotangent.reinterpret_data<T>(), w,
                                  grad_rois->reinterpret_data<G>(), stream),
        "backward_boxes");
  });
}

}  // namespace
}  // namespace jax_roialign::cuda

namespace ffi = xla::ffi;

XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_forward_cuda, jax_roialign::cuda::Forward,
                              jax_roialign::forward_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_forward_selected_cuda, jax_roialign::cuda::ForwardSelected,
                              jax_roialign::forward_selected_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_backward_features_cuda, jax_roialign::cuda::BackwardFeatures,
                              jax_roialign::backward_features_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_forward_boxes_cuda, jax_roialign::cuda::ForwardBoxes,
                              jax_roialign::forward_boxes_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_backward_boxes_cuda, jax_roialign::cuda::BackwardBoxes,
                              jax_roialign::backward_boxes_binding<ffi::PlatformStream<cudaStream_t>>(),
                              {ffi::Traits::kCmdBufferCompatible});
