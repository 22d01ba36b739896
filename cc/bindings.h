// What each compiled module exports to Python (nanobind), for one platform:
//   kernels()    {kernel name: FFI handler capsule}, every kernel of kernel_list.h;
//                Python registers each as the target "jax_roialign_<kernel>"
//   operators()  {operator name: (code, position_sensitive, box_derivative, box coordinates,
//                modes)}, roi_common.h's table (modes: bits 1 << PoolMode); the `op`
//                attribute's values come from here
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/stl/tuple.h>

#include <cstdint>
#include <tuple>

#include "kernel_list.h"
#include "roi_common.h"

namespace jax_roialign {

template <typename Fn>
nanobind::capsule handler_capsule(Fn* fn) {
  return nanobind::capsule(reinterpret_cast<void*>(fn));
}

inline nanobind::dict operator_table() {
  nanobind::dict d;
#define JRA_OP_ENTRY(id, name, ps, box, coords, modes)                                 \
  d[#name] = std::make_tuple(int64_t(Op::id), bool(ps), bool(box), int64_t(coords), \
                             int64_t(modes));
  JRA_OPERATORS(JRA_OP_ENTRY)
#undef JRA_OP_ENTRY
  return d;
}

}  // namespace jax_roialign

// The module body of platform `suffix` (cpu, cuda): handler symbols are
// jax_roialign_<kernel>_<suffix>. JRA_BINDINGS_BODY defines the functions on
// module `m`, for a module that adds its own (the emulated test module).
#define JRA_KERNEL_CAPSULE_CPU(kernel) \
  d[#kernel] = ::jax_roialign::handler_capsule(jax_roialign_##kernel##_cpu);
#define JRA_KERNEL_CAPSULE_CUDA(kernel) \
  d[#kernel] = ::jax_roialign::handler_capsule(jax_roialign_##kernel##_cuda);

#define JRA_BINDINGS_BODY(m, CAPSULE)                                        \
  m.def("kernels", []() {                                                    \
    nanobind::dict d;                                                        \
    JRA_KERNELS(CAPSULE)                                                     \
    return d;                                                                \
  });                                                                        \
  m.def("operators", []() { return ::jax_roialign::operator_table(); });

#define JRA_BINDINGS(module, CAPSULE) \
  NB_MODULE(module, m) { JRA_BINDINGS_BODY(m, CAPSULE) }
