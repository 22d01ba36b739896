"""The installed package: default (x64 off) configuration, compiled modules, entry point."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import jax_roialign
from jax_roialign._src import lowering, primitives

# Each primitive lowers to the kernel of its name (cc/kernel_list.h).
KERNELS = sorted(p.name.removeprefix("jax_roialign_") for p in (
    primitives.forward_p, primitives.forward_selected_p, primitives.backward_features_p,
    primitives.forward_boxes_p, primitives.backward_boxes_p))


def test_cpu_module_registers_every_kernel():
    assert lowering.KERNELS["cpu"] == KERNELS


@pytest.mark.skipif(shutil.which("nvcc") is None or os.environ.get("JAX_ROIALIGN_CUDA") == "OFF",
                    reason="no CUDA toolkit here (or JAX_ROIALIGN_CUDA=OFF): no _cuda module built")
def test_cuda_module_was_built_and_registers_every_kernel():
    from jax_roialign import _cuda

    assert sorted(_cuda.kernels()) == KERNELS
    assert lowering.KERNELS["cuda"] == KERNELS
    from jax_roialign import _cpu

    assert _cuda.operators() == _cpu.operators()


def test_default_config_float32_under_jit_grad_vmap():
    """Users run with x64 off: everything stays float32 and works."""
    code = r"""
import jax, jax.numpy as jnp, numpy as np
import jax_roialign as jra
assert not jax.config.jax_enable_x64
f = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 8, 8)), jnp.float32)
boxes = jnp.asarray([[[1., 1., 5., 6.]], [[0.5, 2., 7., 7.]]])
rows = jnp.asarray([[0, 1., 1., 5., 6.], [1, 0.5, 2., 7., 7.], [7, 1., 1., 2., 2.]])
fn = jax.jit(lambda x, b: jra.roi_align(x, b, 3, 1.0, -1, True).sum())
gx, gb = jax.grad(fn, argnums=(0, 1))(f, boxes)
assert gx.dtype == jnp.float32 and gb.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(gb)))
v = jax.vmap(lambda x: jra.roi_align(x, rows, 2, mode="max"))(jnp.stack([f, f]))
assert v.shape == (2, 3, 3, 2, 2) and v.dtype == jnp.float32
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_main_self_check_runs():
    out = subprocess.run([sys.executable, "-m", "jax_roialign", "--repeats", "1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "self-check passed" in out.stdout and "forward" in out.stdout
    assert "runs compiled kernels (cpu)" in out.stdout
    assert "reference / ours" in out.stdout and "fixed cost per call" in out.stdout


# As if the compiled CPU module were missing: `import jax_roialign._cpu` fails.
WITHOUT_KERNELS = "import sys\nsys.modules['jax_roialign._cpu'] = None\n"


def test_import_without_kernels_warns_with_the_cause_and_the_fix():
    code = WITHOUT_KERNELS + (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import jax_roialign\n"
        "[w] = [w for w in caught if w.category is jax_roialign.KernelsMissingWarning]\n"
        "print(w.message)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "no compiled CPU kernels" in out.stdout and "pure-JAX reference" in out.stdout
    assert "Fix: reinstall" in out.stdout


def test_self_check_fails_without_kernels():
    """Without kernels the self-check would compare the reference with itself and pass."""
    code = WITHOUT_KERNELS + ("from jax_roialign._cli import main\n"
                              "sys.exit(main(['check', '--repeats', '1']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "self-check passed" not in out.stdout
    assert "PURE-JAX REFERENCE" in out.stdout
    assert "SELF-CHECK FAILED: jax_roialign has no compiled CPU kernels" in out.stderr


def test_a_source_folder_without_kernels_names_the_editable_install(tmp_path):
    """A clone's source folder that shadows the installed package (the README's commands
    from the clone's root after a non-editable install): the warning says so and how to
    fix it. The copy has the package's Python files and pyproject.toml, no compiled module."""
    root = pathlib.Path(jax_roialign.__file__).resolve().parents[1]
    shutil.copytree(root / "jax_roialign", tmp_path / "jax_roialign",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    shutil.copy(root / "pyproject.toml", tmp_path)
    # An editable install's import hook would find the real package first: drop it.
    code = ("import sys, warnings\n"
            "sys.meta_path[:] = [f for f in sys.meta_path\n"
            "                    if 'jax_roialign' not in type(f).__module__]\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    import jax_roialign\n"
            "print(jax_roialign.__file__)\n"
            "print([str(w.message) for w in caught\n"
            "       if w.category is jax_roialign.KernelsMissingWarning][0])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(tmp_path / "jax_roialign"))
    assert f"Python imported the source folder {tmp_path / 'jax_roialign'}" in out.stdout
    assert f"`pip install -e .` in {tmp_path}" in out.stdout
