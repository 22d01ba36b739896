"""Collectives XLA compiles for roi_align on the FPN workload, split over 8 devices.

    python benchmarks/sharding_collectives.py [--gspmd]

Features (8, 256, 64, 64) float32, 8 x 128 boxes (N, R, 4), 7x7, scale 1/8, sampling
ratio 2: forward, feature gradient and box gradient (each a vjp with a given cotangent),
split by images and by channels. On a CPU it forces 8 host devices. Counts come from the
compiled, partitioned HLO (`jax.jit(f).lower(...).compile().as_text()`); nothing runs.
"""

import os
import re
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jax_roialign as jra  # noqa: E402

COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter")


def counts(fn, *args):
    text = jax.jit(fn).lower(*args).compile().as_text()
    found = {k: len(re.findall(rf"\b{k}(?:-start)?\(", text)) for k in COLLECTIVES}
    return {k: v for k, v in found.items() if v} or "none"


def main():
    if "--gspmd" in sys.argv:
        jax.config.update("jax_use_shardy_partitioner", False)
    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(0)
    f = rng.normal(size=(8, 256, 64, 64)).astype(np.float32)
    xy = rng.uniform(0, 400, (8, 128, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(16, 300, (8, 128, 2))], -1).astype(np.float32)
    ct = np.ones((8, 128, 256, 7, 7), np.float32)
    op = lambda f, b: jra.roi_align(f, b, 7, 1 / 8, 2, True)
    calls = {
        "forward": lambda f, b, ct: op(f, b),
        "feature gradient": lambda f, b, ct: jax.vjp(lambda x: op(x, b), f)[1](ct)[0],
        "box gradient": lambda f, b, ct: jax.vjp(lambda x: op(f, x), b)[1](ct)[0],
    }
    put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
    print(f"jax {jax.__version__}, "
          f"{'Shardy' if jax.config.jax_use_shardy_partitioner else 'GSPMD'}, 8 devices")
    for split, specs in (("images", (P("x"), P("x"), P("x"))),
                         ("channels", (P(None, "x"), P(), P(None, None, "x")))):
        args = [put(a, s) for a, s in zip((f, boxes, ct), specs)]
        for name, fn in calls.items():
            print(f"  split by {split:8s} {name:17s} {counts(fn, *args)}")


if __name__ == "__main__":
    main()
