"""What max mode's winners cost a forward: the forward primitive bound as a differentiated
forward binds it (recording each output's winning sample, int32, as large as the output)
and as the functions bind it for inference (recording none), timed interleaved in one
process on the bench's workloads. Prints the median of each and their ratio.

    python benchmarks/forward_winners.py [--workload fpn,c4] [--layout NHWC,NCHW]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from jax_roialign._cli.workloads import WORKLOADS, proposals
from jax_roialign._src import api, primitives
from jax_roialign._src.operators import BY_NAME, OPERATORS

#: Every kernel operator that pools in max mode.
MAX_KERNELS = sorted({op.kernel for op in OPERATORS if "max" in op.modes})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="fpn,c4")
    parser.add_argument("--layout", default="NHWC,NCHW")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; median ms of "
          f"{args.repeats} interleaved calls, each after an untimed call of its own")
    for name in args.workload.split(","):
        w = WORKLOADS[name]
        n, c, h, wd = w.shape
        rng = np.random.default_rng(0)
        f = rng.normal(size=(n, c, h, wd)).astype(np.float32)
        rows = jnp.asarray(proposals(rng, n, h, wd, w.scale, w.rois))
        levels = jnp.zeros((0,), jnp.int32)
        for layout in args.layout.split(","):
            x = jnp.asarray(f if layout == "NCHW" else f.transpose(0, 2, 3, 1))
            for op_name in MAX_KERNELS:
                op = BY_NAME[op_name]
                p = api._params(op, op.function, (w.size, w.size), (w.scale,), 2, True, "max",
                                layout, None)
                calls = {rec: jax.jit(lambda x, rec=rec: primitives.forward_p.bind(
                    rows, levels, x, **dict(p, winners=rec))) for rec in (True, False)}
                times = {rec: [] for rec in calls}
                for _ in range(args.repeats):
                    for rec, call in calls.items():
                        jax.block_until_ready(call(x))
                        t0 = time.perf_counter()
                        jax.block_until_ready(call(x))
                        times[rec].append(time.perf_counter() - t0)
                with_, without = (np.median(times[rec]) * 1e3 for rec in (True, False))
                print(f"{name:5s} {layout} {op_name:10s} winners recorded {with_:8.1f}  "
                      f"none {without:8.1f}  ratio {with_ / without:5.2f}", flush=True)


if __name__ == "__main__":
    main()
