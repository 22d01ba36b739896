"""docs/semantics.md's ``roi_align`` in pure ``jax.numpy``.

An oracle for the C++/CUDA kernels (its forward values, and ``jax.grad`` of it for the
derivative w.r.t. box coordinates) and the path on platforms without kernels.  No
argument validation and no rois-form handling: ``roi_align_core`` takes normalised
arguments only.

Floating point: ``numerics``.

Adaptive sampling grid (``sampling_ratio <= 0``)
------------------------------------------------
docs/semantics.md's grid ``gh = ceil(rh / PH)`` is data dependent.  This path clamps it::

    gh = clip(ceil(rh / PH), 0, adaptive_grid_cap)       (gw likewise)

and then uses the clamped ``gh`` everywhere (sample positions ``(iy + .5)*bh/gh`` and
``count = max(gh*gw, 1)``): a roi whose adaptive grid would exceed the cap is sampled on
a regular ``cap x cap`` grid per bin instead.  **This deviates from docs/semantics.md for rois
larger than ``adaptive_grid_cap * PH`` (resp. ``* PW``) feature cells**; the kernels have
no cap.  With the default ``ADAPTIVE_GRID_CAP = 16`` and a 7x7 output that is a roi over
112 feature cells on a side (1792 input pixels at stride 16); FPN level assignment keeps
real detector rois far below it.  Steps beyond the largest grid present in the batch are
skipped (``lax.cond``), so the cost follows the largest roi actually present, not the cap
(but every roi pays for that largest grid).

Structure (XLA:CPU performance notes)
-------------------------------------
* The features are read as rows of ``C`` contiguous values (``(N*H*W, C)``; NCHW input is
  transposed once), four whole-row gathers per sample.
* Per-axis sample geometry (window test, corner rows/columns, weights) is computed once
  as ``(G, K, PH)`` / ``(G, K, PW)`` arrays and the samples are visited by two nested
  ``lax.scan`` (iy outer, ix inner, each at least 2 steps long): loop inputs and carries
  are materialised, so XLA neither recomputes the geometry for every channel nor fuses
  the gathers into the final NCHW transpose (both measured 3-8x slower).
* Each step is a ``jax.checkpoint`` and the four gathers of a step are one
  ``custom_jvp`` whose transpose is a single scatter-add: the backward pass stores nothing
  of size ``(K, PH, PW, C)`` per sample.

Bad data
--------
A roi whose batch index is NaN, non-integer or outside ``[0, N)``, or whose scaled
corners or sizes are not finite, is *dead*: its output is 0, it reads only in-bounds
memory (indices are clipped), and it gives and receives no gradient (its coordinates are
replaced by 0 before any geometry, so no NaN reaches a gradient).  Non-finite corners put
every sample outside the window under docs/semantics.md's formula anyway, so this changes no value.

Derivatives
-----------
Linear in ``features``; w.r.t. box coordinates ``jax.grad`` gives the exact piecewise
derivative of the formula, with the kernel's tie rules: a sample with ``y <= 0`` (clamped
to 0) or ``floor(y) >= H-1`` (clamped to ``H-1``) or outside ``[-1, H]`` contributes 0;
``rh = max(rh, 1)`` (unaligned) is clamped only when ``rh < 1`` (torchvision's
``std::max`` keeps ``rh`` at a tie); the grid size is piecewise constant.  Max mode sends
the gradient through the arg-max sample only (first maximum, iy-major, ix-minor).  The
gradient w.r.t. 16-bit features is accumulated in float32 and cast once.

In max mode a NaN sample value never wins (docs/semantics.md, "Bad data"), so a bin whose
samples are all NaN gives 0 (a -inf sample can win). Choices where docs/semantics.md is
silent: a negative adaptive grid (``ceil`` of a reversed box) is an empty grid.  Row
indices are uint32, so ``N*H*W < 2**32``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .numerics import (ADAPTIVE_GRID_CAP, axis_interp, cell_loop, exact_div, feature_table,
                       gather_rows, geometry_dtype, loop_carry, no_fma, valid_batch_index)


def roi_align_core(features, rois, pooled_height: int, pooled_width: int,
                   spatial_scale: float, sampling_ratio: int, aligned: bool, mode: str,
                   layout: str, adaptive_grid_cap: int = ADAPTIVE_GRID_CAP) -> jax.Array:
    """docs/semantics.md roi_align on normalised arguments (no validation).

    Args:
      features: ``(N, C, H, W)`` if ``layout == "NCHW"`` else ``(N, H, W, C)``; float16,
        bfloat16, float32 or float64.
      rois: ``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]``, any float dtype.
      pooled_height, pooled_width: output size ``PH, PW`` (>= 1).
      spatial_scale: ``s``, input-image to feature-map scale.
      sampling_ratio: fixed grid ``sr x sr`` per bin if > 0, else adaptive (capped, see
        the module docstring).
      aligned: subtract the half-pixel offset and do not clamp the roi size to 1.
      mode: ``"avg"`` or ``"max"``.
      layout: ``"NCHW"`` or ``"NHWC"``.
      adaptive_grid_cap: static bound of the adaptive grid per axis.

    Returns:
      ``(K, C, PH, PW)`` (NCHW) or ``(K, PH, PW, C)`` (NHWC) in the features' dtype.
    """
    PH, PW = int(pooled_height), int(pooled_width)
    sr = int(sampling_ratio)
    cap = int(adaptive_grid_cap)
    features = jnp.asarray(features)
    rois = jnp.asarray(rois)
    table, (n, hgt, wid, c) = feature_table(features, layout, PH, PW, False)
    if mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")

    gdt = geometry_dtype(features)  # geometry & accumulation
    k = rois.shape[0]

    # ---- per-roi geometry, (K,) arrays -------------------------------------------------
    bidx = rois[:, 0]
    alive = valid_batch_index(bidx, n)
    coords = rois[:, 1:5].astype(gdt)
    s = jnp.asarray(spatial_scale, gdt)
    off = jnp.asarray(0.5 if aligned else 0.0, gdt)

    def corners(cd):
        x1, y1, x2, y2 = (cd[:, i] for i in range(4))
        return (no_fma(x1 * s) - off, no_fma(y1 * s) - off,
                no_fma(x2 * s) - off, no_fma(y2 * s) - off)

    xs, ys, xe, ye = corners(coords)
    finite = (jnp.isfinite(xs) & jnp.isfinite(ys) & jnp.isfinite(xe) & jnp.isfinite(ye)
              & jnp.isfinite(xe - xs) & jnp.isfinite(ye - ys))
    alive = alive & finite
    coords = jnp.where(alive[:, None], coords, jnp.zeros((), gdt))  # dead rows: no NaN
    xs, ys, xe, ye = corners(coords)
    b = jnp.clip(jnp.where(alive, bidx, 0), 0, n - 1).astype(jnp.uint32)

    rw = xe - xs
    rh = ye - ys
    if not aligned:
        one = jnp.ones((), gdt)
        rw = jnp.where(rw < 1, one, rw)  # std::max(rw, 1): clamped only when rw < 1
        rh = jnp.where(rh < 1, one, rh)
    bh = exact_div(rh, PH)
    bw = exact_div(rw, PW)

    if sr > 0:
        gh = gw = jnp.full((k,), sr, jnp.int32)
    else:
        gh = jnp.clip(jnp.ceil(lax.stop_gradient(bh)), 0, cap).astype(jnp.int32)
        gw = jnp.clip(jnp.ceil(lax.stop_gradient(bw)), 0, cap).astype(jnp.int32)
    ghf = jnp.maximum(gh, 1).astype(gdt)  # divisors; a grid of 0 has no sample to place
    gwf = jnp.maximum(gw, 1).astype(gdt)
    count = jnp.maximum(gh * gw, 1).astype(gdt)

    # ---- per-axis sample geometry, (G, K, P) arrays: G grid indices, P bins ---------
    # Precomputed and stacked so that the loops below read it from memory: fused into
    # the per-(K, PH, PW, C) loops, XLA would recompute it for every channel.  At least 2
    # grid indices, so that the loops below are real loops (see `loop`).
    g = sr if sr > 0 else cap
    g_loop = max(g, 2)

    def axis_geometry(start, bsz, gdiv, p, size):
        a = start[:, None] + no_fma(jnp.arange(p, dtype=gdt)[None, :] * bsz[:, None])
        i = jnp.arange(g_loop, dtype=gdt)[:, None]
        t = exact_div((i + 0.5) * bsz[None, :], gdiv[None, :])  # ((i + .5)*b) / g
        inwin, lo, hi, l, h = axis_interp(a[None] + t[:, :, None], size)  # ys + p*b + t
        return inwin, lo.astype(jnp.uint32), hi.astype(jnp.uint32), l, h

    iny, ylo, yhi, ly, hy = axis_geometry(ys, bh, ghf, PH, hgt)
    inx, xlo, xhi, lx, hx = axis_geometry(xs, bw, gwf, PW, wid)
    base = (b * (hgt * wid))[None, :, None]
    ygeo = (iny, base + ylo * wid, base + yhi * wid, ly, hy)
    xgeo = (inx, xlo, xhi, lx, hx)

    def sample(table, yg, xg):
        """Bilinear value of one sample (iy, ix) of every bin, (K, PH, PW, C)."""
        iny, rlo, rhi, ly, hy = yg  # (K, PH)
        inx, xlo, xhi, lx, hx = xg  # (K, PW)
        ws = (hy[:, :, None] * hx[:, None, :], hy[:, :, None] * lx[:, None, :],
              ly[:, :, None] * hx[:, None, :], ly[:, :, None] * lx[:, None, :])
        idxs = (rlo[:, :, None] + xlo[:, None, :], rlo[:, :, None] + xhi[:, None, :],
                rhi[:, :, None] + xlo[:, None, :], rhi[:, :, None] + xhi[:, None, :])
        val = None
        for w, f in zip(ws, gather_rows(table, idxs)):
            p = no_fma(w[..., None] * f)
            val = p if val is None else val + p  # ((w1 f1 + w2 f2) + w3 f3) + w4 f4
        inwin = iny[:, :, None] & inx[:, None, :]
        return jnp.where(inwin[..., None], val, jnp.zeros((), gdt))

    # ---- loop over the samples of a bin, iy-major, ix-minor ------------------------
    # Nested scans.  Their carry is materialised, so that the NCHW transpose at the end is
    # not fused into the gathers (which would then read one float per row); XLA inlines
    # a loop of one step, hence g_loop >= 2 with the extra steps skipped by lax.cond.
    # Adaptive grids also skip the steps beyond the largest grid in the batch.
    adaptive = sr <= 0
    if adaptive:
        lim_h = jnp.max(gh, initial=0)
        lim_w = jnp.max(gw, initial=0)
    else:
        lim_h = lim_w = g

    def loop(step, carry, tab):
        """``carry = step(carry, tab, iy, ix, y geometry of iy, x geometry of ix)`` in order.

        A grid that skips steps (adaptive, or sr = 1 in a loop of 2) runs
        numerics.cell_loop, ``tab`` (the features) carried through its conds; a fixed
        grid runs plain nested scans over the geometry, closing over ``tab`` (its
        cotangent is then the transposed scans' carry too: 10-13 ms forward+backward on
        the bench's small head, against 18 ms through cell_loop). Every step is a
        ``jax.checkpoint``: the backward pass recomputes it, so that nothing of size
        (K, PH, PW, C) is stored per step."""
        if adaptive or g < g_loop:
            def cell(c, t, iy, ix):
                return step(c, t, iy, ix, tuple(a[iy] for a in ygeo), tuple(a[ix] for a in xgeo))

            return cell_loop(g_loop, g_loop, lim_h, lim_w, cell, carry, tab)
        steps = jnp.arange(g_loop, dtype=jnp.int32)

        def outer(cr, ysl):
            iy, yg = ysl

            def inner(c, xsl):
                ix, xg = xsl
                return jax.checkpoint(step)(c, tab, iy, ix, yg, xg), None

            return lax.scan(inner, cr, (steps, xgeo))[0], None

        return lax.scan(outer, carry, (steps, ygeo))[0]

    def sample_mask(iy, ix):
        """Per-roi grid membership of sample (iy, ix), or None for a fixed grid."""
        if not adaptive:
            return None
        return ((iy < gh) & (ix < gw))[:, None, None, None]

    zeros = loop_carry(jnp.zeros((k, PH, PW, c), gdt), features, rois)
    if mode == "avg":
        def step(acc, tab, iy, ix, yg, xg):
            val = sample(tab, yg, xg)
            m = sample_mask(iy, ix)
            return acc + val if m is None else jnp.where(m, acc + val, acc)

        acc = loop(step, zeros, table)
        out = exact_div(acc, count[:, None, None, None])
    else:
        # Pass 1 (no gradient): first arg-max sample of every output element.  Outside
        # samples are 0 and can win; NaN values never win.
        tsg = lax.stop_gradient(table)

        def step1(carry, tab, iy, ix, yg, xg):
            best, arg = carry
            val = sample(tab, lax.stop_gradient(yg), lax.stop_gradient(xg))
            better = (val > best) | ((arg < 0) & (val == val))  # the first non-NaN wins
            m = sample_mask(iy, ix)
            if m is not None:
                better = better & m
            return jnp.where(better, val, best), jnp.where(better, iy * g + ix, arg)

        _, arg = loop(step1, loop_carry((jnp.full((k, PH, PW, c), -jnp.inf, gdt),
                                         jnp.full((k, PH, PW, c), -1, jnp.int32)), features, rois),
                      tsg)

        # Pass 2 (differentiable): select the arg-max sample's value.  An empty grid
        # (or an all-NaN bin) keeps arg == -1 and gives 0.
        def step2(out, tab, iy, ix, yg, xg):
            return jnp.where(arg == iy * g + ix, sample(tab, yg, xg), out)

        out = loop(step2, zeros, table)

    out = jnp.where(alive[:, None, None, None], out, jnp.zeros((), gdt))
    out = out.astype(features.dtype)
    if layout == "NCHW":
        out = jnp.transpose(out, (0, 3, 1, 2))
    return out
