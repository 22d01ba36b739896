"""The compiled modules, the lowering of primitives to their FFI targets, and how a
kernel call is partitioned across devices.

Each compiled module (cc/bindings.h) exports ``kernels() -> {kernel: capsule}``, registered
here as the FFI target "jax_roialign_<kernel>" of its platform, and ``operators()``, the
kernels' operator table (codes, properties). A primitive's parameters become the kernel's
attributes in `ffi_attributes`, the one place that maps and casts them: the attribute
types must match the C++ binding (cc/ffi_contract.h ``RoiAttrs``) exactly.

Partitioning. `factors` names every dimension of a call's operands and results:

    n       the images of (N, R, 4) boxes, and of the features, outputs, levels, winners
    c       the (output) channels; the position-sensitive ops' feature channels are the
            compound (c p q), channel c * PH * PW + bin (cc/roi_common.h)
    r, k    the rois, a box's coordinates
    p, q    the output bins
    hI, wI  feature level I's map
    m       the images of features read by (K, 5) rows: a row may read any image
    z       the empty (0,) levels / winner placeholder

Only n and c are ever split. A shard of images with its boxes, or a block of channels,
is a smaller call of the same kernel: outputs and feature gradients need nothing from
other shards, and the box gradient, a sum over channels, needs one all-reduce over the
channel shards. Everything else is replicated (a shard of rois would need the feature
gradient summed over shards; a shard of the map, halos). For the position-sensitive ops a
channel block must hold whole groups of PH * PW channels (C_out divisible by the shard
count); otherwise the channels are replicated.

How a call is lowered depends on where it sits:

* Under ``jit`` on several devices (no manual axes), through
  ``jax.experimental.custom_partitioning``: Shardy propagates shardings by the rule
  `sharding_rule` (GSPMD by `_infer`), and XLA's partitioner asks `_partition` for each
  call: it reshards the operands to the images and channels above and runs the kernel
  per device. A plain custom call cannot split channels (XLA's batch partitioner splits
  leading batch dimensions only), hence the wrapper. AD and vmap act on the primitives
  before lowering, so custom_partitioning's lack of both does not matter.
* Elsewhere (one device, inside ``shard_map``, on each device under the wrapper), the
  custom call itself. It carries the same rule as ``sdy.sharding_rule`` and, with (N, R, 4)
  boxes, ``num_batch_dims=1`` for XLA's batch partitioner (every target is registered
  batch-partitionable): a shard_map over some mesh axes leaves the rest to the
  partitioner, which splits the leading n of every operand and result.

Test-only: ``_cuda_emulated`` (built with the CMake option JAX_ROIALIGN_CUDA_EMULATION,
never in the default wheel) is the CUDA kernels and handlers compiled as host C++ against
the CUDA emulator of cc/cuda/emulator/. Its kernels are registered for the CPU platform as
"jax_roialign_emulated_<kernel>", and the CPU lowering targets them inside
`cuda_emulation()` (tests/test_gpu.py).
"""

from __future__ import annotations

import contextlib
import importlib
import math

import jax
import numpy as np
from jax._src import dispatch, sharding_impls
from jax._src.custom_partitioning_sharding_rule import (sdy_sharding_rule_to_mlir,
                                                        str_to_sdy_sharding_rule)
from jax.experimental.custom_partitioning import custom_partitioning
from jax.interpreters import mlir
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from .operators import BY_NAME
from .shapes import SIGNATURES, records_winners

TARGET_PREFIX = "jax_roialign_"

EMULATED_PREFIX = "jax_roialign_emulated_"

# MLIR platform name -> (compiled module, jax.ffi platform name).
_MODULES = {"cpu": ("_cpu", "cpu"), "cuda": ("_cuda", "CUDA")}


def _import(name):
    try:
        return importlib.import_module(f"jax_roialign.{name}")
    except ImportError:
        return None


def cpu_instruction_set():
    """The instruction set the CPU kernels run with (cc/cpu/instruction_sets.h), or None
    where they are not built."""
    module = _import("_cpu")
    return module.instruction_set() if module is not None else None


def _load():
    kernels, operators = {}, {}
    for platform, (name, ffi_platform) in _MODULES.items():
        module = _import(name)
        if module is None:
            continue
        for kernel, capsule in module.kernels().items():
            jax.ffi.register_ffi_target(TARGET_PREFIX + kernel, capsule, platform=ffi_platform)
        kernels[platform] = sorted(module.kernels())
        operators = {op: tuple(entry) for op, entry in module.operators().items()}
    emulated = _import("_cuda_emulated")
    if emulated is not None:
        for kernel, capsule in emulated.kernels().items():
            jax.ffi.register_ffi_target(EMULATED_PREFIX + kernel, capsule, platform="cpu")
    return kernels, operators, sorted(emulated.kernels()) if emulated is not None else []


#: {platform: [kernel names]} for every platform with compiled kernels here.
#: {operator: (code, position_sensitive, box_derivative, box coordinates, modes)} from
#: the compiled modules; modes holds bit MODES[mode] for each mode the kernels take.
#: [kernel names] of the emulated CUDA module, when it is built (tests only).
KERNELS, OPERATOR_TABLE, EMULATED_KERNELS = _load()

# The target prefix each platform's lowering uses now; cuda_emulation() changes the CPU's.
_PREFIX = {platform: TARGET_PREFIX for platform in _MODULES}

MODES = {"avg": 0, "max": 1}
LAYOUTS = {"NCHW": 0, "NHWC": 1}


def ffi_attributes(params: dict) -> dict:
    """The kernel attributes of a primitive's parameters."""
    ph, pw = params["output_size"]
    return dict(
        op=np.int64(OPERATOR_TABLE[params["op"]][0]),
        pooled_height=np.int64(ph),
        pooled_width=np.int64(pw),
        spatial_scales=np.asarray(params["spatial_scales"], np.float64),
        sampling_ratio=np.int64(params["sampling_ratio"]),
        aligned=np.int64(bool(params["aligned"])),
        mode=np.int64(MODES[params["mode"]]),
        layout=np.int64(LAYOUTS[params["layout"]]),
        deterministic=np.int64(bool(params["deterministic"])),
        extrapolation_value=np.float64(params["extrapolation_value"]),
        radians=np.int64(bool(params["radians"])),
    )


# --------------------------------------------------------------------------- factors

#: The factors a call may be split along (see the module docstring).
SPLIT = ("n", "c")


def factors(kernel: str, params: dict, shapes) -> tuple[list, list]:
    """The factor of every dimension of the operands (of `shapes`) and of the results of
    one call of `kernel`: lists of names, a tuple for a compound dimension."""
    fixed, results = SIGNATURES[kernel]
    per_image = len(shapes[fixed.index("rois")]) == 3
    rows = ["n", "r"] if per_image else ["r"]
    nchw = params["layout"] == "NCHW"
    out = rows + (["c", "p", "q"] if nchw else ["p", "q", "c"])
    channel = "c"
    if BY_NAME[params["op"]].position_sensitive:
        ph, pw = params["output_size"]
        features = (params["features_shapes"][0] if "features_shapes" in params
                    else shapes[len(fixed)])
        c_out = (features[1] if nchw else features[3]) // (ph * pw)
        # Shardy rejects a compound with a factor of size 1.
        channel = tuple(f for f, size in (("c", c_out), ("p", ph), ("q", pw)) if size != 1)
        channel = channel[0] if len(channel) == 1 else channel or "c"

    def level(i):
        image, h, w = ("n" if per_image else "m"), f"h{i}", f"w{i}"
        return [image, channel, h, w] if nchw else [image, h, w, channel]

    def role(name, shape=None):
        if name in ("levels", "winner") and shape is not None and tuple(shape) == (0,):
            return ["z"]
        return {"rois": rows + ["k"], "rois_like": rows + ["k"], "levels": rows,
                "winner": out, "out": out}[name]

    operands = [role(name, shape) for name, shape in zip(fixed, shapes)]
    num_levels = (len(params["features_shapes"]) if kernel == "backward_features"
                  else len(shapes) - len(fixed))
    operands += [level(i) for i in range(len(shapes) - len(fixed))]
    res = []
    for name in results:
        if name == "features":
            res += [level(i) for i in range(num_levels)]
        else:
            res.append(role(name, (0,) if name == "winner" and not records_winners(params)
                            else None))
    return operands, res


def _names(dims):
    return [f for d in dims for f in ((d,) if isinstance(d, str) else d)]


def sharding_rule(kernel: str, params: dict, shapes) -> tuple[str, dict]:
    """The Shardy rule of one call: an einsum-like string, and its special factors
    (`str_to_sdy_sharding_rule`'s keywords)."""
    operands, results = factors(kernel, params, shapes)

    def text(dims):
        return " ".join(d if isinstance(d, str) else "(" + " ".join(d) + ")" for d in dims)

    rule = ", ".join(map(text, operands)) + " -> " + ", ".join(map(text, results))
    # The verifier wants special factors in order of first appearance.
    order = list(dict.fromkeys(_names([d for dims in operands + results for d in dims])))
    in_results = set(_names([d for dims in results for d in dims]))
    # The box gradient sums over the channels (they appear in its operands only).
    reduction = [f for f in order if f == "c" and f not in in_results]
    need = [f for f in order if f not in SPLIT]
    special = {}
    if reduction:
        special["reduction_factors"] = tuple(reduction)
    if need:
        special["need_replication_factors"] = tuple(need)
    return rule, special


# --------------------------------------------------------------------------- custom calls

def _direct_lowering(kernel, platform):
    """The custom call of `kernel` on `platform`, with its sharding rule and, for (N, R, 4)
    boxes, the batch partitioner's attribute."""

    def lowering(ctx, *args, **params):
        target = _PREFIX[platform] + kernel
        shapes = [a.shape for a in ctx.avals_in]
        rule, special = sharding_rule(kernel, params, shapes)
        extra = {"sdy.sharding_rule": sdy_sharding_rule_to_mlir(
            str_to_sdy_sharding_rule(rule, **special), [a.type for a in args],
            [mlir.aval_to_ir_type(ctx.module_context, a) for a in ctx.avals_out])}
        if len(shapes[SIGNATURES[kernel][0].index("rois")]) == 3:  # (N, R, 4): n leads all
            extra["mhlo.frontend_attributes"] = mlir.ir_attribute({"num_batch_dims": "1"})
        rule_fn = jax.ffi.ffi_lowering(target, extra_attributes=extra)
        return rule_fn(ctx, *args, **ffi_attributes(params))

    return lowering


def _wrapped(ctx) -> bool:
    """Whether a call lowers through custom_partitioning: jit on several devices, no
    manual axes (under shard_map the context is an SPMDAxisContext), and a mesh to name
    shardings by (jax knows one when an input or output has a NamedSharding; without,
    the custom call itself is correct, by the batch partitioner or replication)."""
    context = ctx.module_context.axis_context
    return (isinstance(context, sharding_impls.ShardingContext) and context.num_devices > 1
            and context.abstract_mesh is not None and not context.abstract_mesh.empty)


# --------------------------------------------------------------------------- partitioning

def _axes(entry) -> tuple:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


class _Call:
    """One call's static description: custom_partitioning's static argument."""

    def __init__(self, kernel, params):
        self.kernel, self.params = kernel, params
        self._key = (kernel, tuple(sorted(params.items())))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Call) and self._key == other._key


def _plan(call, mesh, arg_shapes):
    """The mesh axes of n and of c for one call, from its operands' shardings: the first
    operand whose n (c) dimension is split, kept only where every shard gets a whole
    number of images (channel groups). Returns (n axes, c axes, operand dims, result dims)."""
    kernel, params = call.kernel, call.params
    shapes = [s.shape for s in arg_shapes]
    operands, results = factors(kernel, params, shapes)
    specs = [_spec_of(s, mesh) for s in arg_shapes]
    # Feature levels first: they are the large operands, so they should not move.
    order = list(range(len(SIGNATURES[kernel][0]), len(shapes))) + list(
        range(len(SIGNATURES[kernel][0])))

    def chosen(factor, exclude=()):
        for i in order:
            for dim, entry in zip(operands[i], specs[i]):
                if dim == factor or (not isinstance(dim, str) and dim[0] == factor):
                    axes = tuple(a for a in _axes(entry) if a not in exclude)
                    if axes:
                        return axes
        return ()

    def size(axes):
        return math.prod(mesh.shape[a] for a in axes)

    def extent(factor):
        for dims, shape in zip(operands, shapes):
            for dim, length in zip(dims, shape):
                if dim == factor:
                    return length
                if not isinstance(dim, str) and dim[0] == factor:
                    return length // (params["output_size"][0] * params["output_size"][1])
        return 1  # absent: nothing to split

    n_axes = chosen("n")
    if extent("n") % size(n_axes):
        n_axes = ()
    c_axes = chosen("c", exclude=n_axes)
    if extent("c") % size(c_axes):
        c_axes = ()
    return n_axes, c_axes, operands, results


def _spec_of(shape, mesh) -> tuple:
    """The mesh axes of each dimension of an operand; None for a dimension of an operand
    without a sharding yet (GSPMD's propagation) or with one that mesh axes cannot express
    (e.g. Shardy's sub-axes): treated as unsplit, such an operand is resharded. (An
    exception here would abort the process: XLA calls this during compilation.)"""
    spec = ()
    if shape.sharding is not None:
        try:
            spec = tuple(sharding_impls.parse_flatten_op_sharding(
                shape.sharding._hlo_sharding, mesh)[0])
        except Exception:  # noqa: BLE001 -- any sharding it cannot parse
            spec = ()
    return spec + (None,) * (len(shape.shape) - len(spec))


def _spec(dims, n_axes, c_axes):
    def entry(dim):
        name = dim if isinstance(dim, str) else dim[0]
        axes = n_axes if name == "n" else c_axes if name == "c" else ()
        return None if not axes else axes[0] if len(axes) == 1 else axes
    return P(*map(entry, dims))


def _result_shardings(call, mesh, arg_shapes, result_shape=None):
    """GSPMD's propagation: the results' shardings given the operands'."""
    n_axes, c_axes, _, results = _plan(call, mesh, arg_shapes)
    return tuple(NamedSharding(mesh, _spec(dims, n_axes, c_axes)) for dims in results)


def _partitioner(primitive, kernel):
    """custom_partitioning of `primitive`'s calls (see the module docstring)."""

    def bind(call, *args):
        out = primitive.bind(*args, **call.params)
        return tuple(out) if primitive.multiple_results else (out,)

    wrapped = custom_partitioning(bind, static_argnums=(0,))

    def partition(call, mesh, arg_shapes, result_shape):
        n_axes, c_axes, operands, results = _plan(call, mesh, arg_shapes)
        params = dict(call.params)
        if "features_shapes" in params:  # backward_features: each shard's feature levels
            params["features_shapes"] = tuple(
                tuple(length // math.prod(mesh.shape[a] for a in _axes(entry))
                      for length, entry in zip(shape, _spec(dims, n_axes, c_axes)))
                for shape, dims in zip(params["features_shapes"], results))
        # Each channel shard holds its channels' part of the box gradient.
        reduce = c_axes if kernel == "backward_boxes" else ()

        def per_shard(*args):
            out = primitive.bind(*args, **params)
            out = tuple(out) if primitive.multiple_results else (out,)
            return tuple(jax.lax.psum(o, reduce) for o in out) if reduce else out

        arg_shardings = tuple(NamedSharding(mesh, _spec(d, n_axes, c_axes)) for d in operands)
        result_shardings = tuple(NamedSharding(mesh, _spec(d, n_axes, c_axes)) for d in results)
        return mesh, per_shard, result_shardings, arg_shardings

    def rule(call, mesh, operand_types, result_types):
        shapes = [tuple(mlir.ir.RankedTensorType(t).shape) for t in operand_types]
        return sharding_rule(kernel, call.params, shapes)

    # decode_shardings=False: operand shardings arrive as they are (GSPMDSharding), and
    # _spec_of reads them, so a sharding the mesh cannot express is replicated rather than
    # an error.
    wrapped.def_partition(partition, infer_sharding_from_operands=_result_shardings,
                          sharding_rule=rule, decode_shardings=False)
    return wrapped


def register(primitive, kernel: str) -> None:
    """Lowers `primitive` to the FFI target of `kernel` on every platform that has it."""
    if not any(kernel in kernels for kernels in KERNELS.values()):
        return
    jax.ffi.register_ffi_target_as_batch_partitionable(TARGET_PREFIX + kernel)
    # custom_partitioning needs the device assignment and mesh at lowering time; jax
    # provides them only to computations holding a primitive of this set.
    dispatch.prim_requires_devices_during_lowering.add(primitive)
    wrapped = _partitioner(primitive, kernel)
    wrapped_lowering = mlir.lower_fun(
        lambda *args, **params: wrapped(_Call(kernel, params), *args), multiple_results=True)

    for platform, kernels in KERNELS.items():
        if kernel not in kernels:
            continue
        direct = _direct_lowering(kernel, platform)

        def lowering(ctx, *args, _direct=direct, **params):
            if _wrapped(ctx):
                return wrapped_lowering(ctx, *args, **params)
            return _direct(ctx, *args, **params)

        mlir.register_lowering(primitive, lowering, platform=platform)


@contextlib.contextmanager
def cuda_emulation():
    """Test-only: inside, the primitives lower on the CPU to the emulated CUDA kernels
    instead of the CPU kernels. jax's caches are cleared on entry and on exit, so that no
    computation compiled for one set of kernels runs where the other is meant."""
    if not EMULATED_KERNELS:
        raise RuntimeError("jax_roialign._cuda_emulated is not built "
                           "(CMake option JAX_ROIALIGN_CUDA_EMULATION)")
    jax.clear_caches()
    _PREFIX["cpu"] = EMULATED_PREFIX
    try:
        yield
    finally:
        _PREFIX["cpu"] = TARGET_PREFIX
        jax.clear_caches()


def has_kernels(platform: str) -> bool:
    """Whether compiled kernels serve `platform` ("cpu", "gpu"/"cuda", ...)."""
    return ("cuda" if platform == "gpu" else platform) in KERNELS
