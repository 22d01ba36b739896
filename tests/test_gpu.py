"""The CUDA kernels, wherever a GPU is present: every operator, layout, dtype and mode
against the CPU kernels (the same function: tolerances allow only nvcc's FMA
contraction), gradients, transforms, and the deterministic backward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roialign as jra
from cases import CASES, IDS, edge_rois, features, smooth_rois, to_layout


def _gpus():
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


GPUS = _gpus()
pytestmark = pytest.mark.skipif(not GPUS, reason="no GPU on this machine")
CPU = jax.devices("cpu")[0]

TOL = {jnp.float32: 1e-5, jnp.float64: 1e-12, jnp.bfloat16: 2e-2, jnp.float16: 2e-3}


def on(device, *xs):
    return [jax.device_put(x, device) for x in xs]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16])
def test_gpu_equals_cpu(case, layout, dtype):
    """The same function: tolerances allow only nvcc's FMA contraction."""
    fn = lambda f, r, lay: case("kernel", f, r, (3, 2), 0.5, -1, True, lay)
    rng = np.random.default_rng(0)
    f = jnp.asarray(features(case, rng, (3, 2), layout, c_out=3, h=9, w=11), dtype)
    rois = jnp.asarray(edge_rois(2, 9, 11, 0.5, rng), jnp.float64 if dtype == jnp.float64
                       else jnp.float32)
    tol = TOL[dtype]
    outs = [fn(*on(d, f, rois), layout) for d in (CPU, GPUS[0])]
    np.testing.assert_allclose(np.asarray(outs[1], np.float64), np.asarray(outs[0], np.float64),
                               rtol=tol, atol=tol)
    loss = lambda x, r: jnp.sum(jnp.sin(fn(x, r, layout).astype(jnp.float32)))
    grads = [jax.grad(loss, argnums=(0, 1))(*on(d, f, rois)) for d in (CPU, GPUS[0])]
    for a, b in zip(grads[1], grads[0]):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                   rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gpu_transforms(case):
    fn = lambda f, r, lay: case("kernel", f, r, (2, 2), 0.5, 2, True, lay)
    rng = np.random.default_rng(1)
    f = jnp.asarray(rng.normal(size=(3, 2, case.channels(2, (2, 2)), 7, 7)), jnp.float32)
    boxes = jnp.asarray(np.stack([smooth_rois(rng, 4, 7, 7, 0.5)[:, 1:].reshape(2, 2, 4)
                                  for _ in range(3)]), jnp.float32)
    f, boxes = on(GPUS[0], f, boxes)
    got = jax.jit(jax.vmap(lambda x, b: fn(x, b, "NCHW")))(f, boxes)
    want = jnp.stack([fn(f[i], boxes[i], "NCHW") for i in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    if case.box_derivative:
        t = jnp.ones_like(boxes[0])
        _, jvp = jax.jvp(lambda b: fn(f[0], b, "NCHW"), (boxes[0],), (t,))
        vjp = jax.grad(lambda b: jnp.sum(fn(f[0], b, "NCHW")))(boxes[0])
        np.testing.assert_allclose(jnp.sum(jvp), jnp.sum(vjp * t), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_deterministic_backward_is_bitwise_repeatable(dtype, layout):
    rng = np.random.default_rng(2)
    f = jnp.asarray(to_layout(rng.normal(size=(2, 32, 40, 40)), layout), dtype)
    rois = jnp.asarray(edge_rois(2, 40, 40, 1.0, rng, count=300), jnp.float32)
    f, rois = on(GPUS[0], f, rois)
    g = jax.jit(jax.grad(lambda x: jnp.sum(jra.roi_align(
        x, rois, 7, 1.0, 2, True, layout=layout, deterministic=True).astype(jnp.float32))))
    first = np.asarray(g(f))
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(g(f)), first)
    fast = jax.jit(jax.grad(lambda x: jnp.sum(jra.roi_align(
        x, rois, 7, 1.0, 2, True, layout=layout).astype(jnp.float32))))
    np.testing.assert_allclose(np.asarray(fast(f), np.float64), np.asarray(first, np.float64),
                               rtol=TOL[dtype], atol=TOL[dtype])


def test_bad_rois_on_gpu():
    f = jax.device_put(jnp.ones((2, 3, 5, 5)), GPUS[0])
    rois = jax.device_put(jnp.asarray([[0, 1., 1., 3., 3.], [7, 1., 1., 3., 3.],
                                       [np.nan, 1., 1., 3., 3.], [0, np.nan, 1., 3., 3.],
                                       [0, -1e9, -1e9, 1e9, 1e9]]), GPUS[0])
    out = np.asarray(jra.roi_align(f, rois, 2, 1.0, -1, True))
    assert np.all(out[0] == 1) and np.all(out[1:4] == 0) and np.all(np.isfinite(out))
