// The channel-independent part of an operator for one roi on the CPU: every
// sample of every bin that reads the map (bin_sampler.h), its taps (and, for
// the box derivatives, its slopes), the bin's divisor and max-mode tie
// information, computed once and reused across all channels.
#pragma once

#include <cstdint>
#include <vector>

#include "../bin_sampler.h"

namespace jax_roialign::cpu {

struct PlanBin {
  int64_t begin, end;    // [begin, end) in RoiPlan::samples
  double divisor;        // avg: the sum is divided by this (1 for max)
  int64_t cols;          // enumerated samples per row (max ties: row = index / cols)
  int64_t outside_from;  // max: first row an implicit-0 sample precedes (sample_grid.h)
  bool enumerated;       // the sampler enumerated a sample (else the forward fills the bin)

  // Max mode: whether the bin's implicit 0 precedes its sample `index`.
  bool outside_precedes(int64_t index) const {
    return outside_from != kNever && index / cols >= outside_from;
  }
};

template <typename G>
class RoiPlan {
 public:
  int64_t image = -1;                  // -1: invalid roi (zeros, no gradient)
  int64_t level = 0;
  std::vector<PlanBin> bins;           // PH * PW, row-major
  std::vector<Sample<G>> samples;      // samples that read the map, bin by bin
  std::vector<SampleSlopes<G>> slopes; // parallel to samples, when asked for

  bool valid() const { return image >= 0; }

  void build(const RoiCall& s, const G* rois, const int32_t* levels, int64_t k,
             bool with_slopes) {
    bins.clear();
    samples.clear();
    slopes.clear();
    image = -1;
    level = roi_level(s, levels, k);
    if (level < 0 || roi_image(s, rois, k) < 0) return;
    bins.resize(s.bins());
    for (int64_t bin = 0; bin < s.bins(); ++bin) {
      const BinSampler<G> sampler = bin_sampler(s, rois, levels, k, bin);
      if (sampler.image < 0) {  // bad coordinates: the whole roi is invalid
        bins.clear();
        samples.clear();
        slopes.clear();
        return;
      }
      PlanBin& b = bins[bin];
      b.begin = int64_t(samples.size());
      b.divisor = sampler.divisor;
      b.cols = sampler.gx.count > 0 ? sampler.gx.count : 1;
      b.outside_from = sampler.outside_from;
      b.enumerated = sampler.count() > 0;
      // Avg mode drops empty samples (they add nothing); max mode keeps them, as a
      // winner is an index among the bin's enumerated samples.
      const bool keep_empty = s.mode == PoolMode::kMax;
      for (int64_t i = 0; i < sampler.count(); ++i) {
        SampleSlopes<G> d;
        const Sample<G> sample = sampler.sample(i, with_slopes ? &d : nullptr);
        if (sample.kind == SampleKind::kEmpty && !keep_empty) continue;
        samples.push_back(sample);
        if (with_slopes) slopes.push_back(d);
      }
      b.end = int64_t(samples.size());
    }
    image = roi_image(s, rois, k);
  }
};

}  // namespace jax_roialign::cpu
