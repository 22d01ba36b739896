"""Plain-Python loop transcriptions of docs/semantics.md's roi_pool, ps_roi_align, ps_roi_pool and
legacy ops: the tests' independent oracles (companions of ``loop_reference.py``).

Scalar loops, float64 by default.  With ``dtype=np.float32`` every floating operation is
an IEEE float32 operation on NumPy scalars in the peers' order (torchvision's CPU kernels
for the first three), which emulates them bit for bit; integer quantities (rounded
corners, roi sizes, bin edges) are exact Python integers, as the kernels' int64.

Same normalised arguments as ``jax_roialign._src.reference``: ``features`` ``(N, C, H, W)``
(NCHW) or ``(N, H, W, C)`` (NHWC), ``rois`` ``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]``;
results ``(K, C_out, PH, PW)`` / ``(K, PH, PW, C_out)`` in ``dtype``.  A roi whose batch
index is not an integer in ``[0, N)`` gives 0.

Loops never visit what lies outside the map one item at a time: pool bins are clipped to
the map first, ps_roi_align's in-window sample range is found by bisection
(``loop_reference._window_range``), legacy has one point per lattice node.
"""

from __future__ import annotations

import math

import numpy as np

from loop_reference import _bilinear, _geometry, _positions, _valid_batch, _window_range

__all__ = ["roi_pool_numpy", "ps_roi_pool_numpy", "ps_roi_align_numpy", "legacy_numpy"]

MAX_CORNER = 10 ** 15  # cc/roi_pool.h: rounded corners saturate here


def _nhwc(features, layout):
    f = np.asarray(features)
    return f if layout == "NHWC" else f.transpose(0, 2, 3, 1)


def _layout(out, layout):
    return out if layout == "NHWC" else out.transpose(0, 3, 1, 2)


def _c_round(v):
    """C ``round``: half away from zero, as an exact Python int (saturated)."""
    v = float(v)  # exact for float32 and float64
    r = math.trunc(v)
    if abs(v - r) >= 0.5:
        r += 1 if v > 0 else -1
    return max(-MAX_CORNER, min(MAX_CORNER, r))


def _pool_bins(lo, hi, s, P, extent, ps, T):
    """torchvision's bin edges along one axis: [(begin, end)] for p in [0, P), clipped to
    [0, extent] (roi_pool) or [0, extent - 1] (ps_roi_pool); None if a corner is not
    finite (every bin empty)."""
    l, h = T(lo) * s, T(hi) * s
    if not (math.isfinite(float(l)) and math.isfinite(float(h))):
        return None
    start, end = _c_round(l), _c_round(h)
    size = max(end - start + (0 if ps else 1), 1)
    bin_size = T(size) / T(P)  # T(int) is correctly rounded (|size| < 2**53)
    limit = extent - 1 if ps else extent
    clip = lambda v: min(max(v, 0), limit)
    return [(clip(math.floor(float(T(p) * bin_size)) + start),
             clip(math.ceil(float(T(p + 1) * bin_size)) + start)) for p in range(P)]


def _pool(features, rois, p_h, p_w, spatial_scale, layout, dtype, ps, return_argmax=False):
    T = np.dtype(dtype).type
    f = _nhwc(features, layout).astype(dtype)
    rois = np.asarray(rois, np.float64)
    n, h, w, c = f.shape
    p_h, p_w = int(p_h), int(p_w)
    c_out = c // (p_h * p_w) if ps else c
    s = T(spatial_scale)
    out = np.zeros((rois.shape[0], p_h, p_w, c_out), dtype)
    argmax = np.full(out.shape + (3,), -1, np.int64)  # (image, y, x) of the winner
    for k, roi in enumerate(rois):
        if not _valid_batch(roi[0], n):
            continue
        b = int(roi[0])
        ys = _pool_bins(roi[2], roi[4], s, p_h, h, ps, T)
        xs = _pool_bins(roi[1], roi[3], s, p_w, w, ps, T)
        if ys is None or xs is None:
            continue
        for ph in range(p_h):
            y0, y1 = ys[ph]
            for pw in range(p_w):
                x0, x1 = xs[pw]
                if y1 <= y0 or x1 <= x0:
                    continue  # empty bin: 0
                for co in range(c_out):
                    ch = (co * p_h + ph) * p_w + pw if ps else co
                    if ps:  # torchvision: out_sum += v, row-major; out_sum / area
                        acc = T(0)
                        for y in range(y0, y1):
                            for x in range(x0, x1):
                                acc = acc + f[b, y, x, ch]
                        out[k, ph, pw, co] = acc / T((y1 - y0) * (x1 - x0))
                    else:  # first maximum in row-major order; NaN never wins
                        best, arg = None, (-1, -1, -1)
                        for y in range(y0, y1):
                            for x in range(x0, x1):
                                v = f[b, y, x, ch]
                                if (best is None and v == v) or (best is not None and v > best):
                                    best, arg = v, (b, y, x)
                        out[k, ph, pw, co] = 0 if best is None else best
                        argmax[k, ph, pw, co] = arg
    if return_argmax:
        return _layout(out, layout), (argmax if layout == "NHWC"
                                      else argmax.transpose(0, 3, 1, 2, 4))
    return _layout(out, layout)


def roi_pool_numpy(features, rois, pooled_height, pooled_width, spatial_scale, layout,
                   dtype=np.float64, return_argmax=False):
    """docs/semantics.md roi_pool as torchvision computes it (float bin edges ``floor(p*bin)``,
    ``ceil((p+1)*bin)``, ``bin = T(size)/T(P)``; corners ``round`` half away from zero,
    saturated at 1e15 like cc/roi_pool.h; edges clipped to ``[0, H]``; +1 in the size).

    Max over the bin's cells, first maximum in row-major order; empty bin 0.  With
    ``return_argmax`` also returns the winners' ``(image, y, x)`` (-1: none), shaped like
    the output plus a trailing 3.
    """
    return _pool(features, rois, pooled_height, pooled_width, spatial_scale, layout, dtype,
                 False, return_argmax)


def ps_roi_pool_numpy(features, rois, pooled_height, pooled_width, spatial_scale, layout,
                      dtype=np.float64):
    """docs/semantics.md ps_roi_pool as torchvision's forward computes it: no +1 in the roi size,
    edges clipped to ``[0, H-1]`` / ``[0, W-1]``, average over the bin's cells (summed in
    row-major order, divided by the area), empty bin 0; output channel ``c`` of bin
    ``(ph, pw)`` reads input channel ``(c*PH + ph)*PW + pw``."""
    return _pool(features, rois, pooled_height, pooled_width, spatial_scale, layout, dtype,
                 True)


def ps_roi_align_numpy(features, rois, pooled_height, pooled_width, spatial_scale,
                       sampling_ratio, layout, dtype=np.float64, adaptive_grid_cap=None,
                       max_samples=10 ** 7):
    """docs/semantics.md ps_roi_align: roi_align's aligned geometry (0.5 offset, no size clamp),
    ``gh x gw`` grid (``sampling_ratio`` or ``ceil(rh/PH)``, clamped to
    ``adaptive_grid_cap`` if given), average with divisor ``max(gh*gw, 1)`` (empty grid 0),
    position-sensitive channels.  torchvision's order: ``y = (ph*bh + ys) + ((iy+.5)*bh)/gh``,
    ``out_sum += val`` iy-major, then ``out_sum / count``.

    Raises ``ValueError`` rather than loop for ever when a bin has more than
    ``max_samples`` in-window samples: with an unbounded adaptive grid, a box far larger
    than the map in precision terms (e.g. ``±1e12`` in float32) puts ~``ulp(x1*s)``
    consecutive samples on the same in-window position."""
    T = np.dtype(dtype).type
    f = _nhwc(features, layout).astype(dtype)
    rois = np.asarray(rois, np.float64)
    n, h, w, c = f.shape
    p_h, p_w = int(pooled_height), int(pooled_width)
    c_out = c // (p_h * p_w)
    out = np.zeros((rois.shape[0], p_h, p_w, c_out), dtype)
    for k, roi in enumerate(rois):
        if not _valid_batch(roi[0], n):
            continue
        g = _geometry(roi, p_h, p_w, spatial_scale, int(sampling_ratio), True,
                      adaptive_grid_cap, T)
        if g is None:
            continue
        ys, xs, bh, bw, gh, gw = g
        fb = f[int(roi[0])]
        count = T(max(gh * gw, 1))
        for ph in range(p_h):
            ypos = _positions(ys, ph, bh, gh, T)
            ry = _window_range(ypos, gh, h)
            for pw in range(p_w):
                xpos = _positions(xs, pw, bw, gw, T)
                rx = _window_range(xpos, gw, w)
                if len(ry) * len(rx) > max_samples:
                    raise ValueError(f"roi {k}: {len(ry) * len(rx)} in-window samples in bin "
                                     f"({ph}, {pw}) (positions collapse); see max_samples")
                chans = [(co * p_h + ph) * p_w + pw for co in range(c_out)]
                fc = fb[:, :, chans]
                acc = np.zeros(c_out, dtype)
                for iy in ry:
                    for ix in rx:
                        acc = acc + _bilinear(fc, ypos(iy), xpos(ix), T)
                out[k, ph, pw] = acc / count
    return _layout(out, layout)


def _legacy_lattice(fb, roi, a_h, a_w, s, T):
    """faster-rcnn.pytorch ``ROIAlignForwardCpu`` on an ``a_h x a_w`` lattice for one roi:
    ``(a_h, a_w, C)`` values.  Transcribed from the original, with docs/semantics.md's fixes: a
    non-finite position is outside (the original compares NaN as inside), and ``H == 1``
    (``W == 1``) reads its single row twice instead of row -1 (cc/legacy.h).  None when a
    scaled corner or size is not finite (docs/semantics.md: the roi gives 0)."""
    height, width, c = fb.shape
    rs_w, rs_h = T(roi[1]) * s, T(roi[2]) * s
    re_w, re_h = T(roi[3]) * s, T(roi[4]) * s
    if not all(math.isfinite(float(v)) for v in (rs_w, rs_h, re_w, re_h, re_w - rs_w,
                                                  re_h - rs_h)):
        return None  # docs/semantics.md: non-finite coordinates give 0
    roi_w = max(re_w - rs_w + T(1), T(0))  # fmaxf(roi_end_w - roi_start_w + 1., 0.)
    roi_h = max(re_h - rs_h + T(1), T(0))
    bin_h = roi_h / T(a_h - 1)
    bin_w = roi_w / T(a_w - 1)
    out = np.zeros((a_h, a_w, c), fb.dtype)
    for ph in range(a_h):
        hh = T(ph) * bin_h + rs_h
        for pw in range(a_w):
            ww = T(pw) * bin_w + rs_w
            if not (0 <= hh < height and 0 <= ww < width):
                continue  # "if (h < 0 || h >= height || w < 0 || w >= width) top = 0"
            hstart = 0 if height == 1 else min(math.floor(hh), height - 2)
            wstart = 0 if width == 1 else min(math.floor(ww), width - 2)
            hend = min(hstart + 1, height - 1)
            wend = min(wstart + 1, width - 1)
            hr = hh - T(hstart)
            wr = ww - T(wstart)
            out[ph, pw] = (fb[hstart, wstart] * (T(1) - hr) * (T(1) - wr)
                           + fb[hstart, wend] * (T(1) - hr) * wr
                           + fb[hend, wstart] * hr * (T(1) - wr)
                           + fb[hend, wend] * hr * wr)
    return out


def legacy_numpy(features, rois, pooled_height, pooled_width, spatial_scale, variant, layout,
                 dtype=np.float64):
    """faster-rcnn.pytorch's RoIAlign layers (docs/semantics.md "legacy").

    ``"plain"``: ``RoIAlign(PH, PW, s)``, the lattice itself; ``"avg"`` / ``"max"``:
    ``RoIAlignAvg`` / ``RoIAlignMax``, ``RoIAlign(PH+1, PW+1, s)`` followed by a 2x2
    average / max pool with stride 1 (``avg_pool2d`` / ``max_pool2d``)."""
    T = np.dtype(dtype).type
    f = _nhwc(features, layout).astype(dtype)
    rois = np.asarray(rois, np.float64)
    n, h, w, c = f.shape
    p_h, p_w = int(pooled_height), int(pooled_width)
    extra = 0 if variant == "plain" else 1
    if variant not in ("plain", "avg", "max"):
        raise ValueError(variant)
    if p_h + extra < 2 or p_w + extra < 2:
        raise ValueError("the lattice needs at least 2 nodes per axis")
    s = T(spatial_scale)
    out = np.zeros((rois.shape[0], p_h, p_w, c), dtype)
    for k, roi in enumerate(rois):
        if not _valid_batch(roi[0], n):
            continue
        lat = _legacy_lattice(f[int(roi[0])], roi, p_h + extra, p_w + extra, s, T)
        if lat is None:
            continue
        if variant == "plain":
            out[k] = lat
            continue
        for ph in range(p_h):
            for pw in range(p_w):
                win = [lat[ph, pw], lat[ph, pw + 1], lat[ph + 1, pw], lat[ph + 1, pw + 1]]
                if variant == "avg":
                    out[k, ph, pw] = (((win[0] + win[1]) + win[2]) + win[3]) / T(4)
                else:  # NaN never wins; a window of NaN gives 0
                    best = np.fmax(np.fmax(win[0], win[1]), np.fmax(win[2], win[3]))
                    out[k, ph, pw] = np.where(np.isnan(best), 0, best)
    return _layout(out, layout)
