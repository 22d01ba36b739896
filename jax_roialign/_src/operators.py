"""The operator registry: one entry per operator, read by every other layer.

An operator is its math header and `bin_sampler.h` case (cc/), its reference core
(`reference/`), one entry here, and its public function (`api.py`). The kernels'
operator codes come from the compiled modules (cc/roi_common.h `JRA_OPERATORS`);
the tests check that both tables list the same operators with the same properties.
docs/semantics.md defines each operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .reference import crop as _crop
from .reference import legacy as _legacy
from .reference import multi_scale as _multi_scale
from .reference import pool as _pool
from .reference import ps_roi_align as _ps_roi_align
from .reference import roi_align as _roi_align
from .reference import rotated as _rotated


@dataclass(frozen=True)
class Operator:
    name: str                    # the registry key
    function: str                # public path in jax_roialign: "roi_align", "legacy.roi_align"
    module: str | None           # Flax / Haiku class name (None: another entry's function)
    # core(features: list of levels, rows, levels per row or None, params) in pure JAX
    reference: Callable
    modes: tuple = ("avg",)      # accepted `mode` values, the first is the default
    min_output: int = 1          # smallest output size per axis
    fixed: dict = field(default_factory=dict)  # parameters the operator fixes
    box_derivative: bool = True  # False: piecewise constant in the boxes, derivative 0
    position_sensitive: bool = False  # C = C_out * PH * PW, bin (ph, pw) reads its own group
    box_coords: int = 4          # coordinates per box, after a row's batch index
    box_names: str = "x1, y1, x2, y2"  # what they are
    torchvision: str | None = None    # torchvision.ops.<name>, same positional arguments
    bench: bool = True           # in `bench`'s table of single-map (K, 5)-box operators
    demo: tuple | None = None    # (column, title) in the demo's picture, if it is shown there
    kernel_op: str | None = None  # the kernels' operator (the `op` parameter), if not `name`
    call_arguments: tuple = ()   # per-call data among the function's parameters (modules
                                 # take them in __call__, not as configuration)

    @property
    def kernel(self) -> str:
        return self.kernel_op or self.name

    @property
    def multi_level(self) -> bool:
        """Whether the function takes a pyramid: a sequence of maps and of scales."""
        return "levels" in self.call_arguments


def _size(p):
    return p["output_size"]


OPERATORS = (
    Operator("roi_align", "roi_align", "RoIAlign",
             lambda fs, r, lv, p: _roi_align.roi_align_core(
                 fs[0], r, *_size(p), p["spatial_scales"][0], p["sampling_ratio"], p["aligned"],
                 p["mode"], p["layout"]),
             modes=("avg", "max"), torchvision="roi_align", demo=(2, "RoIAlign")),
    Operator("roi_pool", "roi_pool", "RoIPool",
             lambda fs, r, lv, p: _pool.roi_pool_core(fs[0], r, *_size(p), p["spatial_scales"][0],
                                                 p["layout"]),
             modes=("max",), fixed=dict(sampling_ratio=0, aligned=False), box_derivative=False,
             torchvision="roi_pool", demo=(0, "RoIPool (max)")),
    Operator("ps_roi_align", "ps_roi_align", "PSRoIAlign",
             lambda fs, r, lv, p: _ps_roi_align.ps_roi_align_core(
                 fs[0], r, *_size(p), p["spatial_scales"][0], p["sampling_ratio"], p["layout"]),
             fixed=dict(aligned=True), position_sensitive=True, torchvision="ps_roi_align"),
    Operator("ps_roi_pool", "ps_roi_pool", "PSRoIPool",
             lambda fs, r, lv, p: _pool.ps_roi_pool_core(fs[0], r, *_size(p), p["spatial_scales"][0],
                                                    p["layout"]),
             fixed=dict(sampling_ratio=0, aligned=False), box_derivative=False,
             position_sensitive=True, torchvision="ps_roi_pool"),
    Operator("legacy", "legacy.roi_align", "LegacyRoIAlign",
             lambda fs, r, lv, p: _legacy.legacy_core(fs[0], r, *_size(p), p["spatial_scales"][0], "plain",
                                                 p["layout"]),
             min_output=2, fixed=dict(sampling_ratio=0, aligned=False), demo=(1, "legacy RoIAlign")),
    Operator("legacy_avg", "legacy.roi_align_avg", "LegacyRoIAlignAvg",
             lambda fs, r, lv, p: _legacy.legacy_core(fs[0], r, *_size(p), p["spatial_scales"][0], "avg",
                                                 p["layout"]),
             fixed=dict(sampling_ratio=0, aligned=False)),
    Operator("legacy_max", "legacy.roi_align_max", "LegacyRoIAlignMax",
             lambda fs, r, lv, p: _legacy.legacy_core(fs[0], r, *_size(p), p["spatial_scales"][0], "max",
                                                 p["layout"]),
             modes=("max",), fixed=dict(sampling_ratio=0, aligned=False)),
    Operator("multi_scale_roi_align", "multi_scale_roi_align", "MultiScaleRoIAlign",
             lambda fs, r, lv, p: _multi_scale.multi_scale_roi_align_core(
                 fs, r, lv, *_size(p), p["spatial_scales"], p["sampling_ratio"], p["aligned"],
                 p["mode"], p["layout"]),
             modes=("avg", "max"), kernel_op="roi_align", call_arguments=("levels",),
             bench=False),
    Operator("roi_align_rotated", "roi_align_rotated", "RoIAlignRotated",
             lambda fs, r, lv, p: _rotated.roi_align_rotated_core(
                 fs[0], r, *_size(p), p["spatial_scales"][0], p["sampling_ratio"], p["aligned"],
                 p["radians"], p["layout"]),
             box_coords=5, box_names="cx, cy, w, h, angle", bench=False),
    Operator("crop_and_resize", "crop_and_resize", "CropAndResize",
             lambda fs, r, lv, p: _crop.crop_and_resize_core(
                 fs[0], r, *_size(p), p["extrapolation_value"], False, p["layout"]),
             fixed=dict(sampling_ratio=0, aligned=False), call_arguments=("box_indices",),
             box_names="y1, x1, y2, x2 (normalised)", bench=False),
    # method="nearest" of the same function: its own kernel operator (a cell per sample,
    # piecewise constant in the box), no module of its own.
    Operator("crop_and_resize_nearest", "crop_and_resize", None,
             lambda fs, r, lv, p: _crop.crop_and_resize_core(
                 fs[0], r, *_size(p), p["extrapolation_value"], True, p["layout"]),
             fixed=dict(sampling_ratio=0, aligned=False), box_derivative=False,
             call_arguments=("box_indices",), box_names="y1, x1, y2, x2 (normalised)",
             bench=False),
)

BY_NAME = {op.name: op for op in OPERATORS}
#: The kernels' operators, each with its own box derivative, coordinates and channels.
KERNEL_OPS = {op.kernel for op in OPERATORS}
