"""`python -m jax_roialign check`: the compiled kernels against the pure-JAX reference
(forward, feature and box gradients, both layouts, avg and max) on a small example, then
forward and forward+backward timings of both under jit, and of a 1-roi call (the fixed
cost per call). Fails when the default backend has no compiled kernels: the comparison
would then be the reference against itself."""

from __future__ import annotations

import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

import jax_roialign as jra
from jax_roialign import reference

from .._src.installation import missing_kernels, path_taken
from .progress import Progress
from .timing import jax_timers, median_ms
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


def _timings(impl, f, rois, w, cotangent, repeats, progress):
    """[forward, forward+backward] median ms of `impl` on the workload's configuration."""
    kwargs = dict(output_size=w.size, spatial_scale=w.scale, sampling_ratio=w.sampling,
                  aligned=False)
    return [median_ms(fn, repeats, progress=progress)[0]
            for fn in jax_timers(impl, kwargs, f, rois, cotangent, "NCHW")]


def timing(rng, workload, repeats, quiet):
    """Times the kernels and the pure-JAX reference on the workload, and on one roi of it
    (the fixed cost of a call), and says what the ratios mean. Returns the table's
    numbers: {implementation: [forward, forward+backward, 1-roi forward, 1-roi fwd+bwd]}."""
    w = WORKLOADS[workload]
    f = jnp.asarray(rng.normal(size=w.shape).astype(np.float32))
    rois = jnp.asarray(proposals(rng, w.shape[0], w.shape[2], w.shape[3], w.scale, w.rois))
    cot = jnp.asarray(rng.normal(size=(w.rois, w.shape[1], w.size, w.size)).astype(np.float32))
    print(f"timing {workload} ({w.what}): features {w.shape} float32 NCHW, {w.rois} rois, "
          f"{w.size}x{w.size}, scale 1/{round(1 / w.scale)}, sampling_ratio {w.sampling}; "
          f"median of {repeats} calls under jit, ms", flush=True)
    impls = (("jax_roialign", jra.roi_align), ("pure-JAX reference", reference.roi_align))
    table = {}
    with Progress(len(impls) * 4 * (1 + repeats), "timing", quiet) as progress:
        for name, impl in impls:
            progress.doing(name)
            table[name] = (_timings(impl, f, rois, w, cot, repeats, progress)
                           + _timings(impl, f, rois[:1], w, cot[:1], repeats, progress))
    ours, ref = table["jax_roialign"], table["pure-JAX reference"]
    print(f"  {'':<22}{'forward':>9}{'fwd+bwd':>10}   {'1 roi: forward':>14}{'fwd+bwd':>10}")
    for name, t in table.items():
        print(f"  {name:<22}{t[0]:9.2f}{t[1]:10.2f}   {t[2]:14.3f}{t[3]:10.3f}")
    ratios = [r / o for r, o in zip(ref, ours)]
    print(f"  {'reference / ours':<22}{ratios[0]:8.2f}x{ratios[1]:9.2f}x   {ratios[2]:13.2f}x"
          f"{ratios[3]:9.2f}x")
    notes = ["reference / ours: how many times longer the pure-JAX path takes than the "
             "kernels (> 1: the kernels are faster).",
             "The 1-roi columns time a call that does almost no work (dispatch, the custom "
             "call, thread hand-offs): the fixed cost per call."]
    for column, what in ((0, "forward"), (1, "forward+backward")):
        if ratios[column] >= 1:
            continue
        fixed = column + 2
        cause = ("our fixed cost per call is the larger one" if ours[fixed] > ref[fixed] else
                 "not our fixed cost per call (the smaller one), but the work per roi, which "
                 "costs the kernels more than the reference on this example")
        notes.append(f"Here the reference's {what} is faster ({ratios[column]:.2f}x): {cause} "
                     f"(1 roi: {ours[fixed]:.3f} ms ours, {ref[fixed]:.3f} ms the reference's).")
    notes.append("`python -m jax_roialign bench` times the standard, larger detection workloads.")
    for note in notes:
        print(textwrap.fill(note, 92, initial_indent="  ", subsequent_indent="    "))
    return table


def run(args) -> int:
    rng = np.random.default_rng(0)
    backend = jax.default_backend()
    print(f"jax_roialign {jra.__version__}, jax {jax.__version__}, backend {backend}, "
          f"compiled kernels for: {', '.join(jra.kernel_platforms()) or 'none'}; "
          f"jax_roialign runs {path_taken(backend)} here", flush=True)
    problem = missing_kernels(backend)
    if problem:
        # Comparing the reference with itself would pass and prove nothing.
        print(f"SELF-CHECK FAILED: {problem}", file=sys.stderr)
        return 1
    print("self-check: the kernels against the pure-JAX reference (float32):", flush=True)
    ok = self_check(rng)
    timing(rng, args.size, args.repeats, args.quiet)
    print("self-check passed" if ok else "SELF-CHECK FAILED")
    return 0 if ok else 1


def add_arguments(p) -> None:
    p.add_argument("--size", choices=sorted(WORKLOADS), default="small",
                   help="the timed workload (default small)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls (default 5)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")
