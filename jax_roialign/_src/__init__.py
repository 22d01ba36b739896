"""The implementation, in layers that import only downward:

    api          validate a call's arguments, then bind the primitives (compiled kernels)
                 or run the pure-JAX reference (platforms without kernels)
    installation whether the compiled kernels loaded; if not, the cause and the fix
    primitives   the five primitives every operator shares: abstract eval, JVP,
                 transpose, batching
    lowering     the compiled modules' FFI targets, attributes, sharding rules
    shapes       output shapes and avals
    args         argument validation: the one place each rule lives
    operators    the registry: one entry per operator, everything else reads it
    reference    the pure-JAX cores (imports nothing above it)

`modules` and `frameworks/` (Flax, Haiku, Equinox) build on `api`; the public modules of
`jax_roialign` re-export from here.
"""
