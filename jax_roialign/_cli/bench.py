"""`python -m jax_roialign bench`: every operator on standard detection workloads.

Times the forward pass and forward+backward (the gradient w.r.t. the features, with the
forward output also returned so that neither half can be optimised away) of each
operator under `jax.jit`, next to the pure-JAX reference (`jax_roialign.reference`) and,
when importable in the same interpreter, torchvision (never a dependency). Each time is
the median of `--repeats` calls after one warm-up call (which includes compilation),
fewer when they exceed `--budget` seconds (the pure-JAX reference can take a minute a
call on the larger workloads).

Workloads: `jax_roialign/_cli/workloads.py` (`--workload`; `bench --help` lists them).
The position-sensitive ops need C divisible by PH*PW; they get C rounded down to a
multiple of it (at least PH*PW), e.g. 980 channels for c4.

Achieved GB/s = minimal bytes moved / time, where the minimal bytes are what any
implementation must touch at least once: forward = features read + rois read + output
written; forward+backward = that + output gradient read + feature gradient written.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jax_roialign as jra
from jax_roialign import reference

from .._src.api import FUNCTIONS
from .._src.installation import missing_kernels, path_taken
from .._src.operators import OPERATORS
from .progress import Progress
from .timing import jax_timers, median_ms
from .workloads import STANDARD, WORKLOADS, Workload, proposals

OURS, REFERENCE, TORCHVISION = "jax_roialign", "reference", "torchvision"
GBPS_DEFINITION = ("minimal bytes / time; forward: features read + rois read + output "
                   "written; forward+backward: that + output gradient read + feature "
                   "gradient written")
OP_PATHS = [op.function for op in OPERATORS if op.bench]


def operator_arguments(fn, w: Workload) -> dict:
    """The workload's configuration, as the keyword arguments `fn` takes."""
    config = dict(output_size=w.size, spatial_scale=w.scale, sampling_ratio=w.sampling,
                  aligned=False)
    return {k: v for k, v in config.items() if k in inspect.signature(fn).parameters}


def channels_for(op, w: Workload) -> int:
    bins = w.size * w.size
    return max(w.shape[1] // bins, 1) * bins if op.position_sensitive else w.shape[1]


def torch_device():
    """Where torchvision runs: CUDA when JAX runs on a GPU and torch sees one, so the
    peers are timed on the same device; else the CPU."""
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_timers(fn, kwargs, features, rois, cotangent):
    import torch

    device = torch_device()
    features, rois, cotangent = (t.to(device) for t in (features, rois, cotangent))
    # CUDA launches are asynchronous: wait for the work, as block_until_ready does.
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            fn(features, rois, **kwargs)
        sync()

    def forward_backward():
        x = features.detach().requires_grad_(True)
        fn(x, rois, **kwargs).backward(cotangent)
        sync()

    return forward, forward_backward


def import_torchvision():
    try:
        import torch
        import torchvision
    except ImportError:
        return None
    return torch, torchvision


MEASURES = ("forward", "forward_backward")


def _error(e: Exception) -> str:
    lines = str(e).strip().splitlines() or [""]
    return f"{type(e).__name__}: {lines[0][:160]}"


def implementations(op, peers, torchvision_importable):
    """The implementations timed for `op`."""
    return [p for p in peers if p != TORCHVISION or (torchvision_importable and op.torchvision)]


def bench_op(op, name: str, w: Workload, args, progress):
    """Rows (one dict per implementation) for one operator on one workload."""
    fn = FUNCTIONS[op.name]
    rng = np.random.default_rng(0)
    n, _, h, wd = w.shape
    c = channels_for(op, w)
    dtype = jnp.dtype(args.dtype)
    f_nchw = rng.normal(size=(n, c, h, wd)).astype(np.float32)
    rois = proposals(rng, n, h, wd, w.scale, w.rois)
    cot_nchw = rng.normal(size=(w.rois, c // (w.size * w.size) if op.position_sensitive else c,
                                w.size, w.size)).astype(np.float32)
    to_layout = (lambda a: a) if args.layout == "NCHW" else (lambda a: a.transpose(0, 2, 3, 1))
    feats = jnp.asarray(to_layout(f_nchw), dtype)
    cot = jnp.asarray(to_layout(cot_nchw), dtype)
    kwargs = operator_arguments(fn, w)
    # The output has the cotangent's shape; the feature gradient the features'.
    item = dtype.itemsize
    fwd_bytes = feats.size * item + rois.nbytes + cot.size * item
    fb_bytes = fwd_bytes + cot.size * item + feats.size * item

    impls = []
    rois_j = jnp.asarray(rois)  # on the device once, not converted at every call
    if OURS in args.peers:
        impls.append((OURS, lambda: jax_timers(fn, kwargs, feats, rois_j, cot, args.layout)))
    if REFERENCE in args.peers:
        ref = getattr(reference, op.function.replace(".", "_"))
        impls.append((REFERENCE, lambda: jax_timers(ref, kwargs, feats, rois_j, cot, args.layout)))
    tv = import_torchvision() if TORCHVISION in args.peers and op.torchvision else None
    if tv is not None:
        torch, torchvision = tv
        tdtype = getattr(torch, args.dtype)
        version = torchvision.__version__.split("+")[0]  # without the build tag (+cpu, +cu130)
        impls.append((f"{TORCHVISION} {version}", lambda: torch_timers(
            getattr(torchvision.ops, op.torchvision), kwargs,
            torch.from_numpy(f_nchw).to(tdtype), torch.from_numpy(rois),
            torch.from_numpy(cot_nchw).to(tdtype))))

    rows = []
    calls = 1 + args.repeats  # per measurement, as progress counts them
    for impl, make in impls:
        row = dict(workload=name, op=op.function, impl=impl, channels=c,
                   bytes_forward=int(fwd_bytes), bytes_forward_backward=int(fb_bytes))
        try:
            timers = make()
        except Exception as e:  # a peer that cannot even start is a row, not a crash
            timers = (None, None)
            row["forward_error"] = row["forward_backward_error"] = _error(e)
        for key, fn, nbytes in zip(MEASURES, timers, (fwd_bytes, fb_bytes)):
            progress.doing(f"{name} {op.function} {impl} {key.replace('_backward', '+backward')}")
            if fn is None:
                progress.advance(calls)
                continue
            done = progress.done
            try:
                row[f"{key}_ms"], row[f"{key}_first_call_ms"], row[f"{key}_calls"] = \
                    median_ms(fn, args.repeats, args.budget, progress)
                row[f"{key}_gbps"] = nbytes / row[f"{key}_ms"] / 1e6
            except Exception as e:  # e.g. a peer out of memory: reported, the run goes on
                row[f"{key}_error"] = _error(e)
                progress.advance(done + calls - progress.done)
        rows.append(row)
    ours = next((r for r in rows if r["impl"] == OURS), {})
    for r in rows:
        for key in MEASURES:
            if f"{key}_ms" in r and f"{key}_ms" in ours:
                # How many times longer the row takes than jax_roialign (> 1: we are faster).
                r[f"{key}_ratio"] = r[f"{key}_ms"] / ours[f"{key}_ms"]
    return rows


HEADER = (f"{'op':<22}{'implementation':<22}{'fwd ms':>10}{'GB/s':>7}{'x':>8}"
          f"{'fwd+bwd ms':>12}{'GB/s':>7}{'x':>8}")


def format_row(r, first, repeats):
    """The row's table line, then one line per failed measurement."""
    def cell(key, width):
        if f"{key}_ms" not in r:
            return f"{'failed':>{width + 1}}{'':>7}{'':>8}"
        # Times from fewer calls than --repeats (the --budget ran out) are marked * (~ for
        # the first call alone); jax_roialign's own ratios (1.00x) are left blank.
        calls = r[f"{key}_calls"]
        mark = "~" if calls == 0 else "*" if calls < repeats else " "
        ratio = f"{r[f'{key}_ratio']:7.2f}x" if f"{key}_ratio" in r and r["impl"] != OURS \
            else f"{'':>8}"
        return f"{r[f'{key}_ms']:{width}.2f}{mark}{r[f'{key}_gbps']:7.1f}{ratio}"

    lines = [f"{r['op'] if first else '':<22}{r['impl']:<22}{cell('forward', 9)}"
             f"{cell('forward_backward', 11)}".rstrip()]
    lines += [f"{'':<22}  {key.replace('_backward', '+backward')} failed: {r[f'{key}_error']}"
              for key in MEASURES if f"{key}_error" in r]
    return "\n".join(lines)


def describe(name, w, args):
    sr = "adaptive (0)" if w.sampling <= 0 else str(w.sampling)
    return (f"{name} ({w.what}): features {w.shape} {args.dtype} {args.layout}, {w.rois} rois, "
            f"{w.size}x{w.size}, scale 1/{round(1 / w.scale)}, sampling_ratio {sr}")


def machine():
    return dict(jax_roialign=jra.__version__, jax=jax.__version__, backend=jax.default_backend(),
                kernels=jra.kernel_platforms(), cpu=platform.processor() or platform.machine(),
                cores=os.cpu_count(), python=platform.python_version())


def _names(value, allowed, what):
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in names if v not in allowed]
    if unknown:
        raise SystemExit(f"bench: unknown {what} {', '.join(unknown)}; choose from "
                         f"{', '.join(allowed)}")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", default=",".join(STANDARD),
                   help=f"comma-separated, from {', '.join(f'{k} ({w.what})' for k, w in WORKLOADS.items())} (default: "
                        f"{','.join(STANDARD)})")
    p.add_argument("--tiny", action="store_true", help="only the tiny workload (CI)")
    p.add_argument("--ops", default=",".join(OP_PATHS),
                   help=f"comma-separated, from {', '.join(OP_PATHS)} (default: all)")
    p.add_argument("--peers", default=f"{OURS},{REFERENCE},{TORCHVISION}",
                   help=f"comma-separated implementations to time, from {OURS}, {REFERENCE}, "
                        f"{TORCHVISION} (default: all; torchvision where importable)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed calls per measurement (default 5)")
    p.add_argument("--budget", type=float, default=10.0,
                   help="seconds per measurement after which fewer than --repeats calls "
                        "are timed (marked *; ~ when the first call, which compiles, "
                        "exceeds it and is taken alone; default 10)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="features dtype (default float32)")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW",
                   help="features layout for the JAX implementations (torchvision: NCHW)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout (the table goes to stderr)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")


def run(args) -> int:
    workloads = ["tiny"] if args.tiny else _names(args.workload, list(WORKLOADS), "workload")
    wanted = _names(args.ops, OP_PATHS, "op")
    args.peers = _names(args.peers, [OURS, REFERENCE, TORCHVISION], "peer")
    ops = [o for o in OPERATORS if o.bench and o.function in wanted]
    out = sys.stderr if args.json else sys.stdout
    log = lambda line: print(line, file=out, flush=True)

    m = machine()
    log(f"jax_roialign {m['jax_roialign']}, jax {m['jax']}, backend {m['backend']}, kernels for: "
        f"{', '.join(m['kernels']) or 'none'}; {m['cpu']}, {m['cores']} cores; "
        f"median of {args.repeats} calls after a warm-up, ms")
    log(f"the {OURS} rows run {path_taken(m['backend'])}")
    problem = missing_kernels(m["backend"])
    if problem:
        log(f"WARNING: {problem}")
    tv = import_torchvision() if TORCHVISION in args.peers else None
    if TORCHVISION in args.peers:
        log("torchvision is not importable here: not timed" if tv is None else
            f"torchvision {tv[1].__version__} (torch {tv[0].__version__}, "
            f"{tv[0].get_num_threads()} threads; always NCHW)")
    log(f"GB/s: {GBPS_DEFINITION}. x: the row's time / jax_roialign's (> 1: jax_roialign is "
        f"faster). *: fewer than {args.repeats} calls, as the --budget of {args.budget:g} s ran "
        f"out; ~: the first call alone, compilation included")
    results = []
    total = len(workloads) * sum(len(implementations(op, args.peers, tv is not None))
                                 for op in ops) * len(MEASURES) * (1 + args.repeats)
    with Progress(total, "bench", args.quiet) as progress:
        for name in workloads:
            w = WORKLOADS[name]
            progress.log("", out)
            progress.log(describe(name, w, args), out)
            progress.log(HEADER, out)
            for op in ops:
                rows = bench_op(op, name, w, args, progress)
                for i, r in enumerate(rows):
                    progress.log(format_row(r, i == 0, args.repeats), out)
                results += rows
    if args.json:
        print(json.dumps(dict(machine=m, repeats=args.repeats, budget_s=args.budget,
                              dtype=args.dtype, layout=args.layout,
                              gbps_definition=GBPS_DEFINITION,
                              workloads={k: WORKLOADS[k]._asdict() for k in workloads},
                              results=results), indent=1))
    return 0
