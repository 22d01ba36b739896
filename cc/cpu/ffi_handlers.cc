// The CPU FFI handlers of every operator (the `op` attribute picks its plan):
// check the buffers, dispatch once on the features dtype, split the work over
// XLA's intra-op pool.
#include <array>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "../ffi_contract.h"
#include "handlers.h"
#include "kernels.h"
#include "parallel.h"

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

// The levels' data pointers, as T.
template <typename T>
std::array<T*, kMaxLevels> level_pointers(const LevelBuffers& b) {
  std::array<T*, kMaxLevels> p{};
  for (int64_t l = 0; l < b.count; ++l) p[l] = b.typed<T>(l);
  return p;
}

template <typename G>
const G* geometry(const ffi::AnyBuffer& rois) {
  return rois.reinterpret_data<G>();
}

const int32_t* level_indices(const ffi::AnyBuffer& levels) {
  return levels.reinterpret_data<int32_t>();
}

const int32_t* winners(const RoiCall& s, const ffi::AnyBuffer& winner) {
  return s.mode == PoolMode::kMax ? winner.reinterpret_data<int32_t>() : nullptr;
}

ffi::Future Forward(ffi::ThreadPool pool, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                    ffi::RemainingArgs features, ffi::Result<ffi::AnyBuffer> out,
                    ffi::Result<ffi::AnyBuffer> winner, RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_forward(rois, levels, features, *winner, *out, attrs, &c); e.failure())
    return ready_future(e);
  return dispatch_cpu(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const auto f = level_pointers<const T>(c.features);
    const G* r = geometry<G>(rois);
    const int32_t* lv = level_indices(levels);
    T* o = out->reinterpret_data<T>();
    int32_t* w = c.s.mode == PoolMode::kMax ? winner->reinterpret_data<int32_t>() : nullptr;
    const RoiCall s = c.s;
    return split_rows_channels(pool, s, [=](int64_t k0, int64_t k1, int64_t c0, int64_t c1) {
      Kernels<T>::forward(s, f.data(), r, lv, o, w, nullptr, false, k0, k1, c0, c1);
    });
  });
}

ffi::Future ForwardSelected(ffi::ThreadPool pool, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                            ffi::AnyBuffer winner, ffi::RemainingArgs features,
                            ffi::Result<ffi::AnyBuffer> out, RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_forward(rois, levels, features, winner, *out, attrs, &c); e.failure())
    return ready_future(e);
  return dispatch_cpu(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    const auto f = level_pointers<const T>(c.features);
    const G* r = geometry<G>(rois);
    const int32_t* lv = level_indices(levels);
    T* o = out->reinterpret_data<T>();
    const int32_t* w = winners(c.s, winner);
    const RoiCall s = c.s;
    return split_rows_channels(pool, s, [=](int64_t k0, int64_t k1, int64_t c0, int64_t c1) {
      Kernels<T>::forward(s, f.data(), r, lv, o, nullptr, w, true, k0, k1, c0, c1);
    });
  });
}

ffi::Future BackwardFeatures(ffi::ThreadPool pool, ffi::AnyBuffer cotangent, ffi::AnyBuffer rois,
                             ffi::AnyBuffer levels, ffi::AnyBuffer winner,
                             ffi::RemainingRets grad_features, RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_backward_features(cotangent, rois, levels, winner, grad_features, attrs, &c);
      e.failure())
    return ready_future(e);
  return dispatch_cpu(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    using G = typename Types<T>::Geometry;
    using A = typename Types<T>::Accum;
    const T* ct = cotangent.reinterpret_data<T>();
    const G* r = geometry<G>(rois);
    const int32_t* lv = level_indices(levels);
    const int32_t* w = winners(c.s, winner);
    const RoiCall s = c.s;
    const auto grad = level_pointers<T>(c.features);
    // The outputs arrive uninitialised. 16-bit types accumulate in float32
    // copies, rounded once at the end.
    std::shared_ptr<std::vector<A>> scratch;
    std::array<A*, kMaxLevels> acc{};
    if constexpr (std::is_same_v<T, A>) {
      acc = grad;
    } else {
      int64_t total = 0;
      for (int64_t l = 0; l < s.L; ++l) total += s.level_size(l);
      scratch = std::make_shared<std::vector<A>>(total);
      for (int64_t l = 0, at = 0; l < s.L; at += s.level_size(l), ++l) acc[l] = scratch->data() + at;
    }
    // Each task owns a block of output channels, hence of the input channels
    // they read, on every level: no two tasks touch the same element, and
    // each element sums its terms in roi order.
    const int64_t per_output = s.C / s.Cout;  // input channels per output channel
    return parallel_for(pool, s.Cout, pool_threads(pool), [=](int64_t c0, int64_t c1) {
      for (int64_t l = 0; l < s.L; ++l) {
        const int64_t hw = s.level[l].H * s.level[l].W;
        for (int64_t img = 0; img < s.N; ++img)
          for (int64_t ch = c0 * per_output; ch < c1 * per_output; ++ch)
            for (int64_t p = 0; p < hw; ++p) acc[l][s.feature_offset(l, img, ch, p)] = A(0);
      }
      Kernels<T>::backward_features(s, ct, r, lv, w, acc.data(), c0, c1);
      if constexpr (!std::is_same_v<T, A>) {
        for (int64_t l = 0; l < s.L; ++l) {
          const int64_t hw = s.level[l].H * s.level[l].W;
          for (int64_t img = 0; img < s.N; ++img)
            for (int64_t ch = c0 * per_output; ch < c1 * per_output; ++ch)
              for (int64_t p = 0; p < hw; ++p) {
                const int64_t i = s.feature_offset(l, img, ch, p);
                grad[l][i] = store<T>(acc[l][i]);
              }
        }
      }
      (void)scratch;  // keeps the float32 copies alive until the last task ends
    });
  });
}

ffi::Future ForwardBoxes(ffi::ThreadPool pool, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                         ffi::AnyBuffer rois_dot, ffi::AnyBuffer winner,
                         ffi::RemainingArgs features, ffi::Result<ffi::AnyBuffer> out_dot,
                         RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_boxes(rois, levels, features, winner, rois_dot, "rois_dot", *out_dot,
                           "out_dot", attrs, &c);
      e.failure())
    return ready_future(e);
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
    return split_rows_channels(pool, s, [=](int64_t k0, int64_t k1, int64_t c0, int64_t c1) {
      Kernels<T>::forward_boxes(s, f.data(), r, lv, rd, w, o, k0, k1, c0, c1);
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
    return parallel_for(pool, s.K, pool_threads(pool), [=](int64_t k0, int64_t k1) {
      Kernels<T>::backward_boxes(s, f.data(), r, lv, ct, w, g, k0, k1);
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
