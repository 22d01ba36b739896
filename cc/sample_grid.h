// A bin's sampling grid along one axis, as the kernels enumerate it: only the
// samples inside the window, found by bisection (a huge box costs what a box
// the size of the map costs), and at most a bounded number of them.
//
// Bound: samples one cell apart or more can put at most 2 * (extent + 3) of
// themselves in a window of extent cells, and a fixed grid has at most
// `sampling_ratio` per bin. More in-window samples than the bound happen only
// when the geometry dtype can no longer separate the sample positions (a box
// over ~1e8 cells in float32, ~1e15 in float64), so that runs of consecutive
// samples share one position. Such an axis is enumerated as `bound` chunks of
// consecutive samples, each read at its first sample and standing for all of
// its samples (its multiplicity): cost and memory stay bounded by the map,
// and the value is the formula's wherever the chunks follow the runs
// (docs/semantics.md, "Unresolvable sample grids").
#pragma once

#include <cstdint>

#include "numeric.h"

namespace jax_roialign {

// Largest grid size we represent; beyond it a grid would never be iterated
// anyway (only in-window samples are), this only keeps int64 from overflowing.
constexpr double kMaxGrid = 4.0e18;

template <typename G>
JRA_HD bool is_finite(G v) {
  return v - v == G(0);  // false for NaN and +-inf, without <cmath> on the device
}

// The in-window samples [lo, lo + n) of one axis of a bin, enumerated as
// `count` entries: each sample (count == n), or chunks (count < n).
struct GridAxis {
  int64_t lo = 0, n = 0, count = 0;

  // Grid index of entry j (a chunk's first sample).
  JRA_HD int64_t index(int64_t j) const { return lo + chunk_begin(j); }
  // Samples entry j stands for.
  JRA_HD int64_t multiplicity(int64_t j) const { return chunk_begin(j + 1) - chunk_begin(j); }
  JRA_HD bool chunked() const { return count < n; }

  // Chunk j starts at j * q + min(j, r) with n = count * q + r: no overflow.
  JRA_HD int64_t chunk_begin(int64_t j) const {
    if (count == n) return j;
    const int64_t q = n / count, r = n % count;
    return j * q + (j < r ? j : r);
  }

  // Bounds the enumeration at `bound` entries.
  JRA_HD void limit(int64_t bound) {
    count = n < bound ? n : (bound > 0 ? bound : 1);
    if (n == 0) count = 0;
  }
};

// The contiguous range of sample indices in [0, grid) inside a window, for
// positions monotone in the index: `entered(i)` says sample i has crossed the
// window's entry edge, `left(i)` that it has crossed the exit edge (both
// monotone in i), `inside(i)` the exact test (which also rejects NaN): the
// hull of the samples inside. O(log grid).
template <typename Entered, typename Left, typename Inside>
JRA_HD GridAxis in_window_range(int64_t grid, Entered entered, Left left, Inside inside) {
  GridAxis a;
  if (grid <= 0) return a;
  if (grid <= 4) {  // a few samples: testing each costs less than bisecting
    int64_t l = 0, h = grid;
    while (l < h && !inside(l)) ++l;
    while (h > l && !inside(h - 1)) --h;
    a.lo = l;
    a.n = a.count = h - l;
    return a;
  }
  int64_t b = 0, e = grid;  // first i with entered(i)
  while (b < e) {
    const int64_t m = b + (e - b) / 2;
    if (entered(m)) e = m; else b = m + 1;
  }
  const int64_t first = b;
  b = first; e = grid;      // first i >= first with left(i)
  while (b < e) {
    const int64_t m = b + (e - b) / 2;
    if (left(m)) e = m; else b = m + 1;
  }
  int64_t l = first, h = b;
  while (l < h && !inside(l)) ++l;
  while (h > l && !inside(h - 1)) --h;
  a.lo = l;
  a.n = h - l;
  a.count = a.n;
  return a;
}

// Samples that may sit inside a window of `extent` cells, per bin and axis,
// for a grid of `grid` samples per bin: more only when positions collide.
JRA_HD int64_t sample_bound(int64_t sampling_ratio, int64_t extent) {
  return sampling_ratio > 0 ? sampling_ratio : 2 * (extent + 3);
}

// Max mode: samples outside the window are implicit zeros that can win, and
// ties go to the first sample in row-major grid order. With the in-window
// samples the rectangle rows [ylo, yhi) x cols [xlo, xhi) of a gh x gw grid,
// the first outside sample precedes every in-window sample of enumerated row
// `row` >= the returned row: kAfterAll when it comes after all of them, kNever
// when there is no outside sample. Comparing rows only, no grid ordinal (which
// could overflow) is formed.
constexpr int64_t kNever = INT64_MAX;
constexpr int64_t kAfterAll = INT64_MAX - 1;

JRA_HD int64_t outside_precedes_from(int64_t gh, int64_t gw, int64_t ylo, int64_t yhi, int64_t xlo,
                                     int64_t xhi) {
  if (gh <= 0 || gw <= 0) return kNever;
  if (ylo >= yhi || xlo >= xhi) return 0;   // every sample outside
  if (ylo > 0 || xlo > 0) return 0;         // (0, 0) is outside
  if (xhi < gw) return 1;                   // (0, xhi): after the first row's samples
  return yhi < gh ? kAfterAll : kNever;     // (yhi, 0), after every in-window sample
}

}  // namespace jax_roialign
