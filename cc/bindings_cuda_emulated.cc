// The test-only _cuda_emulated module (CMake option JAX_ROIALIGN_CUDA_EMULATION):
// the CUDA handlers and kernels of cc/cuda/ built as host C++ against the
// emulator (cc/cuda/emulator/). Python registers its kernels for the CPU
// platform as "jax_roialign_emulated_<kernel>" (jax_roialign/_src/lowering.py).
// Besides bindings.h's functions:
//   launches()                  kernels launched so far: the tests check that
//                               the emulated kernels ran
//   shared_memory_limit(bytes)  the dynamic shared memory a launch may ask for
//                               from now on (a GPU's: 48 KiB without opt-in);
//                               returns the previous limit
#include <cstddef>
#include <cstdint>

#include "bindings.h"
#include "cuda/handlers.h"
#include "cuda/emulator/cuda_runtime.h"  // last: its macros are CUDA's keywords

NB_MODULE(_cuda_emulated, m) {
  JRA_BINDINGS_BODY(m, JRA_KERNEL_CAPSULE_CUDA)
  m.def("launches", []() { return uint64_t(jra_emu::launches.load()); });
  m.def("shared_memory_limit",
        [](size_t bytes) { return size_t(jra_emu::shared_limit.exchange(bytes)); });
}
