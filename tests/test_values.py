"""Values of every operator case: the kernels against the float64 loop oracles, the
float32 emulation bit for bit, 16-bit dtypes, the rois forms, awkward maps and boxes, and
the pure-JAX path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cases import (CASES, IDS, LAYOUTS, ORDINARY, edge_rois, features, smooth_rois,
                   to_layout)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_16bit_rounds_the_float32_result_once(case, dtype, layout):
    """16-bit features are computed in float32 and rounded once: the output and the feature
    gradient are the float32 kernel's on the same (exactly widened) values, rounded to
    nearest even, bit for bit. 69 channels: whole register blocks of 32, whose conversions
    are vectorised (F16C for float16 in the AVX2 and AVX-512 builds), and a remainder
    converted one by one; 9 bins: NCHW's 16-bit tiles of outputs and of the features'
    copy transposed 8 x 8, and a remainder."""
    rng = np.random.default_rng(13)
    f = jnp.asarray(features(case, rng, (3, 3), layout, c_out=69, h=8, w=8), dtype)
    rois = jnp.asarray(edge_rois(2, 8, 8, 1.0, rng)[ORDINARY], jnp.float32)

    def run(x):
        out, vjp = jax.vjp(lambda y: case("kernel", y, rois, (3, 3), 1.0, 2, True, layout), x)
        ct = jnp.asarray(np.random.default_rng(14).normal(size=out.shape), dtype)
        return out, vjp(ct.astype(x.dtype))[0]

    out, grad = run(f)
    out32, grad32 = run(f.astype(jnp.float32))
    assert out.dtype == dtype and grad.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out.astype(jnp.float32)),
                                  np.asarray(out32.astype(dtype).astype(jnp.float32)))
    np.testing.assert_array_equal(np.asarray(grad.astype(jnp.float32)),
                                  np.asarray(grad32.astype(dtype).astype(jnp.float32)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", [(2, 3), (3, 3)])
def test_matches_loop_oracle(case, spatial_scale, layout, size):
    rng = np.random.default_rng(hash((case.id, spatial_scale, layout, size)) % 2**32)
    f = features(case, rng, size, layout)
    rois = edge_rois(2, 7, 9, spatial_scale, rng)
    for sr in case.sampling_values():
        for aligned in case.aligned_values():
            np.testing.assert_allclose(
                case("kernel", f, rois, size, spatial_scale, sr, aligned, layout),
                case.loop(f, rois, size, spatial_scale, sr, aligned, layout),
                rtol=1e-12, atol=1e-12, err_msg=f"sampling_ratio {sr}, aligned {aligned}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1)])
def test_single_row_or_column_maps(case, shape):
    rng = np.random.default_rng(1)
    f = rng.normal(size=(1, case.channels(2, (2, 2))) + shape)
    rois = edge_rois(1, shape[0], shape[1], 1.0, rng)
    for aligned in case.aligned_values():
        np.testing.assert_allclose(case("kernel", f, rois, (2, 2), aligned=aligned),
                                   case.loop(f, rois, (2, 2), aligned=aligned),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32_equals_float32_loop(case, layout):
    """float32 kernels do the oracle's float32 operations in its order (torchvision's, with
    no FMA), so they agree bit for bit, at window edges too."""
    rng = np.random.default_rng(3)
    f = features(case, rng, (2, 3), layout, h=5, w=6, dtype=np.float32)
    rois = edge_rois(2, 5, 6, 1.0, rng).astype(np.float32)
    for sr in ((-1, 2) if case.sampling else (-1,)):
        for aligned in case.aligned_values():
            got = case("kernel", f, rois, (2, 3), 1.0, sr, aligned, layout)
            want = case.loop(f, rois, (2, 3), 1.0, sr, aligned, layout, dtype=np.float32)
            if case.op_name.startswith("legacy"):
                # The original computed its weights as f*(1-hr)*(1-wr) left to right; we
                # (and the oracle's float32 emulation) form hy*hx first, as every other
                # operator: results may differ by an ulp of the accumulated terms.
                np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
            else:
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("c_out", [1, 3])
def test_few_output_channels_in_rows_of_bins(case, layout, c_out):
    """Few output channels (a position-sensitive operator's, or a map's): the CPU
    forward sums up to 8 bins of a row in step, a chain of adds per bin and channel
    (cc/cpu/kernels.h, few_channel_rows), each bin's samples in their order, so float32
    is still the float32 oracle's bits. Rows of 11 bins (a step of 8, then 3) whose
    windows differ in width (cells: x counts that differ within a step) and are empty
    (rois outside and of zero size), on a map of 23 columns."""
    rng = np.random.default_rng(31)
    size = (3, 11)
    f = features(case, rng, size, layout, c_out=c_out, h=9, w=23, dtype=np.float32)
    rois = edge_rois(2, 9, 23, 1.0, rng).astype(np.float32)
    for sr in ((-1, 2) if case.sampling else (-1,)):
        for aligned in case.aligned_values():
            got = case("kernel", f, rois, size, 1.0, sr, aligned, layout)
            want = case.loop(f, rois, size, 1.0, sr, aligned, layout, dtype=np.float32)
            if case.op_name.startswith("legacy"):  # see test_float32_equals_float32_loop
                np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
            else:
                np.testing.assert_array_equal(got, want)


# Every case that pools in max mode: by its configuration, or its operator's only mode.
MAX_CASES = [c for c in CASES if c.config.get("mode") == "max" or c.op.modes == ("max",)]


@pytest.mark.parametrize("case", MAX_CASES, ids=[c.id for c in MAX_CASES])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_mode_in_every_register_block(case, layout):
    """Max mode's forward takes its channels in register blocks (cc/cpu/channel_loops.h):
    in the AVX-512 build 64 float32 channels at a time (kWideBlock), then 32 (kBlock),
    then the rest one by one; bins of more samples than a chunk (64) through memory, the
    others in registers. 229 output channels (3 x 64 + 32 + 5) on a 24 x 30 map in 2 x 2
    bins (up to 180 cells a bin) and small ones: each channel's winner is the float32
    oracle's (its first largest sample), with winners recorded (a differentiated
    forward) or not, in both layouts (NCHW: the channel-last copy, many rois on the
    map)."""
    rng = np.random.default_rng(37)
    size = (2, 2)
    f = features(case, rng, size, layout, c_out=229, h=24, w=30, dtype=np.float32)
    rois = edge_rois(2, 24, 30, 1.0, rng, count=12).astype(np.float32)
    for sr in ((-1, 2) if case.sampling else (-1,)):
        for aligned in case.aligned_values():
            want = case.loop(f, rois, size, 1.0, sr, aligned, layout, dtype=np.float32)
            got = case("kernel", f, rois, size, 1.0, sr, aligned, layout)
            recorded, _ = jax.vjp(
                lambda x, sr=sr, aligned=aligned: case("kernel", x, rois, size, 1.0, sr,
                                                       aligned, layout), jnp.asarray(f))
            if case.op_name.startswith("legacy"):  # see test_float32_equals_float32_loop
                np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
                np.testing.assert_allclose(recorded, want, rtol=2e-6, atol=2e-6)
            else:
                np.testing.assert_array_equal(got, want)
                np.testing.assert_array_equal(recorded, want)


# (7, 7) outputs of 69 channels (whole register blocks and a remainder) fit the CPU
# kernels' per-roi tile (cc/cpu/kernels.h, kTileBytes: 256 KiB); (32, 32) ones fit it 64
# channels at a time (tile_channels), then 5; (48, 48) ones not even one register block
# of 32 channels. Position-sensitive operators would need 69 x 1024 input channels for
# the larger sizes, so they take the small size only.
LAYOUT_SIZES = [(c, size) for c in CASES for size in ((7, 7), (32, 32), (48, 48))
                if size == (7, 7) or c.channels(1, size) == 1]


@pytest.mark.parametrize("case,size", LAYOUT_SIZES,
                         ids=[f"{c.id}-{s[0]}" for c, s in LAYOUT_SIZES])
@pytest.mark.parametrize("map_shape", [(20, 25), (32, 32)])
def test_layouts_agree_bit_for_bit(case, size, map_shape):
    """float32 NCHW and NHWC outputs and feature gradients are the same bits. The CPU
    kernels write NCHW outputs of a roi through a channel-last tile (transposed out) where
    it fits, in channel ranges that fit where the whole does not, and straight to the
    output where not even one register block fits; NHWC outputs always straight. The
    feature gradient reads NCHW cotangents through the same tiles. NCHW features are copied
    channel-last 32 planes at a time in runs of 32 pixels: 69 channels leave a short last
    group, 20 x 25 pixels a run of 20, and 32 x 32 maps' planes are a power of two apart."""
    rng = np.random.default_rng(12)
    h, w = map_shape
    f = features(case, rng, size, "NCHW", n=2, c_out=69, h=h, w=w, dtype=np.float32)
    rois = edge_rois(2, h, w, 0.5, rng).astype(np.float32)

    def run(x, layout, ct=None):
        out, vjp = jax.vjp(lambda y: case("kernel", y, rois, size, 0.5, 2, True, layout), x)
        if ct is None:  # NCHW's, the same values in NHWC
            ct = np.random.default_rng(3).normal(size=out.shape).astype(np.float32)
        given = ct if layout == "NCHW" else np.moveaxis(ct, 1, -1)
        return np.asarray(out), np.asarray(vjp(jnp.asarray(given))[0]), ct

    out_nchw, grad_nchw, ct = run(jnp.asarray(f), "NCHW")
    out_nhwc, grad_nhwc, _ = run(jnp.asarray(to_layout(f, "NHWC")), "NHWC", ct)
    np.testing.assert_array_equal(out_nchw, np.moveaxis(out_nhwc, -1, 1))
    np.testing.assert_array_equal(grad_nchw, np.moveaxis(grad_nhwc, -1, 1))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_images_without_rois_among_copied_images(case):
    """NCHW features whose channel-last copy pays (many rois on small maps, 40 output
    channels: cc/cpu/call_paths.h, packing_pays) are copied one image at a time, only
    the images that have rois, the rois visited image by image and the invalid ones
    (zeros) first; the feature gradient is summed in such a copy (float32 NCHW, 16-bit in
    both layouts) image by image, a roiless image's zeroed. With an image of no rois
    between others and invalid rows among the valid: NHWC's bits (never copied) in
    float32, the pure-JAX path's values in float64, float32's bits rounded in float16, and
    zeros in the roiless image's gradient."""
    rng = np.random.default_rng(31)
    size, n, empty = (2, 3), 4, 2
    # Features and cotangents exact in float16, so that every dtype sees the same values.
    f = features(case, rng, size, "NCHW", n=n, c_out=40, h=6, w=7).astype(np.float16)
    rows = edge_rois(n, 6, 7, 1.0, rng, count=30)[ORDINARY]
    rows = np.insert(rows[rows[:, 0] != empty], [3, 9], [[-1, 1, 1, 4, 4], [7, 0, 0, 5, 5]],
                     axis=0)

    def run(impl, x, layout, dtype):
        x = jnp.asarray(to_layout(x, layout), dtype)
        rois = jnp.asarray(rows, jnp.float64 if dtype == jnp.float64 else jnp.float32)
        out, vjp = jax.vjp(lambda y: case(impl, y, rois, size, 1.0, 2, True, layout), x)
        nchw = out.shape if layout == "NCHW" else (len(rows), out.shape[3]) + out.shape[1:3]
        ct = np.random.default_rng(3).normal(size=nchw).astype(np.float16)
        grad = vjp(jnp.asarray(ct if layout == "NCHW" else np.moveaxis(ct, 1, -1), dtype))[0]
        if layout == "NHWC":
            out, grad = jnp.moveaxis(out, -1, 1), jnp.moveaxis(grad, -1, 1)
        return np.asarray(out.astype(jnp.float64)), np.asarray(grad.astype(jnp.float64))

    for got, want in zip(run("kernel", f, "NCHW", jnp.float64),
                         run("reference", f, "NCHW", jnp.float64)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    out, grad = run("kernel", f, "NCHW", jnp.float32)
    assert np.abs(grad[empty]).max() == 0 and np.abs(grad).max() > 0
    for got, want in zip((out, grad), run("kernel", f, "NHWC", jnp.float32)):
        np.testing.assert_array_equal(got, want)
    for layout in LAYOUTS:
        half = run("kernel", f, layout, jnp.float16)
        for got, want in zip(half, (out, grad)):
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float64))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_16bit_within_what_the_dtype_allows(case, dtype, layout):
    """Error vs the float64 result of the same (rounded) inputs is at most 2x that of the
    plain pure-JAX path in the same dtype (FlashAttention's rule), plus one rounding of
    the output, which either path pays."""
    rng = np.random.default_rng(4)
    f = jnp.asarray(features(case, rng, (3, 3), layout, h=8, w=8), dtype)
    rois = edge_rois(2, 8, 8, 1.0, rng)[ORDINARY]
    exact = case.loop(np.asarray(f.astype(jnp.float64)), rois, (3, 3), 1.0, 2, True, layout)
    got = case("kernel", f, rois, (3, 3), 1.0, 2, True, layout)
    plain = case("reference", f, rois, (3, 3), 1.0, 2, True, layout)
    assert got.dtype == dtype and plain.dtype == dtype
    plain_err = np.abs(np.asarray(plain.astype(jnp.float64)) - exact).max()
    ulp = float(jnp.finfo(dtype).eps) * np.abs(exact).max()
    assert np.abs(np.asarray(got.astype(jnp.float64)) - exact).max() <= 2 * plain_err + ulp


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("form", ["rows", "per_image", "list"])
def test_rois_forms_agree(case, form):
    rng = np.random.default_rng(1)
    f = features(case, rng, (2, 3), "NHWC", n=3, h=6, w=5)
    boxes = np.sort(rng.uniform(-1, 7, size=(3, 4, 2, 2)), axis=2).transpose(0, 1, 3, 2)
    boxes = boxes.reshape(3, 4, 4)  # (x1, y1, x2, y2) with x1 <= x2, y1 <= y2
    rows = np.concatenate([np.repeat(np.arange(3.0), 4)[:, None], boxes.reshape(12, 4)], 1)
    expected = case.loop(f, rows, (2, 3), 0.5, 2, True, "NHWC")
    run = lambda r: case("kernel", f, r, (2, 3), 0.5, 2, True, "NHWC")
    if form == "rows":
        got = run(rows)
    elif form == "per_image":
        got = run(boxes)
        assert got.shape[:2] == (3, 4)
        got = got.reshape((12,) + got.shape[2:])
    else:
        got = run([boxes[0], boxes[1][:0], boxes[2]])
        expected = expected[np.r_[0:4, 8:12]]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_output_shapes(case):
    c = case.channels(5, (2, 4))
    nchw = case("kernel", np.zeros((2, c, 8, 8)), np.zeros((3, 5)), (2, 4))
    nhwc = case("kernel", np.zeros((2, 8, 8, c)), np.zeros((2, 6, 4)), (2, 4), layout="NHWC")
    assert nchw.shape == (3, 5, 2, 4) and nhwc.shape == (2, 6, 2, 4, 5)
    if case.op.min_output == 1:
        c = case.channels(5, (4, 4))
        assert case("kernel", np.zeros((2, c, 8, 8)), np.zeros((3, 5)), 4).shape == (3, 5, 4, 4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_no_rois(case):
    f = np.ones((2, case.channels(3, (2, 2)), 4, 4))
    assert case("kernel", f, np.zeros((0, 5)), (2, 2)).shape == (0, 3, 2, 2)
    assert case("kernel", f, np.zeros((2, 0, 4)), (2, 2)).shape == (2, 0, 3, 2, 2)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_huge_boxes_finish_and_match(case):
    """Adaptive grids of ~1e8 samples per axis: only in-window samples are visited."""
    rng = np.random.default_rng(11)
    f = rng.normal(size=(1, case.channels(2, (2, 3)), 6, 7))
    rois = np.array([[0, -1e9, -1e9, 1e9, 1e9], [0, -1e9, 2.5, 3.5, 1e9], [0, 2, 2, 1e12, 3]])
    for sr in ((-1, 2) if case.sampling else (-1,)):
        np.testing.assert_allclose(case("kernel", f, rois, (2, 3), 1.0, sr, True),
                                   case.loop(f, rois, (2, 3), 1.0, sr, True),
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_path_equals_kernel(case, layout):
    """The pure-JAX path (taken where no kernel is compiled) computes the same function."""
    rng = np.random.default_rng(2)
    f = features(case, rng, (2, 2), layout)
    rows = edge_rois(2, 7, 9, 0.5, rng)[ORDINARY]
    boxes = smooth_rois(rng, 6, 7, 9, 0.5)[:, 1:].reshape(2, 3, 4)
    for r in (rows, boxes):
        for aligned in case.aligned_values():
            np.testing.assert_allclose(case("reference", f, r, (2, 2), 0.5, 2, aligned, layout),
                                       case("kernel", f, r, (2, 2), 0.5, 2, aligned, layout),
                                       rtol=1e-12, atol=1e-12)


def test_detectron2_ramp_golden_values():
    """Detectron2's test_roi_align: 5x5 ramp f[y, x] = 5y + x, box [1, 1, 3, 3]."""
    import jax_roialign as jra

    f = np.arange(25.0).reshape(1, 1, 5, 5)
    box = np.array([[0, 1.0, 1.0, 3.0, 3.0]])
    unaligned = np.asarray(jra.roi_align(f, box, 4, 1.0, -1, False))[0, 0]
    np.testing.assert_allclose(unaligned[0], [7.5, 8, 8.5, 9])
    aligned = np.asarray(jra.roi_align(f, box, 4, 1.0, -1, True))[0, 0]
    np.testing.assert_allclose(aligned[0], [4.5, 5, 5.5, 6])
    np.testing.assert_allclose(aligned[1], [7, 7.5, 8, 8.5])


def test_to_layout_is_a_transpose():
    f = np.arange(24.0).reshape(1, 2, 3, 4)
    assert to_layout(f, "NHWC").shape == (1, 3, 4, 2)
