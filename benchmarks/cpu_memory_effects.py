"""What bounds the CPU kernels beyond their arithmetic, on the FPN workload (NHWC
float32): the cost of XLA allocating each output afresh (a jitted `x * 2` on an array
the size of roi_align's output), and the cost of reads the cache cannot serve (the
workload's rois as given, visited in the kernels' order anyway; and 1000 copies of one
box, every read in cache). Run it with and without

    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=8589934592

to see the allocator's share (benchmarks/README.md). Prints medians of interleaved calls.

Then roi_align's forward+backward, called back to back and after an idle second each
time, the way an interleaved benchmark calls it after a slower single-threaded peer: on
a VM whose balloon driver reports freed memory to the host, the outputs' pages then
come back from the host, and a call can take several times longer.

Last, calls of well under a millisecond (the small head's roi_align forward, NHWC, and
XLA's own elementwise op on the same features) timed one by one, the first 8 after
other work: none, a one-thread write of 64 MiB (a peer's call, or the layers of a model
between two of ours), 10 ms idle. The medians per position show how many calls each
takes to reach its steady state again.
"""

import argparse
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_roialign as jra
from jax_roialign._cli.workloads import WORKLOADS, proposals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    w = WORKLOADS["fpn"]
    n, c, h, wd = w.shape
    rng = np.random.default_rng(0)
    f = jnp.asarray(rng.normal(size=(n, h, wd, c)).astype(np.float32))
    rois = proposals(rng, n, h, wd, w.scale, w.rois)
    pool = jax.jit(lambda x, r: jra.roi_align(x, r, w.size, w.scale, w.sampling, True,
                                              layout="NHWC"))
    out_elements = w.rois * c * w.size * w.size
    x = jnp.ones((out_elements,), jnp.float32)
    double = jax.jit(lambda x: x * 2)
    calls = {
        f"x * 2 on {out_elements * 4 / 1e6:.0f} MB (XLA allocates the output)":
            lambda: double(x),
        "roi_align, the workload's rois": lambda: pool(f, jnp.asarray(rois)),
        "roi_align, 1000 copies of one box (reads in cache)":
            lambda: pool(f, jnp.asarray(np.repeat(rois[:1], len(rois), 0))),
    }
    for fn in calls.values():
        jax.block_until_ready(fn())
    times = {k: [] for k in calls}
    system = {k: 0.0 for k in calls}
    for _ in range(args.repeats):
        for k, fn in calls.items():
            s0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - t0)
            system[k] += resource.getrusage(resource.RUSAGE_SELF).ru_stime - s0
    print(f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}; "
          f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for k in calls:
        print(f"{np.median(times[k]) * 1e3:8.1f} ms  (system time {system[k] / args.repeats * 1e3:5.1f} ms"
              f" a call)  {k}")

    @jax.jit
    def forward_backward(x, r, cot):
        out, pullback = jax.vjp(lambda y: pool(y, r), x)
        return out, pullback(cot)[0]
    cot = jnp.asarray(rng.normal(size=(w.rois, w.size, w.size, c)).astype(np.float32))
    r = jnp.asarray(rois)
    jax.block_until_ready(forward_backward(f, r, cot))
    for gap in (0.0, 1.0):
        ts = []
        for _ in range(args.repeats):
            time.sleep(gap)
            t0 = time.perf_counter()
            jax.block_until_ready(forward_backward(f, r, cot))
            ts.append(time.perf_counter() - t0)
        print(f"{np.median(ts) * 1e3:8.1f} ms  (calls {' '.join(f'{t * 1e3:.0f}' for t in ts)})"
              f"  roi_align forward+backward, {gap:.0f} s idle before each call")

    warm_up(args.repeats)


def warm_up(repeats):
    w = WORKLOADS["head"]
    n, c, h, wd = w.shape
    rng = np.random.default_rng(0)
    f = jnp.asarray(rng.normal(size=(n, h, wd, c)).astype(np.float32))
    r = jnp.asarray(proposals(rng, n, h, wd, w.scale, w.rois))
    pool = jax.jit(lambda x, r: jra.roi_align(x, r, w.size, w.scale, w.sampling, True,
                                              layout="NHWC"))
    tanh = jax.jit(lambda x: jnp.tanh(x) * 2 + 1)
    big = np.ones(1 << 24, np.float32)
    before = {"nothing": lambda: None, "a write of 64 MiB": lambda: big.__iadd__(1.0),
              "10 ms idle": lambda: time.sleep(0.01)}
    print(f"calls 1-8 after other work, median of {5 * repeats} sequences (ms):")
    for name, call in (("head roi_align forward", lambda: pool(f, r)),
                       ("XLA's tanh(x) * 2 + 1 on its features", lambda: tanh(f))):
        jax.block_until_ready(call())
        for what, disturb in before.items():
            seqs = []
            for _ in range(5 * repeats):
                disturb()
                seq = []
                for _ in range(8):
                    t0 = time.perf_counter()
                    jax.block_until_ready(call())
                    seq.append(time.perf_counter() - t0)
                seqs.append(seq)
            medians = np.median(np.array(seqs), axis=0) * 1e3
            print(f"  {' '.join(f'{t:5.2f}' for t in medians)}  {name}, after {what}")


if __name__ == "__main__":
    main()
