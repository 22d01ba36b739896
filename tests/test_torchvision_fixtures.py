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
