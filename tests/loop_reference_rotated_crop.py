"""Plain-Python loop transcriptions of Detectron2's ROIAlignRotated CPU kernel and
TensorFlow's CropAndResize CPU kernel: the tests' oracles for roi_align_rotated and
crop_and_resize (docs/semantics.md).

Scalar loops in ``dtype`` (float64 by default); with ``dtype=np.float32`` every operation
is the peer's float32 operation in its order, so they emulate the peers bit for bit
(Detectron2's theta and cos/sin are computed in double and rounded once, as its CPU build
does). Rows: rotated ``[batch_index, cx, cy, w, h, angle]``; crop ``[batch_index, y1, x1,
y2, x2]`` normalised. A row whose batch index is not an integer in ``[0, N)`` or whose
coordinates are not finite gives 0 (our bad-data rule; the peers raise or misbehave).

Samples far outside the map are not visited one by one: the rotated oracle takes each
bin's samples from the grid indices whose float64 positions can come within two samples
of the window (a bound, then the exact test).
"""

from __future__ import annotations

import math

import numpy as np

from loop_reference import _bilinear, _nhwc, _valid_batch


def _layout(out, layout):
    return out if layout == "NHWC" else out.transpose(0, 3, 1, 2)


def _index_range(lo, hi, a, d, g):
    """Indices i in [0, g) with a + i*d within [lo, hi] (float64), widened by two."""
    if d == 0:
        return range(g) if lo - 1 <= a <= hi + 1 else range(0)
    f, l = sorted(((lo - a) / d, (hi - a) / d))
    return range(max(0, math.floor(f) - 2), min(g, math.ceil(l) + 3))


def roi_align_rotated_numpy(features, rois, pooled_height, pooled_width, spatial_scale,
                            sampling_ratio, aligned, radians, layout, dtype=np.float64):
    T = np.dtype(dtype).type
    f = _nhwc(features, layout).astype(dtype)
    rois = np.asarray(rois, np.float64)
    n, h, w, c = f.shape
    PH, PW = int(pooled_height), int(pooled_width)
    out = np.zeros((rois.shape[0], PH, PW, c), dtype)
    s = T(spatial_scale)
    off = T(0.5) if aligned else T(0)
    for k, roi in enumerate(rois):
        if not _valid_batch(roi[0], n) or not all(math.isfinite(v) for v in roi[1:]):
            continue
        cx, cy, bw, bh, angle = (T(v) for v in roi[1:6])
        cw, ch = cx * s - off, cy * s - off
        rw, rh = bw * s, bh * s
        theta = T(float(angle) if radians else float(angle) * math.pi / 180.0)
        cos_t, sin_t = T(math.cos(float(theta))), T(math.sin(float(theta)))
        if not all(math.isfinite(float(v)) for v in (cw, ch, rw, rh)):
            continue
        if aligned and (rw < 0 or rh < 0):
            continue  # Detectron2 and mmcv assert; bad data here
        if not aligned:
            rw, rh = max(rw, T(1)), max(rh, T(1))
        bin_h, bin_w = rh / T(PH), rw / T(PW)
        gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil(float(rh / T(PH))), 0)
        gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil(float(rw / T(PW))), 0)
        count = T(max(gh * gw, 1))
        start_h, start_w = -rh / T(2), -rw / T(2)
        fb = f[int(roi[0])]
        # The window's corners in the box frame, in float64, bound the samples to visit.
        corners = [((yy - float(ch)) * float(cos_t) + (xx - float(cw)) * float(sin_t),
                    -(yy - float(ch)) * float(sin_t) + (xx - float(cw)) * float(cos_t))
                   for yy in (-1.0, h) for xx in (-1.0, w)]
        lo_y, hi_y = min(p[0] for p in corners), max(p[0] for p in corners)
        lo_x, hi_x = min(p[1] for p in corners), max(p[1] for p in corners)
        for ph in range(PH):
            for pw in range(PW):
                acc = np.zeros(c, dtype)
                dy = float(bin_h) / gh if gh else 0.0
                dx = float(bin_w) / gw if gw else 0.0
                ys = _index_range(lo_y, hi_y, float(start_h) + ph * float(bin_h) + 0.5 * dy, dy, gh)
                xs = _index_range(lo_x, hi_x, float(start_w) + pw * float(bin_w) + 0.5 * dx, dx, gw)
                for iy in ys:
                    yy = start_h + T(ph) * bin_h + (T(iy) + T(0.5)) * bin_h / T(gh)
                    for ix in xs:
                        xx = start_w + T(pw) * bin_w + (T(ix) + T(0.5)) * bin_w / T(gw)
                        y = yy * cos_t - xx * sin_t + ch
                        x = yy * sin_t + xx * cos_t + cw
                        if y < -1 or y > h or x < -1 or x > w:
                            continue
                        acc = acc + _bilinear(fb, y, x, T)
                out[k, ph, pw] = acc / count
    return _layout(out, layout)


def crop_and_resize_numpy(features, rois, crop_height, crop_width, extrapolation_value,
                          method, layout, dtype=np.float64):
    T = np.dtype(dtype).type
    f = _nhwc(features, layout).astype(dtype)
    rois = np.asarray(rois, np.float64)
    n, h, w, c = f.shape
    CH, CW = int(crop_height), int(crop_width)
    out = np.zeros((rois.shape[0], CH, CW, c), dtype)
    for k, roi in enumerate(rois):
        if not _valid_batch(roi[0], n) or not all(math.isfinite(v) for v in roi[1:]):
            continue
        y1, x1, y2, x2 = (T(v) for v in roi[1:5])
        with np.errstate(over="ignore", invalid="ignore"):  # bad data: scaled overflow
            scaled = [v for lo, hi, e in ((y1, y2, h), (x1, x2, w)) for v in (
                lo * T(e - 1), hi * T(e - 1), (hi - lo) * T(e - 1), T(0.5) * (lo + hi) * T(e - 1))]
        if not all(math.isfinite(v) for v in scaled):
            continue
        hs = (y2 - y1) * T(h - 1) / T(CH - 1) if CH > 1 else T(0)
        ws = (x2 - x1) * T(w - 1) / T(CW - 1) if CW > 1 else T(0)
        fb = f[int(roi[0])]
        for y in range(CH):
            in_y = y1 * T(h - 1) + T(y) * hs if CH > 1 else T(0.5) * (y1 + y2) * T(h - 1)
            for x in range(CW):
                in_x = x1 * T(w - 1) + T(x) * ws if CW > 1 else T(0.5) * (x1 + x2) * T(w - 1)
                if not (0 <= in_y <= h - 1 and 0 <= in_x <= w - 1):
                    out[k, y, x] = T(extrapolation_value)
                    continue
                if method == "nearest":
                    # C's roundf: half away from zero (positions are >= 0 here)
                    out[k, y, x] = fb[int(math.floor(float(in_y) + 0.5)),
                                      int(math.floor(float(in_x) + 0.5))]
                    continue
                top, bottom = math.floor(float(in_y)), math.ceil(float(in_y))
                left, right = math.floor(float(in_x)), math.ceil(float(in_x))
                yl, xl = in_y - T(top), in_x - T(left)
                upper = fb[top, left] + (fb[top, right] - fb[top, left]) * xl
                lower = fb[bottom, left] + (fb[bottom, right] - fb[bottom, left]) * xl
                out[k, y, x] = upper + (lower - upper) * yl
    return _layout(out, layout)
