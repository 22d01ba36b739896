// The CUDA FFI handler symbols, one per kernel (see roi_launch.h); the `op`
// attribute selects the operator. Same names, arguments and attributes as the
// CPU symbols in cc/cpu/handlers.h, with the suffix _cuda.
#pragma once

#include "xla/ffi/api/ffi.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_forward_cuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_forward_selected_cuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_backward_features_cuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_forward_boxes_cuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_backward_boxes_cuda);
