"""The operators' primitives: abstract evaluation, lowering, batching, AD rules.

Every operator (parameter `op`) is linear in `features` once its max-mode
winners are fixed, so differentiation is built from five kernels:

    forward_p            (features, rois)                  -> (out, winner)
    selected_p           (x, rois, winner)                 -> out      linear in x
    transpose_p          (cotangent, rois, winner)         -> grad x   = selected_p^T
    boxes_jvp_p          (features, rois, rois_dot, winner) -> out_dot  linear in rois_dot
    boxes_vjp_p          (features, rois, cotangent, winner) -> grad rois = boxes_jvp_p^T

`winner` is the int32 index of each bin's winning sample in max mode (shaped
like `out`), an empty (0,) array in avg mode. Every primitive carries the same
parameters: op, output_size, spatial_scale, sampling_ratio, aligned, mode,
layout, deterministic (transpose_p also features_shape). roi_pool and
ps_roi_pool are piecewise constant in the boxes: their box derivative is zero. Derivatives of any order w.r.t. features,
and first derivatives w.r.t. box coordinates (forward and reverse), follow;
second derivatives involving box coordinates raise UnsupportedDerivativeError.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax._src import dispatch
from jax.extend.core import Primitive
from jax.interpreters import ad, batching

from . import _args, _lowering


class UnsupportedDerivativeError(NotImplementedError):
    """Second derivatives in which box coordinates vary are not provided."""


def _unsupported(what: str):
    raise UnsupportedDerivativeError(
        f"jax_roialign: {what} is not supported; derivatives of any order w.r.t. features and "
        "first derivatives w.r.t. box coordinates are. Wrap rois in jax.lax.stop_gradient "
        "where the box derivative is not wanted.")


# --------------------------------------------------------------------------- shapes

POSITION_SENSITIVE = ("ps_roi_align", "ps_roi_pool")
NO_BOX_DERIVATIVE = ("roi_pool", "ps_roi_pool")


def output_shape(features_shape, rois_shape, output_size, layout, op):
    """(K, ...) for (K, 5) rows, (N, R, ...) for (N, R, 4) boxes."""
    ph, pw = output_size
    channels = features_shape[1] if layout == "NCHW" else features_shape[3]
    if op in POSITION_SENSITIVE:
        channels //= ph * pw
    rows = tuple(rois_shape[:1]) if len(rois_shape) == 2 else tuple(rois_shape[:2])
    return rows + ((channels, ph, pw) if layout == "NCHW" else (ph, pw, channels))


def _winner_shape(out_shape, mode):
    return tuple(out_shape) if mode == "max" else (0,)


def _out_aval(features, rois, p):
    return jax.core.ShapedArray(
        output_shape(features.shape, rois.shape, p["output_size"], p["layout"], p["op"]),
        features.dtype)


# --------------------------------------------------------------------------- primitives

def _primitive(name, abstract_eval, kernel, multiple_results=False):
    prim = Primitive(f"jax_roialign_{name}")
    prim.multiple_results = multiple_results
    prim.def_impl(partial(dispatch.apply_primitive, prim))
    prim.def_abstract_eval(abstract_eval)
    _lowering.register(prim, kernel)
    return prim


def _forward_abstract(features, rois, **p):
    out = _out_aval(features, rois, p)
    return out, jax.core.ShapedArray(_winner_shape(out.shape, p["mode"]), jnp.int32)


forward_p = _primitive("forward", _forward_abstract, "roi_forward", True)
selected_p = _primitive("selected", lambda x, rois, winner, **p: _out_aval(x, rois, p),
                        "roi_forward_selected")
transpose_p = _primitive(
    "transpose",
    lambda ct, rois, winner, *, features_shape, **p: jax.core.ShapedArray(features_shape, ct.dtype),
    "roi_backward_features")
boxes_jvp_p = _primitive(
    "boxes_jvp", lambda f, rois, rois_dot, winner, **p: _out_aval(f, rois, p),
    "roi_forward_boxes")
boxes_vjp_p = _primitive(
    "boxes_vjp",
    lambda f, rois, ct, winner, **p: jax.core.ShapedArray(rois.shape, rois.dtype),
    "roi_backward_boxes")


def _without(p, *keys):
    return {k: v for k, v in p.items() if k not in keys}


# --------------------------------------------------------------------------- AD

def _is_zero(t):
    return type(t) is ad.Zero


def _box_tangent(t, p):
    """A box tangent, or None where the operator has no box derivative."""
    return None if _is_zero(t) or p["op"] in NO_BOX_DERIVATIVE else t


def _sum(terms, like):
    terms = [t for t in terms if t is not None]
    if not terms:
        return ad.Zero(like.aval.to_tangent_aval())
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _forward_jvp(primals, tangents, **p):
    f, rois = primals
    fd, rd = tangents
    rd = _box_tangent(rd, p)
    out, winner = forward_p.bind(f, rois, **p)
    out_dot = _sum([None if _is_zero(fd) else selected_p.bind(fd, rois, winner, **p),
                    None if rd is None else boxes_jvp_p.bind(f, rois, rd, winner, **p)], out)
    return (out, winner), (out_dot, ad.Zero(winner.aval.to_tangent_aval()))


def _selected_jvp(primals, tangents, **p):
    x, rois, winner = primals
    xd, rd, _ = tangents
    rd = _box_tangent(rd, p)
    out = selected_p.bind(x, rois, winner, **p)
    return out, _sum([None if _is_zero(xd) else selected_p.bind(xd, rois, winner, **p),
                      None if rd is None else boxes_jvp_p.bind(x, rois, rd, winner, **p)], out)


def _selected_transpose(ct, x, rois, winner, **p):
    if ad.is_undefined_primal(rois):
        _unsupported("transposing w.r.t. box coordinates")
    if _is_zero(ct):
        return ad.Zero(x.aval), None, None
    return transpose_p.bind(ct, rois, winner, features_shape=tuple(x.aval.shape), **p), None, None


def _transpose_jvp(primals, tangents, **p):
    ct, rois, winner = primals
    ctd, rd, _ = tangents
    if _box_tangent(rd, p) is not None:
        _unsupported("the derivative of the feature gradient w.r.t. box coordinates")
    out = transpose_p.bind(ct, rois, winner, **p)
    return out, _sum([None if _is_zero(ctd) else transpose_p.bind(ctd, rois, winner, **p)], out)


def _transpose_transpose(g, ct, rois, winner, *, features_shape, **p):
    if _is_zero(g):
        return ad.Zero(ct.aval), None, None
    return selected_p.bind(g, rois, winner, **p), None, None


def _boxes_jvp_jvp(primals, tangents, **p):
    f, rois, rd, winner = primals
    fd, rdd_rois, rdd, _ = tangents
    if not _is_zero(rdd_rois):
        _unsupported("the second derivative w.r.t. box coordinates")
    out = boxes_jvp_p.bind(f, rois, rd, winner, **p)
    return out, _sum([None if _is_zero(fd) else boxes_jvp_p.bind(fd, rois, rd, winner, **p),
                      None if _is_zero(rdd) else boxes_jvp_p.bind(f, rois, rdd, winner, **p)], out)


def _boxes_jvp_transpose(ct, f, rois, rd, winner, **p):
    if ad.is_undefined_primal(f) or ad.is_undefined_primal(rois):
        _unsupported("the mixed features/box-coordinate second derivative")
    if _is_zero(ct):
        return None, None, ad.Zero(rd.aval), None
    return None, None, boxes_vjp_p.bind(f, rois, ct, winner, **p), None


def _boxes_vjp_jvp(primals, tangents, **p):
    f, rois, ct, winner = primals
    fd, rd, ctd, _ = tangents
    if not _is_zero(rd):
        _unsupported("the second derivative w.r.t. box coordinates")
    out = boxes_vjp_p.bind(f, rois, ct, winner, **p)
    return out, _sum([None if _is_zero(fd) else boxes_vjp_p.bind(fd, rois, ct, winner, **p),
                      None if _is_zero(ctd) else boxes_vjp_p.bind(f, rois, ctd, winner, **p)], out)


def _boxes_vjp_transpose(g, f, rois, ct, winner, **p):
    if ad.is_undefined_primal(f) or ad.is_undefined_primal(rois):
        _unsupported("the mixed features/box-coordinate second derivative")
    if _is_zero(g):
        return None, None, ad.Zero(ct.aval), None
    return None, None, boxes_jvp_p.bind(f, rois, g, winner, **p), None


ad.primitive_jvps[forward_p] = _forward_jvp
ad.primitive_jvps[selected_p] = _selected_jvp
ad.primitive_transposes[selected_p] = _selected_transpose
ad.primitive_jvps[transpose_p] = _transpose_jvp
ad.primitive_transposes[transpose_p] = _transpose_transpose
ad.primitive_jvps[boxes_jvp_p] = _boxes_jvp_jvp
ad.primitive_transposes[boxes_jvp_p] = _boxes_jvp_transpose
ad.primitive_jvps[boxes_vjp_p] = _boxes_vjp_jvp
ad.primitive_transposes[boxes_vjp_p] = _boxes_vjp_transpose


# --------------------------------------------------------------------------- batching
#
# A vmapped axis B folds into the kernels' own leading axes: into the images
# (B*N, with each copy's rois re-indexed to its own images) when the features
# (or the features-shaped result) are batched, else into the roi rows (B*K).
# The (N, R, 4) form becomes rows first. Invalid batch indices stay invalid.

def _tangent_rows_from_boxes(boxes):
    """Like _args.rows_from_boxes for a tangent/cotangent: the index column is 0."""
    *lead, n, r, _ = boxes.shape
    zero = jnp.zeros((*lead, n, r, 1), boxes.dtype)
    return jnp.concatenate([zero, boxes], axis=-1).reshape(*lead, n * r, 5)


def _reindex(rows, batch, num_images):
    """(B, K, 5) rows of copy b -> batch index b*N + n; invalid ones -> -1."""
    idx = rows[..., 0]
    valid = (idx >= 0) & (idx < num_images) & (idx == jnp.floor(idx))
    offset = (jnp.arange(batch, dtype=rows.dtype) * num_images)[:, None]
    return rows.at[..., 0].set(jnp.where(valid, idx + offset, -1))


def _make_batching_rule(prim, roles, result):
    """roles: per operand, 'features' | 'rois' | 'rois_like' | 'out_like' | 'winner'.
    result: 'out' | 'out_winner' | 'features' | 'rois'."""

    def rule(args, dims, **p):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        moved = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
        batched = [d is not None for d in dims]
        rois_i = roles.index("rois")
        rois_rank = moved[rois_i].ndim - batched[rois_i]
        per_image = rois_rank == 3
        feat_i = roles.index("features") if "features" in roles else None
        num_images = (moved[feat_i].shape[batched[feat_i]] if feat_i is not None
                      else p["features_shape"][0])
        by_image = (batched[feat_i] if feat_i is not None else True)

        new = []
        for role, a, b in zip(roles, moved, batched):
            if role == "winner" and p["mode"] != "max":
                new.append(a if not b else a[0])
                continue
            if role == "features":
                new.append(a.reshape((size * a.shape[1],) + a.shape[2:]) if b else a)
                continue
            if not b:
                a = jnp.broadcast_to(a, (size,) + a.shape)
            if role in ("rois", "rois_like") and per_image:
                a = _args.rows_from_boxes(a) if role == "rois" else _tangent_rows_from_boxes(a)
            elif role in ("out_like", "winner") and per_image:
                a = a.reshape((size, a.shape[1] * a.shape[2]) + a.shape[3:])
            if role == "rois" and by_image:
                a = _reindex(a, size, num_images)
            new.append(a.reshape((size * a.shape[1],) + a.shape[2:]))
        if "features_shape" in p:
            fs = p["features_shape"]
            p = dict(p, features_shape=(size * fs[0],) + tuple(fs[1:]))
        out = prim.bind(*new, **p)

        def unfold_rows(x):
            x = x.reshape((size, x.shape[0] // size) + x.shape[1:])
            if per_image:
                x = x.reshape((size, num_images, -1) + x.shape[2:])
            return x

        if result == "out":
            return unfold_rows(out), 0
        if result == "out_winner":
            o, w = out
            if p["mode"] == "max":
                return (unfold_rows(o), unfold_rows(w)), (0, 0)
            return (unfold_rows(o), w), (0, None)
        if result == "features":
            return out.reshape((size, out.shape[0] // size) + out.shape[1:]), 0
        # rois: grad of (B*K, 5) rows back to the operand's form
        g = out.reshape((size, out.shape[0] // size, 5))
        if per_image:
            g = g[..., 1:].reshape((size, num_images, -1, 4))
        return g, 0

    batching.primitive_batchers[prim] = rule


_make_batching_rule(forward_p, ("features", "rois"), "out_winner")
_make_batching_rule(selected_p, ("features", "rois", "winner"), "out")
_make_batching_rule(transpose_p, ("out_like", "rois", "winner"), "features")
_make_batching_rule(boxes_jvp_p, ("features", "rois", "rois_like", "winner"), "out")
_make_batching_rule(boxes_vjp_p, ("features", "rois", "out_like", "winner"), "rois")
