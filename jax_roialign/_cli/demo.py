"""`python -m jax_roialign demo`: see what RoIAlign fixes, then train through it.

1. The picture (no optional dependency). A scene drawn here from geometric shapes is
   average-pooled at stride 8, the way a backbone's feature map sees it. A few boxes
   are pooled to 7x7 from that map with roi_pool (Fast R-CNN), legacy.roi_align
   (faster-rcnn.pytorch) and roi_align (aligned=True), and compared with the ideal
   crop: the box's own pixels averaged over each bin. RoIPool rounds the box to whole
   feature cells (moving each edge by up to half a cell, 4 pixels here), then each bin
   to whole cells (up to a cell more), and its crops show the shift. The PNG shows
   the boxes, both bin grids over the cell grid, and the crops upscaled side by side.
   Pillow, when installed, writes it and adds the labels; without it a small PNG
   writer here does, without labels.

2. The training run (needs Flax). A jit-compiled Flax detection head (three convs,
   stride 4, then jax_roialign.flax.RoIAlign 7x7, then an MLP) learns to name the
   shape in each box of synthetic images drawn afresh for every step.
   The gradient flows through roi_align into the convolutions. Prints the loss and
   accuracy as they improve, and the time per step.
"""

from __future__ import annotations

import argparse
import inspect
import os
import struct
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np

import jax_roialign as jra

from .._src.api import FUNCTIONS
from .._src.operators import OPERATORS

# ----------------------------------------------------------------------------- the scene
#
# Shapes are implicit functions of continuous image coordinates (pixel k spans
# [k, k+1)), so the same scene renders at any resolution and over any window: the
# image the operators see, the 2x overview and the zoomed tiles, all exact.

HEIGHT, WIDTH, STRIDE, OUT = 192, 256, 8, 7

# The pooled boxes (x1, y1, x2, y2), each tight around one shape, with corners that
# are deliberately not multiples of the stride.
BOXES = np.array([[28.3, 26.7, 96.3, 94.7],      # a bullseye
                  [125.6, 21.2, 217.6, 83.2],    # a wide diamond
                  [123.4, 104.6, 177.1, 175.3]],  # colour bars
                 np.float32)


def _scene(x, y):
    """RGB in [0, 1] at image coordinates x, y (arrays of one shape)."""
    t = (y / HEIGHT)[..., None]
    rgb = (1 - t) * np.array([0.09, 0.11, 0.22]) + t * np.array([0.05, 0.22, 0.27])
    checker = ((np.floor(x / 32) + np.floor(y / 32)) % 2)[..., None]
    rgb = rgb + 0.035 * checker

    def paint(mask, color):
        nonlocal rgb
        rgb = np.where(mask[..., None], np.asarray(color, np.float64), rgb)

    # Unboxed decoration, so that the overview looks like a scene.
    paint((np.abs(x - 42) <= (y - 120) * 0.55) & (y <= 172), [0.3, 0.75, 0.35])  # triangle
    paint(np.hypot(x - 226, y - 150) <= 13, [0.3, 0.85, 0.95])              # disc
    paint((np.abs(x - 228) <= 6) & (np.abs(y - 110) <= 6), [0.95, 0.55, 0.2])  # square

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


# ----------------------------------------------------------------------------- geometry
#
# What each operator samples, in image pixels, from docs/semantics.md's formulas, for the overlays.

def roipool_edges(a1, a2, cells):
    """RoIPool's two quantisations along one axis: the box rounded to whole cells, then
    bin p covering cells [floor(p*bw), ceil((p+1)*bw)) of it. Returns the bin starts
    and the last bin's end, in image pixels (a cell is STRIDE pixels)."""
    s = 1 / STRIDE
    start = np.floor(np.abs(a1 * s) + 0.5) * np.sign(a1)  # C round(): half away from zero
    end = np.floor(np.abs(a2 * s) + 0.5) * np.sign(a2)
    bw = max(end - start + 1, 1) / OUT
    edges = [min(max(np.floor(p * bw) + start, 0), cells) for p in range(OUT)]
    edges.append(min(max(np.ceil(OUT * bw) + start, 0), cells))
    return np.array(edges) * STRIDE


def legacy_points(a1, a2):
    """faster-rcnn.pytorch's RoIAlign lattice along one axis, in image pixels: feature
    coordinate a1*s + p*(roi + 1)/(OUT - 1), where feature cell j holds the average of
    pixels [8j, 8j+8), centred at 8j + 4."""
    s = 1 / STRIDE
    roi = max(a2 * s - a1 * s + 1, 0)
    return (a1 * s + np.arange(OUT) * roi / (OUT - 1) + 0.5) * STRIDE


# ----------------------------------------------------------------------------- pooling

# The operators the picture compares, in the registry's `demo` order: (key, function,
# column title).
METHODS = tuple((op.name, FUNCTIONS[op.name], op.demo[1])
                for op in sorted((o for o in OPERATORS if o.demo), key=lambda o: o.demo[0]))


def pooled_crops(image, layout, dtype):
    """{method: (K, OUT, OUT, 3) float32} from the stride-8 feature map."""
    feats = image.reshape(HEIGHT // STRIDE, STRIDE, WIDTH // STRIDE, STRIDE, 3).mean((1, 3))
    feats = feats[None] if layout == "NHWC" else feats.transpose(2, 0, 1)[None]
    feats = jnp.asarray(feats, dtype)
    rows = np.concatenate([np.zeros((len(BOXES), 1), np.float32), BOXES], 1)
    config = dict(output_size=OUT, spatial_scale=1 / STRIDE, sampling_ratio=2, aligned=True,
                  layout=layout)
    crops = {}
    for key, fn, _ in METHODS:
        kwargs = {k: v for k, v in config.items() if k in inspect.signature(fn).parameters}
        out = np.asarray(fn(feats, rows, **kwargs), np.float32)
        crops[key] = out if layout == "NHWC" else out.transpose(0, 2, 3, 1)
    return crops


# ----------------------------------------------------------------------------- drawing

GREEN, RED, CYAN = (70, 235, 110), (255, 60, 60), (80, 230, 255)
WHITE, GREY, PANEL = (235, 235, 240), (150, 150, 160), (24, 26, 34)


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

    def text(self, y, x, words, color=WHITE, size=14):
        self.texts.append((x, y, words, color, size))


def zoom_tile(size, window, box):
    """The scene over `window` (image pixels) at size x size, with the feature-cell grid,
    RoIAlign's bins (green), RoIPool's quantised box and bins (red) and legacy's sample
    lattice (cyan) drawn over it."""
    canvas = Canvas(size, size)
    canvas.paste(0, 0, render(window, size, size))
    wx1, wy1, wx2, wy2 = window
    to_x = lambda v: (v - wx1) * size / (wx2 - wx1)
    to_y = lambda v: (v - wy1) * size / (wy2 - wy1)
    for v in np.arange(np.ceil(wx1 / STRIDE), wx2 / STRIDE + 1) * STRIDE:
        canvas.fill(0, size, to_x(v), to_x(v) + 1, GREY, 0.35)
    for v in np.arange(np.ceil(wy1 / STRIDE), wy2 / STRIDE + 1) * STRIDE:
        canvas.fill(to_y(v), to_y(v) + 1, 0, size, GREY, 0.35)
    x1, y1, x2, y2 = box
    # Bin edges: the outer ones 2 pixels wide (the box), the inner ones 1.
    grids = ((roipool_edges(x1, x2, WIDTH // STRIDE), roipool_edges(y1, y2, HEIGHT // STRIDE), RED),
             (np.linspace(x1, x2, OUT + 1), np.linspace(y1, y2, OUT + 1), GREEN))
    for ex, ey, color in grids:
        for j, v in enumerate(ex):
            w = 1 if 0 < j < len(ex) - 1 else 2
            canvas.fill(to_y(ey[0]), to_y(ey[-1]), to_x(v) - w / 2, to_x(v) + w / 2, color, 0.9)
        for j, v in enumerate(ey):
            w = 1 if 0 < j < len(ey) - 1 else 2
            canvas.fill(to_y(v) - w / 2, to_y(v) + w / 2, to_x(ex[0]), to_x(ex[-1]), color, 0.9)
    for py in legacy_points(y1, y2):
        for px in legacy_points(x1, x2):
            canvas.fill(to_y(py) - 2, to_y(py) + 2, to_x(px) - 2, to_x(px) + 2, CYAN)
    return canvas.rgb


TILE, GAP, MARGIN, TOP, ZOOM = 168, 14, 44, 96, 2   # figure geometry, in PNG pixels


def draw_overview(canvas, top, left):
    """The scene at ZOOM x, with the feature-cell grid, each box asked for (green) and
    the box RoIPool actually pools (red), then the legend and what to look for."""
    height, width = HEIGHT * ZOOM, WIDTH * ZOOM
    canvas.paste(top, left, render((0, 0, WIDTH, HEIGHT), height, width))
    for v in range(0, WIDTH + 1, STRIDE):
        canvas.fill(top, top + height, left + v * ZOOM, left + v * ZOOM + 1, GREY, 0.25)
    for v in range(0, HEIGHT + 1, STRIDE):
        canvas.fill(top + v * ZOOM, top + v * ZOOM + 1, left, left + width, GREY, 0.25)
    for i, (x1, y1, x2, y2) in enumerate(BOXES):
        ex, ey = roipool_edges(x1, x2, WIDTH // STRIDE), roipool_edges(y1, y2, HEIGHT // STRIDE)
        canvas.rect(top + ey[0] * ZOOM, top + ey[-1] * ZOOM,
                    left + ex[0] * ZOOM, left + ex[-1] * ZOOM, RED)
        canvas.rect(top + y1 * ZOOM, top + y2 * ZOOM, left + x1 * ZOOM, left + x2 * ZOOM, GREEN)
        canvas.text(top + y1 * ZOOM - 20, left + x1 * ZOOM + 2, str(i + 1), GREEN, 16)
    legend = [(GREEN, "the box asked for, and RoIAlign's bins: exact"),
              (RED, "RoIPool: box and bins rounded to whole feature cells"),
              (CYAN, "legacy RoIAlign (faster-rcnn.pytorch) sample lattice"),
              (GREY, f"feature cells ({STRIDE} pixels)")]
    y = top + height + 18
    for color, words in legend:
        canvas.fill(y + 4, y + 14, left, left + 22, color)
        canvas.text(y, left + 32, words)
        y += 24
    y += 12
    for words in ("RoIPool pools the red cells, not the green box, and takes their maximum;",
                  "legacy's lattice starts half a cell late and spans one cell too many.",
                  "RoIAlign samples the box itself: its crops are only as blurred as the map."):
        canvas.text(y, left, words, GREY)
        y += 24


def draw_rows(canvas, top, left, ideal, crops, errors):
    """One row per box: the zoomed bins, the ideal crop, then each method's crop,
    upscaled (nearest) so that every output cell is a visible square."""
    titles = ["zoom: the bins", "ideal"] + [title for _, _, title in METHODS]
    for c, title in enumerate(titles):
        canvas.text(top - 26, left + c * (TILE + GAP), title)
    for i, box in enumerate(BOXES):
        y = top + i * (TILE + 40)
        x1, y1, x2, y2 = box
        # A square window a little larger than the box, so that both grids fit in it.
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 0.62
        canvas.paste(y, left, zoom_tile(TILE, (cx - half, cy - half, cx + half, cy + half), box))
        canvas.text(y + 4, left + 4, str(i + 1), GREEN, 16)
        for c, key in enumerate(["ideal"] + [k for k, _, _ in METHODS], start=1):
            x = left + c * (TILE + GAP)
            crop = ideal if key == "ideal" else crops[key]
            cell = TILE // OUT
            canvas.paste(y, x, np.repeat(np.repeat(np.clip(crop[i], 0, 1), cell, 0), cell, 1))
            if key == "ideal":
                canvas.text(y + TILE + 4, x, "the box's pixels, bin means", GREY)
            else:
                canvas.text(y + TILE + 4, x, f"error {errors[key][i]:.3f}",
                            GREEN if key == "roi_align" else WHITE)


def picture(path, layout, dtype, log):
    """Pools the boxes, draws the figure and writes the PNG. Returns ({method: mean
    |crop - ideal| per box}, whether the PNG has its text labels)."""
    image = render((0, 0, WIDTH, HEIGHT), HEIGHT, WIDTH)
    crops = pooled_crops(image, layout, dtype)
    # The ideal crop: the box's own pixels averaged over each of the OUT x OUT bins.
    ideal = np.stack([render(b, OUT, OUT, supersample=16) for b in BOXES])
    errors = {k: np.abs(c - ideal).mean((1, 2, 3)) for k, c in crops.items()}

    rows_left = MARGIN + WIDTH * ZOOM + 40
    canvas = Canvas(max(TOP + HEIGHT * ZOOM + 230, TOP + len(BOXES) * (TILE + 40) + 10),
                    rows_left + (2 + len(METHODS)) * (TILE + GAP) - GAP + MARGIN)
    canvas.text(16, MARGIN, "RoIPool quantises twice, RoIAlign does not", size=24)
    canvas.text(48, MARGIN, f"features: the scene below average-pooled at stride {STRIDE} "
                f"(a {HEIGHT // STRIDE}x{WIDTH // STRIDE} map); each box pooled to "
                f"{OUT}x{OUT}; error = mean |crop - ideal| (RGB in [0, 1])", color=GREY)
    draw_overview(canvas, TOP, MARGIN)
    draw_rows(canvas, TOP, rows_left, ideal, crops, errors)
    return errors, save_png(canvas, path)


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
IMAGE, PER_IMAGE, TRAIN_BATCH, EVAL_BATCH = 64, 4, 16, 64


def synthetic_batch(rng, num_images):
    """Images (N, 64, 64, 3) float32 with one shape per quadrant, their boxes (N, 4, 4)
    (jittered by up to 2.5 pixels, as proposals would be) and class labels (N, 4).

    Drawn with numpy on the host: a batch takes about a millisecond, while the same in
    jax.numpy inside the step cost seconds of compilation (the random number generators)."""
    shape = (num_images, PER_IMAGE)
    labels = rng.integers(0, len(CLASSES), shape)
    r = rng.uniform(4.0, 10.0, shape)
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
    boxes += rng.uniform(-2.5, 2.5, boxes.shape)
    return images.astype(np.float32), boxes.astype(np.float32), labels.astype(np.int32)


def make_model(layout, dtype):
    """The Flax head: linen, so that it runs on every Flax that jax_roialign.flax supports."""
    import flax.linen as nn

    from jax_roialign.flax import RoIAlign

    class Backbone(nn.Module):
        @nn.compact
        def __call__(self, x):                       # (N, 64, 64, 3) -> (N, 16, 16, 32)
            for features, stride in ((16, 1), (32, 2), (32, 2)):
                x = nn.relu(nn.Conv(features, (3, 3), strides=stride, dtype=dtype)(x))
            return x

    class Detector(nn.Module):
        @nn.compact
        def __call__(self, images, boxes):
            x = Backbone(name="backbone")(images)
            if layout == "NCHW":                     # Flax convolutions are NHWC
                x = x.transpose(0, 3, 1, 2)
            pooled = RoIAlign(7, 1 / 4, 2, aligned=True, layout=layout)(x, boxes)
            h = pooled.reshape(*pooled.shape[:2], -1)  # (N, R, 7*7*32)
            h = nn.relu(nn.Dense(64, dtype=dtype)(h))
            return nn.Dense(len(CLASSES), dtype=dtype)(h).astype(jnp.float32)

    return Detector()


def per_step(ms):
    return f"{ms:6.1f} ms/step" if ms == ms else "    -- ms/step"  # NaN before step 2


def progress(step, steps, loss, acc, ms, width=28):
    done = int(width * step / steps)
    return (f"\r  [{'#' * done}{'.' * (width - done)}] {step:>4}/{steps}  loss {loss:6.3f}  "
            f"batch accuracy {acc:6.1%}  {per_step(ms)}")


def train(steps, layout, dtype, log):
    """Trains the head for `steps` steps; returns its summary, or None without Flax."""
    try:
        import optax

        model = make_model(layout, dtype)
    except ImportError as e:
        log(f"training skipped: it needs Flax and optax ({e.name} is missing): "
            "pip install jax_roialign[demo]")
        return None
    tx = optax.adam(3e-3)
    rng = np.random.default_rng(0)
    held_out = synthetic_batch(np.random.default_rng(12345), EVAL_BATCH)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), *held_out[:2])["params"]
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, images, boxes, labels):
        def loss_fn(p):
            logits = model.apply({"params": p}, images.astype(dtype), boxes)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        acc = jnp.mean(jnp.argmax(logits, -1) == labels)
        # Proof that the gradient crosses roi_align: the backbone sits before it.
        return optax.apply_updates(params, updates), opt_state, loss, acc, \
            optax.global_norm(grads["backbone"])

    @jax.jit
    def accuracy(params, images, boxes, labels):
        logits = model.apply({"params": params}, images.astype(dtype), boxes)
        return jnp.mean(jnp.argmax(logits, -1) == labels)

    n_params = sum(p.size for p in jax.tree.leaves(params))
    log(f"training a jit-compiled Flax head through roi_align: convs (stride 4) -> RoIAlign "
        f"7x7 ({layout}, {jnp.dtype(dtype).name}) -> MLP, {n_params:,} parameters; a step: "
        f"{TRAIN_BATCH} fresh images {IMAGE}x{IMAGE} with {PER_IMAGE} boxes each; name one "
        f"of {len(CLASSES)} shapes per box (chance {1 / len(CLASSES):.1%}); "
        f"held out: {EVAL_BATCH * PER_IMAGE} boxes")
    tty = sys.stdout.isatty()
    checkpoints = set(np.linspace(0, steps, 11).astype(int)[1:])
    best, times, start = -1.0, [], time.perf_counter()
    batch = synthetic_batch(rng, TRAIN_BATCH)
    for step in range(1, steps + 1):
        t = time.perf_counter()
        outputs = train_step(params, opt_state, *batch)  # returns at once: jax dispatches
        batch = synthetic_batch(rng, TRAIN_BATCH)      # asynchronously, so the next batch
        params, opt_state, loss, acc, backbone_grad = outputs  # is drawn while this runs
        loss, acc = float(loss), float(acc)  # waits for the step
        if step == 1:  # the first call compiles: reported apart, left out of the mean
            log(f"  compiled and ran the first step in {time.perf_counter() - t:.1f} s")
        else:
            times.append((time.perf_counter() - t) * 1e3)
        ms = float(np.mean(times[-20:])) if times else float("nan")
        if tty:
            print(progress(step, steps, loss, acc, ms), end="", flush=True)
        if step in checkpoints:
            held = float(accuracy(params, *held_out))
            mark = "  new best" if held > best else ""
            best = max(best, held)
            if tty:
                print("\r" + " " * 100 + "\r", end="")
            log(f"  step {step:>4}/{steps}  loss {loss:6.3f}  held-out accuracy {held:6.1%}"
                f"  {per_step(ms)}{mark}")
    total = time.perf_counter() - start
    ms = float(np.mean(times)) if times else float("nan")
    log(f"trained {steps} steps in {total:.1f} s: {per_step(ms).strip()} after compilation; "
        f"held-out accuracy {best:.1%} (chance {1 / len(CLASSES):.1%}); gradient norm reaching "
        f"the backbone through roi_align at the last step: {float(backbone_grad):.3g}")
    return dict(accuracy=best, ms_per_step=ms, backbone_grad_norm=float(backbone_grad))


# ----------------------------------------------------------------------------- command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    p.add_argument("--out", default="roialign_demo.png",
                   help="the PNG to write (default roialign_demo.png)")
    p.add_argument("--layout", choices=("NHWC", "NCHW"), default="NHWC",
                   help="features layout given to the operators (default NHWC, Flax's)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="dtype of the features and of the head's computation (default "
                        "float32)")


def run(args) -> int:
    log = lambda line: print(line, flush=True)
    dtype = jnp.dtype(args.dtype)
    t = time.perf_counter()
    log(f"jax_roialign {jra.__version__}, jax {jax.__version__}, backend {jax.default_backend()}")
    errors, labelled = picture(args.out, args.layout, dtype, log)
    log(f"wrote {os.path.abspath(args.out)} ({time.perf_counter() - t:.1f} s)"
        + ("" if labelled else "; Pillow is not installed, so the labels are left out "
           "(pip install jax_roialign[demo]). Columns: the zoomed bins (green RoIAlign, red "
           "RoIPool, cyan legacy), the ideal crop, RoIPool, legacy RoIAlign, RoIAlign"))
    for key, _, title in METHODS:
        log(f"  {title:<16} mean |crop - ideal| per box: "
            + ", ".join(f"{e:.3f}" for e in errors[key]))
    # Without Flax, train() says which extra to install; the demo still succeeds, as the
    # picture, the part that needs nothing optional, was made.
    train(max(args.steps, 1), args.layout, dtype.type, log)
    log(f"demo done in {time.perf_counter() - t:.1f} s")
    return 0
