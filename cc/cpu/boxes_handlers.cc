// The CPU FFI handlers of the box derivatives, forward_boxes (the JVP) and
// backward_boxes (the `op` attribute picks the operator's plan).
#include "handler_common.h"

namespace jax_roialign::cpu {
namespace {

ffi::Future ForwardBoxes(ffi::ThreadPool pool, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                         ffi::AnyBuffer rois_dot, ffi::AnyBuffer winner,
                         ffi::RemainingArgs features, ffi::Result<ffi::AnyBuffer> out_dot,
                         RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_boxes(rois, levels, features, winner, rois_dot, "rois_dot", *out_dot,
                           "out_dot", attrs, &c);
      e.failure())
    return ready_future(e);
  advise_huge_pages(out_dot->untyped_data(), out_dot->size_bytes());
  return dispatch_cpu(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const auto f = level_pointers<const T>(c.features);
    const G* r = geometry<G>(rois);
    const int32_t* lv = level_indices(levels);
    const G* rd = geometry<G>(rois_dot);
    const int32_t* w = winners(c.s, winner);
    T* o = out_dot->reinterpret_data<T>();
    const RoiCall s = c.s;
    return with_kernels<T>([&](auto isa) {
      using I = decltype(isa);
      return split_rows_channels(pool, s, [=](int64_t k0, int64_t k1, int64_t c0, int64_t c1) {
        I::Kernels::forward_boxes(s, I::direct(s, f.data()), r, lv, rd, w, o, k0, k1, c0, c1);
      });
    });
  });
}

ffi::Future BackwardBoxes(ffi::ThreadPool pool, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                          ffi::AnyBuffer cotangent, ffi::AnyBuffer winner,
                          ffi::RemainingArgs features, ffi::Result<ffi::AnyBuffer> grad_rois,
                          RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_boxes(rois, levels, features, winner, *grad_rois, "grad_rois", cotangent,
                           "cotangent", attrs, &c);
      e.failure())
    return ready_future(e);
  return dispatch_cpu(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const auto f = level_pointers<const T>(c.features);
    const G* r = geometry<G>(rois);
    const int32_t* lv = level_indices(levels);
    const T* ct = cotangent.reinterpret_data<T>();
    const int32_t* w = winners(c.s, winner);
    G* g = grad_rois->reinterpret_data<G>();
    const RoiCall s = c.s;
    // Each task owns whole rows of grad_rois.
    return with_kernels<T>([&](auto isa) {
      using I = decltype(isa);
      return parallel_for(pool, s.K, threads_for(pool, s), [=](int64_t k0, int64_t k1) {
        I::Kernels::backward_boxes(s, I::direct(s, f.data()), r, lv, ct, w, g, k0, k1);
      });
    });
  });
}

}  // namespace
}  // namespace jax_roialign::cpu

namespace ffi = xla::ffi;

XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_forward_boxes_cpu, jax_roialign::cpu::ForwardBoxes,
                              jax_roialign::forward_boxes_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_backward_boxes_cpu, jax_roialign::cpu::BackwardBoxes,
                              jax_roialign::backward_boxes_binding<ffi::ThreadPool>());
