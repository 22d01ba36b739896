"""FFI target registration per platform, and the lowering of primitives to them.

The compiled modules export `registrations() -> {kernel name: capsule}`; each
kernel becomes the FFI target "jax_roialign_<kernel>" on its platform. A
primitive's parameters become the kernel's attributes in `ffi_attributes`,
the one place that maps and casts them (the attribute types must match the C++
binding exactly: int64 and float64).
"""

from __future__ import annotations

import importlib

import jax
import numpy as np
from jax.interpreters import mlir

PREFIX = "jax_roialign_"

# MLIR platform name -> jax.ffi platform name, for each compiled module found.
_MODULES = {"cpu": ("_cpu", "cpu"), "cuda": ("_cuda", "CUDA")}


def _load_platforms() -> dict:
    found = {}
    for platform, (module, ffi_platform) in _MODULES.items():
        try:
            mod = importlib.import_module(f"jax_roialign.{module}")
        except ImportError:
            continue
        for name, capsule in mod.registrations().items():
            jax.ffi.register_ffi_target(PREFIX + name, capsule, platform=ffi_platform)
        found[platform] = sorted(mod.registrations())
    return found


# {platform: [kernel names]} for every platform with compiled kernels.
KERNELS = _load_platforms()

# Operator codes: cc/roi_common.h `Op`.
OP_CODES = {"roi_align": 0, "roi_pool": 1, "ps_roi_align": 2, "ps_roi_pool": 3, "legacy": 4,
            "legacy_avg": 5, "legacy_max": 6}
MODES = {"avg": 0, "max": 1}
LAYOUT_CODES = {"NCHW": 0, "NHWC": 1}


def ffi_attributes(params: dict) -> dict:
    """The kernel attributes of a primitive's parameters."""
    ph, pw = params["output_size"]
    return dict(
        op=np.int64(OP_CODES[params["op"]]),
        pooled_height=np.int64(ph),
        pooled_width=np.int64(pw),
        spatial_scale=np.float64(params["spatial_scale"]),
        sampling_ratio=np.int64(params["sampling_ratio"]),
        aligned=np.int64(bool(params["aligned"])),
        mode=np.int64(MODES[params["mode"]]),
        layout=np.int64(LAYOUT_CODES[params["layout"]]),
        deterministic=np.int64(bool(params["deterministic"])),
    )


def register(primitive, kernel: str) -> None:
    """Lowers `primitive` to FFI target `kernel` on every platform that has it."""
    target = PREFIX + kernel
    for platform, kernels in KERNELS.items():
        if kernel not in kernels:
            continue
        rule = jax.ffi.ffi_lowering(target)

        def lowering(ctx, *args, _rule=rule, **params):
            return _rule(ctx, *args, **ffi_attributes(params))

        mlir.register_lowering(primitive, lowering, platform=platform)


def has_kernels(platform: str) -> bool:
    """Whether compiled kernels serve `platform` ("cpu", "gpu"/"cuda", ...)."""
    return ("cuda" if platform == "gpu" else platform) in KERNELS
