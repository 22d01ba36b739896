"""faster-rcnn.pytorch's RoIAlign layers (``lib/model/roi_align``), for models
trained with them. Same forward; a correct backward on every platform (the
original's CPU backward accumulated only out-of-bounds samples and its Python
refused the CPU); no out-of-bounds reads for H == 1 or W == 1.

How they differ from ``jax_roialign.roi_align``: one bilinear point per output
cell on a corner lattice that spans the box with a +1 size (``(x2 - x1) * s + 1``)
and ``output_size - 1`` intervals, no half-pixel offset, no sampling grid; a
point outside ``[0, H) x [0, W)`` is 0 and one on ``[H-1, H)`` extrapolates.
Why RoIAlign exists at all: RoIPool quantises twice (the box to integer cells,
then each bin to integer cells), so its pooled features are misaligned with the
box; RoIAlign keeps coordinates real and interpolates.
"""

from ._src.api import legacy_roi_align as roi_align
from ._src.api import legacy_roi_align_avg as roi_align_avg
from ._src.api import legacy_roi_align_max as roi_align_max

__all__ = ["roi_align", "roi_align_avg", "roi_align_max"]
