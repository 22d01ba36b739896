// The five FFI kernels that serve every operator, listed once (the `op`
// attribute selects the operator). Each platform defines the handler symbol
// jax_roialign_<kernel>_<platform> for each; the Python primitive of the same
// name lowers to it (jax_roialign/_src/primitives.py).
//
//   forward            (features, rois) -> (out, winner)
//   forward_selected   (features, rois, winner) -> out: max mode at fixed winners
//   backward_features  (cotangent, rois, winner) -> grad_features: forward_selected^T
//   forward_boxes      (features, rois, rois_dot, winner) -> out_dot: d out/d boxes . rois_dot
//   backward_boxes     (features, rois, cotangent, winner) -> grad_rois: forward_boxes^T
#pragma once

#define JRA_KERNELS(X) \
  X(forward)           \
  X(forward_selected)  \
  X(backward_features) \
  X(forward_boxes)     \
  X(backward_boxes)
