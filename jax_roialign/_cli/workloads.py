"""The workloads every command times (`check`, `bench`), the bench's suites, and the
proposals they pool."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Workload(NamedTuple):
    shape: tuple        # features (N, C, H, W); of a pyramid, its finest level
    rois: int           # proposals, spread over the images (of a pyramid: the same
                        # number per image, as a detector's proposals per image)
    size: int           # output PH = PW
    scale: float        # spatial_scale (of a pyramid: its finest level's)
    sampling: int       # sampling_ratio (0: adaptive)
    what: str
    levels: int = 1     # pyramid levels: level l is (N, C, H / 2^l, W / 2^l) at scale / 2^l

    def level_shapes(self):
        """(N, C, H, W) of each level, finest first (sizes rounded up, as a stride-2
        convolution's)."""
        n, c, h, w = self.shape
        return [(n, c, math.ceil(h / 2 ** i), math.ceil(w / 2 ** i)) for i in range(self.levels)]

    def level_scales(self):
        return tuple(self.scale / 2 ** i for i in range(self.levels))

    def image_size(self):
        """(height, width) of the input image the features came from."""
        return round(self.shape[2] / self.scale), round(self.shape[3] / self.scale)


WORKLOADS = {
    "c4": Workload((1, 1024, 50, 68), 512, 14, 1 / 16, 2, "Faster R-CNN C4 head"),
    "fpn": Workload((2, 256, 200, 272), 1000, 7, 1 / 4, 2, "FPN level P2 box head"),
    "mask": Workload((2, 256, 100, 136), 200, 14, 1 / 8, 2, "Mask R-CNN mask head"),
    "head": Workload((8, 64, 64, 64), 256, 7, 1 / 8, 2, "a small detection head"),
    "small": Workload((2, 64, 50, 68), 200, 7, 1 / 8, 2, "the self-check's example"),
    "tiny": Workload((2, 8, 16, 20), 16, 4, 1 / 4, 2, "tiny smoke test"),
    # P2-P5 of an 800x1088 image (torchvision's MultiScaleRoIAlign on a resized COCO
    # image), 1000 proposals per image.
    "fpn_pyramid": Workload((2, 256, 200, 272), 2000, 7, 1 / 4, 2,
                            "FPN box head over P2-P5 of an 800x1088 image", levels=4),
    "tiny_pyramid": Workload((2, 8, 64, 64), 32, 4, 1 / 4, 2, "tiny pyramid smoke test",
                             levels=3),
}
STANDARD = ("c4", "fpn", "mask")

#: TensorFlow's detectors (the Object Detection API's Faster R-CNN) crop 14x14, then
#: max-pool to 7x7: the crop size of the rotated_crop suite's crop_and_resize.
CROP_SIZE = 14


class Suite(NamedTuple):
    what: str
    default: tuple      # workloads run when --workload is not given
    tiny: str           # the --tiny workload (CI: seconds, no peers needed)
    pyramid: bool       # takes pyramid workloads (levels > 1), else single maps


SUITES = {
    "ops": Suite("every single-map operator of the registry against the pure-JAX reference "
                 "and torchvision", STANDARD, "tiny", False),
    "pyramid": Suite("multi_scale_roi_align (one fused call) against a per-level loop of "
                     "roi_align, the pure-JAX reference and torchvision's MultiScaleRoIAlign",
                     ("fpn_pyramid",), "tiny_pyramid", True),
    "rotated_crop": Suite(f"roi_align_rotated against roi_align per sample; crop_and_resize "
                          f"({CROP_SIZE}x{CROP_SIZE} crops) against TensorFlow's",
                          ("fpn",), "tiny", False),
}


def proposals(rng, num_images, height, width, scale, count):
    """(K, 5) rows of random boxes in input-image pixels, sized as a detector's
    proposals (sides log-uniform from 16 pixels to half the image)."""
    hi, wi = height / scale, width / scale
    cx, cy = rng.uniform(0, wi, count), rng.uniform(0, hi, count)
    bw, bh = np.exp(rng.uniform(np.log(16), np.log(max(wi, 32) / 2), (2, count)))
    idx = rng.integers(0, num_images, count)
    return np.stack([idx, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)


# torchvision's LevelMapper (and jra.level_of's default): level k pools the boxes with
# sqrt(area) in [CANONICAL_SCALE * 2^(k - CANONICAL_LEVEL), twice that).
CANONICAL_SCALE, CANONICAL_LEVEL = 224, 4


def pyramid_proposals(rng, w: Workload):
    """(K, 5) rows, w.rois // N per image, image by image (the order torchvision's
    MultiScaleRoIAlign concatenates its per-image lists in), sized to spread evenly over
    the pyramid's levels under torchvision's mapper: each box draws a level, then
    sqrt(area) log-uniform within that level's octave and an aspect ratio log-uniform
    in [1/2, 2], capped so that the box fits in the image (a level whose octave does not
    fit gets the largest box that does), and lies inside it (as clipped proposals do)."""
    n = w.shape[0]
    per_image = w.rois // n
    count = per_image * n
    height, width = w.image_size()
    first = round(-math.log2(w.scale))
    level = first + rng.integers(0, w.levels, count)
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), count))  # width / height
    lo = CANONICAL_SCALE * 2.0 ** (level - CANONICAL_LEVEL)  # the octave [lo, 2 lo)
    side = np.exp(rng.uniform(np.log(lo), np.log(2 * lo)))
    fits = np.minimum(width / np.sqrt(aspect), height * np.sqrt(aspect))  # largest side that fits
    side = np.minimum(side, fits)
    bw, bh = side * np.sqrt(aspect), side / np.sqrt(aspect)
    x1 = rng.uniform(0, 1, count) * (width - bw)
    y1 = rng.uniform(0, 1, count) * (height - bh)
    idx = np.repeat(np.arange(n), per_image)
    boxes = np.stack([x1, y1, x1 + bw, y1 + bh], 1).clip(0, [width, height, width, height])
    return np.concatenate([idx[:, None], boxes], 1).astype(np.float32)


def rotated_from(rng, rows):
    """(K, 6) rotated rows [b, cx, cy, w, h, angle] with the boxes' centres and sizes
    and an angle uniform in [-180, 180) degrees."""
    b, x1, y1, x2, y2 = rows.T
    angle = rng.uniform(-180, 180, len(rows))
    return np.stack([b, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, angle],
                    1).astype(np.float32)


def normalised_boxes(rows, scale, height, width):
    """crop_and_resize's boxes for `rows`' boxes on an (height, width) map at `scale`:
    ((K, 4) [y1, x1, y2, x2] with y = row / (H - 1), (K,) int32 image indices)."""
    b, x1, y1, x2, y2 = rows.T
    ny, nx = max(height - 1, 1), max(width - 1, 1)
    boxes = np.stack([y1 * scale / ny, x1 * scale / nx, y2 * scale / ny, x2 * scale / nx], 1)
    return boxes.astype(np.float32), b.astype(np.int32)
