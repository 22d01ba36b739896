"""What the FPN workload's rois must read, counted from their sample positions (no
timing): the bench's boxes (`python -m jax_roialign bench`, the same random draws),
every tap of every sample, the peers' geometry (torchvision's ps_roi_align: corners
scaled less 0.5, sizes at least 0.1; Detectron2's roi_align_rotated, aligned).

- ps_roi_align forward, NHWC: the 64-byte lines of the feature map its taps touch
  (each bin reads its 5 of the 245 channels, 196 bytes apart), and the time to read
  them once at a given rate: a floor no implementation can beat.
- roi_align against roi_align_rotated (the rotated_crop suite's boxes, turned by a
  random angle): distinct pixels per bin and per roi, samples in the map per bin.

benchmarks/README.md quotes both.
"""

import argparse

import numpy as np

from jax_roialign._cli.bench import channels_for
from jax_roialign._cli.workloads import WORKLOADS, proposals, rotated_from
from jax_roialign._src.operators import BY_NAME

LINE = 64  # bytes


def taps(y, x, height, width):
    """The four corners (rows, columns: (..., 4) int arrays) of bilinear samples at
    (y, x), and whether each sample is in the map (torchvision's and Detectron2's
    rule: outside [-1, H] x [-1, W] a sample reads nothing)."""
    inside = (y >= -1) & (y <= height) & (x >= -1) & (x <= width)

    def axis(v, extent):
        v = np.maximum(v, 0)
        low = np.minimum(v.astype(np.int64), extent - 1)
        return low, np.minimum(low + 1, extent - 1)

    yl, yh = axis(y, height)
    xl, xw = axis(x, width)
    rows = np.stack([yl, yl, yh, yh], -1)
    cols = np.stack([xl, xw, xl, xw], -1)
    return rows, cols, inside


def grid(start, size, bins, per_bin):
    """Sample offsets along one axis: (bins, per_bin) for each roi, from `start` (K,)."""
    b = size[:, None, None] / bins
    p = np.arange(bins)[None, :, None]
    i = np.arange(per_bin)[None, None, :]
    return start[:, None, None] + p * b + (i + 0.5) * b / per_bin


def ps_roi_align_lines(read_gbps, write_gbps):
    w = WORKLOADS["fpn"]
    n, _, h, wd = w.shape
    c = channels_for(BY_NAME["ps_roi_align"], w)
    rng = np.random.default_rng(0)  # the ops suite's draws (bench.ops_group)
    rng.normal(size=(n, c, h, wd))
    rois = proposals(rng, n, h, wd, w.scale, w.rois).astype(np.float64)
    P, g = w.size, w.sampling
    x0, y0 = rois[:, 1] * w.scale - 0.5, rois[:, 2] * w.scale - 0.5
    rw = np.maximum(rois[:, 3] * w.scale - 0.5 - x0, 0.1)
    rh = np.maximum(rois[:, 4] * w.scale - 0.5 - y0, 0.1)
    ys, xs = grid(y0, rh, P, g), grid(x0, rw, P, g)  # (K, P, g)
    # (K, PH, PW, g, g)
    y, x = np.broadcast_arrays(ys[:, :, None, :, None], xs[:, None, :, None, :])
    rows, cols, inside = taps(y, x, h, wd)
    image = rois[:, 0].astype(np.int64)[:, None, None, None, None, None]
    pixel = (image * h + rows) * wd + cols  # (K, PH, PW, g, g, 4)
    bin_ = (np.arange(P)[:, None] * P + np.arange(P)[None, :])[None, :, :, None, None, None]
    out_c = c // (P * P)
    lines = set()
    for k in range(out_c):  # input channel k * bins + bin (torchvision's order)
        byte = (pixel * c + k * P * P + bin_) * 4
        lines.update(np.unique((byte // LINE)[np.broadcast_to(inside[..., None], byte.shape)]))
    total = n * h * wd * c * 4 // LINE
    read = len(lines) * LINE
    written = w.rois * out_c * P * P * 4
    floor_ms = (read / read_gbps + written / write_gbps) / 1e6
    print(f"ps_roi_align, fpn NHWC ({n}, {h}, {wd}, {c}) float32, {w.rois} rois: "
          f"{len(lines)} of the map's {total} lines ({len(lines) / total:.1%}), "
          f"{read / 1e6:.1f} MB read + {written / 1e6:.2f} MB written = "
          f"{floor_ms:.2f} ms at {read_gbps} / {write_gbps} GB/s")


def rotated_against_align():
    w = WORKLOADS["fpn"]
    n, c, h, wd = w.shape
    rng = np.random.default_rng(0)  # the rotated_crop suite's draws (bench.rotated_crop_block)
    rng.normal(size=(n, c, h, wd))
    rows = proposals(rng, n, h, wd, w.scale, w.rois)
    turned = rotated_from(rng, rows).astype(np.float64)
    P, g = w.size, w.sampling
    cx, cy = turned[:, 1] * w.scale - 0.5, turned[:, 2] * w.scale - 0.5
    rw, rh = turned[:, 3] * w.scale, turned[:, 4] * w.scale
    yy, xx = grid(-rh / 2, rh, P, g), grid(-rw / 2, rw, P, g)  # box frame, (K, P, g)
    yy = yy[:, :, None, :, None]
    xx = xx[:, None, :, None, :]
    image = turned[:, 0].astype(np.int64)
    for name, angle in (("roi_align", np.zeros(len(turned))),
                        ("roi_align_rotated", np.deg2rad(turned[:, 5]))):
        cos = np.cos(angle)[:, None, None, None, None]
        sin = np.sin(angle)[:, None, None, None, None]
        y = yy * cos - xx * sin + cy[:, None, None, None, None]
        x = yy * sin + xx * cos + cx[:, None, None, None, None]
        r, col, inside = taps(y, x, h, wd)
        pixel = (image[:, None, None, None, None, None] * h + r) * wd + col
        per_bin = per_roi = 0
        for k in range(len(turned)):
            keep = np.broadcast_to(inside[k][..., None], pixel[k].shape)
            for ph in range(P):
                for pw in range(P):
                    per_bin += len(np.unique(pixel[k, ph, pw][keep[ph, pw]]))
            per_roi += len(np.unique(pixel[k][keep]))
        bins = len(turned) * P * P
        print(f"{name}: {per_bin / bins:.2f} distinct pixels per bin, "
              f"{inside.sum() / bins:.2f} samples in the map per bin, "
              f"{per_roi / len(turned):.0f} distinct pixels per roi")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--read-gbps", type=float, default=28.9,
                        help="read rate for the floor (the bench prints its measured one)")
    parser.add_argument("--write-gbps", type=float, default=15.1)
    args = parser.parse_args()
    ps_roi_align_lines(args.read_gbps, args.write_gbps)
    rotated_against_align()


if __name__ == "__main__":
    main()
