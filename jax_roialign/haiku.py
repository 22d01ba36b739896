"""Haiku modules for every jax_roialign operator (``pip install jax_roialign[haiku]``).

    import haiku as hk
    from jax_roialign.haiku import RoIAlign

    def head(features, boxes):                            # (N, H, W, C), (N, R, 4)
        x = RoIAlign(7, spatial_scale=1 / 16, sampling_ratio=2, aligned=True)(features, boxes)
        return hk.Linear(10)(x.reshape(*x.shape[:2], -1))  # (N, R, 10)

    model = hk.transform(head)

Each module takes the operator's arguments after ``(features, rois)`` (same names, order
and defaults: ``RoIAlign(output_size, spatial_scale, sampling_ratio, aligned, mode=...,
layout=..., deterministic=..., name=None)``), except that ``layout`` defaults to
``"NHWC"``, the convention of Haiku's convolutions. ``__call__(features, rois)`` applies
the operator; the modules create no parameters, so they work unchanged inside
``hk.transform`` under ``jit``, ``grad`` and ``vmap``.

Modules: RoIAlign, RoIPool, PSRoIAlign, PSRoIPool, LegacyRoIAlign, LegacyRoIAlignAvg,
LegacyRoIAlignMax, generated from the operators' signatures so that a module can never
disagree with its function about an argument's name or default.
"""

from __future__ import annotations

import inspect

try:
    import haiku as hk
except ImportError as e:  # exercised by a subprocess test that hides Haiku
    raise ImportError("jax_roialign.haiku needs Haiku: pip install jax_roialign[haiku]") from e

import jax_roialign

from ._modules import OPERATORS
from ._modules import config_parameters as _config_parameters
from ._modules import operator as _operator


def _module(name: str, path: str, op) -> type:
    """An hk.Module whose constructor takes the operator's configuration arguments."""
    params = _config_parameters(op)
    config = inspect.Signature(params)

    def __init__(self, *args, name=None, **kwargs):
        bound = config.bind(*args, **kwargs)
        bound.apply_defaults()
        # Haiku's metaclass needs hk.Module.__init__ to run before any attribute is set.
        hk.Module.__init__(self, name=name)
        for key, value in bound.arguments.items():
            setattr(self, key, value)

    def __call__(self, features, rois):
        return op(features, rois, **{p.name: getattr(self, p.name) for p in params})

    # Haiku's metaclass derives the class's signature from __init__'s.
    __init__.__signature__ = inspect.Signature([
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *params,
        inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, default=None)])

    fields = ", ".join(str(p) for p in params)
    doc = (f"Haiku module applying ``jax_roialign.{path}``.\n\n"
           f"Configuration: ({fields}, name=None); ``__call__(features, rois)``.\n\n"
           f"jax_roialign.{path}:\n\n{inspect.getdoc(op) or ''}")
    return type(name, (hk.Module,), {
        "__init__": __init__, "__call__": __call__,
        "__module__": __name__, "__qualname__": name, "__doc__": doc})


_AVAILABLE = {name: (path, op) for name, path in OPERATORS.items()
              if (op := _operator(path)) is not None}
globals().update({name: _module(name, path, op) for name, (path, op) in _AVAILABLE.items()})
__all__ = sorted(_AVAILABLE)


def __getattr__(name):
    # An operator that this version of the core lacks gives an error that says so.
    if name in OPERATORS:
        raise AttributeError(f"{name} needs jax_roialign.{OPERATORS[name]}, which this "
                             f"version of jax_roialign ({jax_roialign.__version__}) lacks")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
