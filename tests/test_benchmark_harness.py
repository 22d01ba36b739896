"""benchmarks/cpu_kernels.py times the CPU kernels called directly (no XLA, one thread)
on the paths the handlers choose (cc/cpu/call_paths.h): its results must be the
module's, or what it times is not what a call runs. The tiny workload; the harness
built at -O1 (the bits do not depend on it: no FMA contraction, no fast math), its
checksums (sums of every result) against the module's forward and feature gradient."""

import os
import pathlib
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_roialign._src.lowering import cpu_instruction_set

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import cpu_kernels  # noqa: E402
from cpu_loops import inputs  # noqa: E402
from jax_roialign._cli.bench import to_layout  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None,
                                reason="needs a C++ compiler")

# NCHW: a channel-last copy of the features (forward) and of the gradient (backward);
# NHWC: the buffers in place; max mode's winners recorded, then scattered.
CALLS = [("roi_align", "NHWC", None), ("roi_align", "NCHW", None),
         ("roi_align", "NHWC", "max"), ("roi_pool", "NHWC", None), ("roi_pool", "NCHW", None),
         ("ps_roi_align", "NHWC", None), ("ps_roi_pool", "NCHW", None)]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return cpu_kernels.build(cpu_kernels.REPO, tmp_path_factory.mktemp("harness") / "cpu_kernels",
                             "-O1")


@pytest.mark.parametrize("op, layout, mode", CALLS)
def test_harness_computes_the_module_results(harness, tmp_path, op, layout, mode):
    call = cpu_kernels.Call(tmp_path, "tiny", layout, op, mode)
    fn, kwargs, f, rois, cot = inputs("tiny", op, layout, mode)
    out, vjp = jax.vjp(lambda x: fn(x, jnp.asarray(rois, jnp.float32), **kwargs),
                       jnp.asarray(to_layout(f, layout)))
    grad = vjp(jnp.asarray(to_layout(cot, layout)))[0]
    for which, expected in (("forward", out), ("backward", grad)):
        isa, _, checksum = call.run(harness, which, 1)
        assert isa == cpu_instruction_set()
        total = np.asarray(expected, np.float64).sum()
        assert total != 0
        np.testing.assert_allclose(checksum, total, rtol=1e-12)
