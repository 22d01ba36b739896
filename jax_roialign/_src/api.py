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
import numpy as np

from . import args as _args
from . import lowering as _lowering
from . import primitives as _primitives
from . import level_mappers as _mappers
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


def _params(op, name, output_size, spatial_scales, sampling_ratio, aligned, mode, layout,
            deterministic, extrapolation_value=0.0, radians=False):
    """The primitives' parameters (one set, carried by all five) for operator `op`."""
    params = dict(
        extrapolation_value=float(extrapolation_value),
        radians=bool(radians),
        op=op.kernel,
        output_size=output_size,
        spatial_scales=tuple(_args.spatial_scale(name, s) for s in spatial_scales),
        sampling_ratio=_args.sampling_ratio(name, sampling_ratio),
        aligned=_args.flag(name, "aligned", aligned),
        mode=_args.choice(name, "mode", op.modes[0] if mode is None else mode, op.modes),
        layout=layout,
        deterministic=(_DETERMINISTIC[0] if deterministic is None
                       else _args.flag(name, "deterministic", deterministic)),
        winners=False,  # forward_p records max mode's winners only when differentiated
    )
    params.update(op.fixed)
    return params


def _pool(op, features, boxes, levels, params):
    """The operator on normalised arguments: `features` a list of levels, `boxes` an
    `args.Rois`, `levels` int32 per roi (None: one level)."""
    if _REFERENCE_PATH.get() or not _lowering.has_kernels(jax.default_backend()):
        rows = _args.rows_from_boxes(boxes.array) if boxes.per_image else boxes.array
        flat = None if levels is None else levels.reshape(-1)
        out = op.reference(features, rows, flat, params)
        return out.reshape(boxes.array.shape[:2] + out.shape[1:]) if boxes.per_image else out
    if levels is None:
        levels = jnp.zeros((0,), jnp.int32)
    out, _ = _primitives.forward_p.bind(boxes.array, levels, *features, **params)
    return out


def apply(op_name, features, rois, output_size, spatial_scale=1.0, sampling_ratio=0,
          aligned=False, mode=None, layout="NCHW", deterministic=None):
    """Single-level operator `op_name` of the registry on the public functions' arguments."""
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
    params = _params(op, name, size, (spatial_scale,), sampling_ratio, aligned, mode, layout,
                     deterministic)
    boxes = _args.rois(name, rois, num_images, features.dtype, op.box_coords, op.box_names)
    if height == 0 or width == 0:
        # An empty map: every sample is outside it, so every output is 0.
        shape = output_shape(op.kernel, features.shape, boxes.array.shape, size, layout)
        return jnp.zeros(shape, features.dtype)
    return _pool(op, [features], boxes, None, params)


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


def level_of(rois, spatial_scales, *, mapper="torchvision", canonical_scale=224,
             canonical_level=4, finest_scale=56):
    """The pyramid level each box is pooled from by ``multi_scale_roi_align``: an int32
    index into ``spatial_scales`` per box ((K,) for rows or a list, (N, R) for (N, R, 4)
    boxes), computed as the ``mapper``'s library does (docs/semantics.md):

    - "torchvision" (``MultiScaleRoIAlign``'s ``LevelMapper``):
      ``floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6)``;
    - "detectron2" (``assign_boxes_to_levels``):
      ``floor(canonical_level + log2(sqrt(area) / canonical_scale + 1e-8))``;
    - "mmdet" (``SingleRoIExtractor.map_roi_levels``):
      ``floor(log2(sqrt(area) / finest_scale + 1e-6))``;

    clamped to the pyramid (torchvision and Detectron2: levels ``-log2(spatial_scales[0])``
    to ``-log2(spatial_scales[-1])``, which must be consecutive powers of two; mmdet: 0 to
    L - 1); area ``(x2 - x1) * (y2 - y1)`` in the boxes' dtype. A box with a negative or NaN
    area gets -1 (no level: it pools zeros).
    """
    name = "level_of"
    scales = _scales(name, spatial_scales)
    mapper = _args.choice(name, "mapper", mapper, _mappers.MAPPERS)
    dtype = getattr(rois, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    boxes = _args.rois(name, rois, _args.images_of(rois), dtype)
    first, last = _mappers.level_range(name, mapper, scales)
    coords = boxes.array if boxes.per_image else boxes.array[:, 1:]
    return _mappers.map_levels(jax.lax.stop_gradient(coords), first, last, mapper,
                               _args.positive(name, "canonical_scale", canonical_scale),
                               _args.integer(name, "canonical_level", canonical_level),
                               _args.positive(name, "finest_scale", finest_scale))


def _scales(name, spatial_scales):
    if not isinstance(spatial_scales, (list, tuple)) or not spatial_scales:
        raise TypeError(f"{name}: spatial_scales must be a non-empty sequence of floats, one "
                        f"per feature level, got {spatial_scales!r}")
    return tuple(_args.spatial_scale(name, s, f"spatial_scales[{i}]")
                 for i, s in enumerate(spatial_scales))


@_operator("multi_scale_roi_align")
def multi_scale_roi_align(features, rois, output_size, spatial_scales, sampling_ratio=-1,
                          aligned=False, *, levels=None, mapper="torchvision",
                          canonical_scale=224, canonical_level=4, finest_scale=56, mode="avg",
                          layout="NCHW", deterministic=None):
    """The FPN pooler in one call: each box pooled by roi_align from one level of a
    feature pyramid, chosen by its size (``level_of``, the ``mapper``'s library's rule)
    or given as ``levels``. One kernel call for all levels, forward and backward.

    features: a sequence of L arrays, finest level first, the same N, C and dtype.
    spatial_scales: the L levels' scales (e.g. ``(1/4, 1/8, 1/16, 1/32)``).
    levels: optional int array, one level index (0 .. L-1) per box, overriding the
    mapper; a box whose level is outside [0, L) pools zeros.
    The other arguments, and the output, are ``roi_align``'s.
    """
    name = "multi_scale_roi_align"
    op = BY_NAME[name]
    if not isinstance(features, (list, tuple)) or not features:
        raise TypeError(f"{name}: features must be a non-empty sequence of arrays, one per "
                        f"level, got {type(features).__name__}")
    scales = _scales(name, spatial_scales)
    if len(scales) != len(features):
        raise ValueError(f"{name}: spatial_scales must hold one scale per feature level "
                         f"({len(features)}), got {len(scales)}")
    if len(features) > _args.MAX_LEVELS:
        raise ValueError(f"{name}: at most {_args.MAX_LEVELS} feature levels, got "
                         f"{len(features)}")
    shapes = [_args.check_features(f"{name}: features[{i}]", f, layout)
              for i, f in enumerate(features)]
    features = [jnp.asarray(f) for f in features]
    for i, (f, shape) in enumerate(zip(features, shapes)):
        if shape[:2] != shapes[0][:2] or f.dtype != features[0].dtype:
            raise ValueError(f"{name}: every level needs the N, C and dtype of features[0] "
                             f"({shapes[0][0]}, {shapes[0][1]}, {features[0].dtype}), got "
                             f"features[{i}] with ({shape[0]}, {shape[1]}, {f.dtype})")
    size = _args.output_size(name, output_size)
    params = _params(op, name, size, scales, sampling_ratio, aligned, mode, layout,
                     deterministic)
    boxes = _args.rois(name, rois, shapes[0][0], features[0].dtype)
    if levels is None:
        mapper = _args.choice(name, "mapper", mapper, _mappers.MAPPERS)
        first, last = _mappers.level_range(name, mapper, scales)
        coords = boxes.array if boxes.per_image else boxes.array[:, 1:]
        levels = _mappers.map_levels(
            jax.lax.stop_gradient(coords), first, last, mapper,
            _args.positive(name, "canonical_scale", canonical_scale),
            _args.integer(name, "canonical_level", canonical_level),
            _args.positive(name, "finest_scale", finest_scale))
        if len(features) == 1:
            levels = None  # as the peers: one level pools every box, no mapper
    else:
        levels = _args.levels(name, levels, boxes.array.shape[:-1])
    return _pool(op, features, boxes, levels, params)


@_operator("roi_align_rotated")
def roi_align_rotated(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1,
                      aligned=True, *, clockwise=False, angle_unit="degrees", mode="avg",
                      layout="NCHW", deterministic=None):
    """Rotated RoIAlign (Detectron2's ``ROIAlignRotated``, mmcv's ``RoIAlignRotated``): each
    box sampled on a bin grid in its own frame, rotated into the map.

    rois: (K, 6) rows ``[batch_index, cx, cy, w, h, angle]``, (N, R, 5) boxes or a list of
    N arrays (R_n, 5); the angle counter-clockwise (``clockwise=True``: clockwise, as
    mmcv's flag) in ``angle_unit`` ("degrees", Detectron2's; "radians", mmcv's).
    aligned: the half-pixel offset (Detectron2 always; mmcv's flag). False also clamps the
    scaled size to at least 1, as mmcv does. A negative size with ``aligned=True`` is bad
    data (zeros; the peers raise). mode: "avg" only, as the peers.
    """
    name = "roi_align_rotated"
    op = BY_NAME[name]
    num_images, _, height, width = _args.check_features(name, features, layout)
    features = jnp.asarray(features)
    size = _args.output_size(name, output_size)
    unit = _args.choice(name, "angle_unit", angle_unit, ("degrees", "radians"))
    params = _params(op, name, size, (spatial_scale,), sampling_ratio, aligned, mode, layout,
                     deterministic, radians=unit == "radians")
    boxes = _args.rois(name, rois, num_images, features.dtype, op.box_coords, op.box_names)
    if _args.flag(name, "clockwise", clockwise):
        # mmcv negates theta for clockwise boxes: an exact sign flip of the angle.
        boxes = _args.Rois(boxes.array.at[..., -1].multiply(-1), boxes.per_image)
    if height == 0 or width == 0:
        shape = output_shape(op.kernel, features.shape, boxes.array.shape, size, layout)
        return jnp.zeros(shape, features.dtype)
    return _pool(op, [features], boxes, None, params)


@_operator("crop_and_resize")
@_operator("crop_and_resize_nearest")
def crop_and_resize(image, boxes, box_indices, crop_size, *, method="bilinear",
                    extrapolation_value=0.0, layout="NHWC", deterministic=None):
    """TensorFlow's ``tf.image.crop_and_resize``: each box resampled to ``crop_size``.

    image: (N, H, W, C) (``layout="NHWC"``, TensorFlow's) or (N, C, H, W).
    boxes: (K, 4) normalised ``[y1, x1, y2, x2]`` (``y * (H - 1)`` in image rows) with
    ``box_indices`` (K,) the image of each; or (N, R, 4) boxes per image (or a list of N
    (R_n, 4)) with ``box_indices=None``: the output is then (N, R, CH, CW, C).
    crop_size: int or (CH, CW). method: "bilinear" (TensorFlow's lerps) or "nearest".
    extrapolation_value: the value of samples outside the image.
    Differs from TensorFlow: a box index outside [0, N) or a non-finite box (or one whose
    corners, size or centre overflow once scaled by H - 1, W - 1) gives zeros
    and no gradient (TensorFlow raises); the output has the image's dtype (TensorFlow:
    float32), and float64 images compute in float64; "nearest" has no box gradient (the
    true derivative, 0; TensorFlow returns the bilinear one).
    """
    name = "crop_and_resize"
    method = _args.choice(name, "method", method, ("bilinear", "nearest"))
    op = BY_NAME["crop_and_resize" if method == "bilinear" else "crop_and_resize_nearest"]
    num_images, _, height, width = _args.check_features(name, image, layout)
    image = jnp.asarray(image)
    size = _args.output_size(name, crop_size, "crop_size")
    fill = _args.real(name, "extrapolation_value", extrapolation_value)
    params = _params(op, name, size, (1.0,), 0, False, None, layout, deterministic,
                     extrapolation_value=fill)
    if box_indices is None:
        if not isinstance(boxes, (list, tuple)) and len(np.shape(boxes)) == 2:
            raise ValueError(f"{name}: (K, 4) boxes need box_indices, the image of each box; "
                             f"or pass (N, R, 4) boxes per image")
        rois = _args.rois(name, boxes, num_images, image.dtype, op.box_coords, op.box_names)
    else:
        rois = _args.rows_with_indices(name, boxes, box_indices, image.dtype)
    if height == 0 or width == 0:
        shape = output_shape(op.kernel, image.shape, rois.array.shape, size, layout)
        return jnp.zeros(shape, image.dtype)
    return _pool(op, [image], rois, None, params)


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
    True for bad rows: shape (K,) for (K, 1 + c) rows or a list, (N, R) for (N, R, c)
    boxes (any box width c: 4, or 5 for rotated boxes). Works under jit; combine with
    ``jax.experimental.checkify`` (``checkify.check(~bad.any(), ...)``) to raise.
    (An operator may reject more: a negative size of an aligned rotated box, a level
    outside the pyramid.)
    """
    dtype = getattr(rois, "dtype", jnp.float32)
    if isinstance(rois, (list, tuple)):
        coords = np.shape(rois[0])[-1] if rois else 4
    else:
        shape = np.shape(rois)
        coords = shape[-1] - (1 if len(shape) == 2 else 0)
    boxes = _args.rois("validate_rois", rois, num_images, dtype, coords,
                       ", ".join(["coordinate"] * coords))
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
