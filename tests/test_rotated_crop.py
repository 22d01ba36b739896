"""roi_align_rotated and crop_and_resize against their peers themselves (Detectron2's and
mmcv's rotated kernels, TensorFlow's crop_and_resize: fixtures), their defining
properties, box and angle derivatives, and the bad-data rule. (Both are rows of
tests/cases.py too, so the generic value, gradient and transform tests cover them.)"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_roialign as jra
from loop_reference_rotated_crop import roi_align_rotated_numpy

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture_cases(name):
    data = np.load(os.path.join(FIXTURES, name), allow_pickle=False)
    for i in range(int(data["count"])):
        params = json.loads(str(data[f"{i}/params"]))
        arrays = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}
        yield pytest.param(params, arrays, id=f"{i}-{params['name']}")


# ----------------------------------------------------------------------------- rotated

@pytest.mark.parametrize("params, arrays", list(fixture_cases("peers_roi_align_rotated.npz")))
def test_rotated_matches_detectron2_and_mmcv_kernels(params, arrays):
    """float32, bit for bit: forward and feature gradient, in the peers' own conventions
    (Detectron2: degrees, always aligned; mmcv: radians, its aligned and clockwise)."""
    kw = dict(output_size=tuple(params["output_size"]), spatial_scale=params["spatial_scale"],
              sampling_ratio=params["sampling_ratio"], aligned=params["aligned"],
              clockwise=params["clockwise"], angle_unit=params["angle_unit"])
    rois = jnp.asarray(arrays["rois"])
    out, vjp = jax.vjp(lambda f: jra.roi_align_rotated(f, rois, **kw),
                       jnp.asarray(arrays["features"]))
    np.testing.assert_array_equal(out, arrays["output"])
    np.testing.assert_array_equal(vjp(jnp.asarray(arrays["grad_output"]))[0],
                                  arrays["grad_features"])


def test_rotated_at_angle_zero_is_roi_align_aligned():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 3, 11, 13))
    xyxy = np.array([[0, 2.3, 1.7, 9.8, 8.1], [1, -3.0, 4.2, 6.6, 15.0], [0, 5.5, 5.5, 6.0, 7.5]])
    rotated = np.stack([xyxy[:, 0], (xyxy[:, 1] + xyxy[:, 3]) / 2, (xyxy[:, 2] + xyxy[:, 4]) / 2,
                        xyxy[:, 3] - xyxy[:, 1], xyxy[:, 4] - xyxy[:, 2], np.zeros(3)], 1)
    for sr in (-1, 2):
        np.testing.assert_allclose(jra.roi_align_rotated(f, rotated, (3, 4), 1.0, sr),
                                   jra.roi_align(f, xyxy, (3, 4), 1.0, sr, True),
                                   rtol=1e-12, atol=1e-12)


def test_rotated_by_180_degrees_flips_both_axes():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(1, 2, 12, 12))
    rois = np.array([[0, 5.7, 6.2, 6.0, 4.5, 20.0], [0, 4.1, 7.3, 3.3, 7.9, -65.0]])
    turned = rois.copy()
    turned[:, 5] += 180.0
    a = jra.roi_align_rotated(f, rois, (3, 4), 1.0, 2)
    b = jra.roi_align_rotated(f, turned, (3, 4), 1.0, 2)
    np.testing.assert_allclose(b, a[:, :, ::-1, ::-1], rtol=1e-10, atol=1e-10)


def test_mmcv_conventions_against_their_formulas():
    """clockwise negates the angle; radians are the angle itself; aligned=False has no
    half-pixel offset and a size clamped to at least 1."""
    rng = np.random.default_rng(2)
    f = rng.normal(size=(1, 2, 10, 12))
    rois = np.array([[0, 5.2, 4.7, 6.3, 3.1, 0.4], [0, 3.3, 6.1, 0.4, 0.7, -1.1]])
    mirrored = rois.copy()
    mirrored[:, 5] = -rois[:, 5]
    for aligned in (False, True):
        kw = dict(output_size=(2, 3), spatial_scale=1.0, sampling_ratio=2, aligned=aligned)
        got = jra.roi_align_rotated(f, rois, angle_unit="radians", clockwise=True, **kw)
        np.testing.assert_array_equal(
            got, jra.roi_align_rotated(f, mirrored, angle_unit="radians", **kw))
        want = roi_align_rotated_numpy(f, mirrored, 2, 3, 1.0, 2, aligned, True, "NCHW")
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    degrees = rois.copy()
    degrees[:, 5] = np.degrees(rois[:, 5])
    np.testing.assert_allclose(jra.roi_align_rotated(f, rois, 2, angle_unit="radians"),
                               jra.roi_align_rotated(f, degrees, 2), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_rotated_box_and_angle_gradients_by_central_differences(aligned, layout):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(1, 2, 14, 16))
    f = jnp.asarray(f if layout == "NCHW" else f.transpose(0, 2, 3, 1))
    boxes = jnp.asarray([[[6.13, 7.27, 5.31, 4.17, 23.3], [8.41, 6.73, 7.07, 5.53, -131.9],
                          [5.29, 8.83, 2.61, 6.37, 77.7]]])
    fn = lambda b: jra.roi_align_rotated(f, b, (2, 3), 1.0, 2, aligned, layout=layout)
    check_grads(fn, (boxes,), order=1, modes=("fwd", "rev"), eps=1e-6)
    g = jax.grad(lambda b: jnp.sum(fn(b) ** 2))(boxes)
    assert np.all(g[..., 4] != 0)  # the angle has a derivative
    ref = jax.grad(lambda b: jnp.sum(jra.reference.roi_align_rotated(
        f, b, (2, 3), 1.0, 2, aligned, layout=layout) ** 2))(boxes)
    np.testing.assert_allclose(g, ref, rtol=1e-9, atol=1e-9)


def test_rotated_bad_data_gives_zeros_and_no_gradient():
    f = jnp.ones((2, 2, 8, 8))
    rows = jnp.asarray([[0, 4.0, 4.0, 3.0, 2.0, 30.0], [0, 4.0, 4.0, 3.0, 2.0, np.nan],
                        [0, 4.0, 4.0, 3.0, 2.0, np.inf], [0, 4.0, 4.0, -3.0, 2.0, 10.0],
                        [2, 4.0, 4.0, 3.0, 2.0, 10.0], [0, np.nan, 4.0, 3.0, 2.0, 0.0]])
    out = jra.roi_align_rotated(f, rows, 2)
    assert np.all(out[0] != 0)
    np.testing.assert_array_equal(out[1:], 0)  # (a negative size with aligned: the peers raise)
    g = jax.grad(lambda r: jnp.sum(jra.roi_align_rotated(f, r, 2)))(rows)
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[1:], 0)
    # unaligned (mmcv's legacy mode) clamps a negative size to 1: not bad data
    assert np.all(jra.roi_align_rotated(f, rows[3:4], 2, aligned=False) != 0)


# ----------------------------------------------------------------------------- crop

@pytest.mark.parametrize("params, arrays", list(fixture_cases("tensorflow_crop_and_resize.npz")))
def test_crop_and_resize_matches_tensorflow(params, arrays):
    """float32: crops and the image gradient bit for bit (TensorFlow's lerps, its
    operation order, one thread); the box gradient to float32 rounding: TensorFlow
    recomputes the sample positions for it in another order ((y2 - y1) * ((H - 1) / (CH
    - 1)) instead of ((y2 - y1) * (H - 1)) / (CH - 1), an ulp apart in about one sample in
    ten) and accumulates in float32, we differentiate our own positions and sum in
    double. A float64 image: TensorFlow computes in float32, we in float64."""
    image = jnp.asarray(arrays["image"])
    boxes = jnp.asarray(arrays["boxes"], image.dtype)
    kw = dict(crop_size=tuple(params["crop_size"]), method=params["method"],
              extrapolation_value=params["extrapolation_value"])
    idx = jnp.asarray(arrays["box_indices"])
    crops, vjp = jax.vjp(lambda im, b: jra.crop_and_resize(im, b, idx, **kw), image, boxes)
    grad_image, grad_boxes = vjp(jnp.asarray(arrays["grad_output"], image.dtype))
    if params["dtype"] == "float32":
        np.testing.assert_array_equal(crops, arrays["crops"])
        np.testing.assert_array_equal(grad_image, arrays["grad_image"])
    else:  # TensorFlow's float32 arithmetic on a float64 image
        np.testing.assert_allclose(crops, arrays["crops"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grad_image, arrays["grad_image"], rtol=1e-5, atol=1e-5)
    if params["method"] == "nearest":
        # The true derivative of nearest sampling is 0; TensorFlow returns the bilinear one.
        np.testing.assert_array_equal(grad_boxes, 0)
    else:
        scale = np.abs(arrays["grad_boxes"]).max()
        np.testing.assert_allclose(grad_boxes, arrays["grad_boxes"], rtol=2e-4,
                                   atol=2e-5 * scale)


def test_crop_and_resize_per_image_boxes_equal_box_indices():
    rng = np.random.default_rng(4)
    image = rng.normal(size=(2, 7, 9, 3))
    boxes = rng.uniform(-0.2, 1.2, (2, 3, 4))
    rows = jra.crop_and_resize(image, boxes.reshape(6, 4), np.repeat([0, 1], 3), (3, 2))
    per_image = jra.crop_and_resize(image, boxes, None, (3, 2))
    assert per_image.shape == (2, 3, 3, 2, 3)
    np.testing.assert_array_equal(per_image.reshape(rows.shape), rows)
    nchw = jra.crop_and_resize(image.transpose(0, 3, 1, 2), boxes, None, (3, 2), layout="NCHW")
    np.testing.assert_array_equal(nchw.transpose(0, 1, 3, 4, 2), per_image)


def test_crop_and_resize_bad_data_and_errors():
    image = jnp.ones((2, 5, 5, 1))
    boxes = jnp.asarray([[0.1, 0.1, 0.9, 0.9]] * 4 + [[0.1, np.nan, 0.9, 0.9]])
    idx = jnp.asarray([0, 1, 2, -1, 0])
    out = jra.crop_and_resize(image, boxes, idx, 2, extrapolation_value=7.0)
    np.testing.assert_array_equal(out[:2], 1)
    np.testing.assert_array_equal(out[2:], 0)  # out-of-range index, non-finite box: zeros
    g = jax.grad(lambda b: jnp.sum(jra.crop_and_resize(image, b, idx, 2)))(boxes)
    np.testing.assert_array_equal(g[2:], 0)
    with pytest.raises(ValueError, match="need box_indices"):
        jra.crop_and_resize(image, boxes, None, 2)
    with pytest.raises(ValueError, match="one image index per box"):
        jra.crop_and_resize(image, boxes, idx[:2], 2)
    with pytest.raises(TypeError, match="box_indices must be integers"):
        jra.crop_and_resize(image, boxes, jnp.zeros(5), 2)
    with pytest.raises(ValueError, match="method must be one of"):
        jra.crop_and_resize(image, boxes, idx, 2, method="bicubic")
    with pytest.raises(ValueError, match="crop_size must be >= 1"):
        jra.crop_and_resize(image, boxes, idx, (0, 2))
