"""docs/semantics.md's legacy layers (faster-rcnn.pytorch RoIAlign, RoIAlignAvg,
RoIAlignMax) in pure ``jax.numpy`` (normalised arguments, no validation; cc/legacy.h is
the kernels' version).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .numerics import (batch_column, exact_div, feature_table, finalise, four_tap, geometry_dtype,
                       image_index, no_fma)

#: ``legacy_core`` variants: RoIAlign (one lattice node per bin), RoIAlignAvg, RoIAlignMax.
LEGACY_VARIANTS = ("plain", "avg", "max")


def _legacy_axis(lo, hi, s, nodes):
    """cc/legacy.h ``legacy_axis`` + ``position``: node positions ``(K, nodes)``."""
    dt = lo.dtype
    start = no_fma(lo * s)
    size = (no_fma(hi * s) - start) + 1  # hi*scale - start + 1, left to right
    size = jnp.where(size < 0, jnp.zeros((), dt), size)  # clamped only when < 0
    bin_ = exact_div(size, nodes - 1)
    return no_fma(jnp.arange(nodes, dtype=dt)[None, :] * bin_[:, None]) + start[:, None]


def _legacy_tap(v, extent):
    """cc/legacy.h ``in_window`` + ``tap``: (in window, low, high, w_high, w_low).

    Rows ``min(floor(v), H-2)`` and the next, ``w_high = v - low`` (slope 1, extrapolating
    on ``[H-1, H)``); ``H == 1`` reads row 0 twice.
    """
    dt = v.dtype
    inwin = (v >= 0) & (v < extent)  # NaN fails
    v = jnp.where(inwin, v, jnp.zeros((), dt))
    if extent == 1:
        lo = jnp.zeros(v.shape, jnp.int32)
        hi = lo
        l = v
    else:
        lo = jnp.minimum(jnp.floor(v), extent - 2)
        l = v - lo
        lo = lo.astype(jnp.int32)
        hi = lo + 1
    return inwin, lo, hi, l, 1 - l


def legacy_core(features, rois, pooled_height: int, pooled_width: int,
                spatial_scale: float, variant: str, layout: str) -> jax.Array:
    """docs/semantics.md legacy (faster-rcnn.pytorch RoIAlign layers; cc/legacy.h), no validation.

    ``variant``: ``"plain"`` RoIAlign(PH, PW): one node of a PH x PW lattice per bin
    (PH, PW >= 2); ``"avg"`` / ``"max"`` RoIAlignAvg / RoIAlignMax(PH, PW): a
    (PH+1) x (PW+1) lattice, bin (ph, pw) averages (divisor 4) / maxes its 2x2 nodes.
    A node outside ``[0, H) x [0, W)`` is 0 (it counts in the average and can win the
    max; max ties go to the first node in row-major order, an outside 0 included, as
    cc/cpu/channel_loops.h ``max_sample``).  Differentiable w.r.t. features and box
    coordinates (exact where smooth; the max through its winning node only).
    """
    PH, PW = int(pooled_height), int(pooled_width)
    if variant not in LEGACY_VARIANTS:
        raise ValueError(f"variant must be one of {LEGACY_VARIANTS}, got {variant!r}")
    span = 1 if variant == "plain" else 2
    LH, LW = PH + span - 1, PW + span - 1
    if LH < 2 or LW < 2:
        raise ValueError(f"legacy {variant!r}: the lattice needs at least 2 nodes per axis, "
                         f"got output size ({PH}, {PW})")
    features = jnp.asarray(features)
    rois = jnp.asarray(rois)
    table, (n, hgt, wid, c) = feature_table(features, layout, PH, PW, False)
    gdt = geometry_dtype(features)
    k = rois.shape[0]

    alive, bidx = batch_column(rois, n)
    coords = rois[:, 1:5].astype(gdt)
    s = jnp.asarray(spatial_scale, gdt)
    scaled = no_fma(coords * s)
    finite = (jnp.all(jnp.isfinite(scaled), axis=1)
              & jnp.isfinite(scaled[:, 2] - scaled[:, 0])
              & jnp.isfinite(scaled[:, 3] - scaled[:, 1]))
    alive = alive & finite
    coords = jnp.where(alive[:, None], coords, jnp.zeros((), gdt))
    b = image_index(bidx, alive, n)

    pos_y = _legacy_axis(coords[:, 1], coords[:, 3], s, LH)  # (K, LH)
    pos_x = _legacy_axis(coords[:, 0], coords[:, 2], s, LW)  # (K, LW)
    iny, yl, yh, ly, hy = _legacy_tap(pos_y, hgt)
    inx, xl, xh, lx, hx = _legacy_tap(pos_x, wid)
    base = jnp.broadcast_to((b * (hgt * wid))[:, None, None], (k, LH, LW))
    nodes = four_tap(table, base, (yl, yh, ly, hy), (xl, xh, lx, hx), wid)
    inwin = iny[:, :, None] & inx[:, None, :]  # (K, LH, LW)

    offsets = [(dy, dx) for dy in range(span) for dx in range(span)]  # row-major ordinals

    def node(arr, dy, dx):
        return arr[:, dy:dy + PH, dx:dx + PW]

    if variant in ("plain", "avg"):
        acc = jnp.zeros((k, PH, PW, c), gdt)
        for dy, dx in offsets:
            acc = jnp.where(node(inwin, dy, dx)[..., None], acc + node(nodes, dy, dx), acc)
        out = acc if span == 1 else exact_div(acc, span * span)
    else:
        # cc/cpu/channel_loops.h max_sample: the first in-window node is taken, a later
        # one only when strictly greater; then an outside node (an implicit 0) wins if
        # the bin has no in-window node, or 0 > best, or 0 == best and it comes first.
        vals = lax.stop_gradient(nodes)
        best = jnp.zeros((k, PH, PW, c), gdt)
        arg = jnp.full((k, PH, PW, c), -1, jnp.int32)
        first_out = jnp.full((k, PH, PW), len(offsets), jnp.int32)
        for o, (dy, dx) in reversed(list(enumerate(offsets))):
            first_out = jnp.where(node(inwin, dy, dx), first_out, o)
        for o, (dy, dx) in enumerate(offsets):
            w = node(inwin, dy, dx)[..., None]
            v = node(vals, dy, dx)
            take = w & (((arg < 0) & (v == v)) | (v > best))  # NaN never wins
            best = jnp.where(take, v, best)
            arg = jnp.where(take, o, arg)
        fo = first_out[..., None]
        zero = jnp.zeros((), gdt)
        zero_wins = (fo < len(offsets)) & ((arg < 0) | (zero > best)
                                           | ((zero == best) & (fo < arg)))
        arg = jnp.where(zero_wins, -1, arg)
        out = jnp.zeros((k, PH, PW, c), gdt)
        for o, (dy, dx) in enumerate(offsets):
            out = jnp.where(arg == o, node(nodes, dy, dx), out)
    return finalise(out, alive, features.dtype, layout)
