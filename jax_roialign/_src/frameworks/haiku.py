"""Haiku classes for every operator (see jax_roialign.haiku)."""

from __future__ import annotations

import inspect

try:
    import haiku as hk
except ImportError as e:  # exercised by a subprocess test that hides Haiku
    raise ImportError("jax_roialign.haiku needs Haiku: pip install jax_roialign[haiku]") from e

from ..modules import apply as _apply
from ..modules import docstring as _docstring
from ..modules import specs as _specs


def _module(spec) -> type:
    """An hk.Module whose constructor takes the operator's configuration arguments."""
    config = inspect.Signature(spec.parameters)

    def __init__(self, *args, name=None, **kwargs):
        bound = config.bind(*args, **kwargs)
        bound.apply_defaults()
        # Haiku's metaclass needs hk.Module.__init__ to run before any attribute is set.
        hk.Module.__init__(self, name=name)
        for key, value in bound.arguments.items():
            setattr(self, key, value)

    def __call__(self, features, rois, **call_arguments):
        return _apply(spec, self, features, rois, call_arguments)

    # Haiku's metaclass derives the class's signature from __init__'s.
    __init__.__signature__ = inspect.Signature([
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *spec.parameters,
        inspect.Parameter("name", inspect.Parameter.KEYWORD_ONLY, default=None)])
    return type(spec.name, (hk.Module,), {
        "__init__": __init__, "__call__": __call__,
        "__module__": "jax_roialign.haiku", "__qualname__": spec.name,
        "__doc__": _docstring("Haiku", spec, ", name=None")})


#: The classes, by name.
MODULES = {spec.name: _module(spec) for spec in _specs()}
