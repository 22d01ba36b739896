"""One ops-suite operator on one of the bench's single maps, timed in loops: the jitted forward, the
forward+backward (the feature gradient, jax.vjp under jit) and, with --backward, the
backward alone (the jitted VJP of one recorded forward). Prints the median of each, every
timed call after an untimed one. For A/B runs of two builds of the kernels, run it once
per build in alternating processes, each build copied over the installed module with
`cp --remove-destination` (a plain `cp` rewrites the module that a running process has
mapped, and kills it). With --cold, each timed call follows a write of 128 MiB instead
(the caches hold none of the inputs, as in a model whose other layers ran in between).

    python benchmarks/cpu_loops.py WORKLOAD LAYOUT OP [--repeats 7] [--dtype float32]
                                   [--mode max] [--backward] [--cold] [--rois K]

With --rois K, the workload's first K proposals only (small calls: with few rois a call
runs on one thread, cc/cpu/handler_common.h threads_for; JAX_ROIALIGN_SERIAL_WORK=0 in
the environment makes it split them over the pool as larger calls do).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jax_roialign._cli.bench import FUNCTIONS, channels_for, operator_arguments, to_layout
from jax_roialign._cli.workloads import WORKLOADS, proposals
from jax_roialign._src.operators import BY_NAME, OPERATORS

# What it runs: the ops suite's operators (the bench's single-map boxes) on single maps.
OPS = [op.name for op in OPERATORS if op.bench]
MAPS = [name for name, w in WORKLOADS.items() if w.levels == 1]


def inputs(workload, op_name, layout, mode=None, rois=None):
    """The bench's inputs for one operator on one single map (the first `rois` boxes, if
    given): its function, keyword arguments, features (N, C, H, W) float32, boxes (K, 5)
    and an output cotangent (K, C_out, PH, PW) float32, as NumPy arrays."""
    w = WORKLOADS[workload]
    fn = FUNCTIONS[op_name]
    op = BY_NAME[op_name]
    n, _, h, wd = w.shape
    c = channels_for(op, w)
    out_c = c // (w.size * w.size) if op.position_sensitive else c
    kwargs = dict(operator_arguments(fn, w), layout=layout)
    if mode:
        kwargs["mode"] = mode
    rng = np.random.default_rng(0)  # the bench's inputs
    f = rng.normal(size=(n, c, h, wd)).astype(np.float32)
    boxes = proposals(rng, n, h, wd, w.scale, w.rois)
    cot = rng.normal(size=(w.rois, out_c, w.size, w.size)).astype(np.float32)
    if rois is not None:
        boxes, cot = boxes[:rois], cot[:rois]
    return fn, kwargs, f, boxes, cot


def median_ms(call, repeats, evict=None):
    jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        if evict is None:
            jax.block_until_ready(call())  # untimed: each timed call follows one of its own
        else:
            evict += 1.0
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=MAPS)
    parser.add_argument("layout", choices=("NHWC", "NCHW"))
    parser.add_argument("op", choices=OPS)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--mode", help="the operator's pooling mode (roi_align: avg or max)")
    parser.add_argument("--backward", action="store_true", help="also the backward alone")
    parser.add_argument("--cold", action="store_true",
                        help="each timed call after a write of 128 MiB, not after a call")
    parser.add_argument("--rois", type=int, help="only the first ROIS of the workload's rois")
    args = parser.parse_args()

    fn, kwargs, f, rois, cot = inputs(args.workload, args.op, args.layout, args.mode, args.rois)
    rois = jnp.asarray(rois)
    feats = jnp.asarray(to_layout(f, args.layout), args.dtype)
    ct = jnp.asarray(to_layout(cot, args.layout), args.dtype)

    evict = np.zeros(32 << 20, np.float32) if args.cold else None  # 128 MiB
    forward = jax.jit(lambda x, r: fn(x, r, **kwargs))

    @jax.jit
    def forward_backward(x, r, g):
        out, vjp = jax.vjp(lambda y: fn(y, r, **kwargs), x)
        return out, vjp(g)[0]

    times = {"forward": median_ms(lambda: forward(feats, rois), args.repeats, evict),
             "forward+backward": median_ms(lambda: forward_backward(feats, rois, ct),
                                           args.repeats, evict)}
    if args.backward:
        _, vjp = jax.vjp(lambda y: fn(y, rois, **kwargs), feats)
        backward = jax.jit(lambda g: vjp(g)[0])
        times["backward"] = median_ms(lambda: backward(ct), args.repeats, evict)
    label = " ".join([args.workload, args.layout, args.op, args.dtype] +
                     ([f"mode={args.mode}"] if args.mode else []) + (["cold"] if args.cold else []) +
                     ([f"rois={args.rois}"] if args.rois is not None else []))
    print(label + ": " + ", ".join(f"{k} {v:.3g} ms" for k, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
