"""The pure-JAX cores' numerics: IEEE operations in the kernels' order, gathers,
the per-axis bilinear rules, and the bookkeeping every core shares.

Floating point
--------------
Geometry (box corners, bin sizes, sample positions, bilinear weights) is computed in
float32, or float64 when the features are float64, in torchvision's exact operation order
with plain IEEE operations::

    ys = (y1*s) - off;  rh = ye - ys;  bh = rh / PH;  gh = ceil(rh / PH)
    y  = (ys + ph*bh) + ((iy + .5)*bh) / gh
    val = ((w1*f1 + w2*f2) + w3*f3) + w4*f4;   acc = acc + val   (iy-major, ix-minor)
    out = acc / count

so that samples landing exactly on a discontinuity (``y == -1``, ``y == H``, the adaptive
``ceil``) fall on the same side as in torchvision's CPU kernel, and float32 results are
bit-identical to an IEEE float32 evaluation in that order.  XLA:CPU would otherwise
(a) contract ``a*b + c`` into an FMA and (b) rewrite ``x / d`` into ``x * (1/d)``
whenever ``d`` is a constant or a broadcast.  Two helpers prevent that:

* ``no_fma(p)`` = ``where(p == p, p, nan)`` around every product that feeds an addition
  (``optimization_barrier`` is not enough on jax 0.10.2);
* ``exact_div(x, d)`` divides by ``d`` through an ``optimization_barrier`` at ``x``'s
  full shape (its batched shape under ``vmap``), an operand that the simplifier cannot
  see as a constant or a broadcast.

Accumulation is float32 for float16/bfloat16 features, and the result is cast back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

#: Largest adaptive sampling grid (per bin, per axis) of the pure-JAX path: rois whose
#: adaptive grid ``ceil(rh/PH)`` exceeds it are sampled on a ``cap x cap`` grid, which
#: deviates from docs/semantics.md (see ``roi_align``'s module docstring).
ADAPTIVE_GRID_CAP = 16


def vma(x) -> frozenset:
    """The manual mesh axes (inside ``shard_map``) that array `x` varies over."""
    return jax.typeof(x).manual_axis_type.varying


def varying(x, axes):
    """`x`, typed to vary over the manual mesh axes `axes` too (no data moves)."""
    missing = tuple(sorted(frozenset(axes) - vma(x)))
    return lax.pcast(x, missing, to="varying") if missing else x


def loop_carry(carry, *inputs):
    """The initial `carry` of a loop over `inputs`, typed to vary where they do: inside
    ``shard_map`` a loop's carry must have its body's type, and the body mixes the
    carry with the inputs (an invariant initial carry, e.g. zeros, fails to trace)."""
    axes = frozenset().union(*(vma(x) for x in inputs))
    return jax.tree.map(lambda c: varying(c, axes), carry)


@jax.custom_jvp
def no_fma(p):
    """Returns ``p`` unchanged, hiding the product that made it from FMA contraction.

    Its derivative is the identity, NaN ``p`` included: differentiating the ``where``
    itself would give 0 there, and the feature gradient would lose every tap that reads
    a NaN (the kernels' transpose keeps it: the operators are linear in the features)."""
    return jnp.where(p == p, p, jnp.asarray(jnp.nan, p.dtype))


@no_fma.defjvp
def _no_fma_jvp(primals, tangents):
    return no_fma(primals[0]), tangents[0]


def exact_div(x, d):
    """IEEE ``x / d`` (no rewrite into ``x * (1/d)``); ``d`` is treated as a constant.

    The barrier must hold ``d`` at ``x``'s full shape: under ``vmap`` a ``d`` that is not
    batched would otherwise leave the barrier unbatched and be broadcast after it, and a
    divisor that is a broadcast is rewritten. The ``where`` on ``x`` batches it as ``x``."""
    d = lax.stop_gradient(jnp.asarray(d, x.dtype))
    d = jnp.broadcast_to(d, x.shape)
    d = lax.optimization_barrier(jnp.where(lax.stop_gradient(x) == 0, d, d))
    return x / d


@jax.custom_jvp
def gather_rows(table, idxs):
    """``tuple(table[i] for i in idxs)``, one gather of whole rows each (XLA fuses each
    into its consumer).  The JVP gathers them all at once, so that its transpose (the
    gradient w.r.t. ``table``) is ONE scatter-add: XLA:CPU runs one big scatter much
    faster than several small ones.  Indices are unsigned (no negative-index fix-up) and
    in bounds."""
    return tuple(table.at[i].get(mode="promise_in_bounds") for i in idxs)


@gather_rows.defjvp
def _gather_rows_jvp(primals, tangents):
    table, idxs = primals
    d = tangents[0].at[jnp.stack(idxs)].get(mode="promise_in_bounds")
    return gather_rows(table, idxs), tuple(d[j] for j in range(len(idxs)))


def valid_batch_index(b, n):
    """True where the batch index is a finite integer in [0, n)."""
    if jnp.issubdtype(b.dtype, jnp.integer) or b.dtype == jnp.bool_:
        return (b >= 0) & (b < n)
    # Checked in the rois' own dtype (before any cast to the geometry dtype).
    return jnp.isfinite(b) & (jnp.floor(b) == b) & (b >= 0) & (b < n)


def axis_interp(y, size):
    """docs/semantics.md's per-axis bilinear rules for sample positions ``y`` on an axis of ``size``.

    Returns (in_window, low index, high index, l, h) with ``l`` the weight of the high
    index and ``h = 1 - l`` the weight of the low one.  Clamped positions get a zero
    derivative (``where`` branches, never ``maximum``).
    """
    dt = y.dtype
    inwin = (y >= -1) & (y <= size)  # NaN fails
    y = jnp.where(inwin, y, jnp.zeros((), dt))  # sanitise what is never used
    y = jnp.where(y <= 0, jnp.zeros((), dt), y)
    lo = jnp.floor(y)
    top = lo >= size - 1
    lo = jnp.where(top, jnp.asarray(size - 1, dt), lo)
    hi = jnp.where(top, lo, lo + 1)
    y = jnp.where(top, lo, y)
    l = y - lo
    h = 1 - l
    return inwin, lo.astype(jnp.int32), hi.astype(jnp.int32), l, h


# --------------------------------------------------------------------- shared by the cores

def geometry_dtype(features):
    return jnp.float64 if features.dtype == jnp.float64 else jnp.float32


def feature_table(features, layout, PH, PW, position_sensitive):
    """The features as a ``(rows, C_out)`` table in the accumulation dtype
    (``geometry_dtype``), and ``(N, H, W, C_out)``.

    Widened here, once: every gather then reads it, so the features' cotangent sums in
    float32 for 16-bit features and is rounded to 16 bits once, by the transpose of this
    cast. Gathers from the 16-bit features would each round their scatter-add's
    contributions to 16 bits (roi_pool's gradient ~100 bfloat16 ulps off where rois
    overlap).

    Row of (image b, bin (ph, pw), cell (y, x)): ``base + y*W + x`` with ``base`` from
    ``bin_bases``.  Position-sensitive: the table is ``(N, PH, PW, H, W, C_out)`` so that the
    channels bin (ph, pw) reads, ``(c*PH + ph)*PW + pw`` for c in [0, C_out), form a row.
    """
    if layout == "NCHW":
        n, c, hgt, wid = features.shape
    elif layout == "NHWC":
        n, hgt, wid, c = features.shape
    else:
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    features = features.astype(geometry_dtype(features))
    if not position_sensitive:
        t = jnp.transpose(features, (0, 2, 3, 1)) if layout == "NCHW" else features
        return t.reshape(n * hgt * wid, c), (n, hgt, wid, c)
    if c % (PH * PW):
        raise ValueError(f"channels ({c}) must be divisible by PH*PW = {PH * PW}")
    cout = c // (PH * PW)
    if layout == "NCHW":
        t = features.reshape(n, cout, PH, PW, hgt, wid).transpose(0, 2, 3, 4, 5, 1)
    else:
        t = features.reshape(n, hgt, wid, cout, PH, PW).transpose(0, 4, 5, 1, 2, 3)
    return t.reshape(n * PH * PW * hgt * wid, cout), (n, hgt, wid, cout)


def bin_bases(b, hgt, wid, PH, PW, position_sensitive):
    """``(K, PH, PW)`` int32 table row of cell (0, 0) of every bin (see ``feature_table``)."""
    k = b.shape[0]
    if position_sensitive:
        ph = jnp.arange(PH, dtype=jnp.int32)[None, :, None]
        pw = jnp.arange(PW, dtype=jnp.int32)[None, None, :]
        return ((b[:, None, None] * PH + ph) * PW + pw) * (hgt * wid)
    return jnp.broadcast_to((b * (hgt * wid))[:, None, None], (k, PH, PW))


def batch_column(rois, n):
    """(alive, clipped int32 batch index) from the batch index column."""
    bidx = rois[:, 0]
    alive = valid_batch_index(bidx, n)
    return alive, bidx


def image_index(bidx, alive, n):
    return jnp.clip(jnp.where(alive, bidx, 0).astype(jnp.int32), 0, max(n - 1, 0))


def finalise(out, alive, dtype, layout):
    """Zero dead rows, cast, and lay out ``(K, PH, PW, C)`` as requested."""
    out = jnp.where(alive[:, None, None, None], out, jnp.zeros((), out.dtype))
    out = out.astype(dtype)
    if layout == "NCHW":
        out = jnp.transpose(out, (0, 3, 1, 2))
    return out


def take_rows(table, rows):
    """``table[rows]`` for int32 ``rows`` (any shape, in bounds)."""
    return table.at[rows].get(mode="promise_in_bounds")


def four_tap(table, base, ty, tx, wid):
    """Bilinear value ``((w1*f1 + w2*f2) + w3*f3) + w4*f4`` of every (bin) sample.

    ``ty = (low, high, l, h)`` per row ``(K, A)``, ``tx`` per column ``(K, B)``, ``base``
    ``(K, A, B)``; weights ``w1 = hy*hx, w2 = hy*lx, w3 = ly*hx, w4 = ly*lx`` (the kernels'
    ``make_sample`` / torchvision order).  Returns ``(K, A, B, C)``.
    """
    yl, yh, ly, hy = ty
    xl, xh, lx, hx = tx
    rl = base + (yl * wid)[:, :, None]
    rh = base + (yh * wid)[:, :, None]
    terms = ((hy[:, :, None] * hx[:, None, :], rl + xl[:, None, :]),
             (hy[:, :, None] * lx[:, None, :], rl + xh[:, None, :]),
             (ly[:, :, None] * hx[:, None, :], rh + xl[:, None, :]),
             (ly[:, :, None] * lx[:, None, :], rh + xh[:, None, :]))
    val = None
    for w, idx in terms:
        p = no_fma(w[..., None] * take_rows(table, idx))
        val = p if val is None else val + p
    return val


def cell_while(max_sy, max_sx, step, carry):
    """``carry = step(carry, dy, dx)`` for dy < max_sy (outer), dx < max_sx (inner): one
    ``lax.fori_loop`` of exactly ``max_sy * max_sx`` steps, for a loop that is not
    differentiated (a while loop has no transpose). No step is skipped, so no
    ``lax.cond`` copies the carry at every step, as `cell_loop`'s do."""
    def body(i, c):
        return step(c, i // max_sx, i % max_sx)

    return lax.fori_loop(jnp.int32(0), max_sy * max_sx, body, carry)


def cell_loop(bound_y, bound_x, max_sy, max_sx, step, carry, table):
    """``carry = step(carry, table, dy, dx)`` for dy < bound_y (outer), dx < bound_x
    (inner), skipping (``lax.cond``) dy >= max_sy and dx >= max_sx unless both are Python
    ints that skip nothing (a fixed grid).

    ``table``, what the steps read (the features), goes through the loop with the carry,
    and every branch returns it through an ``optimization_barrier`` (JAX would otherwise
    route an input that every branch returns unchanged around the ``lax.cond``): its
    cotangent is then a loop carry, and each transposed step adds its scatter to it in
    place. Closed over by the steps, each of the up to bound_y * bound_x transposed
    conds, skipped ones included, would return a whole table of cotangents, added to the
    running one. Its cotangent accumulates in the table's dtype (``feature_table``'s is
    the accumulation dtype), step by step.

    Every cell and every row is a ``jax.checkpoint`` (recomputed in the backward pass):
    a ``lax.cond`` inside a scan would otherwise store its residuals (the features among
    them) once per step."""
    if bound_y <= 0 or bound_x <= 0:
        return carry
    every = (isinstance(max_sy, int) and isinstance(max_sx, int) and max_sy >= bound_y
             and max_sx >= bound_x)

    def skip(c):
        return c[0], lax.optimization_barrier(c[1])

    def one_cell(c, dy, dx):
        if every:
            return step(c[0], c[1], dy, dx), c[1]
        take = lambda cc: (step(cc[0], cc[1], dy, dx), lax.optimization_barrier(cc[1]))
        return lax.cond(dx < max_sx, take, skip, c)

    def one_row(c, dy):
        def inner(cc, dx):
            return jax.checkpoint(one_cell)(cc, dy, dx), None

        row = lambda cc: lax.scan(inner, cc, jnp.arange(bound_x, dtype=jnp.int32))[0]
        return row(c) if every else lax.cond(dy < max_sy, row, skip, c)

    def outer(c, dy):
        return jax.checkpoint(one_row)(c, dy), None

    (carry, _), _ = lax.scan(outer, (carry, table), jnp.arange(bound_y, dtype=jnp.int32))
    return carry
