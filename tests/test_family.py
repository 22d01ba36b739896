"""The rest of the family: roi_pool, ps_roi_align, ps_roi_pool, legacy.{roi_align,
roi_align_avg, roi_align_max}: kernels vs float64 loop oracles and the pure-JAX
reference, gradients, transforms, bad data, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_roialign as jra
from jax_roialign import reference
from loop_reference_ops import legacy_numpy, ps_roi_align_numpy, ps_roi_pool_numpy, roi_pool_numpy
from test_roi_align import edge_rois, smooth_rois, to_layout


class Op:
    """One operator: the kernel path, the pure-JAX path, the loop oracle."""

    def __init__(self, name, kernel, ref, oracle, position_sensitive=False, box_grad=True,
                 sampling=False, min_size=1):
        self.name, self.kernel, self.ref, self.oracle = name, kernel, ref, oracle
        self.position_sensitive, self.box_grad = position_sensitive, box_grad
        self.sampling, self.min_size = sampling, min_size

    def kwargs(self, spatial_scale, sampling_ratio, layout):
        kw = dict(layout=layout)
        if self.sampling:
            kw["sampling_ratio"] = sampling_ratio
        return kw

    def channels(self, c_out, size):
        return c_out * size[0] * size[1] if self.position_sensitive else c_out

    def __call__(self, impl, f, rois, size, scale, sr=-1, layout="NCHW"):
        return impl(f, rois, size, scale, **self.kwargs(scale, sr, layout))

    def loop(self, f, rows, size, scale, sr=-1, layout="NCHW", dtype=np.float64):
        return self.oracle(f, rows, size[0], size[1], scale, sr, layout, dtype)


OPS = [
    Op("roi_pool", jra.roi_pool, reference.roi_pool,
       lambda f, r, ph, pw, s, sr, lay, dt: roi_pool_numpy(f, r, ph, pw, s, lay, dt),
       box_grad=False),
    Op("ps_roi_align", jra.ps_roi_align, reference.ps_roi_align,
       lambda f, r, ph, pw, s, sr, lay, dt: ps_roi_align_numpy(f, r, ph, pw, s, sr, lay, dt),
       position_sensitive=True, sampling=True),
    Op("ps_roi_pool", jra.ps_roi_pool, reference.ps_roi_pool,
       lambda f, r, ph, pw, s, sr, lay, dt: ps_roi_pool_numpy(f, r, ph, pw, s, lay, dt),
       position_sensitive=True, box_grad=False),
    Op("legacy.roi_align", jra.legacy.roi_align, reference.legacy_roi_align,
       lambda f, r, ph, pw, s, sr, lay, dt: legacy_numpy(f, r, ph, pw, s, "plain", lay, dt),
       min_size=2),
    Op("legacy.roi_align_avg", jra.legacy.roi_align_avg, reference.legacy_roi_align_avg,
       lambda f, r, ph, pw, s, sr, lay, dt: legacy_numpy(f, r, ph, pw, s, "avg", lay, dt)),
    Op("legacy.roi_align_max", jra.legacy.roi_align_max, reference.legacy_roi_align_max,
       lambda f, r, ph, pw, s, sr, lay, dt: legacy_numpy(f, r, ph, pw, s, "max", lay, dt)),
]
OP_IDS = [op.name for op in OPS]
LAYOUTS = ("NCHW", "NHWC")


def inputs(op, rng, size, layout, n=2, c_out=2, h=7, w=9, dtype=np.float64):
    f = rng.normal(size=(n, op.channels(c_out, size), h, w)).astype(dtype)
    return to_layout(f, layout)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", [(2, 3), (3, 3)])
def test_matches_loop_oracle(op, spatial_scale, layout, size):
    rng = np.random.default_rng(hash((op.name, spatial_scale, layout, size)) % 2**32)
    f = inputs(op, rng, size, layout)
    rois = edge_rois(2, 7, 9, spatial_scale, rng)
    for sr in ((-1, 2) if op.sampling else (-1,)):
        got = op(op.kernel, f, rois, size, spatial_scale, sr, layout)
        want = op.loop(f, rois, size, spatial_scale, sr, layout)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1)])
def test_single_row_or_column_maps(op, shape):
    rng = np.random.default_rng(1)
    f = rng.normal(size=(1, op.channels(2, (2, 2))) + shape)
    rois = edge_rois(1, shape[0], shape[1], 1.0, rng)
    np.testing.assert_allclose(op(op.kernel, f, rois, (2, 2), 1.0),
                               op.loop(f, rois, (2, 2), 1.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_path_equals_kernel(op, layout):
    rng = np.random.default_rng(2)
    f = inputs(op, rng, (2, 2), layout)
    rows = edge_rois(2, 7, 9, 0.5, rng)[:-3]   # no huge box: the reference caps its grid
    boxes = smooth_rois(rng, 6, 7, 9, 0.5)[:, 1:].reshape(2, 3, 4)
    for r in (rows, boxes):
        np.testing.assert_allclose(op(op.ref, f, r, (2, 2), 0.5, 2, layout),
                                   op(op.kernel, f, r, (2, 2), 0.5, 2, layout),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32_equals_float32_loop(op, layout):
    """float32 kernels do the oracle's float32 operations in its order."""
    rng = np.random.default_rng(3)
    f = inputs(op, rng, (2, 3), layout, dtype=np.float32)
    rois = edge_rois(2, 7, 9, 1.0, rng).astype(np.float32)
    got = op(op.kernel, f, rois, (2, 3), 1.0, 2, layout)
    want = op.loop(f, rois, (2, 3), 1.0, 2, layout, dtype=np.float32)
    if op.name.startswith("legacy"):
        # The original computed its weights as f*(1-hr)*(1-wr) left to right; we
        # (and the oracle's float32 emulation) use hy*hx first, as every other op:
        # float32 results may differ by an ulp of the accumulated terms.
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_16bit_within_what_the_dtype_allows(op, dtype):
    """At most 2x the error of the plain pure-JAX path in the same dtype, plus one
    rounding of the output (FlashAttention's rule)."""
    rng = np.random.default_rng(4)
    f = jnp.asarray(inputs(op, rng, (3, 3), "NHWC", h=8, w=8), dtype)
    rois = edge_rois(2, 8, 8, 1.0, rng)[:-3]
    exact = op.loop(np.asarray(f.astype(jnp.float64)), rois, (3, 3), 1.0, 2, "NHWC")
    got = op(op.kernel, f, rois, (3, 3), 1.0, 2, "NHWC")
    plain = op(op.ref, f, rois, (3, 3), 1.0, 2, "NHWC")
    assert got.dtype == dtype and plain.dtype == dtype
    plain_err = np.abs(np.asarray(plain.astype(jnp.float64)) - exact).max()
    ulp = float(jnp.finfo(dtype).eps) * np.abs(exact).max()
    assert np.abs(np.asarray(got.astype(jnp.float64)) - exact).max() <= 2 * plain_err + ulp


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_check_grads_features(op, layout):
    rng = np.random.default_rng(5)
    f = jnp.asarray(inputs(op, rng, (2, 2), layout, h=6, w=7))
    rois = jnp.asarray(edge_rois(2, 6, 7, 1.0, rng, count=3))
    check_grads(lambda x: op(op.kernel, x, rois, (2, 2), 1.0, 2, layout), (f,), order=2,
                modes=("fwd", "rev"))


@pytest.mark.parametrize("op", [o for o in OPS if o.box_grad], ids=[o.name for o in OPS if o.box_grad])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_box_gradient(op, layout):
    """check_grads away from kinks, and equal to jax.grad of the pure-JAX path."""
    rng = np.random.default_rng(6)
    f = jnp.asarray(inputs(op, rng, (2, 2), layout, h=9, w=10))
    rows = smooth_rois(rng, 4, 9, 10, 0.5)
    fn = lambda b, impl=op.kernel: op(impl, f, jnp.concatenate([rows[:, :1], b], 1), (2, 2), 0.5,
                                      2, layout)
    b = jnp.asarray(rows[:, 1:])
    check_grads(fn, (b,), order=1, modes=("fwd", "rev"), eps=1e-6)
    cot = jnp.asarray(rng.normal(size=fn(b).shape))
    np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(fn(x) * cot))(b),
                               jax.grad(lambda x: jnp.sum(fn(x, op.ref) * cot))(b),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("op", [o for o in OPS if not o.box_grad], ids=[o.name for o in OPS if not o.box_grad])
def test_pool_ops_have_zero_box_gradient(op):
    rng = np.random.default_rng(7)
    f = jnp.asarray(inputs(op, rng, (2, 2), "NCHW"))
    rois = jnp.asarray(edge_rois(2, 7, 9, 1.0, rng))
    g = jax.grad(lambda r: jnp.sum(op(op.kernel, f, r, (2, 2), 1.0) ** 2))(rois)
    np.testing.assert_array_equal(g, 0)
    _, t = jax.jvp(lambda r: op(op.kernel, f, r, (2, 2), 1.0), (rois,), (jnp.ones_like(rois),))
    np.testing.assert_array_equal(t, 0)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0)])
def test_vmap_equals_loop(op, in_axes):
    rng = np.random.default_rng(8)
    B = 3
    f = np.stack([inputs(op, rng, (2, 2), "NHWC", h=6, w=7) for _ in range(B)])
    r = np.stack([edge_rois(2, 6, 7, 1.0, rng, count=3) for _ in range(B)])
    fn = lambda x, b: op(op.kernel, x, b, (2, 2), 1.0, 2, "NHWC")
    pick = lambda a, i, ax: a[i] if ax is not None else a[0]
    got = jax.vmap(fn, in_axes)(f if in_axes[0] is not None else f[0],
                                r if in_axes[1] is not None else r[0])
    want = np.stack([fn(pick(f, i, in_axes[0]), pick(r, i, in_axes[1])) for i in range(B)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    g = jax.vmap(jax.grad(lambda x, b: jnp.sum(jnp.sin(fn(x, b)))), in_axes)(
        f if in_axes[0] is not None else f[0], r if in_axes[1] is not None else r[0])
    want_g = np.stack([jax.grad(lambda x: jnp.sum(jnp.sin(fn(x, pick(r, i, in_axes[1])))))(
        pick(f, i, in_axes[0])) for i in range(B)])
    np.testing.assert_allclose(g, want_g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_jit_equals_eager_and_per_image_form(op):
    rng = np.random.default_rng(9)
    f = jnp.asarray(inputs(op, rng, (2, 2), "NCHW"))
    boxes = jnp.asarray(smooth_rois(rng, 6, 7, 9, 1.0)[:, 1:].reshape(2, 3, 4))
    fn = lambda x, b: op(op.kernel, x, b, (2, 2), 1.0)
    out = fn(f, boxes)
    assert out.shape[:2] == (2, 3)
    np.testing.assert_array_equal(out, jax.jit(fn)(f, boxes))


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_bad_rois_give_zeros_and_no_gradient(op):
    f = jnp.asarray(inputs(op, np.random.default_rng(10), (2, 2), "NCHW", h=5, w=5) + 3)
    good = [0, 1.0, 1.0, 3.0, 3.0]
    bad = [[-1, 1, 1, 3, 3], [2, 1, 1, 3, 3], [0.5, 1, 1, 3, 3], [np.nan, 1, 1, 3, 3],
           [0, np.nan, 1, 3, 3], [0, 1, np.inf, 3, 3], [0, -np.inf, -np.inf, np.inf, np.inf]]
    rois = jnp.asarray([good] + bad)
    fn = lambda x, r: op(op.kernel, x, r, (2, 2), 1.0)
    out = np.asarray(fn(f, rois))
    np.testing.assert_array_equal(out[1:], 0)
    gf, gr = jax.grad(lambda x, r: fn(x, r).sum(), argnums=(0, 1))(f, rois)
    np.testing.assert_array_equal(gf, jax.grad(lambda x: fn(x, rois[:1]).sum())(f))
    assert np.all(np.isfinite(gr))
    np.testing.assert_array_equal(gr[1:], 0)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_huge_boxes_finish_and_match(op):
    rng = np.random.default_rng(11)
    f = rng.normal(size=(1, op.channels(2, (2, 3)), 6, 7))
    rois = np.array([[0, -1e9, -1e9, 1e9, 1e9], [0, -1e9, 2.5, 3.5, 1e9], [0, 2, 2, 1e12, 3]])
    np.testing.assert_allclose(op(op.kernel, f, rois, (2, 3), 1.0),
                               op.loop(f, rois, (2, 3), 1.0), rtol=1e-12, atol=1e-14)


def test_errors_name_the_argument():
    f = np.zeros((1, 10, 4, 4))
    with pytest.raises(ValueError, match=r"ps_roi_align: features must have a channel count "
                                         r"divisible by output_size\[0\] \* output_size\[1\] = 4, got 10"):
        jra.ps_roi_align(f, np.zeros((1, 5)), 2)
    with pytest.raises(ValueError, match="ps_roi_pool: .* = 9, got 10"):
        jra.ps_roi_pool(f, np.zeros((1, 5)), 3)
    with pytest.raises(ValueError, match=r"legacy.roi_align: output_size must be >= 2, got 1"):
        jra.legacy.roi_align(f, np.zeros((1, 5)), 1, 1.0)
    with pytest.raises(ValueError, match="roi_pool: layout must be one of"):
        jra.roi_pool(f, np.zeros((1, 5)), 2, layout="HWC")
    assert jra.legacy.roi_align_avg(f, np.zeros((1, 5)), 1, 1.0).shape == (1, 10, 1, 1)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_empty_maps_give_zeros(op, shape):
    f = jnp.ones((1, op.channels(2, (2, 2))) + shape)
    rois = jnp.asarray([[0, 0.0, 0.0, 3.0, 3.0]])
    out, (gf, gr) = jax.value_and_grad(lambda x, r: jnp.sum(op(op.kernel, x, r, (2, 2), 1.0)),
                                       argnums=(0, 1))(f, rois)
    assert op(op.kernel, f, rois, (2, 2), 1.0).shape[-2:] == (2, 2)
    assert out == 0 and gf.shape == f.shape and np.all(gr == 0)
