"""Flax linen and nnx classes for every operator (see jax_roialign.flax)."""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

try:
    from flax import linen as _linen
    from flax import nnx as _nnx
except ImportError as e:  # exercised by a subprocess test that hides Flax
    raise ImportError("jax_roialign.flax needs Flax: pip install jax_roialign[flax]") from e

from ..modules import apply as _apply
from ..modules import docstring as _docstring
from ..modules import specs as _specs


def _linen_module(spec) -> type:
    """A linen dataclass whose fields are the operator's configuration arguments."""
    params = spec.parameters
    # Linen turns every subclass into a dataclass from its annotations and class
    # attributes (the defaults); required fields precede defaulted ones in every
    # operator signature, as dataclasses require.
    namespace = {"__annotations__": {p.name: Any for p in params},
                 "__module__": "jax_roialign.flax", "__qualname__": spec.name,
                 "__doc__": _docstring("Flax linen", spec)}
    namespace.update({p.name: p.default for p in params if p.default is not p.empty})

    def __call__(self, features, rois, **call_arguments):
        return _apply(spec, self, features, rois, call_arguments)

    namespace["__call__"] = __call__
    return type(spec.name, (_linen.Module,), namespace)


def _nnx_module(spec) -> type:
    """An nnx.Module whose constructor takes the operator's configuration arguments."""
    signature = inspect.Signature(spec.parameters)

    def __init__(self, *args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        # Plain Python values (ints, floats, strings, tuples) are static attributes of
        # an nnx.Module: they never become traced state.
        for key, value in bound.arguments.items():
            setattr(self, key, value)

    def __call__(self, features, rois, **call_arguments):
        return _apply(spec, self, features, rois, call_arguments)

    # nnx's metaclass hides __init__ from inspect.signature(cls): state it on the class.
    return type(spec.name, (_nnx.Module,), {
        "__init__": __init__, "__call__": __call__, "__signature__": signature,
        "__module__": "jax_roialign.flax.nnx", "__qualname__": spec.name,
        "__doc__": _docstring("Flax nnx", spec)})


def namespace(submodule: str, classes: dict) -> types.ModuleType:
    """jax_roialign.flax.<submodule> as a real module object in sys.modules, so that both
    `from jax_roialign.flax.nnx import RoIAlign` and `jax_roialign.flax.nnx.RoIAlign` work."""
    name = f"jax_roialign.flax.{submodule}"
    module = types.ModuleType(name, f"jax_roialign modules for flax.{submodule}.")
    module.__dict__.update(classes)
    module.__all__ = sorted(classes)
    sys.modules[name] = module
    return module


#: The linen and the nnx classes, by name.
LINEN = {spec.name: _linen_module(spec) for spec in _specs()}
NNX = {spec.name: _nnx_module(spec) for spec in _specs()}
