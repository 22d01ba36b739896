// The CUDA FFI handler symbols, jax_roialign_<kernel>_cuda for every kernel of
// kernel_list.h: the same arguments and attributes as the CPU ones.
#pragma once

#include "../kernel_list.h"
#include "xla/ffi/api/ffi.h"

#define JRA_DECLARE_CUDA(kernel) XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_##kernel##_cuda);
JRA_KERNELS(JRA_DECLARE_CUDA)
#undef JRA_DECLARE_CUDA
