"""The CPU kernels are compiled once per instruction set (cc/cpu/instruction_sets.h) and
one is chosen at load time: the AVX2 build must compute the same bits as the baseline
build, on every operator, both layouts and the storage types, forward and both
gradients, on shapes that reach every code path: whole register blocks of channels and a
remainder, channel-adjacent and packed (channel-last copy) features, bins with more
samples than a chunk."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roialign._cpu as cpu_module
from cases import CASES, LAYOUTS, edge_rois, features

DTYPES = ("float32", "float16", "bfloat16", "float64")


def outputs():
    """Every case's forward, feature gradient and box gradient on the shapes above, by name."""
    results = {}
    rng = np.random.default_rng(7)
    for case in CASES:
        # 37 output channels: one register block of 32 and a remainder; many rois on a small
        # map, so that the packed copy pays in NCHW; sampling_ratio 9 gives 81 samples a bin
        # (more than a 64-sample chunk).
        size = (2, 3)
        for layout in LAYOUTS:
            for dtype in DTYPES:
                f = jnp.asarray(features(case, rng, size, layout, n=2, c_out=37, h=6, w=7),
                                dtype)
                rows = edge_rois(2, 6, 7, 0.5, rng, count=40)
                rows = jnp.asarray(rows, jnp.float64 if dtype == "float64" else jnp.float32)
                for sr in (2, 9) if case.sampling else (-1,):
                    def fwd(f, r, case=case, layout=layout, sr=sr):
                        return case("kernel", f, r, size, 0.5, sr, True, layout)
                    key = f"{case.id}/{layout}/{dtype}/sr{sr}"
                    if case.box_derivative:
                        out, vjp = jax.vjp(fwd, f, rows)
                    else:
                        out, vjp = jax.vjp(lambda f, fwd=fwd: fwd(f, rows), f)
                    grads = vjp(jnp.asarray(rng.normal(size=out.shape), out.dtype))
                    results[f"{key}/out"] = np.asarray(out.astype(jnp.float64))
                    results[f"{key}/grad_features"] = np.asarray(grads[0].astype(jnp.float64))
                    if case.box_derivative:
                        results[f"{key}/grad_boxes"] = np.asarray(grads[1].astype(jnp.float64))
    return results


@pytest.mark.skipif(cpu_module.instruction_set() == "baseline",
                    reason="this CPU runs the baseline build: nothing to compare it with")
def test_avx2_build_computes_the_baseline_bits(tmp_path):
    path = tmp_path / "baseline.npz"
    code = ("import jax; jax.config.update('jax_enable_x64', True)\n"
            "import numpy as np, jax_roialign._cpu as m\n"
            "assert m.instruction_set() == 'baseline', m.instruction_set()\n"
            "import test_instruction_sets as t\n"
            f"np.savez({str(path)!r}, **t.outputs())\n")
    env = dict(os.environ, JAX_ROIALIGN_CPU_ISA="baseline",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                           os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    baseline = np.load(path)
    ours = outputs()
    assert sorted(baseline.files) == sorted(ours)
    for key, value in ours.items():
        np.testing.assert_array_equal(value, baseline[key], err_msg=key)
