// The CPU handlers' choices of path for a call, from its shape alone
// (forward_handlers.cc, backward_features_handler.cc): whether a task copies
// its channels channel-last, where the feature gradient accumulates, whether
// max mode's gradient is summed in bands. Shared with benchmarks/cpu_kernels.cc, which times the kernels on
// the paths the handlers choose.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../bin_sampler.h"
#include "../roi_common.h"

namespace jax_roialign::cpu {

// Output channels a task should have at least: a few vectors' worth.
constexpr int64_t kTaskChannels = 16;

// Whether consecutive output channels are adjacent in the features as XLA
// lays them out (channel-last, not position-sensitive).
inline bool channels_adjacent(const RoiCall& s) {
  return s.layout == Layout::kNHWC && !position_sensitive(s.op);
}

// Whether a task's channel-last copy of its channels (kernels.h's Packed)
// pays: the channels are not adjacent as laid out, there are enough to
// vectorise over, and the samples' reads outnumber a quarter of the cells the
// copy moves (a read without the copy is one strided element per channel; a
// copied cell, channels moved in runs). Measured (benchmarks/README.md, "small
// calls"): the small head's NCHW roi_align on 16 rois, 2.6 cells per read,
// 5.5-5.7 -> 0.7-1.0 ms forward+backward copied, its roi_pool's forward
// 1.3-1.4 -> 0.4 ms; the mask head's roi_align on 4 rois, 2.2, within the
// spread either way.
constexpr double kReadsPerCell = 0.25;

inline bool packing_pays(const RoiCall& s) {
  if (channels_adjacent(s) || s.Cout < kTaskChannels / 2) return false;
  const double per_axis = s.sampling_ratio > 0 ? double(s.sampling_ratio) : 2.0;
  const double reads = double(s.K) * double(s.bins()) * per_axis * per_axis * 4.0;
  double cells = 0;
  for (int64_t l = 0; l < s.L; ++l) cells += double(s.N) * double(s.level[l].H * s.level[l].W);
  return reads >= kReadsPerCell * cells;
}

// Map rows per band of max mode's in-place channel-last gradient
// (kernels.h's backward_max_bands): about 8 MiB, a quarter of this
// machine's L3 for each of its two threads. Measured on the FPN roi_pool
// NHWC backward (2 x 200 x 272 x 256 float32, 32 rows: 8.5 MiB): 45-48 ms
// against 66-70 unbanded, 110 with 4 rows, 56-62 with 100. Images of less
// than four bands are not banded: the mask head's (1.7 bands, both
// threads' images in L3 at once) took 15% longer banded. Nor are bilinear
// samples' (four corners a winner, two rows): FPN legacy_max's backward
// took 0-10% longer banded, roi_align's (max) 5% less.
inline int64_t max_band_rows(const RoiCall& s, int64_t element_bytes) {
  constexpr int64_t kBandBytes = int64_t{8} << 20;
  return std::max<int64_t>(1, kBandBytes / (s.level[0].W * s.C * element_bytes));
}

// Whether the feature gradient accumulates in the buffers as XLA lays them
// out (`accumulator`: they hold the accumulation type) rather than in a
// task's channel-last copy, one image at a time: where the channels are
// adjacent or a copy would not pay (NCHW max mode with one-cell samples then
// reads its cotangents and winners as laid out, kernels.h's
// backward_max_planes). Measured (benchmarks/README.md, "max mode's backward
// sample by sample"): the C4 head's NCHW roi_pool backward, whose outputs
// hold 30x the gradient's elements, took 177-182 ms in the copy against
// 298-390 in place on one thread.
inline bool gradient_in_place(const RoiCall& s, bool accumulator) {
  return accumulator && (channels_adjacent(s) || !packing_pays(s));
}

// Whether max mode's in-place gradient, channel-last, of one level, with
// one-cell samples, is summed in bands of `band` rows (max_band_rows): where
// the map holds four bands or more.
inline bool max_in_bands(const RoiCall& s, int64_t band) {
  return channels_adjacent(s) && s.mode == PoolMode::kMax &&
         separable_combination(s.op) == SampleKind::kCell && s.L == 1 &&
         s.level[0].H >= 4 * band;
}

}  // namespace jax_roialign::cpu
