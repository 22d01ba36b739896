// The CUDA launchers of the five RoI kernels (kernels.cu), between the FFI
// handlers (ffi_handlers.cc) and the kernels: raw device pointers, the call's shape
// and the stream; no XLA, nanobind or Python types. Each launcher enqueues
// its work on `stream` only (kernels and memsets; no allocation, no host
// synchronisation) and returns cudaGetLastError() after its launches.
//
//   forward            out = op(features); max mode also writes the winners
//   forward_selected   out = op evaluated at given winners (avg: = forward)
//   backward_features  grad_features = op^T(cotangent)
//   forward_boxes      out_dot = d op(features)/d boxes . rois_dot
//   backward_boxes     grad_rois = (d op(features)/d boxes)^T . cotangent
//
// Semantics, winner encoding and zeroing are those of the CPU kernels
// (cc/cpu/kernels.h); every output buffer may arrive uninitialised.
// Requires H * W < 2^31 (checked by the handlers).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../roi_common.h"

namespace jax_roialign::cuda {

// One data pointer per feature level.
template <typename T>
struct Levels {
  T* data[kMaxLevels];
};

template <typename T>
struct Launch {
  using G = typename Types<T>::Geometry;

  // `levels`: int32 per roi (empty for one level). `winner`: int32 shaped
  // like `out` in max mode; ignored (may be null) in avg.
  static cudaError_t forward(const RoiCall& s, Levels<const T> features, const G* rois,
                             const int32_t* levels, T* out, int32_t* winner,
                             cudaStream_t stream);
  static cudaError_t forward_selected(const RoiCall& s, Levels<const T> features,
                                      const G* rois, const int32_t* levels,
                                      const int32_t* winner, T* out, cudaStream_t stream);
  // `deterministic`: no atomics, bit-identical run to run. float16/bfloat16
  // always take that path (float32 accumulation without a scratch buffer).
  static cudaError_t backward_features(const RoiCall& s, const T* cotangent, const G* rois,
                                       const int32_t* levels, const int32_t* winner,
                                       Levels<T> grad_features, bool deterministic,
                                       cudaStream_t stream);
  static cudaError_t forward_boxes(const RoiCall& s, Levels<const T> features, const G* rois,
                                   const int32_t* levels, const G* rois_dot,
                                   const int32_t* winner, T* out_dot, cudaStream_t stream);
  // grad_rois has the rois' shape; a (K, 1 + coords) row's batch-index slot gets 0.
  static cudaError_t backward_boxes(const RoiCall& s, Levels<const T> features, const G* rois,
                                    const int32_t* levels, const T* cotangent,
                                    const int32_t* winner, G* grad_rois, cudaStream_t stream);
};

extern template struct Launch<float>;
extern template struct Launch<double>;
extern template struct Launch<Half>;
extern template struct Launch<BFloat16>;

}  // namespace jax_roialign::cuda
