// roi_pool and ps_roi_pool's math (docs/semantics.md; torchvision's CPU kernels):
// corners rounded half away from zero, bins with float edges floor/ceil,
// clipped to the map. roi_pool clips edges to [0, H] and takes +1 in the roi
// size; ps_roi_pool clips to [0, H-1] (so its forward never reads the last
// row or column, as torchvision's) and takes no +1.
// Bin edges are floating point, as torchvision computes them: ceil((p+1) *
// (size/P)) can exceed the integer answer (P = 7, size = 29 in float64).
#pragma once

#include <cmath>
#include <cstdint>

#include "roi_common.h"
#include "sample_grid.h"

namespace jax_roialign {

// Saturates rounded corners so that int64 bin arithmetic cannot overflow;
// bins are clipped to the map, so a saturated corner only means "far away".
constexpr double kMaxCorner = 1.0e15;

template <typename G>
struct PoolAxis {
  bool valid;       // corners finite
  int64_t start;    // rounded low corner
  G bin;            // roi size / bins, in G as torchvision computes it
  int64_t limit;    // edges clip to [0, limit]

  // Cells [begin, end) of bin p.
  JRA_HD void cells(int64_t p, int64_t* begin, int64_t* end) const {
    using std::ceil;
    using std::floor;
    int64_t b = int64_t(floor(G(p) * bin)) + start;
    int64_t e = int64_t(ceil(G(p + 1) * bin)) + start;
    b = b < 0 ? 0 : (b > limit ? limit : b);
    e = e < 0 ? 0 : (e > limit ? limit : e);
    *begin = b;
    *end = e;
  }
};

template <typename G>
JRA_HD int64_t round_corner(G v) {
  using std::round;
  const G r = round(v);  // C round: half away from zero
  return r > G(kMaxCorner) ? int64_t(kMaxCorner) : (r < G(-kMaxCorner) ? -int64_t(kMaxCorner) : int64_t(r));
}

// One axis of a roi: `lo`, `hi` in input pixels; `bins` P; `extent` H;
// `position_sensitive`: ps_roi_pool's rules (no +1, edges clipped to H-1).
template <typename G>
JRA_HD PoolAxis<G> pool_axis(G lo, G hi, double spatial_scale, bool position_sensitive,
                             int64_t bins, int64_t extent) {
  PoolAxis<G> a;
  const G scale = G(spatial_scale);
  const G l = lo * scale, h = hi * scale;
  a.valid = is_finite(l) && is_finite(h);
  if (!a.valid) return PoolAxis<G>{false, 0, G(0), 0};
  const bool ps = position_sensitive;
  a.start = round_corner(l);
  const int64_t end = round_corner(h);
  int64_t size = ps ? end - a.start : end - a.start + 1;
  if (size < 1) size = 1;
  a.bin = G(size) / G(bins);
  a.limit = ps ? extent - 1 : extent;
  return a;
}

}  // namespace jax_roialign
