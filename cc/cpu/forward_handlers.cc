// The CPU FFI handlers of the forward kernels, forward and forward_selected
// (the `op` attribute picks the operator's plan).
#include "handler_common.h"

namespace jax_roialign::cpu {
namespace {

// Rois per round of deal (rounds of 1, 2 and 4 measured within each other's spread).
constexpr int64_t kDealtRois = 4;

// A roi order dealt to tasks: task t's rois at positions [first[t], first[t + 1]).
struct DealtRois {
  std::vector<int64_t> order;
  std::vector<int64_t> first;

  // The rois of tasks [t0, t1).
  RoiList tasks(int64_t t0, int64_t t1) const {
    return {order.data() + first[t0], first[t1] - first[t0]};
  }
};

// `rois` dealt to `tasks` tasks in rounds of kDealtRois: task t takes rounds
// t, t + tasks, ..., in that order. Tasks that advance at about the same
// rate read the same part of the map at the same time and share the cache,
// where halves of the order put them in different images (or far apart in
// one), each with its own reads. Measured on the FPN level (two images of
// 55 MB; this machine's L3 is 32 MiB): the NHWC roi_pool forward 59-65 ->
// 43-47 ms, roi_align's unchanged.
DealtRois deal(const RoiOrder& rois, int64_t tasks) {
  const int64_t K = int64_t(rois.order.size());
  DealtRois d;
  d.order.reserve(K);
  for (int64_t t = 0; t < tasks; ++t) {
    d.first.push_back(int64_t(d.order.size()));
    for (int64_t j0 = t * kDealtRois; j0 < K; j0 += tasks * kDealtRois)
      d.order.insert(d.order.end(), rois.order.begin() + j0,
                     rois.order.begin() + std::min(K, j0 + kDealtRois));
  }
  d.first.push_back(K);
  return d;
}

// forward and forward_selected: with a channel-last copy per task (tasks
// split the channels), one image at a time, where it pays, else on the
// buffers as they are, the rois dealt to the tasks (deal) or, fewer rois
// than threads, the channels split; the rois in roi_order.
template <typename T>
ffi::Future run_forward(ffi::ThreadPool& pool, const CheckedCall& c, const ffi::AnyBuffer& rois,
                        const ffi::AnyBuffer& levels, T* out, int32_t* winner,
                        const int32_t* given, bool linear) {
  using G = typename Types<T>::Geometry;
  const auto f = level_pointers<const T>(c.features);
  const G* r = geometry<G>(rois);
  const int32_t* lv = level_indices(levels);
  const RoiCall s = c.s;
  const int64_t threads = threads_for(pool, s);
  const bool dealt = !packing_pays(s) && (s.K >= threads || s.Cout == 1);
  std::shared_ptr<const RoiOrder> order;
  std::shared_ptr<const DealtRois> tasks;
  try {
    order = std::make_shared<const RoiOrder>(roi_order(s, r, lv, true));
    if (dealt) tasks = std::make_shared<const DealtRois>(deal(*order, threads));
  } catch (const std::bad_alloc&) {
    return ready_future(ffi::Error(ffi::ErrorCode::kResourceExhausted,
                                   "jax_roialign: out of memory ordering the rois"));
  }
  return with_kernels<T>([&](auto isa) {
    using I = decltype(isa);
    if (packing_pays(s))
      return parallel_for(pool, s.Cout, channel_tasks(pool, s), [=](int64_t c0, int64_t c1) {
        typename I::PackedFeatures packed(s, c0, c1);
        // The invalid rois (zeros; they read nothing), then image after image.
        I::Kernels::forward(s, packed.view(), r, lv, out, winner, given, linear,
                            order->invalid(), c0, c1);
        for (int64_t n = 0; n < s.N; ++n) {
          const RoiList image = order->images(n, n + 1);
          if (image.count == 0) continue;
          packed.load(f.data(), n);
          I::Kernels::forward(s, packed.view(), r, lv, out, winner, given, linear, image, c0, c1);
        }
      });
    if (dealt)
      return parallel_for(pool, threads, threads, [=](int64_t t0, int64_t t1) {
        I::Kernels::forward(s, I::direct(s, f.data()), r, lv, out, winner, given, linear,
                            tasks->tasks(t0, t1), 0, s.Cout);
      });
    return parallel_for(pool, s.Cout, threads, [=](int64_t c0, int64_t c1) {
      I::Kernels::forward(s, I::direct(s, f.data()), r, lv, out, winner, given, linear,
                          RoiList{order->order.data(), s.K}, c0, c1);
    });
  });
}

ffi::Future Forward(ffi::ThreadPool pool, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                    ffi::RemainingArgs features, ffi::Result<ffi::AnyBuffer> out,
                    ffi::Result<ffi::AnyBuffer> winner, RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_forward(rois, levels, features, *winner, *out, attrs, true, &c); e.failure())
    return ready_future(e);
  advise_huge_pages(out->untyped_data(), out->size_bytes());
  advise_huge_pages(winner->untyped_data(), winner->size_bytes());  // if recorded: out's size
  return dispatch_cpu(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    int32_t* w = recorded_winners(c.s, *winner);
    return run_forward<T>(pool, c, rois, levels, out->reinterpret_data<T>(), w, nullptr, false);
  });
}

ffi::Future ForwardSelected(ffi::ThreadPool pool, ffi::AnyBuffer rois, ffi::AnyBuffer levels,
                            ffi::AnyBuffer winner, ffi::RemainingArgs features,
                            ffi::Result<ffi::AnyBuffer> out, RoiAttrs attrs) {
  CheckedCall c;
  if (auto e = check_forward(rois, levels, features, winner, *out, attrs, false, &c); e.failure())
    return ready_future(e);
  advise_huge_pages(out->untyped_data(), out->size_bytes());
  return dispatch_cpu(c.features.dtype[0], [&](auto tag) {
    using T = decltype(tag);
    return run_forward<T>(pool, c, rois, levels, out->reinterpret_data<T>(), nullptr,
                          winners(c.s, winner), true);
  });
}

}  // namespace
}  // namespace jax_roialign::cpu

namespace ffi = xla::ffi;

XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_forward_cpu, jax_roialign::cpu::Forward,
                              jax_roialign::forward_binding<ffi::ThreadPool>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_forward_selected_cpu, jax_roialign::cpu::ForwardSelected,
                              jax_roialign::forward_selected_binding<ffi::ThreadPool>());
