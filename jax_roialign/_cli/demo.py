"""`python -m jax_roialign demo`: what RoIAlign fixes, seen, then learned.

1. What each operator pools (no optional dependency). A scene drawn here, three objects
   each inside the box a detector proposed for it, is average-pooled at stride 8, as a
   backbone's feature map sees it (one cell = 8x8 pixels). Each box is pooled to 7x7
   with roi_pool (Fast R-CNN), legacy.roi_align (faster-rcnn.pytorch) and roi_align
   (aligned=True), and compared with the ideal crop: the box's own pixels averaged over
   each of its 7x7 bins. RoIPool rounds the box to whole cells, then each bin to whole
   cells, and takes each bin's maximum. To tell the rounding from the maximum, a fourth
   column averages RoIPool's own bins (computed here with numpy from its bin edges):
   its error is the rounding alone.

2. Does it matter for learning? (needs Flax and optax). Four small detection heads,
   identical but for their pooling layer (RoIPool; RoIAlign with mode="max", which
   differs from RoIPool only by not rounding; RoIAlign; RoIAlign over a two-level
   feature pyramid through multi_scale_roi_align, the smaller boxes pooled from the
   stride-4 map), start from the same weights and learn on the same batches to name
   the shape in each box, through one backbone (strides 4 and 8). The loss and the
   held-out accuracy of each, step by step, are the picture's lower panel. One run,
   one seed (`--seed` for another).

The PNG goes to demo_output/roialign_demo.png by default (git-ignored). Pillow, when
installed, writes it with its text; without it a small PNG writer here does, without
text.
"""

from __future__ import annotations

import argparse
import inspect
import os
import struct
import textwrap
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np

import jax_roialign as jra

from .._src.api import FUNCTIONS
from .._src.installation import missing_kernels, path_taken
from .._src.operators import BY_NAME, OPERATORS
from .progress import Progress

# ----------------------------------------------------------------------------- the scene
#
# Shapes are implicit functions of continuous image coordinates (pixel k spans
# [k, k+1)), so the same scene renders at any resolution and over any window: the
# image the operators see, the 2x overview and the zoomed tiles, all exact.

HEIGHT, WIDTH, STRIDE, OUT = 192, 256, 8, 7

# The pooled boxes (x1, y1, x2, y2), each tight around one object, with corners that
# are deliberately not multiples of the stride, and far enough apart that each box's
# zoom window (the box plus ZOOM_MARGIN on every side, squared) shows no other object.
BOXES = np.array([[20.3, 18.7, 84.3, 82.7],       # a bullseye
                  [136.6, 21.2, 232.6, 77.2],     # a wide diamond
                  [98.4, 116.6, 158.1, 176.3]],   # colour bars
                 np.float32)
ZOOM_MARGIN = 14.0


def _scene(x, y):
    """RGB in [0, 1] at image coordinates x, y (arrays of one shape)."""
    t = np.clip(y / HEIGHT, 0, 1)[..., None]
    rgb = (1 - t) * np.array([0.09, 0.11, 0.22]) + t * np.array([0.05, 0.22, 0.27])
    rgb = np.broadcast_to(rgb, np.broadcast(x, y).shape + (3,))

    def paint(mask, color):
        nonlocal rgb
        rgb = np.where(mask[..., None], np.asarray(color, np.float64), rgb)

    x1, y1, x2, y2 = BOXES[0]
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    d = np.hypot(x - cx, y - cy)
    ring = (np.floor(d / (r / 4)) % 2 == 0)
    paint((d <= r) & ring, [1.0, 0.84, 0.2])
    paint((d <= r) & ~ring, [0.78, 0.12, 0.22])

    x1, y1, x2, y2 = BOXES[1]
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    paint(np.abs(x - cx) / rx + np.abs(y - cy) / ry <= 1, [0.88, 0.32, 0.8])
    paint(np.hypot(x - cx, y - cy) <= 7, [1.0, 1.0, 1.0])

    x1, y1, x2, y2 = BOXES[2]
    bars = np.array([[0.35, 0.6, 1.0], [1.0, 1.0, 1.0], [1.0, 0.55, 0.15], [0.35, 0.6, 1.0]])
    which = np.clip(np.floor((x - x1) / (x2 - x1) * 4), 0, 3).astype(int)
    inside = (x >= x1) & (x < x2) & (y >= y1) & (y < y2)
    paint(inside, bars[which])
    paint(inside & (np.abs(y - (y1 + y2) / 2) <= 5), [0.1, 0.1, 0.12])
    return rgb


def render(window, height, width, supersample=4):
    """The scene over window (x1, y1, x2, y2) at height x width pixels, each the mean
    of supersample^2 point samples (so a pixel is its area average, edges antialiased)."""
    x1, y1, x2, y2 = window
    ys = y1 + (np.arange(height * supersample) + 0.5) * (y2 - y1) / (height * supersample)
    xs = x1 + (np.arange(width * supersample) + 0.5) * (x2 - x1) / (width * supersample)
    rgb = _scene(xs[None, :], ys[:, None])
    return rgb.reshape(height, supersample, width, supersample, 3).mean((1, 3)).astype(np.float32)


def zoom_window(box):
    """The square window of a box's zoom tile: the box plus ZOOM_MARGIN on each side."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) / 2 + ZOOM_MARGIN
    return cx - half, cy - half, cx + half, cy + half


# ----------------------------------------------------------------------------- geometry
#
# What each operator samples, from docs/semantics.md's formulas, in float32 as the
# kernels compute it for float32 features.

def roipool_bins(a1, a2, cells):
    """RoIPool's bins along one axis, in feature cells: (starts, ends), bin p covering
    cells [starts[p], ends[p]). The box's corners are rounded to whole cells, then
    bin p covers [floor(p*bw), ceil((p+1)*bw)) of it, clipped to the map."""
    f32 = np.float32
    s = f32(1 / STRIDE)

    def c_round(v):  # C round(): half away from zero
        return np.floor(np.abs(v) + f32(0.5)) * np.sign(v)

    start, end = c_round(f32(a1) * s), c_round(f32(a2) * s)
    bw = f32(max(end - start + 1, 1)) / f32(OUT)
    p = np.arange(OUT, dtype=f32)
    starts = np.clip(np.floor(p * bw) + start, 0, cells).astype(int)
    ends = np.clip(np.ceil((p + 1) * bw) + start, 0, cells).astype(int)
    return starts, ends


def roipool_mean(feats, box):
    """RoIPool's 7x7 bins of `box` over `feats` (H, W, 3), each averaged instead of
    maxed (an empty bin gives 0, as RoIPool's does): the rounding without the maximum."""
    height, width = feats.shape[:2]
    (xs, xe), (ys, ye) = (roipool_bins(box[0], box[2], width),
                          roipool_bins(box[1], box[3], height))
    out = np.zeros((OUT, OUT, feats.shape[2]), np.float32)
    for i in range(OUT):
        for j in range(OUT):
            cell = feats[ys[i]:ye[i], xs[j]:xe[j]]
            if cell.size:
                out[i, j] = cell.mean((0, 1))
    return out


# ----------------------------------------------------------------------------- pooling

# The operators the picture compares, in the registry's `demo` order: (key, function,
# column title).
METHODS = tuple((op.name, FUNCTIONS[op.name], op.demo[1])
                for op in sorted((o for o in OPERATORS if o.demo), key=lambda o: o.demo[0]))
# The column computed here: RoIPool's bins, averaged. Shown right after RoIPool's.
POOL_MEAN = ("roi_pool_mean", "RoIPool, bins averaged")
# Column headers, two lines each: the method, then what sets it apart.
HEADERS = {"ideal": ("ideal", "the box's pixels"),
           "roi_pool": ("RoIPool", "rounded, max"),
           "roi_pool_mean": ("RoIPool", "rounded, averaged"),
           "legacy": ("legacy RoIAlign", "a shifted lattice"),
           "roi_align": ("RoIAlign", "exact, bilinear")}


def feature_map(image):
    """The scene as a backbone at stride 8 sees it: each cell the mean of its 8x8 pixels."""
    return image.reshape(HEIGHT // STRIDE, STRIDE, WIDTH // STRIDE, STRIDE, 3).mean((1, 3))


def pooled_crops(feats, layout, dtype):
    """{method: (K, OUT, OUT, 3) float32} from the (H, W, 3) feature map."""
    x = feats[None] if layout == "NHWC" else feats.transpose(2, 0, 1)[None]
    x = jnp.asarray(x, dtype)
    rows = np.concatenate([np.zeros((len(BOXES), 1), np.float32), BOXES], 1)
    config = dict(output_size=OUT, spatial_scale=1 / STRIDE, sampling_ratio=2, aligned=True,
                  layout=layout)
    crops = {}
    for key, fn, _ in METHODS:
        kwargs = {k: v for k, v in config.items() if k in inspect.signature(fn).parameters}
        out = np.asarray(fn(x, rows, **kwargs), np.float32)
        crops[key] = out if layout == "NHWC" else out.transpose(0, 2, 3, 1)
    # The same (dtype-rounded) features the operators saw, as (H, W, 3).
    seen = np.asarray(jnp.asarray(feats, dtype).astype(jnp.float32))
    crops[POOL_MEAN[0]] = np.stack([roipool_mean(seen, b) for b in BOXES])
    return crops


def columns():
    """(key, title) of the crop columns, left to right: RoIPool, its averaged bins, then
    the other registry methods."""
    out = []
    for key, _, title in METHODS:
        out.append((key, title))
        if key == "roi_pool":
            out.append(POOL_MEAN)
    return out


# ----------------------------------------------------------------------------- drawing

GREEN, RED, ORANGE, BLUE = (70, 235, 110), (255, 80, 80), (255, 170, 60), (90, 170, 255)
WHITE, LIGHT, GRID, PANEL = (240, 240, 245), (205, 208, 218), (150, 150, 160), (24, 26, 34)
# Each training head's colour, as its lines in the charts.
HEAD_COLORS = {"roi_pool": RED, "roi_align_max": ORANGE, "roi_align": GREEN,
               "roi_align_pyramid": BLUE}


class Canvas:
    """An RGB uint8 image plus text labels (drawn by Pillow when it is installed)."""

    def __init__(self, height, width):
        self.rgb = np.zeros((height, width, 3), np.uint8)
        self.rgb[:] = PANEL
        self.texts = []

    def paste(self, y, x, tile):
        h, w = tile.shape[:2]
        self.rgb[y:y + h, x:x + w] = np.clip(tile * 255 + 0.5, 0, 255).astype(np.uint8) \
            if tile.dtype != np.uint8 else tile

    def fill(self, y0, y1, x0, x1, color, alpha=1.0):
        y0, y1 = max(int(round(y0)), 0), min(int(round(y1)), self.rgb.shape[0])
        x0, x1 = max(int(round(x0)), 0), min(int(round(x1)), self.rgb.shape[1])
        if y1 > y0 and x1 > x0:
            region = self.rgb[y0:y1, x0:x1].astype(np.float32)
            self.rgb[y0:y1, x0:x1] = (region * (1 - alpha) + np.asarray(color) * alpha + 0.5) \
                .astype(np.uint8)

    def rect(self, y0, y1, x0, x1, color, width=2, alpha=1.0):
        self.fill(y0, y0 + width, x0, x1, color, alpha)
        self.fill(y1 - width, y1, x0, x1, color, alpha)
        self.fill(y0 + width, y1 - width, x0, x0 + width, color, alpha)
        self.fill(y0 + width, y1 - width, x1 - width, x1, color, alpha)

    def line(self, x0, y0, x1, y1, color, width=2):
        """A straight segment, as squares of side `width` every half pixel along it."""
        n = int(max(abs(x1 - x0), abs(y1 - y0)) * 2) + 1
        for t in np.linspace(0, 1, n + 1):
            x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
            self.fill(y - width / 2, y + width / 2, x - width / 2, x + width / 2, color)

    def text(self, y, x, words, color=WHITE, size=16):
        self.texts.append((x, y, words, color, size))


def zoom_tile(size, box):
    """The scene around `box` at size x size, with the feature cells (grey), RoIPool's
    rounded box and bins (red) and RoIAlign's exact box and bins (green) over it."""
    window = zoom_window(box)
    canvas = Canvas(size, size)
    canvas.paste(0, 0, render(window, size, size))
    wx1, wy1, wx2, wy2 = window
    to_x = lambda v: (v - wx1) * size / (wx2 - wx1)
    to_y = lambda v: (v - wy1) * size / (wy2 - wy1)
    for v in np.arange(np.ceil(wx1 / STRIDE), wx2 / STRIDE + 1) * STRIDE:
        canvas.fill(0, size, to_x(v), to_x(v) + 1, GRID, 0.3)
    for v in np.arange(np.ceil(wy1 / STRIDE), wy2 / STRIDE + 1) * STRIDE:
        canvas.fill(to_y(v), to_y(v) + 1, 0, size, GRID, 0.3)
    x1, y1, x2, y2 = box
    (xs, xe), (ys, ye) = (roipool_bins(x1, x2, WIDTH // STRIDE),
                          roipool_bins(y1, y2, HEIGHT // STRIDE))
    # Each box 3 pixels wide; its inner bin edges as ticks from its sides (full bin
    # lines of two overlapping grids hide the scene).
    grids = ((np.append(xs, xe[-1]) * STRIDE, np.append(ys, ye[-1]) * STRIDE, RED),
             (np.linspace(x1, x2, OUT + 1), np.linspace(y1, y2, OUT + 1), GREEN))
    tick = 9
    for ex, ey, color in grids:
        bx0, bx1, by0, by1 = to_x(ex[0]), to_x(ex[-1]), to_y(ey[0]), to_y(ey[-1])
        canvas.rect(by0 - 1.5, by1 + 1.5, bx0 - 1.5, bx1 + 1.5, color, 3)
        for v in ex[1:-1]:
            canvas.fill(by0, by0 + tick, to_x(v) - 1, to_x(v) + 1, color)
            canvas.fill(by1 - tick, by1, to_x(v) - 1, to_x(v) + 1, color)
        for v in ey[1:-1]:
            canvas.fill(to_y(v) - 1, to_y(v) + 1, bx0, bx0 + tick, color)
            canvas.fill(to_y(v) - 1, to_y(v) + 1, bx1 - tick, bx1, color)
    return canvas.rgb


# Figure geometry, in PNG pixels.
MARGIN, ZOOM, ZT, CT, GAP = 40, 2, 216, 161, 14   # ZT: zoom tile, CT: crop tile (7 x 23)
ROW = ZT + 34


def draw_overview(canvas, top, left):
    """The scene at ZOOM x, with the feature cells, each box (green) and the box RoIPool
    actually pools (red), then the legend and how to read the crops. Returns the y
    below the text."""
    height, width = HEIGHT * ZOOM, WIDTH * ZOOM
    canvas.paste(top, left, render((0, 0, WIDTH, HEIGHT), height, width))
    for v in range(0, WIDTH + 1, STRIDE):
        canvas.fill(top, top + height, left + v * ZOOM, left + v * ZOOM + 1, GRID, 0.25)
    for v in range(0, HEIGHT + 1, STRIDE):
        canvas.fill(top + v * ZOOM, top + v * ZOOM + 1, left, left + width, GRID, 0.25)
    for i, (x1, y1, x2, y2) in enumerate(BOXES):
        (xs, xe), (ys, ye) = (roipool_bins(x1, x2, WIDTH // STRIDE),
                              roipool_bins(y1, y2, HEIGHT // STRIDE))
        canvas.rect(top + ys[0] * STRIDE * ZOOM, top + ye[-1] * STRIDE * ZOOM,
                    left + xs[0] * STRIDE * ZOOM, left + xe[-1] * STRIDE * ZOOM, RED)
        canvas.rect(top + y1 * ZOOM, top + y2 * ZOOM, left + x1 * ZOOM, left + x2 * ZOOM, GREEN)
        canvas.text(top + y1 * ZOOM + 4, left + x1 * ZOOM + 6, str(i + 1), GREEN, 18)
    legend = [(GREEN, "the box the detector asks for; RoIAlign pools exactly it"),
              (RED, "what RoIPool pools: the box rounded to whole cells"),
              (GRID, f"the feature map's cells ({STRIDE} x {STRIDE} pixels each)")]
    y = top + height + 18
    for color, words in legend:
        canvas.fill(y + 5, y + 15, left, left + 22, color)
        canvas.text(y, left + 32, words, LIGHT)
        y += 26
    y += 12
    points = (
        f"A detector's second stage resamples each box to {OUT} x {OUT} from the feature "
        f"map. Right, per box:",
        f"ideal: the box's own pixels, averaged over {OUT} x {OUT} bins.",
        "RoIPool rounds the box to whole cells, then each bin, and keeps each bin's "
        "maximum: its crops are shifted and washed out.",
        "RoIPool, averaged: the same bins, averaged (computed here): no wash-out, the "
        "shift of the rounding remains.",
        "legacy RoIAlign (faster-rcnn.pytorch): one point per cell, on a lattice half a "
        "cell off.",
        "RoIAlign: bilinear samples of the box itself, as sharp as an 8-pixel map allows.",
        "error: mean |crop - ideal| (RGB in [0, 1]); lower is better.")
    for i, point in enumerate(points):
        for j, words in enumerate(textwrap.wrap(point, 62)):
            canvas.text(y, left + (0 if i == 0 or j == 0 else 14),
                        ("" if i == 0 or j else "- ") + words, LIGHT, 15)
            y += 21
        y += 4
    return y


def draw_rows(canvas, top, left, ideal, crops, errors):
    """One row per box: the zoomed box, the ideal crop, then each method's crop,
    upscaled (nearest) so that every output cell is a visible square."""
    cols = columns()
    x_of = lambda c: left + ZT + GAP + c * (CT + GAP)
    canvas.text(top - 50, left, "the box, zoomed")
    canvas.text(top - 27, left, "green: exact; red: rounded", LIGHT, 15)
    for c, (key, title) in enumerate([("ideal", "ideal")] + cols):
        name, how = HEADERS.get(key, (title, ""))
        canvas.text(top - 50, x_of(c), name, GREEN if key == "roi_align" else WHITE)
        canvas.text(top - 27, x_of(c), how, LIGHT, 15)
    for i, box in enumerate(BOXES):
        y = top + i * ROW
        canvas.paste(y, left, zoom_tile(ZT, box))
        canvas.text(y + 6, left + 8, str(i + 1), GREEN, 18)
        for c, key in enumerate(["ideal"] + [k for k, _ in cols]):
            x = x_of(c)
            crop = ideal if key == "ideal" else crops[key]
            cell = CT // OUT
            canvas.paste(y, x, np.repeat(np.repeat(np.clip(crop[i], 0, 1), cell, 0), cell, 1))
            if key != "ideal":
                canvas.text(y + CT + 5, x, f"error {errors[key][i]:.3f}",
                            GREEN if key == "roi_align" else LIGHT, 15)


def draw_chart(canvas, top, left, height, width, title, series, y_range, y_format, x_max):
    """A line chart: series = [(color, steps, values)], axes with a few labelled ticks."""
    canvas.text(top - 30, left, title)
    y0, y1 = y_range
    to_x = lambda s: left + s / max(x_max, 1) * width
    to_y = lambda v: top + height - (v - y0) / (y1 - y0) * height
    for v in np.linspace(y0, y1, 5):
        canvas.fill(to_y(v), to_y(v) + 1, left, left + width, GRID, 0.35)
        canvas.text(to_y(v) - 9, left - 56, y_format(v), LIGHT, 14)
    for s in np.linspace(0, x_max, 6):
        canvas.fill(top + height, top + height + 5, to_x(s), to_x(s) + 1, GRID)
        canvas.text(top + height + 8, to_x(s) - 10, f"{int(round(s))}", LIGHT, 14)
    canvas.text(top + height + 28, left + width / 2 - 40, "training step", LIGHT, 14)
    canvas.fill(top + height, top + height + 1, left, left + width, GRID)
    canvas.fill(top, top + height, left, left + 1, GRID)
    for color, steps, values in series:
        pts = [(to_x(s), to_y(min(max(v, y0), y1))) for s, v in zip(steps, values)]
        for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
            canvas.line(xa, ya, xb, yb, color, 2)


def draw_training(canvas, top, left, training):
    """The lower panel: the heads' loss and held-out accuracy per step, and what
    they show; or why there is no training."""
    canvas.text(top, left, "2.  Does it matter for learning?", size=22)
    if training is None:
        canvas.text(top + 40, left, "Training skipped: it needs Flax and optax "
                    "(pip install jax_roialign[demo]).", LIGHT)
        return top + 70
    heads, steps = training["heads"], training["steps"]
    canvas.text(top + 34, left,
                f"{len(HEADS)} detection heads, identical but for the pooling layer, learn to "
                f"name the shape in each box ({len(CLASSES)} shapes of radius {R_MIN:g}-"
                f"{R_MAX:g} pixels, boxes off by up to {JITTER:g} pixels) through one backbone; "
                f"same initial weights, same batches.", LIGHT)
    canvas.text(top + 58, left,
                "RoIAlign (max) differs from RoIPool only by not rounding; RoIAlign from "
                "RoIAlign (max) only by averaging; the three pool from the backbone's "
                f"stride-{TRAIN_STRIDE} map.", LIGHT)
    canvas.text(top + 82, left,
                "RoIAlign, pyramid differs from RoIAlign only by pooling the boxes under "
                f"{PYRAMID_SPLIT:g} pixels (sqrt of the area) from the stride-"
                f"{PYRAMID_STRIDES[0]} map (multi_scale_roi_align).", LIGHT)
    ctop, cheight, cwidth = top + 154, 260, 500
    smooth = training["smooth"]
    draw_chart(canvas, ctop, left + 60, cheight, cwidth,
               f"training loss (mean of the last {smooth} steps)",
               [(HEAD_COLORS[k], np.arange(1, steps + 1), h["loss_smooth"]) for k, h in heads.items()],
               (0.0, float(np.ceil(max(max(h["loss_smooth"]) for h in heads.values())))),
               lambda v: f"{v:.1f}", steps)
    draw_chart(canvas, ctop, left + 60 + cwidth + 110, cheight, cwidth,
               f"held-out accuracy ({training['held_out']} boxes; chance "
               f"{1 / len(CLASSES):.0%})",
               [(HEAD_COLORS[k], h["eval_steps"], h["accuracy"]) for k, h in heads.items()],
               (0.0, 1.0), lambda v: f"{v:.0%}", steps)
    x = left + 60 + 2 * cwidth + 170
    y = ctop - 30
    canvas.text(y, x, f"held-out accuracy at the last step ({steps}):")
    y += 32
    for key, h in heads.items():
        canvas.fill(y + 6, y + 16, x, x + 22, HEAD_COLORS[key])
        canvas.text(y, x + 32, f"{h['title']}: {h['final']:.1%}", HEAD_COLORS[key], 18)
        y += 30
    y += 14
    canvas.text(y, x, f"first at {REACH:.0%} held-out accuracy:")
    y += 28
    for key, h in heads.items():
        reached = (f"step {h['reached']}" if h["reached"] is not None
                   else f"not within {steps} steps")
        canvas.text(y, x + 32, f"{h['title']}: {reached}", HEAD_COLORS[key], 16)
        y += 25
    y += 14
    for line in takeaways(heads, steps):
        for j, words in enumerate(textwrap.wrap(line, 50)):
            canvas.text(y, x + (14 if j else 0), words, LIGHT, 15)
            y += 21
        y += 6
    y += 8
    canvas.text(y, x, f"One run (seed {training['seed']}); another: --seed N.", LIGHT, 15)
    return max(ctop + cheight + 50, y + 30)


def picture(path, layout, dtype, training=None, pooled=None):
    """Pools the boxes (unless `pooled`, `crop_errors`'s result, is given), draws the
    figure (with the training panel from `train`'s result, or a note that training was
    skipped) and writes the PNG. Returns ({method: mean |crop - ideal| per box}, whether
    the PNG has its text labels)."""
    errors, ideal, crops = crop_errors(layout, dtype) if pooled is None else pooled
    rows_left = MARGIN + WIDTH * ZOOM + 40
    width = rows_left + ZT + GAP + (1 + len(columns())) * (CT + GAP) - GAP + MARGIN
    section1 = 110
    rows_top = section1 + 64
    # Drawn on a canvas taller than needed, cut below the training panel at the end.
    canvas = Canvas(3000, width)
    canvas.text(18, MARGIN, "RoIPool rounds, RoIAlign does not: what each pools, and what "
                "each learns", size=28)
    canvas.text(58, MARGIN, f"A scene (top left) and its feature map at stride {STRIDE}, as a "
                f"backbone sees it ({HEIGHT // STRIDE} x {WIDTH // STRIDE} cells); three boxes "
                f"pooled to {OUT} x {OUT} by each operator, then small detection heads trained "
                f"through them.", LIGHT)
    canvas.fill(section1 - 14, section1 - 13, MARGIN, width - MARGIN, GRID, 0.5)
    canvas.text(section1, MARGIN, "1.  What each operator pools", size=22)
    below_text = draw_overview(canvas, rows_top, MARGIN)
    draw_rows(canvas, rows_top, rows_left, ideal, crops, errors)
    section2 = int(max(below_text, rows_top + len(BOXES) * ROW)) + 30
    canvas.fill(section2 - 14, section2 - 13, MARGIN, width - MARGIN, GRID, 0.5)
    bottom = draw_training(canvas, section2, MARGIN, training)
    canvas.rgb = canvas.rgb[:bottom + 30]
    return errors, save_png(canvas, path)


def crop_errors(layout, dtype):
    """({method: mean |crop - ideal| per box}, the ideal crops, {method: crops})."""
    image = render((0, 0, WIDTH, HEIGHT), HEIGHT, WIDTH)
    crops = pooled_crops(feature_map(image), layout, dtype)
    # The ideal crop: the box's own pixels averaged over each of the OUT x OUT bins.
    ideal = np.stack([render(b, OUT, OUT, supersample=16) for b in BOXES])
    errors = {k: np.abs(c - ideal).mean((1, 2, 3)) for k, c in crops.items()}
    return errors, ideal, crops


# ----------------------------------------------------------------------------- PNG output

def write_png(path, rgb):
    """A minimal PNG writer (8-bit RGB, filter 0, one zlib stream): the core package
    must not depend on Pillow."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb, np.uint8))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def save_png(canvas, path):
    """Writes the canvas; returns whether the text labels are in it (Pillow draws them)."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        write_png(path, canvas.rgb)
        return False
    img = Image.fromarray(canvas.rgb)
    draw = ImageDraw.Draw(img)
    fonts = {}
    for x, y, words, color, size in canvas.texts:
        if size not in fonts:
            try:
                fonts[size] = ImageFont.load_default(size=size)  # Pillow >= 10.1
            except TypeError:
                fonts[size] = ImageFont.load_default()
        draw.text((x, y), words, fill=tuple(color), font=fonts[size])
    img.save(path)
    return True


# ----------------------------------------------------------------------------- training

CLASSES = ("disc", "square", "triangle", "ring", "cross", "diamond")
SHAPES = (  # inside(dx, dy, r): pixel offsets from the shape's centre, its radius
    lambda dx, dy, r: np.hypot(dx, dy) <= r,
    lambda dx, dy, r: np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * r,
    lambda dx, dy, r: (np.abs(dx) <= (dy + r) * 0.5) & (dy <= r),
    lambda dx, dy, r: (np.hypot(dx, dy) <= r) & (np.hypot(dx, dy) >= 0.5 * r),
    lambda dx, dy, r: (np.minimum(np.abs(dx), np.abs(dy)) <= 0.3 * r)
    & (np.maximum(np.abs(dx), np.abs(dy)) <= r),
    lambda dx, dy, r: np.abs(dx) + np.abs(dy) <= r,
)
IMAGE, PER_IMAGE, TRAIN_BATCH, EVAL_BATCH = 64, 4, 16, 128
# Small shapes under a coarse backbone: a feature cell (TRAIN_STRIDE pixels) is as large
# as a shape's radius, so where the pooling samples inside a cell matters.
R_MIN, R_MAX, JITTER, TRAIN_STRIDE = 3.0, 7.0, 2.5, 8
EVAL_EVERY, SMOOTH = 10, 10
REACH = 0.75  # the held-out accuracy whose first step measures how fast a head learns


def synthetic_batch(rng, num_images):
    """Images (N, 64, 64, 3) float32 with one shape per quadrant, their boxes (N, 4, 4)
    (off by up to JITTER pixels per coordinate, as proposals would be) and class labels
    (N, 4).

    Drawn with numpy on the host: a batch takes about a millisecond, while the same in
    jax.numpy inside the step cost seconds of compilation (the random number generators)."""
    shape = (num_images, PER_IMAGE)
    labels = rng.integers(0, len(CLASSES), shape)
    r = rng.uniform(R_MIN, R_MAX, shape)
    quadrant = np.array([[16.0, 16.0], [48.0, 16.0], [16.0, 48.0], [48.0, 48.0]])
    centre = quadrant + rng.uniform(-1.0, 1.0, (*shape, 2)) * (16.0 - r - 1.0)[..., None]
    pix = np.arange(IMAGE) + 0.5
    dx = pix[None, None, None, :] - centre[..., 0, None, None]   # (N, 4, 1, 64)
    dy = pix[None, None, :, None] - centre[..., 1, None, None]   # (N, 4, 64, 1)
    rr = r[..., None, None]
    mask = np.zeros((*shape, IMAGE, IMAGE), np.float32)
    for k, inside in enumerate(SHAPES):  # each object's mask drawn once, by its own class
        sel = labels == k
        mask[sel] = inside(dx[sel], dy[sel], rr[sel])
    colour = rng.uniform(0.35, 1.0, (*shape, 3))
    background = rng.uniform(0.0, 0.3, (num_images, 1, 1, 3))
    images = background + np.einsum("nrhw,nrc->nhwc", mask, colour - background[:, 0])
    images += rng.normal(0.0, 0.2, images.shape)
    boxes = np.concatenate([centre - r[..., None], centre + r[..., None]], -1)
    boxes += rng.uniform(-JITTER, JITTER, boxes.shape)
    return images.astype(np.float32), boxes.astype(np.float32), labels.astype(np.int32)


# The pyramid head's levels: the backbone's stride-4 and stride-8 maps. Boxes whose
# sqrt(area) is under PYRAMID_SPLIT pixels pool from the finer one: torchvision's
# LevelMapper with its canonical box (224 pixels at level 4, ImageNet's) scaled to
# these images (PYRAMID_SPLIT pixels at level 3, the stride-8 map).
PYRAMID_STRIDES, PYRAMID_SPLIT = (4, 8), 10.0
PYRAMID = dict(sampling_ratio=2, aligned=True, canonical_scale=PYRAMID_SPLIT,
               canonical_level=3)

# The heads compared: (key, operator, its configuration beyond output size and scales,
# title). RoIAlign max isolates the rounding: it shares RoIPool's maximum; the pyramid
# head differs from RoIAlign only by its levels.
HEADS = (("roi_pool", "roi_pool", {}, "RoIPool"),
         ("roi_align_max", "roi_align", dict(sampling_ratio=2, aligned=True, mode="max"),
          "RoIAlign (max)"),
         ("roi_align", "roi_align", dict(sampling_ratio=2, aligned=True), "RoIAlign"),
         ("roi_align_pyramid", "multi_scale_roi_align", PYRAMID, "RoIAlign, pyramid"))


def make_model(op_name, config, layout, dtype):
    """A Flax head pooling with the jax_roialign.flax module of `op_name`: linen, so that
    it runs on every Flax that jax_roialign.flax supports. Every head has the same
    backbone; a multi-level operator pools from its stride-4 and stride-8 maps, the others
    from the stride-8 map."""
    import flax.linen as nn

    from jax_roialign import flax as jf

    op = BY_NAME[op_name]
    scales = (tuple(1 / s for s in PYRAMID_STRIDES) if op.multi_level else 1 / TRAIN_STRIDE)
    pool = getattr(jf, op.module)(OUT, scales, layout=layout, **config)

    class Backbone(nn.Module):
        @nn.compact
        def __call__(self, x):                       # (N, 64, 64, 3) -> {stride: map}
            maps, stride = {}, 1
            for features, step in ((16, 1), (32, 2), (32, 2), (32, 2)):
                x = nn.relu(nn.Conv(features, (3, 3), strides=step, dtype=dtype)(x))
                stride *= step
                maps[stride] = x                     # (N, 64 / stride, 64 / stride, 32)
            return maps

    class Detector(nn.Module):
        @nn.compact
        def __call__(self, images, boxes):
            maps = Backbone(name="backbone")(images)
            if layout == "NCHW":                     # Flax convolutions are NHWC
                maps = {s: x.transpose(0, 3, 1, 2) for s, x in maps.items()}
            x = [maps[s] for s in PYRAMID_STRIDES] if op.multi_level else maps[TRAIN_STRIDE]
            pooled = pool(x, boxes)
            h = pooled.reshape(*pooled.shape[:2], -1)  # (N, R, 7*7*32)
            h = nn.relu(nn.Dense(64, dtype=dtype)(h))
            return nn.Dense(len(CLASSES), dtype=dtype)(h).astype(jnp.float32)

    return Detector()


def _head(model, tx, dtype, init_batch, seed):
    """(params, optimiser state, jitted train step, jitted accuracy) of one head."""
    import optax

    params = jax.jit(model.init)(jax.random.PRNGKey(seed), *init_batch)["params"]

    @jax.jit
    def train_step(params, opt_state, images, boxes, labels):
        def loss_fn(p):
            logits = model.apply({"params": p}, images.astype(dtype), boxes)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        # The backbone sits before the pooling: its gradient crossed the operator.
        return (optax.apply_updates(params, updates), opt_state, loss,
                optax.global_norm(grads["backbone"]))

    @jax.jit
    def accuracy(params, images, boxes, labels):
        logits = model.apply({"params": params}, images.astype(dtype), boxes)
        return jnp.mean(jnp.argmax(logits, -1) == labels)

    return params, tx.init(params), train_step, accuracy


def takeaways(heads, steps):
    """What the curves show about rounding and about the maximum, in sentences computed
    from them: the later head against the earlier one in `HEADS`."""
    lines = []
    for (a, b, what) in (("roi_pool", "roi_align_max", "Not rounding"),
                         ("roi_align_max", "roi_align", "Averaging instead of the max"),
                         ("roi_align", "roi_align_pyramid",
                          f"The stride-{PYRAMID_STRIDES[0]} level for the smaller boxes")):
        ha, hb = heads[a], heads[b]
        if ha["reached"] is not None and hb["reached"] is not None:
            d = ha["reached"] - hb["reached"]
            when = (f"{REACH:.0%} {abs(d)} steps {'sooner' if d > 0 else 'later'}" if d
                    else f"{REACH:.0%} at the same step")
        else:
            when = f"{REACH:.0%} " + ("reached only with it" if hb["reached"] is not None else
                                      "not reached with it" if ha["reached"] is not None else
                                      "reached by neither")
        lines.append(f"{what} ({hb['title']} against {ha['title']}): {when}; "
                     f"{(hb['final'] - ha['final']) * 100:+.1f} points at step {steps}.")
    return lines


def first_reached(eval_steps, accuracy, level):
    """The first evaluated step whose held-out accuracy is at least `level`, or None."""
    return next((s for s, a in zip(eval_steps, accuracy) if a >= level), None)


def train(steps, layout, dtype, log, seed=0, quiet=False):
    """Trains the HEADS for `steps` steps each on the same batches from the same initial
    weights; returns their curves and summary, or None without Flax or optax."""
    try:
        import optax

        models = {key: make_model(op, config, layout, dtype) for key, op, config, _ in HEADS}
    except ImportError as e:
        log(f"training skipped: it needs Flax and optax ({e.name} is missing): "
            "pip install jax_roialign[demo]")
        return None
    tx = optax.adam(3e-3)
    rng = np.random.default_rng(seed)
    held_out = synthetic_batch(np.random.default_rng(12345), EVAL_BATCH)
    state = {key: list(_head(models[key], tx, dtype, held_out[:2], seed)) for key in models}
    n_params = sum(p.size for p in jax.tree.leaves(state["roi_align"][0]))
    log(f"training {len(HEADS)} jit-compiled Flax heads, identical but for the pooling "
        f"({', '.join(t for *_, t in HEADS)}): convs (strides {PYRAMID_STRIDES[0]} and "
        f"{TRAIN_STRIDE}; the pyramid pools boxes under {PYRAMID_SPLIT:g} pixels from stride "
        f"{PYRAMID_STRIDES[0]}, the others all from stride {TRAIN_STRIDE}) -> pooling 7x7 "
        f"({layout}, {jnp.dtype(dtype).name}) -> MLP, {n_params:,} parameters each; a step: "
        f"{TRAIN_BATCH} fresh images {IMAGE}x{IMAGE} with {PER_IMAGE} boxes each, the same "
        f"for every head; name one of {len(CLASSES)} shapes per box (chance "
        f"{1 / len(CLASSES):.1%}); held out: {EVAL_BATCH * PER_IMAGE} boxes")
    curves = {key: dict(loss=[], eval_steps=[], accuracy=[]) for key in models}

    def evaluate(step):
        for key in models:
            curves[key]["eval_steps"].append(step)
            curves[key]["accuracy"].append(float(state[key][3](state[key][0], *held_out)))

    checkpoints = set(np.linspace(0, steps, 11).astype(int)[1:])
    start = time.perf_counter()
    with Progress(steps * len(HEADS), "training", quiet, unit="head-step") as progress:
        evaluate(0)
        for step in range(1, steps + 1):
            batch = synthetic_batch(rng, TRAIN_BATCH)
            for key in models:
                params, opt_state, train_step, _ = state[key]
                params, opt_state, loss, backbone_grad = train_step(params, opt_state, *batch)
                state[key][:2] = params, opt_state
                curves[key]["loss"].append(float(loss))
                curves[key]["backbone_grad"] = backbone_grad
                progress.advance()
            if step % EVAL_EVERY == 0 or step == steps or step in checkpoints:
                evaluate(step)
            if step in checkpoints:
                progress.log(f"  step {step:>4}/{steps}  held-out accuracy  " + "  ".join(
                    f"{title} {curves[key]['accuracy'][-1]:6.1%}" for key, *_, title in HEADS))
    total = time.perf_counter() - start
    heads = {}
    for key, _, _, title in HEADS:
        c = curves[key]
        best = int(np.argmax(c["accuracy"]))
        loss = np.asarray(c["loss"])
        smooth = np.convolve(loss, np.ones(SMOOTH), "full")[:len(loss)] / np.minimum(
            np.arange(1, len(loss) + 1), SMOOTH)
        heads[key] = dict(title=title, final=c["accuracy"][-1], best=c["accuracy"][best],
                          best_step=c["eval_steps"][best], eval_steps=c["eval_steps"],
                          reached=first_reached(c["eval_steps"], c["accuracy"], REACH),
                          accuracy=c["accuracy"], loss=c["loss"], loss_smooth=smooth.tolist(),
                          backbone_grad_norm=float(c["backbone_grad"]))
    ms = total / (steps * len(HEADS)) * 1e3
    log(f"trained {len(HEADS)} heads x {steps} steps in {total:.1f} s ({ms:.1f} ms per head "
        f"and step, compilation and held-out evaluations included)")
    log(f"held-out accuracy at the last step (step {steps}), chance {1 / len(CLASSES):.1%}:")
    width = max(len(h["title"]) for h in heads.values())
    for h in heads.values():
        reached = (f"first at {REACH:.0%} at step {h['reached']}" if h["reached"] is not None
                   else f"never at {REACH:.0%}")
        log(f"  {h['title']:<{width}} {h['final']:6.1%}   ({reached}; best {h['best']:.1%}, at "
            f"step {h['best_step']})")
    for line in takeaways(heads, steps):
        log(f"  {line}")
    log(f"gradient norm reaching the backbone through roi_align at the last step: "
        f"{heads['roi_align']['backbone_grad_norm']:.3g}")
    return dict(heads=heads, steps=steps, seed=seed, held_out=EVAL_BATCH * PER_IMAGE,
                smooth=SMOOTH, ms_per_step=ms)


# ----------------------------------------------------------------------------- command line

DEFAULT_OUT = os.path.join("demo_output", "roialign_demo.png")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=300,
                   help="training steps of each head (default 300)")
    p.add_argument("--seed", type=int, default=0,
                   help="the heads' initial weights and the training batches (default 0)")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"the PNG to write; its folder is created (default {DEFAULT_OUT}, "
                        f"git-ignored in the clone)")
    p.add_argument("--layout", choices=("NHWC", "NCHW"), default="NHWC",
                   help="features layout given to the operators (default NHWC, Flax's)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="dtype of the features and of the heads' computation (default "
                        "float32)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")


def run(args) -> int:
    log = lambda line: print(line, flush=True)
    dtype = jnp.dtype(args.dtype)
    t = time.perf_counter()
    backend = jax.default_backend()
    log(f"jax_roialign {jra.__version__}, jax {jax.__version__}, backend {backend}; the "
        f"operators run {path_taken(backend)}")
    problem = missing_kernels(backend)
    if problem:
        log(f"WARNING: {problem}")
    pooled = crop_errors(args.layout, dtype)
    errors = pooled[0]
    log(f"1. each box pooled to {OUT}x{OUT} from the stride-{STRIDE} feature map; mean "
        f"|crop - ideal| per box (RGB in [0, 1]):")
    for key, title in columns():
        log(f"  {title:<24}" + ", ".join(f"{e:.3f}" for e in errors[key]))
    log("2. does it matter for learning?")
    # Without Flax, train() says which extra to install; the demo still succeeds, as the
    # picture, the part that needs nothing optional, is made.
    training = train(max(args.steps, 1), args.layout, dtype.type, log, args.seed, args.quiet)
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    _, labelled = picture(args.out, args.layout, dtype, training, pooled)
    log(f"wrote {os.path.abspath(args.out)}"
        + ("" if labelled else "; Pillow is not installed, so the labels are left out "
           "(pip install jax_roialign[demo])"))
    log(f"demo done in {time.perf_counter() - t:.1f} s")
    return 0
