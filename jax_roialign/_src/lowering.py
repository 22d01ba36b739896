"""The compiled modules and the lowering of primitives to their FFI targets.

Each compiled module (cc/bindings.h) exports ``kernels() -> {kernel: capsule}``, registered
here as the FFI target "jax_roialign_<kernel>" of its platform, and ``operators()``, the
kernels' operator table (codes, properties). A primitive's parameters become the kernel's
attributes in `ffi_attributes`, the one place that maps and casts them: the attribute
types must match the C++ binding (cc/ffi_contract.h ``RoiAttrs``) exactly.
"""

from __future__ import annotations

import importlib

import jax
import numpy as np
from jax.interpreters import mlir

TARGET_PREFIX = "jax_roialign_"

# MLIR platform name -> (compiled module, jax.ffi platform name).
_MODULES = {"cpu": ("_cpu", "cpu"), "cuda": ("_cuda", "CUDA")}


def _load():
    kernels, operators = {}, {}
    for platform, (name, ffi_platform) in _MODULES.items():
        try:
            module = importlib.import_module(f"jax_roialign.{name}")
        except ImportError:
            continue
        for kernel, capsule in module.kernels().items():
            jax.ffi.register_ffi_target(TARGET_PREFIX + kernel, capsule, platform=ffi_platform)
        kernels[platform] = sorted(module.kernels())
        operators = {op: tuple(entry) for op, entry in module.operators().items()}
    return kernels, operators


#: {platform: [kernel names]} for every platform with compiled kernels here.
#: {operator: (code, position_sensitive, box_derivative, box coordinates)} from the
#: compiled modules.
KERNELS, OPERATOR_TABLE = _load()

MODES = {"avg": 0, "max": 1}
LAYOUTS = {"NCHW": 0, "NHWC": 1}


def ffi_attributes(params: dict) -> dict:
    """The kernel attributes of a primitive's parameters."""
    ph, pw = params["output_size"]
    return dict(
        op=np.int64(OPERATOR_TABLE[params["op"]][0]),
        pooled_height=np.int64(ph),
        pooled_width=np.int64(pw),
        spatial_scales=np.asarray(params["spatial_scales"], np.float64),
        sampling_ratio=np.int64(params["sampling_ratio"]),
        aligned=np.int64(bool(params["aligned"])),
        mode=np.int64(MODES[params["mode"]]),
        layout=np.int64(LAYOUTS[params["layout"]]),
        deterministic=np.int64(bool(params["deterministic"])),
        extrapolation_value=np.float64(params["extrapolation_value"]),
        radians=np.int64(bool(params["radians"])),
    )


def register(primitive, kernel: str) -> None:
    """Lowers `primitive` to the FFI target of `kernel` on every platform that has it."""
    for platform, kernels in KERNELS.items():
        if kernel not in kernels:
            continue
        rule = jax.ffi.ffi_lowering(TARGET_PREFIX + kernel)

        def lowering(ctx, *args, _rule=rule, **params):
            return _rule(ctx, *args, **ffi_attributes(params))

        mlir.register_lowering(primitive, lowering, platform=platform)


def has_kernels(platform: str) -> bool:
    """Whether compiled kernels serve `platform` ("cpu", "gpu"/"cuda", ...)."""
    return ("cuda" if platform == "gpu" else platform) in KERNELS
