"""The workloads every command times (`check`, `bench`), and the proposals they pool."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Workload(NamedTuple):
    shape: tuple        # features (N, C, H, W)
    rois: int           # proposals, spread over the images
    size: int           # output PH = PW
    scale: float        # spatial_scale
    sampling: int       # sampling_ratio (0: adaptive)
    what: str


WORKLOADS = {
    "c4": Workload((1, 1024, 50, 68), 512, 14, 1 / 16, 0, "Faster R-CNN C4 head"),
    "fpn": Workload((2, 256, 200, 272), 1000, 7, 1 / 4, 2, "FPN level P2 box head"),
    "mask": Workload((2, 256, 100, 136), 200, 14, 1 / 8, 2, "Mask R-CNN mask head"),
    "head": Workload((8, 64, 64, 64), 256, 7, 1 / 8, 2, "a small detection head"),
    "small": Workload((2, 64, 50, 68), 200, 7, 1 / 8, 2, "the self-check's example"),
    "tiny": Workload((2, 8, 16, 20), 16, 4, 1 / 4, 2, "tiny smoke test"),
}
STANDARD = ("c4", "fpn", "mask")


def proposals(rng, num_images, height, width, scale, count):
    """(K, 5) rows of random boxes in input-image pixels, sized as a detector's
    proposals (sides log-uniform from 16 pixels to half the image)."""
    hi, wi = height / scale, width / scale
    cx, cy = rng.uniform(0, wi, count), rng.uniform(0, hi, count)
    bw, bh = np.exp(rng.uniform(np.log(16), np.log(max(wi, 32) / 2), (2, count)))
    idx = rng.integers(0, num_images, count)
    return np.stack([idx, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
