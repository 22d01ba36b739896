"""Whether this import of jax_roialign has its compiled kernels and, when it has none for
a platform, why and what fixes it.

Without kernels every operator runs its pure-JAX reference instead: the same numbers, far
slower backward passes, and a self-check that would compare the reference with itself.
The compiled CPU module is part of every successful install, so its absence is always an
installation problem: `import jax_roialign` warns (``KernelsMissingWarning``) and
`python -m jax_roialign` fails, each with the cause and the fix from `missing_kernels`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import pathlib
import sys

from . import lowering

# The jax_roialign package folder this import came from.
PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]


class KernelsMissingWarning(RuntimeWarning):
    """jax_roialign was imported without its compiled CPU kernels: every operator runs the
    pure-JAX reference. The message says why and how to fix it."""


def _installed():
    """(whether jax_roialign is installed in this environment, whether editably)."""
    try:
        dist = importlib.metadata.distribution("jax_roialign")
    except importlib.metadata.PackageNotFoundError:
        return False, False
    try:
        url = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        url = {}
    return True, bool(url.get("dir_info", {}).get("editable"))


def _is_source_checkout() -> bool:
    pyproject = PACKAGE_DIR.parent / "pyproject.toml"
    return pyproject.is_file() and 'name = "jax_roialign"' in pyproject.read_text()


def _cpu_cause() -> str:
    """Why the CPU module is not registered, and the fix, in words."""
    name = "jax_roialign._cpu"
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # ValueError: None in sys.modules
        spec = None
    if spec is not None or name in sys.modules:
        try:
            importlib.import_module(name)
            error = "unknown error"
        except ImportError as e:
            error = f"{type(e).__name__}: {e}"
        where = spec.origin if spec is not None else name
        return (f"its compiled CPU module {where} failed to load ({error}); it was probably "
                f"built for another Python or jaxlib. Fix: reinstall it in this environment "
                f"({sys.prefix}): pip install --force-reinstall --no-deps <the clone or "
                f"jax_roialign>")
    installed, editable = _installed()
    if _is_source_checkout():
        shadowing = (" instead of the installed package (Python puts the current directory "
                     "first on sys.path)" if installed and not editable else "")
        return (f"Python imported the source folder {PACKAGE_DIR}, which has no compiled "
                f"modules{shadowing}. Fix: install the clone editable, `pip install -e .` in "
                f"{PACKAGE_DIR.parent}: its kernels are then found from the clone's root too "
                f"(the build needs a C++17 compiler)")
    return (f"the package at {PACKAGE_DIR} was installed without its compiled CPU module "
            f"(_cpu), so its build did not produce it. Fix: reinstall it, reading the build "
            f"log: pip install --force-reinstall --no-deps -v jax_roialign (needs a C++17 "
            f"compiler and CMake >= 3.24)")


def missing_kernels(platform: str = "cpu") -> str | None:
    """None when compiled kernels serve `platform` ("cpu", "gpu"/"cuda", ...); else one
    sentence: what runs instead, the cause and the fix."""
    if lowering.has_kernels(platform):
        return None
    fallback = "every operator runs the pure-JAX reference (same results, much slower)"
    if platform == "cpu":
        return f"jax_roialign has no compiled CPU kernels: {fallback}. Cause: {_cpu_cause()}."
    if platform in ("gpu", "cuda"):
        return (f"jax_roialign has no compiled CUDA kernels: on the GPU {fallback}. Cause: "
                f"the _cuda module was not built (no CUDA toolkit at install time). Fix: "
                f"JAX_ROIALIGN_CUDA=ON pip install -e . with nvcc on PATH.")
    return f"jax_roialign has no kernels for {platform}: there {fallback}."


def path_taken(platform: str) -> str:
    """What the operators run on `platform`, in a few words for the tools' headers."""
    if lowering.has_kernels(platform):
        return f"compiled kernels ({'cuda' if platform == 'gpu' else platform})"
    return f"the PURE-JAX REFERENCE (no compiled kernels for {platform})"
