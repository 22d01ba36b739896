"""The one timing harness of the command-line tools."""

from __future__ import annotations

import time

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
    """Forward and forward+backward closures of a JAX op, jit-compiled. The
    forward+backward one returns the output with the feature gradient, so that neither
    half can be optimised away."""
    forward = jax.jit(lambda x, r: fn(x, r, **kwargs, layout=layout))

    @jax.jit
    def forward_backward(x, r, c):
        out, pullback = jax.vjp(lambda y: fn(y, r, **kwargs, layout=layout), x)
        return out, pullback(c)[0]

    return (lambda: jax.block_until_ready(forward(features, rois)),
            lambda: jax.block_until_ready(forward_backward(features, rois, cotangent)))
