"""The five primitives every operator shares (cc/kernel_list.h): abstract evaluation,
lowering, batching, and the AD rules that make any order of derivative in the features
and first derivatives in the boxes.

Every operator (parameter `op`) is linear in its features once its max-mode winners are
fixed, so differentiation closes over five kernels. The features are one array per
level (`*fs`, one for the single-level operators), last, as the kernels take them:

    forward_p            (rois, levels, *fs)                   -> (out, winner)
    forward_selected_p   (rois, levels, winner, *xs)           -> out      linear in xs
    backward_features_p  (cotangent, rois, levels, winner)     -> grad xs  forward_selected_p^T
    forward_boxes_p      (rois, levels, rois_dot, winner, *fs) -> out_dot  linear in rois_dot
    backward_boxes_p     (rois, levels, cotangent, winner, *fs) -> grad rois forward_boxes_p^T

`levels` is the int32 level of each roi (shaped like the rois without their last axis),
or an empty (0,) array: every roi on level 0. `winner` is the int32 index of each bin's winning
sample in max mode (shaped like `out`), an empty (0,) array in avg mode. Every primitive
carries the same parameters (built in `api.apply`; backward_features_p also
features_shapes). Parameter `winners` is forward_p's alone: False (as the functions bind
it), its max-mode winners are (0,) and its kernel writes none; its JVP rule binds it True,
so only a differentiated forward pays for them. Operators without a box derivative (the
registry's `box_derivative`) get a zero one. Second derivatives in which box coordinates
vary raise UnsupportedDerivativeError.
"""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
from jax._src import dispatch
from jax.extend.core import Primitive
from jax.interpreters import ad, batching

from . import lowering as _lowering
from .operators import BY_NAME
from .shapes import (SIGNATURES, out_aval, reconciled, records_winners, result_aval,
                     winner_aval)


class UnsupportedDerivativeError(NotImplementedError):
    """Second derivatives in which box coordinates vary are not provided."""


def _unsupported(what: str):
    raise UnsupportedDerivativeError(
        f"jax_roialign: {what} is not supported; derivatives of any order w.r.t. features and "
        "first derivatives w.r.t. box coordinates are. Wrap rois in jax.lax.stop_gradient "
        "where the box derivative is not wanted.")


# --------------------------------------------------------------------------- primitives

class _KernelPrimitive(Primitive):
    """A kernel's primitive. Every bind, the AD and batching rules' included, first casts
    the operands to one vma (shapes.reconciled): the abstract evaluations require it."""

    def bind(self, *args, **params):
        return super().bind(*reconciled(args), **params)


def _primitive(kernel, abstract_eval, multiple_results=False):
    """The primitive of `kernel` (cc/kernel_list.h), lowered to that kernel."""
    prim = _KernelPrimitive(f"jax_roialign_{kernel}")
    prim.multiple_results = multiple_results
    prim.def_impl(partial(dispatch.apply_primitive, prim))
    prim.def_abstract_eval(partial(abstract_eval, prim.name))
    _lowering.register(prim, kernel)
    return prim


def _forward_abstract(name, rois, levels, *fs, **p):
    operands = (rois, levels, *fs)
    out = out_aval(name, fs[0], rois, p, operands)
    return out, winner_aval(name, out, p, operands)


def _forward_selected_abstract(name, rois, levels, winner, *xs, **p):
    return out_aval(name, xs[0], rois, p, (rois, levels, winner, *xs))


def _backward_features_abstract(name, ct, rois, levels, winner, *, features_shapes, **p):
    return [result_aval(name, shape, ct.dtype, (ct, rois, levels, winner))
            for shape in features_shapes]


def _forward_boxes_abstract(name, rois, levels, rd, winner, *fs, **p):
    return out_aval(name, fs[0], rois, p, (rois, levels, rd, winner, *fs))


def _backward_boxes_abstract(name, rois, levels, ct, winner, *fs, **p):
    return result_aval(name, rois.shape, rois.dtype, (rois, levels, ct, winner, *fs))


forward_p = _primitive("forward", _forward_abstract, True)
forward_selected_p = _primitive("forward_selected", _forward_selected_abstract)
backward_features_p = _primitive("backward_features", _backward_features_abstract, True)
forward_boxes_p = _primitive("forward_boxes", _forward_boxes_abstract)
backward_boxes_p = _primitive("backward_boxes", _backward_boxes_abstract)


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


def _levels_or_none(tangents, primals):
    """The tangents of the feature levels, zeros instantiated, or None if all are zero."""
    if all(_is_zero(t) for t in tangents):
        return None
    return [ad.instantiate_zeros(t) if _is_zero(t) else t for t, _ in zip(tangents, primals)]


def _forward_jvp(primals, tangents, **p):
    rois, levels, *fs = primals
    rd, _, *fds = tangents
    rd = _box_tangent(rd, p)
    # The tangent is linear at max mode's winners: record them, asked for or not.
    q = dict(p, winners=True)
    out, winner = forward_p.bind(rois, levels, *fs, **q)
    fds = _levels_or_none(fds, fs)
    out_dot = _sum([None if fds is None else forward_selected_p.bind(rois, levels, winner, *fds, **q),
                    None if rd is None else forward_boxes_p.bind(rois, levels, rd, winner, *fs, **q)],
                   out)
    if records_winners(q) and not records_winners(p):
        winner = winner.reshape(-1)[:0]  # the (0,) result p's forward has
    return (out, winner), (out_dot, ad.Zero(winner.aval.to_tangent_aval()))


def _forward_selected_jvp(primals, tangents, **p):
    rois, levels, winner, *xs = primals
    rd, _, _, *xds = tangents
    rd = _box_tangent(rd, p)
    out = forward_selected_p.bind(rois, levels, winner, *xs, **p)
    xds = _levels_or_none(xds, xs)
    return out, _sum([None if xds is None else forward_selected_p.bind(rois, levels, winner, *xds, **p),
                      None if rd is None else forward_boxes_p.bind(rois, levels, rd, winner, *xs, **p)],
                     out)


def _forward_selected_transpose(ct, rois, levels, winner, *xs, **p):
    if ad.is_undefined_primal(rois):
        _unsupported("transposing w.r.t. box coordinates")
    shapes = tuple(tuple(x.aval.shape) for x in xs)
    if _is_zero(ct):
        grads = [ad.Zero(x.aval) for x in xs]
    else:
        grads = backward_features_p.bind(ct, rois, levels, winner, features_shapes=shapes, **p)
    return [None, None, None, *grads]


def _backward_features_jvp(primals, tangents, *, features_shapes, **p):
    ct, rois, levels, winner = primals
    ctd, rd, _, _ = tangents
    if _box_tangent(rd, p) is not None:
        _unsupported("the derivative of the feature gradient w.r.t. box coordinates")
    out = backward_features_p.bind(ct, rois, levels, winner, features_shapes=features_shapes, **p)
    if _is_zero(ctd):
        return out, [ad.Zero(o.aval.to_tangent_aval()) for o in out]
    return out, backward_features_p.bind(ctd, rois, levels, winner,
                                         features_shapes=features_shapes, **p)


def _backward_features_transpose(gs, ct, rois, levels, winner, *, features_shapes, **p):
    if all(_is_zero(g) for g in gs):
        return ad.Zero(ct.aval), None, None, None
    gs = [jnp.zeros(shape, ct.aval.dtype) if _is_zero(g) else g
          for g, shape in zip(gs, features_shapes)]
    return forward_selected_p.bind(rois, levels, winner, *gs, **p), None, None, None


def _forward_boxes_jvp(primals, tangents, **p):
    rois, levels, rd, winner, *fs = primals
    rdd_rois, _, rdd, _, *fds = tangents
    if not _is_zero(rdd_rois):
        _unsupported("the second derivative w.r.t. box coordinates")
    out = forward_boxes_p.bind(rois, levels, rd, winner, *fs, **p)
    fds = _levels_or_none(fds, fs)
    return out, _sum([None if fds is None else forward_boxes_p.bind(rois, levels, rd, winner, *fds, **p),
                      None if _is_zero(rdd) else forward_boxes_p.bind(rois, levels, rdd, winner, *fs, **p)],
                     out)


def _forward_boxes_transpose(ct, rois, levels, rd, winner, *fs, **p):
    if ad.is_undefined_primal(rois) or any(ad.is_undefined_primal(f) for f in fs):
        _unsupported("the mixed features/box-coordinate second derivative")
    grad = (ad.Zero(rd.aval) if _is_zero(ct)
            else backward_boxes_p.bind(rois, levels, ct, winner, *fs, **p))
    return [None, None, grad, None] + [None] * len(fs)


def _backward_boxes_jvp(primals, tangents, **p):
    rois, levels, ct, winner, *fs = primals
    rd, _, ctd, _, *fds = tangents
    if not _is_zero(rd):
        _unsupported("the second derivative w.r.t. box coordinates")
    out = backward_boxes_p.bind(rois, levels, ct, winner, *fs, **p)
    fds = _levels_or_none(fds, fs)
    return out, _sum([None if fds is None else backward_boxes_p.bind(rois, levels, ct, winner, *fds, **p),
                      None if _is_zero(ctd) else backward_boxes_p.bind(rois, levels, ctd, winner, *fs, **p)],
                     out)


def _backward_boxes_transpose(g, rois, levels, ct, winner, *fs, **p):
    if ad.is_undefined_primal(rois) or any(ad.is_undefined_primal(f) for f in fs):
        _unsupported("the mixed features/box-coordinate second derivative")
    grad = (ad.Zero(ct.aval) if _is_zero(g)
            else forward_boxes_p.bind(rois, levels, g, winner, *fs, **p))
    return [None, None, grad, None] + [None] * len(fs)


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
# A vmapped axis B folds into the kernels' own leading axes. (N, R, 4) boxes: into the
# images, B inside N (image n*B + b), when the features (or the features-shaped result)
# are batched, else into each image's rois (N, B*R). Either way every operand keeps N
# as its leading factor, so a call split by images (or channels) stays split with no
# communication (lowering.py). (K, 5) rows: into the images (B*N, each copy's rows
# re-indexed to its own images) when the features are batched, else into the rows
# (B*K). Invalid batch indices stay invalid.

def _reindex(rows, batch, num_images):
    """(B, K, 1 + coords) rows of copy b -> batch index b*N + n; invalid ones -> -1."""
    idx = rows[..., 0]
    valid = (idx >= 0) & (idx < num_images) & (idx == jnp.floor(idx))
    offset = (jnp.arange(batch, dtype=rows.dtype) * num_images)[:, None]
    return rows.at[..., 0].set(jnp.where(valid, idx + offset, -1))


def _is_placeholder(role, a, batched):
    return role in ("winner", "levels") and a.ndim == int(batched) + 1 and a.shape[int(batched)] == 0


def _make_batching_rule(prim, kernel):
    fixed_roles, results = SIGNATURES[kernel]
    fixed = len(fixed_roles)

    def rule(args, dims, **p):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        moved = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
        batched = [d is not None for d in dims]
        rois_i = fixed_roles.index("rois")
        per_image = moved[rois_i].ndim - batched[rois_i] == 3
        features, features_batched = moved[fixed:], batched[fixed:]
        if features:
            num_images = features[0].shape[int(features_batched[0])]
            by_image = any(features_batched)
        else:
            num_images = p["features_shapes"][0][0]
            by_image = True

        def full(a, b):
            return a if b else jnp.broadcast_to(a, (size,) + a.shape)

        def fold(a):
            """(B, N, ...) -> (N*B, ...) by images, or (N, B*R, ...) by rois."""
            a = jnp.moveaxis(a, 0, 1)
            if by_image:
                return a.reshape((a.shape[0] * size,) + a.shape[2:])
            return a.reshape((a.shape[0], size * a.shape[2]) + a.shape[3:])

        def unfold(x):
            """The inverse of fold, for a result with the same leading axes."""
            if by_image:
                x = x.reshape((x.shape[0] // size, size) + x.shape[1:])
            else:
                x = x.reshape((x.shape[0], size, x.shape[1] // size) + x.shape[2:])
            return jnp.moveaxis(x, 1, 0)

        new = []
        for role, a, b in zip(fixed_roles, moved, batched):
            if _is_placeholder(role, a, b):
                new.append(a if not b else a[0])
            elif per_image:
                new.append(fold(full(a, b)))
            else:
                a = full(a, b)
                if role == "rois" and by_image:
                    a = _reindex(a, size, num_images)
                new.append(a.reshape((size * a.shape[1],) + a.shape[2:]))
        for f, b in zip(features, features_batched):
            if by_image:
                f = full(f, b)
                f = fold(f) if per_image else f.reshape((size * f.shape[1],) + f.shape[2:])
            new.append(f)
        if "features_shapes" in p:
            p = dict(p, features_shapes=tuple((size * s[0],) + tuple(s[1:])
                                              for s in p["features_shapes"]))
        out = prim.bind(*new, **p)
        out = list(out) if prim.multiple_results else [out]

        def result(name, x):
            if name == "winner" and not records_winners(p):
                return x, None
            if per_image:
                return unfold(x), 0
            return x.reshape((size, x.shape[0] // size) + x.shape[1:]), 0

        names = [n for name in results for n in ([name] * len(out) if name == "features" else [name])]
        outs, out_dims = zip(*(result(name, x) for name, x in zip(names, out)))
        if prim.multiple_results:
            return list(outs), list(out_dims)
        return outs[0], out_dims[0]

    batching.primitive_batchers[prim] = rule


for _prim, _kernel in ((forward_p, "forward"), (forward_selected_p, "forward_selected"),
                       (backward_features_p, "backward_features"),
                       (forward_boxes_p, "forward_boxes"), (backward_boxes_p, "backward_boxes")):
    _make_batching_rule(_prim, _kernel)
