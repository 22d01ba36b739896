"""The operator-case table every value, gradient, transform and fixture test is
parametrised over (torchvision's RoIOpTester): one row per operator configuration, with
its public function, its `jax_roialign.reference` form and its float64 loop oracle, plus
the input generators the tests share."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jax_roialign as jra
from jax_roialign import reference
from jax_roialign._src.operators import BY_NAME
from loop_reference import roi_align_numpy
from loop_reference_family import (legacy_numpy, ps_roi_align_numpy, ps_roi_pool_numpy,
                                   roi_pool_numpy)
from loop_reference_rotated_crop import crop_and_resize_numpy, roi_align_rotated_numpy

LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Case:
    id: str
    op_name: str                 # the registry entry
    oracle: Callable             # (f, rows, ph, pw, scale, sr, aligned, layout, dtype) -> array
    config: dict = field(default_factory=dict)  # fixed keyword arguments (mode=...)
    # How the public function takes one map and its scale, if not as (f, rois, size, scale):
    # the multi-level operators take a list of levels and of scales.
    levels: bool = False
    # The operator's boxes, made from the tests' axis-aligned pixel boxes (form_rois):
    # "xyxy" as they are, "rotated" (cx, cy, w, h, angle), "crop" normalised [y1, x1, y2,
    # x2] with box indices.
    form: str = "xyxy"

    @property
    def op(self):
        return BY_NAME[self.op_name]

    @property
    def fn(self):
        """The public function, reached by its public path."""
        return functools.reduce(getattr, self.op.function.split("."), jra)

    @property
    def ref(self):
        return getattr(reference, self.op.function.replace(".", "_"))

    @property
    def sampling(self):
        return "sampling_ratio" not in self.op.fixed

    @property
    def aligned(self):
        return "aligned" not in self.op.fixed

    @property
    def box_derivative(self):
        return self.op.box_derivative

    @property
    def mode(self):
        return self.config.get("mode", self.op.modes[0])

    def channels(self, c_out, size):
        return c_out * size[0] * size[1] if self.op.position_sensitive else c_out

    def kwargs(self, sr=-1, aligned=False, layout="NCHW"):
        kw = dict(self.config, layout=layout)
        if self.sampling:
            kw["sampling_ratio"] = sr
        if self.aligned:
            kw["aligned"] = aligned
        return kw

    def __call__(self, impl, f, rois, size, scale=1.0, sr=-1, aligned=False, layout="NCHW",
                 **extra):
        """`impl` ("kernel", "reference" or a callable) on this case's configuration (and
        `extra` keyword arguments, e.g. deterministic); `rois` are the tests' axis-aligned
        pixel boxes, in any of the three forms."""
        impl = {"kernel": self.fn, "reference": self.ref}.get(impl, impl)
        kw = dict(self.kwargs(sr, aligned, layout), **extra)
        if self.levels:
            return impl([f], rois, size, (scale,), **kw)
        if self.form == "crop":
            boxes, indices = form_rois(self.form, rois, f, layout, scale, self.config)
            return impl(f, boxes, indices, size, **kw)
        return impl(f, form_rois(self.form, rois, f, layout, scale, self.config), size, scale,
                    **kw)

    def loop(self, f, rows, size, scale=1.0, sr=-1, aligned=False, layout="NCHW",
             dtype=np.float64):
        rows = np.asarray(rows)  # converted in its own dtype, as the kernel's boxes are
        if self.form == "crop":
            boxes, indices = form_rois(self.form, rows, f, layout, scale, self.config)
            rows = np.concatenate([np.asarray(indices, np.float64)[:, None], boxes], 1)
        else:
            rows = np.array(form_rois(self.form, rows, f, layout, scale, self.config))
            if self.config.get("clockwise"):  # the oracle turns counter-clockwise
                rows[:, -1] = -rows[:, -1]
        return self.oracle(f, rows, size[0], size[1], scale, sr, aligned, layout, dtype)

    def aligned_values(self):
        return (False, True) if self.aligned else (False,)

    def sampling_values(self):
        return (-1, 0, 1, 2) if self.sampling else (-1,)


def _angle(x1, y1, xp):
    """A box's angle in degrees, from its corner (so every form of the same box gets the
    same angle), all quadrants; piecewise constant in the box (finite differences and
    derivatives see a fixed angle)."""
    if xp is jnp:
        x1, y1 = jax.lax.stop_gradient(x1), jax.lax.stop_gradient(y1)
    return xp.mod(37.0 * xp.floor(x1) + 11.0 * xp.floor(y1) + 23.5, 360.0) - 180.0


def form_rois(form, rois, f, layout, scale, config):
    """The tests' axis-aligned pixel boxes (rows, per-image or list) as `form`'s boxes."""
    if form == "xyxy":
        return rois
    if isinstance(rois, (list, tuple)):  # each (R_n, 4) as the (1, R_n, 4) form
        if form == "crop":
            return [form_rois(form, r[None], f, layout, scale, config)[0][0] for r in rois], None
        return [form_rois(form, r[None], f, layout, scale, config)[0] for r in rois]
    xp = np if isinstance(rois, np.ndarray) else jnp
    rows = rois.shape[-1] == 5
    coords = rois[..., 1:] if rows else rois
    x1, y1, x2, y2 = (coords[..., i] for i in range(4))
    if form == "rotated":
        angle = _angle(x1, y1, xp)
        if config.get("angle_unit") == "radians":
            angle = angle * (np.pi / 180.0)
        box = xp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1,
                        xp.asarray(angle, coords.dtype)], -1)
        return xp.concatenate([rois[..., :1], box], -1) if rows else box
    # crop: normalised by the map's extent, with integer box indices (bad ones -1)
    h, w = (f.shape[2:4] if layout == "NCHW" else f.shape[1:3])
    ny, nx = scale / max(h - 1, 1), scale / max(w - 1, 1)
    box = xp.stack([y1 * ny, x1 * nx, y2 * ny, x2 * nx], -1)
    if not rows:
        return box, None
    idx = rois[..., 0]
    good = xp.isfinite(idx) & (idx == xp.floor(idx)) & (idx >= 0) & (idx < 2 ** 20)
    return box, xp.where(good, xp.where(good, idx, 0), -1).astype(np.int32)


def _roi_align(mode):
    return lambda f, r, ph, pw, s, sr, al, lay, dt: roi_align_numpy(f, r, ph, pw, s, sr, al, mode,
                                                                   lay, dtype=dt)


CASES = [
    Case("roi_align", "roi_align", _roi_align("avg")),
    Case("roi_align_max", "roi_align", _roi_align("max"), dict(mode="max")),
    Case("roi_pool", "roi_pool",
         lambda f, r, ph, pw, s, sr, al, lay, dt: roi_pool_numpy(f, r, ph, pw, s, lay, dt)),
    Case("ps_roi_align", "ps_roi_align",
         lambda f, r, ph, pw, s, sr, al, lay, dt: ps_roi_align_numpy(f, r, ph, pw, s, sr, lay, dt)),
    Case("ps_roi_pool", "ps_roi_pool",
         lambda f, r, ph, pw, s, sr, al, lay, dt: ps_roi_pool_numpy(f, r, ph, pw, s, lay, dt)),
    Case("legacy.roi_align", "legacy",
         lambda f, r, ph, pw, s, sr, al, lay, dt: legacy_numpy(f, r, ph, pw, s, "plain", lay, dt)),
    Case("legacy.roi_align_avg", "legacy_avg",
         lambda f, r, ph, pw, s, sr, al, lay, dt: legacy_numpy(f, r, ph, pw, s, "avg", lay, dt)),
    Case("legacy.roi_align_max", "legacy_max",
         lambda f, r, ph, pw, s, sr, al, lay, dt: legacy_numpy(f, r, ph, pw, s, "max", lay, dt)),
    # One level: roi_align's function; tests/test_multi_scale.py covers several.
    Case("multi_scale_roi_align", "multi_scale_roi_align", _roi_align("avg"), levels=True),
    Case("multi_scale_roi_align_max", "multi_scale_roi_align", _roi_align("max"),
         dict(mode="max"), levels=True),
    Case("roi_align_rotated", "roi_align_rotated",
         lambda f, r, ph, pw, s, sr, al, lay, dt: roi_align_rotated_numpy(
             f, r, ph, pw, s, sr, al, False, lay, dt), form="rotated"),
    Case("roi_align_rotated_mmcv", "roi_align_rotated",
         lambda f, r, ph, pw, s, sr, al, lay, dt: roi_align_rotated_numpy(
             f, r, ph, pw, s, sr, al, True, lay, dt),
         dict(angle_unit="radians", clockwise=True), form="rotated"),
    Case("crop_and_resize", "crop_and_resize",
         lambda f, r, ph, pw, s, sr, al, lay, dt: crop_and_resize_numpy(
             f, r, ph, pw, 0.5, "bilinear", lay, dt),
         dict(extrapolation_value=0.5), form="crop"),
    Case("crop_and_resize_nearest", "crop_and_resize_nearest",
         lambda f, r, ph, pw, s, sr, al, lay, dt: crop_and_resize_numpy(
             f, r, ph, pw, -1.0, "nearest", lay, dt),
         dict(method="nearest", extrapolation_value=-1.0), form="crop"),
]
IDS = [c.id for c in CASES]
BOX_CASES = [c for c in CASES if c.box_derivative]
BOX_IDS = [c.id for c in BOX_CASES]


# ----------------------------------------------------------------------------- inputs

def to_layout(f_nchw, layout):
    return f_nchw if layout == "NCHW" else np.transpose(f_nchw, (0, 2, 3, 1))


def features(case, rng, size, layout, n=2, c_out=2, h=7, w=9, dtype=np.float64):
    """Random features with the channels `case` needs for output `size`."""
    f = rng.normal(size=(n, case.channels(c_out, size), h, w)).astype(dtype)
    return to_layout(f, layout)


def edge_rois(num_images, height, width, scale, rng, count=6):
    """Ordinary rois plus every awkward kind, in input-image pixels, as (K, 5) rows."""
    h, w = height / scale, width / scale
    rows = []
    for _ in range(count):
        x1, x2 = np.sort(rng.uniform(-0.2 * w, 1.2 * w, 2))
        y1, y2 = np.sort(rng.uniform(-0.2 * h, 1.2 * h, 2))
        rows.append([rng.integers(num_images), x1, y1, x2, y2])
    rows += [
        [0, -3 * w, -3 * h, -2 * w, -2 * h],              # wholly outside, before
        [num_images - 1, 2 * w, 2 * h, 3 * w, 3 * h],     # wholly outside, after
        [0, -0.5 * w, 0.3 * h, 0.5 * w, 2 * h],           # partly outside
        [0, 0.31 * w, 0.42 * h, 0.31 * w + 0.2, 0.42 * h + 0.3],  # tiny
        [num_images - 1, 0.5 * w, 0.5 * h, 0.5 * w, 0.5 * h],     # zero size
        [0, 0.8 * w, 0.7 * h, 0.2 * w, 0.1 * h],          # reversed
        [0, -1e4, -1e4, 1e4, 1e4],                        # huge
        [0, 0.0, 0.0, w, h],                              # exactly the map
        [0, -1 / scale, -1 / scale, (width - 1) / scale, (height - 1) / scale],  # on edges
    ]
    return np.asarray(rows, np.float64)


#: edge_rois without its last three rows (huge, exactly the map, on edges): no sample on
#: a kink, and no adaptive grid beyond the reference's cap.
ORDINARY = slice(None, -3)


def smooth_rois(rng, num, height, width, scale):
    """Boxes strictly inside the map with non-integer sample positions (no kinks)."""
    x1 = rng.uniform(0.6, 0.4 * width, num) / scale
    y1 = rng.uniform(0.6, 0.4 * height, num) / scale
    x2 = x1 + rng.uniform(1.3, 0.5 * width, num) / scale
    y2 = y1 + rng.uniform(1.3, 0.5 * height, num) / scale
    return np.stack([rng.integers(0, 2, num).astype(float), x1, y1, x2, y2], 1)
