"""The compiled modules and the lowering of primitives to their FFI targets.

Each compiled module (cc/bindings.h) exports ``kernels() -> {kernel: capsule}``, registered
here as the FFI target "jax_roialign_<kernel>" of its platform, and ``operators()``, the
kernels' operator table (codes, properties). A primitive's parameters become the kernel's
attributes in `ffi_attributes`, the one place that maps and casts them: the attribute
types must match the C++ binding (cc/ffi_contract.h ``RoiAttrs``) exactly.

Test-only: ``_cuda_emulated`` (built with the CMake option JAX_ROIALIGN_CUDA_EMULATION,
never in the default wheel) is the CUDA kernels and handlers compiled as host C++ against
the CUDA emulator of cc/cuda/emulator/. Its kernels are registered for the CPU platform as
"jax_roialign_emulated_<kernel>", and the CPU lowering targets them inside
`cuda_emulation()` (tests/test_gpu.py).
"""

from __future__ import annotations

import contextlib
import importlib

import jax
import numpy as np
from jax.interpreters import mlir

TARGET_PREFIX = "jax_roialign_"

EMULATED_PREFIX = "jax_roialign_emulated_"

# MLIR platform name -> (compiled module, jax.ffi platform name).
_MODULES = {"cpu": ("_cpu", "cpu"), "cuda": ("_cuda", "CUDA")}


def _import(name):
    try:
        return importlib.import_module(f"jax_roialign.{name}")
    except ImportError:
        return None


def _load():
    kernels, operators = {}, {}
    for platform, (name, ffi_platform) in _MODULES.items():
        module = _import(name)
        if module is None:
            continue
        for kernel, capsule in module.kernels().items():
            jax.ffi.register_ffi_target(TARGET_PREFIX + kernel, capsule, platform=ffi_platform)
        kernels[platform] = sorted(module.kernels())
        operators = {op: tuple(entry) for op, entry in module.operators().items()}
    emulated = _import("_cuda_emulated")
    if emulated is not None:
        for kernel, capsule in emulated.kernels().items():
            jax.ffi.register_ffi_target(EMULATED_PREFIX + kernel, capsule, platform="cpu")
    return kernels, operators, sorted(emulated.kernels()) if emulated is not None else []


#: {platform: [kernel names]} for every platform with compiled kernels here.
#: {operator: (code, position_sensitive, box_derivative)} from the compiled modules.
#: [kernel names] of the emulated CUDA module, when it is built (tests only).
KERNELS, OPERATOR_TABLE, EMULATED_KERNELS = _load()

# The target prefix each platform's lowering uses now; cuda_emulation() changes the CPU's.
_PREFIX = {platform: TARGET_PREFIX for platform in _MODULES}

MODES = {"avg": 0, "max": 1}
LAYOUTS = {"NCHW": 0, "NHWC": 1}


def ffi_attributes(params: dict) -> dict:
    """The kernel attributes of a primitive's parameters."""
    ph, pw = params["output_size"]
    return dict(
        op=np.int64(OPERATOR_TABLE[params["op"]][0]),
        pooled_height=np.int64(ph),
        pooled_width=np.int64(pw),
        spatial_scale=np.float64(params["spatial_scale"]),
        sampling_ratio=np.int64(params["sampling_ratio"]),
        aligned=np.int64(bool(params["aligned"])),
        mode=np.int64(MODES[params["mode"]]),
        layout=np.int64(LAYOUTS[params["layout"]]),
        deterministic=np.int64(bool(params["deterministic"])),
    )


def register(primitive, kernel: str) -> None:
    """Lowers `primitive` to the FFI target of `kernel` on every platform that has it."""
    for platform, kernels in KERNELS.items():
        if kernel not in kernels:
            continue
        rules = {prefix: jax.ffi.ffi_lowering(prefix + kernel)
                 for prefix in (TARGET_PREFIX, EMULATED_PREFIX)}

        def lowering(ctx, *args, _rules=rules, _platform=platform, **params):
            return _rules[_PREFIX[_platform]](ctx, *args, **ffi_attributes(params))

        mlir.register_lowering(primitive, lowering, platform=platform)


@contextlib.contextmanager
def cuda_emulation():
    """Test-only: inside, the primitives lower on the CPU to the emulated CUDA kernels
    instead of the CPU kernels. jax's caches are cleared on entry and on exit, so that no
    computation compiled for one set of kernels runs where the other is meant."""
    if not EMULATED_KERNELS:
        raise RuntimeError("jax_roialign._cuda_emulated is not built "
                           "(CMake option JAX_ROIALIGN_CUDA_EMULATION)")
    jax.clear_caches()
    _PREFIX["cpu"] = EMULATED_PREFIX
    try:
        yield
    finally:
        _PREFIX["cpu"] = TARGET_PREFIX
        jax.clear_caches()


def has_kernels(platform: str) -> bool:
    """Whether compiled kernels serve `platform` ("cpu", "gpu"/"cuda", ...)."""
    return ("cuda" if platform == "gpu" else platform) in KERNELS
