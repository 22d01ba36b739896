"""docs/semantics.md's ps_roi_align in pure ``jax.numpy`` (normalised arguments, no
validation): roi_align's aligned geometry with position-sensitive channels.

Known deviation (as ``roi_align``): the adaptive grid is clamped to ``adaptive_grid_cap``
per axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .numerics import (ADAPTIVE_GRID_CAP, axis_interp, batch_column, bin_bases, cell_loop,
                       exact_div, feature_table, finalise, four_tap, geometry_dtype,
                       image_index, loop_carry, no_fma)

# Fixed grids with at most this many samples per bin are unrolled in Python; larger ones
# (and adaptive grids) run in a lax.scan.
_MAX_UNROLLED_SAMPLES = 16


def ps_roi_align_core(features, rois, pooled_height: int, pooled_width: int,
                      spatial_scale: float, sampling_ratio: int, layout: str,
                      adaptive_grid_cap: int = ADAPTIVE_GRID_CAP) -> jax.Array:
    """docs/semantics.md ps_roi_align on normalised arguments (no validation).

    ``reference.roi_align_core(aligned=True, mode="avg")``'s arithmetic, bit for bit, with
    output channel ``c`` of bin ``(ph, pw)`` reading input channel ``(c*PH + ph)*PW + pw``:
    the half-pixel offset, no size clamp, a ``gh x gw`` grid (``sampling_ratio`` if > 0,
    else ``ceil(rh/PH)`` clamped to ``[0, adaptive_grid_cap]``), average with divisor
    ``max(gh*gw, 1)`` (an empty grid gives 0, not torchvision's NaN).  Differentiable
    w.r.t. features and box coordinates (exact piecewise derivative).
    """
    PH, PW = int(pooled_height), int(pooled_width)
    sr = int(sampling_ratio)
    cap = int(adaptive_grid_cap)
    features = jnp.asarray(features)
    rois = jnp.asarray(rois)
    table, (n, hgt, wid, c) = feature_table(features, layout, PH, PW, True)
    gdt = geometry_dtype(features)
    k = rois.shape[0]

    alive, bidx = batch_column(rois, n)
    coords = rois[:, 1:5].astype(gdt)
    s = jnp.asarray(spatial_scale, gdt)
    off = jnp.asarray(0.5, gdt)

    def corners(cd):
        x1, y1, x2, y2 = (cd[:, i] for i in range(4))
        return (no_fma(x1 * s) - off, no_fma(y1 * s) - off,
                no_fma(x2 * s) - off, no_fma(y2 * s) - off)

    xs, ys, xe, ye = corners(coords)
    finite = (jnp.isfinite(xs) & jnp.isfinite(ys) & jnp.isfinite(xe) & jnp.isfinite(ye)
              & jnp.isfinite(xe - xs) & jnp.isfinite(ye - ys))
    alive = alive & finite
    coords = jnp.where(alive[:, None], coords, jnp.zeros((), gdt))
    xs, ys, xe, ye = corners(coords)
    b = image_index(bidx, alive, n)

    rw = xe - xs
    rh = ye - ys
    bh = exact_div(rh, PH)
    bw = exact_div(rw, PW)
    if sr > 0:
        gh = gw = jnp.full((k,), sr, jnp.int32)
    else:
        gh = jnp.clip(jnp.ceil(lax.stop_gradient(bh)), 0, cap).astype(jnp.int32)
        gw = jnp.clip(jnp.ceil(lax.stop_gradient(bw)), 0, cap).astype(jnp.int32)
    ghf = jnp.maximum(gh, 1).astype(gdt)
    gwf = jnp.maximum(gw, 1).astype(gdt)
    count = jnp.maximum(gh * gw, 1).astype(gdt)

    a_y = ys[:, None] + no_fma(jnp.arange(PH, dtype=gdt)[None, :] * bh[:, None])
    a_x = xs[:, None] + no_fma(jnp.arange(PW, dtype=gdt)[None, :] * bw[:, None])
    base = bin_bases(b, hgt, wid, PH, PW, True)
    geom = (a_y, a_x, bh, bw, ghf, gwf, base)

    def sample(table, geom, iy, ix):
        a_y, a_x, bh, bw, ghf, gwf, base = geom
        ty = exact_div((jnp.asarray(iy, gdt) + 0.5) * bh, ghf)
        tx = exact_div((jnp.asarray(ix, gdt) + 0.5) * bw, gwf)
        iny, yl, yh, ly, hy = axis_interp(a_y + ty[:, None], hgt)
        inx, xl, xh, lx, hx = axis_interp(a_x + tx[:, None], wid)
        val = four_tap(table, base, (yl, yh, ly, hy), (xl, xh, lx, hx), wid)
        inwin = iny[:, :, None] & inx[:, None, :]
        return jnp.where(inwin[..., None], val, jnp.zeros((), gdt))

    def step(acc, tab, iy, ix):
        val = sample(tab, geom, iy, ix)
        if sr > 0:
            return acc + val
        m = ((iy < gh) & (ix < gw))[:, None, None, None]
        return jnp.where(m, acc + val, acc)

    acc = loop_carry(jnp.zeros((k, PH, PW, c), gdt), features, rois)
    if sr > 0 and sr * sr <= _MAX_UNROLLED_SAMPLES:
        # Unrolled, iy-major; each sample recomputed in the backward pass.
        for st in range(sr * sr):
            acc = jax.checkpoint(step)(acc, table, st // sr, st % sr)
    else:
        # Nested scans, iy outer; adaptive grids skip the steps beyond the largest grid.
        g = sr if sr > 0 else cap
        lim_h = jnp.max(gh, initial=0) if sr <= 0 else g
        lim_w = jnp.max(gw, initial=0) if sr <= 0 else g
        acc = cell_loop(g, g, lim_h, lim_w, step, acc, table)
    out = exact_div(acc, count[:, None, None, None])
    return finalise(out, alive, features.dtype, layout)


