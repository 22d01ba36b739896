"""What the framework modules (Flax, Haiku, Equinox) share: one class per operator of the
registry, named by its entry, configured by its function's parameters after
``(features, rois)`` (so a module cannot disagree with its function about an argument's
name or default), with ``layout`` defaulting to the framework's convention: NHWC for
Flax and Haiku, whose convolutions are channels-last; NCHW for Equinox, whose are
channels-first."""

from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

from .api import FUNCTIONS
from .operators import OPERATORS

DEFAULT_LAYOUT = "NHWC"


class ModuleSpec(NamedTuple):
    name: str                    # class name
    path: str                    # the function's public path in jax_roialign
    function: Callable
    parameters: list             # inspect.Parameter, the configuration


def config_parameters(fn, layout: str = DEFAULT_LAYOUT) -> list[inspect.Parameter]:
    """The function's parameters after (features, rois), with layout defaulting to `layout`."""
    params = list(inspect.signature(fn).parameters.values())[2:]
    return [p.replace(default=layout) if p.name == "layout" else p for p in params]


def specs(layout: str = DEFAULT_LAYOUT) -> list[ModuleSpec]:
    """One spec per registry entry, `layout` the default of the modules' `layout`."""
    return [ModuleSpec(op.module, op.function, FUNCTIONS[op.name],
                       config_parameters(FUNCTIONS[op.name], layout)) for op in OPERATORS]


def apply(spec: ModuleSpec, module, features, rois):
    """The operator on the configuration stored as the module's attributes."""
    return spec.function(features, rois, **{p.name: getattr(module, p.name)
                                            for p in spec.parameters})


def docstring(kind: str, spec: ModuleSpec, extra: str = "") -> str:
    fields = ", ".join(str(p) for p in spec.parameters)
    return (f"{kind} module applying ``jax_roialign.{spec.path}``.\n\n"
            f"Configuration: ({fields}{extra}); ``__call__(features, rois)``.\n\n"
            f"jax_roialign.{spec.path}:\n\n{inspect.getdoc(spec.function) or ''}")
