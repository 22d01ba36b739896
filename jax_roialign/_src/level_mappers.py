"""FPN level mappers: which pyramid level pools each box, as the peers compute it.

    torchvision  LevelMapper:             floor(k0 + log2(sqrt(area) / s0) + 1e-6)
    detectron2   assign_boxes_to_levels:  floor(k0 + log2(sqrt(area) / s0 + 1e-8))
    mmdet        map_roi_levels:          floor(log2(sqrt(area) / finest_scale + 1e-6))

with area = (x2 - x1) * (y2 - y1), every step in the boxes' dtype (float32, or float64),
clamped to the pyramid's levels (torchvision, Detectron2: k_min = -log2(spatial_scales[0])
to k_max; mmdet: 0 to L - 1) and returned as the index of the level in `spatial_scales`.
A box whose area is negative or NaN (sqrt NaN) maps to no level (-1): the peers' NaN ->
int64 conversion matches no level either, and its output stays zero.

Each formula is a monotone function of s = sqrt(area), so the level of a box is the number
of level thresholds s reaches. The thresholds (the smallest s of each level) are found
once per call configuration by bisection over the floating-point values, evaluating the
peer's formula step by step in its dtype with a correctly rounded log2; the device then
only computes s and compares, which is exact on every platform (no device log2, whose
last bit varies by backend, decides a level).
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

MAPPERS = ("torchvision", "detectron2", "mmdet")


def _level_value(mapper, s, dtype, canonical_scale, canonical_level, finest_scale):
    """The mapper's pre-floor value t(s), step by step in `dtype` (numpy scalars)."""
    T = dtype.type

    def log2(v):  # correctly rounded in the dtype (via float64 for float32)
        return T(np.log2(np.float64(v))) if dtype == np.float32 else T(np.log2(v))

    with np.errstate(divide="ignore", invalid="ignore"):
        if mapper == "torchvision":
            t = T(T(canonical_level) + log2(T(s / T(canonical_scale))))
            return T(t + T(1e-6))
        if mapper == "detectron2":
            q = T(T(s / T(canonical_scale)) + T(1e-8))
            return T(T(canonical_level) + log2(q))
        return log2(T(T(s / T(finest_scale)) + T(1e-6)))


def _bits(dtype):
    return (np.uint32, np.float32) if dtype == np.float32 else (np.uint64, np.float64)


@functools.lru_cache(maxsize=None)
def thresholds(mapper, dtype_name, first, last, canonical_scale, canonical_level, finest_scale):
    """The smallest finite s >= 0 whose level is k, for k in (first, last], in `dtype`."""
    dtype = np.dtype(dtype_name)
    uint, flt = _bits(dtype)
    top = int(np.array(np.finfo(dtype).max, dtype).view(uint))
    out = []
    for k in range(first + 1, last + 1):
        lo, hi = 0, top + 1  # first bit pattern whose value reaches level k
        while lo < hi:
            mid = (lo + hi) // 2
            s = np.array(mid, uint).view(flt)
            t = _level_value(mapper, s, dtype, canonical_scale, canonical_level, finest_scale)
            if np.floor(t) >= k:
                hi = mid
            else:
                lo = mid + 1
        out.append(float(np.array(min(lo, top), uint).view(flt)))
    return tuple(out)


def level_range(op, mapper, spatial_scales):
    """(first, last) pyramid level the mapper assigns: k_min..k_max (torchvision,
    Detectron2, from the scales, which must be 1/2^k of consecutive k), or 0..L-1."""
    if mapper == "mmdet":
        return 0, len(spatial_scales) - 1
    ks = []
    for i, s in enumerate(spatial_scales):
        k = -math.log2(s)
        if k != round(k):
            raise ValueError(f"{op}: mapper={mapper!r} needs spatial_scales of the form 1/2^k "
                             f"(a feature pyramid), got spatial_scales[{i}] = {s!r}")
        ks.append(int(round(k)))
    if ks != list(range(ks[0], ks[0] + len(ks))):
        raise ValueError(f"{op}: mapper={mapper!r} needs spatial_scales of consecutive "
                         f"pyramid levels, finest first (1/2^k, 1/2^(k+1), ...), got "
                         f"{tuple(spatial_scales)}")
    return ks[0], ks[-1]


def map_levels(boxes, first, last, mapper, canonical_scale, canonical_level, finest_scale):
    """int32 level index (0 .. last - first) of each box of `boxes` (..., 4) [x1, y1,
    x2, y2]; -1 where sqrt(area) is NaN."""
    dtype = np.dtype(boxes.dtype)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    s = jnp.sqrt(area)
    level = jnp.zeros(s.shape, jnp.int32)
    for t in thresholds(mapper, dtype.name, first, last, float(canonical_scale),
                        float(canonical_level), float(finest_scale)):
        level = level + (s >= jnp.asarray(t, dtype)).astype(jnp.int32)
    return jnp.where(jnp.isnan(s), -1, level)
