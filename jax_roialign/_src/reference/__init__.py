"""docs/semantics.md in pure ``jax.numpy``: one core per operator family, on normalised
arguments (``(K, 5)`` rows, integer output sizes, no validation). The oracle the kernels
are tested against, and the path on platforms without compiled kernels. Imports nothing
of the package outside this folder.
"""
