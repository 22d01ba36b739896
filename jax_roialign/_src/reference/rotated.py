"""docs/semantics.md's roi_align_rotated in pure ``jax.numpy`` (normalised arguments, no
validation; cc/rotated.h is the kernels' version): Detectron2's / mmcv's ROIAlignRotated.

Rows are ``[batch_index, cx, cy, w, h, angle]``. The angle becomes ``theta`` (degrees:
``angle * pi / 180``) and ``cos``/``sin`` in float64 when x64 is on, rounded once to the
geometry dtype, as the peers' CPU kernels do; with x64 off in the geometry dtype (the
last bit of ``theta`` may then differ from the peers'). Known deviation, as
``roi_align``: the adaptive grid is clamped to ``adaptive_grid_cap`` per axis.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from .numerics import (ADAPTIVE_GRID_CAP, axis_interp, batch_column, cell_loop, exact_div,
                       feature_table, finalise, geometry_dtype, image_index, loop_carry, no_fma,
                       take_rows)


def _angle(angle, radians, gdt):
    """(cos, sin) of the box angle, rounded once to the geometry dtype where x64 allows."""
    wide = jnp.float64 if jax.config.jax_enable_x64 else gdt
    a = lax.stop_gradient(angle).astype(wide)
    theta = a if radians else a * math.pi / 180.0
    theta = theta.astype(gdt).astype(wide)
    return jnp.cos(theta).astype(gdt), jnp.sin(theta).astype(gdt), theta.astype(gdt)


def roi_align_rotated_core(features, rois, pooled_height, pooled_width, spatial_scale,
                           sampling_ratio, aligned, radians, layout,
                           adaptive_grid_cap=ADAPTIVE_GRID_CAP):
    """``(K, C, PH, PW)`` (NCHW) or ``(K, PH, PW, C)`` (NHWC) average of bilinear samples
    on each bin's grid of the rotated box; differentiable in features and in the box
    (cx, cy, w, h, angle), the grid size piecewise constant."""
    PH, PW = int(pooled_height), int(pooled_width)
    sr = int(sampling_ratio)
    cap = int(adaptive_grid_cap)
    features = jnp.asarray(features)
    rois = jnp.asarray(rois)
    table, (n, hgt, wid, c) = feature_table(features, layout, PH, PW, False)
    gdt = geometry_dtype(features)
    k = rois.shape[0]

    alive, bidx = batch_column(rois, n)
    coords = rois[:, 1:6].astype(gdt)
    s = jnp.asarray(spatial_scale, gdt)
    off = jnp.asarray(0.5 if aligned else 0.0, gdt)

    def geometry(cd):
        cw = no_fma(cd[:, 0] * s) - off
        ch = no_fma(cd[:, 1] * s) - off
        rw = no_fma(cd[:, 2] * s)
        rh = no_fma(cd[:, 3] * s)
        return cw, ch, rw, rh

    cw, ch, rw, rh = geometry(coords)
    cos_t, sin_t, theta = _angle(coords[:, 4], radians, gdt)
    finite = (jnp.isfinite(cw) & jnp.isfinite(ch) & jnp.isfinite(rw) & jnp.isfinite(rh)
              & jnp.isfinite(theta) & jnp.isfinite(cos_t) & jnp.isfinite(sin_t))
    if aligned:
        finite = finite & (rw >= 0) & (rh >= 0)  # the peers assert; bad data here
    alive = alive & finite
    coords = jnp.where(alive[:, None], coords, jnp.zeros((), gdt))
    cw, ch, rw, rh = geometry(coords)
    cos_t, sin_t, theta = _angle(coords[:, 4], radians, gdt)
    # The angle's derivative flows through theta (its rounding has slope 1).
    angle = coords[:, 4] * (1.0 if radians else math.pi / 180.0)
    theta = lax.stop_gradient(theta) + (angle - lax.stop_gradient(angle))
    cos_t = lax.stop_gradient(cos_t) + lax.stop_gradient(-sin_t) * (theta - lax.stop_gradient(theta))
    sin_t = lax.stop_gradient(sin_t) + lax.stop_gradient(cos_t) * (theta - lax.stop_gradient(theta))
    b = image_index(bidx, alive, n)
    if not aligned:
        one = jnp.ones((), gdt)
        rw = jnp.where(rw < 1, one, rw)
        rh = jnp.where(rh < 1, one, rh)
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
    start_h = -exact_div(rh, 2)
    start_w = -exact_div(rw, 2)
    a_y = start_h[:, None] + no_fma(jnp.arange(PH, dtype=gdt)[None, :] * bh[:, None])
    a_x = start_w[:, None] + no_fma(jnp.arange(PW, dtype=gdt)[None, :] * bw[:, None])
    base = (b * (hgt * wid))[:, None, None]

    def sample(tab, iy, ix):
        yy = a_y + exact_div(no_fma((jnp.asarray(iy, gdt) + 0.5) * bh), ghf)[:, None]  # (K, PH)
        xx = a_x + exact_div(no_fma((jnp.asarray(ix, gdt) + 0.5) * bw), gwf)[:, None]  # (K, PW)
        yy, xx = yy[:, :, None], xx[:, None, :]
        c_, s_ = cos_t[:, None, None], sin_t[:, None, None]
        y = (no_fma(yy * c_) - no_fma(xx * s_)) + ch[:, None, None]
        x = (no_fma(yy * s_) + no_fma(xx * c_)) + cw[:, None, None]
        iny, yl, yh, ly, hy = axis_interp(y, hgt)
        inx, xl, xh, lx, hx = axis_interp(x, wid)
        terms = ((hy * hx, yl * wid + xl), (hy * lx, yl * wid + xh),
                 (ly * hx, yh * wid + xl), (ly * lx, yh * wid + xh))
        val = None
        for w, at in terms:
            p = no_fma(w[..., None] * take_rows(tab, base + at))
            val = p if val is None else val + p
        return jnp.where((iny & inx)[..., None], val, jnp.zeros((), gdt))

    def step(acc, tab, iy, ix):
        val = sample(tab, iy, ix)
        if sr > 0:
            return acc + val
        m = ((iy < gh) & (ix < gw))[:, None, None, None]
        return jnp.where(m, acc + val, acc)

    g = sr if sr > 0 else cap
    lim_h = g if sr > 0 else jnp.max(gh, initial=0)
    lim_w = g if sr > 0 else jnp.max(gw, initial=0)
    acc = cell_loop(g, g, lim_h, lim_w, step,
                    loop_carry(jnp.zeros((k, PH, PW, c), gdt), features, rois), table)
    out = exact_div(acc, count[:, None, None, None])
    return finalise(out, alive, features.dtype, layout)
