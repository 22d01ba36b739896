"""What the Flax and Haiku modules share: which operator each module wraps, and the
configuration parameters a module takes (the operator's, after (features, rois))."""

from __future__ import annotations

import inspect

import jax_roialign

# Module name -> operator path in jax_roialign.
OPERATORS = {
    "RoIAlign": "roi_align",
    "RoIPool": "roi_pool",
    "PSRoIAlign": "ps_roi_align",
    "PSRoIPool": "ps_roi_pool",
    "LegacyRoIAlign": "legacy.roi_align",
    "LegacyRoIAlignAvg": "legacy.roi_align_avg",
    "LegacyRoIAlignMax": "legacy.roi_align_max",
}

# Flax's and Haiku's convention.
DEFAULT_LAYOUT = "NHWC"


def operator(path: str):
    """jax_roialign.<path>, or None when this version of the package lacks it."""
    obj = jax_roialign
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def config_parameters(op) -> list[inspect.Parameter]:
    """The operator's parameters after (features, rois), with layout defaulting to NHWC."""
    params = list(inspect.signature(op).parameters.values())[2:]
    return [p.replace(default=DEFAULT_LAYOUT) if p.name == "layout" else p for p in params]
