"""Equinox classes for every operator (see jax_roialign.equinox)."""

from __future__ import annotations

from typing import Any

try:
    import equinox as eqx
except ImportError as e:  # exercised by a subprocess test that hides Equinox
    raise ImportError("jax_roialign.equinox needs Equinox: pip install jax_roialign[equinox]") from e

import jax.numpy as jnp

from ..modules import apply as _apply
from ..modules import docstring as _docstring
from ..modules import specs as _specs

# Equinox's convolutions are channels-first: eqx.nn.Conv2d maps (C, H, W) to (C', H', W').
LAYOUT = "NCHW"


def _hashable(value):
    # Static fields are part of the treedef, which jit hashes: lists become tuples.
    return tuple(value) if isinstance(value, list) else value


def _module(spec) -> type:
    """An eqx.Module whose fields are the operator's configuration arguments, all static
    (plain Python values that jit must see as constants, never traced)."""
    namespace = {"__annotations__": {p.name: Any for p in spec.parameters},
                 "__module__": "jax_roialign.equinox", "__qualname__": spec.name,
                 "__doc__": _docstring("Equinox", spec)}
    for p in spec.parameters:
        extra = {} if p.default is p.empty else {"default": p.default}
        namespace[p.name] = eqx.field(static=True, converter=_hashable, **extra)

    def __call__(self, features, rois, **call_arguments):
        # One example, as Equinox layers take them: (C, H, W) features (or (H, W, C) for
        # NHWC; a list of them for a pyramid) and (R, 4) boxes (per-box call arguments
        # (R,)), so that jax.vmap(module) maps it over a batch.
        levels = isinstance(features, (list, tuple))
        if jnp.ndim(features[0] if levels else features) == 3:
            one = lambda x: jnp.asarray(x)[None]
            features = [one(f) for f in features] if levels else one(features)
            call_arguments = {k: None if v is None else one(v) for k, v in call_arguments.items()}
            return _apply(spec, self, features, one(rois), call_arguments)[0]
        return _apply(spec, self, features, rois, call_arguments)

    namespace["__call__"] = __call__
    return type(spec.name, (eqx.Module,), namespace)


#: The classes, by name.
MODULES = {spec.name: _module(spec) for spec in _specs(LAYOUT)}
