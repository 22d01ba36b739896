// The _cuda extension module: registrations() -> {FFI target name: capsule},
// the same kernel names as _cpu; the Python side adds the package prefix and
// registers them for platform "CUDA".
#include <nanobind/nanobind.h>

#include "cuda/handlers.h"

namespace nb = nanobind;

namespace {

template <typename Fn>
nb::capsule capsule(Fn* fn) {
  return nb::capsule(reinterpret_cast<void*>(fn));
}

}  // namespace

NB_MODULE(_cuda, m) {
  m.def("registrations", []() {
    nb::dict d;
    d["roi_forward"] = capsule(jax_roialign_roi_forward_cuda);
    d["roi_forward_selected"] = capsule(jax_roialign_roi_forward_selected_cuda);
    d["roi_backward_features"] = capsule(jax_roialign_roi_backward_features_cuda);
    d["roi_forward_boxes"] = capsule(jax_roialign_roi_forward_boxes_cuda);
    d["roi_backward_boxes"] = capsule(jax_roialign_roi_backward_boxes_cuda);
    return d;
  });
}
