"""The five primitives every operator shares (cc/kernel_list.h): abstract evaluation,
lowering, batching, and the AD rules that make any order of derivative in the features
and first derivatives in the boxes.

Every operator (parameter `op`) is linear in `features` once its max-mode winners are
fixed, so differentiation closes over five kernels:

    forward_p            (features, rois)                   -> (out, winner)
    forward_selected_p   (x, rois, winner)                  -> out        linear in x
    backward_features_p  (cotangent, rois, winner)          -> grad x     forward_selected_p^T
    forward_boxes_p      (features, rois, rois_dot, winner) -> out_dot    linear in rois_dot
    backward_boxes_p     (features, rois, cotangent, winner) -> grad rois forward_boxes_p^T

`winner` is the int32 index of each bin's winning sample in max mode (shaped like `out`),
an empty (0,) array in avg mode. Every primitive carries the same parameters: op,
output_size, spatial_scale, sampling_ratio, aligned, mode, layout, deterministic
(backward_features_p also features_shape). Operators without a box derivative (the
registry's `box_derivative`) get a zero one. Second derivatives in which box coordinates
vary raise UnsupportedDerivativeError.
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
from jax._src import dispatch
from jax.extend.core import Primitive
from jax.interpreters import ad, batching

from . import args as _args
from . import lowering as _lowering
from .operators import BY_NAME
from .shapes import out_aval, winner_aval


class UnsupportedDerivativeError(NotImplementedError):
    """Second derivatives in which box coordinates vary are not provided."""


def _unsupported(what: str):
    raise UnsupportedDerivativeError(
        f"jax_roialign: {what} is not supported; derivatives of any order w.r.t. features and "
        "first derivatives w.r.t. box coordinates are. Wrap rois in jax.lax.stop_gradient "
        "where the box derivative is not wanted.")


# --------------------------------------------------------------------------- primitives

def _primitive(kernel, abstract_eval, multiple_results=False):
    """The primitive of `kernel` (cc/kernel_list.h), lowered to that kernel."""
    prim = Primitive(f"jax_roialign_{kernel}")
    prim.multiple_results = multiple_results
    prim.def_impl(partial(dispatch.apply_primitive, prim))
    prim.def_abstract_eval(abstract_eval)
    _lowering.register(prim, kernel)
    return prim


def _forward_abstract(features, rois, **p):
    out = out_aval(features, rois, p)
    return out, winner_aval(out, p)


forward_p = _primitive("forward", _forward_abstract, True)
forward_selected_p = _primitive("forward_selected",
                                lambda x, rois, winner, **p: out_aval(x, rois, p))
backward_features_p = _primitive(
    "backward_features",
    lambda ct, rois, winner, *, features_shape, **p: ct.update(shape=tuple(features_shape)))
forward_boxes_p = _primitive("forward_boxes",
                             lambda f, rois, rois_dot, winner, **p: out_aval(f, rois, p))
backward_boxes_p = _primitive("backward_boxes",
                              lambda f, rois, ct, winner, **p: rois.update(shape=rois.shape))


def _without(p, *keys):
    return {k: v for k, v in p.items() if k not in keys}


# --------------------------------------------------------------------------- AD

def _is_zero(t):
    return type(t) is ad.Zero


def _box_tangent(t, p):
    """A box tangent, or None where the operator has no box derivative."""
    return None if _is_zero(t) or not BY_NAME[p["op"]].box_derivative else t


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
    out_dot = _sum([None if _is_zero(fd) else forward_selected_p.bind(fd, rois, winner, **p),
                    None if rd is None else forward_boxes_p.bind(f, rois, rd, winner, **p)], out)
    return (out, winner), (out_dot, ad.Zero(winner.aval.to_tangent_aval()))


def _forward_selected_jvp(primals, tangents, **p):
    x, rois, winner = primals
    xd, rd, _ = tangents
    rd = _box_tangent(rd, p)
    out = forward_selected_p.bind(x, rois, winner, **p)
    return out, _sum([None if _is_zero(xd) else forward_selected_p.bind(xd, rois, winner, **p),
                      None if rd is None else forward_boxes_p.bind(x, rois, rd, winner, **p)], out)


def _forward_selected_transpose(ct, x, rois, winner, **p):
    if ad.is_undefined_primal(rois):
        _unsupported("transposing w.r.t. box coordinates")
    if _is_zero(ct):
        return ad.Zero(x.aval), None, None
    return backward_features_p.bind(ct, rois, winner, features_shape=tuple(x.aval.shape), **p), None, None


def _backward_features_jvp(primals, tangents, **p):
    ct, rois, winner = primals
    ctd, rd, _ = tangents
    if _box_tangent(rd, p) is not None:
        _unsupported("the derivative of the feature gradient w.r.t. box coordinates")
    out = backward_features_p.bind(ct, rois, winner, **p)
    return out, _sum([None if _is_zero(ctd) else backward_features_p.bind(ctd, rois, winner, **p)], out)


def _backward_features_transpose(g, ct, rois, winner, *, features_shape, **p):
    if _is_zero(g):
        return ad.Zero(ct.aval), None, None
    return forward_selected_p.bind(g, rois, winner, **p), None, None


def _forward_boxes_jvp(primals, tangents, **p):
    f, rois, rd, winner = primals
    fd, rdd_rois, rdd, _ = tangents
    if not _is_zero(rdd_rois):
        _unsupported("the second derivative w.r.t. box coordinates")
    out = forward_boxes_p.bind(f, rois, rd, winner, **p)
    return out, _sum([None if _is_zero(fd) else forward_boxes_p.bind(fd, rois, rd, winner, **p),
                      None if _is_zero(rdd) else forward_boxes_p.bind(f, rois, rdd, winner, **p)], out)


def _forward_boxes_transpose(ct, f, rois, rd, winner, **p):
    if ad.is_undefined_primal(f) or ad.is_undefined_primal(rois):
        _unsupported("the mixed features/box-coordinate second derivative")
    if _is_zero(ct):
        return None, None, ad.Zero(rd.aval), None
    return None, None, backward_boxes_p.bind(f, rois, ct, winner, **p), None


def _backward_boxes_jvp(primals, tangents, **p):
    f, rois, ct, winner = primals
    fd, rd, ctd, _ = tangents
    if not _is_zero(rd):
        _unsupported("the second derivative w.r.t. box coordinates")
    out = backward_boxes_p.bind(f, rois, ct, winner, **p)
    return out, _sum([None if _is_zero(fd) else backward_boxes_p.bind(fd, rois, ct, winner, **p),
                      None if _is_zero(ctd) else backward_boxes_p.bind(f, rois, ctd, winner, **p)], out)


def _backward_boxes_transpose(g, f, rois, ct, winner, **p):
    if ad.is_undefined_primal(f) or ad.is_undefined_primal(rois):
        _unsupported("the mixed features/box-coordinate second derivative")
    if _is_zero(g):
        return None, None, ad.Zero(ct.aval), None
    return None, None, forward_boxes_p.bind(f, rois, g, winner, **p), None


ad.primitive_jvps[forward_p] = _forward_jvp
ad.primitive_jvps[forward_selected_p] = _forward_selected_jvp
ad.primitive_transposes[forward_selected_p] = _forward_selected_transpose
ad.primitive_jvps[backward_features_p] = _backward_features_jvp
ad.primitive_transposes[backward_features_p] = _backward_features_transpose
ad.primitive_jvps[forward_boxes_p] = _forward_boxes_jvp
ad.primitive_transposes[forward_boxes_p] = _forward_boxes_transpose
ad.primitive_jvps[backward_boxes_p] = _backward_boxes_jvp
ad.primitive_transposes[backward_boxes_p] = _backward_boxes_transpose


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
_make_batching_rule(forward_selected_p, ("features", "rois", "winner"), "out")
_make_batching_rule(backward_features_p, ("out_like", "rois", "winner"), "features")
_make_batching_rule(forward_boxes_p, ("features", "rois", "rois_like", "winner"), "out")
_make_batching_rule(backward_boxes_p, ("features", "rois", "out_like", "winner"), "rois")
