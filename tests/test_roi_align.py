"""roi_align: kernels vs the float64 loop reference, dtypes, gradients, transforms, bad data."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_roialign as jra
from jax_roialign import reference
from loop_reference import roi_align_numpy, roi_align_numpy_box_grad

MODES = ("avg", "max")
LAYOUTS = ("NCHW", "NHWC")


def to_layout(f_nchw, layout):
    return f_nchw if layout == "NCHW" else np.transpose(f_nchw, (0, 2, 3, 1))


def edge_rois(num_images, height, width, scale, rng, count=6):
    """Ordinary rois plus every awkward kind, in input-image pixels, as (K, 5) rows."""
    h, w = height / scale, width / scale
    rows = []
    for _ in range(count):
        x1, x2 = np.sort(rng.uniform(-0.2 * w, 1.2 * w, 2))
        y1, y2 = np.sort(rng.uniform(-0.2 * h, 1.2 * h, 2))
        rows.append([rng.integers(num_images), x1, y1, x2, y2])
    rows += [
        [0, -3 * w, -3 * h, -2 * w, -2 * h],              # wholly outside, before
        [num_images - 1, 2 * w, 2 * h, 3 * w, 3 * h],     # wholly outside, after
        [0, -0.5 * w, 0.3 * h, 0.5 * w, 2 * h],           # partly outside
        [0, 0.31 * w, 0.42 * h, 0.31 * w + 0.2, 0.42 * h + 0.3],  # tiny
        [num_images - 1, 0.5 * w, 0.5 * h, 0.5 * w, 0.5 * h],     # zero size
        [0, 0.8 * w, 0.7 * h, 0.2 * w, 0.1 * h],          # reversed
        [0, -1e4, -1e4, 1e4, 1e4],                        # huge
        [0, 0.0, 0.0, w, h],                              # exactly the map
        [0, -1 / scale, -1 / scale, (width - 1) / scale, (height - 1) / scale],  # on edges
    ]
    return np.asarray(rows, np.float64)


def run(features, rois, output_size=(3, 2), spatial_scale=1.0, sampling_ratio=-1,
        aligned=False, mode="avg", layout="NCHW", **kw):
    return jra.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned,
                         mode=mode, layout=layout, **kw)


def loop(features, rois, output_size=(3, 2), spatial_scale=1.0, sampling_ratio=-1,
         aligned=False, mode="avg", layout="NCHW", dtype=np.float64):
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    return roi_align_numpy(features, rois, ph, pw, spatial_scale, sampling_ratio, aligned,
                           mode, layout, dtype=dtype)


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_loop_reference(mode, aligned, sampling_ratio, spatial_scale, layout):
    rng = np.random.default_rng(hash((mode, aligned, sampling_ratio, spatial_scale)) % 2**32)
    f = to_layout(rng.normal(size=(2, 3, 7, 9)), layout)
    rois = edge_rois(2, 7, 9, spatial_scale, rng)
    args = dict(output_size=(3, 2), spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                aligned=aligned, mode=mode, layout=layout)
    np.testing.assert_allclose(run(f, rois, **args), loop(f, rois, **args), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("form", ["rows", "per_image", "list"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_rois_forms_agree(form, layout):
    rng = np.random.default_rng(1)
    f = to_layout(rng.normal(size=(3, 2, 6, 5)), layout)
    boxes = np.sort(rng.uniform(-1, 7, size=(3, 4, 2, 2)), axis=2).transpose(0, 1, 3, 2)
    boxes = boxes.reshape(3, 4, 4)  # (x1, y1, x2, y2) with x1 <= x2, y1 <= y2
    rows = np.concatenate([np.repeat(np.arange(3.0), 4)[:, None], boxes.reshape(12, 4)], 1)
    expected = loop(f, rows, (2, 3), 0.5, 2, True, layout=layout)
    if form == "rows":
        got = run(f, rows, (2, 3), 0.5, 2, True, layout=layout)
    elif form == "per_image":
        got = run(f, boxes, (2, 3), 0.5, 2, True, layout=layout)
        assert got.shape[:2] == (3, 4)
        got = got.reshape((12,) + got.shape[2:])
    else:
        got = run(f, [boxes[0], boxes[1][:0], boxes[2]], (2, 3), 0.5, 2, True, layout=layout)
        expected = expected[np.r_[0:4, 8:12]]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_output_shapes_and_int_output_size():
    f = np.zeros((2, 5, 8, 8))
    assert run(f, np.zeros((3, 5)), 4).shape == (3, 5, 4, 4)
    assert run(f, np.zeros((3, 5)), (2, 7), layout="NCHW").shape == (3, 5, 2, 7)
    assert run(np.zeros((2, 8, 8, 5)), np.zeros((2, 6, 4)), (2, 7), layout="NHWC").shape == \
        (2, 6, 2, 7, 5)


@pytest.mark.parametrize("mode", MODES)
def test_no_rois(mode):
    f = np.ones((2, 3, 4, 4))
    assert run(f, np.zeros((0, 5)), mode=mode).shape == (0, 3, 3, 2)
    assert run(f, np.zeros((2, 0, 4)), mode=mode).shape == (2, 0, 3, 3, 2)
    g = jax.grad(lambda x: run(x, np.zeros((0, 5)), mode=mode).sum())(jnp.asarray(f))
    np.testing.assert_array_equal(g, 0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1)])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("aligned", [False, True])
def test_single_row_or_column_maps(shape, mode, aligned):
    rng = np.random.default_rng(2)
    f = rng.normal(size=(1, 2) + shape)
    rois = edge_rois(1, shape[0], shape[1], 1.0, rng)
    args = dict(output_size=2, sampling_ratio=-1, aligned=aligned, mode=mode)
    np.testing.assert_allclose(run(f, rois, **args), loop(f, rois, **args), rtol=1e-12,
                               atol=1e-12)


def test_detectron2_ramp_golden_values():
    """Detectron2's test_roi_align: 5x5 ramp f[y, x] = 5y + x, box [1, 1, 3, 3]."""
    f = (np.arange(25.0).reshape(1, 1, 5, 5))
    box = np.array([[0, 1.0, 1.0, 3.0, 3.0]])
    unaligned = np.asarray(run(f, box, 4, 1.0, -1, False))[0, 0]
    np.testing.assert_allclose(unaligned[0], [7.5, 8, 8.5, 9])
    aligned = np.asarray(run(f, box, 4, 1.0, -1, True))[0, 0]
    np.testing.assert_allclose(aligned[0], [4.5, 5, 5.5, 6])
    np.testing.assert_allclose(aligned[1], [7, 7.5, 8, 8.5])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("aligned", [False, True])
def test_float32_is_bitwise_torchvision_order(mode, layout, aligned):
    """float32: the same IEEE operations in torchvision's order, no FMA, so the
    result equals a float32 loop emulation bit for bit, at window edges too."""
    rng = np.random.default_rng(3)
    f = to_layout(rng.normal(size=(2, 3, 5, 6)).astype(np.float32), layout)
    rois = edge_rois(2, 5, 6, 1.0, rng).astype(np.float32)
    for sr in (-1, 2):
        args = dict(output_size=(2, 3), sampling_ratio=sr, aligned=aligned, mode=mode,
                    layout=layout)
        np.testing.assert_array_equal(run(f, rois, **args),
                                      loop(f, rois, dtype=np.float32, **args))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_16bit_within_what_the_dtype_allows(dtype, mode, layout):
    """Error vs the float64 result of the same (rounded) inputs is at most 2x that
    of the plain pure-JAX path in the same dtype (FlashAttention's rule), plus
    one rounding of the output, which either path pays."""
    rng = np.random.default_rng(4)
    f = jnp.asarray(to_layout(rng.normal(size=(2, 4, 8, 8)), layout), dtype)
    rois = edge_rois(2, 8, 8, 1.0, rng)
    args = dict(output_size=(3, 3), sampling_ratio=2, aligned=True, mode=mode, layout=layout)
    exact = loop(np.asarray(f.astype(jnp.float64)), rois, **args)
    got = np.asarray(run(f, rois, **args).astype(jnp.float64))
    plain = reference.roi_align(f, rois, **args)
    assert plain.dtype == dtype and run(f, rois, **args).dtype == dtype
    plain_err = np.abs(np.asarray(plain.astype(jnp.float64)) - exact).max()
    ulp = float(jnp.finfo(dtype).eps) * np.abs(exact).max()
    assert np.abs(got - exact).max() <= 2 * plain_err + ulp


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_check_grads_features(mode, layout, sampling_ratio):
    rng = np.random.default_rng(5)
    f = jnp.asarray(to_layout(rng.normal(size=(2, 2, 6, 7)), layout))
    rois = jnp.asarray(edge_rois(2, 6, 7, 1.0, rng, count=3))
    fn = lambda x: run(x, rois, (2, 3), 1.0, sampling_ratio, True, mode, layout)
    check_grads(fn, (f,), order=2, modes=("fwd", "rev"))


def smooth_rois(rng, num, height, width, scale):
    """Boxes strictly inside the map with non-integer sample positions (no kinks)."""
    x1 = rng.uniform(0.6, 0.4 * width, num) / scale
    y1 = rng.uniform(0.6, 0.4 * height, num) / scale
    x2 = x1 + rng.uniform(1.3, 0.5 * width, num) / scale
    y2 = y1 + rng.uniform(1.3, 0.5 * height, num) / scale
    return np.stack([rng.integers(0, 2, num).astype(float), x1, y1, x2, y2], 1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("form", ["rows", "per_image"])
def test_check_grads_boxes(mode, layout, aligned, form):
    rng = np.random.default_rng(6)
    f = jnp.asarray(to_layout(rng.normal(size=(2, 3, 9, 10)), layout))
    rows = smooth_rois(rng, 4, 9, 10, 0.5)
    if form == "rows":
        fn = lambda b: run(f, jnp.concatenate([rows[:, :1], b], 1), (2, 2), 0.5, 2, aligned,
                           mode, layout)
        x = jnp.asarray(rows[:, 1:])
    else:
        fn = lambda b: run(f, b, (2, 2), 0.5, 2, aligned, mode, layout)
        x = jnp.asarray(rows[:, 1:].reshape(2, 2, 4))
    check_grads(fn, (x,), order=1, modes=("fwd", "rev"), eps=1e-6)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_box_gradient_matches_formula_and_reference(aligned, sampling_ratio, layout):
    """The kernel's box gradient vs SPEC.md's formula (loop) and jax.grad of the
    pure-JAX reference, including clamped and out-of-window samples."""
    rng = np.random.default_rng(7)
    f = to_layout(rng.normal(size=(2, 3, 7, 8)), layout)
    rois = edge_rois(2, 7, 8, 1.0, rng)[:-3]  # drop huge / on-edge (kinks at 0 and H)
    out_shape = run(f, rois, (2, 3), 1.0, sampling_ratio, aligned, layout=layout).shape
    cot = rng.normal(size=out_shape)
    fn = lambda r, impl: jnp.sum(impl(f, r, (2, 3), 1.0, sampling_ratio, aligned,
                                      layout=layout) * cot)
    got = jax.grad(fn)(jnp.asarray(rois), jra.roi_align)
    np.testing.assert_array_equal(got[:, 0], 0)
    formula = roi_align_numpy_box_grad(f, rois, cot, 2, 3, 1.0, sampling_ratio, aligned, layout)
    np.testing.assert_allclose(got[:, 1:], formula, rtol=1e-10, atol=1e-10)
    ref = jax.grad(fn)(jnp.asarray(rois), reference.roi_align)
    np.testing.assert_allclose(got[:, 1:], ref[:, 1:], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
def test_feature_gradient_matches_reference(mode):
    rng = np.random.default_rng(8)
    f = jnp.asarray(rng.normal(size=(2, 3, 7, 8)))
    rois = jnp.asarray(edge_rois(2, 7, 8, 1.0, rng)[:-3])  # no huge box: the reference caps its grid
    cot = jnp.asarray(rng.normal(size=(rois.shape[0], 3, 2, 3)))
    fn = lambda x, impl: jnp.sum(impl(x, rois, (2, 3), 1.0, -1, True, mode=mode) * cot)
    np.testing.assert_allclose(jax.grad(fn)(f, jra.roi_align), jax.grad(fn)(f, reference.roi_align),
                               rtol=1e-12, atol=1e-12)


def test_backward_is_bitwise_deterministic():
    rng = np.random.default_rng(9)
    f = jnp.asarray(rng.normal(size=(2, 16, 20, 20)).astype(np.float32))
    rois = jnp.asarray(edge_rois(2, 20, 20, 1.0, rng, count=40).astype(np.float32))
    g = jax.jit(jax.grad(lambda x, r: run(x, r, 4, 1.0, 2, True).sum(), argnums=(0, 1)))
    a, b = g(f, rois), g(f, rois)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_jacfwd_equals_jacrev():
    rng = np.random.default_rng(10)
    f = jnp.asarray(rng.normal(size=(1, 2, 5, 5)))
    rows = smooth_rois(rng, 2, 5, 5, 1.0)
    rows[:, 0] = 0
    fn = lambda x, b: run(x, jnp.concatenate([rows[:, :1], b], 1), 2, 1.0, 2, True)
    b = jnp.asarray(rows[:, 1:])
    for argnum in (0, 1):
        np.testing.assert_allclose(jax.jacfwd(fn, argnum)(f, b), jax.jacrev(fn, argnum)(f, b),
                                   rtol=1e-12, atol=1e-12)


def test_second_derivatives_in_boxes_raise_clearly():
    f = jnp.ones((1, 1, 5, 5))
    fn = lambda b: run(f, jnp.concatenate([jnp.zeros((1, 1)), b], 1), 2, 1.0, 2, True).sum()
    with pytest.raises(jra.UnsupportedDerivativeError, match="box coordinates"):
        jax.hessian(fn)(jnp.asarray([[0.5, 0.7, 3.2, 3.9]]))


# ----------------------------------------------------------------------------- transforms

@pytest.mark.parametrize("mode", MODES)
def test_eager_equals_jit(mode):
    rng = np.random.default_rng(11)
    f = jnp.asarray(rng.normal(size=(2, 3, 6, 6)))
    rois = jnp.asarray(edge_rois(2, 6, 6, 1.0, rng))
    fn = lambda x, r: run(x, r, 2, 1.0, -1, True, mode)
    np.testing.assert_array_equal(fn(f, rois), jax.jit(fn)(f, rois))


@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0), (1, 2)])
@pytest.mark.parametrize("form", ["rows", "per_image"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_vmap_equals_loop(in_axes, form, mode, layout):
    rng = np.random.default_rng(12)
    B = 3
    f = to_layout(rng.normal(size=(B, 2, 2, 6, 7)).reshape(B * 2, 2, 6, 7), layout)
    f = f.reshape((B, 2) + f.shape[1:])
    if form == "rows":
        r = np.stack([edge_rois(2, 6, 7, 1.0, rng, count=3) for _ in range(B)])
        r[1, 0, 0] = 7  # an invalid batch index must stay invalid when folded
    else:
        r = np.stack([smooth_rois(rng, 6, 6, 7, 1.0)[:, 1:].reshape(2, 3, 4) for _ in range(B)])
    fa, ra = (f, r)
    if in_axes == (1, 2):
        fa, ra = np.moveaxis(f, 0, 1), np.moveaxis(r, 0, 2)
    fn = lambda x, b: run(x, b, (2, 3), 1.0, -1, True, mode, layout)
    fa = fa if in_axes[0] is not None else f[0]
    ra = ra if in_axes[1] is not None else r[0]
    got = jax.vmap(fn, in_axes)(jnp.asarray(fa), jnp.asarray(ra))
    want = np.stack([fn(f[i] if in_axes[0] is not None else f[0],
                        r[i] if in_axes[1] is not None else r[0]) for i in range(B)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    # vmap of grad (features and boxes) equals the loop of grads
    def loss(x, b):
        return jnp.sum(jnp.sin(fn(x, b)))
    gfn = jax.grad(loss, argnums=(0, 1)) if form == "per_image" else jax.grad(loss)
    got_g = jax.vmap(gfn, in_axes)(jnp.asarray(fa), jnp.asarray(ra))
    want_g = [gfn(jnp.asarray(f[i] if in_axes[0] is not None else f[0]),
                  jnp.asarray(r[i] if in_axes[1] is not None else r[0])) for i in range(B)]
    got_g = jax.tree_util.tree_leaves(got_g)
    for j, leaf in enumerate(got_g):
        stacked = np.stack([jax.tree_util.tree_leaves(w)[j] for w in want_g])
        np.testing.assert_allclose(leaf, stacked, rtol=1e-12, atol=1e-12)


def test_vmap_of_jvp_in_boxes():
    rng = np.random.default_rng(13)
    f = jnp.asarray(rng.normal(size=(2, 2, 6, 6)))
    boxes = jnp.asarray(smooth_rois(rng, 4, 6, 6, 1.0)[:, 1:].reshape(2, 2, 4))
    tangents = jnp.asarray(rng.normal(size=(3, 2, 2, 4)))
    fn = lambda b: run(f, b, 2, 1.0, 2, True)
    got = jax.vmap(lambda t: jax.jvp(fn, (boxes,), (t,))[1])(tangents)
    want = np.stack([jax.jvp(fn, (boxes,), (t,))[1] for t in tangents])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- bad data

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_rois_give_zeros_and_no_gradient(mode, layout):
    f = jnp.asarray(to_layout(np.random.default_rng(14).normal(size=(2, 2, 5, 5)) + 3, layout))
    good = [0, 1.0, 1.0, 3.0, 3.0]
    bad = [[-1, 1, 1, 3, 3], [2, 1, 1, 3, 3], [0.5, 1, 1, 3, 3], [np.nan, 1, 1, 3, 3],
           [1e20, 1, 1, 3, 3], [0, np.nan, 1, 3, 3], [0, 1, np.inf, 3, 3],
           [0, -np.inf, -np.inf, np.inf, np.inf], [1, 1, 1, np.nan, 3]]
    rois = jnp.asarray([good] + bad)
    fn = lambda x, r: run(x, r, 2, 1.0, -1, True, mode, layout)
    out = np.asarray(fn(f, rois))
    assert np.all(out[0] != 0)
    np.testing.assert_array_equal(out[1:], 0)
    gf, gr = jax.grad(lambda x, r: fn(x, r).sum(), argnums=(0, 1))(f, rois)
    gf_good = jax.grad(lambda x: fn(x, rois[:1]).sum())(f)
    np.testing.assert_array_equal(gf, gf_good)  # bad rows add nothing
    assert np.all(np.isfinite(gr))
    np.testing.assert_array_equal(gr[1:], 0)
    np.testing.assert_array_equal(jra.validate_rois(rois, 2), [False] + [True] * len(bad))


@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_huge_boxes_finish_and_match(sampling_ratio):
    """Adaptive grids of ~1e8 samples per axis: only in-window samples are visited."""
    rng = np.random.default_rng(15)
    f = rng.normal(size=(1, 2, 6, 7))
    rois = np.array([[0, -1e9, -1e9, 1e9, 1e9], [0, -1e9, 2.5, 3.5, 1e9], [0, 2, 2, 1e12, 3]])
    args = dict(output_size=(2, 3), sampling_ratio=sampling_ratio, aligned=True)
    np.testing.assert_allclose(run(f, rois, **args), loop(f, rois, **args), rtol=1e-12,
                               atol=1e-14)
    g = jax.grad(lambda r: run(f, r, **args).sum())(jnp.asarray(rois))
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("call, error, match", [
    (lambda: jra.roi_align(np.zeros((2, 3, 4)), np.zeros((1, 5)), 2), ValueError,
     r"features must have rank 4 \(N, C, H, W\).*got shape \(2, 3, 4\)"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4), np.int32), np.zeros((1, 5)), 2), TypeError,
     "features must be float16, bfloat16, float32 or float64, got int32"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), np.zeros((1, 4)), 2), ValueError,
     r"rois must be \(K, 5\).*got shape \(1, 4\)"),
    (lambda: jra.roi_align(np.zeros((2, 3, 4, 4)), np.zeros((3, 1, 4)), 2), ValueError,
     r"must have N = 2.*got shape \(3, 1, 4\)"),
    (lambda: jra.roi_align(np.zeros((2, 3, 4, 4)), [np.zeros((1, 4))], 2), ValueError,
     r"one \(R_n, 4\) array per image \(2\), got 1"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), [np.zeros((1, 5))], 2), ValueError,
     r"rois\[0\] must have shape \(R_n, 4\), got \(1, 5\)"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), np.zeros((1, 5)), 0), ValueError,
     "output_size must be >= 1, got 0"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), np.zeros((1, 5)), (2, 2.5)), TypeError,
     "output_size must be an int or a pair of ints"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), np.zeros((1, 5)), 2, mode="min"), ValueError,
     r"mode must be one of \('avg', 'max'\), got 'min'"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), np.zeros((1, 5)), 2, layout="CHW"), ValueError,
     r"layout must be one of \('NCHW', 'NHWC'\), got 'CHW'"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), np.zeros((1, 5)), 2, 1.0, 1.5), TypeError,
     "sampling_ratio must be an int"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), np.zeros((1, 5)), 2, -0.5), ValueError,
     "spatial_scale must be finite and >= 0, got -0.5"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), np.zeros((1, 5)), 2, float("nan")), ValueError,
     "spatial_scale must be finite"),
])
def test_trace_time_errors_name_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_reference_path_equals_kernel():
    """The pure-JAX path (used where no kernel is compiled) computes the same function."""
    rng = np.random.default_rng(16)
    f = rng.normal(size=(2, 3, 6, 7))
    rois = edge_rois(2, 6, 7, 1.0, rng)[:-3]
    boxes = smooth_rois(rng, 6, 6, 7, 1.0)[:, 1:].reshape(2, 3, 4)
    for mode, aligned, sr in itertools.product(MODES, (False, True), (-1, 2)):
        for r in (rois, boxes):
            np.testing.assert_allclose(
                reference.roi_align(f, r, (2, 3), 1.0, sr, aligned, mode=mode),
                run(f, r, (2, 3), 1.0, sr, aligned, mode), rtol=1e-12, atol=1e-12)
