"""benchmarks/distinct_reads.py counts the cells the position-sensitive operators read, to
set the floor benchmarks/README.md quotes for them: its cells must be the kernels' own.
On the small head's geometry (two images, 49 channels, 48 rois): features left out of its count are poisoned
with NaN and the outputs must not change; ps_roi_pool's windows must average to its
output (every counted cell is read)."""

import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jax_roialign as jra
from jax_roialign._cli.workloads import WORKLOADS, proposals

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import distinct_reads  # noqa: E402

HEAD = WORKLOADS["head"]._replace(shape=(2, 49, 64, 64), rois=48)


def inputs():
    n, c, h, w = HEAD.shape
    rng = np.random.default_rng(3)
    f = rng.normal(size=(n, c, h, w)).astype(np.float32)
    # Some boxes past the map's edges, where the windows clip.
    rois = proposals(rng, n, h, w, HEAD.scale, HEAD.rois).astype(np.float32)
    rois[::7, 3:] += 120
    return f, rois


def counted(op, rois):
    """(channel, pixel) of every counted read, as a boolean (C, N * H * W) mask."""
    n, c, h, w = HEAD.shape
    pixel, bin_, inside = distinct_reads.ps_pixels(op, HEAD, rois.astype(np.float64), h, w)
    bins = HEAD.size ** 2
    mask = np.zeros((c, n * h * w), bool)
    for k in range(c // bins):
        channel = np.broadcast_to(k * bins + bin_, pixel.shape)
        mask[channel[inside], pixel[inside]] = True
    return mask


@pytest.mark.parametrize("op", ["ps_roi_align", "ps_roi_pool"])
def test_reads_outside_the_count_change_nothing(op):
    f, rois = inputs()
    n, c, h, w = f.shape
    fn = getattr(jra, op)
    args = dict(output_size=HEAD.size, spatial_scale=HEAD.scale)
    if op == "ps_roi_align":
        args["sampling_ratio"] = HEAD.sampling
    want = np.asarray(fn(jnp.asarray(f), jnp.asarray(rois), **args))
    poisoned = f.transpose(1, 0, 2, 3).reshape(c, -1).copy()
    mask = counted(op, rois)
    assert 0.01 < mask.mean() < 0.5  # some of the map counted, much left out
    poisoned[~mask] = np.nan
    poisoned = poisoned.reshape(c, n, h, w).transpose(1, 0, 2, 3)
    got = np.asarray(fn(jnp.asarray(poisoned), jnp.asarray(rois), **args))
    np.testing.assert_array_equal(got, want)


def test_ps_roi_pool_windows_average_to_its_output():
    f, rois = inputs()
    n, c, h, w = f.shape
    pixel, bin_, inside = distinct_reads.ps_pixels("ps_roi_pool", HEAD,
                                                   rois.astype(np.float64), h, w)
    flat = f.transpose(1, 0, 2, 3).reshape(c, -1)
    channel = np.broadcast_to(bin_, pixel.shape)  # output channel 0 of the one there is
    cells = inside.sum(axis=(-1, -2))
    sums = np.where(inside, flat[channel, np.clip(pixel, 0, flat.shape[1] - 1)], 0)
    mean = sums.sum(axis=(-1, -2)) / np.maximum(cells, 1)
    got = np.asarray(jra.ps_roi_pool(jnp.asarray(f), jnp.asarray(rois), HEAD.size, HEAD.scale))
    assert (cells == 0).any() and (cells > 1).any()
    # Summed here in another order than the kernels' (row by row): float32 rounding.
    np.testing.assert_allclose(mean, got[:, 0], rtol=0, atol=1e-5)
