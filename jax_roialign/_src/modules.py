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
    call_arguments: tuple        # per-call data, keyword arguments of __call__


def config_parameters(fn, call_arguments=(), layout: str = DEFAULT_LAYOUT
                      ) -> list[inspect.Parameter]:
    """The function's parameters after (features, rois), without the per-call ones, with
    layout defaulting to `layout`."""
    params = list(inspect.signature(fn).parameters.values())[2:]
    return [p.replace(default=layout) if p.name == "layout" else p for p in params
            if p.name not in call_arguments]


def specs(layout: str = DEFAULT_LAYOUT) -> list[ModuleSpec]:
    """One spec per registry entry, `layout` the default of the modules' `layout`."""
    return [ModuleSpec(op.module, op.function, FUNCTIONS[op.name],
                       config_parameters(FUNCTIONS[op.name], op.call_arguments, layout),
                       op.call_arguments) for op in OPERATORS if op.module]


def apply(spec: ModuleSpec, module, features, rois, call_arguments):
    """The operator on the configuration stored as the module's attributes, and the
    call's own `call_arguments` (a dict of the spec's per-call arguments)."""
    unknown = set(call_arguments) - set(spec.call_arguments)
    if unknown:
        raise TypeError(f"{spec.name}.__call__ got unexpected arguments {sorted(unknown)}; "
                        f"it takes (features, rois"
                        + "".join(f", {a}=None" for a in spec.call_arguments) + ")")
    per_call = {name: call_arguments.get(name) for name in spec.call_arguments}  # default None
    return spec.function(features, rois, **per_call,
                         **{p.name: getattr(module, p.name) for p in spec.parameters})


def docstring(kind: str, spec: ModuleSpec, extra: str = "") -> str:
    fields = ", ".join(str(p) for p in spec.parameters)
    call = "".join(f", {a}=None" for a in spec.call_arguments)
    return (f"{kind} module applying ``jax_roialign.{spec.path}``.\n\n"
            f"Configuration: ({fields}{extra}); ``__call__(features, rois{call})``.\n\n"
            f"jax_roialign.{spec.path}:\n\n{inspect.getdoc(spec.function) or ''}")
