"""multi_scale_roi_align and level_of over several levels: against torchvision's
MultiScaleRoIAlign itself (fixtures), against a per-level loop of our own roi_align (bit
for bit), each mapper against a transcription of its formula at level boundaries, one
custom call per direction, derivatives and transforms. (One level is a row of
tests/cases.py, so the generic value, gradient and transform tests cover it.)"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_roialign as jra
from cases import LAYOUTS, to_layout

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
SCALES = (1 / 4, 1 / 8, 1 / 16)


def pyramid(rng, n=2, c=3, h=32, w=40, levels=3, layout="NCHW", dtype=np.float64):
    return [jnp.asarray(to_layout(rng.normal(size=(n, c, h >> l, w >> l)), layout), dtype)
            for l in range(levels)]


def spread_boxes(rng, count, n=2, height=128, width=160):
    """(K, 5) rows with sides from 16 to 800 pixels: every level of SCALES gets some."""
    side = np.exp(rng.uniform(np.log(16), np.log(800), (count, 2)))
    cx, cy = rng.uniform(0, width, count), rng.uniform(0, height, count)
    return np.stack([rng.integers(0, n, count).astype(float), cx - side[:, 0] / 2,
                     cy - side[:, 1] / 2, cx + side[:, 0] / 2, cy + side[:, 1] / 2], 1)


# ----------------------------------------------------------------------------- torchvision

def fixture_cases():
    data = np.load(os.path.join(FIXTURES, "torchvision_multi_scale_roi_align.npz"),
                   allow_pickle=False)
    for i in range(int(data["count"])):
        params = json.loads(str(data[f"{i}/params"]))
        arrays = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}
        yield pytest.param(params, arrays, id=f"{i}-{params['name']}")


@pytest.mark.parametrize("params, arrays", list(fixture_cases()))
def test_matches_torchvision_multi_scale_roi_align(params, arrays):
    """Output, every level's gradient and the level of each box equal torchvision's:
    float32 bit for bit, float64 to rounding. torchvision calls roi_align with
    aligned=False and maps boxes with LevelMapper (eps 1e-6 after the log)."""
    levels = params["num_levels"]
    features = [jnp.asarray(arrays[f"features/{l}"]) for l in range(levels)]
    boxes = [jnp.asarray(arrays[f"boxes/{n}"]) for n in range(params["images"])]
    kw = dict(output_size=tuple(params["output_size"]), spatial_scales=params["spatial_scales"],
              sampling_ratio=params["sampling_ratio"], aligned=False,
              canonical_scale=params["canonical_scale"],
              canonical_level=params["canonical_level"])
    out, vjp = jax.vjp(lambda fs: jra.multi_scale_roi_align(fs, boxes, **kw), features)
    grads = vjp(jnp.asarray(arrays["grad_output"]))[0]
    if levels > 1:
        # torchvision's NaN level (a box of negative area) is an int64 that matches no level.
        want = np.where((arrays["levels"] < 0) | (arrays["levels"] >= levels), -1,
                        arrays["levels"])
        got = jra.level_of(boxes, params["spatial_scales"],
                           canonical_scale=params["canonical_scale"],
                           canonical_level=params["canonical_level"])
        np.testing.assert_array_equal(got, want)
    if params["dtype"] == "float32":
        np.testing.assert_array_equal(out, arrays["output"])
        for l in range(levels):
            np.testing.assert_array_equal(grads[l], arrays[f"grad_features/{l}"])
    else:
        np.testing.assert_allclose(out, arrays["output"], rtol=1e-13, atol=1e-13)
        for l in range(levels):
            np.testing.assert_allclose(grads[l], arrays[f"grad_features/{l}"], rtol=1e-13,
                                       atol=1e-13)


# ----------------------------------------------------------------------------- vs roi_align

def per_level_loop(features, rows, levels, size, scales, **kw):
    """What the peers do: roi_align on each level's boxes, scattered back."""
    out = None
    for l, (f, s) in enumerate(zip(features, scales)):
        pooled = jra.roi_align(f, rows, size, s, **kw)
        out = jnp.zeros_like(pooled) if out is None else out
        out = jnp.where((levels == l)[:, None, None, None], pooled, out)
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_equals_a_per_level_loop_of_roi_align_bit_for_bit(layout, dtype, mode):
    rng = np.random.default_rng(0)
    features = pyramid(rng, layout=layout, dtype=dtype)
    rows = spread_boxes(rng, 24)
    rows[3, 0] = 7  # a bad batch index stays bad
    kw = dict(sampling_ratio=2, aligned=True, mode=mode, layout=layout)
    levels = jra.level_of(rows, SCALES)
    assert set(np.asarray(levels)) == {0, 1, 2}
    got = jra.multi_scale_roi_align(features, rows, (3, 2), SCALES, **kw)
    want = per_level_loop(features, rows, levels, (3, 2), SCALES, **kw)
    np.testing.assert_array_equal(got, want)
    cot = jnp.asarray(rng.normal(size=got.shape), dtype)
    g_got = jax.grad(lambda fs: jnp.sum(jra.multi_scale_roi_align(
        fs, rows, (3, 2), SCALES, **kw).astype(jnp.float32) * cot.astype(jnp.float32)))(features)
    g_want = jax.grad(lambda fs: jnp.sum(per_level_loop(
        fs, rows, levels, (3, 2), SCALES, **kw).astype(jnp.float32) * cot.astype(jnp.float32)))(
            features)
    for a, b in zip(g_got, g_want):
        np.testing.assert_array_equal(a, b)


def test_given_levels_override_the_mapper_and_bad_levels_pool_zeros():
    rng = np.random.default_rng(1)
    features = pyramid(rng)
    rows = spread_boxes(rng, 6)
    levels = jnp.asarray([2, 0, 1, 3, -1, 1], jnp.int32)
    out = jra.multi_scale_roi_align(features, rows, 2, SCALES, levels=levels)
    for k, l in enumerate(np.asarray(levels)):
        if 0 <= l < 3:
            np.testing.assert_array_equal(out[k], jra.roi_align(features[l], rows[k:k + 1], 2,
                                                                SCALES[l])[0])
        else:
            np.testing.assert_array_equal(out[k], 0)
    g = jax.grad(lambda r: jnp.sum(jra.multi_scale_roi_align(features, r, 2, SCALES,
                                                             levels=levels)))(jnp.asarray(rows))
    np.testing.assert_array_equal(g[3:5], 0)


@pytest.mark.parametrize("form", ["per_image", "list"])
def test_rois_forms_agree(form):
    rng = np.random.default_rng(2)
    features = pyramid(rng)
    boxes = spread_boxes(rng, 8)[:, 1:].reshape(2, 4, 4)
    rows = np.concatenate([np.repeat([[0.0], [1.0]], 4, axis=0), boxes.reshape(8, 4)], 1)
    want = jra.multi_scale_roi_align(features, rows, 2, SCALES, 2)
    if form == "per_image":
        got = jra.multi_scale_roi_align(features, boxes, 2, SCALES, 2).reshape(want.shape)
        assert jra.level_of(boxes, SCALES).shape == (2, 4)
    else:
        got = jra.multi_scale_roi_align(features, list(boxes), 2, SCALES, 2)
    np.testing.assert_array_equal(got, want)


def test_reference_path_equals_kernel():
    rng = np.random.default_rng(3)
    features = pyramid(rng)
    rows = spread_boxes(rng, 12)
    for mode in ("avg", "max"):
        np.testing.assert_allclose(
            jra.reference.multi_scale_roi_align(features, rows, 3, SCALES, 2, True, mode=mode),
            jra.multi_scale_roi_align(features, rows, 3, SCALES, 2, True, mode=mode),
            rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- mappers

def mapper_formula(mapper, s, dtype, canonical_scale=224, canonical_level=4, finest_scale=56):
    """The peer's formula, step by step in `dtype` (numpy, log2 correctly rounded)."""
    T = dtype.type
    log2 = (lambda v: T(np.log2(np.float64(v)))) if dtype == np.float32 else np.log2
    with np.errstate(divide="ignore", invalid="ignore"):
        if mapper == "torchvision":
            t = T(T(T(canonical_level) + log2(T(s / T(canonical_scale)))) + T(1e-6))
        elif mapper == "detectron2":
            t = T(T(canonical_level) + log2(T(T(s / T(canonical_scale)) + T(1e-8))))
        else:
            t = log2(T(T(s / T(finest_scale)) + T(1e-6)))
    return np.floor(t)


def boundary(mapper, dtype, k):
    """The smallest s of `dtype` whose formula value floors to >= k (float bisection)."""
    lo, hi = np.array(1e-3, dtype), np.array(1e6, dtype)  # formula(lo) < k <= formula(hi)
    while np.nextafter(lo, hi) < hi:
        mid = np.array(lo / 2 + hi / 2, dtype)
        mid = np.nextafter(lo, hi) if mid <= lo else (np.nextafter(hi, lo) if mid >= hi else mid)
        if mapper_formula(mapper, mid, dtype) >= k:
            hi = mid
        else:
            lo = mid
    return hi


@pytest.mark.parametrize("mapper", ["torchvision", "detectron2", "mmdet"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mappers_match_their_formula_on_and_beside_level_boundaries(mapper, dtype):
    """Square boxes whose sqrt(area) is the first value of a level, and one and two ulps
    either side of it, in the boxes' dtype."""
    dtype = np.dtype(dtype)
    scales = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
    first, last = (2, 5) if mapper != "mmdet" else (0, 3)
    s = []
    for k in range(first + 1, last + 1):
        x = boundary(mapper, dtype, k)
        for _ in range(2):
            x = np.nextafter(x, np.array(0, dtype))
        for _ in range(5):
            s.append(x)
            x = np.nextafter(x, np.array(np.inf, dtype))
    s = np.asarray(s, dtype)
    # boxes [0, 0, s, s] only when s * s rounds back to s: sqrt(area) is then s itself
    exact = np.sqrt(s * s) == s
    s = s[exact]
    boxes = np.stack([np.zeros_like(s), np.zeros_like(s), s, s], 1)
    want = np.clip(np.array([mapper_formula(mapper, v, dtype) for v in s]), first, last) - first
    got = jra.level_of(jnp.asarray(boxes[None], dtype), scales, mapper=mapper)[0]
    np.testing.assert_array_equal(got, want.astype(np.int32))
    assert len(s) >= 3 * 5 // 2 and len(set(want)) == last - first + 1


def test_mapper_parameters_and_degenerate_boxes():
    boxes = np.array([[[0, 0, 0, 0], [0, 0, 5, -5], [0, 0, np.nan, 1], [0, 0, 1e30, 1e30],
                       [0, 0, 100, 100]]], np.float32)
    np.testing.assert_array_equal(jra.level_of(boxes, SCALES), [[0, -1, -1, 2, 0]])
    np.testing.assert_array_equal(
        jra.level_of(boxes, SCALES, canonical_scale=100, canonical_level=3), [[0, -1, -1, 2, 1]])
    np.testing.assert_array_equal(jra.level_of(boxes, SCALES, mapper="mmdet", finest_scale=50),
                                  [[0, -1, -1, 2, 1]])


def test_errors_name_the_argument():
    f = [np.zeros((1, 2, 8, 8)), np.zeros((1, 2, 4, 4))]
    rois = np.zeros((1, 5))
    with pytest.raises(ValueError, match="one scale per feature level"):
        jra.multi_scale_roi_align(f, rois, 2, (1 / 4,))
    with pytest.raises(ValueError, match="the N, C and dtype of features"):
        jra.multi_scale_roi_align([f[0], np.zeros((1, 3, 4, 4))], rois, 2, (1 / 4, 1 / 8))
    with pytest.raises(ValueError, match=r"spatial_scales of the form 1/2\^k"):
        jra.multi_scale_roi_align(f, rois, 2, (1 / 4, 1 / 6))
    with pytest.raises(ValueError, match="consecutive pyramid levels"):
        jra.multi_scale_roi_align(f, rois, 2, (1 / 4, 1 / 16))
    with pytest.raises(ValueError, match="mapper must be one of"):
        jra.multi_scale_roi_align(f, rois, 2, (1 / 4, 1 / 8), mapper="fpn")
    with pytest.raises(ValueError, match=r"levels must have one entry per box, shape \(1,\)"):
        jra.multi_scale_roi_align(f, rois, 2, (1 / 4, 1 / 8), levels=np.zeros(2, np.int32))
    with pytest.raises(TypeError, match="features must be a non-empty sequence"):
        jra.multi_scale_roi_align(f[0], rois, 2, (1 / 4,))
    # mmdet's mapper takes any scales: levels are 0..L-1
    assert jra.multi_scale_roi_align(f, rois, 2, (1 / 4, 1 / 6), mapper="mmdet").shape == (
        1, 2, 2, 2)


# ----------------------------------------------------------------------------- fused

def custom_calls(text):
    return text.count("custom_call_target=\"jax_roialign_") + text.count(
        "stablehlo.custom_call @jax_roialign_")


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_one_custom_call_per_direction(mode):
    rng = np.random.default_rng(4)
    features = pyramid(rng, levels=4)
    rows = jnp.asarray(spread_boxes(rng, 30))
    scales = SCALES + (1 / 32,)
    fwd = jax.jit(lambda fs: jra.multi_scale_roi_align(fs, rows, 7, scales, 2, mode=mode))
    text = fwd.lower(features).as_text()
    assert custom_calls(text) == 1
    assert "gather" not in text and "scatter" not in text
    bwd = jax.jit(jax.grad(lambda fs: jnp.sum(jra.multi_scale_roi_align(fs, rows, 7, scales, 2,
                                                                        mode=mode))))
    text = bwd.lower(features).as_text()
    assert custom_calls(text) == 2  # the forward (winners, residuals) and ONE backward
    assert "gather" not in text and "scatter" not in text


# ----------------------------------------------------------------------------- derivatives

@pytest.mark.parametrize("layout", LAYOUTS)
def test_derivatives_in_every_level_and_in_the_boxes(layout):
    rng = np.random.default_rng(5)
    features = pyramid(rng, n=1, c=2, h=24, w=28, layout=layout)
    side = np.array([[10.3, 12.1], [40.7, 33.2], [80.5, 95.3]])
    rows = np.concatenate([np.zeros((3, 1)), np.array([[13.1, 17.3]] * 3),
                           np.array([[13.1, 17.3]] * 3) + side], 1)
    mapper = dict(canonical_scale=32, canonical_level=3)
    levels = jra.level_of(rows, SCALES, **mapper)
    assert sorted(np.asarray(levels)) == [0, 1, 2]
    fn = lambda fs: jra.multi_scale_roi_align(fs, rows, 2, SCALES, 2, True, layout=layout,
                                              **mapper)
    check_grads(fn, (features,), order=2, modes=("fwd", "rev"))
    boxes = jnp.asarray(rows[:, 1:])
    fb = lambda b: jra.multi_scale_roi_align(features, jnp.concatenate([rows[:, :1], b], 1), 2,
                                             SCALES, 2, True, layout=layout, **mapper)
    check_grads(fb, (boxes,), order=1, modes=("fwd", "rev"), eps=1e-6)


def test_vmap_and_jit():
    rng = np.random.default_rng(6)
    batch = [jnp.stack([f, f * 2, -f]) for f in pyramid(rng)]
    boxes = jnp.asarray(spread_boxes(rng, 8)[:, 1:].reshape(2, 4, 4))
    fn = lambda fs, b: jra.multi_scale_roi_align(fs, b, 2, SCALES, 2)
    got = jax.jit(jax.vmap(fn, (0, None)))(batch, boxes)
    want = jnp.stack([fn([f[i] for f in batch], boxes) for i in range(3)])
    np.testing.assert_array_equal(got, want)
    g = jax.vmap(jax.grad(lambda fs: jnp.sum(fn(fs, boxes) ** 2)))(batch)
    for i in range(3):
        want_g = jax.grad(lambda fs: jnp.sum(fn(fs, boxes) ** 2))([f[i] for f in batch])
        for a, b in zip(g, want_g):
            np.testing.assert_allclose(a[i], b, rtol=1e-12, atol=1e-12)


def test_an_empty_level_pools_zeros():
    rng = np.random.default_rng(7)
    features = pyramid(rng)
    features[2] = jnp.zeros((2, 3, 0, 5))
    rows = spread_boxes(rng, 12)
    levels = jra.level_of(rows, SCALES)
    out = jra.multi_scale_roi_align(features, rows, 2, SCALES, 2)
    np.testing.assert_array_equal(out[np.asarray(levels) == 2], 0)
    ref = jra.reference.multi_scale_roi_align(features, rows, 2, SCALES, 2)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
