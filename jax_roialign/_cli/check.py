"""`python -m jax_roialign check`: the compiled kernels against the pure-JAX reference
(forward, feature and box gradients, both layouts, avg and max) on a small example, then
forward and forward+backward timings of both under jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jax_roialign as jra
from jax_roialign import reference

from .timing import median_ms
from .workloads import WORKLOADS, proposals


def self_check(rng) -> bool:
    f = rng.normal(size=(2, 8, 20, 24)).astype(np.float32)
    rois = proposals(rng, 2, 20, 24, 0.25, 16)
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


def timing(rng, workload, repeats):
    shape, count, size, scale, sr, _ = WORKLOADS[workload]
    f = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    rois = jnp.asarray(proposals(rng, shape[0], shape[2], shape[3], scale, count))
    print(f"timing {workload}: features {shape} float32, {count} rois, {size}x{size}, "
          f"scale {scale:g}, sampling_ratio {sr}; median of {repeats} ms")
    rows = []
    for name, impl in (("jax_roialign", jra.roi_align), ("pure-jax reference", reference.roi_align)):
        fwd = jax.jit(lambda x, r: impl(x, r, size, scale, sr, False))
        bwd = jax.jit(jax.grad(lambda x, r: jnp.sum(impl(x, r, size, scale, sr, False))))
        rows.append((name, median_ms(lambda: jax.block_until_ready(fwd(f, rois)), repeats)[0],
                     median_ms(lambda: jax.block_until_ready(bwd(f, rois)), repeats)[0]))
    base_f, base_b = rows[0][1], rows[0][2]
    for name, tf, tb in rows:
        print(f"  {name:<20} forward {tf:9.2f}   forward+backward {tb:9.2f}   "
              f"(x{tf / base_f:.2f}, x{tb / base_b:.2f} of jax_roialign)")


def run(args) -> int:
    rng = np.random.default_rng(0)
    print(f"jax_roialign {jra.__version__}, jax {jax.__version__}, backend "
          f"{jax.default_backend()}, compiled kernels for: {', '.join(jra.kernel_platforms()) or 'none'}")
    print("self-check against the pure-JAX reference (float32):")
    ok = self_check(rng)
    timing(rng, args.size, args.repeats)
    print("self-check passed" if ok else "SELF-CHECK FAILED")
    return 0 if ok else 1


def add_arguments(p) -> None:
    p.add_argument("--size", choices=sorted(WORKLOADS), default="small",
                   help="the timed workload (default small)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls (default 5)")
