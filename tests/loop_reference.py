"""Plain-Python loop transcription of docs/semantics.md's roi_align: the tests' independent oracle.

Like torchvision's ``test_ops.py`` reference: scalar loops, no vectorisation, float64 by
default.  With ``dtype=np.float32`` every operation is an IEEE float32 operation on NumPy
scalars in torchvision's CPU order (no FMA), which emulates torchvision bit for bit.

The adaptive grid is unbounded (``adaptive_grid_cap=None``, docs/semantics.md) or clamped like the
pure-JAX reference.  Samples outside ``[-1, H] x [-1, W]`` are never visited one by one:
the in-window index range is found from the (monotone) sample positions, so a box of
1e9 pixels costs what a box the size of the map costs.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["roi_align_numpy", "roi_align_numpy_box_grad"]


def _valid_batch(b, n):
    b = float(b)
    return math.isfinite(b) and b == math.floor(b) and 0 <= b < n


def _geometry(roi, p_h, p_w, s, sr, aligned, cap, T):
    s = T(s)
    off = T(0.5) if aligned else T(0.0)
    x1, y1, x2, y2 = (T(v) for v in roi[1:5])
    xs, ys = x1 * s - off, y1 * s - off
    xe, ye = x2 * s - off, y2 * s - off
    rw, rh = xe - xs, ye - ys
    if not aligned:
        rw = rw if not rw < T(1) else T(1)
        rh = rh if not rh < T(1) else T(1)
    bw, bh = rw / T(p_w), rh / T(p_h)
    if not all(math.isfinite(float(v)) for v in (xs, ys, xe, ye, rw, rh, bw, bh)):
        return None  # every sample lands outside the window (NaN / inf positions)
    if sr > 0:
        gh = gw = sr
    else:
        gh, gw = max(math.ceil(float(bh)), 0), max(math.ceil(float(bw)), 0)
        if cap is not None:
            gh, gw = min(gh, cap), min(gw, cap)
    return ys, xs, bh, bw, gh, gw


def _positions(start, p, bsz, g, T):
    """Sample positions of bin p as a function of the sample index."""
    a = start + T(p) * bsz
    return lambda i: a + (T(i) + T(0.5)) * bsz / T(g)


def _window_range(pos, g, size):
    """Contiguous range of sample indices in [0, g) whose position lies in [-1, size].

    Positions are monotone in the index (every rounding is monotone), so locate the
    boundaries by bisection and check them exactly."""
    if g <= 0:
        return range(0)
    inside = lambda i: -1 <= float(pos(i)) <= size
    p0, p1 = float(pos(0)), float(pos(g - 1))
    if p0 <= p1:
        below = lambda i: float(pos(i)) < -1   # true on a prefix
        above = lambda i: float(pos(i)) > size  # true on a suffix
    else:
        below = lambda i: float(pos(i)) > size
        above = lambda i: float(pos(i)) < -1
    # first index not below
    lo, hi = 0, g
    while lo < hi:
        mid = (lo + hi) // 2
        if below(mid):
            lo = mid + 1
        else:
            hi = mid
    first = lo
    lo, hi = first, g
    while lo < hi:  # first index above
        mid = (lo + hi) // 2
        if above(mid):
            hi = mid
        else:
            lo = mid + 1
    r = range(first, lo)
    assert all(inside(i) for i in (r[:1] or [])) and all(inside(i) for i in (r[-1:] or []))
    return r


def _axis(v, size, T):
    """docs/semantics.md per-axis bilinear rules: (low, high, l, clamped)."""
    clamped = False
    if v <= 0:
        v = T(0)
        clamped = True
    lo = int(math.floor(float(v)))
    if lo >= size - 1:
        lo = hi = size - 1
        v = T(lo)
        clamped = True
    else:
        hi = lo + 1
    return lo, hi, v - T(lo), clamped


def _bilinear(f, y, x, T):
    """f: (H, W, C) slice as dtype T. Returns (C,) values."""
    h, w = f.shape[:2]
    yl, yh, ly, _ = _axis(y, h, T)
    xl, xh, lx, _ = _axis(x, w, T)
    hy, hx = T(1) - ly, T(1) - lx
    w1, w2, w3, w4 = hy * hx, hy * lx, ly * hx, ly * lx
    return ((w1 * f[yl, xl] + w2 * f[yl, xh]) + w3 * f[yh, xl]) + w4 * f[yh, xh]


def _nhwc(features, layout):
    f = np.asarray(features)
    return f if layout == "NHWC" else f.transpose(0, 2, 3, 1)


def roi_align_numpy(features, rois, pooled_height, pooled_width, spatial_scale,
                    sampling_ratio, aligned, mode, layout, dtype=np.float64,
                    adaptive_grid_cap=None):
    """docs/semantics.md roi_align, scalar loops in ``dtype`` (float64 by default).

    Returns ``(K, C, PH, PW)`` (NCHW) or ``(K, PH, PW, C)`` (NHWC) in ``dtype``.
    """
    T = np.dtype(dtype).type
    f = _nhwc(features, layout).astype(dtype)
    rois = np.asarray(rois, np.float64)
    n, h, w, c = f.shape
    ph_, pw_ = int(pooled_height), int(pooled_width)
    out = np.zeros((rois.shape[0], ph_, pw_, c), dtype)
    for k, roi in enumerate(rois):
        if not _valid_batch(roi[0], n):
            continue
        g = _geometry(roi, ph_, pw_, spatial_scale, int(sampling_ratio), aligned,
                      adaptive_grid_cap, T)
        if g is None:
            continue
        ys, xs, bh, bw, gh, gw = g
        fb = f[int(roi[0])]
        count = T(max(gh * gw, 1))
        for ph in range(ph_):
            ypos = _positions(ys, ph, bh, gh, T)
            ry = _window_range(ypos, gh, h)
            for pw in range(pw_):
                xpos = _positions(xs, pw, bw, gw, T)
                rx = _window_range(xpos, gw, w)
                if mode == "avg":
                    acc = np.zeros(c, dtype)
                    for iy in ry:
                        for ix in rx:
                            acc = acc + _bilinear(fb, ypos(iy), xpos(ix), T)
                    out[k, ph, pw] = acc / count
                else:
                    if gh * gw == 0:
                        continue
                    best = np.full(c, np.nan, dtype)  # fmax: NaN samples never win
                    if len(ry) * len(rx) < gh * gw:
                        best = np.zeros(c, dtype)  # some sample is outside: a 0 that can win
                    for iy in ry:
                        for ix in rx:
                            best = np.fmax(best, _bilinear(fb, ypos(iy), xpos(ix), T))
                    out[k, ph, pw] = np.where(np.isnan(best), 0, best)
    return out if layout == "NHWC" else out.transpose(0, 3, 1, 2)


def roi_align_numpy_box_grad(features, rois, cot, pooled_height, pooled_width,
                             spatial_scale, sampling_ratio, aligned, layout,
                             adaptive_grid_cap=None):
    """Analytic float64 gradient of ``sum(avg roi_align * cot)`` w.r.t. ``rois[:, 1:5]``,
    written from docs/semantics.md's formulas (``∂y/∂y1 = s*(1 - (ph + (iy+.5)/gh)/PH)``, ...), with
    clamped and out-of-window samples contributing 0.  Returns ``(K, 4)``."""
    T = np.float64
    f = _nhwc(features, layout).astype(T)
    cot = _nhwc(cot, layout).astype(T)  # (K, PH, PW, C)
    rois = np.asarray(rois, T)
    n, h, w, c = f.shape
    ph_, pw_ = int(pooled_height), int(pooled_width)
    s = float(spatial_scale)
    grad = np.zeros((rois.shape[0], 4), T)
    for k, roi in enumerate(rois):
        if not _valid_batch(roi[0], n):
            continue
        g = _geometry(roi, ph_, pw_, s, int(sampling_ratio), aligned, adaptive_grid_cap, T)
        if g is None:
            continue
        ys, xs, bh, bw, gh, gw = g
        off = 0.5 if aligned else 0.0
        rw_clamped = (not aligned) and (roi[3] * s - off) - (roi[1] * s - off) < 1
        rh_clamped = (not aligned) and (roi[4] * s - off) - (roi[2] * s - off) < 1
        fb = f[int(roi[0])]
        count = max(gh * gw, 1)
        for ph in range(ph_):
            ypos = _positions(ys, ph, bh, gh, T)
            for pw in range(pw_):
                xpos = _positions(xs, pw, bw, gw, T)
                for iy in _window_range(ypos, gh, h):
                    fy = (ph + (iy + 0.5) / gh) / ph_
                    dy = (s, 0.0) if rh_clamped else (s * (1 - fy), s * fy)
                    for ix in _window_range(xpos, gw, w):
                        fx = (pw + (ix + 0.5) / gw) / pw_
                        dx = (s, 0.0) if rw_clamped else (s * (1 - fx), s * fx)
                        yl, yh, ly, cy = _axis(ypos(iy), h, T)
                        xl, xh, lx, cx = _axis(xpos(ix), w, T)
                        ct = cot[k, ph, pw] / count
                        # ∂bilinear/∂y and ∂bilinear/∂x, 0 when clamped on that axis
                        dvy = 0.0 if cy else np.dot(ct, (1 - lx) * (fb[yh, xl] - fb[yl, xl])
                                                    + lx * (fb[yh, xh] - fb[yl, xh]))
                        dvx = 0.0 if cx else np.dot(ct, (1 - ly) * (fb[yl, xh] - fb[yl, xl])
                                                    + ly * (fb[yh, xh] - fb[yh, xl]))
                        grad[k, 0] += dvx * dx[0]
                        grad[k, 2] += dvx * dx[1]
                        grad[k, 1] += dvy * dy[0]
                        grad[k, 3] += dvy * dy[1]
    return grad
