// The _cpu extension module (bindings.h), and the instruction set its kernels
// run with (cpu/instruction_sets.h).
#include <string>

#include <nanobind/stl/string.h>

#include "bindings.h"
#include "cpu/handlers.h"
#include "cpu/instruction_sets.h"

NB_MODULE(_cpu, m) {
  JRA_BINDINGS_BODY(m, JRA_KERNEL_CAPSULE_CPU)
  m.def("instruction_set", []() { return std::string(jax_roialign::cpu::instruction_set()); });
}
