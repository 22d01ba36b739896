"""The CPU kernels are compiled once per instruction set (cc/cpu/instruction_sets.h) and
one is chosen at load time: every build this CPU can run below the chosen one (baseline;
AVX2 under AVX-512) must compute the chosen one's bits, on every operator, both layouts
and the storage types, forward and both gradients, on shapes that reach every code path:
whole register blocks of channels and a remainder, channel-adjacent and packed
(channel-last copy) features, bins with more samples than a chunk."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cases import CASES, LAYOUTS, edge_rois, features
from cpu_builds import BELOW, CHOSEN, run_capped

DTYPES = ("float32", "float16", "bfloat16", "float64")


def outputs():
    """Every case's forward, feature gradient and box gradient on the shapes above, by name."""
    results = {}
    rng = np.random.default_rng(7)
    for case in CASES:
        # 101 output channels: whole register blocks (128 bytes: 32 float32 channels,
        # four vectors in the baseline and AVX2 builds, two in the AVX-512 build; in
        # the AVX-512 build, max mode and the avg backward take a wide block of 256
        # bytes first, then one of 128) and a remainder; many rois on a small map, so
        # that the packed copy pays in NCHW;
        # sampling_ratio 9 gives 81 samples a bin (more than a 64-sample chunk).
        size = (2, 3)
        for layout in LAYOUTS:
            for dtype in DTYPES:
                f = jnp.asarray(features(case, rng, size, layout, n=2, c_out=101, h=6, w=7),
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


@pytest.fixture(scope="module")
def chosen_outputs():
    return outputs()


@pytest.mark.parametrize("isa", BELOW)
def test_builds_compute_the_same_bits(isa, chosen_outputs, tmp_path):
    path = tmp_path / f"{isa}.npz"
    run_capped(isa, "import numpy as np, test_instruction_sets as t\n"
                    f"np.savez({str(path)!r}, **t.outputs())\n", timeout=900)
    capped = np.load(path)
    assert sorted(capped.files) == sorted(chosen_outputs)
    for key, value in chosen_outputs.items():
        np.testing.assert_array_equal(value, capped[key], err_msg=f"{CHOSEN} vs {isa}: {key}")
