// The CPU FFI handler symbols, jax_roialign_<kernel>_cpu for every kernel of
// kernel_list.h, and the instruction set they run with.
#pragma once

#include "../kernel_list.h"
#include "xla/ffi/api/ffi.h"

namespace jax_roialign::cpu {
// The instruction set the CPU kernels run with (instruction_sets.h).
const char* kernel_instruction_set();
}  // namespace jax_roialign::cpu

#define JRA_DECLARE_CPU(kernel) XLA_FFI_DECLARE_HANDLER_SYMBOL(jax_roialign_##kernel##_cpu);
JRA_KERNELS(JRA_DECLARE_CPU)
#undef JRA_DECLARE_CPU
