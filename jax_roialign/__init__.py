"""RoIAlign and its family for JAX: XLA FFI kernels with every transformation.

    import jax_roialign as jra
    out = jra.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)

SPEC.md (shared with the developers) defines every function exactly; the
docstrings say what differs from the peers. Common to every operator:

- ``features``: (N, C, H, W) for ``layout="NCHW"`` or (N, H, W, C) for ``"NHWC"``;
  float16, bfloat16, float32 or float64 (16-bit types accumulate in float32).
- ``rois``: (K, 5) rows ``[batch_index, x1, y1, x2, y2]``; or (N, R, 4) boxes per
  image (the output gains a leading (N, R) instead of K); or a list of N arrays
  (R_n, 4). Coordinates are input-image pixels; feature coordinate = x * spatial_scale.
- ``output_size``: int or (PH, PW). The output is (K, C, PH, PW) / (K, PH, PW, C).
- A roi whose batch index is not an integer in [0, N) (or NaN), or whose
  coordinates are NaN/Inf, gives zeros and no gradient.
- Differentiable w.r.t. ``features`` (any order, forward and reverse) and, where
  the operator is continuous in them, the box coordinates (first order).
- ``deterministic``: GPU backward without atomics, bit-identical run to run;
  None takes ``set_deterministic``'s default (False). The CPU always is.
"""

from __future__ import annotations

import jax.numpy as jnp

from . import _args, _lowering, legacy, reference
from ._ops import apply as _apply
from ._ops import set_deterministic
from ._primitives import UnsupportedDerivativeError

__all__ = ["roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool", "legacy", "set_deterministic",
           "validate_rois", "kernel_platforms", "UnsupportedDerivativeError", "reference"]
__version__ = "0.1.0"


def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False,
              *, mode="avg", layout="NCHW", deterministic=None):
    """RoIAlign (Mask R-CNN): bilinear samples averaged (or maxed) per output bin.

    Positional arguments follow ``torchvision.ops.roi_align``.
    sampling_ratio: samples per bin along each axis; <= 0 chooses
    ``ceil(roi_size / output_size)`` per roi (adaptive, no cap).
    aligned: subtract half a pixel (Detectron2's ``ROIAlignV2``, torchvision's
    ``aligned=True``); False keeps the original Mask R-CNN behaviour.
    mode: "avg" (torchvision, Detectron2, mmcv) or "max" (mmcv: the largest
    bilinear sample; outside samples count as 0; an empty grid gives 0).
    """
    return _apply("roi_align", features, rois, output_size, spatial_scale, sampling_ratio,
                  aligned, mode, layout, deterministic)


def roi_pool(features, rois, output_size, spatial_scale=1.0, *, layout="NCHW",
             deterministic=None):
    """RoIPool (Fast R-CNN), as ``torchvision.ops.roi_pool``: corners rounded half
    away from zero, max over the integer cells of each bin, an empty bin 0. The
    gradient goes to the arg-max cell; the box gradient is 0 (piecewise constant).
    """
    return _apply("roi_pool", features, rois, output_size, spatial_scale, layout=layout,
                  deterministic=deterministic)


def ps_roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, *,
                 layout="NCHW", deterministic=None):
    """Position-sensitive RoIAlign (R-FCN), as ``torchvision.ops.ps_roi_align``:
    C = C_out * PH * PW; bin (ph, pw) of output channel c reads input channel
    (c * PH + ph) * PW + pw. Always the half-pixel offset. An empty sampling grid
    gives 0 (torchvision: NaN).
    """
    return _apply("ps_roi_align", features, rois, output_size, spatial_scale, sampling_ratio,
                  layout=layout, deterministic=deterministic)


def ps_roi_pool(features, rois, output_size, spatial_scale=1.0, *, layout="NCHW",
                deterministic=None):
    """Position-sensitive RoIPool (R-FCN), as ``torchvision.ops.ps_roi_pool``'s
    forward: the average over the bin's cells, bin edges clipped to [0, H-1] (so
    the last row and column are never pooled, as in torchvision). Its gradient is
    the exact transpose of that forward (torchvision's backward clips to H and is
    not). The box gradient is 0 (piecewise constant).
    """
    return _apply("ps_roi_pool", features, rois, output_size, spatial_scale, layout=layout,
                  deterministic=deterministic)


def validate_rois(rois, num_images: int):
    """Which rois SPEC.md treats as bad data: a batch index that is not an
    integer in [0, num_images), or a non-finite coordinate. Returns a boolean
    array, True for bad rows: shape (K,) for (K, 5) rows or a list, (N, R) for
    (N, R, 4) boxes. Works under jit; combine with ``jax.experimental.checkify``
    (``checkify.check(~bad.any(), ...)``) to raise.
    """
    dtype = getattr(rois, "dtype", jnp.float32)
    boxes = _args.rois("validate_rois", rois, num_images, dtype)
    a = boxes.array
    coords = a if boxes.per_image else a[:, 1:]
    bad = ~jnp.all(jnp.isfinite(coords), axis=-1)
    if not boxes.per_image:
        idx = a[:, 0]
        bad = bad | ~((idx >= 0) & (idx < num_images) & (idx == jnp.floor(idx)))
    return bad


def kernel_platforms():
    """Platforms with compiled kernels here ("cpu", "cuda"); others use the reference."""
    return sorted(_lowering.KERNELS)
