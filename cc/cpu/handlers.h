// The CPU FFI handler symbols, one per roi_align kernel (see roi_align_kernels.h).
#pragma once

#include "xla/ffi/api/ffi.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_align_forward_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_align_forward_selected_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_align_backward_features_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_align_forward_boxes_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_roi_align_backward_boxes_cpu);
