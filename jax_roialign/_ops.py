"""The operator table and the one path every public operator takes: validate the
arguments, then bind the primitive (compiled kernels) or run the pure-JAX
reference (platforms without kernels)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _args, _lowering, _primitives


class OpSpec(NamedTuple):
    modes: tuple            # accepted `mode` values (the first is the default)
    min_output: int         # smallest output size
    fixed: dict             # parameters the operator fixes


SPECS = {
    "roi_align": OpSpec(("avg", "max"), 1, {}),
    "roi_pool": OpSpec(("max",), 1, dict(sampling_ratio=0, aligned=False)),
    "ps_roi_align": OpSpec(("avg",), 1, dict(aligned=True)),
    "ps_roi_pool": OpSpec(("avg",), 1, dict(sampling_ratio=0, aligned=False)),
    "legacy": OpSpec(("avg",), 2, dict(sampling_ratio=0, aligned=False)),
    "legacy_avg": OpSpec(("avg",), 1, dict(sampling_ratio=0, aligned=False)),
    "legacy_max": OpSpec(("max",), 1, dict(sampling_ratio=0, aligned=False)),
}

_DETERMINISTIC = [False]


def set_deterministic(value: bool) -> None:
    """Default for ``deterministic=None``: bit-identical backward passes on the GPU
    (no atomics; slower). CPU kernels are always deterministic."""
    _DETERMINISTIC[0] = bool(value)


def apply(op, features, rois, output_size, spatial_scale=1.0, sampling_ratio=0, aligned=False,
          mode=None, layout="NCHW", deterministic=None, *, public_name=None, use_kernels=None):
    """Operator `op` of SPECS; `use_kernels` False forces the pure-JAX reference
    (None: the kernels where this backend has them)."""
    name = public_name or op
    spec = SPECS[op]
    num_images, channels, _, _ = _args.check_features(name, features, layout)
    features = jnp.asarray(features)
    size = _args.output_size(name, output_size, minimum=spec.min_output)
    if op in _primitives.POSITION_SENSITIVE and channels % (size[0] * size[1]):
        raise ValueError(f"{name}: features must have a channel count divisible by "
                         f"output_size[0] * output_size[1] = {size[0] * size[1]}, got {channels}")
    params = dict(
        op=op,
        output_size=size,
        spatial_scale=_args.spatial_scale(name, spatial_scale),
        sampling_ratio=_args.sampling_ratio(name, sampling_ratio),
        aligned=bool(aligned),
        mode=_args.choice(name, "mode", spec.modes[0] if mode is None else mode, spec.modes),
        layout=layout,
        deterministic=_DETERMINISTIC[0] if deterministic is None else bool(deterministic),
    )
    params.update(spec.fixed)
    boxes = _args.rois(name, rois, num_images, features.dtype)
    height, width = (features.shape[2:] if layout == "NCHW" else features.shape[1:3])
    if height == 0 or width == 0:
        # An empty map: every sample is outside it, so every output is 0 (and the
        # kernels' tap arithmetic assumes at least one row and column).
        out = _primitives.output_shape(features.shape, boxes.array.shape, size, layout, op)
        return jnp.zeros(out, features.dtype)
    if use_kernels is None:
        use_kernels = _lowering.has_kernels(jax.default_backend())
    if not use_kernels:
        from . import reference

        return reference.apply_normalised(features, boxes, **params)
    out, _ = _primitives.forward_p.bind(features, boxes.array, **params)
    return out
