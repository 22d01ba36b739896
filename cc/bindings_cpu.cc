// The _cpu extension module: registrations() -> {FFI target name: capsule}.
// Target names are "<kernel>" here; the Python side adds the package prefix.
#include <nanobind/nanobind.h>

#include "cpu/handlers.h"

namespace nb = nanobind;

namespace {

template <typename Fn>
nb::capsule capsule(Fn* fn) {
  return nb::capsule(reinterpret_cast<void*>(fn));
}

}  // namespace

NB_MODULE(_cpu, m) {
  m.def("registrations", []() {
    nb::dict d;
    d["roi_forward"] = capsule(jax_roialign_roi_forward_cpu);
    d["roi_forward_selected"] = capsule(jax_roialign_roi_forward_selected_cpu);
    d["roi_backward_features"] = capsule(jax_roialign_roi_backward_features_cpu);
    d["roi_forward_boxes"] = capsule(jax_roialign_roi_forward_boxes_cpu);
    d["roi_backward_boxes"] = capsule(jax_roialign_roi_backward_boxes_cpu);
    return d;
  });
}
