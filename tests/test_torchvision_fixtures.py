"""Against torchvision itself: fixtures written by tests/fixtures/make_torchvision_fixtures.py
(torch 2.14.1 / torchvision 0.29.1, CPU), checked here without torchvision."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roialign as jra

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def cases(op):
    data = np.load(os.path.join(FIXTURES, f"torchvision_{op}.npz"), allow_pickle=False)
    for i in range(int(data["count"])):
        params = json.loads(str(data[f"{i}/params"]))
        arrays = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}
        yield pytest.param(params, arrays, id=f"{i}-{params['name']}")


@pytest.mark.parametrize("params, arrays", list(cases("roi_align")))
def test_roi_align_matches_torchvision(params, arrays):
    """float64 to rounding; float32 bit for bit (same operations, same order, no
    FMA), including cases where torchvision's float32 and float64 differ by a
    whole sample (samples exactly on a window edge)."""
    kw = dict(output_size=tuple(params["output_size"]), spatial_scale=params["spatial_scale"],
              sampling_ratio=params["sampling_ratio"], aligned=params["aligned"])
    f = jnp.asarray(arrays["features"])
    rois = jnp.asarray(arrays["rois"])
    out, vjp = jax.vjp(lambda x: jra.roi_align(x, rois, **kw), f)
    (grad,) = vjp(jnp.asarray(arrays["grad_output"]))
    if params["dtype"] == "float32":
        np.testing.assert_array_equal(out, arrays["output"])
        # Backward: torchvision scatters g*w/count per roi in roi order, as we do.
        np.testing.assert_array_equal(grad, arrays["grad_features"])
    else:
        np.testing.assert_allclose(out, arrays["output"], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(grad, arrays["grad_features"], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("params, arrays", list(cases("roi_align"))[:20])
def test_roi_align_nhwc_matches_torchvision(params, arrays):
    kw = dict(output_size=tuple(params["output_size"]), spatial_scale=params["spatial_scale"],
              sampling_ratio=params["sampling_ratio"], aligned=params["aligned"])
    f = np.transpose(arrays["features"], (0, 2, 3, 1))
    out = jra.roi_align(f, arrays["rois"], layout="NHWC", **kw)
    np.testing.assert_allclose(out, np.transpose(arrays["output"], (0, 2, 3, 1)), rtol=1e-13,
                               atol=1e-13)


def _kwargs(params, *names):
    kw = {n: params[n] for n in names if n in params}
    kw["output_size"] = tuple(params["output_size"])
    return kw


@pytest.mark.parametrize("params, arrays", list(cases("roi_pool")))
def test_roi_pool_matches_torchvision(params, arrays):
    """Bin edges are computed in floating point, as torchvision does (cases flagged
    float_bin_edge differ from integer arithmetic)."""
    kw = _kwargs(params, "spatial_scale")
    f = jnp.asarray(arrays["features"])
    out, vjp = jax.vjp(lambda x: jra.roi_pool(x, jnp.asarray(arrays["rois"]), **kw), f)
    (grad,) = vjp(jnp.asarray(arrays["grad_output"]))
    np.testing.assert_array_equal(out, arrays["output"])
    np.testing.assert_array_equal(grad, arrays["grad_features"])


@pytest.mark.parametrize("params, arrays", list(cases("ps_roi_align")))
def test_ps_roi_align_matches_torchvision(params, arrays):
    """torchvision gives NaN for an empty sampling grid; docs/semantics.md gives 0."""
    kw = _kwargs(params, "spatial_scale", "sampling_ratio")
    f = jnp.asarray(arrays["features"])
    out, vjp = jax.vjp(lambda x: jra.ps_roi_align(x, jnp.asarray(arrays["rois"]), **kw), f)
    (grad,) = vjp(jnp.asarray(arrays["grad_output"]))
    expected = np.nan_to_num(arrays["output"], nan=0.0)
    if params["dtype"] == "float32":
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(grad, arrays["grad_features"])
    else:
        np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(grad, arrays["grad_features"], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("params, arrays", list(cases("ps_roi_pool")))
def test_ps_roi_pool_matches_torchvision(params, arrays):
    """Forward as torchvision; the gradient is the exact transpose of that forward
    (`grad_features_transpose`), which torchvision's own backward is not."""
    kw = _kwargs(params, "spatial_scale")
    f = jnp.asarray(arrays["features"])
    out, vjp = jax.vjp(lambda x: jra.ps_roi_pool(x, jnp.asarray(arrays["rois"]), **kw), f)
    (grad,) = vjp(jnp.asarray(arrays["grad_output"]))
    np.testing.assert_array_equal(out, arrays["output"])
    np.testing.assert_allclose(grad, arrays["grad_features_transpose"], rtol=1e-13, atol=1e-13)
