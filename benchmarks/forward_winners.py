"""What max mode's winners cost a forward: the forward primitive bound as a differentiated
forward binds it (recording each output's winning sample, int32, as large as the output)
and as the functions bind it for inference (recording none), timed interleaved in one
process on the bench's workloads, with the JVP in the features (the recording forward,
then the linear part: each given winner's sample read in the tangent). Prints the
median of each and the ratios to the inference forward.

    python benchmarks/forward_winners.py [--workload fpn,c4] [--layout NHWC,NCHW]
"""

import argparse
import functools
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
            tangent = x[::-1]
            for op_name in MAX_KERNELS:
                op = BY_NAME[op_name]
                p = api._params(op, op.function, (w.size, w.size), (w.scale,), 2, True, "max",
                                layout, None)
                bind = lambda x, rec: primitives.forward_p.bind(rows, levels, x,
                                                                 **dict(p, winners=rec))
                calls = {"recorded": jax.jit(lambda x: bind(x, True)),
                         "none": jax.jit(lambda x: bind(x, False)),
                         "jvp": functools.partial(jax.jit(lambda x, t: jax.jvp(
                             lambda y: bind(y, False), (x,), (t,))), t=tangent)}
                times = {key: [] for key in calls}
                for _ in range(args.repeats):
                    for key, call in calls.items():
                        jax.block_until_ready(call(x))
                        t0 = time.perf_counter()
                        jax.block_until_ready(call(x))
                        times[key].append(time.perf_counter() - t0)
                ms = {key: np.median(t) * 1e3 for key, t in times.items()}
                print(f"{name:5s} {layout} {op_name:10s} winners recorded {ms['recorded']:8.1f}  "
                      f"none {ms['none']:8.1f}  ratio {ms['recorded'] / ms['none']:5.2f}  "
                      f"jvp {ms['jvp']:8.1f}  ratio {ms['jvp'] / ms['none']:5.2f}", flush=True)


if __name__ == "__main__":
    main()
