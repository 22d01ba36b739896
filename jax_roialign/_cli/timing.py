"""The one timing harness of the command-line tools, and the memory bandwidth the bench
measures its floors with."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, NamedTuple

import jax
import numpy as np


def median_ms(fn, repeats, budget_s=float("inf"), progress=None):
    """(median ms, ms of the first call, which compiles, number of timed calls).

    Stops before `repeats` timed calls once they have taken `budget_s` seconds, so that
    a slow peer cannot stretch a run to hours; when the first call alone exceeds the
    budget, its time (compilation included) is the result, with 0 timed calls.
    `progress` (a progress.Progress) advances by one per call and by the calls skipped,
    so that a measurement always counts 1 + `repeats`."""
    advance = progress.advance if progress is not None else (lambda n=1: None)
    t = time.perf_counter()
    fn()
    first = (time.perf_counter() - t) * 1e3
    advance()
    if first > budget_s * 1e3:
        advance(repeats)
        return first, first, 0
    times = []
    while len(times) < repeats and (not times or sum(times) < budget_s * 1e3):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
        advance()
    advance(repeats - len(times))
    return float(np.median(times)), first, len(times)


def jax_timers(fn, kwargs, features, rois, cotangent, layout):
    """Forward and forward+backward closures of a JAX op, jit-compiled (`vjp_timers`)."""
    return vjp_timers(lambda x, r: fn(x, r, **kwargs, layout=layout), features, rois, cotangent)


def vjp_timers(call, features, rois, cotangent):
    """Forward and forward+backward closures of `call(features, rois)`, jit-compiled;
    `features` may be a list (a pyramid's levels), `rois` any arrays the call takes. The
    forward+backward one returns the output with the features' gradient, so that neither
    half can be optimised away; both return their results, ready."""
    forward = jax.jit(call)

    @jax.jit
    def forward_backward(x, r, c):
        out, pullback = jax.vjp(lambda y: call(y, r), x)
        return out, pullback(c)[0]

    return (lambda: jax.block_until_ready(forward(features, rois)),
            lambda: jax.block_until_ready(forward_backward(features, rois, cotangent)))


def cores():
    """The cores this process may run on: the size of XLA's CPU intra-op pool."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class Timed(NamedTuple):
    """One callable's measurement by `interleaved`."""
    ms: float | None          # median of the timed calls (the first call's when calls == 0)
    first_call_ms: float | None  # the first call, compilation included
    calls: int                # timed calls after the first
    result: Any = None        # the first call's return value
    error: BaseException | None = None  # what the callable raised (then no time)


def interleaved(fns, repeats, budget_s=float("inf"), progress=None, settle=0, settle_ms=0.0):
    """Times callables against each other in one process, interleaved: first each one's
    first call (it compiles; its result is kept) in turn, then rounds in which every
    callable that has fewer than `repeats` timed calls and has not spent `budget_s`
    seconds on them is called once, the round's first callable rotating. Load from
    other jobs on a shared machine drifts over seconds: interleaving spreads it over
    all the callables alike, so that their ratios hold even when the absolute times
    do not. A callable that raises gets its error and is called no more; the others go
    on. A first call over the budget is taken alone (0 timed calls), as `median_ms`.

    Untimed calls of the same callable precede each timed call, back to back: at least
    `settle`, and more until they have taken `settle_ms` milliseconds. Each callable is
    then timed in its steady state, as a loop (a training step) calls it, not in the
    state the others' calls left the machine in. On a VM that hands freed memory back to
    its host, the first call after an idle second can take several times longer
    (benchmarks/cpu_memory_effects.py), and a call of a millisecond can stay slow for
    several more after another implementation's call: a count of calls alone settles
    long calls but not short ones. The budget counts the timed calls only.

    `progress` advances by one per call and by the calls skipped, so that each callable
    counts 1 + `repeats`. Returns a list of `Timed`, one per callable."""
    advance = progress.advance if progress is not None else (lambda n=1: None)
    count = len(fns)
    first, results, errors = [None] * count, [None] * count, [None] * count
    times = [[] for _ in range(count)]
    for i, fn in enumerate(fns):
        try:
            t = time.perf_counter()
            results[i] = fn()
            first[i] = (time.perf_counter() - t) * 1e3
        except Exception as e:  # a peer that fails is reported, the others are timed
            errors[i] = e
        advance()

    def wanted(i):
        return (errors[i] is None and first[i] <= budget_s * 1e3 and len(times[i]) < repeats
                and (not times[i] or sum(times[i]) < budget_s * 1e3))

    start = 0
    while any(wanted(i) for i in range(count)):
        for i in [(start + j) % count for j in range(count)]:
            if not wanted(i):
                continue
            try:
                settled, begun = 0, time.perf_counter()
                while settled < settle or (time.perf_counter() - begun) * 1e3 < settle_ms:
                    fns[i]()
                    settled += 1
                t = time.perf_counter()
                fns[i]()
                times[i].append((time.perf_counter() - t) * 1e3)
            except Exception as e:
                errors[i] = e
            advance()
        start += 1
    out = []
    for i in range(count):
        advance(repeats - len(times[i]))
        if errors[i] is not None:
            out.append(Timed(None, first[i], len(times[i]), None, errors[i]))
        else:
            ms = float(np.median(times[i])) if times[i] else first[i]
            out.append(Timed(ms, first[i], len(times[i]), results[i]))
    return out


class MemoryRates(NamedTuple):
    read_gbps: float
    write_gbps: float
    megabytes: int
    threads: int

    def floor_ms(self, read_bytes, written_bytes):
        """The least time moving these bytes takes here: each byte read or written once
        at the measured rates (1 GB/s = 1e6 bytes/ms)."""
        return read_bytes / self.read_gbps / 1e6 + written_bytes / self.write_gbps / 1e6


def memory_rates(megabytes=256, threads=None, repeats=5):
    """This machine's memory bandwidth now, measured: the best of `repeats` passes of
    reading (a max over it) and of writing (a fill of) a float64 array of `megabytes`
    (well beyond any cache), split over `threads` threads (default: the cores this
    process may run on, as XLA's intra-op pool; numpy releases the GIL in both) and on
    one thread, the faster of the two. The array is written once untimed first, so that
    page faults are not timed."""
    threads = threads or cores()
    a = np.empty(megabytes * 2 ** 20 // 8)
    a.fill(1.0)

    def best_gbps(op):
        best = float("inf")
        for parts in sorted({1, threads}):
            chunks = np.array_split(a, parts)
            for _ in range(repeats):
                workers = [threading.Thread(target=op, args=(c,)) for c in chunks]
                t = time.perf_counter()
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                best = min(best, time.perf_counter() - t)
        return a.nbytes / best / 1e9

    return MemoryRates(best_gbps(np.max), best_gbps(lambda c: c.fill(2.0)), megabytes, threads)
