// The CPU FFI handler of the feature gradient, backward_features (the `op`
// attribute picks the operator's plan).
#include "handler_common.h"

namespace jax_roialign::cpu {
namespace {

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

// Zeroes the input channels of bins [b0, b1) of a position-sensitive
// operator (input channel c * bins + bin of every output channel c), in every
// image and level of `grad`, as XLA lays it out.
template <typename A>
void zero_bins(const RoiCall& s, A* const* grad, int64_t b0, int64_t b1) {
  for (int64_t l = 0; l < s.L; ++l) {
    const int64_t hw = s.level[l].H * s.level[l].W;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t c = 0; c < s.Cout; ++c) {
        const int64_t ic = s.input_channel(c, b0);
        if (s.layout == Layout::kNCHW) {
          std::fill_n(grad[l] + s.feature_offset(l, n, ic, 0), (b1 - b0) * hw, A{});
          continue;
        }
        for (int64_t p = 0; p < hw; ++p)
          std::fill_n(grad[l] + s.feature_offset(l, n, ic, p), b1 - b0, A{});
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
    // Each task owns whole images (image_split), a block of bins (a
    // position-sensitive operator's, in place) or a block of output channels,
    // hence of the input channels they read, on every level: no two tasks
    // touch the same element, and each element sums its terms in roi order. The outputs arrive uninitialised; a task accumulates in them
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
            I::Kernels::template backward_features<true>(s, ct, r, lv, w, view, c0, c1, list, 0,
                                                         s.bins());
          else
            I::Kernels::template backward_features<false>(s, ct, r, lv, w, view, c0, c1, list, 0,
                                                          s.bins());
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
      // A position-sensitive operator's bins read input channels of their
      // own: tasks that own bins own their input channels, with every output
      // channel's work split evenly, where a split over its few output
      // channels would not be (the C4 head's 5: 2 and 3).
      if (in_place && position_sensitive(s.op))
        return parallel_for(pool, s.bins(), threads_for(pool, s), [=](int64_t b0, int64_t b1) {
          if constexpr (std::is_same_v<T, A>) {
            zero_bins(s, grad.data(), b0, b1);
            I::Kernels::template backward_features<false>(s, ct, r, lv, w,
                                                          I::direct(s, grad.data()), 0, s.Cout,
                                                          order->images(0, s.N), b0, b1);
          }
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
                                                       image, 0, s.bins());
          packed.store(grad.data());
        }
      });
    });
  });
}

}  // namespace
}  // namespace jax_roialign::cpu

namespace ffi = xla::ffi;

XLA_FFI_DEFINE_HANDLER_SYMBOL(jax_roialign_backward_features_cpu, jax_roialign::cpu::BackwardFeatures,
                              jax_roialign::backward_features_binding<ffi::ThreadPool>());
