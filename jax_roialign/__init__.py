"""RoIAlign and its family for JAX: XLA FFI kernels with every transformation.

    import jax_roialign as jra
    out = jra.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)

docs/semantics.md defines every function exactly; the docstrings say what differs from
the peers. Common to every operator:

- ``features``: (N, C, H, W) for ``layout="NCHW"`` or (N, H, W, C) for ``"NHWC"``;
  float16, bfloat16, float32 or float64 (16-bit types accumulate in float32).
- ``rois``: (K, 5) rows ``[batch_index, x1, y1, x2, y2]``; or (N, R, 4) boxes per
  image (the output gains a leading (N, R) instead of K); or a list of N arrays
  (R_n, 4). Coordinates are input-image pixels; feature coordinate = x * spatial_scale.
- ``output_size``: int or (PH, PW). The output is (K, C, PH, PW) / (K, PH, PW, C).
- A roi whose batch index is not an integer in [0, N) (or NaN), or whose
  coordinates are NaN/Inf, gives zeros and no gradient.
- Differentiable w.r.t. ``features`` (any order, forward and reverse) and, where
  the operator is continuous in them, the box coordinates (first order).
- ``deterministic``: GPU backward without atomics, bit-identical run to run;
  None takes ``set_deterministic``'s default (False). The CPU always is.

Without its compiled CPU kernels (e.g. imported from a clone's source folder instead of
the installed package) every operator runs the pure-JAX reference: importing warns
(``KernelsMissingWarning``) with the cause and the fix.
"""

import warnings

from . import legacy, reference
from ._src.api import (crop_and_resize, kernel_platforms, level_of, multi_scale_roi_align,
                       ps_roi_align, ps_roi_pool, roi_align, roi_align_rotated, roi_pool,
                       set_deterministic, validate_rois)
from ._src.installation import KernelsMissingWarning, missing_kernels
from ._src.primitives import UnsupportedDerivativeError

__all__ = ["roi_align", "roi_pool", "ps_roi_align", "ps_roi_pool", "multi_scale_roi_align",
           "level_of", "roi_align_rotated", "crop_and_resize", "legacy", "set_deterministic",
           "validate_rois", "kernel_platforms", "UnsupportedDerivativeError", "reference",
           "KernelsMissingWarning"]
__version__ = "0.1.0"

if (_missing := missing_kernels("cpu")) is not None:
    warnings.warn(_missing, KernelsMissingWarning, stacklevel=2)
del missing_kernels
