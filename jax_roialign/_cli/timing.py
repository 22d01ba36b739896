"""The one timing harness of the command-line tools."""

from __future__ import annotations

import time

import numpy as np


def median_ms(fn, repeats, budget_s=float("inf")):
    """(median ms, ms of the first call, which compiles, number of timed calls).

    Stops before `repeats` timed calls once they have taken `budget_s` seconds, so that
    a slow peer cannot stretch a run to hours; when the first call alone exceeds the
    budget, its time (compilation included) is the result, with 0 timed calls."""
    t = time.perf_counter()
    fn()
    first = (time.perf_counter() - t) * 1e3
    if first > budget_s * 1e3:
        return first, first, 0
    times = []
    while len(times) < repeats and (not times or sum(times) < budget_s * 1e3):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), first, len(times)
