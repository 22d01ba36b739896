// The CPU FFI handlers of every operator (the `op` attribute picks its plan):
// check the buffers, dispatch once on the features dtype and the instruction
// set, split the work over XLA's intra-op pool.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <utility>
#include <type_traits>
#include <vector>

#include "../ffi_contract.h"
#include "call_paths.h"
#include "handlers.h"
#include "instruction_sets.h"
#include "parallel.h"
#include "scratch.h"

namespace jax_roialign::cpu {
namespace {

// dispatch_float, with errors as ready futures.
template <typename Fn>
ffi::Future dispatch_cpu(ffi::DataType dtype, Fn&& fn) {
  return dispatch_float(dtype, fn, [](ffi::Error e) { return ready_future(std::move(e)); });
}

// Work under this many units runs on one thread (the calling one; parallel.h):
// a unit is one corner of a sample read for 16 channels (or for one, where
// the channels are not adjacent and not copied), about a nanosecond. Waking
// a second core cost 15-75 us a call on the 2-core VM of benchmarks/README.md
// ("Small calls on one thread"). JAX_ROIALIGN_SERIAL_WORK overrides it (0:
// always split, as the tests of splits do).
constexpr double kSerialWork = 16384;

double serial_work() {
  static const double work = [] {
    const char* e = std::getenv("JAX_ROIALIGN_SERIAL_WORK");
    return e && *e ? std::strtod(e, nullptr) : kSerialWork;
  }();
  return work;
}

// Threads worth using for the call: the pool's, or one for small work.
int64_t threads_for(ffi::ThreadPool& pool, const RoiCall& s) {
  const double per_axis = s.sampling_ratio > 0 ? double(s.sampling_ratio) : 2.0;
  const double corners = separable_combination(s.op) == SampleKind::kCell ? 1.0 : 4.0;
  const double channels = channels_adjacent(s) || packing_pays(s)
                              ? std::ceil(double(s.Cout) / 16.0)
                              : double(s.Cout);
  const double work = double(s.K) * double(s.bins()) * per_axis * per_axis * corners * channels;
  return work < serial_work() ? 1 : pool_threads(pool);
}

// Tasks for a split over output channels.
int64_t channel_tasks(ffi::ThreadPool& pool, const RoiCall& s) {
  return std::max<int64_t>(1, std::min(threads_for(pool, s), s.Cout / kTaskChannels));
}

// Splits rows x channels into about `threads` tasks: rows when there are
// enough of them, else channels.
template <typename Body>
ffi::Future split_rows_channels(ffi::ThreadPool& pool, const RoiCall& s, Body body) {
  const int64_t threads = threads_for(pool, s);
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

// The valid rois grouped by image: image n's at positions [begin[n],
// begin[n + 1]) of `order`, the invalid ones (which read nothing) before
// begin[0].
struct RoiOrder {
  std::vector<int64_t> order;
  std::vector<int64_t> begin;

  RoiList invalid() const { return {order.data(), begin[0]}; }
  // The rois of images [n0, n1).
  RoiList images(int64_t n0, int64_t n1) const {
    return {order.data() + begin[n0], begin[n1] - begin[n0]};
  }
};

// The rois grouped by image, each image's in increasing order (`by_row`
// false: the backward's, which sums each element's terms in roi order) or
// by level and the row of the roi's middle bin (`by_row`: the forward's, so
// that rois that read the same rows follow each other and find them in
// cache; each roi writes only its own outputs, so the order changes no
// result).
template <typename G>
RoiOrder roi_order(const RoiCall& s, const G* rois, const int32_t* levels, bool by_row) {
  int64_t rows = 1;  // keys per level
  if (by_row)
    for (int64_t l = 0; l < s.L; ++l) rows = std::max(rows, s.level[l].H + 1);
  std::vector<std::pair<int64_t, int64_t>> keyed(s.K);
  for (int64_t k = 0; k < s.K; ++k) {
    const RoiSampler<G> r = roi_sampler(s, rois, levels, k);
    int64_t key = -1;
    if (r.valid()) {
      int64_t row = 0;
      if (by_row) {
        const BinSampler<G> b = bin_of(r, s.PH / 2, s.PW / 2);
        row = b.count() > 0 ? b.sample(0, nullptr).at[0] / r.W : 0;
      }
      key = ((r.image * s.L + (by_row ? r.level : 0)) * rows + row);
    }
    keyed[k] = {key, k};
  }
  std::stable_sort(keyed.begin(), keyed.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  RoiOrder o;
  o.order.resize(s.K);
  for (int64_t j = 0; j < s.K; ++j) o.order[j] = keyed[j].second;
  o.begin.resize(s.N + 1);
  int64_t j = 0;
  while (j < s.K && keyed[j].first < 0) ++j;
  for (int64_t n = 0; n < s.N; ++n) {  // the first position of image n or later
    while (j < s.K && keyed[j].first / (s.L * rows) < n) ++j;
    o.begin[n] = j;
  }
  o.begin[s.N] = s.K;
  return o;
}

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

// Zeroes input channels [ic0, ic1) of images [n0, n1) of every level of
// `grad`, as XLA lays it out (A{}: +0, all bits clear, for every element type).
template <typename A>
void zero_channels(const RoiCall& s, A* const* grad, int64_t ic0, int64_t ic1, int64_t n0,
                   int64_t n1) {
  for (int64_t l = 0; l < s.L; ++l) {
    const int64_t hw = s.level[l].H * s.level[l].W;
    for (int64_t n = n0; n < n1; ++n) {
      if (ic0 == 0 && ic1 == s.C) {  // the image's whole block
        std::fill_n(grad[l] + s.feature_offset(l, n, 0, 0), s.C * hw, A{});
        continue;
      }
      if (s.layout == Layout::kNCHW) {
        std::fill_n(grad[l] + s.feature_offset(l, n, ic0, 0), (ic1 - ic0) * hw, A{});
        continue;
      }
      for (int64_t p = 0; p < hw; ++p)
        std::fill_n(grad[l] + s.feature_offset(l, n, ic0, p), ic1 - ic0, A{});
    }
  }
}

// Image boundaries b[0] = 0 < ... < b[tasks] = N for a feature gradient split
// over images, each range holding about its share of the valid rois; empty
// where there are fewer images than tasks or no split stays within 1.5x of
// the even share. Tasks that own whole images share no cache line; a split
// over channels makes the threads' writes meet in every pixel (NHWC), which
// measured 1.15-2x slower (FPN roi_align, crop_and_resize backward).
std::vector<int64_t> image_split(const RoiCall& s, const RoiOrder& rois, int64_t tasks) {
  if (tasks < 2 || s.N < tasks) return {};
  const int64_t total = s.K - rois.begin[0];  // valid rois
  if (total == 0) return {};
  std::vector<int64_t> bounds{0};
  int64_t seen = 0, largest = 0, start = 0;
  for (int64_t n = 0; n < s.N; ++n) {
    seen += rois.begin[n + 1] - rois.begin[n];
    const int64_t left = tasks - int64_t(bounds.size());  // cuts still to place
    // Cut after image n once the running count reaches the next task's share,
    // or where each later task needs every image left.
    const int64_t after = s.N - 1 - n;  // images after n
    if (left > 0 && (after == left ||
                     (after > left && seen * tasks >= total * int64_t(bounds.size())))) {
      bounds.push_back(n + 1);
      largest = std::max(largest, seen - start);
      start = seen;
    }
  }
  largest = std::max(largest, seen - start);
  bounds.push_back(s.N);
  if (int64_t(bounds.size()) != tasks + 1 || 2 * largest * tasks > 3 * total) return {};
  return bounds;
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
    for (int64_t l = 0; l < s.L; ++l)
      advise_huge_pages(grad[l], size_t(s.N * s.level[l].H * s.level[l].W * s.C) * sizeof(T));
    // Each task owns whole images (image_split) or a block of output
    // channels, hence of the input channels they read, on every level: no two
    // tasks touch the same element, and each element sums its terms in roi
    // order. The outputs arrive uninitialised; a task accumulates in them
    // directly where they are accumulator typed and channel-last or a copy
    // would not pay (gradient_in_place); else in a channel-last copy of its
    // channels, one image at a time, rounded into them after that image's
    // rois (always split by channels).
    const bool in_place = gradient_in_place(s, std::is_same_v<T, A>);
    const int64_t per_output = s.C / s.Cout;  // input channels per output channel
    // Each image's rois in order; in place, tasks own whole images where the
    // rois allow (image_split).
    std::shared_ptr<const RoiOrder> order;
    std::vector<int64_t> images;
    try {
      order = std::make_shared<const RoiOrder>(roi_order(s, r, lv, false));
      if (in_place) images = image_split(s, *order, threads_for(pool, s));
    } catch (const std::bad_alloc&) {
      return ready_future(ffi::Error(ffi::ErrorCode::kResourceExhausted,
                                     "jax_roialign: out of memory ordering the rois"));
    }
    return with_kernels<T>([&](auto isa) {
      using I = decltype(isa);
      // Output channels [c0, c1) of images [n0, n1), in the buffers as they are.
      auto in_buffers = [=](int64_t c0, int64_t c1, int64_t n0, int64_t n1) {
        if constexpr (std::is_same_v<T, A>) {
          zero_channels(s, grad.data(), c0 * per_output, c1 * per_output, n0, n1);
          const auto view = I::direct(s, grad.data());
          const RoiList list = order->images(n0, n1);
          if (channels_adjacent(s))
            I::Kernels::template backward_features<true>(s, ct, r, lv, w, view, c0, c1, list);
          else
            I::Kernels::template backward_features<false>(s, ct, r, lv, w, view, c0, c1, list);
        }
      };
      const int64_t band = max_band_rows(s, int64_t(sizeof(A)));
      const bool bands = in_place && max_in_bands(s, band);
      if (!images.empty())
        return parallel_for(pool, int64_t(images.size()) - 1, int64_t(images.size()) - 1,
                            [=](int64_t t0, int64_t t1) {
                              if constexpr (std::is_same_v<T, A>) {
                                if (bands) {
                                  for (int64_t n = images[t0]; n < images[t1]; ++n)
                                    I::Kernels::backward_max_bands(
                                        s, ct, r, lv, w, I::direct(s, grad.data()), n,
                                        order->images(n, n + 1), band);
                                  return;
                                }
                              }
                              in_buffers(0, s.Cout, images[t0], images[t1]);
                            });
      return parallel_for(pool, s.Cout, threads_for(pool, s), [=](int64_t c0, int64_t c1) {
        if (in_place) return in_buffers(c0, c1, 0, s.N);
        // A channel-last copy of the task's channels, one image at a time.
        typename I::PackedGradient packed(s, c0, c1);
        for (int64_t n = 0; n < s.N; ++n) {
          const RoiList image = order->images(n, n + 1);
          if (image.count == 0) {
            zero_channels(s, grad.data(), c0 * per_output, c1 * per_output, n, n + 1);
            continue;
          }
          packed.zero(n);
          I::Kernels::template backward_features<true>(s, ct, r, lv, w, packed.view(), c0, c1,
                                                       image);
          packed.store(grad.data());
        }
      });
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

const char* kernel_instruction_set() { return instruction_set(); }

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
