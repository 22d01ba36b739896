"""Flax modules for every jax_roialign operator (``pip install jax_roialign[flax]``).

    import flax.linen as nn
    from jax_roialign.flax import RoIAlign

    class Head(nn.Module):
        @nn.compact
        def __call__(self, features, boxes):             # (N, H, W, C), (N, R, 4)
            x = RoIAlign(7, spatial_scale=1 / 16, sampling_ratio=2, aligned=True)(features, boxes)
            return nn.Dense(10)(x.reshape(*x.shape[:2], -1))  # (N, R, 10)

Each module is configured with the operator's arguments after ``(features, rois)``
(same names, order and defaults: ``RoIAlign(output_size, spatial_scale, sampling_ratio,
aligned, mode=..., layout=..., deterministic=...)``), except that ``layout`` defaults to
``"NHWC"``, Flax's convention. ``__call__(features, rois)`` applies the operator; the
modules hold no parameters, so they work unchanged under ``jit``, ``grad`` and ``vmap``
inside any ``nn.Module``. Rois take all three forms the operators accept.

Linen modules: RoIAlign, RoIPool, PSRoIAlign, PSRoIPool, LegacyRoIAlign,
LegacyRoIAlignAvg, LegacyRoIAlignMax. The same names live in ``jax_roialign.flax.nnx``
(an ``nnx.Module`` each) when the installed Flax ships ``flax.nnx``.

The classes are generated from the operators' signatures, so a module can never
disagree with its function about an argument's name or default.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

try:
    from flax import linen as _linen
except ImportError as e:  # exercised by a subprocess test that hides Flax
    raise ImportError("jax_roialign.flax needs Flax: pip install jax_roialign[flax]") from e

try:
    from flax import nnx as _nnx
except ImportError:  # a Flax from before nnx: linen modules only
    _nnx = None

import jax_roialign

from ._modules import OPERATORS
from ._modules import config_parameters as _config_parameters
from ._modules import operator as _operator


def _doc(kind: str, path: str, op, params) -> str:
    fields = ", ".join(str(p) for p in params)
    return (f"{kind} module applying ``jax_roialign.{path}``.\n\n"
            f"Configuration: ({fields}); ``__call__(features, rois)``.\n\n"
            f"jax_roialign.{path}:\n\n{inspect.getdoc(op) or ''}")


def _linen_module(name: str, path: str, op) -> type:
    """A linen dataclass whose fields are the operator's configuration arguments."""
    params = _config_parameters(op)
    # Linen turns every subclass into a dataclass from its annotations and class
    # attributes (the defaults); required fields precede defaulted ones in every
    # operator signature, as dataclasses require.
    namespace = {"__annotations__": {p.name: Any for p in params},
                 "__module__": __name__, "__qualname__": name,
                 "__doc__": _doc("Flax linen", path, op, params)}
    namespace.update({p.name: p.default for p in params if p.default is not p.empty})

    def __call__(self, features, rois):
        return op(features, rois, **{p.name: getattr(self, p.name) for p in params})

    namespace["__call__"] = __call__
    return type(name, (_linen.Module,), namespace)


def _nnx_module(name: str, path: str, op) -> type:
    """An nnx.Module whose constructor takes the operator's configuration arguments."""
    params = _config_parameters(op)
    signature = inspect.Signature(params)

    def __init__(self, *args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        # Plain Python values (ints, floats, strings, tuples) are static attributes of
        # an nnx.Module: they never become traced state.
        for key, value in bound.arguments.items():
            setattr(self, key, value)

    def __call__(self, features, rois):
        return op(features, rois, **{p.name: getattr(self, p.name) for p in params})

    # nnx's metaclass hides __init__ from inspect.signature(cls): state it on the class.
    return type(name, (_nnx.Module,), {
        "__init__": __init__, "__call__": __call__, "__signature__": signature,
        "__module__": f"{__name__}.nnx", "__qualname__": name,
        "__doc__": _doc("Flax nnx", path, op, params)})


def _namespace(submodule: str, classes: dict) -> types.ModuleType:
    """jax_roialign.flax.<submodule> as a real module object in sys.modules, so that both
    `from jax_roialign.flax.nnx import RoIAlign` and `jax_roialign.flax.nnx.RoIAlign` work."""
    module = types.ModuleType(f"{__name__}.{submodule}",
                              f"jax_roialign modules for flax.{submodule}.")
    module.__dict__.update(classes)
    module.__all__ = sorted(classes)
    module.__getattr__ = _missing_operator(module.__name__)
    sys.modules[module.__name__] = module
    return module


def _missing_operator(module_name):
    """A module __getattr__: a module whose operator this version of the core lacks gives
    an error that says so, rather than a bare AttributeError."""
    def __getattr__(name):
        if name in OPERATORS:
            raise AttributeError(f"{name} needs jax_roialign.{OPERATORS[name]}, which this "
                                 f"version of jax_roialign ({jax_roialign.__version__}) lacks")
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    return __getattr__


_AVAILABLE = {name: (path, op) for name, path in OPERATORS.items()
              if (op := _operator(path)) is not None}

# Linen modules at the top level (Flax's long-standing API) and in .linen; nnx in .nnx.
globals().update({name: _linen_module(name, path, op) for name, (path, op) in _AVAILABLE.items()})
linen = _namespace("linen", {name: globals()[name] for name in _AVAILABLE})
nnx = None if _nnx is None else _namespace(
    "nnx", {name: _nnx_module(name, path, op) for name, (path, op) in _AVAILABLE.items()})

__all__ = sorted(_AVAILABLE) + ["linen", "nnx"]
__getattr__ = _missing_operator(__name__)
