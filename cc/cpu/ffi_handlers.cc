// The CPU FFI handlers of every operator (the `op` attribute picks its plan):
// check the buffers, dispatch once on the features dtype, split the work over
// XLA's intra-op pool.
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../ffi_contract.h"
#include "handlers.h"
#include "parallel.h"
#include "kernels.h"

namespace jax_roialign::cpu {
namespace {

// dispatch_float, with errors as ready futures.
template <typename Fn>
ffi::Future dispatch_cpu(ffi::DataType dtype, Fn&& fn) {
  return dispatch_float(dtype, fn, [](ffi::Error e) { return ready_future(std::move(e)); });
}

// Splits rows x channels into about `threads` tasks: rows when there are
// enough of them, else channels.
template <typename Body>
ffi::Future split_rows_channels(ffi::ThreadPool& pool, const RoiCall& s, Body body) {
  const int64_t threads = pool_threads(pool);
  if (s.K >= threads || s.Cout == 1)
    return parallel_for(pool, s.K, threads,
                        [s, body](int64_t k0, int64_t k1) { body(k0, k1, int64_t{0}, s.Cout); });
  return parallel_for(pool, s.Cout, threads,
                      [s, body](int64_t c0, int64_t c1) { body(int64_t{0}, s.K, c0, c1); });
}

ffi::Future Forward(ffi::ThreadPool pool, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                    ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> winner,
                    RoiAttrs attrs) {
  RoiCall s;
  if (auto e = check_forward(features, rois, winner->dimensions(), *out, attrs, &s); e.failure())
    return ready_future(e);
  return dispatch_cpu(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const T* f = features.reinterpret_data<T>();
    const G* r = rois.reinterpret_data<G>();
    T* o = out->reinterpret_data<T>();
    int32_t* w = s.mode == PoolMode::kMax ? winner->reinterpret_data<int32_t>() : nullptr;
    return split_rows_channels(pool, s, [=](int64_t k0, int64_t k1, int64_t c0, int64_t c1) {
      Kernels<T>::forward(s, f, r, o, w, nullptr, k0, k1, c0, c1);
    });
  });
}

ffi::Future ForwardSelected(ffi::ThreadPool pool, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                            ffi::AnyBuffer winner, ffi::Result<ffi::AnyBuffer> out,
                            RoiAttrs attrs) {
  RoiCall s;
  if (auto e = check_forward(features, rois, winner.dimensions(), *out, attrs, &s); e.failure())
    return ready_future(e);
  return dispatch_cpu(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const T* f = features.reinterpret_data<T>();
    const G* r = rois.reinterpret_data<G>();
    T* o = out->reinterpret_data<T>();
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    return split_rows_channels(pool, s, [=](int64_t k0, int64_t k1, int64_t c0, int64_t c1) {
      Kernels<T>::forward(s, f, r, o, nullptr, w, k0, k1, c0, c1);
    });
  });
}

ffi::Future BackwardFeatures(ffi::ThreadPool pool, ffi::AnyBuffer cotangent, ffi::AnyBuffer rois,
                             ffi::AnyBuffer winner, ffi::Result<ffi::AnyBuffer> grad_features,
                             RoiAttrs attrs) {
  RoiCall s;
  if (auto e = check_backward_features(cotangent, rois, winner, *grad_features, attrs, &s);
      e.failure())
    return ready_future(e);
  return dispatch_cpu(grad_features->element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    using A = typename Types<T>::Accum;
    const T* ct = cotangent.reinterpret_data<T>();
    const G* r = rois.reinterpret_data<G>();
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    T* grad = grad_features->reinterpret_data<T>();
    const int64_t n = s.N * s.C * s.H * s.W;
    // The output arrives uninitialised. 16-bit types accumulate in a float32
    // copy, rounded once at the end.
    std::shared_ptr<std::vector<A>> scratch;
    A* acc;
    if constexpr (std::is_same_v<T, A>) {
      acc = grad;
    } else {
      scratch = std::make_shared<std::vector<A>>(n);
      acc = scratch->data();
    }
    // Each task owns a block of output channels, hence of the input channels
    // they read, of every image: no two tasks touch the same element, and each
    // element sums its terms in roi order.
    const int64_t per_output = s.C / s.Cout;  // input channels per output channel
    return parallel_for(pool, s.Cout, pool_threads(pool), [=](int64_t c0, int64_t c1) {
      for (int64_t img = 0; img < s.N; ++img)
        for (int64_t c = c0 * per_output; c < c1 * per_output; ++c)
          for (int64_t p = 0; p < s.H * s.W; ++p) acc[s.feature_offset(img, c, p)] = A(0);
      Kernels<T>::backward_features(s, ct, r, w, acc, c0, c1);
      if constexpr (!std::is_same_v<T, A>) {
        for (int64_t img = 0; img < s.N; ++img)
          for (int64_t c = c0 * per_output; c < c1 * per_output; ++c)
            for (int64_t p = 0; p < s.H * s.W; ++p) {
              const int64_t i = s.feature_offset(img, c, p);
              grad[i] = store<T>(acc[i]);
            }
      }
      (void)scratch;  // keeps the float32 copy alive until the last task ends
    });
  });
}

ffi::Future ForwardBoxes(ffi::ThreadPool pool, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                         ffi::AnyBuffer rois_dot, ffi::AnyBuffer winner,
                         ffi::Result<ffi::AnyBuffer> out_dot, RoiAttrs attrs) {
  RoiCall s;
  if (auto e = check_boxes(features, rois, rois_dot, "rois_dot", *out_dot, "out_dot", winner,
                           attrs, &s);
      e.failure())
    return ready_future(e);
  return dispatch_cpu(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const T* f = features.reinterpret_data<T>();
    const G* r = rois.reinterpret_data<G>();
    const G* rd = rois_dot.reinterpret_data<G>();
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    T* o = out_dot->reinterpret_data<T>();
    return split_rows_channels(pool, s, [=](int64_t k0, int64_t k1, int64_t c0, int64_t c1) {
      Kernels<T>::forward_boxes(s, f, r, rd, w, o, k0, k1, c0, c1);
    });
  });
}

ffi::Future BackwardBoxes(ffi::ThreadPool pool, ffi::AnyBuffer features, ffi::AnyBuffer rois,
                          ffi::AnyBuffer cotangent, ffi::AnyBuffer winner,
                          ffi::Result<ffi::AnyBuffer> grad_rois, RoiAttrs attrs) {
  RoiCall s;
  if (auto e = check_boxes(features, rois, *grad_rois, "grad_rois", cotangent, "cotangent",
                           winner, attrs, &s);
      e.failure())
    return ready_future(e);
  return dispatch_cpu(features.element_type(), [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const T* f = features.reinterpret_data<T>();
    const G* r = rois.reinterpret_data<G>();
    const T* ct = cotangent.reinterpret_data<T>();
    const int32_t* w = s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
    G* g = grad_rois->reinterpret_data<G>();
    // Each task owns whole rows of grad_rois.
    return parallel_for(pool, s.K, pool_threads(pool), [=](int64_t k0, int64_t k1) {
      Kernels<T>::backward_boxes(s, f, r, ct, w, g, k0, k1);
    });
  });
}

}  // namespace
}  // namespace jax_roialign::cpu

namespace ffi = xla::ffi;

XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_forward_cpu, jax_roialign::cpu::Forward,
                              jax_roialign::forward_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_forward_selected_cpu, jax_roialign::cpu::ForwardSelected,
                              jax_roialign::forward_selected_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_backward_features_cpu, jax_roialign::cpu::BackwardFeatures,
                              jax_roialign::backward_features_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_forward_boxes_cpu, jax_roialign::cpu::ForwardBoxes,
                              jax_roialign::forward_boxes_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_backward_boxes_cpu, jax_roialign::cpu::BackwardBoxes,
                              jax_roialign::backward_boxes_binding<ffi::ThreadPool>());
