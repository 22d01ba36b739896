"""docs/semantics.md's multi_scale_roi_align in pure ``jax.numpy``: each row pooled by
``roi_align_core`` from its own level (normalised arguments, no validation).

Every level pools every row and a row keeps its level's result: the cost is L times a
single roi_align, which an oracle can afford. A level outside [0, L) pools zeros."""

from __future__ import annotations

import jax.numpy as jnp

from .roi_align import roi_align_core


def multi_scale_roi_align_core(features, rows, levels, pooled_height, pooled_width,
                               spatial_scales, sampling_ratio, aligned, mode, layout):
    """``features`` a list of levels; ``levels`` int per row, or None (every row on 0)."""
    out = None
    for level, (f, scale) in enumerate(zip(features, spatial_scales)):
        spatial = f.shape[2:] if layout == "NCHW" else f.shape[1:3]
        pooled = roi_align_core(f, rows, pooled_height, pooled_width, scale, sampling_ratio,
                                aligned, mode, layout) if min(spatial) > 0 else None
        if out is None:
            out = jnp.zeros_like(pooled) if pooled is not None else None
        if pooled is None:
            continue
        mine = (levels == level) if levels is not None else jnp.full(rows.shape[:1], level == 0)
        out = jnp.where(mine[:, None, None, None], pooled, out)
    if out is None:  # every level is empty
        c = features[0].shape[1] if layout == "NCHW" else features[0].shape[3]
        shape = ((rows.shape[0], c, pooled_height, pooled_width) if layout == "NCHW"
                 else (rows.shape[0], pooled_height, pooled_width, c))
        out = jnp.zeros(shape, features[0].dtype)
    return out
