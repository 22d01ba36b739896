// The CUDA FFI handlers of every operator (the `op` attribute picks it): check
// the buffers (ffi_contract.h, shared with the CPU handlers), dispatch once on
// the features dtype, enqueue the kernels on XLA's stream (launch.h). They
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
ffi::Error check_planes(const RoiCall& s) {
  for (int64_t l = 0; l < s.L; ++l)
    if (s.level[l].H > 0 && s.level[l].W > INT32_MAX / s.level[l].H)
      return invalid("the CUDA kernels need H * W < 2^31 per feature plane, got H = " +
                     std::to_string(s.level[l].H) + ", W = " + std::to_string(s.level[l].W) +
                     " on level " + std::to_string(l));
  return ffi::Error::Success();
}

template <typename T>
Levels<T> level_pointers(const LevelBuffers& b) {
  Levels<T> p{};
  for (int64_t l = 0; l < b.count; ++l) p.data[l] = b.typed<T>(l);
  return p;
}

ffi::Error Forward(cudaStream_t stream, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                   ffi::RemainingArgs features, ffi::Result<ffi::AnyBuffer> out,
                   ffi::Result<ffi::AnyBuffer> winner, RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_forward(rois, levels, features, *winner, *out, attrs, true, &c); e.failure())
    return e;
  if (auto e = check_planes(c.s); e.failure()) return e;
  return dispatch_cuda(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    int32_t* w = recorded_winners(c.s, *winner);
    return launch_error(Launch<T>::forward(c.s, level_pointers<const T>(c.features),
                                           geometry<G>(rois), level_indices(levels),
                                           out->reinterpret_data<T>(), w, stream),
                        "forward");
  });
}

ffi::Error ForwardSelected(cudaStream_t stream, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                           ffi::AnyBuffer winner, ffi::RemainingArgs features,
                           ffi::Result<ffi::AnyBuffer> out, RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_forward(rois, levels, features, winner, *out, attrs, false, &c); e.failure())
    return e;
  if (auto e = check_planes(c.s); e.failure()) return e;
  return dispatch_cuda(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    return launch_error(
        Launch<T>::forward_selected(c.s, level_pointers<const T>(c.features), geometry<G>(rois),
                                    level_indices(levels), winners(c.s, winner),
                                    out->reinterpret_data<T>(), stream),
        "forward_selected");
  });
}

ffi::Error BackwardFeatures(cudaStream_t stream, ffi::AnyBuffer cotangent, ffi::AnyBuffer rois,
                            ffi::AnyBuffer levels, ffi::AnyBuffer winner,
                            ffi::RemainingRets grad_features, RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_backward_features(cotangent, rois, levels, winner, grad_features, attrs, &c);
      e.failure())
    return e;
  if (auto e = check_planes(c.s); e.failure()) return e;
  return dispatch_cuda(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    return launch_error(
        Launch<T>::backward_features(c.s, cotangent.reinterpret_data<T>(), geometry<G>(rois),
                                     level_indices(levels), winners(c.s, winner),
                                     level_pointers<T>(c.features), attrs.deterministic != 0,
                                     stream),
        "backward_features");
  });
}

ffi::Error ForwardBoxes(cudaStream_t stream, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                        ffi::AnyBuffer rois_dot, ffi::AnyBuffer winner,
                        ffi::RemainingArgs features, ffi::Result<ffi::AnyBuffer> out_dot,
                        RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_boxes(rois, levels, features, winner, rois_dot, "rois_dot", *out_dot,
                           "out_dot", attrs, &c);
      e.failure())
    return e;
  if (auto e = check_planes(c.s); e.failure()) return e;
  return dispatch_cuda(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    return launch_error(
        Launch<T>::forward_boxes(c.s, level_pointers<const T>(c.features), geometry<G>(rois),
                                 level_indices(levels), geometry<G>(rois_dot),
                                 winners(c.s, winner), out_dot->reinterpret_data<T>(), stream),
        "forward_boxes");
  });
}

ffi::Error BackwardBoxes(cudaStream_t stream, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                         ffi::AnyBuffer cotangent, ffi::AnyBuffer winner,
                         ffi::RemainingArgs features, ffi::Result<ffi::AnyBuffer> grad_rois,
                         RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_boxes(rois, levels, features, winner, *grad_rois, "grad_rois", cotangent,
                           "cotangent", attrs, &c);
      e.failure())
    return e;
  if (auto e = check_planes(c.s); e.failure()) return e;
  return dispatch_cuda(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    return launch_error(
        Launch<T>::backward_boxes(c.s, level_pointers<const T>(c.features), geometry<G>(rois),
                                  level_indices(levels), cotangent.reinterpret_data<T>(),
                                  winners(c.s, winner), grad_rois->reinterpret_data<G>(),
                                  stream),
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
