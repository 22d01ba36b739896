"""`python -m jax_roialign [check|demo|bench]`: the command-line tools.

Each needs the compiled kernels: without them `check` (the default) fails with the cause
and the fix, and `demo` and `bench` say in their first lines that the pure-JAX reference
runs instead.
"""

from __future__ import annotations

import argparse
import sys

from . import bench, check, demo

COMMANDS = {
    "check": (check, "(the default) the compiled kernels against the pure-JAX reference "
                     "(forward, feature and box gradients), then a short timing of both"),
    "demo": (demo, "the main job: a picture of what RoIPool's rounding does and RoIAlign "
                   "fixes, then detection heads trained through each, with their curves"),
    "bench": (bench, "every operator on standard detection workloads next to the pure-JAX "
                     "reference and torchvision")}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command means `check`, so `python -m jax_roialign [--size ...]` works.
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["check", *argv]
    # The subcommands are listed once, by argparse, from COMMANDS.
    parser = argparse.ArgumentParser(
        prog="python -m jax_roialign",
        description="RoIAlign and its family for JAX: the command-line tools. "
                    "`python -m jax_roialign COMMAND --help` for a command's options.")
    commands = parser.add_subparsers(dest="command", title="commands",
                                     metavar="{" + ",".join(COMMANDS) + "}")
    for name, (module, help_) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
    args = parser.parse_args(argv)
    return COMMANDS[args.command][0].run(args)
