"""Derivatives of every operator case: in the features (any order, forward and reverse),
in the boxes (first order, exact where smooth), their agreement with the pure-JAX path
and the loop formula, determinism, and the errors for what is not provided."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_roialign as jra
from cases import (BOX_CASES, BOX_IDS, CASES, IDS, LAYOUTS, ORDINARY, edge_rois, features,
                   smooth_rois, to_layout)
from loop_reference import roi_align_numpy_box_grad


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_check_grads_features(case, layout):
    rng = np.random.default_rng(5)
    f = jnp.asarray(features(case, rng, (2, 3), layout, h=6, w=7))
    rois = jnp.asarray(edge_rois(2, 6, 7, 1.0, rng, count=3))
    for sr in ((-1, 2) if case.sampling else (-1,)):
        check_grads(lambda x: case("kernel", x, rois, (2, 3), 1.0, sr, True, layout), (f,),
                    order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("case", BOX_CASES, ids=BOX_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("form", ["rows", "per_image"])
def test_box_gradient(case, layout, form):
    """check_grads away from kinks, and equal to jax.grad of the pure-JAX path."""
    rng = np.random.default_rng(6)
    f = jnp.asarray(features(case, rng, (2, 2), layout, c_out=3, h=9, w=10))
    rows = smooth_rois(rng, 4, 9, 10, 0.5)
    for aligned in case.aligned_values():
        if form == "rows":
            fn = lambda b, impl="kernel": case(impl, f, jnp.concatenate([rows[:, :1], b], 1),
                                               (2, 2), 0.5, 2, aligned, layout)
            b = jnp.asarray(rows[:, 1:])
        else:
            fn = lambda b, impl="kernel": case(impl, f, b, (2, 2), 0.5, 2, aligned, layout)
            b = jnp.asarray(rows[:, 1:].reshape(2, 2, 4))
        check_grads(fn, (b,), order=1, modes=("fwd", "rev"), eps=1e-6)
        cot = jnp.asarray(rng.normal(size=fn(b).shape))
        np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(fn(x) * cot))(b),
                                   jax.grad(lambda x: jnp.sum(fn(x, "reference") * cot))(b),
                                   rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_roi_align_box_gradient_matches_formula(aligned, sampling_ratio, layout):
    """The kernel's box gradient vs docs/semantics.md's formula written as loops, clamped
    and out-of-window samples included."""
    rng = np.random.default_rng(7)
    f = to_layout(rng.normal(size=(2, 3, 7, 8)), layout)
    rois = edge_rois(2, 7, 8, 1.0, rng)[ORDINARY]
    run = lambda r: jra.roi_align(f, r, (2, 3), 1.0, sampling_ratio, aligned, layout=layout)
    cot = rng.normal(size=run(rois).shape)
    got = jax.grad(lambda r: jnp.sum(run(r) * cot))(jnp.asarray(rois))
    np.testing.assert_array_equal(got[:, 0], 0)
    formula = roi_align_numpy_box_grad(f, rois, cot, 2, 3, 1.0, sampling_ratio, aligned, layout)
    np.testing.assert_allclose(got[:, 1:], formula, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [c for c in CASES if not c.box_derivative],
                         ids=[c.id for c in CASES if not c.box_derivative])
def test_piecewise_constant_operators_have_zero_box_derivative(case):
    rng = np.random.default_rng(7)
    f = jnp.asarray(features(case, rng, (2, 2), "NCHW"))
    rois = jnp.asarray(edge_rois(2, 7, 9, 1.0, rng))
    g = jax.grad(lambda r: jnp.sum(case("kernel", f, r, (2, 2)) ** 2))(rois)
    np.testing.assert_array_equal(g, 0)
    _, t = jax.jvp(lambda r: case("kernel", f, r, (2, 2)), (rois,), (jnp.ones_like(rois),))
    np.testing.assert_array_equal(t, 0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_feature_gradient_matches_reference(case):
    rng = np.random.default_rng(8)
    f = jnp.asarray(features(case, rng, (2, 3), "NCHW", c_out=3, h=7, w=8))
    rois = jnp.asarray(edge_rois(2, 7, 8, 1.0, rng)[ORDINARY])
    out = case("kernel", f, rois, (2, 3))
    cot = jnp.asarray(rng.normal(size=out.shape))
    grads = [jax.grad(lambda x: jnp.sum(case(impl, x, rois, (2, 3), 1.0, -1, True) * cot))(f)
             for impl in ("kernel", "reference")]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_feature_gradient_of_large_bins_matches_reference(case, layout):
    """Bins of more samples than the CPU kernels produce at a time (64: kChunk in
    cc/cpu/kernels.h), as a detector's large boxes have: the pool operators' bins of about
    200 cells, adaptive grids of about 14 x 15 samples (at most the reference's cap of 16
    per axis), and 9 x 9 grids."""
    rng = np.random.default_rng(12)
    f = jnp.asarray(features(case, rng, (2, 3), layout, c_out=3, h=34, w=46))
    rois = jnp.asarray([[0, 2.5, 3.5, 44.0, 33.0], [1, 0.25, 1.0, 40.5, 31.75],
                        [1, 5.0, 2.0, 45.0, 30.0]])
    for sr in ((-1, 9) if case.sampling else (-1,)):
        run = lambda impl, x: case(impl, x, rois, (2, 3), 1.0, sr, True, layout)
        cot = jnp.asarray(rng.normal(size=run("kernel", f).shape))
        grads = [jax.grad(lambda x: jnp.sum(run(impl, x) * cot))(f)
                 for impl in ("kernel", "reference")]
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-12)


MAX_CASES = [c for c in CASES if c.mode == "max"]


@pytest.mark.parametrize("case", MAX_CASES, ids=[c.id for c in MAX_CASES])
def test_max_gradient_when_the_outputs_outnumber_the_features(case):
    """Max mode's feature gradient where the outputs hold at least 8 times the features'
    elements, as in a C4 head, over too few channels for a channel-last copy
    (cc/cpu/call_paths.h, gradient_in_place): roi_pool's one-cell samples take NCHW
    cotangents and winners as laid out, channel after channel, into the gradient in
    place (cc/cpu/kernels.h, backward_max_planes). float64: the pure-JAX path's values;
    float32: NHWC's bits (a separate path)."""
    rng = np.random.default_rng(21)
    h, w, size = 6, 7, (7, 7)
    f = features(case, rng, size, "NCHW", n=1, c_out=5, h=h, w=w)
    rois = edge_rois(1, h, w, 1.0, rng, count=60)[ORDINARY]
    assert len(rois) * 5 * 49 >= 8 * f.size

    def grad(impl, x, layout, dtype):
        x = jnp.asarray(to_layout(x, layout), dtype)
        out, vjp = jax.vjp(lambda y: case(impl, y, jnp.asarray(rois, dtype), size, 1.0, 2,
                                          True, layout), x)
        ct = np.random.default_rng(3).normal(size=(len(rois), 5) + size)
        g = vjp(jnp.asarray(to_layout(ct, layout), dtype))[0]
        return np.asarray(g if layout == "NCHW" else jnp.moveaxis(g, -1, 1))

    np.testing.assert_allclose(grad("kernel", f, "NCHW", jnp.float64),
                               grad("reference", f, "NCHW", jnp.float64), rtol=1e-12,
                               atol=1e-12)
    nchw = grad("kernel", f, "NCHW", jnp.float32)
    assert np.abs(nchw).max() > 0
    np.testing.assert_array_equal(nchw, grad("kernel", f, "NHWC", jnp.float32))


def test_roi_pool_gradient_of_a_roi_beyond_one_table():
    """roi_pool's NCHW gradient in place (backward_max_planes) with one roi of more cells
    than the CPU backward tables at once (65536: kRoiTableSamples in cc/cpu/kernels.h),
    among many small ones: that roi takes the per-bin path, the others the table's, and
    the gradient has the bits of NHWC's (one channel: the same memory, another path)."""
    rng = np.random.default_rng(22)
    h = w = 260
    f = rng.normal(size=(1, 1, h, w)).astype(np.float32)
    k = 8 * h * w // 49 + 1
    lo = rng.uniform(0, w - 3, size=(k, 2))
    rois = np.concatenate([np.zeros((k, 1)), lo, lo + rng.uniform(0, 2, size=(k, 2))], 1)
    rois[k // 2] = [0, 0, 0, w - 1, h - 1]
    rois = jnp.asarray(rois, jnp.float32)
    ct = rng.normal(size=(k, 1, 7, 7)).astype(np.float32)

    def grad(layout):
        x = jnp.asarray(to_layout(f, layout))
        _, vjp = jax.vjp(lambda y: jra.roi_pool(y, rois, (7, 7), 1.0, layout=layout), x)
        return np.asarray(vjp(jnp.asarray(to_layout(ct, layout)))[0]).reshape(h, w)

    nchw = grad("NCHW")
    np.testing.assert_array_equal(nchw, grad("NHWC"))
    # The big roi's bins take one winner each, wherever the small ones are.
    assert np.count_nonzero(nchw) >= 49


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_roi_pool_gradient_bits_against_a_loop(dtype, layout):
    """roi_pool's feature gradient, bit for bit, against a loop in `dtype` that adds each
    cotangent at its winner, roi after roi, bin after bin (the kernels' order). The
    winner is found by value: every (image, channel) holds distinct nonzero values, so
    an output names its cell (an empty bin's 0 names none). 37 channels (whole vectors
    and a remainder in every build); NHWC's gradient in place and NCHW's channel-last
    copy both add a bin's winners cell by cell where the bin has few cells
    (cc/cpu/channel_loops.h, add_winners_by_sample), else channel by channel: the rois'
    bins hold 1 to about 50 cells."""
    rng = np.random.default_rng(31)
    n, c, h, w, size = 2, 37, 48, 48, (7, 7)
    f = np.stack([rng.permutation(h * w).reshape(h, w) - (h * w) / 2 + 0.5
                  for _ in range(n * c)]).reshape(n, c, h, w).astype(dtype)
    side = np.concatenate([rng.uniform(1, 8, 15), rng.uniform(8, 48, 15)])
    x1, y1 = rng.uniform(-2, w - 4, 30), rng.uniform(-2, h - 4, 30)
    rois = np.stack([rng.integers(0, n, 30), x1, y1, x1 + side, y1 + side[::-1]], 1)
    ct = rng.normal(size=(30, c) + size).astype(dtype)
    x = jnp.asarray(to_layout(f, layout))
    out, vjp = jax.vjp(lambda y: jra.roi_pool(y, jnp.asarray(rois, dtype), size, 1.0,
                                              layout=layout), x)
    g = vjp(jnp.asarray(to_layout(ct, layout)))[0]
    g = np.asarray(g if layout == "NCHW" else jnp.moveaxis(g, -1, 1))
    out = np.asarray(out if layout == "NCHW" else jnp.moveaxis(out, -1, 1))

    where = [{v: divmod(i, w) for i, v in enumerate(f[b, ch].ravel())}
             for b in range(n) for ch in range(c)]
    expected = np.zeros_like(f)
    cells = set()
    for k in range(len(rois)):
        b = int(rois[k, 0])
        for ph in range(size[0]):
            for pw in range(size[1]):
                for ch in range(c):
                    at = where[b * c + ch].get(out[k, ch, ph, pw])
                    if at is not None:
                        expected[b, ch, at[0], at[1]] += ct[k, ch, ph, pw]
                        cells.add(at)
    assert len(cells) > 500
    np.testing.assert_array_equal(g, expected)


@pytest.mark.parametrize("case", MAX_CASES, ids=[c.id for c in MAX_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_gradient_of_maps_of_several_bands(case, dtype):
    """roi_pool's channel-last feature gradient of images of 32 MiB or more is zeroed
    and summed in bands of 8 MiB of rows (cc/cpu/call_paths.h, max_band_rows;
    cc/cpu/kernels.h, backward_max_bands: 390 rows of this float32 map, 195 of
    float64), each roi adding only the terms that land in the band: rois across a
    band's edge, tall ones across several, and winners on both sides of an edge must
    give NCHW's bits (another path, unbanded). 21 channels: whole vectors and a
    remainder in every build. Three images, the first without rois,
    and invalid rows among the rest: on two threads one task owns the first two
    images, banded one after the other. The other max-mode cases (their samples
    bilinear) are not banded, and must agree too."""
    rng = np.random.default_rng(23)
    channels = 21
    band = (8 << 20) // (256 * channels * np.dtype(dtype).itemsize)
    h, w, size = 4 * band + 4, 256, (7, 7)
    f = features(case, rng, size, "NCHW", n=3, c_out=channels, h=h, w=w, dtype=dtype)
    k = 120
    x1 = rng.uniform(-4, w - 8, k)
    y1 = rng.uniform(-4, h - 8, k)
    tall = rng.uniform(4, 80, k)
    tall[::10] = rng.uniform(band / 2, 3 * band, len(tall[::10]))  # across several bands
    edges = band * rng.integers(1, 5, len(y1[1::4]))
    y1[1::4] = edges + rng.uniform(-4, 4, len(edges)) - tall[1::4] / 2  # across one
    image = 1 + rng.integers(0, 2, k)  # images 1 and 2
    image[5::40] = -1  # invalid rows: no terms
    rois = np.stack([image, x1, y1, x1 + rng.uniform(2, 60, k), y1 + tall], 1)

    def grad(layout):
        x = jnp.asarray(to_layout(f, layout))
        out, vjp = jax.vjp(lambda y: case("kernel", y, jnp.asarray(rois, dtype), size, 1.0, 2,
                                          True, layout), x)
        ct = np.random.default_rng(3).normal(size=(k, channels) + size).astype(dtype)
        g = vjp(jnp.asarray(to_layout(ct, layout)))[0]
        return np.asarray(g if layout == "NCHW" else jnp.moveaxis(g, -1, 1))

    nhwc = grad("NHWC")
    assert not nhwc[0].any()
    for edge in range(band, h, band):  # terms on both sides of each edge
        assert np.abs(nhwc[:, :, edge - 8:edge]).max() > 0, edge
        assert np.abs(nhwc[:, :, edge:edge + 8]).max() > 0, edge
    np.testing.assert_array_equal(nhwc, grad("NCHW"))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_is_bitwise_deterministic(case):
    rng = np.random.default_rng(9)
    f = jnp.asarray(features(case, rng, (4, 4), "NCHW", c_out=4, h=20, w=20, dtype=np.float32))
    rois = jnp.asarray(edge_rois(2, 20, 20, 1.0, rng, count=40).astype(np.float32))
    g = jax.jit(jax.grad(lambda x, r: jnp.sum(jnp.sin(case("kernel", x, r, 4, 1.0, 2, True))),
                         argnums=(0, 1)))
    a, b = g(f, rois), g(f, rois)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jacfwd_equals_jacrev(case):
    rng = np.random.default_rng(10)
    f = jnp.asarray(features(case, rng, (2, 2), "NCHW", n=1, c_out=2, h=5, w=5))
    rows = smooth_rois(rng, 2, 5, 5, 1.0)
    rows[:, 0] = 0
    fn = lambda x, b: case("kernel", x, jnp.concatenate([rows[:, :1], b], 1), (2, 2), 1.0, 2,
                           True)
    b = jnp.asarray(rows[:, 1:])
    for argnum in ((0, 1) if case.box_derivative else (0,)):
        np.testing.assert_allclose(jax.jacfwd(fn, argnum)(f, b), jax.jacrev(fn, argnum)(f, b),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", BOX_CASES, ids=BOX_IDS)
def test_second_derivatives_in_boxes_raise_clearly(case):
    f = jnp.ones((1, case.channels(1, (2, 2)), 5, 5))
    fn = lambda b: case("kernel", f, jnp.concatenate([jnp.zeros((1, 1)), b], 1), (2, 2), 1.0, 2,
                        True).sum()
    with pytest.raises(jra.UnsupportedDerivativeError, match="box coordinates"):
        jax.hessian(fn)(jnp.asarray([[0.5, 0.7, 3.2, 3.9]]))


def _table_adds_per_step(jaxpr, size, looped=False):
    """The adds of `size`-element arrays that `jaxpr` runs once per loop step outside any
    `cond` branch (nested jaxprs included)."""
    count = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if looped and name in ("add", "add_any") and eqn.outvars[0].aval.size == size:
            count += 1
        inner = False if name == "cond" else looped or name in ("scan", "while")
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    count += _table_adds_per_step(sub.jaxpr, size, inner)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    count += _table_adds_per_step(sub, size, inner)
    return count


@pytest.mark.parametrize("op", ["ps_roi_pool", "ps_roi_align", "roi_align_rotated", "roi_align"])
def test_reference_cell_loop_gradient_accumulates_in_its_carry(op):
    """The pure-JAX forms whose cells or samples run in a skipping loop (reference
    numerics.cell_loop: ps_roi_pool, adaptive ps_roi_align, roi_align_rotated, adaptive
    roi_align) must add each transposed step's scatter into the features' cotangent
    carried by the loop. Where a step's cond returns a whole cotangent of the features to
    be added to the running one (the features closed over, or routed around the cond),
    every step, skipped or not, reads and writes the whole map: the gradient is right,
    and ps_roi_pool's took 30 to over 100 times its forward on a small detection head
    (docs/architecture.md)."""
    f = jnp.ones((2, 12, 12, 4 * 3 * 3), jnp.float32)
    boxes = [[0, 1.0, 1.0, 9.0, 10.0], [1, 0.0, 2.0, 11.0, 7.0]]
    rotated = [[0, 5.0, 5.0, 6.0, 7.0, 20.0], [1, 6.0, 4.0, 8.0, 5.0, -30.0]]
    fn = {"ps_roi_pool": lambda x: jra.reference.ps_roi_pool(x, jnp.asarray(boxes), 3,
                                                             layout="NHWC"),
          "ps_roi_align": lambda x: jra.reference.ps_roi_align(x, jnp.asarray(boxes), 3,
                                                               sampling_ratio=-1, layout="NHWC"),
          "roi_align_rotated": lambda x: jra.reference.roi_align_rotated(
              x, jnp.asarray(rotated), 3, sampling_ratio=-1, layout="NHWC"),
          "roi_align": lambda x: jra.reference.roi_align(x, jnp.asarray(boxes), 3,
                                                         sampling_ratio=-1, layout="NHWC")}[op]
    backward = jax.make_jaxpr(lambda x: jax.vjp(fn, x)[1](fn(x))[0])(f)
    assert _table_adds_per_step(backward.jaxpr, f.size) == 0
    # The check sees such adds: the forward's own features, added in a loop.
    looped = jax.make_jaxpr(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: y + x, x))(f)
    assert _table_adds_per_step(looped.jaxpr, f.size) == 1


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype, layout", [(jnp.bfloat16, "NHWC"), (jnp.float16, "NCHW")],
                         ids=["bfloat16", "float16"])
def test_reference_gradient_of_16_bit_features_is_rounded_once(case, dtype, layout):
    """The pure-JAX path (what platforms without kernels run, bfloat16 on TPUs among them)
    sums a 16-bit map's cotangent in float32 and rounds it once: its gradient is the
    float32 gradient of the same values, rounded. Summed in 16 bits, scatter by scatter,
    it drifted by ~100 bfloat16 ulps for roi_pool where a few hundred rois overlap (the
    kernels: float32 accumulation too)."""
    rng = np.random.default_rng(13)
    f = jnp.asarray(features(case, rng, (3, 3), layout, n=1, c_out=2, h=16, w=16,
                             dtype=np.float32), dtype)
    x1, y1 = rng.uniform(1, 4, (2, 200))
    x2, y2 = x1 + rng.uniform(8, 11, 200), y1 + rng.uniform(8, 11, 200)
    rois = jnp.asarray(np.stack([np.zeros(200), x1, y1, x2, y2], 1), jnp.float32)
    run = lambda x: case("reference", x, rois, (3, 3), 1.0, -1, True, layout)
    cot = jnp.asarray(rng.uniform(0.5, 1.0, run(f).shape), dtype)
    grad = lambda x, c: jax.grad(lambda y: jnp.sum((run(y) * c).astype(jnp.float32)))(x)
    wide = grad(f.astype(jnp.float32), cot.astype(jnp.float32))
    np.testing.assert_array_equal(np.asarray(grad(f, cot), np.float32),
                                  np.asarray(wide.astype(dtype), np.float32))
