"""Output shapes, and the abstract values of the primitives' results.

Results are derived from an input's abstract value (``aval.update``) rather than built
fresh, so that what the value carries beyond shape and dtype (under ``shard_map``, the
mesh axes it varies over) flows through.
"""

from __future__ import annotations

import numpy as np

from .operators import BY_NAME


def output_shape(op: str, features_shape, rois_shape, output_size, layout: str) -> tuple:
    """(K, ...) for (K, 5) rows, (N, R, ...) for (N, R, 4) boxes; `...` is (C, PH, PW)
    for NCHW, (PH, PW, C) for NHWC, with C the output channels."""
    ph, pw = output_size
    channels = features_shape[1] if layout == "NCHW" else features_shape[3]
    if BY_NAME[op].position_sensitive:
        channels //= ph * pw
    rows = tuple(rois_shape[:1]) if len(rois_shape) == 2 else tuple(rois_shape[:2])
    return rows + ((channels, ph, pw) if layout == "NCHW" else (ph, pw, channels))


def winner_shape(out_shape, mode: str) -> tuple:
    """Max mode's winners are shaped like the output; avg mode has none, (0,)."""
    return tuple(out_shape) if mode == "max" else (0,)


def out_aval(features, rois, p):
    """The pooled output's abstract value: the features' dtype, the operator's shape."""
    shape = output_shape(p["op"], features.shape, rois.shape, p["output_size"], p["layout"])
    return features.update(shape=shape, dtype=features.dtype)


def winner_aval(out, p):
    return out.update(shape=winner_shape(out.shape, p["mode"]), dtype=np.dtype(np.int32))
