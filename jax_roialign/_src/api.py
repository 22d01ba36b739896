"""The public functions, and the one path each takes: validate the arguments, then bind
the primitives (compiled kernels) or run the operator's pure-JAX core (platforms without
kernels, or the `jax_roialign.reference` forms).

docs/semantics.md defines every function exactly; the docstrings say what differs from
the peers.
"""

from __future__ import annotations

import contextvars
import functools

import jax
import jax.numpy as jnp

from . import args as _args
from . import lowering as _lowering
from . import primitives as _primitives
from .operators import BY_NAME, OPERATORS
from .shapes import output_shape

_DETERMINISTIC = [False]


def set_deterministic(value: bool) -> None:
    """The default of ``deterministic=None``: bit-identical feature gradients on the GPU
    (no atomics; slower). CPU kernels always are.

    Read when an operator is traced: a function already compiled by ``jax.jit`` keeps
    the value it was traced with. Pass ``deterministic=`` to an operator to fix it per
    call instead.
    """
    _DETERMINISTIC[0] = bool(value)


# Set while a `jax_roialign.reference` form runs: the pure-JAX core instead of the kernels.
_REFERENCE_PATH = contextvars.ContextVar("jax_roialign_reference_path", default=False)


def apply(op_name, features, rois, output_size, spatial_scale=1.0, sampling_ratio=0,
          aligned=False, mode=None, layout="NCHW", deterministic=None):
    """Operator `op_name` of the registry on the public functions' arguments."""
    op = BY_NAME[op_name]
    name = op.function
    num_images, channels, height, width = _args.check_features(name, features, layout)
    features = jnp.asarray(features)
    size = _args.output_size(name, output_size, minimum=op.min_output)
    if op.position_sensitive and channels % (size[0] * size[1]):
        # The one layout mistake the shapes reveal: the other layout's channel axis fits.
        other, other_channels = (("NHWC", features.shape[3]) if layout == "NCHW"
                                 else ("NCHW", features.shape[1]))
        hint = (f"; the features look like {other} (axis {3 if other == 'NHWC' else 1} has "
                f"{other_channels} channels): pass layout={other!r}"
                if other_channels % (size[0] * size[1]) == 0 else "")
        raise ValueError(f"{name}: features must have a channel count divisible by "
                         f"output_size[0] * output_size[1] = {size[0] * size[1]}, got {channels} "
                         f"(layout {layout!r}){hint}")
    params = dict(
        op=op.name,
        output_size=size,
        spatial_scale=_args.spatial_scale(name, spatial_scale),
        sampling_ratio=_args.sampling_ratio(name, sampling_ratio),
        aligned=bool(aligned),
        mode=_args.choice(name, "mode", op.modes[0] if mode is None else mode, op.modes),
        layout=layout,
        deterministic=_DETERMINISTIC[0] if deterministic is None else bool(deterministic),
    )
    params.update(op.fixed)
    boxes = _args.rois(name, rois, num_images, features.dtype)
    if height == 0 or width == 0:
        # An empty map: every sample is outside it, so every output is 0 (and the
        # kernels' tap arithmetic assumes at least one row and column).
        shape = output_shape(op.name, features.shape, boxes.array.shape, size, layout)
        return jnp.zeros(shape, features.dtype)
    if _REFERENCE_PATH.get() or not _lowering.has_kernels(jax.default_backend()):
        rows = _args.rows_from_boxes(boxes.array) if boxes.per_image else boxes.array
        out = op.reference(features, rows, params)
        return out.reshape(boxes.array.shape[:2] + out.shape[1:]) if boxes.per_image else out
    out, _ = _primitives.forward_p.bind(features, boxes.array, **params)
    return out


# {operator name: its public function}, filled by @_operator below.
FUNCTIONS = {}


def _operator(name):
    def register(fn):
        FUNCTIONS[name] = fn
        return fn
    return register


@_operator("roi_align")
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
    return apply("roi_align", features, rois, output_size, spatial_scale, sampling_ratio,
                 aligned, mode, layout, deterministic)


@_operator("roi_pool")
def roi_pool(features, rois, output_size, spatial_scale=1.0, *, layout="NCHW",
             deterministic=None):
    """RoIPool (Fast R-CNN), as ``torchvision.ops.roi_pool``: corners rounded half
    away from zero, max over the integer cells of each bin, an empty bin 0. The
    gradient goes to the arg-max cell; the box gradient is 0 (piecewise constant).
    """
    return apply("roi_pool", features, rois, output_size, spatial_scale, layout=layout,
                 deterministic=deterministic)


@_operator("ps_roi_align")
def ps_roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, *,
                 layout="NCHW", deterministic=None):
    """Position-sensitive RoIAlign (R-FCN), as ``torchvision.ops.ps_roi_align``:
    C = C_out * PH * PW; bin (ph, pw) of output channel c reads input channel
    (c * PH + ph) * PW + pw. Always the half-pixel offset. An empty sampling grid
    gives 0 (torchvision: NaN).
    """
    return apply("ps_roi_align", features, rois, output_size, spatial_scale, sampling_ratio,
                 layout=layout, deterministic=deterministic)


@_operator("ps_roi_pool")
def ps_roi_pool(features, rois, output_size, spatial_scale=1.0, *, layout="NCHW",
                deterministic=None):
    """Position-sensitive RoIPool (R-FCN), as ``torchvision.ops.ps_roi_pool``'s
    forward: the average over the bin's cells, bin edges clipped to [0, H-1] (so
    the last row and column are never pooled, as in torchvision). Its gradient is
    the exact transpose of that forward (torchvision's backward clips to H and is
    not). The box gradient is 0 (piecewise constant).
    """
    return apply("ps_roi_pool", features, rois, output_size, spatial_scale, layout=layout,
                 deterministic=deterministic)


@_operator("legacy")
def legacy_roi_align(features, rois, output_size, spatial_scale, *, layout="NCHW",
                     deterministic=None):
    """faster-rcnn.pytorch ``RoIAlign(AH, AW, s)``: the (AH, AW) lattice itself (AH, AW >= 2)."""
    return apply("legacy", features, rois, output_size, spatial_scale, layout=layout,
                 deterministic=deterministic)


@_operator("legacy_avg")
def legacy_roi_align_avg(features, rois, output_size, spatial_scale, *, layout="NCHW",
                         deterministic=None):
    """faster-rcnn.pytorch ``RoIAlignAvg(AH, AW, s)``: an (AH+1, AW+1) lattice, then a 2x2
    average pool, stride 1."""
    return apply("legacy_avg", features, rois, output_size, spatial_scale, layout=layout,
                 deterministic=deterministic)


@_operator("legacy_max")
def legacy_roi_align_max(features, rois, output_size, spatial_scale, *, layout="NCHW",
                         deterministic=None):
    """faster-rcnn.pytorch ``RoIAlignMax(AH, AW, s)``: an (AH+1, AW+1) lattice, then a 2x2 max
    pool, stride 1."""
    return apply("legacy_max", features, rois, output_size, spatial_scale, layout=layout,
                 deterministic=deterministic)


assert set(FUNCTIONS) == {op.name for op in OPERATORS}, "every operator needs its function"


def reference_form(op_name):
    """The public function of `op_name`, computed by its pure-JAX core: the same
    signature and the same checks."""
    fn = FUNCTIONS[op_name]

    @functools.wraps(fn)
    def run(*args, **kwargs):
        token = _REFERENCE_PATH.set(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _REFERENCE_PATH.reset(token)

    run.__doc__ = f"``jax_roialign.{BY_NAME[op_name].function}`` computed in plain ``jax.numpy``."
    return run


def validate_rois(rois, num_images: int):
    """Which rois docs/semantics.md treats as bad data: a batch index that is not an
    integer in [0, num_images), or a non-finite coordinate. Returns a boolean array,
    True for bad rows: shape (K,) for (K, 5) rows or a list, (N, R) for (N, R, 4)
    boxes. Works under jit; combine with ``jax.experimental.checkify``
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
