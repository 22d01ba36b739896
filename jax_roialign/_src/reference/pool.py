"""docs/semantics.md's roi_pool and ps_roi_pool in pure ``jax.numpy`` (normalised arguments,
no validation; cc/roi_pool.h is the kernels' version).

Pool ops (roi_pool, ps_roi_pool)
--------------------------------
Corners ``round(x*s)`` half away from zero (``lax.round``), saturated at ``±1e15`` like
cc/roi_pool.h.  The kernel then works in int64; here everything stays in the geometry
dtype without needing x64, exactly:

* the roi size ``end - start (+1)`` is formed with an error-free transformation (TwoSum)
  so that ``G(size)`` is the correctly rounded exact integer, as the kernel's conversion
  from int64 (exact whenever the corners are below about ``2**48`` in magnitude; beyond
  that, with both corners saturating, one rounding may differ);
* a bin edge ``clip(floor(p*bin) + start, 0, limit)`` is exact: a sum of two integral
  floats whose exact value lies in ``[0, limit]`` is representable (so computed exactly),
  and rounding is monotone (so a sum outside the range clips to the same end).

The cells of a bin are visited rows outer, columns inner, up to the largest bin span
present (so the cost follows the largest roi in the batch, and a huge box costs what a
box the size of the map costs).  ps_roi_pool, differentiated through the loop, uses two
nested ``lax.scan`` loops over a static bound of ``H`` (``W``) cells, a ``lax.cond``
skipping the steps beyond that span; roi_pool's search for its winners is not
differentiated and runs ``lax.fori_loop``s over exactly the steps present, one per group
of rois of similar size (sorted by their largest bin), each bounded by its own.  Its
winner is the first cell in row-major order (taken unconditionally, later cells replace
it only when strictly greater: cc/cpu/channel_loops.h ``max_sample``); the output
gathers the winning cell, so the gradient w.r.t. features goes to that cell only.
ps_roi_pool sums the cells in row-major order and divides by the bin's area.  Both are
piecewise constant in the box: the box coordinates get a zero gradient.

Bad data
--------
As ``reference.roi_align_core``: a roi whose batch index is not an integer in ``[0, N)``
(NaN included) or whose scaled corners (or, for the align ops, sizes) are not finite is
dead: output 0, coordinates replaced by 0 before any geometry (no NaN in any gradient),
and every read is in bounds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .numerics import (batch_column, bin_bases, cell_loop, cell_while,
                       exact_div, feature_table, finalise, geometry_dtype,
                       image_index, loop_carry, no_fma, take_rows)

# cc/roi_pool.h kMaxCorner: rounded corners saturate here.
_MAX_CORNER = 1.0e15
# roi_pool's search for its winners runs one loop per group of rois of similar size.
_SEARCH_GROUPS = 8


def _round_corner(v):
    """cc/roi_pool.h ``round_corner`` as an unevaluated pair ``hi + lo`` (exact value).

    C ``round`` (half away from zero), saturated at ``±1e15``; ``1e15`` is not a float32,
    so a saturated float32 corner is ``G(1e15) + (1e15 - G(1e15))``.
    """
    dt = v.dtype
    r = lax.round(v, lax.RoundingMethod.AWAY_FROM_ZERO)
    big = np.asarray(_MAX_CORNER, dt)
    rest = np.asarray(_MAX_CORNER - float(big), dt)  # exact: 13008896 for float32, 0 for 64
    hi_sat, lo_sat = r > big, r < -big
    hi = jnp.where(hi_sat, big, jnp.where(lo_sat, -big, r))
    lo = jnp.where(hi_sat, rest, jnp.where(lo_sat, -rest, jnp.zeros((), dt)))
    return hi, lo


def _two_sum(a, b):
    """``s = fl(a + b)`` and ``e`` with ``s + e == a + b`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _pool_axis(lo, hi, s, P, extent, position_sensitive):
    """cc/roi_pool.h ``pool_axis`` + ``cells``: ``(begin, end)`` int32 ``(K, P)``."""
    dt = lo.dtype
    st_hi, st_lo = _round_corner(no_fma(lo * s))
    en_hi, en_lo = _round_corner(no_fma(hi * s))
    plus = 0.0 if position_sensitive else 1.0
    # size = end - start (+1), exact integer, as G correctly rounded; max(size, 1).
    d, err = _two_sum(en_hi, -st_hi)
    size = d + (err + ((en_lo - st_lo) + jnp.asarray(plus, dt)))
    size = jnp.where(size < 1, jnp.ones((), dt), size)
    bin_ = exact_div(size, P)  # G(size) / G(P)
    limit = extent - 1 if position_sensitive else extent
    p = jnp.arange(P, dtype=dt)[None, :]
    a = jnp.floor(p * bin_[:, None])
    e = jnp.ceil((p + 1) * bin_[:, None])

    def edge(x):
        t = (x + st_hi[:, None]) + st_lo[:, None]
        return jnp.clip(t, 0, limit).astype(jnp.int32)

    return edge(a), edge(e)


def _pool(features, rois, PH, PW, spatial_scale, layout, position_sensitive):
    PH, PW = int(PH), int(PW)
    features = jnp.asarray(features)
    rois = jnp.asarray(rois)
    table, (n, hgt, wid, c) = feature_table(features, layout, PH, PW, position_sensitive)
    gdt = geometry_dtype(features)
    k = rois.shape[0]

    alive, bidx = batch_column(rois, n)
    coords = lax.stop_gradient(rois[:, 1:5].astype(gdt))  # piecewise constant in the box
    s = jnp.asarray(spatial_scale, gdt)
    finite = jnp.all(jnp.isfinite(no_fma(coords * s)), axis=1)
    alive = alive & finite
    coords = jnp.where(alive[:, None], coords, jnp.zeros((), gdt))
    b = image_index(bidx, alive, n)

    y0, y1 = _pool_axis(coords[:, 1], coords[:, 3], s, PH, hgt, position_sensitive)
    x0, x1 = _pool_axis(coords[:, 0], coords[:, 2], s, PW, wid, position_sensitive)
    sy = jnp.maximum(y1 - y0, 0)  # (K, PH)
    sx = jnp.maximum(x1 - x0, 0)  # (K, PW)
    base = bin_bases(b, hgt, wid, PH, PW, position_sensitive)

    def cell(tab, dy, dx, g=(y0, x0, sy, sx, base)):
        """Rows, values (K, PH, PW, C) and validity (K, PH, PW, 1) of cell (dy, dx) of the
        bins of `g` (the rois' (y0, x0, sy, sx, base), or a group's)."""
        gy0, gx0, gsy, gsx, gbase = g
        y = jnp.minimum(gy0 + dy, hgt - 1)
        x = jnp.minimum(gx0 + dx, wid - 1)
        rows = gbase + (y * wid)[:, :, None] + x[:, None, :]
        valid = (dy < gsy)[:, :, None] & (dx < gsx)[:, None, :]
        return rows, take_rows(tab, rows), valid[..., None]

    if position_sensitive:  # average
        max_sy = jnp.max(sy, initial=0)
        max_sx = jnp.max(sx, initial=0)
        bound_y, bound_x = hgt - 1, wid - 1  # a bin spans at most `limit` cells

        def step(acc, tab, dy, dx):
            _, v, valid = cell(tab, dy, dx)
            return jnp.where(valid, acc + v, acc)

        acc = cell_loop(bound_y, bound_x, max_sy, max_sx, step,
                        loop_carry(jnp.zeros((k, PH, PW, c), gdt), features, rois),
                        table)
        area = sy[:, :, None] * sx[:, None, :]
        divisor = jnp.maximum(area, 1).astype(gdt)[..., None]
        out = jnp.where((area > 0)[..., None], exact_div(acc, divisor), jnp.zeros((), gdt))
    else:  # max: first arg-max cell (no gradient), then a differentiable gather
        tsg = lax.stop_gradient(table)
        # The rois in groups of similar size, each group's loop bounded by its own largest
        # bin: every step reads a cell of every bin in the group, so one loop for all
        # would read the largest bin's count of cells for every bin.
        order = jnp.argsort(jnp.max(sy, axis=1, initial=0) * jnp.max(sx, axis=1, initial=0))
        groups = []
        for g in range(_SEARCH_GROUPS):
            idx = order[g * k // _SEARCH_GROUPS:(g + 1) * k // _SEARCH_GROUPS]
            if idx.shape[0] == 0:
                continue
            part = (y0[idx], x0[idx], sy[idx], sx[idx], base[idx])

            def step(carry, dy, dx, part=part):
                best, arg = carry
                rows, v, valid = cell(tsg, dy, dx, part)
                take = valid & (((arg < 0) & (v == v)) | (v > best))  # NaN never wins
                return jnp.where(take, v, best), jnp.where(take, rows[..., None], arg)

            kg = idx.shape[0]
            groups.append(cell_while(
                jnp.max(part[2], initial=0), jnp.max(part[3], initial=0), step,
                loop_carry((jnp.zeros((kg, PH, PW, c), gdt),
                            jnp.full((kg, PH, PW, c), -1, jnp.int32)), features, rois))[1])
        arg = (jnp.concatenate(groups)[jnp.argsort(order)] if groups
               else jnp.full((k, PH, PW, c), -1, jnp.int32))
        chan = jnp.arange(c, dtype=jnp.int32)
        v = table.at[jnp.maximum(arg, 0), chan].get(mode="promise_in_bounds")
        out = jnp.where(arg >= 0, v, jnp.zeros((), gdt))
    return finalise(out, alive, features.dtype, layout)


def roi_pool_core(features, rois, pooled_height: int, pooled_width: int,
                  spatial_scale: float, layout: str) -> jax.Array:
    """docs/semantics.md roi_pool (torchvision's float bin edges, cc/roi_pool.h), no validation.

    Max over the bin's cells ``[floor(p*bin) + start, ceil((p+1)*bin) + start)`` clipped to
    ``[0, H]`` (``[0, W]``), ``bin = max(round(x2*s) - round(x1*s) + 1, 1) / PW``; an empty
    bin gives 0; ties go to the first cell in row-major order.  Gradient w.r.t. features:
    to the arg-max cell; w.r.t. the box: 0.
    """
    return _pool(features, rois, pooled_height, pooled_width, spatial_scale, layout, False)


def ps_roi_pool_core(features, rois, pooled_height: int, pooled_width: int,
                     spatial_scale: float, layout: str) -> jax.Array:
    """docs/semantics.md ps_roi_pool (torchvision's forward, cc/roi_pool.h), no validation.

    Average over the bin's cells with edges clipped to ``[0, H-1]`` (``[0, W-1]``), roi
    size ``max(round(x2*s) - round(x1*s), 1)`` (no +1), position-sensitive channels; an
    empty bin gives 0.  Linear in features (its transpose is the exact backward); zero
    gradient w.r.t. the box.
    """
    return _pool(features, rois, pooled_height, pooled_width, spatial_scale, layout, True)


