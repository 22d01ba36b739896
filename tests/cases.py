"""The operator-case table every value, gradient, transform and fixture test is
parametrised over (torchvision's RoIOpTester): one row per operator configuration, with
its public function, its `jax_roialign.reference` form and its float64 loop oracle, plus
the input generators the tests share."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import jax_roialign as jra
from jax_roialign import reference
from jax_roialign._src.operators import BY_NAME
from loop_reference import roi_align_numpy
from loop_reference_family import (legacy_numpy, ps_roi_align_numpy, ps_roi_pool_numpy,
                                   roi_pool_numpy)

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

    def __call__(self, impl, f, rois, size, scale=1.0, sr=-1, aligned=False, layout="NCHW"):
        """`impl` ("kernel", "reference" or a callable) on this case's configuration."""
        impl = {"kernel": self.fn, "reference": self.ref}.get(impl, impl)
        if self.levels:
            return impl([f], rois, size, (scale,), **self.kwargs(sr, aligned, layout))
        return impl(f, rois, size, scale, **self.kwargs(sr, aligned, layout))

    def loop(self, f, rows, size, scale=1.0, sr=-1, aligned=False, layout="NCHW",
             dtype=np.float64):
        return self.oracle(f, rows, size[0], size[1], scale, sr, aligned, layout, dtype)

    def aligned_values(self):
        return (False, True) if self.aligned else (False,)

    def sampling_values(self):
        return (-1, 0, 1, 2) if self.sampling else (-1,)


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
