"""Pure ``jax.numpy`` cores of SPEC.md's roi_pool, ps_roi_align, ps_roi_pool and legacy ops.

The companions of ``reference.roi_align_core`` (same conventions, same helpers, imported
from ``reference``): normalised arguments only, no validation, no rois-form handling.

* ``roi_pool_core``      max over the integer cells of each bin (cc/roi_pool.h);
* ``ps_roi_align_core``  roi_align's aligned geometry, average, position-sensitive channels;
* ``ps_roi_pool_core``   average over the cells of each bin, position-sensitive channels;
* ``legacy_core``        faster-rcnn.pytorch's RoIAlign / RoIAlignAvg / RoIAlignMax
                         (cc/legacy.h, cc/cpu/plan.h ``build_legacy``).

Arguments: ``features`` ``(N, C, H, W)`` (``layout == "NCHW"``) or ``(N, H, W, C)``
(``"NHWC"``); ``rois`` ``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]``; ``PH, PW`` the
output size; ``spatial_scale`` ``s``.  The output is ``(K, C_out, PH, PW)`` (NCHW) or
``(K, PH, PW, C_out)`` (NHWC) in the features' dtype, ``C_out = C / (PH*PW)`` for the
position-sensitive ops (output channel ``c`` of bin ``(ph, pw)`` reads input channel
``(c*PH + ph)*PW + pw``), else ``C``.

Floating point
--------------
As in ``reference``: geometry in float32 (float64 for float64 features), accumulation in
float32 for 16-bit features, torchvision's / the kernels' operation order with ``_no_fma``
around products that feed additions and ``_exact_div`` for divisions by constants or
broadcasts, so that float32 results are those of an IEEE evaluation in that order.

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

The cells of a bin are visited by two nested ``lax.scan`` loops, rows outer, columns
inner, over a static bound of ``H`` (``W``) cells; a ``lax.cond`` skips the steps beyond
the largest bin span present, so the cost follows the largest roi in the batch, and a
huge box costs what a box the size of the map costs.  roi_pool's winner is the first
cell in row-major order (taken unconditionally, later cells replace it only when
strictly greater: cc/cpu/plan.h ``max_winner``); the output gathers the winning cell,
so the gradient w.r.t. features goes to that cell only.  ps_roi_pool sums the cells in
row-major order and divides by the bin's area.  Both are piecewise constant in the box:
the box coordinates get a zero gradient.

Bad data
--------
As ``reference.roi_align_core``: a roi whose batch index is not an integer in ``[0, N)``
(NaN included) or whose scaled corners (or, for the align ops, sizes) are not finite is
dead: output 0, coordinates replaced by 0 before any geometry (no NaN in any gradient),
and every read is in bounds.

Known deviation from SPEC.md (as ``reference``): ``ps_roi_align_core``'s adaptive grid is
clamped to ``adaptive_grid_cap`` per axis (see ``reference``'s module docstring).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .reference import ADAPTIVE_GRID_CAP, _axis_interp, _exact_div, _no_fma, _valid_batch_index

__all__ = ["roi_pool_core", "ps_roi_align_core", "ps_roi_pool_core", "legacy_core",
           "LEGACY_VARIANTS"]

#: ``legacy_core`` variants: RoIAlign (one lattice node per bin), RoIAlignAvg, RoIAlignMax.
LEGACY_VARIANTS = ("plain", "avg", "max")

# cc/roi_pool.h kMaxCorner: rounded corners saturate here.
_MAX_CORNER = 1.0e15

# ps_roi_align: fixed grids with at most this many samples per bin are unrolled in Python;
# larger ones (and adaptive grids) run in a lax.scan.
_MAX_UNROLLED_SAMPLES = 16


# ----------------------------------------------------------------------------- shared

def _geometry_dtype(features):
    return jnp.float64 if features.dtype == jnp.float64 else jnp.float32


def _table(features, layout, PH, PW, position_sensitive):
    """The features as a ``(rows, C_out)`` table and ``(N, H, W, C_out)``.

    Row of (image b, bin (ph, pw), cell (y, x)): ``base + y*W + x`` with ``base`` from
    ``_bases``.  Position-sensitive: the table is ``(N, PH, PW, H, W, C_out)`` so that the
    channels bin (ph, pw) reads, ``(c*PH + ph)*PW + pw`` for c in [0, C_out), form a row.
    """
    if layout == "NCHW":
        n, c, hgt, wid = features.shape
    elif layout == "NHWC":
        n, hgt, wid, c = features.shape
    else:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if not position_sensitive:
        t = jnp.transpose(features, (0, 2, 3, 1)) if layout == "NCHW" else features
        return t.reshape(n * hgt * wid, c), (n, hgt, wid, c)
    if c % (PH * PW):
        raise ValueError(f"channels ({c}) must be divisible by PH*PW = {PH * PW}")
    cout = c // (PH * PW)
    if layout == "NCHW":
        t = features.reshape(n, cout, PH, PW, hgt, wid).transpose(0, 2, 3, 4, 5, 1)
    else:
        t = features.reshape(n, hgt, wid, cout, PH, PW).transpose(0, 4, 5, 1, 2, 3)
    return t.reshape(n * PH * PW * hgt * wid, cout), (n, hgt, wid, cout)


def _bases(b, hgt, wid, PH, PW, position_sensitive):
    """``(K, PH, PW)`` int32 table row of cell (0, 0) of every bin (see ``_table``)."""
    k = b.shape[0]
    if position_sensitive:
        ph = jnp.arange(PH, dtype=jnp.int32)[None, :, None]
        pw = jnp.arange(PW, dtype=jnp.int32)[None, None, :]
        return ((b[:, None, None] * PH + ph) * PW + pw) * (hgt * wid)
    return jnp.broadcast_to((b * (hgt * wid))[:, None, None], (k, PH, PW))


def _batch(rois, n):
    """(alive, clipped int32 batch index) from the batch index column."""
    bidx = rois[:, 0]
    alive = _valid_batch_index(bidx, n)
    return alive, bidx


def _image(bidx, alive, n):
    return jnp.clip(jnp.where(alive, bidx, 0).astype(jnp.int32), 0, max(n - 1, 0))


def _finalise(out, alive, dtype, layout):
    """Zero dead rows, cast, and lay out ``(K, PH, PW, C)`` as requested."""
    out = jnp.where(alive[:, None, None, None], out, jnp.zeros((), out.dtype))
    out = out.astype(dtype)
    if layout == "NCHW":
        out = jnp.transpose(out, (0, 3, 1, 2))
    return out


def _gather(table, rows, gdt):
    """``table[rows]`` for int32 ``rows`` (any shape, in bounds), as ``gdt``."""
    return table.at[rows].get(mode="promise_in_bounds").astype(gdt)


def _four_tap(table, base, ty, tx, wid, gdt):
    """Bilinear value ``((w1*f1 + w2*f2) + w3*f3) + w4*f4`` of every (bin) sample.

    ``ty = (low, high, l, h)`` per row ``(K, A)``, ``tx`` per column ``(K, B)``, ``base``
    ``(K, A, B)``; weights ``w1 = hy*hx, w2 = hy*lx, w3 = ly*hx, w4 = ly*lx`` (the kernels'
    ``make_sample`` / torchvision order).  Returns ``(K, A, B, C)``.
    """
    yl, yh, ly, hy = ty
    xl, xh, lx, hx = tx
    rl = base + (yl * wid)[:, :, None]
    rh = base + (yh * wid)[:, :, None]
    terms = ((hy[:, :, None] * hx[:, None, :], rl + xl[:, None, :]),
             (hy[:, :, None] * lx[:, None, :], rl + xh[:, None, :]),
             (ly[:, :, None] * hx[:, None, :], rh + xl[:, None, :]),
             (ly[:, :, None] * lx[:, None, :], rh + xh[:, None, :]))
    val = None
    for w, idx in terms:
        p = _no_fma(w[..., None] * _gather(table, idx, gdt))
        val = p if val is None else val + p
    return val


# ----------------------------------------------------------------------------- pool ops

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
    st_hi, st_lo = _round_corner(_no_fma(lo * s))
    en_hi, en_lo = _round_corner(_no_fma(hi * s))
    plus = 0.0 if position_sensitive else 1.0
    # size = end - start (+1), exact integer, as G correctly rounded; max(size, 1).
    d, err = _two_sum(en_hi, -st_hi)
    size = d + (err + ((en_lo - st_lo) + jnp.asarray(plus, dt)))
    size = jnp.where(size < 1, jnp.ones((), dt), size)
    bin_ = _exact_div(size, P)  # G(size) / G(P)
    limit = extent - 1 if position_sensitive else extent
    p = jnp.arange(P, dtype=dt)[None, :]
    a = jnp.floor(p * bin_[:, None])
    e = jnp.ceil((p + 1) * bin_[:, None])

    def edge(x):
        t = (x + st_hi[:, None]) + st_lo[:, None]
        return jnp.clip(t, 0, limit).astype(jnp.int32)

    return edge(a), edge(e)


def _cell_loop(bound_y, bound_x, max_sy, max_sx, step, carry):
    """``carry = step(carry, dy, dx)`` for dy < bound_y (outer), dx < bound_x (inner),
    skipping (``lax.cond``) dy >= max_sy and dx >= max_sx.

    Every cell and every row is a ``jax.checkpoint`` (recomputed in the backward pass):
    a ``lax.cond`` inside a scan would otherwise store its residuals (the features among
    them) once per step."""
    if bound_y <= 0 or bound_x <= 0:
        return carry
    skip = lambda c: c

    def one_cell(c, dy, dx):
        return lax.cond(dx < max_sx, lambda cc: step(cc, dy, dx), skip, c)

    def one_row(c, dy):
        def inner(cc, dx):
            return jax.checkpoint(one_cell)(cc, dy, dx), None

        row = lambda cc: lax.scan(inner, cc, jnp.arange(bound_x, dtype=jnp.int32))[0]
        return lax.cond(dy < max_sy, row, skip, c)

    def outer(carry, dy):
        return jax.checkpoint(one_row)(carry, dy), None

    carry, _ = lax.scan(outer, carry, jnp.arange(bound_y, dtype=jnp.int32))
    return carry


def _pool(features, rois, PH, PW, spatial_scale, layout, position_sensitive):
    PH, PW = int(PH), int(PW)
    features = jnp.asarray(features)
    rois = jnp.asarray(rois)
    table, (n, hgt, wid, c) = _table(features, layout, PH, PW, position_sensitive)
    gdt = _geometry_dtype(features)
    k = rois.shape[0]

    alive, bidx = _batch(rois, n)
    coords = lax.stop_gradient(rois[:, 1:5].astype(gdt))  # piecewise constant in the box
    s = jnp.asarray(spatial_scale, gdt)
    finite = jnp.all(jnp.isfinite(_no_fma(coords * s)), axis=1)
    alive = alive & finite
    coords = jnp.where(alive[:, None], coords, jnp.zeros((), gdt))
    b = _image(bidx, alive, n)

    y0, y1 = _pool_axis(coords[:, 1], coords[:, 3], s, PH, hgt, position_sensitive)
    x0, x1 = _pool_axis(coords[:, 0], coords[:, 2], s, PW, wid, position_sensitive)
    sy = jnp.maximum(y1 - y0, 0)  # (K, PH)
    sx = jnp.maximum(x1 - x0, 0)  # (K, PW)
    max_sy = jnp.max(sy, initial=0)
    max_sx = jnp.max(sx, initial=0)
    bound_y = hgt - 1 if position_sensitive else hgt  # a bin spans at most `limit` cells
    bound_x = wid - 1 if position_sensitive else wid
    base = _bases(b, hgt, wid, PH, PW, position_sensitive)

    def cell(tab, dy, dx):
        """Rows, values (K, PH, PW, C) and validity (K, PH, PW, 1) of cell (dy, dx)."""
        y = jnp.minimum(y0 + dy, hgt - 1)
        x = jnp.minimum(x0 + dx, wid - 1)
        rows = base + (y * wid)[:, :, None] + x[:, None, :]
        valid = (dy < sy)[:, :, None] & (dx < sx)[:, None, :]
        return rows, _gather(tab, rows, gdt), valid[..., None]

    if position_sensitive:  # average
        def step(acc, dy, dx):
            _, v, valid = cell(table, dy, dx)
            return jnp.where(valid, acc + v, acc)

        acc = _cell_loop(bound_y, bound_x, max_sy, max_sx, step,
                         jnp.zeros((k, PH, PW, c), gdt))
        area = sy[:, :, None] * sx[:, None, :]
        divisor = jnp.maximum(area, 1).astype(gdt)[..., None]
        out = jnp.where((area > 0)[..., None], _exact_div(acc, divisor), jnp.zeros((), gdt))
    else:  # max: first arg-max cell (no gradient), then a differentiable gather
        tsg = lax.stop_gradient(table)

        def step(carry, dy, dx):
            best, arg = carry
            rows, v, valid = cell(tsg, dy, dx)
            take = valid & ((arg < 0) | (v > best))
            return jnp.where(take, v, best), jnp.where(take, rows[..., None], arg)

        _, arg = _cell_loop(bound_y, bound_x, max_sy, max_sx, step,
                            (jnp.zeros((k, PH, PW, c), gdt),
                             jnp.full((k, PH, PW, c), -1, jnp.int32)))
        chan = jnp.arange(c, dtype=jnp.int32)
        v = table.at[jnp.maximum(arg, 0), chan].get(mode="promise_in_bounds").astype(gdt)
        out = jnp.where(arg >= 0, v, jnp.zeros((), gdt))
    return _finalise(out, alive, features.dtype, layout)


def roi_pool_core(features, rois, pooled_height: int, pooled_width: int,
                  spatial_scale: float, layout: str) -> jax.Array:
    """SPEC.md roi_pool (torchvision's float bin edges, cc/roi_pool.h), no validation.

    Max over the bin's cells ``[floor(p*bin) + start, ceil((p+1)*bin) + start)`` clipped to
    ``[0, H]`` (``[0, W]``), ``bin = max(round(x2*s) - round(x1*s) + 1, 1) / PW``; an empty
    bin gives 0; ties go to the first cell in row-major order.  Gradient w.r.t. features:
    to the arg-max cell; w.r.t. the box: 0.
    """
    return _pool(features, rois, pooled_height, pooled_width, spatial_scale, layout, False)


def ps_roi_pool_core(features, rois, pooled_height: int, pooled_width: int,
                     spatial_scale: float, layout: str) -> jax.Array:
    """SPEC.md ps_roi_pool (torchvision's forward, cc/roi_pool.h), no validation.

    Average over the bin's cells with edges clipped to ``[0, H-1]`` (``[0, W-1]``), roi
    size ``max(round(x2*s) - round(x1*s), 1)`` (no +1), position-sensitive channels; an
    empty bin gives 0.  Linear in features (its transpose is the exact backward); zero
    gradient w.r.t. the box.
    """
    return _pool(features, rois, pooled_height, pooled_width, spatial_scale, layout, True)


# ----------------------------------------------------------------------------- ps_roi_align

def ps_roi_align_core(features, rois, pooled_height: int, pooled_width: int,
                      spatial_scale: float, sampling_ratio: int, layout: str,
                      adaptive_grid_cap: int = ADAPTIVE_GRID_CAP) -> jax.Array:
    """SPEC.md ps_roi_align on normalised arguments (no validation).

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
    table, (n, hgt, wid, c) = _table(features, layout, PH, PW, True)
    gdt = _geometry_dtype(features)
    k = rois.shape[0]

    alive, bidx = _batch(rois, n)
    coords = rois[:, 1:5].astype(gdt)
    s = jnp.asarray(spatial_scale, gdt)
    off = jnp.asarray(0.5, gdt)

    def corners(cd):
        x1, y1, x2, y2 = (cd[:, i] for i in range(4))
        return (_no_fma(x1 * s) - off, _no_fma(y1 * s) - off,
                _no_fma(x2 * s) - off, _no_fma(y2 * s) - off)

    xs, ys, xe, ye = corners(coords)
    finite = (jnp.isfinite(xs) & jnp.isfinite(ys) & jnp.isfinite(xe) & jnp.isfinite(ye)
              & jnp.isfinite(xe - xs) & jnp.isfinite(ye - ys))
    alive = alive & finite
    coords = jnp.where(alive[:, None], coords, jnp.zeros((), gdt))
    xs, ys, xe, ye = corners(coords)
    b = _image(bidx, alive, n)

    rw = xe - xs
    rh = ye - ys
    bh = _exact_div(rh, PH)
    bw = _exact_div(rw, PW)
    if sr > 0:
        gh = gw = jnp.full((k,), sr, jnp.int32)
    else:
        gh = jnp.clip(jnp.ceil(lax.stop_gradient(bh)), 0, cap).astype(jnp.int32)
        gw = jnp.clip(jnp.ceil(lax.stop_gradient(bw)), 0, cap).astype(jnp.int32)
    ghf = jnp.maximum(gh, 1).astype(gdt)
    gwf = jnp.maximum(gw, 1).astype(gdt)
    count = jnp.maximum(gh * gw, 1).astype(gdt)

    a_y = ys[:, None] + _no_fma(jnp.arange(PH, dtype=gdt)[None, :] * bh[:, None])
    a_x = xs[:, None] + _no_fma(jnp.arange(PW, dtype=gdt)[None, :] * bw[:, None])
    base = _bases(b, hgt, wid, PH, PW, True)
    geom = (a_y, a_x, bh, bw, ghf, gwf, base)

    def sample(table, geom, iy, ix):
        a_y, a_x, bh, bw, ghf, gwf, base = geom
        ty = _exact_div((jnp.asarray(iy, gdt) + 0.5) * bh, ghf)
        tx = _exact_div((jnp.asarray(ix, gdt) + 0.5) * bw, gwf)
        iny, yl, yh, ly, hy = _axis_interp(a_y + ty[:, None], hgt)
        inx, xl, xh, lx, hx = _axis_interp(a_x + tx[:, None], wid)
        val = _four_tap(table, base, (yl, yh, ly, hy), (xl, xh, lx, hx), wid, gdt)
        inwin = iny[:, :, None] & inx[:, None, :]
        return jnp.where(inwin[..., None], val, jnp.zeros((), gdt))

    def step(acc, iy, ix):
        val = sample(table, geom, iy, ix)
        if sr > 0:
            return acc + val
        m = ((iy < gh) & (ix < gw))[:, None, None, None]
        return jnp.where(m, acc + val, acc)

    acc = jnp.zeros((k, PH, PW, c), gdt)
    if sr > 0 and sr * sr <= _MAX_UNROLLED_SAMPLES:
        # Unrolled, iy-major; each sample recomputed in the backward pass.
        for st in range(sr * sr):
            acc = jax.checkpoint(step)(acc, st // sr, st % sr)
    else:
        # Nested scans, iy outer; adaptive grids skip the steps beyond the largest grid.
        g = sr if sr > 0 else cap
        lim_h = jnp.max(gh, initial=0) if sr <= 0 else g
        lim_w = jnp.max(gw, initial=0) if sr <= 0 else g
        acc = _cell_loop(g, g, lim_h, lim_w, step, acc)
    out = _exact_div(acc, count[:, None, None, None])
    return _finalise(out, alive, features.dtype, layout)


# ----------------------------------------------------------------------------- legacy

def _legacy_axis(lo, hi, s, nodes):
    """cc/legacy.h ``legacy_axis`` + ``position``: node positions ``(K, nodes)``."""
    dt = lo.dtype
    start = _no_fma(lo * s)
    size = (_no_fma(hi * s) - start) + 1  # hi*scale - start + 1, left to right
    size = jnp.where(size < 0, jnp.zeros((), dt), size)  # clamped only when < 0
    bin_ = _exact_div(size, nodes - 1)
    return _no_fma(jnp.arange(nodes, dtype=dt)[None, :] * bin_[:, None]) + start[:, None]


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
    """SPEC.md legacy (faster-rcnn.pytorch RoIAlign layers; cc/legacy.h), no validation.

    ``variant``: ``"plain"`` RoIAlign(PH, PW): one node of a PH x PW lattice per bin
    (PH, PW >= 2); ``"avg"`` / ``"max"`` RoIAlignAvg / RoIAlignMax(PH, PW): a
    (PH+1) x (PW+1) lattice, bin (ph, pw) averages (divisor 4) / maxes its 2x2 nodes.
    A node outside ``[0, H) x [0, W)`` is 0 (it counts in the average and can win the
    max; max ties go to the first node in row-major order, an outside 0 included, as
    cc/cpu/plan.h ``max_winner``).  Differentiable w.r.t. features and box coordinates
    (exact where smooth; the max through its winning node only).
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
    table, (n, hgt, wid, c) = _table(features, layout, PH, PW, False)
    gdt = _geometry_dtype(features)
    k = rois.shape[0]

    alive, bidx = _batch(rois, n)
    coords = rois[:, 1:5].astype(gdt)
    s = jnp.asarray(spatial_scale, gdt)
    scaled = _no_fma(coords * s)
    finite = (jnp.all(jnp.isfinite(scaled), axis=1)
              & jnp.isfinite(scaled[:, 2] - scaled[:, 0])
              & jnp.isfinite(scaled[:, 3] - scaled[:, 1]))
    alive = alive & finite
    coords = jnp.where(alive[:, None], coords, jnp.zeros((), gdt))
    b = _image(bidx, alive, n)

    pos_y = _legacy_axis(coords[:, 1], coords[:, 3], s, LH)  # (K, LH)
    pos_x = _legacy_axis(coords[:, 0], coords[:, 2], s, LW)  # (K, LW)
    iny, yl, yh, ly, hy = _legacy_tap(pos_y, hgt)
    inx, xl, xh, lx, hx = _legacy_tap(pos_x, wid)
    base = jnp.broadcast_to((b * (hgt * wid))[:, None, None], (k, LH, LW))
    nodes = _four_tap(table, base, (yl, yh, ly, hy), (xl, xh, lx, hx), wid, gdt)
    inwin = iny[:, :, None] & inx[:, None, :]  # (K, LH, LW)

    offsets = [(dy, dx) for dy in range(span) for dx in range(span)]  # row-major ordinals

    def node(arr, dy, dx):
        return arr[:, dy:dy + PH, dx:dx + PW]

    if variant in ("plain", "avg"):
        acc = jnp.zeros((k, PH, PW, c), gdt)
        for dy, dx in offsets:
            acc = jnp.where(node(inwin, dy, dx)[..., None], acc + node(nodes, dy, dx), acc)
        out = acc if span == 1 else _exact_div(acc, span * span)
    else:
        # cc/cpu/plan.h max_winner: the first in-window node is taken, a later one only
        # when strictly greater; then an outside node (an implicit 0) wins if the bin has
        # no in-window node, or 0 > best, or 0 == best and it comes first.
        vals = lax.stop_gradient(nodes)
        best = jnp.zeros((k, PH, PW, c), gdt)
        arg = jnp.full((k, PH, PW, c), -1, jnp.int32)
        first_out = jnp.full((k, PH, PW), len(offsets), jnp.int32)
        for o, (dy, dx) in reversed(list(enumerate(offsets))):
            first_out = jnp.where(node(inwin, dy, dx), first_out, o)
        for o, (dy, dx) in enumerate(offsets):
            w = node(inwin, dy, dx)[..., None]
            v = node(vals, dy, dx)
            take = w & ((arg < 0) | (v > best))
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
    return _finalise(out, alive, features.dtype, layout)
