"""One ops-suite operator's CPU kernels called directly on one thread, float32: a C++
harness (cpu_kernels.cc) compiled against a cc/ tree, on the bench's inputs, each pass
(forward, backward) timed best of --repeats calls. No XLA, no thread pool, no output
allocated per call: on the shared, noisy machine of benchmarks/README.md its best times
mostly repeated within a few percent where the jitted loops of cpu_loops.py moved by up
to 2x, so it is the measure for a kernel change. What it does not show: XLA's allocation
of fresh outputs, the split over threads, the handlers' roi order by row.

    python benchmarks/cpu_kernels.py WORKLOAD LAYOUT OP [--mode max] [--repeats 10]
                                     [--rounds 1] [--rois K] [--against PATH]

The kernels run on the paths the handlers choose for the call's shape
(cc/cpu/call_paths.h), with the attributes the handler gets (traced from the operator's
function), and the instruction set the module would choose (JAX_ROIALIGN_CPU_ISA caps
it). --against PATH builds a second harness from PATH/cc (another checkout or a `git
worktree` of a commit; its cc/cpu must have call_paths.h) and runs the two alternately,
--rounds times; each line prints a checksum of the results, which two trees that
compute the same bits share. Needs a C++17 compiler (CXX, else c++) and the package
installed with its kernels.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from cpu_loops import MAPS, OPS, inputs
from jax_roialign._cli.bench import to_layout
from jax_roialign._src.lowering import ffi_attributes

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent


def build(tree, out, optimisation="-O3"):
    """Compiles cpu_kernels.cc against tree/cc (the module's flags) into `out`."""
    cxx = os.environ.get("CXX", "c++")
    cmd = [cxx, "-std=c++17", optimisation, "-ffp-contract=off", "-Wno-psabi",
           f"-I{pathlib.Path(tree) / 'cc'}", str(HERE / "cpu_kernels.cc"), "-o", str(out),
           "-lpthread"]
    subprocess.run(cmd, check=True)
    return out


class Call:
    """One operator call's inputs, written to a folder, and its kernel attributes."""

    def __init__(self, folder, workload, layout, op, mode=None, rois=None):
        fn, kwargs, f, boxes, cot = inputs(workload, op, layout, mode, rois)
        feats = to_layout(f, layout)
        self.attributes = attributes(fn, kwargs, jnp.asarray(feats), jnp.asarray(boxes))
        self.folder, self.shape, self.rois = str(folder), f.shape, len(boxes)
        np.ascontiguousarray(feats, np.float32).tofile(f"{folder}/features.f32")
        np.asarray(boxes, np.float32).tofile(f"{folder}/rois.f32")
        np.ascontiguousarray(to_layout(cot, layout), np.float32).tofile(
            f"{folder}/cotangent.f32")

    def run(self, binary, which, repeats):
        """(instruction set, best ms, checksum) of `which` ("forward", "backward")."""
        a = self.attributes
        (scale,) = a["spatial_scales"]
        cmd = [str(binary), self.folder, which, str(a["op"]), str(a["mode"]), str(a["layout"]),
               *map(str, self.shape), str(a["pooled_height"]), str(a["pooled_width"]),
               str(self.rois), repr(float(scale)), str(a["sampling_ratio"]), str(a["aligned"]),
               str(repeats)]
        isa, ms, _, _, checksum = subprocess.run(cmd, check=True, capture_output=True,
                                                 text=True).stdout.split()
        return isa, float(ms), float(checksum)


def forward_parameters(jaxpr):
    """The parameters of the first jax_roialign_forward in `jaxpr` or the jaxprs it
    nests (jit, custom derivatives), or None."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "jax_roialign_forward":
            return eqn.params
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
                if hasattr(inner, "eqns") and (found := forward_parameters(inner)):
                    return found
    return None


def attributes(fn, kwargs, feats, rois):
    """The kernel attributes of the operator's forward, as its FFI handler gets them."""
    params = forward_parameters(jax.make_jaxpr(lambda x, r: fn(x, r, **kwargs))(feats, rois).jaxpr)
    if params is None:
        raise SystemExit(f"cpu_kernels: no jax_roialign_forward in {fn.__name__}'s jaxpr")
    return ffi_attributes(params)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=MAPS)
    parser.add_argument("layout", choices=("NHWC", "NCHW"))
    parser.add_argument("op", choices=OPS)
    parser.add_argument("--mode", help="the operator's pooling mode (roi_align: avg or max)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per pass")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rois", type=int, help="only the first ROIS of the workload's rois")
    parser.add_argument("--against", help="another repository root, whose cc/ to time too")
    args = parser.parse_args()

    label = " ".join([args.workload, args.layout, args.op] +
                     ([f"mode={args.mode}"] if args.mode else []) +
                     ([f"rois={args.rois}"] if args.rois is not None else []))
    with tempfile.TemporaryDirectory() as tmp:
        call = Call(tmp, args.workload, args.layout, args.op, args.mode, args.rois)
        trees = {"this": REPO} | ({"against": pathlib.Path(args.against)} if args.against else {})
        binaries = {name: build(tree, pathlib.Path(tmp) / f"cpu_kernels_{name}")
                    for name, tree in trees.items()}
        best = {}
        for r in range(args.rounds):
            for which in ("forward", "backward"):
                for name, binary in binaries.items():
                    isa, ms, checksum = call.run(binary, which, args.repeats)
                    print(f"{label} {which} [{name}] round {r + 1}: {isa} best {ms:.3f} ms, "
                          f"checksum {checksum!r}", flush=True)
                    best[which, name] = min(best.get((which, name), ms), ms)
        if args.against:
            for which in ("forward", "backward"):
                print(f"{label} {which}: best {best[which, 'against']:.3f} ms [against] -> "
                      f"{best[which, 'this']:.3f} ms [this], "
                      f"{best[which, 'against'] / best[which, 'this']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
