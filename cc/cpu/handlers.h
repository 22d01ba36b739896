// The CPU FFI handler symbols, one per kernel (see roi_kernels.h); the `op`
// attribute selects the operator.
#pragma once

#include "xla/ffi/api/ffi.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_forward_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_forward_selected_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_backward_features_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_forward_boxes_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_backward_boxes_cpu);
