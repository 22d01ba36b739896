"""Bad data that only the run can see gives zeros and no gradient (docs/semantics.md);
bad arguments are errors at trace time that name the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roialign as jra
from cases import CASES, IDS, LAYOUTS, features
from jax_roialign._src import api as _api
from jax_roialign._src import lowering, primitives
from jax_roialign._src.operators import BY_NAME, KERNEL_OPS, OPERATORS

BAD_ROWS = [[-1, 1, 1, 3, 3], [2, 1, 1, 3, 3], [0.5, 1, 1, 3, 3], [np.nan, 1, 1, 3, 3],
            [1e20, 1, 1, 3, 3], [0, np.nan, 1, 3, 3], [0, 1, np.inf, 3, 3],
            [0, -np.inf, -np.inf, np.inf, np.inf], [1, 1, 1, np.nan, 3]]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_rois_give_zeros_and_no_gradient(case, layout):
    f = jnp.asarray(features(case, np.random.default_rng(14), (2, 2), layout, h=5, w=5) + 3)
    rois = jnp.asarray([[0, 1.0, 1.0, 3.0, 3.0]] + BAD_ROWS)
    fn = lambda x, r: case("kernel", x, r, (2, 2), 1.0, -1, True, layout)
    out = np.asarray(fn(f, rois))
    assert np.all(out[0] != 0)
    np.testing.assert_array_equal(out[1:], 0)
    gf, gr = jax.grad(lambda x, r: fn(x, r).sum(), argnums=(0, 1))(f, rois)
    np.testing.assert_array_equal(gf, jax.grad(lambda x: fn(x, rois[:1]).sum())(f))
    assert np.all(np.isfinite(gr))
    np.testing.assert_array_equal(gr[1:], 0)


def test_validate_rois_flags_the_bad_rows():
    rois = jnp.asarray([[0, 1.0, 1.0, 3.0, 3.0]] + BAD_ROWS)
    np.testing.assert_array_equal(jra.validate_rois(rois, 2), [False] + [True] * len(BAD_ROWS))
    boxes = jnp.asarray([[[1.0, 1.0, 3.0, 3.0], [0.0, np.inf, 1.0, 1.0]]])
    np.testing.assert_array_equal(jra.validate_rois(boxes, 1), [[False, True]])


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_empty_maps_give_zeros(case, shape):
    f = jnp.ones((1, case.channels(2, (2, 2))) + shape)
    rois = jnp.asarray([[0, 0.0, 0.0, 3.0, 3.0]])
    fn = lambda x, r: jnp.sum(case("kernel", x, r, (2, 2)))
    out, (gf, gr) = jax.value_and_grad(fn, argnums=(0, 1))(f, rois)
    assert case("kernel", f, rois, (2, 2)).shape[-2:] == (2, 2)
    assert out == 0 and gf.shape == f.shape and np.all(gr == 0)


@pytest.mark.parametrize("call, error, match", [
    (lambda: jra.roi_align(np.zeros((2, 3, 4)), np.zeros((1, 5)), 2), ValueError,
     r"roi_align: features must have rank 4 \(N, C, H, W\).*got shape \(2, 3, 4\)"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4), np.int32), np.zeros((1, 5)), 2), TypeError,
     "features must be float16, bfloat16, float32 or float64, got int32"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), np.zeros((1, 4)), 2), ValueError,
     r"rois must be \(K, 5\).*got shape \(1, 4\); \(K, 4\) boxes lack the batch index: "
     r"for boxes of one image prepend a column of zeros.*or pass them per image as \(N, R, 4\)"),
    (lambda: jra.roi_align(np.zeros((2, 3, 4, 4)), np.zeros((3, 1, 4)), 2), ValueError,
     r"must have N = 2.*got shape \(3, 1, 4\)"),
    (lambda: jra.roi_align(np.zeros((2, 3, 4, 4)), [np.zeros((1, 4))], 2), ValueError,
     r"one \(R_n, 4\) array per image \(2\), got 1"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), [np.zeros((1, 5))], 2), ValueError,
     r"rois\[0\] must have shape \(R_n, 4\) \[x1, y1, x2, y2\], got \(1, 5\)"),
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
     r"spatial_scale must be > 0 and finite in float32 \(at most 3.4e38\), got -0.5"),
    (lambda: jra.roi_align(np.zeros((1, 3, 4, 4)), np.zeros((1, 5)), 2, float("nan")), ValueError,
     "spatial_scale must be > 0 and finite"),
    (lambda: jra.ps_roi_align(np.zeros((1, 10, 4, 4)), np.zeros((1, 5)), 2), ValueError,
     r"ps_roi_align: features must have a channel count divisible by "
     r"output_size\[0\] \* output_size\[1\] = 4, got 10"),
    (lambda: jra.ps_roi_pool(np.zeros((1, 10, 4, 4)), np.zeros((1, 5)), 3), ValueError,
     r"ps_roi_pool: .* = 9, got 10 \(layout 'NCHW'\)$"),
    (lambda: jra.ps_roi_align(np.zeros((1, 6, 5, 18)), np.zeros((1, 5)), 3), ValueError,
     r"= 9, got 6 \(layout 'NCHW'\); the features look like NHWC \(axis 3 has 18 channels\): "
     r"pass layout='NHWC'"),
    (lambda: jra.legacy.roi_align(np.zeros((1, 10, 4, 4)), np.zeros((1, 5)), 1, 1.0), ValueError,
     r"legacy.roi_align: output_size must be >= 2, got 1"),
    (lambda: jra.roi_pool(np.zeros((1, 10, 4, 4)), np.zeros((1, 5)), 2, layout="HWC"), ValueError,
     "roi_pool: layout must be one of"),
])
def test_trace_time_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_legacy_average_layers_take_output_size_1():
    assert jra.legacy.roi_align_avg(np.zeros((1, 10, 4, 4)), np.zeros((1, 5)), 1,
                                    1.0).shape == (1, 10, 1, 1)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_forms_check_arguments_as_the_functions_do(case):
    """jax_roialign.reference.<op> rejects what jax_roialign.<op> rejects (it shares the
    function's signature and checks)."""
    f = np.zeros((1, case.channels(1, (2, 2)), 4, 4))
    first = ([f], np.zeros((1, 5)), 2, (1.0,)) if case.levels else (f, np.zeros((1, 5)), 2, 1.0)
    with pytest.raises(TypeError):
        case.ref(*first, 2, True, 5, 6)
    with pytest.raises(ValueError, match="layout"):
        case.ref(*first, layout="HWC")


@pytest.mark.parametrize("case", [c for c in CASES if c.mode == "max"],
                         ids=[c.id for c in CASES if c.mode == "max"])
def test_max_modes_skip_nan_features(case):
    """A NaN value never wins a max (as torchvision's and mmcv's comparisons `v > best`);
    a bin whose values are all NaN gives 0. The same rule on every path."""
    rng = np.random.default_rng(15)
    f = features(case, rng, (2, 2), "NCHW", h=6, w=7)
    f[rng.uniform(size=f.shape) < 0.3] = np.nan
    f[0, 0] = np.nan  # a whole plane: its bins are all NaN
    rois = np.asarray([[0, 0.5, 0.5, 5.5, 4.5], [1, 1.2, 0.3, 6.0, 5.8], [0, 2.0, 2.0, 3.0, 3.0]])
    got = np.asarray(case("kernel", f, rois, (2, 2), 1.0, 2, True))
    assert not np.any(np.isnan(got))
    np.testing.assert_allclose(got, case.loop(f, rois, (2, 2), 1.0, 2, True), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(case("reference", f, rois, (2, 2), 1.0, 2, True), got,
                               rtol=1e-12, atol=1e-12)
    g = jax.grad(lambda x: jnp.sum(case("kernel", x, rois, (2, 2), 1.0, 2, True)))(jnp.asarray(f))
    assert np.all(np.isfinite(g))


# (kernel operator, mode) where no function passes that mode to that kernel operator.
_REFUSED = sorted((op, mode) for op in KERNEL_OPS for mode in lowering.MODES
                  if mode not in {m for o in OPERATORS if o.kernel == op for m in o.modes})


@pytest.mark.parametrize("op, mode", _REFUSED, ids=[f"{op}-{mode}" for op, mode in _REFUSED])
def test_the_kernels_refuse_a_mode_their_operator_does_not_take(op, mode):
    """The FFI contract (cc/ffi_contract.h) is the kernels' last guard: a primitive bound
    with a mode no function of its operator passes is an error naming both, not a
    computation on a path no test covers."""
    params = dict(_api._params(BY_NAME[op], op, (2, 2), (1.0,), 2, False, None, "NCHW", None),
                  mode=mode)
    rois = jnp.asarray([[0.0, 1, 1, 3, 3] + [0.0] * (BY_NAME[op].box_coords - 4)], jnp.float32)
    features = jnp.ones((1, 4, 5, 5), jnp.float32)
    with pytest.raises(jax.errors.JaxRuntimeError,
                       match=f"jax_roialign: {op} does not take mode attribute "
                             f"{lowering.MODES[mode]} \\({mode}\\)"):
        jax.block_until_ready(primitives.forward_p.bind(
            rois, jnp.zeros((0,), jnp.int32), features, **params))
