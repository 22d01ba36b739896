"""Forward outputs of at least 32 MiB take the CPU kernels' large-output path (and NCHW
feature gradients of 16 MiB or more their streamed copy back: the last test): their
buffers are advised for huge pages and their register blocks are written with streaming
stores (cc/cpu/channel_loops.h, kStreamBytes), and max mode's winners too where the
forward records them; 16-bit outputs as half vectors. No test elsewhere reaches that
size, so this one pools rows once in a call over the threshold and again in calls under
it, and requires the same bits, in every instruction set's build this CPU runs (the
baseline build streams with SSE2 stores, the AVX2 build with AVX stores, the AVX-512
build with AVX-512 stores)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roialign as jra
from cpu_builds import BELOW, run_capped

STREAM_BYTES = 32 << 20  # cc/cpu/channel_loops.h, kStreamBytes
STREAM_GRADIENT_BYTES = 16 << 20  # cc/cpu/channel_loops.h, kStreamGradientBytes


def roi_align_rows(dtype, layout="NHWC", channels=256):
    """roi_align whose (K, 7, 7, channels) output is just over the threshold. In NCHW
    each roi's channel-last tile is transposed and streamed out 16 channels at a time
    (250 channels: the last group has 10); the NHWC output (written straight) must have
    its bits."""
    rng = np.random.default_rng(0)
    item = np.dtype(dtype).itemsize
    k = STREAM_BYTES // (7 * 7 * channels * item) + 3
    f = jnp.asarray(rng.normal(size=(2, 24, 30, channels)), dtype)
    lo = rng.uniform(-4, 80, size=(k, 2))
    size = rng.uniform(1, 60, size=(k, 2))
    rois = np.concatenate([rng.integers(0, 2, size=(k, 1)), lo, lo + size], 1)
    rois = jnp.asarray(rois, jnp.float64 if dtype == "float64" else jnp.float32)

    def pool(r):
        return jra.roi_align(f, r, (7, 7), 0.25, 2, True, layout="NHWC")

    def pool_nchw(r):
        out = jra.roi_align(jnp.moveaxis(f, -1, 1), r, (7, 7), 0.25, 2, True, layout="NCHW")
        return jnp.moveaxis(out, 1, -1)
    return (pool if layout == "NHWC" else pool_nchw), rois, k * 49 * channels * item


def roi_pool_rows(layout="NHWC", tangent=False, dtype="float32"):
    """roi_pool (max mode) whose (K, 7, 7, 256) output is just over the threshold: the
    outputs streamed from registers (NHWC) or from each roi's tile (NCHW). With
    `tangent`, the JVP's tangent output: the forward then records its winners (as large,
    streamed the same way), and the tangent is the feature tangent at each one."""
    rng = np.random.default_rng(2)
    item = np.dtype(dtype).itemsize
    k = STREAM_BYTES // (7 * 7 * 256 * item) + 3
    f = jnp.asarray(rng.normal(size=(2, 24, 30, 256)), dtype)
    df = jnp.asarray(rng.normal(size=f.shape), dtype)
    lo = rng.uniform(-4, 80, size=(k, 2))
    rois = np.concatenate([rng.integers(0, 2, size=(k, 1)), lo, lo + rng.uniform(1, 60, (k, 2))],
                          1)
    rois = jnp.asarray(rois, jnp.float32)
    moved = (lambda a: a) if layout == "NHWC" else (lambda a: jnp.moveaxis(a, -1, 1))

    def pool(r):
        def fn(x):
            return jra.roi_pool(x, r, (7, 7), 0.25, layout=layout)
        out = jax.jvp(fn, (moved(f),), (moved(df),))[1] if tangent else fn(moved(f))
        return out if layout == "NHWC" else jnp.moveaxis(out, 1, -1)
    return pool, rois, k * 49 * 256 * item


def crop_rows():
    """crop_and_resize whose (K, 14, 14, 256) float32 output is just over the threshold."""
    rng = np.random.default_rng(1)
    k = STREAM_BYTES // (14 * 14 * 256 * 4) + 3
    image = jnp.asarray(rng.normal(size=(2, 24, 30, 256)), jnp.float32)
    lo = rng.uniform(-0.1, 0.9, size=(k, 2))
    boxes = jnp.asarray(np.concatenate([lo, lo + rng.uniform(0.01, 0.5, size=(k, 2))], 1),
                        jnp.float32)
    index = jnp.asarray(rng.integers(0, 2, size=k), jnp.int32)

    def pool(rows):
        return jra.crop_and_resize(image, boxes[rows], index[rows], (14, 14))
    return pool, np.arange(k), k * 196 * 256 * 4


CASES = {"roi_align float32": lambda: roi_align_rows("float32"),
         "roi_align float64": lambda: roi_align_rows("float64"),
         "roi_align float32 NCHW": lambda: roi_align_rows("float32", "NCHW"),
         "roi_align float32 250 channels": lambda: roi_align_rows("float32", channels=250),
         "roi_align float32 250 channels NCHW":
             lambda: roi_align_rows("float32", "NCHW", channels=250),
         # 16-bit outputs: rounded in registers, stored (streamed) as half vectors.
         "roi_align float16": lambda: roi_align_rows("float16"),
         "roi_align bfloat16": lambda: roi_align_rows("bfloat16"),
         "roi_pool bfloat16": lambda: roi_pool_rows(dtype="bfloat16"),
         "crop_and_resize float32": crop_rows,
         "roi_pool float32": roi_pool_rows,
         "roi_pool float32 NCHW": lambda: roi_pool_rows("NCHW"),
         "roi_pool tangent float32": lambda: roi_pool_rows(tangent=True),
         "roi_pool tangent float32 NCHW": lambda: roi_pool_rows("NCHW", tangent=True)}


def check(name):
    pool, rows, out_bytes = CASES[name]()
    assert out_bytes >= STREAM_BYTES
    whole = np.asarray(pool(rows))
    half = len(rows) // 2  # each half's output is under the threshold
    parts = np.concatenate([np.asarray(pool(rows[:half])), np.asarray(pool(rows[half:]))])
    assert whole.shape == parts.shape
    np.testing.assert_array_equal(whole, parts, err_msg=name)
    assert np.isfinite(whole).all() and np.abs(whole).max() > 0, name
    if name.endswith("NCHW"):
        nhwc = np.asarray(CASES[name.removesuffix(" NCHW")]()[0](rows))
        np.testing.assert_array_equal(whole, nhwc, err_msg=name)


@pytest.mark.parametrize("name", list(CASES))
def test_large_output_has_the_bits_of_small_ones(name):
    check(name)


@pytest.mark.parametrize("isa", BELOW)
def test_large_output_has_the_bits_of_small_ones_in_the_other_builds(isa):
    run_capped(isa, "import test_large_outputs as t\nfor name in t.CASES: t.check(name)\n",
               timeout=600)


def feature_gradient(op, f, ct, rois, layout="NCHW"):
    def fn(v):
        if op == "roi_pool":
            return jra.roi_pool(v, rois, (7, 7), 0.25, layout=layout)
        return jra.roi_align(v, rois, (7, 7), 0.25, 2, True, layout=layout)
    return np.asarray(jax.vjp(fn, jnp.asarray(f))[1](jnp.asarray(ct))[0])


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_large_nchw_gradient_has_the_bits_of_small_ones(op):
    """An NCHW feature gradient of 16 MiB or more is summed in a channel-last copy, then
    written back to its planes with streaming stores (the AVX-512 build's 16 x 16
    tiles; cc/cpu/channel_loops.h, from_channel_last): it must have the bits of each
    quarter of its channels' gradient (under the threshold, written back plainly) and
    of the NHWC gradient."""
    rng = np.random.default_rng(3)
    f = rng.normal(size=(2, 256, 128, 136)).astype(np.float32)
    assert f.nbytes >= STREAM_GRADIENT_BYTES and f[:, :64].nbytes < STREAM_GRADIENT_BYTES
    k = 64
    lo = rng.uniform(-4, 500, size=(k, 2))
    rois = jnp.asarray(np.concatenate(
        [rng.integers(0, 2, size=(k, 1)), lo, lo + rng.uniform(1, 200, (k, 2))], 1), jnp.float32)
    ct = rng.normal(size=(k, 256, 7, 7)).astype(np.float32)
    whole = feature_gradient(op, f, ct, rois)
    quarters = [feature_gradient(op, f[:, c:c + 64], ct[:, c:c + 64], rois)
                for c in range(0, 256, 64)]
    np.testing.assert_array_equal(whole, np.concatenate(quarters, 1))
    nhwc = feature_gradient(op, f.transpose(0, 2, 3, 1), ct.transpose(0, 2, 3, 1), rois, "NHWC")
    np.testing.assert_array_equal(whole, nhwc.transpose(0, 3, 1, 2))
    assert np.count_nonzero(whole) > whole.size // 100  # roi_pool: a cell per bin and channel
