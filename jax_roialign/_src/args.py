"""Argument validation and normalisation: the one place each rule lives.

Every public operator (kernel path and reference path alike) goes through these, so an
error names the argument, what was expected and what arrived, the same way everywhere
(docs/semantics.md, "What is an error at trace time").
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

LAYOUTS = ("NCHW", "NHWC")
FLOAT_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)


def geometry_dtype(features_dtype) -> np.dtype:
    """Box coordinates and sample positions: float64 for float64 features, else float32."""
    return np.dtype(np.float64) if np.dtype(features_dtype) == np.float64 else np.dtype(np.float32)


def check_features(op: str, features, layout: str):
    """`features` is a rank-4 floating array in `layout`; returns (N, C, H, W)."""
    if layout not in LAYOUTS:
        raise ValueError(f"{op}: layout must be one of {LAYOUTS}, got {layout!r}")
    shape = np.shape(features)
    dtype = getattr(features, "dtype", None)
    if dtype is None:
        features = jnp.asarray(features)
        dtype = features.dtype
    if len(shape) != 4:
        expected = "(N, C, H, W)" if layout == "NCHW" else "(N, H, W, C)"
        raise ValueError(f"{op}: features must have rank 4 {expected} for layout "
                         f"{layout!r}, got shape {tuple(shape)}")
    if not any(np.dtype(dtype) == np.dtype(d) for d in FLOAT_DTYPES):
        raise TypeError(f"{op}: features must be float16, bfloat16, float32 or float64, "
                        f"got {np.dtype(dtype).name}")
    n, a, b, c = shape
    return (n, a, b, c) if layout == "NCHW" else (n, c, a, b)


def output_size(op: str, size, name: str = "output_size", minimum: int = 1):
    """int or (PH, PW), each an integer >= minimum."""
    pair = (size, size) if isinstance(size, numbers.Integral) else tuple(size) \
        if isinstance(size, Sequence) else None
    if pair is None or len(pair) != 2 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {size!r}")
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {size!r}")
    return int(pair[0]), int(pair[1])


def spatial_scale(op: str, scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"{op}: spatial_scale must be a real number, got {scale!r}")
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"{op}: spatial_scale must be finite and >= 0, got {scale!r}")
    return scale


def sampling_ratio(op: str, ratio) -> int:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Integral):
        raise TypeError(f"{op}: sampling_ratio must be an int (<= 0 for adaptive), got {ratio!r}")
    return int(ratio)


def choice(op: str, name: str, value, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{op}: {name} must be one of {tuple(allowed)}, got {value!r}")
    return value


class Rois(NamedTuple):
    """Normalised rois: `array` is (K, 5) rows or (N, R, 4) per-image boxes, in
    the geometry dtype; `per_image` says which."""
    array: jnp.ndarray
    per_image: bool


def rois(op: str, rois, num_images: int, features_dtype) -> Rois:
    """The three forms of docs/semantics.md, cast to the geometry dtype.

    (K, 5) rows [batch_index, x1, y1, x2, y2]; (N, R, 4) boxes of image n in row
    n; a list of N arrays (R_n, 4), concatenated into rows.
    """
    dtype = geometry_dtype(features_dtype)
    if isinstance(rois, (list, tuple)):
        if len(rois) != num_images:
            raise ValueError(f"{op}: a list of rois must hold one (R_n, 4) array per image "
                             f"({num_images}), got {len(rois)}")
        rows = []
        for n, boxes in enumerate(rois):
            shape = np.shape(boxes)
            if len(shape) != 2 or shape[1] != 4:
                raise ValueError(f"{op}: rois[{n}] must have shape (R_n, 4), got {tuple(shape)}")
            _check_float_rois(op, f"rois[{n}]", boxes)
            boxes = jnp.asarray(boxes, dtype)
            rows.append(jnp.concatenate(
                [jnp.full((shape[0], 1), n, dtype), boxes], axis=1))
        array = jnp.concatenate(rows, axis=0) if rows else jnp.zeros((0, 5), dtype)
        return Rois(array, False)
    shape = np.shape(rois)
    _check_float_rois(op, "rois", rois)
    if len(shape) == 2 and shape[1] == 5:
        return Rois(jnp.asarray(rois, dtype), False)
    if len(shape) == 3 and shape[2] == 4:
        if shape[0] != num_images:
            raise ValueError(f"{op}: rois of shape (N, R, 4) must have N = {num_images} "
                             f"(the features' batch), got shape {tuple(shape)}")
        return Rois(jnp.asarray(rois, dtype), True)
    hint = ""
    if len(shape) == 2 and shape[1] == 4:
        hint = ("; (K, 4) boxes lack the batch index: for boxes of one image prepend a column "
                "of zeros, jnp.concatenate([jnp.zeros((K, 1)), boxes], axis=1), or pass them "
                "per image as (N, R, 4), e.g. boxes[None] for a batch of one")
    raise ValueError(f"{op}: rois must be (K, 5) [batch_index, x1, y1, x2, y2], (N, R, 4) or "
                     f"a list of (R_n, 4), got shape {tuple(shape)}{hint}")


def _check_float_rois(op, name, value):
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not (jnp.issubdtype(dtype, jnp.floating)
                                  or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{op}: {name} must hold real numbers, got {np.dtype(dtype).name}")


def rows_from_boxes(boxes):
    """(..., N, R, 4) per-image boxes -> (..., N*R, 5) rows with batch index n."""
    *lead, n, r, _ = boxes.shape
    index = jnp.broadcast_to(jnp.arange(n, dtype=boxes.dtype)[:, None, None], (*lead, n, r, 1))
    return jnp.concatenate([index, boxes], axis=-1).reshape(*lead, n * r, 5)
