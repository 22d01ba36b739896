"""`python -m jax_roialign bench`: the operators on standard detection workloads, next to
their peers, timed in one process.

Suites (`--suite`; workloads from `jax_roialign/_cli/workloads.py`, operators from the
registry, `jax_roialign/_src/operators.py`):

- ops (the default): every single-map operator of the registry (`bench=True`) against
  the pure-JAX reference (`jax_roialign.reference`) and, for those with a `torchvision`
  peer, torchvision.
- pyramid: multi_scale_roi_align (one fused call for all levels) against a per-level
  loop of our roi_align (each level's boxes pooled, scattered back: what the peers do),
  the pure-JAX reference and torchvision's MultiScaleRoIAlign.
- rotated_crop: roi_align_rotated against roi_align on the same boxes, per bilinear
  sample; crop_and_resize against TensorFlow's tf.image.crop_and_resize, which runs in a
  worker process (peers.TensorFlowWorker; still interleaved call by call with ours).

Each measurement is forward, or forward+backward (the gradient w.r.t. the features, with
the forward output also returned so that neither half can be optimised away), under
`jax.jit` (TensorFlow: `tf.function`). The implementations of a group are timed
INTERLEAVED (`timing.interleaved`): on a shared machine the load drifts, and only ratios
measured side by side hold. Each time is the median of `--repeats` calls after one
warm-up call (which includes compilation), fewer when they exceed `--budget` seconds.
Each timed call follows untimed calls of the same implementation, at least `--settle`
(default 1) and `--settle-ms` milliseconds of them (default 50): every implementation is
timed in its steady state, as a training loop calls it, not in the state the others'
calls leave it in (on a VM that returns freed memory to its host, a call after an idle
second, such as a slow peer's call, can take several times longer, and a call of a
millisecond stays slow for several more: benchmarks/cpu_memory_effects.py,
benchmarks/README.md "How many calls settle").
Each group's first row is the one its ratios ("x") are taken against; outputs are
checked against the first row computing the same operator ("max |diff|" of the forward).

The memory floor: at startup the bench measures this machine's read and write rates
(`timing.memory_rates`); a measurement's floor is the bytes any implementation must
read / the read rate + the bytes it must write / the write rate, where it must read the
features (every level), the boxes (and, with the backward, the output's gradient) once
and write the output (and the features' gradient) once. "floor" is floor time / time.
Counting the whole feature map as read assumes the boxes touch most of it, as they do
on every workload here (hundreds of boxes up to half the image); few small boxes could
be pooled reading less.

The position-sensitive ops need C divisible by PH*PW; they get C rounded down to a
multiple of it (at least PH*PW), e.g. 980 channels for c4.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import os
import platform
import sys
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jax_roialign as jra
from jax_roialign import reference

from .._src.api import FUNCTIONS
from .._src.installation import missing_kernels, path_taken
from .._src.lowering import cpu_instruction_set
from .._src.operators import BY_NAME, OPERATORS
from .peers import (TENSORFLOW, TORCHVISION, import_torchvision, tensorflow_version,
                    tf_crop_timers, torch_multiscale_timers, torch_timers, version)
from .progress import Progress
from .timing import cores, interleaved, jax_timers, memory_rates, vjp_timers
from .workloads import (CROP_SIZE, SUITES, WORKLOADS, Workload, normalised_boxes,
                        proposals, pyramid_proposals, rotated_from)

OURS, REFERENCE = "jax_roialign", "reference"
PEERS = (OURS, REFERENCE, TORCHVISION, TENSORFLOW)
MEASURES = ("forward", "forward_backward")
#: The default --settle-ms: untimed calls of an implementation take at least this long
#: before each of its timed calls (timing.interleaved; measured in benchmarks/README.md,
#: "How many calls settle").
SETTLE_MS = 50.0
GBPS_DEFINITION = ("minimal bytes / time; forward: features read + rois read + output "
                   "written; forward+backward: that + output gradient read + feature "
                   "gradient written")
FLOOR_DEFINITION = ("floor time / time, where floor time = minimal bytes read / measured "
                    "read rate + minimal bytes written / measured write rate (the minimal "
                    "bytes as for GB/s)")
OP_PATHS = [op.function for op in OPERATORS if op.bench]


class Cost(NamedTuple):
    """What any implementation of a measurement must move, and the forward's work."""
    forward_read: int       # bytes: the features (all levels) and the boxes
    forward_written: int    # the output
    backward_read: int      # forward+backward adds: the output's gradient
    backward_written: int   # and the features' gradient
    samples: int = 0        # bilinear samples of one channel each, in the forward

    def bytes(self, key):
        """(read, written) bytes of measurement `key`."""
        if key == "forward":
            return self.forward_read, self.forward_written
        return (self.forward_read + self.backward_read,
                self.forward_written + self.backward_written)


class Impl(NamedTuple):
    op: str                 # the operator it computes (its public path)
    name: str               # the implementation: jax_roialign, reference, torchvision 0.29.1
    make: Callable          # () -> (forward, forward_backward): closures, each may be None
    to_numpy: Callable      # forward's output -> float32 numpy, (K, C, PH, PW)
    cost: Cost
    channels: int


class Group(NamedTuple):
    """Implementations timed against each other; ratios against the first."""
    op: str                 # the table's op column
    impls: list
    note: str = ""          # printed above the group's rows
    per_sample: bool = False  # also show ns per bilinear sample, and take ratios on it


class Block(NamedTuple):
    """One table: a suite on one workload, layout and dtype."""
    suite: str
    workload: str
    layout: str
    dtype: str
    describe: Callable      # () -> (header lines, JSON info), creating the data
    groups: list


class Context(NamedTuple):
    peers: list
    ops: list               # the registry entries of the ops suite
    torchvision: tuple | None  # (torch, torchvision) where importable and wanted
    tensorflow: str | None  # its version, where importable, wanted and comparable


def operator_arguments(fn, w: Workload) -> dict:
    """The workload's configuration, as the keyword arguments `fn` takes."""
    config = dict(output_size=w.size, spatial_scale=w.scale, sampling_ratio=w.sampling,
                  aligned=False)
    return {k: v for k, v in config.items() if k in inspect.signature(fn).parameters}


def channels_for(op, w: Workload) -> int:
    bins = w.size * w.size
    return max(w.shape[1] // bins, 1) * bins if op.position_sensitive else w.shape[1]


def to_layout(a, layout):
    """An NCHW numpy array in `layout`."""
    return a if layout == "NCHW" else a.transpose(0, 2, 3, 1)


def jax_output(layout):
    """A JAX op's output in `layout` -> float32 NCHW numpy."""
    def convert(out):
        a = np.asarray(out).astype(np.float32)
        return a if layout == "NCHW" else a.transpose(0, 3, 1, 2)
    return convert


def torch_output(out):
    return out.detach().float().cpu().numpy()


def reference_form(op):
    """The pure-JAX form of registry entry `op`: jax_roialign.reference.<function>."""
    return getattr(reference, op.function.replace(".", "_"))


def samples(w: Workload, rois, channels, grid=None):
    """Bilinear samples of one channel each in a forward: per roi PH x PW bins of grid^2
    (default: the workload's sampling_ratio; 0 for an adaptive grid, not counted)."""
    grid = w.sampling if grid is None else grid
    return rois * w.size * w.size * grid * grid * channels if grid > 0 else 0


def _torch_dtype(torch, dtype):
    return getattr(torch, dtype)


# ---- the suites: each plans its blocks lazily (the data is made when a block runs) ----

def ops_block(name, w, layout, dtype, ctx) -> Block:
    groups = [ops_group(op, w, layout, dtype, ctx) for op in ctx.ops]

    def describe():
        return [describe_single(name, w, layout, dtype)] + torch_boxes_note(dtype, ctx), {}

    return Block("ops", name, layout, dtype, describe, groups)


def torch_boxes_note(dtype, ctx):
    """The header line saying that torchvision pools boxes rounded to `dtype`."""
    if ctx.torchvision is None or dtype == "float32":
        return []
    return [(f"{TORCHVISION} takes its boxes in the features' dtype: it pools them rounded "
             f"to {dtype}, so its max |diff| includes the rounding")]


def describe_single(name, w, layout, dtype):
    sr = "adaptive (0)" if w.sampling <= 0 else str(w.sampling)
    return (f"{name} ({w.what}): features {w.shape} {dtype} {layout}, {w.rois} rois, "
            f"{w.size}x{w.size}, scale 1/{round(1 / w.scale)}, sampling_ratio {sr}")


def ops_group(op, w, layout, dtype, ctx) -> Group:
    fn = FUNCTIONS[op.name]
    n, _, h, wd = w.shape
    c = channels_for(op, w)
    out_c = c // (w.size * w.size) if op.position_sensitive else c
    kwargs = operator_arguments(fn, w)
    item = jnp.dtype(dtype).itemsize
    cost = Cost(n * c * h * wd * item + w.rois * 5 * 4, w.rois * out_c * w.size ** 2 * item,
                w.rois * out_c * w.size ** 2 * item, n * c * h * wd * item)

    @functools.cache
    def data():
        rng = np.random.default_rng(0)
        f = rng.normal(size=(n, c, h, wd)).astype(np.float32)
        rois = proposals(rng, n, h, wd, w.scale, w.rois)
        cot = rng.normal(size=(w.rois, out_c, w.size, w.size)).astype(np.float32)
        # On the device once, not converted at every call.
        return (f, rois, cot, jnp.asarray(to_layout(f, layout), dtype), jnp.asarray(rois),
                jnp.asarray(to_layout(cot, layout), dtype))

    def jax_impl(name, impl_fn):
        def make():
            _, _, _, feats, rois, cot = data()
            return jax_timers(impl_fn, kwargs, feats, rois, cot, layout)
        return Impl(op.function, name, make, jax_output(layout), cost, c)

    impls = []
    if OURS in ctx.peers:
        impls.append(jax_impl(OURS, fn))
    if REFERENCE in ctx.peers:
        impls.append(jax_impl(REFERENCE, reference_form(op)))
    if ctx.torchvision is not None and op.torchvision:
        torch, torchvision = ctx.torchvision

        def make_torch():
            f, rois, cot = data()[:3]
            tdtype = _torch_dtype(torch, dtype)
            return torch_timers(getattr(torchvision.ops, op.torchvision), kwargs,
                                torch.from_numpy(f).to(tdtype), torch.from_numpy(rois),
                                torch.from_numpy(cot).to(tdtype))
        impls.append(Impl(op.function, f"{TORCHVISION} {version(torchvision)}", make_torch,
                          torch_output, cost, c))
    return Group(op.function, impls)


def pyramid_block(name, w, layout, dtype, ctx) -> Block:
    """multi_scale_roi_align: fused, a per-level loop of roi_align, the reference,
    torchvision's MultiScaleRoIAlign."""
    op, single = BY_NAME["multi_scale_roi_align"], BY_NAME["roi_align"]
    fused, per_level = FUNCTIONS[op.name], FUNCTIONS[single.name]
    shapes, scales = w.level_shapes(), w.level_scales()
    n, c = w.shape[:2]
    count = (w.rois // n) * n
    item = jnp.dtype(dtype).itemsize
    feature_bytes = sum(math.prod(s) for s in shapes) * item
    out_bytes = count * c * w.size ** 2 * item
    cost = Cost(feature_bytes + count * 5 * 4, out_bytes, out_bytes, feature_bytes,
                samples(w, count, c))
    config = dict(output_size=w.size, spatial_scales=scales, sampling_ratio=w.sampling,
                  aligned=False, layout=layout)

    @functools.cache
    def data():
        rng = np.random.default_rng(0)
        levels = [rng.normal(size=s).astype(np.float32) for s in shapes]
        rois = pyramid_proposals(rng, w)
        cot = rng.normal(size=(count, c, w.size, w.size)).astype(np.float32)
        # torchvision's mapper (level_of's default), computed once here for the loop
        # (jit needs each level's box count when it traces) and for the header.
        level = np.asarray(jra.level_of(rois, scales))
        return (levels, rois, cot, level, [jnp.asarray(to_layout(f, layout), dtype)
                                           for f in levels],
                jnp.asarray(rois), jnp.asarray(to_layout(cot, layout), dtype))

    def loop(feats, rois):
        # As torchvision's MultiScaleRoIAlign: pool each level's boxes, scatter back.
        level = data()[3]
        out = None
        for i, f in enumerate(feats):
            index = np.flatnonzero(level == i)
            if not index.size:
                continue
            part = per_level(f, rois[index], w.size, scales[i], w.sampling, False,
                             layout=layout)
            if out is None:
                out = jnp.zeros((count,) + part.shape[1:], part.dtype)
            out = out.at[index].set(part)
        return out

    def jax_impl(name, call):
        def make():
            feats, rois, cot = data()[4:]
            return vjp_timers(call, feats, rois, cot)
        return Impl(op.function, name, make, jax_output(layout), cost, c)

    impls = []
    if OURS in ctx.peers:
        impls.append(jax_impl(OURS, lambda f, r: fused(f, r, **config)))
        impls.append(jax_impl(f"{OURS} loop", loop))
    if REFERENCE in ctx.peers:
        impls.append(jax_impl(REFERENCE, lambda f, r: reference_form(op)(f, r, **config)))
    if ctx.torchvision is not None:
        torch, torchvision = ctx.torchvision

        def make_torch():
            levels, rois, cot = data()[:3]
            tdtype = _torch_dtype(torch, dtype)
            return torch_multiscale_timers([torch.from_numpy(f).to(tdtype) for f in levels],
                                           torch.from_numpy(rois), w.image_size(), w.size,
                                           w.sampling, torch.from_numpy(cot).to(tdtype))
        impls.append(Impl(op.function, f"{TORCHVISION} {version(torchvision)}", make_torch,
                          torch_output, cost, c))
    note = (f"{OURS}: one fused call; {OURS} loop: {single.function} on each level's boxes, "
            f"scattered back (levels mapped once outside the timed calls)"
            + (f"; {TORCHVISION}: MultiScaleRoIAlign" if ctx.torchvision else ""))

    def describe():
        level = data()[3]
        counts = np.bincount(level[level >= 0], minlength=len(scales))
        names = [f"P{round(-math.log2(s))}" for s in scales]
        sr = "adaptive (0)" if w.sampling <= 0 else str(w.sampling)
        lines = [(f"{name} ({w.what}): levels {', '.join(str(s[2:]) for s in shapes)} of "
                  f"{w.shape[:2]} {dtype} {layout}, {count} rois ({count // n} per image), "
                  f"{w.size}x{w.size}, scales 1/{round(1 / scales[0])}..1/"
                  f"{round(1 / scales[-1])}, sampling_ratio {sr}"),
                 "boxes per level (torchvision's mapper): "
                 + ", ".join(f"{k} {v}" for k, v in zip(names, counts))]
        lines += torch_boxes_note(dtype, ctx)
        return lines, dict(boxes_per_level=dict(zip(names, map(int, counts))))

    return Block("pyramid", name, layout, dtype, describe, [Group(op.function, impls, note)])


def rotated_crop_block(name, w, layout, dtype, ctx) -> Block:
    """roi_align_rotated against roi_align per sample; crop_and_resize against
    TensorFlow's."""
    align, rotated = BY_NAME["roi_align"], BY_NAME["roi_align_rotated"]
    crop = BY_NAME["crop_and_resize"]
    n, c, h, wd = w.shape
    k = w.rois
    item = jnp.dtype(dtype).itemsize
    feature_bytes = n * c * h * wd * item
    out_bytes = k * c * w.size ** 2 * item
    crop_bytes = k * c * CROP_SIZE ** 2 * item
    # Both aligned (roi_align_rotated's default): the same sample grid, only rotated.
    config = dict(output_size=w.size, spatial_scale=w.scale, sampling_ratio=w.sampling,
                  aligned=True, layout=layout)

    @functools.cache
    def data():
        rng = np.random.default_rng(0)
        f = rng.normal(size=(n, c, h, wd)).astype(np.float32)
        rows = proposals(rng, n, h, wd, w.scale, w.rois)  # the ops suite's boxes
        turned = rotated_from(rng, rows)
        cot = rng.normal(size=(k, c, w.size, w.size)).astype(np.float32)
        boxes, index = normalised_boxes(rows, w.scale, h, wd)
        crop_cot = rng.normal(size=(k, c, CROP_SIZE, CROP_SIZE)).astype(np.float32)
        feats = jnp.asarray(to_layout(f, layout), dtype)
        return dict(f=f, rows=rows, boxes=boxes, index=index, crop_cot=crop_cot, feats=feats,
                    rows_j=jnp.asarray(rows), turned_j=jnp.asarray(turned),
                    cot_j=jnp.asarray(to_layout(cot, layout), dtype),
                    crop_j=(jnp.asarray(boxes), jnp.asarray(index)),
                    crop_cot_j=jnp.asarray(to_layout(crop_cot, layout), dtype))

    align_cost = Cost(feature_bytes + k * 5 * 4, out_bytes, out_bytes, feature_bytes,
                      samples(w, k, c))
    rotated_cost = align_cost._replace(forward_read=feature_bytes + k * 6 * 4)
    # One bilinear sample per output element: the boxes and their indices read.
    crop_cost = Cost(feature_bytes + k * 5 * 4, crop_bytes, crop_bytes, feature_bytes,
                     k * CROP_SIZE ** 2 * c)

    def jax_impl(op, name, call, rois_key, cot_key, cost):
        def make():
            d = data()
            return vjp_timers(call, d["feats"], d[rois_key], d[cot_key])
        return Impl(op.function, name, make, jax_output(layout), cost, c)

    fn_align, fn_rotated = FUNCTIONS[align.name], FUNCTIONS[rotated.name]
    ref_align, ref_rotated = reference_form(align), reference_form(rotated)
    turn = []
    if OURS in ctx.peers:
        turn.append(jax_impl(align, OURS, lambda f, r: fn_align(f, r, **config),
                             "rows_j", "cot_j", align_cost))
        turn.append(jax_impl(rotated, OURS, lambda f, r: fn_rotated(f, r, **config),
                             "turned_j", "cot_j", rotated_cost))
    if REFERENCE in ctx.peers:
        turn.append(jax_impl(align, REFERENCE, lambda f, r: ref_align(f, r, **config),
                             "rows_j", "cot_j", align_cost))
        turn.append(jax_impl(rotated, REFERENCE, lambda f, r: ref_rotated(f, r, **config),
                             "turned_j", "cot_j", rotated_cost))

    fn_crop, ref_crop = FUNCTIONS[crop.name], reference_form(crop)
    crops = []
    if OURS in ctx.peers:
        crops.append(jax_impl(crop, OURS, lambda f, r: fn_crop(f, *r, CROP_SIZE, layout=layout),
                              "crop_j", "crop_cot_j", crop_cost))
    if REFERENCE in ctx.peers:
        crops.append(jax_impl(crop, REFERENCE,
                              lambda f, r: ref_crop(f, *r, CROP_SIZE, layout=layout),
                              "crop_j", "crop_cot_j", crop_cost))
    if ctx.tensorflow is not None:
        def make_tf():
            d = data()
            image = d["f"].transpose(0, 2, 3, 1).astype(jnp.dtype(dtype))
            # TensorFlow's output (and so its output gradient) is float32 for any image.
            return tf_crop_timers(image, d["boxes"], d["index"], (CROP_SIZE, CROP_SIZE),
                                  d["crop_cot"].transpose(0, 2, 3, 1))
        crops.append(Impl(crop.function, f"{TENSORFLOW} {ctx.tensorflow}", make_tf,
                          jax_output("NHWC"), crop_cost, c))

    groups = [Group(f"{rotated.function} vs {align.function}", turn,
                    f"the same boxes, rotated by a random angle for {rotated.function}; both "
                    f"aligned=True; x: time per sample / the first row's", per_sample=True),
              Group(crop.function, crops,
                    f"{CROP_SIZE}x{CROP_SIZE} bilinear crops of the same boxes (normalised)"
                    + (f"; {TENSORFLOW}: tf.image.crop_and_resize, NHWC, {cores()} intra-op "
                       f"threads, in a process of its own" if ctx.tensorflow is not None
                       else ""),
                    per_sample=True)]

    def describe():
        return [describe_single(name, w, layout, dtype)], {}

    return Block("rotated_crop", name, layout, dtype, describe, [g for g in groups if g.impls])


PLANS = {"ops": ops_block, "pyramid": pyramid_block, "rotated_crop": rotated_crop_block}
assert set(PLANS) == set(SUITES), "every suite of workloads.py needs its plan here"


# ---- measuring a group -------------------------------------------------------------

def _error(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()] or [""]
    # A message that opens with a heading ("in user code:", TensorFlow's) says what went
    # wrong on its last line.
    line = lines[-1] if lines[0].endswith(":") else lines[0]
    name = type(e).__name__
    return f"{name}: {line.removeprefix(f'{name}: ')[:160]}"


def measure_group(block, group, args, rates, progress):
    """Rows (one dict per implementation) of one group, its implementations interleaved."""
    rows, timers = [], []
    for impl in group.impls:
        row = dict(suite=block.suite, workload=block.workload, layout=block.layout,
                   dtype=block.dtype, group=group.op, op=impl.op, impl=impl.name,
                   channels=impl.channels, samples=impl.cost.samples)
        for key in MEASURES:
            read, written = impl.cost.bytes(key)
            row[f"bytes_{key}"] = int(read + written)
            row[f"{key}_floor_ms"] = rates.floor_ms(read, written)
        try:
            timers.append(impl.make())
        except Exception as e:  # a peer that cannot even start is a row, not a crash
            timers.append((None, None))
            row["forward_error"] = row["forward_backward_error"] = _error(e)
        rows.append(row)
    calls = 1 + args.repeats  # per implementation and measurement, as progress counts them
    for m, key in enumerate(MEASURES):
        progress.doing(f"{block.workload} {block.layout} {block.dtype} {group.op} "
                       f"{key.replace('_backward', '+backward')}")
        live = [i for i, t in enumerate(timers) if t[m] is not None]
        progress.advance(calls * (len(timers) - len(live)))
        timed = interleaved([timers[i][m] for i in live], args.repeats, args.budget, progress,
                            args.settle, args.settle_ms)
        outputs = {}
        for i, t in zip(live, timed):
            row = rows[i]
            if t.error is not None:
                row[f"{key}_error"] = _error(t.error)
                continue
            row[f"{key}_ms"], row[f"{key}_first_call_ms"], row[f"{key}_calls"] = \
                t.ms, t.first_call_ms, t.calls
            row[f"{key}_gbps"] = row[f"bytes_{key}"] / t.ms / 1e6
            row[f"{key}_floor_fraction"] = row[f"{key}_floor_ms"] / t.ms
            if row["samples"]:
                row[f"{key}_ns_per_sample"] = t.ms * 1e6 / row["samples"]
            if key == "forward":
                outputs[i] = t.result
        if key == "forward":
            agreement(group, rows, outputs)
        del timed, outputs
    del timers  # the closures hold the group's device arrays
    base = rows[0] if rows else {}
    unit = "_ns_per_sample" if group.per_sample else "_ms"
    for r in rows:
        for key in MEASURES:
            if f"{key}{unit}" in r and f"{key}{unit}" in base:
                # How many times longer the row takes than the group's first (> 1: the
                # first is faster).
                r[f"{key}_ratio"] = r[f"{key}{unit}"] / base[f"{key}{unit}"]
    return rows


def agreement(group, rows, outputs):
    """Each row's forward output against the first row's of the same operator: the
    largest absolute difference (a wrong peer would make its timing meaningless)."""
    first = {}
    for i, impl in enumerate(group.impls):
        if i not in outputs:
            continue
        try:
            out = impl.to_numpy(outputs[i])
        except Exception as e:
            rows[i]["forward_max_abs_diff_error"] = _error(e)
            continue
        if impl.op not in first:
            first[impl.op] = (rows[i]["impl"], out)
            continue
        against, expected = first[impl.op]
        rows[i]["compared_with"] = against
        if out.shape != expected.shape:
            rows[i]["forward_max_abs_diff_error"] = f"shape {out.shape}, not {expected.shape}"
        else:
            rows[i]["forward_max_abs_diff"] = float(np.max(np.abs(out - expected))) \
                if out.size else 0.0


# ---- the table ---------------------------------------------------------------------

def header(per_sample):
    sample = f"{'ns/smp':>8}" if per_sample else ""
    return (f"{'op':<22}{'implementation':<22}{'fwd ms':>10}{sample}{'x':>8}{'floor':>7}"
            f"{'fwd+bwd ms':>12}{sample}{'x':>8}{'floor':>7}{'max |diff|':>12}")


def format_row(r, first, repeats, per_sample, label):
    """The row's table line, then one line per failed measurement."""
    def cell(key, width):
        sample = 8 if per_sample else 0
        if f"{key}_ms" not in r:
            return f"{'failed':>{width + 1}}{'':>{sample + 15}}"
        # Times from fewer calls than --repeats (the --budget ran out) are marked * (~ for
        # the first call alone); the group's first row's ratios (1.00x) are left blank.
        calls = r[f"{key}_calls"]
        mark = "~" if calls == 0 else "*" if calls < repeats else " "
        ratio = f"{r[f'{key}_ratio']:7.2f}x" if f"{key}_ratio" in r and not first \
            else f"{'':>8}"
        ns = f"{r[f'{key}_ns_per_sample']:8.2f}" if per_sample and f"{key}_ns_per_sample" \
            in r else f"{'':>{sample}}"
        return (f"{r[f'{key}_ms']:{width}.2f}{mark}{ns}{ratio}"
                f"{100 * r[f'{key}_floor_fraction']:6.1f}%")

    diff = (f"{r['forward_max_abs_diff']:12.1e}" if "forward_max_abs_diff" in r
            else f"{'?':>12}" if "forward_max_abs_diff_error" in r else "")
    lines = [f"{label:<22}{r['impl']:<22}{cell('forward', 9)}"
             f"{cell('forward_backward', 11)}{diff}".rstrip()]
    lines += [f"{'':<22}  {key.replace('_backward', '+backward')} failed: {r[f'{key}_error']}"
              for key in MEASURES if f"{key}_error" in r]
    if "forward_max_abs_diff_error" in r:
        lines.append(f"{'':<22}  output check failed: {r['forward_max_abs_diff_error']}")
    return "\n".join(lines)


def cpu_name():
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(rates):
    return dict(jax_roialign=jra.__version__, jax=jax.__version__, backend=jax.default_backend(),
                kernels=jra.kernel_platforms(), cpu_instruction_set=cpu_instruction_set(),
                cpu=cpu_name(),
                cores=cores(), python=platform.python_version(),
                memory=rates._asdict(), load_at_start=load())


def load():
    """The 1, 5 and 15 minute load averages (other jobs on a shared machine inflate
    every time), where the platform has them."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def settling(calls, ms):
    """The untimed calls before each timed one, in words (the header's)."""
    if ms <= 0:
        return f"{calls} untimed call{'s' if calls != 1 else ''}"
    return f"untimed calls (at least {calls}, and {ms:g} ms of them)"


def _names(value, allowed, what):
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in names if v not in allowed]
    if unknown or not names:
        raise SystemExit(f"bench: unknown {what} {', '.join(unknown) or repr(value)}; choose "
                         f"from {', '.join(allowed)}")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="ops",
                   help="comma-separated, from " + "; ".join(
                       f"{k}: {s.what} (workloads {', '.join(s.default)})"
                       for k, s in SUITES.items()) + " (default: ops)")
    p.add_argument("--workload", default=None,
                   help="comma-separated, from " + ", ".join(
                       f"{k} ({w.what}{', a pyramid' if w.levels > 1 else ''})"
                       for k, w in WORKLOADS.items()) + "; the pyramid suite takes the "
                   "pyramids, the others the single maps (default: each suite's own)")
    p.add_argument("--tiny", action="store_true",
                   help="each suite's tiny workload only (CI: seconds)")
    p.add_argument("--ops", default=",".join(OP_PATHS),
                   help=f"the ops suite's operators, comma-separated, from "
                        f"{', '.join(OP_PATHS)} (default: all)")
    p.add_argument("--peers", default=",".join(PEERS),
                   help=f"comma-separated implementations to time, from {', '.join(PEERS)} "
                        f"(default: all; torchvision and tensorflow where importable)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per measurement (default 5)")
    p.add_argument("--settle", type=int, default=1,
                   help="untimed calls of an implementation right before each of its timed "
                        "calls (default 1; 0: every call follows the other implementations')")
    p.add_argument("--settle-ms", type=float, default=SETTLE_MS,
                   help="and more untimed calls until they have taken this many milliseconds "
                        f"(default {SETTLE_MS:g}: a call of a millisecond stays slow for several "
                        "more after another implementation's; 0: --settle calls alone)")
    p.add_argument("--budget", type=float, default=10.0,
                   help="seconds per implementation and measurement after which fewer than "
                        "--repeats calls are timed (marked *; ~ when the first call, which "
                        "compiles, exceeds it and is taken alone; default 10)")
    p.add_argument("--dtype", default="float32",
                   help="features dtypes, comma-separated, from float32, bfloat16, float16 "
                        "(default float32)")
    p.add_argument("--layout", default="NCHW",
                   help="features layouts of the JAX implementations, comma-separated, from "
                        "NCHW, NHWC (default NCHW; torchvision: always NCHW, TensorFlow NHWC)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout (the table goes to stderr)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")


def workloads_of(suite, args):
    """The workloads `suite` runs: --tiny's, --workload's of its kind, or its defaults."""
    s = SUITES[suite]
    if args.tiny:
        return [s.tiny]
    if args.workload is None:
        return list(s.default)
    chosen = _names(args.workload, list(WORKLOADS), "workload")
    mine = [k for k in chosen if (WORKLOADS[k].levels > 1) == s.pyramid]
    if not mine:
        fitting = [k for k, w in WORKLOADS.items() if (w.levels > 1) == s.pyramid]
        kind = "pyramid" if s.pyramid else "single-map"
        raise SystemExit(f"bench: the {suite} suite takes {kind} workloads "
                         f"({', '.join(fitting)}); --workload gave none")
    return mine


def run(args) -> int:
    suites = _names(args.suite, list(SUITES), "suite")
    plan = [(suite, name) for suite in suites for name in workloads_of(suite, args)]
    wanted = _names(args.ops, OP_PATHS, "op")
    peers = _names(args.peers, list(PEERS), "peer")
    layouts = _names(args.layout, ["NCHW", "NHWC"], "layout")
    dtypes = _names(args.dtype, ["float32", "bfloat16", "float16"], "dtype")
    out = sys.stderr if args.json else sys.stdout

    def log(line):
        print(line, file=out, flush=True)

    # Measured first, on the quiet process (no compiled functions, no peers' threads yet).
    rates = memory_rates(64 if args.tiny else 256)
    m = machine(rates)
    kernels = ", ".join(f"{k} ({m['cpu_instruction_set']})" if k == "cpu" else k
                        for k in m["kernels"])
    log(f"jax_roialign {m['jax_roialign']}, jax {m['jax']}, backend {m['backend']}, kernels for: "
        f"{kernels or 'none'}; {m['cpu']}, {m['cores']} cores; "
        f"median of {args.repeats} calls after a warm-up, ms; implementations interleaved, "
        f"each timed call after {settling(args.settle, args.settle_ms)} of its own")
    log(f"the {OURS} rows run {path_taken(m['backend'])}")
    problem = missing_kernels(m["backend"])
    if problem:
        log(f"WARNING: {problem}")
    log(f"memory, measured now: read {rates.read_gbps:.1f} GB/s, write {rates.write_gbps:.1f} "
        f"GB/s (numpy max / fill of {rates.megabytes} MB, best of 1 and {rates.threads} threads)")
    if m["load_at_start"]:
        log("load average (1, 5, 15 min) at start: "
            + ", ".join(f"{v:.2f}" for v in m["load_at_start"]))
    tv = import_torchvision() if TORCHVISION in peers and ("ops" in suites or
                                                           "pyramid" in suites) else None
    if TORCHVISION in peers and tv is None and ("ops" in suites or "pyramid" in suites):
        log("torchvision is not importable here: not timed")
    elif tv is not None:
        m["torchvision"] = version(tv[1])
        log(f"torchvision {version(tv[1])} (torch {tv[0].__version__}, "
            f"{tv[0].get_num_threads()} threads; always NCHW)")
    tf = None
    if TENSORFLOW in peers and "rotated_crop" in suites:
        if m["backend"] != "cpu":
            # tensorflow-cpu against a GPU backend would compare devices, not code.
            log(f"tensorflow: not timed on the {m['backend']} backend (compared on the CPU)")
        else:
            tf = tensorflow_version()
            log("tensorflow is not importable here: not timed" if tf is None else
                f"tensorflow {tf} ({cores()} intra-op threads; NHWC; in a worker process, "
                f"as its thread pools in this one would slow XLA's)")
            if tf is not None:
                m["tensorflow"] = tf
    log(f"x: the row's time / the group's first row's (> 1: the first row is faster). "
        f"floor: {FLOOR_DEFINITION}. *: fewer than {args.repeats} calls, as the --budget of "
        f"{args.budget:g} s ran out; ~: the first call alone, compilation included")
    ctx = Context(peers, [o for o in OPERATORS if o.bench and o.function in wanted], tv, tf)
    blocks = [PLANS[suite](name, WORKLOADS[name], layout, dtype, ctx)
              for suite, name in plan for layout in layouts for dtype in dtypes]
    total = sum(len(g.impls) for b in blocks for g in b.groups) * len(MEASURES) \
        * (1 + args.repeats)
    results, described = [], []
    with Progress(total, "bench", args.quiet) as progress:
        while blocks:
            block = blocks.pop(0)  # dropped when done: its data goes with it
            lines, info = block.describe()
            described.append(dict(suite=block.suite, workload=block.workload,
                                  layout=block.layout, dtype=block.dtype, lines=lines, **info))
            progress.log("", out)
            progress.log(f"[{block.suite}] " + lines[0], out)
            for line in lines[1:]:
                progress.log(line, out)
            shown = None  # the column header last printed in this block
            for group in block.groups:
                if group.note:
                    progress.log(f"  ({group.note})", out)
                if group.note or header(group.per_sample) != shown:
                    shown = header(group.per_sample)
                    progress.log(shown, out)
                rows = measure_group(block, group, args, rates, progress)
                for i, r in enumerate(rows):
                    # The op is named where it changes (a group may hold two).
                    label = r["op"] if i == 0 or r["op"] != rows[i - 1]["op"] else ""
                    progress.log(format_row(r, i == 0, args.repeats, group.per_sample, label),
                                 out)
                results += rows
            del block
            # Many distinct compilations in one process can exhaust vm.max_map_count
            # (docs/architecture.md); each block's functions are not called again.
            jax.clear_caches()
    m["load_at_end"] = load()
    if m["load_at_end"]:
        log("\nload average (1, 5, 15 min) at end: "
            + ", ".join(f"{v:.2f}" for v in m["load_at_end"]))
    if args.json:
        print(json.dumps(dict(machine=m, repeats=args.repeats, settle=args.settle,
                              settle_ms=args.settle_ms,
                              budget_s=args.budget,
                              suites=suites, layouts=layouts, dtypes=dtypes,
                              gbps_definition=GBPS_DEFINITION,
                              floor_definition=FLOOR_DEFINITION,
                              workloads={k: dict(WORKLOADS[k]._asdict(),
                                                 levels_shapes=WORKLOADS[k].level_shapes())
                                         for k in dict.fromkeys(n for _, n in plan)},
                              blocks=described, results=results), indent=1))
    return 0
