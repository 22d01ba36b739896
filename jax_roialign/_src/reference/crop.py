"""docs/semantics.md's crop_and_resize in pure ``jax.numpy`` (normalised arguments, no
validation; cc/crop.h is the kernels' version): TensorFlow's CropAndResize.

Rows are ``[batch_index, y1, x1, y2, x2]``, normalised. One sample per output cell at
``y1 * (H - 1) + i * ((y2 - y1) * (H - 1)) / (CH - 1)`` (``0.5 * (y1 + y2) * (H - 1)`` when
CH == 1); outside ``[0, H - 1]`` it is ``extrapolation_value``. A box with a non-finite
corner, or whose scaled corners, size or centre overflow, is bad data: zeros. Bilinear: TensorFlow's
lerps between floor and ceil; nearest: the cell at round(position), half away from zero.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax

from .numerics import (batch_column, exact_div, feature_table, finalise, geometry_dtype,
                       image_index, no_fma, take_rows)


def _axis(lo, hi, cells, extent, gdt):
    """Sample positions (K, cells) of one axis and whether each is inside [0, extent-1]."""
    span = jnp.asarray(extent - 1, gdt)
    p = jnp.arange(cells, dtype=gdt)[None, :]
    if cells > 1:
        step = exact_div(no_fma((hi - lo) * span), cells - 1)
        pos = no_fma(lo * span)[:, None] + no_fma(p * step[:, None])
    else:
        pos = no_fma(no_fma(0.5 * (lo + hi)) * span)[:, None] + 0 * p
    inside = (pos >= 0) & (pos <= extent - 1)  # NaN fails
    return jnp.where(inside, pos, jnp.zeros((), gdt)), inside


def _finite(lo, hi, extent, gdt):
    """cc/crop.h ``crop_axis``'s validity: the corners, the scaled corners, size and
    centre are finite (else the box is bad data: zeros, whatever the crop size)."""
    span = jnp.asarray(extent - 1, gdt)
    terms = (lo, hi, no_fma(lo * span), no_fma(hi * span), no_fma((hi - lo) * span),
             no_fma(no_fma(0.5 * (lo + hi)) * span))
    return functools.reduce(jnp.logical_and, [jnp.isfinite(t) for t in terms])


def crop_and_resize_core(features, rois, crop_height, crop_width, extrapolation_value, nearest,
                         layout):
    """``(K, CH, CW, C)`` (NHWC) or ``(K, C, CH, CW)`` (NCHW)."""
    CH, CW = int(crop_height), int(crop_width)
    features = jnp.asarray(features)
    rois = jnp.asarray(rois)
    table, (n, hgt, wid, c) = feature_table(features, layout, CH, CW, False)
    gdt = geometry_dtype(features)
    alive, bidx = batch_column(rois, n)
    coords = rois[:, 1:5].astype(gdt)
    alive = alive & _finite(coords[:, 0], coords[:, 2], hgt, gdt) & _finite(
        coords[:, 1], coords[:, 3], wid, gdt)
    coords = jnp.where(alive[:, None], coords, jnp.zeros((), gdt))
    b = image_index(bidx, alive, n)
    y, iny = _axis(coords[:, 0], coords[:, 2], CH, hgt, gdt)  # (K, CH)
    x, inx = _axis(coords[:, 1], coords[:, 3], CW, wid, gdt)  # (K, CW)
    base = (b * (hgt * wid))[:, None, None]
    if nearest:
        ry = lax.round(lax.stop_gradient(y), lax.RoundingMethod.AWAY_FROM_ZERO).astype(jnp.int32)
        rx = lax.round(lax.stop_gradient(x), lax.RoundingMethod.AWAY_FROM_ZERO).astype(jnp.int32)
        val = take_rows(table, base + (ry * wid)[:, :, None] + rx[:, None, :])
    else:
        top = jnp.floor(lax.stop_gradient(y))
        bottom = jnp.ceil(lax.stop_gradient(y))
        left = jnp.floor(lax.stop_gradient(x))
        right = jnp.ceil(lax.stop_gradient(x))
        yl = (y - top)[:, :, None, None]
        xl = (x - left)[:, None, :, None]
        t, bt = top.astype(jnp.int32) * wid, bottom.astype(jnp.int32) * wid
        lf, rt = left.astype(jnp.int32), right.astype(jnp.int32)
        at = lambda r, col: take_rows(table, base + r[:, :, None] + col[:, None, :])
        tl, tr, bl, br = at(t, lf), at(t, rt), at(bt, lf), at(bt, rt)
        upper = tl + no_fma((tr - tl) * xl)
        lower = bl + no_fma((br - bl) * xl)
        val = upper + no_fma((lower - upper) * yl)
    inside = (iny[:, :, None] & inx[:, None, :])[..., None]
    fill = jnp.asarray(extrapolation_value, gdt)
    out = jnp.where(inside, val, fill)
    # A bad roi (index or coordinates) gives zeros, not the extrapolation value.
    return finalise(out, alive, features.dtype, layout)
