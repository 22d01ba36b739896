// The channel-independent part of an operator for one roi on the CPU: every
// sample of every bin that reads the map (bin_sampler.h), its taps (and, for
// the box derivatives, its slopes), the bin's divisor and max-mode tie
// information, computed once and reused across all channels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../bin_sampler.h"

namespace jax_roialign::cpu {

struct PlanBin {
  int64_t begin, end;  // [begin, end) in RoiPlan::samples
  double divisor;      // avg: the sum is divided by this (1 for max)
  int64_t outside;     // max: grid ordinal of the first sample that is an
                       // implicit 0 (outside the window), -1 if none
};

template <typename G>
class RoiPlan {
 public:
  int64_t image = -1;                  // -1: invalid roi (zeros, no gradient)
  std::vector<PlanBin> bins;           // PH * PW, row-major
  std::vector<Sample<G>> samples;      // samples that read the map, bin by bin
  std::vector<int64_t> ordinals;       // grid ordinal of each sample (max ties)
  std::vector<SampleSlopes<G>> slopes; // parallel to samples, when asked for

  bool valid() const { return image >= 0; }

  void build(const RoiCall& s, const G* rois, int64_t k, bool with_slopes) {
    bins.clear();
    samples.clear();
    ordinals.clear();
    slopes.clear();
    image = roi_image(s, rois, k);
    if (image < 0) return;
    bins.resize(s.bins());
    for (int64_t bin = 0; bin < s.bins(); ++bin) {
      const BinSampler<G> sampler = bin_sampler(s, rois, k, bin);
      PlanBin& b = bins[bin];
      b.begin = int64_t(samples.size());
      b.divisor = sampler.divisor;
      b.outside = sampler.outside;
      for (int64_t i = 0; i < sampler.count(); ++i) {
        SampleSlopes<G> d;
        samples.push_back(sampler.sample(i, with_slopes ? &d : nullptr));
        ordinals.push_back(sampler.ordinal(i));
        if (with_slopes) slopes.push_back(d);
      }
      b.end = int64_t(samples.size());
    }
  }
};

}  // namespace jax_roialign::cpu
