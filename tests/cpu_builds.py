"""The CPU kernels' builds (cc/cpu/instruction_sets.h) this machine can run, and running
code in a fresh interpreter capped at one of them."""

import os
import subprocess
import sys
from pathlib import Path

import jax_roialign._cpu as cpu_module

# The builds, in the order instruction_sets.h prefers them (last first);
# JAX_ROIALIGN_CPU_ISA caps the choice at any of the others.
SETS = ("baseline", "avx2", "avx512")
CHOSEN = cpu_module.instruction_set()
BELOW = SETS[:SETS.index(CHOSEN)]


def run_capped(isa, code, timeout):
    """Runs `code` in a fresh interpreter with the kernels capped at `isa` (tests/ on the
    path); the interpreter's stderr tail on failure."""
    code = ("import jax; jax.config.update('jax_enable_x64', True)\n"
            "import jax_roialign._cpu as m\n"
            f"assert m.instruction_set() == {isa!r}, m.instruction_set()\n" + code)
    env = dict(os.environ, JAX_ROIALIGN_CPU_ISA=isa,
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                           os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
