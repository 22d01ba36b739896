"""RoIAlign and its family for JAX: XLA FFI kernels with every transformation.

    import jax_roialign as jra
    out = jra.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)

SPEC.md (shared with the developers) defines every function exactly; the
docstrings say what differs from the peers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _args, _lowering, _primitives, reference
from ._primitives import UnsupportedDerivativeError

__all__ = ["roi_align", "set_deterministic", "validate_rois", "kernel_platforms", "UnsupportedDerivativeError",
           "reference"]
__version__ = "0.1.0"


_DETERMINISTIC = [False]


def set_deterministic(value: bool) -> None:
    """Default for ``deterministic=None``: bit-identical backward passes on the GPU
    (no atomics; slower). CPU kernels are always deterministic."""
    _DETERMINISTIC[0] = bool(value)


def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False,
              *, mode="avg", layout="NCHW", deterministic=None):
    """RoIAlign (Mask R-CNN): bilinear samples averaged (or maxed) per output bin.

    Positional arguments follow ``torchvision.ops.roi_align``.

    Args:
      features: (N, C, H, W) for ``layout="NCHW"`` or (N, H, W, C) for ``"NHWC"``;
        float16, bfloat16, float32 or float64 (16-bit types accumulate in float32).
      rois: (K, 5) rows ``[batch_index, x1, y1, x2, y2]``; or (N, R, 4) boxes per
        image; or a list of N arrays (R_n, 4). Coordinates are input-image pixels.
      output_size: int or (PH, PW).
      spatial_scale: feature-map coordinate = box coordinate * spatial_scale.
      sampling_ratio: samples per bin along each axis; <= 0 chooses
        ``ceil(roi_size / output_size)`` per roi (adaptive, no cap).
      aligned: subtract half a pixel (Detectron2's ``ROIAlignV2``, torchvision's
        ``aligned=True``); False keeps the original Mask R-CNN behaviour.
      mode: "avg" (torchvision, Detectron2, mmcv) or "max" (mmcv: the largest
        bilinear sample; outside samples count as 0).
      layout: "NCHW" (PyTorch) or "NHWC" (Flax); the output uses the same.
      deterministic: GPU backward without atomics, bit-identical run to run;
        None takes ``set_deterministic``'s default (False). The CPU always is.

    Returns:
      (K, C, PH, PW) / (K, PH, PW, C), with a leading (N, R) instead of K for
      the (N, R, 4) form.

    Differentiable w.r.t. ``features`` (any order, forward and reverse) and
    ``rois`` box coordinates (first order, the exact derivative where the
    function is smooth); batch indices get zero gradient. Rois with a batch
    index outside [0, N) (or NaN, or non-integer) give zeros; NaN or infinite
    coordinates give zeros.
    """
    op = "roi_align"
    num_images, _, _, _ = _args.check_features(op, features, layout)
    features = jnp.asarray(features)
    params = dict(
        output_size=_args.output_size(op, output_size),
        spatial_scale=_args.spatial_scale(op, spatial_scale),
        sampling_ratio=_args.sampling_ratio(op, sampling_ratio),
        aligned=bool(aligned),
        mode=_args.choice(op, "mode", mode, ("avg", "max")),
        layout=layout,
        deterministic=_DETERMINISTIC[0] if deterministic is None else bool(deterministic),
    )
    boxes = _args.rois(op, rois, num_images, features.dtype)
    if not _lowering.has_kernels(jax.default_backend()):
        return reference.roi_align_normalised(features, boxes, **params)
    out, _ = _primitives.roi_align_p.bind(features, boxes.array, **params)
    return out


def validate_rois(rois, num_images: int):
    """Which rois SPEC.md treats as bad data: a batch index that is not an
    integer in [0, num_images), or a non-finite coordinate. Returns a boolean
    array, True for bad rows: shape (K,) for (K, 5) rows or a list, (N, R) for
    (N, R, 4) boxes. Works under jit; combine with ``jax.experimental.checkify``
    (``checkify.check(~bad.any(), ...)``) to raise.
    """
    boxes = _args.rois("validate_rois", rois, num_images, jnp.float32)
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
