"""`python -m jax_roialign [check|demo|bench]`.

  (no command), check   a short self-check and timing on an embedded example: the
                        compiled kernels against the pure-JAX reference (forward, feature
                        and box gradients, both layouts, avg and max), then forward and
                        forward+backward timings of both under jit (`--size` picks the
                        workload)
  demo                  the main job, to run and look at: a PNG of RoIPool's misalignment
                        next to RoIAlign, then a small Flax detection head trained through
                        roi_align (see `demo --help`)
  bench                 every operator on standard detection workloads next to the pure-JAX
                        reference and torchvision (see `bench --help`)
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_roialign as jra
from jax_roialign import reference

WORKLOADS = {
    # name: (features NCHW, rois, output size, spatial scale, sampling ratio)
    "small": ((2, 64, 50, 68), 200, 7, 1 / 8, 2),
    "fpn": ((2, 256, 200, 272), 1000, 7, 1 / 4, 2),
}


def example_rois(rng, num_images, height, width, scale, count):
    """Random boxes in image pixels, as a detector's proposals would be."""
    h, w = height / scale, width / scale
    cx, cy = rng.uniform(0, w, count), rng.uniform(0, h, count)
    bw, bh = np.exp(rng.uniform(np.log(8), np.log(w / 2), (2, count)))
    idx = rng.integers(0, num_images, count)
    return np.stack([idx, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)


def self_check(rng) -> bool:
    f = rng.normal(size=(2, 8, 20, 24)).astype(np.float32)
    rois = example_rois(rng, 2, 20, 24, 0.25, 16)
    ok = True
    for layout in ("NCHW", "NHWC"):
        x = jnp.asarray(f if layout == "NCHW" else f.transpose(0, 2, 3, 1))
        for mode in ("avg", "max"):
            def loss(impl, feats, r):
                out = impl(feats, r, 5, 0.25, 2, True, mode=mode, layout=layout)
                return jnp.sum(out * jnp.cos(out)), out
            (_, out_k), (gf_k, gr_k) = jax.value_and_grad(
                lambda a, b: loss(jra.roi_align, a, b), argnums=(0, 1), has_aux=True)(x, rois)
            (_, out_r), (gf_r, gr_r) = jax.value_and_grad(
                lambda a, b: loss(reference.roi_align, a, b), argnums=(0, 1), has_aux=True)(x, rois)
            errs = [float(jnp.max(jnp.abs(a - b)) / (1e-6 + jnp.max(jnp.abs(b))))
                    for a, b in ((out_k, out_r), (gf_k, gf_r), (gr_k[:, 1:], gr_r[:, 1:]))]
            good = max(errs) < 1e-4
            ok &= good
            print(f"  {layout} {mode}: forward {errs[0]:.1e}, grad features {errs[1]:.1e}, "
                  f"grad boxes {errs[2]:.1e} (max relative difference to reference) "
                  f"{'ok' if good else 'MISMATCH'}")
    return ok


def median_ms(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def timing(rng, workload, repeats):
    shape, count, size, scale, sr = WORKLOADS[workload]
    f = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    rois = jnp.asarray(example_rois(rng, shape[0], shape[2], shape[3], scale, count))
    print(f"timing {workload}: features {shape} float32, {count} rois, {size}x{size}, "
          f"scale {scale:g}, sampling_ratio {sr}; median of {repeats} ms")
    rows = []
    for name, impl in (("jax_roialign", jra.roi_align), ("pure-jax reference", reference.roi_align)):
        fwd = jax.jit(lambda x, r: impl(x, r, size, scale, sr, False))
        bwd = jax.jit(jax.grad(lambda x, r: jnp.sum(impl(x, r, size, scale, sr, False))))
        rows.append((name, median_ms(fwd, f, rois, repeats=repeats),
                     median_ms(bwd, f, rois, repeats=repeats)))
    base_f, base_b = rows[0][1], rows[0][2]
    for name, tf, tb in rows:
        print(f"  {name:<20} forward {tf:9.2f}   forward+backward {tb:9.2f}   "
              f"(x{tf / base_f:.2f}, x{tb / base_b:.2f} of jax_roialign)")


def run_check(args) -> int:
    rng = np.random.default_rng(0)
    print(f"jax_roialign {jra.__version__}, jax {jax.__version__}, backend "
          f"{jax.default_backend()}, compiled kernels for: {', '.join(jra.kernel_platforms()) or 'none'}")
    print("self-check against the pure-JAX reference (float32):")
    ok = self_check(rng)
    timing(rng, args.size, args.repeats)
    print("self-check passed" if ok else "SELF-CHECK FAILED")
    return 0 if ok else 1


COMMANDS = ("check", "demo", "bench")


def main(argv=None) -> int:
    # Imported here, not at the top: they are only needed to parse the command line, and
    # neither imports an optional dependency before it runs.
    from jax_roialign import _bench, _demo

    argv = list(sys.argv[1:] if argv is None else argv)
    # No command means `check`, so `python -m jax_roialign [--size ...]` works as it always did.
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["check", *argv]
    parser = argparse.ArgumentParser(prog="python -m jax_roialign", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="{check,demo,bench}")
    check = commands.add_parser(
        "check", help="self-check and a short timing (the default)",
        description="The compiled kernels against the pure-JAX reference (forward, feature "
                    "and box gradients, both layouts, avg and max), then forward and "
                    "forward+backward timings of both under jit.")
    check.add_argument("--size", choices=sorted(WORKLOADS), default="small",
                       help="the timed workload (default small)")
    check.add_argument("--repeats", type=int, default=5, help="timed calls (default 5)")
    for name, module, help_ in (("demo", _demo, "the picture and the training run"),
                                ("bench", _bench, "time every operator against its peers")):
        sub = commands.add_parser(name, help=help_, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    run = {"check": run_check, "demo": _demo.run, "bench": _bench.run}[args.command]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
