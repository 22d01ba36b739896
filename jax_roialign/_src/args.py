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


#: Largest output size per axis: a bin grid beyond it is no detector's output, and the
#: output must stay allocatable (K * C * PH * PW elements).
MAX_OUTPUT_SIZE = 65536

#: Largest fixed sampling grid per bin and axis (cc/roi_common.h kMaxSamplingRatio):
#: already a million samples per bin.
MAX_SAMPLING_RATIO = 1024


def output_size(op: str, size, name: str = "output_size", minimum: int = 1):
    """int or (PH, PW), each an integer in [minimum, MAX_OUTPUT_SIZE]."""
    pair = (size, size) if isinstance(size, numbers.Integral) else tuple(size) \
        if isinstance(size, Sequence) else None
    if pair is None or len(pair) != 2 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {size!r}")
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {size!r}")
    if max(pair) > MAX_OUTPUT_SIZE:
        raise ValueError(f"{op}: {name} must be <= {MAX_OUTPUT_SIZE} per axis, got {size!r}")
    return int(pair[0]), int(pair[1])


def spatial_scale(op: str, scale, name: str = "spatial_scale") -> float:
    """A real number > 0 that float32 geometry represents (not 0, not beyond 3.4e38)."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {scale!r}")
    scale = float(scale)
    with np.errstate(over="ignore", under="ignore"):
        as_float32 = np.float32(scale)
    if not (math.isfinite(scale) and np.isfinite(as_float32) and as_float32 > 0):
        raise ValueError(f"{op}: {name} must be > 0 and finite in float32 "
                         f"(at most 3.4e38), got {scale!r}")
    return scale


def sampling_ratio(op: str, ratio) -> int:
    """An int: > 0 a fixed grid per bin and axis (at most MAX_SAMPLING_RATIO), <= 0 adaptive."""
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Integral):
        raise TypeError(f"{op}: sampling_ratio must be an int (<= 0 for adaptive), got {ratio!r}")
    if ratio > MAX_SAMPLING_RATIO:
        raise ValueError(f"{op}: sampling_ratio must be <= {MAX_SAMPLING_RATIO} (a fixed grid of "
                         f"that many samples per bin and axis), got {ratio!r}")
    return int(ratio)


#: Feature levels one call takes (cc/roi_common.h kMaxLevels).
MAX_LEVELS = 8


def positive(op: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{op}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def integer(op: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    return int(value)


def images_of(rois):
    """N of rois given without features: the list's length, the (N, R, c) form's N, or
    None for rows (any batch index is accepted)."""
    if isinstance(rois, (list, tuple)):
        return len(rois)
    shape = np.shape(rois)
    return shape[0] if len(shape) == 3 else None


def levels(op: str, value, shape) -> jnp.ndarray:
    """A level index per box: an integer array shaped like the boxes without their
    coordinates ((K,) or (N, R)), as int32."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        value = jnp.asarray(value)
        dtype = value.dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{op}: levels must be an integer array, got {np.dtype(dtype).name}")
    if tuple(np.shape(value)) != tuple(shape):
        raise ValueError(f"{op}: levels must have one entry per box, shape {tuple(shape)}, got "
                         f"{tuple(np.shape(value))}")
    return jnp.asarray(value).astype(jnp.int32)


def real(op: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    return float(value)


def rows_with_indices(op: str, boxes, box_indices, features_dtype) -> "Rois":
    """(K, 4) boxes and (K,) integer image indices -> (K, 5) rows [index, *box]."""
    dtype = geometry_dtype(features_dtype)
    shape, index_shape = np.shape(boxes), np.shape(box_indices)
    _check_float_rois(op, "boxes", boxes)
    if len(shape) != 2 or shape[1] != 4:
        raise ValueError(f"{op}: boxes must be (K, 4) [y1, x1, y2, x2] with box_indices, got "
                         f"shape {tuple(shape)}")
    if index_shape != shape[:1]:
        raise ValueError(f"{op}: box_indices must have one image index per box, shape "
                         f"({shape[0]},), got {tuple(index_shape)}")
    index_dtype = getattr(box_indices, "dtype", None) or np.asarray(box_indices).dtype
    if not jnp.issubdtype(index_dtype, jnp.integer):
        raise TypeError(f"{op}: box_indices must be integers, got {np.dtype(index_dtype).name}")
    rows = jnp.concatenate([jnp.asarray(box_indices).astype(dtype)[:, None],
                            jnp.asarray(boxes, dtype)], axis=1)
    return Rois(rows, False)


def flag(op: str, name: str, value) -> bool:
    """A bool (NumPy's included); anything else is an error, not its truth value."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r}")
    return bool(value)


def choice(op: str, name: str, value, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{op}: {name} must be one of {tuple(allowed)}, got {value!r}")
    return value


class Rois(NamedTuple):
    """Normalised rois: `array` is (K, 1 + coords) rows or (N, R, coords) per-image
    boxes, in the geometry dtype; `per_image` says which."""
    array: jnp.ndarray
    per_image: bool


def rois(op: str, rois, num_images: int, features_dtype, coords: int = 4,
         names: str = "x1, y1, x2, y2") -> Rois:
    """The three forms of docs/semantics.md, cast to the geometry dtype.

    (K, 1 + coords) rows [batch_index, *box]; (N, R, coords) boxes of image n in row
    n; a list of N arrays (R_n, coords), concatenated into rows. `names` names the box's
    coordinates in errors.
    """
    dtype = geometry_dtype(features_dtype)
    if isinstance(rois, (list, tuple)):
        if num_images is not None and len(rois) != num_images:
            raise ValueError(f"{op}: a list of rois must hold one (R_n, {coords}) array per "
                             f"image ({num_images}), got {len(rois)}")
        rows = []
        for n, boxes in enumerate(rois):
            shape = np.shape(boxes)
            if len(shape) != 2 or shape[1] != coords:
                raise ValueError(f"{op}: rois[{n}] must have shape (R_n, {coords}) [{names}], "
                                 f"got {tuple(shape)}")
            _check_float_rois(op, f"rois[{n}]", boxes)
            boxes = jnp.asarray(boxes, dtype)
            rows.append(jnp.concatenate(
                [jnp.full((shape[0], 1), n, dtype), boxes], axis=1))
        array = (jnp.concatenate(rows, axis=0) if rows
                 else jnp.zeros((0, coords + 1), dtype))
        return Rois(array, False)
    shape = np.shape(rois)
    _check_float_rois(op, "rois", rois)
    if len(shape) == 2 and shape[1] == coords + 1:
        return Rois(jnp.asarray(rois, dtype), False)
    if len(shape) == 3 and shape[2] == coords:
        if num_images is not None and shape[0] != num_images:
            raise ValueError(f"{op}: rois of shape (N, R, {coords}) must have N = {num_images} "
                             f"(the features' batch), got shape {tuple(shape)}")
        return Rois(jnp.asarray(rois, dtype), True)
    hint = ""
    if len(shape) == 2 and shape[1] == coords:
        hint = (f"; (K, {coords}) boxes lack the batch index: for boxes of one image prepend a "
                f"column of zeros, jnp.concatenate([jnp.zeros((K, 1)), boxes], axis=1), or "
                f"pass them per image as (N, R, {coords}), e.g. boxes[None] for a batch of one")
    raise ValueError(f"{op}: rois must be (K, {coords + 1}) [batch_index, {names}], "
                     f"(N, R, {coords}) or a list of (R_n, {coords}), got shape "
                     f"{tuple(shape)}{hint}")


def _check_float_rois(op, name, value):
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not (jnp.issubdtype(dtype, jnp.floating)
                                  or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"{op}: {name} must hold real numbers, got {np.dtype(dtype).name}")


def rows_from_boxes(boxes):
    """(..., N, R, coords) per-image boxes -> (..., N*R, 1 + coords) rows with batch index n."""
    *lead, n, r, coords = boxes.shape
    index = jnp.broadcast_to(jnp.arange(n, dtype=boxes.dtype)[:, None, None], (*lead, n, r, 1))
    return jnp.concatenate([index, boxes], axis=-1).reshape(*lead, n * r, coords + 1)
