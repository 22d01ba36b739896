"""Sharding on 8 devices: every operator case, both layouts, split by images and by
channels, under ``jit`` (Shardy and GSPMD) and inside ``shard_map`` (check_vma on).

WARNING: sharding bugs are mostly SILENT. A primitive whose abstract evaluation drops the
varying-manual-axes type makes jax insert a ``pvary`` whose transpose sums cotangents over
the shards: inside shard_map, the box gradient with channel-split features and the feature
gradient with split (K, 5) rows both came out wrong with no error (pinned below). A
partitioning rule that lets a shard compute on a part of what it reads would be just as
quiet. So every test compares the value AND both gradients with the unsharded computation,
bit for bit, and counts the collectives in the compiled HLO: a passing value test with a
surprise all-gather means the work was not split at all.

The one comparison that is not bit for bit: the box gradient over channel shards. Each
shard sums its own channels and one all-reduce adds the partial sums, a different order
of the same float64 additions than the kernel's (`_close`).

XLA_FLAGS must force 8 host devices before jax initialises its backend, and the rest of
the suite runs on one: so this module runs in ONE subprocess (`_run_worker`), and each
test here reports the outcome of its twin there. Every process that relays tests of this
module runs that subprocess: under pytest-xdist keep the module in one process (the README's
command distributes whole files, `--dist loadfile`).
"""

import functools
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jax_roialign as jra
from cases import CASES, IDS, LAYOUTS, features, smooth_rois

WORKER = os.environ.get("JAX_ROIALIGN_SHARDING_WORKER") == "1"
DEVICES = 8
COLLECTIVES = ("all-gather", "all-reduce", "collective-permute", "all-to-all", "reduce-scatter")
SIZE = (2, 3)  # output bins: position-sensitive cases get C_out * 6 channels
N, R, H, W = DEVICES, 3, 8, 9
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


# ----------------------------------------------------------------------------- the worker

@functools.cache
def _run_worker(nodeids: tuple, rootdir: str):
    env = dict(os.environ, JAX_ROIALIGN_SHARDING_WORKER="1",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                          + f" --xla_force_host_platform_device_count={DEVICES}").strip())
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp) / "report.xml"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"--junitxml={report}", *nodeids],
            cwd=rootdir, env=env, capture_output=True, text=True, timeout=1800)
        log = (proc.stdout + proc.stderr)[-6000:]
        if not report.exists():
            return {}, log
        outcomes = {}
        for case in ET.parse(report).iter("testcase"):
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = child.tag
                    message = (child.get("message") or "") + "\n" + (child.text or "")
            outcomes[case.get("name")] = (outcome, message)
        return outcomes, log


@pytest.fixture(autouse=True)
def _on_eight_devices(request):
    """Outside the worker: this test's outcome in the worker (which runs them all once)."""
    if WORKER:
        return
    this = pathlib.Path(__file__).resolve()
    ids = tuple(item.nodeid for item in request.session.items
                if pathlib.Path(item.path).resolve() == this)
    outcomes, log = _run_worker(ids, str(request.config.rootpath))
    if request.node.name not in outcomes:
        pytest.fail(f"no outcome from the {DEVICES}-device worker; its output:\n{log}",
                    pytrace=False)
    outcome, message = outcomes[request.node.name]
    if outcome == "skipped":
        pytest.skip(message.strip())
    if outcome != "passed":
        pytest.fail(f"on {DEVICES} devices: {message}", pytrace=False)


def _relayed(test):
    """The test outside the worker: its body does not run (the fixture reports)."""
    @functools.wraps(test)
    def relay(*args, **kwargs):
        pass
    return relay


# ----------------------------------------------------------------------------- helpers

@functools.cache
def _mesh(shape=(DEVICES,), names=("x",)):
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


def _put(x, spec, mesh=None):
    return jax.device_put(x, NamedSharding(mesh or _mesh(), spec))


def compiled(fn, *args):
    """(jit(fn)(*args), {collective: count} of its compiled, partitioned HLO, the result
    shapes of its kernel calls: what each device computes)."""
    exe = jax.jit(fn).lower(*args).compile()
    text = exe.as_text()
    counts = {k: len(re.findall(rf"\b{k}(?:-start)?\(", text)) for k in COLLECTIVES}
    shapes = re.findall(r"= \(?(\w+\[[\d,]*\])[^\n]*custom_call_target=\"jax_roialign_", text)
    return exe(*args), {k: v for k, v in counts.items() if v}, shapes


def _close(got, want):
    """The box gradient over channel shards: partial sums per shard, then one all-reduce;
    the same float64 terms in another order (see the module docstring)."""
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * float(np.abs(want).max()))


def _inputs(case, layout, seed=0, c_out=DEVICES):
    """Features (N, C, H, W) with C_out = 8 output channels (a whole group per channel
    shard), (N, R, 4) boxes inside the map, and a cotangent shaped like the output."""
    rng = np.random.default_rng(seed)
    f = features(case, rng, SIZE, layout, n=N, c_out=c_out, h=H, w=W)
    boxes = smooth_rois(rng, N * R, H, W, 1.0)[:, 1:].reshape(N, R, 4)
    out = np.asarray(case("kernel", f, boxes, SIZE, 1.0, 2, True, layout))
    ct = rng.normal(size=out.shape)
    return f, boxes, ct


def _specs(split, layout):
    """(features, boxes, output) partition specs for a split by images or by channels."""
    if split == "images":
        return P("x"), P("x"), P("x")
    if layout == "NCHW":
        return P(None, "x"), P(), P(None, None, "x")
    return P(None, None, None, "x"), P(), P(None, None, None, None, "x")


def _op(case, layout):
    return lambda f, b: case("kernel", f, b, SIZE, 1.0, 2, True, layout)


def _kernel_calls(case, layout):
    """forward, feature gradient, box gradient, each a function of (f, boxes, ct)."""
    op = _op(case, layout)
    return {
        "forward": lambda f, b, ct: op(f, b),
        "feature gradient": lambda f, b, ct: jax.vjp(lambda x: op(x, b), f)[1](ct)[0],
        "box gradient": lambda f, b, ct: jax.vjp(lambda x: op(f, x), b)[1](ct)[0],
    }


@functools.cache
def _unsharded(test, case_id, layout):
    """The results of `test`'s function on one device: the same for every split and
    partitioner, so computed once."""
    case = next(c for c in CASES if c.id == case_id)
    f, boxes, ct = _inputs(case, layout)
    if test == "calls":
        return {name: jax.jit(fn)(f, boxes, ct) for name, fn in _kernel_calls(case, layout).items()}
    if test == "vmap":
        return jax.jit(_vmapped(case, layout))(*_vmap_inputs(f, boxes, ct))
    rng = np.random.default_rng(1)
    tf, tb = rng.normal(size=f.shape), rng.normal(size=boxes.shape)
    return jax.jit(_everything(case, layout))(f, boxes, ct, tf, tb), (tf, tb)


class _partitioner:
    """Shardy (jax's default) or GSPMD for the duration of a test."""

    def __init__(self, name):
        self.shardy = name == "shardy"

    def __enter__(self):
        self.saved = jax.config.jax_use_shardy_partitioner
        jax.config.update("jax_use_shardy_partitioner", self.shardy)

    def __exit__(self, *exc):
        jax.config.update("jax_use_shardy_partitioner", self.saved)


# ----------------------------------------------------------------------------- jit

@pytest.mark.parametrize("partitioner", ["shardy", "gspmd"])
@pytest.mark.parametrize("split", ["images", "channels"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jit_splits_every_kernel_call(case, layout, split, partitioner):
    """Forward, feature gradient and box gradient of a split call: no collective but the
    box gradient's one all-reduce over channel shards; each device's kernel sees its own
    shard; the values equal the unsharded ones."""
    f, boxes, ct = _inputs(case, layout)
    fspec, bspec, ospec = _specs(split, layout)
    args = (_put(f, fspec), _put(boxes, bspec), _put(ct, ospec))
    box_reduce = split == "channels" and case.box_derivative
    with _partitioner(partitioner):
        for name, fn in _kernel_calls(case, layout).items():
            got, counts, shapes = compiled(fn, *args)
            expected = {"all-reduce": 1} if name == "box gradient" and box_reduce else {}
            assert counts == expected, name
            want = _unsharded("calls", case.id, layout)[name]
            if name == "box gradient" and box_reduce:
                _close(got, want)
            else:
                np.testing.assert_array_equal(got, want, err_msg=name)
            if name == "forward":
                assert got.sharding.is_equivalent_to(NamedSharding(_mesh(), ospec), got.ndim)
                local = list(got.shape)
                local[0 if split == "images" else (2 if layout == "NCHW" else 4)] //= DEVICES
                assert shapes[0].split("[")[1].rstrip("]") == ",".join(map(str, local))


@pytest.mark.parametrize("split", ["images", "channels"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jit_of_vmap_keeps_the_split(case, layout, split):
    """vmap over an extra leading axis folds it into the kernels' images (or rois) without
    moving the split axis: still no collective, the same values."""
    fspec, bspec, ospec = (P(None, *s) for s in _specs(split, layout))
    vargs = _vmap_inputs(*_inputs(case, layout))
    args = [_put(a, s) for a, s in zip(vargs, (fspec, bspec, ospec))]
    got, counts, _ = compiled(_vmapped(case, layout), *args)
    assert counts == {}
    for g, w in zip(got, _unsharded("vmap", case.id, layout)):
        np.testing.assert_array_equal(g, w)


def _vmap_inputs(f, boxes, ct):
    return np.stack([f, 2 * f]), np.stack([boxes, boxes + 0.25]), np.stack([ct, -ct])


def _vmapped(case, layout):
    """The value and the feature gradient, vmapped over a leading axis."""
    calls = _kernel_calls(case, layout)
    return jax.vmap(lambda f, b, ct: (calls["forward"](f, b, ct),
                                      calls["feature gradient"](f, b, ct)))


# ----------------------------------------------------------------------------- shard_map

def _everything(case, layout):
    """The value, both gradients (vjp), the jvp in features and boxes."""
    op = _op(case, layout)

    def run(f, b, ct, tf, tb):
        out, vjp = jax.vjp(op, f, b)
        gf, gb = vjp(ct)
        return out, gf, gb, jax.jvp(op, (f, b), (tf, tb))[1]

    return run


@pytest.mark.parametrize("split", ["images", "channels"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_shard_map_value_gradients_and_jvp(case, layout, split):
    f, boxes, ct = _inputs(case, layout)
    want, (tf, tb) = _unsharded("shard_map", case.id, layout)
    fspec, bspec, ospec = _specs(split, layout)
    specs = (fspec, bspec, ospec, fspec, bspec)
    sharded = jax.shard_map(_everything(case, layout), mesh=_mesh(), in_specs=specs,
                            out_specs=(ospec, fspec, bspec, ospec), check_vma=True)
    args = [_put(a, s) for a, s in zip((f, boxes, ct, tf, tb), specs)]
    box_reduce = split == "channels" and case.box_derivative
    got, counts, _ = compiled(sharded, *args)
    assert counts == ({"all-reduce": 1} if box_reduce else {})
    for name, g, w in zip(("value", "feature gradient", "box gradient", "jvp"), got, want):
        if name == "box gradient" and box_reduce:
            _close(g, w)
        else:
            np.testing.assert_array_equal(g, w, err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_shard_map_vmap_and_second_order(case):
    """vmap inside and outside shard_map, and the gradient of a gradient in the features."""
    f, boxes, _ = _inputs(case, "NCHW")
    op = _op(case, "NCHW")
    fv, bv = np.stack([f, -f]), np.stack([boxes, boxes + 0.5])
    vspec = P(None, "x")
    inner = jax.shard_map(jax.vmap(op), mesh=_mesh(), in_specs=(vspec, vspec), out_specs=vspec)
    outer = jax.vmap(jax.shard_map(op, mesh=_mesh(), in_specs=(P("x"), P("x")), out_specs=P("x")))
    want = jax.jit(jax.vmap(op))(fv, bv)
    for fn in (inner, outer):
        np.testing.assert_array_equal(jax.jit(fn)(_put(fv, vspec), _put(bv, vspec)), want)

    def hessian_vector(f, b):
        return jax.grad(lambda x: jnp.sum(jax.grad(lambda y: jnp.sum(op(y, b) ** 3))(x)))(f)

    sharded = jax.shard_map(hessian_vector, mesh=_mesh(), in_specs=(P("x"), P("x")),
                            out_specs=P("x"))
    np.testing.assert_array_equal(jax.jit(sharded)(_put(f, P("x")), _put(boxes, P("x"))),
                                  jax.jit(hessian_vector)(f, boxes))


# ----------------------------------------------------------------------------- what was wrong

def _roi_align_loss(f, rois):
    return jnp.sum(jra.roi_align(f, rois, SIZE, 1.0, 2, True) ** 2)


def _psum_loss(spec):
    per_shard = lambda f, r: jax.lax.psum(_roi_align_loss(f, r), "x")
    return jax.shard_map(per_shard, mesh=_mesh(), in_specs=spec, out_specs=P())


def test_shard_map_gradients_are_typed_like_their_primals():
    """Was: ValueError: Expected cotangent type float32[1,64,32,32]{V:x} but got
    float32[1,64,32,32] (the output was typed invariant)."""
    f, boxes, _ = _inputs(CASES[0], "NCHW")
    loss = _psum_loss((P("x"), P("x")))
    got = jax.jit(jax.grad(loss, (0, 1)))(_put(f, P("x")), _put(boxes, P("x")))
    for g, w in zip(got, jax.jit(jax.grad(_roi_align_loss, (0, 1)))(f, boxes)):
        np.testing.assert_array_equal(g, w)


def test_shard_map_box_gradient_over_channel_shards_is_their_sum():
    """Was silently WRONG: features split on channels, boxes replicated; the box gradient
    was one shard's (typed invariant, it was never summed)."""
    f, boxes, _ = _inputs(CASES[0], "NCHW")
    loss = _psum_loss((P(None, "x"), P()))
    gf, gb = jax.jit(jax.grad(loss, (0, 1)))(_put(f, P(None, "x")), _put(boxes, P()))
    wf, wb = jax.jit(jax.grad(_roi_align_loss, (0, 1)))(f, boxes)
    np.testing.assert_array_equal(gf, wf)
    _close(gb, wb)


def test_shard_map_feature_gradient_with_split_rows_and_replicated_features():
    """Was silently WRONG: (K, 5) rows split, features replicated; the feature gradient
    is the sum of every shard's rows' contributions."""
    f, boxes, _ = _inputs(CASES[0], "NCHW")
    rows = np.concatenate([np.repeat(np.arange(N), R)[:, None], boxes.reshape(-1, 4)], 1)
    rows = rows[np.random.default_rng(3).permutation(len(rows))]  # a shard's rows, many images
    loss = _psum_loss((P(), P("x")))
    gf, gr = jax.jit(jax.grad(loss, (0, 1)))(_put(f, P()), _put(rows, P("x")))
    wf, wr = jax.jit(jax.grad(_roi_align_loss, (0, 1)))(f, rows)
    # Several shards' rows add into one image's gradient: partial sums, then the psum.
    np.testing.assert_allclose(gf, wf, rtol=1e-12, atol=1e-12 * float(np.abs(wf).max()))
    np.testing.assert_array_equal(gr, wr)


def test_replicated_out_specs_on_a_per_shard_result_is_an_error():
    """Was silently accepted, returning one shard's block."""
    f, boxes, _ = _inputs(CASES[0], "NCHW")
    op = lambda f, b: jra.roi_align(f, b, SIZE, 1.0, 2, True)
    bad = jax.shard_map(op, mesh=_mesh(), in_specs=(P("x"), P("x")), out_specs=P())
    with pytest.raises(ValueError, match="out_specs which require replication"):
        jax.jit(bad)(_put(f, P("x")), _put(boxes, P("x")))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_forms_inside_shard_map(case):
    """Was: a lax.scan carry type error (the initial carry was typed invariant). Images
    on one mesh axis, channels on the other (the boxes vary over the first only); the
    gradients (slow to compile) for one case. Compared with the kernels, which the pure
    JAX cores match to rounding (test_values.py, test_gradients.py); the forward in
    float32 bit for bit, as outside shard_map: a partitioned program that XLA rewrote
    (a division into a product, as under vmap) would differ in its last bits. For that
    check the divisors are not powers of two (a 3 x 3 sampling grid; bins of several
    cells, on a larger map) and the values span six orders of magnitude."""
    mesh = _mesh((4, 2), ("data", "model"))
    f, boxes, _ = _inputs(case, "NCHW")
    specs = (P("data", "model"), P("data"))
    args = (_put(f, specs[0], mesh), _put(boxes, specs[1], mesh))
    if case is CASES[0]:
        def loss(impl):
            return lambda f, b: jnp.sum(case(impl, f, b, SIZE, 1.0, 2, True) ** 2)
        per_shard = lambda f, b: jax.lax.psum(loss("reference")(f, b), ("data", "model"))
        sharded = jax.shard_map(per_shard, mesh=mesh, in_specs=specs, out_specs=P())
        got = jax.jit(jax.value_and_grad(sharded, (0, 1)))(*args)
        want = jax.jit(jax.value_and_grad(loss("kernel"), (0, 1)))(f, boxes)
    else:
        ref = lambda f, b: case("reference", f, b, SIZE, 1.0, 2, True)
        sharded = jax.shard_map(ref, mesh=mesh, in_specs=specs, out_specs=P("data", None, "model"))
        got, want = jax.jit(sharded)(*args), case("kernel", f, boxes, SIZE, 1.0, 2, True)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * float(np.abs(w).max()))
    rng = np.random.default_rng(1)
    h, w = 3 * H, 3 * W
    f32 = features(case, rng, SIZE, "NCHW", n=N, c_out=DEVICES, h=h, w=w)
    f32 = (f32 * 10.0 ** rng.uniform(-3, 3, f32.shape)).astype(np.float32)
    b32 = smooth_rois(rng, N * R, h, w, 1.0)[:, 1:].reshape(N, R, 4).astype(np.float32)
    ref = lambda f, b: case("reference", f, b, SIZE, 1.0, 3, True)
    sharded = jax.shard_map(ref, mesh=mesh, in_specs=specs, out_specs=P("data", None, "model"))
    np.testing.assert_array_equal(
        jax.jit(sharded)(_put(f32, specs[0], mesh), _put(b32, specs[1], mesh)),
        case("kernel", f32, b32, SIZE, 1.0, 3, True))


# ----------------------------------------------------------------------------- limits and forms

def test_rows_form_stays_correct_and_gathers():
    """(K, 5) rows cannot say which image a row reads: split by images, the features are
    gathered (and the result is right); split by channels, nothing moves."""
    f, boxes, ct = _inputs(CASES[0], "NCHW")
    rows = np.concatenate([np.repeat(np.arange(N), R)[:, None], boxes.reshape(-1, 4)], 1)
    op = lambda f, r: jra.roi_align(f, r, SIZE, 1.0, 2, True)
    want = jax.jit(op)(f, rows)
    got, counts, _ = compiled(op, _put(f, P("x")), _put(rows, P("x")))
    assert counts.get("all-gather", 0) >= 1
    np.testing.assert_array_equal(got, want)
    got, counts, _ = compiled(op, _put(f, P(None, "x")), _put(rows, P()))
    assert counts == {}
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("case", [c for c in CASES if c.op.position_sensitive],
                         ids=[c.id for c in CASES if c.op.position_sensitive])
def test_position_sensitive_channels_split_only_in_whole_groups(case):
    """C = C_out * PH * PW: a channel shard must hold whole groups of PH * PW. With C_out
    a multiple of the shard count the channels split (no collective); otherwise they are
    replicated (gathered), and the values are right either way. Inside shard_map each
    shard's call checks its own channel count."""
    for c_out, split in ((DEVICES, True), (DEVICES // 2, False)):
        f, boxes, ct = _inputs(case, "NCHW", c_out=c_out)
        op = _op(case, "NCHW")
        args = (_put(f, P(None, "x")), _put(boxes, P()))
        got, counts, _ = compiled(op, *args)
        assert (counts == {}) if split else counts.get("all-gather", 0) >= 1
        np.testing.assert_array_equal(got, jax.jit(op)(f, boxes))
    bad = jax.shard_map(op, mesh=_mesh(), in_specs=(P(None, "x"), P()), out_specs=P(None, None, "x"))
    with pytest.raises(ValueError, match="divisible"):
        jax.jit(bad)(*args)


def test_two_dimensional_mesh_images_and_channels():
    """Images on one mesh axis, channels on the other: no collective but the box
    gradient's all-reduce over the channel axis."""
    mesh = _mesh((4, 2), ("data", "model"))
    case = CASES[0]
    f, boxes, ct = _inputs(case, "NCHW")
    args = (_put(f, P("data", "model"), mesh), _put(boxes, P("data"), mesh),
            _put(ct, P("data", None, "model"), mesh))
    for name, fn in _kernel_calls(case, "NCHW").items():
        got, counts, _ = compiled(fn, *args)
        assert counts == ({"all-reduce": 1} if name == "box gradient" else {})
        (_close if name == "box gradient" else np.testing.assert_array_equal)(
            got, jax.jit(fn)(f, boxes, ct))


def test_several_feature_levels():
    """The rules are generic over the feature levels (each its own map, n and c shared):
    multi_scale_roi_align over two levels, every roi its own, split by images and by
    channels."""
    rng = np.random.default_rng(4)
    f0, f1 = rng.normal(size=(N, DEVICES, H, W)), rng.normal(size=(N, DEVICES, 5, 6))
    boxes = smooth_rois(rng, N * R, H, W, 1.0)[:, 1:].reshape(N, R, 4)
    levels = rng.integers(0, 2, (N, R)).astype(np.int32)

    def value_and_grads(b, lv, f0, f1):
        fn = lambda b, f0, f1: jra.multi_scale_roi_align([f0, f1], b, SIZE, (1.0, 0.5), 2, True,
                                                         levels=lv)
        out, vjp = jax.vjp(fn, b, f0, f1)
        return (out, *vjp(out))

    want = jax.jit(value_and_grads)(boxes, levels, f0, f1)
    for fspec, bspec, reduce in ((P("x"), P("x"), False), (P(None, "x"), P(), True)):
        args = (_put(boxes, bspec), _put(levels, bspec), _put(f0, fspec), _put(f1, fspec))
        got, counts, _ = compiled(value_and_grads, *args)
        assert counts == ({"all-reduce": 1} if reduce else {})
        for i, (g, w) in enumerate(zip(got, want)):
            (_close if reduce and i == 1 else np.testing.assert_array_equal)(g, w)


def test_explicit_mesh():
    """jax.make_mesh's default (Explicit axes): the same values and no collective."""
    mesh = jax.make_mesh((DEVICES,), ("x",))
    f, boxes, _ = _inputs(CASES[0], "NCHW")
    args = (_put(f, P("x"), mesh), _put(boxes, P("x"), mesh))
    fn = jax.value_and_grad(_roi_align_loss, (0, 1))
    got, counts, _ = compiled(fn, *args)
    assert counts == {"all-reduce": 1}  # the scalar loss's sum over images
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(jax.jit(fn)(f, boxes))):
        np.testing.assert_allclose(g, w, rtol=1e-13)  # the loss: partial sums, then psum


def test_readme_sharding_example_runs_as_written():
    """As a user runs it (x64 off), printing what its comments say."""
    text = README.read_text()
    block = text.split("<!-- sharding-example -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, JAX_ENABLE_X64="0"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["P('data', 'model') P('data',)",
                                       "{'all-gather': 0, 'all-reduce': 2}", "True True"]


if not WORKER:
    for _name, _test in list(globals().items()):
        if _name.startswith("test_") and callable(_test):
            globals()[_name] = _relayed(_test)
