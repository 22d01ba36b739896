"""Output shapes, and the abstract values of the primitives' results.

Under ``shard_map`` a value's type also says which manual mesh axes it varies over (its
vma). A result varies over the axes its operands vary over: the primitives reconcile
their operands to one vma before binding (`reconciled`, what ``jax.ffi.ffi_call`` does),
and `result_aval` gives every result, int32 winners included, that vma. A result built
without it is typed invariant; jax then inserts a ``pvary`` whose transpose sums the
cotangent over the shards, so gradients are rejected or, silently, wrong.

Outside ``shard_map`` (or with ``check_vma=False``) a result carries no sharding at all:
an empty-mesh type matches any sharding, whereas one copied from an operand (``aval.update``)
would claim that operand's partition spec for differently shaped dimensions.
"""

from __future__ import annotations

import numpy as np
from jax._src import core
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from .operators import BY_NAME
from .reference.numerics import varying, vma


#: Each kernel's operands and results (cc/kernel_list.h): the roles of the operands
#: before the feature levels (which come last, one per level, none for
#: backward_features), and of the results ("features": one per level).
#: rois: (K, 5) rows or (N, R, 4) boxes; levels: the int32 level of each roi (the rois'
#: shape without its last axis; (0,) for one level); winner: max mode's int32 winning
#: samples (the output's shape; (0,) in avg mode, and from a forward that records none:
#: `records_winners`); out: shaped like the output (a tangent or a cotangent); rois_like:
#: shaped like the rois (a box tangent).
SIGNATURES = {
    "forward": (("rois", "levels"), ("out", "winner")),
    "forward_selected": (("rois", "levels", "winner"), ("out",)),
    "backward_features": (("out", "rois", "levels", "winner"), ("features",)),
    "forward_boxes": (("rois", "levels", "rois_like", "winner"), ("out",)),
    "backward_boxes": (("rois", "levels", "out", "winner"), ("rois",)),
}


def output_shape(op: str, features_shape, rois_shape, output_size, layout: str) -> tuple:
    """(K, ...) for (K, 5) rows, (N, R, ...) for (N, R, 4) boxes; `...` is (C, PH, PW)
    for NCHW, (PH, PW, C) for NHWC, with C the output channels."""
    ph, pw = output_size
    channels = features_shape[1] if layout == "NCHW" else features_shape[3]
    if BY_NAME[op].position_sensitive:
        channels //= ph * pw
    rows = tuple(rois_shape[:1]) if len(rois_shape) == 2 else tuple(rois_shape[:2])
    return rows + ((channels, ph, pw) if layout == "NCHW" else (ph, pw, channels))


def records_winners(p) -> bool:
    """Whether forward_p's second result holds max mode's winners, shaped like the output.
    Else it is (0,): avg mode, or a max-mode forward bound with `winners` False (one that
    is not differentiated: its kernel then writes no winners)."""
    return p["mode"] == "max" and p["winners"]


def winner_shape(out_shape, p) -> tuple:
    """forward_p's winners: shaped like the output where recorded, else (0,)."""
    return tuple(out_shape) if records_winners(p) else (0,)


def reconciled(args) -> list:
    """`args`, each cast to vary over the union of their manual axes (a no-op outside
    shard_map). The transpose of such a cast sums the cotangent over those axes: the
    gradient of an operand replicated over shards is the sum of its per-shard ones."""
    union = frozenset().union(*(vma(a) for a in args))
    return [varying(a, union) for a in args]


def result_aval(name: str, shape, dtype, operands):
    """A result of primitive `name`: `shape`, `dtype`, and the operands' vma (which must
    agree: see `reconciled`)."""
    varying = core.standard_vma_rule(name, *operands)
    if not varying:
        return core.ShapedArray(tuple(shape), np.dtype(dtype))
    mesh = next(a.sharding.mesh for a in operands if a.manual_axis_type.varying)
    return core.ShapedArray(tuple(shape), np.dtype(dtype), sharding=NamedSharding(mesh, P()),
                            manual_axis_type=core.ManualAxisType(varying=varying))


def out_aval(name, features, rois, p, operands):
    """The pooled output: the features' dtype, the operator's shape."""
    shape = output_shape(p["op"], features.shape, rois.shape, p["output_size"], p["layout"])
    return result_aval(name, shape, features.dtype, operands)


def winner_aval(name, out, p, operands):
    return result_aval(name, winner_shape(out.shape, p), np.int32, operands)
