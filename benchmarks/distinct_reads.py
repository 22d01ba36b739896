"""What the bench's rois must read, counted from their sample positions (no timing): the
bench's boxes (`python -m jax_roialign bench`, the same random draws), every tap of every
sample or every cell of every window, the peers' geometry (torchvision's ps_roi_align:
corners scaled less 0.5, sizes at least 0.1; its ps_roi_pool: corners scaled and
rounded; Detectron2's roi_align_rotated, aligned).

- ps_roi_align and ps_roi_pool forward, any bench workload, NHWC or NCHW: the 64-byte
  lines of the feature map their reads touch (each bin reads only its own channels, in
  its own window: a part of the map, where the bench's floor counts all of it), and the
  time to read them once and write the output once at given rates: a floor no
  implementation can beat.
- roi_align against roi_align_rotated (the rotated_crop suite's boxes, turned by a
  random angle, the FPN level): distinct pixels per bin and per roi, samples in the map
  per bin.

    python benchmarks/distinct_reads.py --ops ps_roi_align,ps_roi_pool \\
        --workload fpn,c4,mask,head --layout NHWC,NCHW --read-gbps R --write-gbps W

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


def ps_pixels(op, w, rois, h, wd):
    """(pixel, bin, inside) of every read of the ps operator `op` on workload `w`: the
    pixel (image * h + row) * wd + column, its bin (ph * PW + pw), whether it counts,
    broadcastable together. ps_roi_align: the four taps of each of the bin's g x g
    samples (torchvision's geometry: corners scaled less 0.5, sizes at least 0.1);
    ps_roi_pool: every cell of the bin's window (corners scaled and rounded, sizes at
    least 1, windows floor / ceil and clipped to [0, H - 1] x [0, W - 1])."""
    P, g = w.size, w.sampling
    image = rois[:, 0].astype(np.int64)
    if op == "ps_roi_align":
        x0, y0 = rois[:, 1] * w.scale - 0.5, rois[:, 2] * w.scale - 0.5
        rw = np.maximum(rois[:, 3] * w.scale - 0.5 - x0, 0.1)
        rh = np.maximum(rois[:, 4] * w.scale - 0.5 - y0, 0.1)
        ys, xs = grid(y0, rh, P, g), grid(x0, rw, P, g)  # (K, P, g)
        # (K, PH, PW, g, g)
        y, x = np.broadcast_arrays(ys[:, :, None, :, None], xs[:, None, :, None, :])
        rows, cols, inside = taps(y, x, h, wd)
        pixel = (image[:, None, None, None, None, None] * h + rows) * wd + cols
        bin_ = (np.arange(P)[:, None] * P + np.arange(P)[None, :])[None, :, :, None, None, None]
        return pixel, bin_, np.broadcast_to(inside[..., None], pixel.shape)
    # In float32, as the kernels compute it (a bin edge at an integer decides a cell).
    f32 = np.float32
    scaled = rois[:, 1:].astype(f32) * f32(w.scale)
    x0, y0, x1, y1 = (np.sign(scaled) * np.floor(np.abs(scaled) + f32(0.5))).T
    size_h, size_w = np.maximum(y1 - y0, 1) / f32(P), np.maximum(x1 - x0, 1) / f32(P)
    span = int(np.ceil(max(size_h.max(), size_w.max()))) + 1  # the most cells a window spans
    p = np.arange(P, dtype=f32)[None, :]

    def window(start, size, extent):  # (K, P, span) cells and whether each is in the window
        lo = np.clip(np.floor(p * size[:, None]) + start[:, None], 0, extent)
        hi = np.clip(np.ceil((p + 1) * size[:, None]) + start[:, None], 0, extent)
        cell = lo[..., None] + np.arange(span)
        return cell.astype(np.int64), cell < hi[..., None]

    # Edges clip to the last row and column (cc/roi_pool.h): they are never read.
    rows, in_r = window(y0, size_h, h - 1)
    cols, in_c = window(x0, size_w, wd - 1)
    # (K, PH, PW, span, span)
    pixel = ((image[:, None, None, None, None] * h + rows[:, :, None, :, None]) * wd
             + cols[:, None, :, None, :])
    inside = in_r[:, :, None, :, None] & in_c[:, None, :, None, :]
    bin_ = (np.arange(P)[:, None] * P + np.arange(P)[None, :])[None, :, :, None, None]
    return pixel, bin_, inside


def ps_lines(op, name, layout, read_gbps, write_gbps):
    """The 64-byte lines of the map that `op`'s reads on workload `name` touch in
    `layout`, and the time to read them once and write the output once."""
    w = WORKLOADS[name]
    n, _, h, wd = w.shape
    c = channels_for(BY_NAME[op], w)
    rng = np.random.default_rng(0)  # the ops suite's draws (bench.ops_group)
    rng.normal(size=(n, c, h, wd))
    rois = proposals(rng, n, h, wd, w.scale, w.rois).astype(np.float64)
    pixel, bin_, inside = ps_pixels(op, w, rois, h, wd)
    P = w.size
    out_c = c // (P * P)
    lines = set()
    for k in range(out_c):  # input channel k * bins + bin (torchvision's order)
        channel = k * P * P + bin_
        if layout == "NHWC":
            byte = (pixel * c + channel) * 4
        else:  # NCHW: pixel = (image * h + row) * wd + column
            image, within = pixel // (h * wd), pixel % (h * wd)
            byte = ((image * c + channel) * (h * wd) + within) * 4
        byte = np.broadcast_to(byte, np.broadcast_shapes(byte.shape, inside.shape))
        lines.update(np.unique((byte // LINE)[np.broadcast_to(inside, byte.shape)]))
    total = n * h * wd * c * 4 // LINE
    read = len(lines) * LINE
    written = w.rois * out_c * P * P * 4
    floor_ms = (read / read_gbps + written / write_gbps) / 1e6
    print(f"{op}, {name} {layout} ({n}, {c}, {h}, {wd}) float32, {w.rois} rois: "
          f"{len(lines)} of the map's {total} lines ({len(lines) / total:.1%}), "
          f"{read / 1e6:.2f} MB read + {written / 1e6:.2f} MB written = "
          f"{floor_ms:.3f} ms at {read_gbps} / {write_gbps} GB/s")


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
    parser.add_argument("--ops", default="ps_roi_align",
                        help="position-sensitive operators to count (ps_roi_align, ps_roi_pool)")
    parser.add_argument("--workload", default="fpn", help="bench workloads, comma-separated")
    parser.add_argument("--layout", default="NHWC", help="NHWC, NCHW or both, comma-separated")
    parser.add_argument("--no-rotated", action="store_true",
                        help="skip roi_align against roi_align_rotated")
    args = parser.parse_args()
    for op in args.ops.split(","):
        for name in args.workload.split(","):
            for layout in args.layout.split(","):
                ps_lines(op, name, layout, args.read_gbps, args.write_gbps)
    if not args.no_rotated:
        rotated_against_align()


if __name__ == "__main__":
    main()
