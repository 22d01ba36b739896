"""The installed package: default (x64 off) configuration, compiled modules, entry point."""

import os
import shutil
import subprocess
import sys

import pytest

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
