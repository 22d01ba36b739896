// What the CPU FFI handlers (forward_handlers.cc, backward_features_handler.cc,
// boxes_handlers.cc) share: the dtype dispatch, how many threads a call is
// worth and how its work splits, and the rois grouped by image.
#pragma once

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

inline double serial_work() {
  static const double work = [] {
    const char* e = std::getenv("JAX_ROIALIGN_SERIAL_WORK");
    return e && *e ? std::strtod(e, nullptr) : kSerialWork;
  }();
  return work;
}

// Threads worth using for the call: the pool's, or one for small work.
inline int64_t threads_for(ffi::ThreadPool& pool, const RoiCall& s) {
  const double per_axis = s.sampling_ratio > 0 ? double(s.sampling_ratio) : 2.0;
  const double corners = separable_combination(s.op) == SampleKind::kCell ? 1.0 : 4.0;
  const double channels = channels_adjacent(s) || packing_pays(s)
                              ? std::ceil(double(s.Cout) / 16.0)
                              : double(s.Cout);
  const double work = double(s.K) * double(s.bins()) * per_axis * per_axis * corners * channels;
  return work < serial_work() ? 1 : pool_threads(pool);
}

// Tasks for a split over output channels.
inline int64_t channel_tasks(ffi::ThreadPool& pool, const RoiCall& s) {
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

}  // namespace jax_roialign::cpu
