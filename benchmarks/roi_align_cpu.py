"""roi_align on the CPU: jax_roialign vs the pure-JAX reference vs torchvision, same inputs.

    python benchmarks/roi_align_cpu.py [--workload fpn|c4|mask] [--repeats 5]

torchvision is timed when importable in the same interpreter (it is never a dependency).
Prints median milliseconds and each peer's time as a multiple of ours.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_roialign as jra
from jax_roialign import reference

WORKLOADS = {
    # features (N, C, H, W), rois, output, scale, sampling_ratio
    "fpn": ((2, 256, 200, 272), 1000, 7, 1 / 4, 2),
    "c4": ((1, 1024, 50, 68), 512, 14, 1 / 16, 0),
    "mask": ((2, 256, 100, 136), 200, 14, 1 / 8, 2),
}


def proposals(rng, n, h, w, scale, count):
    hi, wi = h / scale, w / scale
    cx, cy = rng.uniform(0, wi, count), rng.uniform(0, hi, count)
    bw, bh = np.exp(rng.uniform(np.log(16), np.log(wi / 2), (2, count)))
    idx = rng.integers(0, n, count)
    return np.stack([idx, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)


def median_ms(fn, repeats):
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return float(np.median(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="fpn")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    shape, count, size, scale, sr = WORKLOADS[a.workload]
    rng = np.random.default_rng(0)
    f = rng.normal(size=shape).astype(np.float32)
    rois = proposals(rng, shape[0], shape[2], shape[3], scale, count)
    cot = rng.normal(size=(count, shape[1], size, size)).astype(np.float32)
    print(f"{a.workload}: features {shape} float32, {count} rois, {size}x{size}, scale {scale:g}, "
          f"sampling_ratio {sr}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, jax {jax.__version__}; median of {a.repeats}, ms")
    results = {}
    fj, rj, cj = jnp.asarray(f), jnp.asarray(rois), jnp.asarray(cot)
    for name, impl in (("jax_roialign", jra.roi_align), ("pure-jax reference", reference.roi_align)):
        fwd = jax.jit(lambda x, r: impl(x, r, size, scale, sr, False))
        vjp = jax.jit(lambda x, r, c: jax.vjp(lambda y: impl(y, r, size, scale, sr, False), x)[1](c))
        results[name] = (median_ms(lambda: fwd(fj, rj).block_until_ready(), a.repeats),
                         median_ms(lambda: jax.block_until_ready(vjp(fj, rj, cj)), a.repeats))
    try:
        import torch
        import torchvision
    except ImportError:
        print("torchvision not importable here: not timed")
    else:
        ft, rt, ct = torch.from_numpy(f), torch.from_numpy(rois), torch.from_numpy(cot)

        def tv_fwd():
            with torch.no_grad():
                torchvision.ops.roi_align(ft, rt, size, scale, sr, False)

        def tv_bwd():
            x = ft.clone().requires_grad_(True)
            torchvision.ops.roi_align(x, rt, size, scale, sr, False).backward(ct)

        results[f"torchvision {torchvision.__version__}"] = (
            median_ms(tv_fwd, a.repeats), median_ms(tv_bwd, a.repeats))
    ours_f, ours_b = results["jax_roialign"]
    print(f"{'':<28}{'forward':>10}{'fwd+bwd':>10}{'fwd ratio':>11}{'f+b ratio':>11}")
    for name, (tf, tb) in results.items():
        print(f"{name:<28}{tf:10.1f}{tb:10.1f}{tf / ours_f:10.2f}x{tb / ours_b:10.2f}x")


if __name__ == "__main__":
    main()
