"""`python -m jax_roialign [check|demo|bench]`: the command-line tools.

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

from . import bench, check, demo

COMMANDS = {"check": (check, "self-check and a short timing (the default)"),
            "demo": (demo, "the picture and the training run"),
            "bench": (bench, "time every operator against its peers")}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command means `check`, so `python -m jax_roialign [--size ...]` works.
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["check", *argv]
    parser = argparse.ArgumentParser(prog="python -m jax_roialign", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name, (module, help_) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    return COMMANDS[args.command][0].run(args)
