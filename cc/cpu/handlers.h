// The CPU FFI handler symbols, jax_roialign_<kernel>_cpu for every kernel of
// kernel_list.h.
#pragma once

#include "../kernel_list.h"
#include "xla/ffi/api/ffi.h"

#define JRA_DECLARE_CPU(kernel) XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_##kernel##_cpu);
JRA_KERNELS(JRA_DECLARE_CPU)
#undef JRA_DECLARE_CPU
