"""The CUDA kernels (cc/cuda/) against the CPU kernels, on every target that runs them: a
GPU where one is present, and the CUDA emulator where jax_roialign._cuda_emulated is built
(cc/cuda/emulator/: the same kernels and handlers compiled as host C++ and run on the CPU,
a block's threads as real threads; CMake option JAX_ROIALIGN_CUDA_EMULATION, which .ci/run
builds under the sanitizers). Every operator, layout, dtype and mode: forward, JVP, both
gradients, the atomic and the deterministic backward, transforms, and the kernels' large-bin
paths (sample tables in several passes, bins larger than the table, split channels).

Tolerances. On a GPU only nvcc's FMA contraction separates the CUDA kernels from the CPU
ones (TOL). The emulated build has contraction off, as the CPU build has: where the CUDA
kernels add in the CPU kernels' order -- forward, forward_selected, forward_boxes, the
deterministic backward -- the emulator must give the same bits; the atomic backward (any
order of additions) and the box gradient (a tree reduction instead of a running sum, both in
double) may differ in the last bits, and get TOL as on a GPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roialign as jra
from cases import CASES, IDS, edge_rois, features, smooth_rois, to_layout
from jax_roialign._src import lowering

try:
    from jax_roialign import _cuda_emulated as EMULATOR
except ImportError:
    EMULATOR = None


def _gpus():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


GPUS = _gpus()
CPU = jax.devices("cpu")[0]

TOL = {jnp.float32: 1e-5, jnp.float64: 1e-12, jnp.bfloat16: 2e-2, jnp.float16: 2e-3}
DTYPES = [jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16]


def _numpy(tree):
    return jax.tree.map(np.asarray, tree)


def on_cpu(fn, *args):
    """fn(*args) with the CPU kernels, as numpy arrays."""
    return _numpy(jax.jit(fn)(*[jax.device_put(a, CPU) for a in args]))


class Target:
    """Where the CUDA kernels run: "gpu", or "emulator" (the CPU, through the emulator)."""

    def __init__(self, name):
        self.name = name
        self.device = GPUS[0] if name == "gpu" else CPU
        self.exact = name == "emulator"  # bit-equal to the CPU kernels in their order
        # The emulator runs each block's threads as host threads on a few cores: fewer rois.
        self.small = name == "emulator"

    def __call__(self, fn, *args):
        """fn(*args) with the CUDA kernels, as numpy arrays."""
        args = [jax.device_put(a, self.device) for a in args]
        if self.name == "gpu":
            return _numpy(jax.jit(fn)(*args))
        before = EMULATOR.launches()
        with lowering.cuda_emulation():
            out = _numpy(jax.jit(fn)(*args))
        assert EMULATOR.launches() > before, "the emulated CUDA kernels did not run"
        return out


@pytest.fixture(params=["gpu", "emulator"])
def target(request):
    if request.param == "gpu" and not GPUS:
        pytest.skip("no GPU on this machine")
    if request.param == "emulator" and EMULATOR is None:
        pytest.skip("the CUDA emulator is not built (CMake option JAX_ROIALIGN_CUDA_EMULATION)")
    return Target(request.param)


def assert_close(got, want, tol, exact=False):
    """Arrays, or trees of them (one per feature level), equal or within `tol`."""
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def check_against_cpu(target, fn, f, rois, dtype):
    """fn(features, rois, deterministic) on `target` vs the CPU kernels: forward, JVP, both
    gradients (default backward), and the feature gradient of the deterministic one."""
    rng = np.random.default_rng(7)
    f_dot = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), f)
    r_dot = jnp.asarray(rng.normal(size=rois.shape), rois.dtype)
    sixteen_bits = dtype in (jnp.bfloat16, jnp.float16)  # always the deterministic backward

    def run(f, rois, f_dot, r_dot):
        out, out_dot = jax.jvp(lambda x, r: fn(x, r, False), (f, rois), (f_dot, r_dot))
        loss = lambda det: lambda x, r: jnp.sum(jnp.sin(fn(x, r, det).astype(jnp.float32)))
        grads = jax.grad(loss(False), argnums=(0, 1))(f, rois)
        return (out, out_dot, *grads) + (() if sixteen_bits else (jax.grad(loss(True))(f, rois),))

    got = target(run, f, rois, f_dot, r_dot)
    want = on_cpu(run, f, rois, f_dot, r_dot)
    tol, exact = TOL[dtype], target.exact
    assert_close(got[0], want[0], tol, exact)
    assert_close(got[1], want[1], 10 * tol, exact)
    assert_close(got[2], want[2], 10 * tol, exact and sixteen_bits)
    assert_close(got[3], want[3], 10 * tol)
    if not sixteen_bits:
        assert_close(got[4], want[4], 10 * tol, exact)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_equals_cpu(target, case, layout, dtype):
    fn = lambda f, r, det: case("kernel", f, r, (3, 2), 0.5, -1, True, layout,
                                deterministic=det)
    rng = np.random.default_rng(0)
    f = jnp.asarray(features(case, rng, (3, 2), layout, c_out=3, h=9, w=11), dtype)
    rois = jnp.asarray(edge_rois(2, 9, 11, 0.5, rng, count=2 if target.small else 6),
                       jnp.float64 if dtype == jnp.float64 else jnp.float32)
    check_against_cpu(target, fn, f, rois, dtype)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("sampling_ratio", [12, 23])
def test_cuda_large_bins_equal_cpu(target, case, sampling_ratio):
    """7x7 bins (two chunks of a block's bins), bins whose samples fill the table in several
    passes (sampling_ratio 12, big pool bins) or exceed it alone (23), and with 16 output
    channels over 3 rois, channel ranges split over blocks (not for the position-sensitive
    ops: 784 input channels would be slow on the emulator)."""
    layout = "NHWC" if sampling_ratio == 23 else "NCHW"
    fn = lambda f, r, det: case("kernel", f, r, 7, 0.5, sampling_ratio, True,
                                   layout, deterministic=det)
    rng = np.random.default_rng(3)
    c_out = 2 if case.op.position_sensitive else 16
    f = jnp.asarray(features(case, rng, (7, 7), layout, c_out=c_out, h=40, w=48), jnp.float32)
    rois = jnp.asarray([[0, 0.0, 0.0, 96.0, 80.0], [1, 10.5, 4.2, 80.3, 70.9],
                        [1, -30.0, 20.0, 50.0, 120.0]], jnp.float32)
    check_against_cpu(target, fn, f, rois, jnp.float32)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_per_image_boxes_equal_cpu(target, case):
    """The (N, R, 4) form: rois of image n are rows n*R .. (n+1)*R."""
    fn = lambda f, b, det: case("kernel", f, b, 2, 0.5, 2, False,
                                   "NHWC", deterministic=det)
    rng = np.random.default_rng(4)
    f = jnp.asarray(features(case, rng, (2, 2), "NHWC", c_out=3, h=9, w=11), jnp.float32)
    boxes = jnp.asarray(edge_rois(2, 9, 11, 0.5, rng, count=2)[:8, 1:].reshape(2, 4, 4),
                        jnp.float32)
    check_against_cpu(target, fn, f, boxes, jnp.float32)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_cuda_feature_pyramid_equals_cpu(target, mode, layout, dtype):
    """multi_scale_roi_align over three levels: every roi reads its own level, and the
    deterministic backward's tiles span every level."""
    rng = np.random.default_rng(5)
    scales = (0.5, 0.25, 0.125)
    f = [jnp.asarray(to_layout(rng.normal(size=(2, 3, 16 >> l, 20 >> l)), layout), dtype)
         for l in range(3)]
    rois = jnp.asarray(edge_rois(2, 16, 20, 0.5, rng, count=3 if target.small else 8),
                       jnp.float32)
    levels = jnp.asarray(rng.integers(-1, 4, rois.shape[0]), jnp.int32)  # -1, 3: no level
    fn = lambda x, r, det: jra.multi_scale_roi_align(x, r, (3, 2), scales, 2, True, levels=levels,
                                                     mode=mode, layout=layout,
                                                     deterministic=det)
    check_against_cpu(target, fn, f, rois, dtype)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_transforms(target, case):
    fn = lambda f, r, lay: case("kernel", f, r, (2, 2), 0.5, 2, True, lay)
    rng = np.random.default_rng(1)
    f = jnp.asarray(rng.normal(size=(3, 2, case.channels(2, (2, 2)), 7, 7)), jnp.float32)
    boxes = jnp.asarray(np.stack([smooth_rois(rng, 4, 7, 7, 0.5)[:, 1:].reshape(2, 2, 4)
                                  for _ in range(3)]), jnp.float32)

    def run(f, boxes):
        got = jax.jit(jax.vmap(lambda x, b: fn(x, b, "NCHW")))(f, boxes)
        want = jnp.stack([fn(f[i], boxes[i], "NCHW") for i in range(3)])
        if not case.box_derivative:
            return got, want
        t = jnp.ones_like(boxes[0])
        _, jvp = jax.jvp(lambda b: fn(f[0], b, "NCHW"), (boxes[0],), (t,))
        vjp = jax.grad(lambda b: jnp.sum(fn(f[0], b, "NCHW")))(boxes[0])
        return got, want, jnp.sum(jvp), jnp.sum(vjp * t)

    out = target(run, f, boxes)
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6, atol=1e-6)
    if case.box_derivative:
        np.testing.assert_allclose(out[2], out[3], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_deterministic_backward_is_bitwise_repeatable(target, dtype, layout):
    # Many spatial tiles. Small: 39 rois (still two batches of a block's 32 threads) and 24
    # channels (8 of the 32 threads idle).
    channels, count = (24, 30) if target.small else (32, 300)
    rng = np.random.default_rng(2)
    f = jnp.asarray(to_layout(rng.normal(size=(2, channels, 40, 40)), layout), dtype)
    rois = jnp.asarray(edge_rois(2, 40, 40, 1.0, rng, count=count), jnp.float32)

    def grad(deterministic):
        return jax.jit(jax.grad(lambda x, r: jnp.sum(jra.roi_align(
            x, r, 7, 1.0, 2, True, layout=layout,
            deterministic=deterministic).astype(jnp.float32))))

    def run(f, rois):
        g = grad(True)
        return [g(f, rois) for _ in range(4)] + [grad(False)(f, rois)]

    first, *again, fast = target(run, f, rois)
    for g in again:
        np.testing.assert_array_equal(g, first)
    assert_close(first, on_cpu(grad(True), f, rois), TOL[dtype], target.exact)
    assert_close(fast, first, TOL[dtype])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_bad_rois_equal_cpu(target, case):
    """Batch indices out of range, fractional or NaN, NaN and huge coordinates."""
    fn = lambda f, r, det: case("kernel", f, r, 2, 1.0, -1, True,
                                   "NCHW", deterministic=det)
    f = jnp.asarray(features(case, np.random.default_rng(5), (2, 2), "NCHW", h=5, w=5),
                    jnp.float32)
    rois = jnp.asarray([[0, 1., 1., 3., 3.], [7, 1., 1., 3., 3.], [0.5, 1., 1., 3., 3.],
                        [np.nan, 1., 1., 3., 3.], [1, np.nan, 1., 3., 3.],
                        [1, 1., np.inf, 3., 3.], [0, -1e9, -1e9, 1e9, 1e9]], jnp.float32)
    check_against_cpu(target, fn, f, rois, jnp.float32)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("rois_count, height, width", [(0, 9, 11), (6, 1, 1)],
                         ids=["no rois", "1x1 map"])
def test_cuda_degenerate_shapes_equal_cpu(target, case, rois_count, height, width):
    fn = lambda f, r, det: case("kernel", f, r, 2, 0.5, -1, False,
                                   "NHWC", deterministic=det)
    rng = np.random.default_rng(6)
    f = jnp.asarray(features(case, rng, (2, 2), "NHWC", h=height, w=width), jnp.float32)
    rois = jnp.asarray(edge_rois(2, height, width, 0.5, rng, count=6)[:rois_count],
                       jnp.float32).reshape(rois_count, 5)
    check_against_cpu(target, fn, f, rois, jnp.float32)


@pytest.mark.skipif(EMULATOR is None, reason="the CUDA emulator is not built")
def test_emulator_launch_failure_is_an_error():
    """A launch a GPU would refuse (here: more dynamic shared memory than the emulator's
    lowered limit) fails the handler with the runtime's error."""
    target = Target("emulator")
    f, rois = jnp.ones((1, 2, 5, 5)), jnp.asarray([[0, 1., 1., 3., 3.]])
    previous = EMULATOR.shared_memory_limit(1024)
    try:
        with pytest.raises(jax.errors.JaxRuntimeError,
                           match="CUDA forward failed: cudaErrorInvalidValue"):
            target(lambda f, r: jra.roi_align(f, r, 2), f, rois)
    finally:
        EMULATOR.shared_memory_limit(previous)
