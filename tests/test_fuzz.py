"""Property (fuzz) tests of every operator case (tests/cases.py) on random shapes,
parameters and rois, awkward and bad ones included (docs/semantics.md, "Bad data"):

- under jit nothing raises, outputs and gradients are finite (for finite features) and
  bounded by the features, bad rois give zeros and pass no gradient
  (`test_kernels_survive_any_input`);
- the kernels agree with the pure-JAX reference, forward, feature gradient and box
  gradient, within each dtype's tolerance (`test_kernels_agree_with_reference`);
- the CPU kernels give the same bits on one thread and on several
  (`test_same_bits_on_any_number_of_threads`);
- one named regression test per finding of issue 10's fuzz + sanitizer campaign that no
  other module pins already (`test_finding_*`).

Hypothesis runs derandomized (the same examples on every run) with bounded budgets
(FUZZ_EXAMPLES, AGREE_EXAMPLES); .ci/run runs this module again with the kernels built
under ASan + UBSan (a lower budget, no comparisons with the reference).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import jax_roialign as jra
from cases import CASES, IDS, LAYOUTS, edge_rois, features, form_rois
from jax_roialign import reference
from jax_roialign._src import api as _api
from jax_roialign._src import primitives as _primitives
from jax_roialign._src.operators import BY_NAME

#: Examples per operator case: robustness (kernels only, any shape) and agreement with
#: the reference (a few shapes per case, each compiled once; the reference compiles in
#: seconds, the kernels in a fraction of one). JAX_ROIALIGN_FUZZ_EXAMPLES lowers the
#: first for .ci/run's sanitizer step, where every compilation is slower.
FUZZ_EXAMPLES = int(os.environ.get("JAX_ROIALIGN_FUZZ_EXAMPLES", "15"))
AGREE_EXAMPLES = 12
AGREE_SHAPES = 2

# No explain phase: it re-runs a failure many times (each a compilation) to say little.
SETTINGS = dict(derandomize=True, deadline=None, database=None, print_blob=False,
                phases=(Phase.explicit, Phase.generate, Phase.shrink),
                suppress_health_check=list(HealthCheck))

DTYPES = (np.float64, np.float32, jnp.float16, jnp.bfloat16)
FORMS = ("rows", "per_image", "list")
SCALES = (1.0, 0.5, 0.25, 1 / 16, 2.0, 3.7, 1e-3, 1e3, 1e30)
# The FPN pooler's level mappers need scales 1/2^k (an error at trace time otherwise).
PYRAMID_SCALES = (1.0, 0.5, 0.25, 1 / 16, 2.0, 2.0 ** -10, 2.0 ** 100)
SAMPLING = (-1, 0, 1, 2, 3, 5, 16, 64)
# Coordinates that are not data: non-finite, beyond float32, near the float limits.
SPECIALS = (np.nan, np.inf, -np.inf, 1e300, -1e300, 3.4e38, -3.4e38, 2e38, 1e308, -1e308)
ROW_KINDS = ("normal", "tiny", "zero", "reversed", "outside", "edge", "huge", "special")


def _geometry_dtype(dtype):
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


class Config(NamedTuple):
    """The static part of one call: everything jit specialises on."""
    dtype: object
    layout: str
    form: str
    n: int
    c_out: int
    h: int
    w: int
    size: tuple
    scale: float
    sr: int
    aligned: bool
    rows: tuple  # rows: (K,); per_image: (R,); list: (R_0, ..., R_{n-1})


# ------------------------------------------------------------------ strategies

def _rotate(seq, draw, case):
    """An element of `seq`, the choice shifted by the case's position: derandomized
    Hypothesis draws the same choices for every case, this spreads them."""
    return seq[(draw(st.integers(0, len(seq) - 1)) + CASES.index(case)) % len(seq)]


@st.composite
def configs(draw, case, max_rows=6):
    lo = case.op.min_output
    form = _rotate(FORMS, draw, case)
    n = draw(st.integers(1, 3))
    if form == "rows":
        rows = (draw(st.integers(1, max_rows)),)
    elif form == "per_image":
        rows = (draw(st.integers(0, max(1, max_rows // n))),)
    else:
        rows = tuple(draw(st.integers(0, max(1, max_rows // n))) for _ in range(n))
    return Config(
        dtype=_rotate(DTYPES, draw, case), layout=_rotate(LAYOUTS, draw, case), form=form,
        n=n, c_out=draw(st.integers(1, 3)), h=draw(st.integers(1, 9)),
        w=draw(st.integers(1, 9)), size=(draw(st.integers(lo, 4)), draw(st.integers(lo, 4))),
        scale=draw(st.sampled_from(PYRAMID_SCALES if case.levels else SCALES)),
        sr=_rotate(SAMPLING, draw, case) if case.sampling else -1,
        aligned=draw(st.booleans()) if case.aligned else False, rows=rows)


def _axis_pair(draw, kind, extent, scale, huge):
    """(lo, hi) of one axis of a box, in input pixels, for a map `extent` cells long."""
    e = extent / scale
    u = lambda: draw(st.floats(0, 1))
    if kind == "normal":
        return tuple(sorted((-0.2 * e + 1.4 * e * u(), -0.2 * e + 1.4 * e * u())))
    if kind == "tiny":
        a = e * u()
        return a, a + 0.5 * u() / scale
    if kind == "zero":
        a = -0.2 * e + 1.4 * e * u()
        return a, a
    if kind == "reversed":
        return tuple(sorted((-0.2 * e + 1.4 * e * u(), -0.2 * e + 1.4 * e * u()), reverse=True))
    if kind == "outside":
        a = (-3 + u()) * e if draw(st.booleans()) else (2 + u()) * e
        return a, a + e * u()
    if kind == "edge":  # window edges and cell corners: where the kinks are
        at = (-1.5, -1.0, -0.5, 0.0, 0.5, extent - 1.0, extent - 0.5, float(extent),
              extent + 0.5)
        return tuple(draw(st.sampled_from(at)) / scale for _ in range(2))
    if kind == "huge":
        big = lambda: (-1.0) ** draw(st.integers(0, 1)) * 10.0 ** draw(st.integers(3, huge))
        return big(), big()
    coord = lambda: draw(st.sampled_from(SPECIALS)) if draw(st.booleans()) else e * u()
    return coord(), coord()


@st.composite
def pixel_boxes(draw, cfg, count):
    """(count, 4) boxes [x1, y1, x2, y2] in input pixels: every kind of ROW_KINDS, each
    axis of its own kind."""
    huge = 300 if np.dtype(cfg.dtype) == np.float64 else 38
    out = []
    for _ in range(count):
        kinds = draw(st.sampled_from(ROW_KINDS)), draw(st.sampled_from(ROW_KINDS))
        x1, x2 = _axis_pair(draw, kinds[0], cfg.w, cfg.scale, huge)
        y1, y2 = _axis_pair(draw, kinds[1], cfg.h, cfg.scale, huge)
        out.append([x1, y1, x2, y2])
    return np.asarray(out, np.float64).reshape(count, 4)


@st.composite
def batch_indices(draw, n, count):
    """Mostly valid image indices; a quarter of them bad (outside [0, N), fractional,
    non-finite, beyond int32), and -0.0 (valid)."""
    bad = (-1.0, float(n), 0.5, np.nan, np.inf, -np.inf, 1e20, 2.0 ** 31, n - 0.5)
    return np.asarray([draw(st.sampled_from(bad)) if draw(st.integers(0, 3)) == 0
                       else draw(st.sampled_from([-0.0] + list(range(n))))
                       for _ in range(count)], np.float64)


@st.composite
def rois_for(draw, cfg):
    """The tests' pixel boxes in cfg's form: (K, 5) rows, (N, R, 4), or a list."""
    if cfg.form == "rows":
        (k,) = cfg.rows
        return np.concatenate([draw(batch_indices(cfg.n, k))[:, None],
                               draw(pixel_boxes(cfg, k))], 1)
    if cfg.form == "per_image":
        (r,) = cfg.rows
        return draw(pixel_boxes(cfg, cfg.n * r)).reshape(cfg.n, r, 4)
    return [draw(pixel_boxes(cfg, r)) for r in cfg.rows]


def _features(case, cfg, seed, nan=False):
    f = features(case, np.random.default_rng(seed), cfg.size, cfg.layout, n=cfg.n,
                 c_out=cfg.c_out, h=cfg.h, w=cfg.w)
    if nan:
        f[np.random.default_rng(seed + 1).uniform(size=f.shape) < 0.2] = np.nan
    return jnp.asarray(f).astype(cfg.dtype)


# ------------------------------------------------------------------ running and reading

_FUNCTIONS = {}


def _functions(case, impl, cfg):
    """jit-compiled forward and vjp (features, pixel boxes) of `case` on `cfg`; kept, so
    the agreement test compiles each shape once."""
    key = (case.id, impl, cfg)
    if key not in _FUNCTIONS:
        if len(_FUNCTIONS) >= 60:  # docs/architecture.md: bound the compilations held
            _FUNCTIONS.clear()
            jax.clear_caches()
        fn = lambda f, r: case(impl, f, r, cfg.size, cfg.scale, cfg.sr, cfg.aligned,
                               cfg.layout)
        _FUNCTIONS[key] = jax.jit(fn), jax.jit(lambda f, r, ct: jax.vjp(fn, f, r)[1](ct))
    return _FUNCTIONS[key]


def _rows_of(x, form):
    """An output, or a box-shaped gradient, as float64 with one row per roi (a list of
    rois gives one output of concatenated rows, and a gradient per array)."""
    if isinstance(x, (list, tuple)):
        return np.concatenate([np.zeros((0, 4))] + [_np(a) for a in x])
    x = _np(x)
    return x.reshape((-1,) + x.shape[2:]) if form == "per_image" else x


def _formed(case, cfg, f, rois):
    """The operator's own boxes of `rois` in its geometry dtype: (K, coords) and (K,)
    batch indices (nan where the form has none to get wrong)."""
    gdt = _geometry_dtype(cfg.dtype)
    if cfg.form == "list":
        boxes = np.concatenate([np.zeros((0, 4))] + list(rois))
        index = np.concatenate([np.full(len(r), float(i)) for i, r in enumerate(rois)] +
                               [np.zeros(0)])
    elif cfg.form == "per_image":
        boxes = rois.reshape(-1, 4)
        index = np.repeat(np.arange(cfg.n, dtype=np.float64), rois.shape[1])
    else:
        boxes, index = rois[:, 1:], rois[:, 0]
    rows = np.concatenate([index[:, None], boxes], 1)
    with np.errstate(all="ignore"):
        formed = form_rois(case.form, rows, np.asarray(f), cfg.layout, cfg.scale, case.config)
        if case.form == "crop":
            boxes, idx = formed
            formed = np.concatenate([np.asarray(idx, np.float64)[:, None], boxes], 1)
        formed = np.asarray(formed, np.float64)
        if case.config.get("clockwise"):
            formed[:, -1] = -formed[:, -1]
        return formed[:, 1:].astype(gdt), formed[:, 0]


def _dead(case, cfg, coords, index):
    """Rows docs/semantics.md makes zero ("Bad data"), written from its formulas: a batch
    index that is not an integer in [0, N); a coordinate, or a scaled corner or size, that
    is not finite in the geometry dtype; an aligned rotated box of negative size."""
    t = coords.dtype.type
    c = [coords[:, j] for j in range(coords.shape[1])]
    s = t(cfg.scale)
    aligned = case.op.fixed.get("aligned", cfg.aligned)
    off = t(0.5) if aligned else t(0)
    with np.errstate(all="ignore"):
        good = np.isfinite(index) & (index == np.floor(index)) & (index >= 0) & (index < cfg.n)
        if case.form == "crop":  # [y1, x1, y2, x2] * (extent - 1), size, centre
            geo = []
            for lo, hi, extent in ((c[0], c[2], cfg.h), (c[1], c[3], cfg.w)):
                span = t(extent - 1)
                geo += [lo, hi, lo * span, hi * span, (hi - lo) * span, t(0.5) * (lo + hi) * span]
        elif case.form == "rotated":
            angle = c[4].astype(np.float64)
            theta = angle if case.config.get("angle_unit") == "radians" else angle * np.pi / 180
            geo = c + [c[0] * s - off, c[1] * s - off, c[2] * s, c[3] * s, theta.astype(t)]
            if aligned:
                good &= (c[2] * s >= 0) & (c[3] * s >= 0)
        elif case.op_name in ("roi_pool", "ps_roi_pool"):
            geo = c + [v * s for v in c]
        elif case.op_name.startswith("legacy"):
            geo = c + [c[2] * s - c[0] * s + t(1), c[3] * s - c[1] * s + t(1)] + [v * s for v in c]
        else:
            geo = c + [v * s - off for v in c] + [(c[2] * s - off) - (c[0] * s - off),
                                                  (c[3] * s - off) - (c[1] * s - off)]
        for v in geo:
            good &= np.isfinite(v)
    return ~good


def _outside_cap(case, cfg, coords):
    """Rows whose adaptive grid exceeds the reference's cap (reference.ADAPTIVE_GRID_CAP):
    there the reference samples a capped grid, so its values are not docs/semantics.md's.
    Sizes as the kernels form them, in the geometry dtype."""
    if not case.sampling or cfg.sr > 0:
        return np.zeros(len(coords), bool)
    t = coords.dtype.type
    s = t(cfg.scale)
    with np.errstate(all="ignore"):
        if case.form == "rotated":
            rw, rh = coords[:, 2] * s, coords[:, 3] * s
        else:
            off = t(0.5) if (cfg.aligned or case.op.position_sensitive) else t(0)
            rw = (coords[:, 2] * s - off) - (coords[:, 0] * s - off)
            rh = (coords[:, 3] * s - off) - (coords[:, 1] * s - off)
        if not (cfg.aligned or case.op.position_sensitive):
            rw, rh = np.maximum(rw, t(1)), np.maximum(rh, t(1))
        # A margin of half a sample: the comparison never rides on a rounding.
        limit = reference.ADAPTIVE_GRID_CAP - 0.5
        return (rh / t(cfg.size[0]) > limit) | (rw / t(cfg.size[1]) > limit)


def _cotangent(out, seed, rows_mask, form):
    """A random cotangent, zero on the rows where `rows_mask` is False."""
    ct = np.random.default_rng(seed).normal(size=out.shape)
    lead = 2 if form == "per_image" else 1
    mask = rows_mask.reshape(out.shape[:lead]).reshape(out.shape[:lead] + (1,) * 3)
    return jnp.asarray(ct * mask).astype(out.dtype)


def _np(x):
    return np.asarray(jnp.asarray(x).astype(jnp.float64))


# ------------------------------------------------------------------ robustness

@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=FUZZ_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_kernels_survive_any_input(case, data):
    """No exception under jit; finite outputs and gradients, bounded by the features; bad
    rows zero with no gradient either way; piecewise-constant operators' box gradient 0."""
    cfg = data.draw(configs(case))
    rois = data.draw(rois_for(cfg))
    seed = data.draw(st.integers(0, 2 ** 16))
    f = _features(case, cfg, seed)
    forward, vjp = _functions(case, "kernel", cfg)
    out = forward(f, rois)
    coords, index = _formed(case, cfg, f, rois)
    dead = _dead(case, cfg, coords, index)
    rows = _rows_of(out, cfg.form)

    assert np.all(np.isfinite(rows)), "non-finite output for finite features"
    np.testing.assert_array_equal(rows[dead], 0)
    # Every operator's value is a (bounded) combination of feature values: convex for
    # bilinear samples and cells, up to 3x for legacy's extrapolation on [H-1, H); crop
    # adds its extrapolation value. One rounding of the output dtype on top.
    fill = abs(case.config.get("extrapolation_value", 0.0))
    reach = 3.0 if case.op_name.startswith("legacy") else 1.0
    bound = reach * float(np.max(np.abs(_np(f)), initial=0)) + fill
    assert np.all(np.abs(rows) <= bound * (1 + 1e-2) + 1e-6)

    gf, gr = vjp(f, rois, _cotangent(out, seed, np.ones(len(rows), bool), cfg.form))
    gr_rows = _rows_of(gr, cfg.form)
    assert np.all(np.isfinite(_np(gf))) and np.all(np.isfinite(gr_rows))
    np.testing.assert_array_equal(gr_rows[dead], 0)
    if not case.box_derivative:
        np.testing.assert_array_equal(gr_rows, 0)

    # Only the bad rows' cotangent: nothing reaches the features or any box.
    gf, gr = vjp(f, rois, _cotangent(out, seed, dead, cfg.form))
    np.testing.assert_array_equal(_np(gf), 0)
    np.testing.assert_array_equal(_rows_of(gr, cfg.form), 0)


# ------------------------------------------------------------------ agreement

#: Largest difference from the reference, relative to the larger of 1 and the largest
#: value compared: the same arithmetic in another order (float64, float32), plus one
#: rounding of a 16-bit output (2 ulp: the two paths may round a float32 value that
#: lies between two 16-bit ones differently only by its last bit).
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5,
             np.dtype(jnp.float16): 2e-3, np.dtype(jnp.bfloat16): 1.6e-2}
#: Box gradients are in the geometry dtype (float32 for 16-bit features): sums of
#: products of slopes and feature differences, in another order on each path.
BOX_TOLERANCE = {np.dtype(np.float64): 1e-9}
BOX_TOLERANCE_FLOAT32 = 1e-4


def _close(got, want, tol, what):
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.nanmax(np.abs(want), initial=0)))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale, equal_nan=True,
                               err_msg=what)


def _agree_configs(case):
    """AGREE_SHAPES static configurations of `case`, each compiled once per path: shapes
    from a generator seeded by the case; dtype, layout, form, sampling ratio and
    alignment spread over the cases so that every value of each meets several operators."""
    i = CASES.index(case)
    rng = np.random.default_rng(100 + i)
    out = []
    for j in range(AGREE_SHAPES):
        k = i * AGREE_SHAPES + j
        form = FORMS[k % 3]
        n = int(rng.integers(1, 4))
        rows = ((6,) if form == "rows" else (3,) if form == "per_image"
                else tuple(int(r) for r in rng.integers(0, 4, n)))
        lo = case.op.min_output
        out.append(Config(
            dtype=DTYPES[k % 4], layout=LAYOUTS[(k // 4) % 2], form=form, n=n,
            c_out=int(rng.integers(1, 3)), h=int(rng.integers(1, 10)), w=int(rng.integers(1, 10)),
            size=(int(rng.integers(lo, 4)), int(rng.integers(lo, 4))),
            scale=(PYRAMID_SCALES if case.levels else SCALES)[k % 5],
            sr=SAMPLING[k % 6] if case.sampling else -1,
            aligned=bool(j % 2) if case.aligned else False, rows=rows))
    return out


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=AGREE_EXAMPLES, **SETTINGS)
@given(data=st.data())
def test_kernels_agree_with_reference(case, data):
    """Forward, feature gradient and box gradient equal jax_roialign.reference's, on
    every row the reference computes by docs/semantics.md (an adaptive grid within its
    cap); a fifth of the examples have NaN features (compared NaN for NaN; their box
    gradients, NaN wherever a NaN is read, are not)."""
    cfg = data.draw(st.sampled_from(_agree_configs(case)))
    rois = data.draw(rois_for(cfg))
    seed = data.draw(st.integers(0, 2 ** 16))
    nan = data.draw(st.integers(0, 4)) == 0
    f = _features(case, cfg, seed, nan)
    coords, index = _formed(case, cfg, f, rois)
    dead = _dead(case, cfg, coords, index)
    ok = dead | ~_outside_cap(case, cfg, coords)
    (kernel, kernel_vjp), (ref, ref_vjp) = (_functions(case, impl, cfg)
                                            for impl in ("kernel", "reference"))
    out = kernel(f, rois)
    tol = TOLERANCE[np.dtype(cfg.dtype)]
    rows = _rows_of(out, cfg.form)
    np.testing.assert_array_equal(rows[dead], 0)
    _close(rows[ok], _rows_of(ref(f, rois), cfg.form)[ok], tol, "forward")

    ct = _cotangent(out, seed, ok, cfg.form)
    (gf, gr), (rgf, rgr) = kernel_vjp(f, rois, ct), ref_vjp(f, rois, ct)
    _close(_np(gf), _np(rgf), tol, "feature gradient")
    gr, rgr = _rows_of(gr, cfg.form), _rows_of(rgr, cfg.form)
    np.testing.assert_array_equal(gr[dead], 0)
    if not nan:
        box_tol = BOX_TOLERANCE.get(np.dtype(cfg.dtype), BOX_TOLERANCE_FLOAT32)
        _close(gr[ok], rgr[ok], box_tol, "box gradient")


# ------------------------------------------------------------------ threads

# The child of test_same_bits_on_any_number_of_threads: it narrows its CPU affinity
# before jax starts (XLA sizes its intra-op pool, the pool the kernels split work over,
# by the CPUs the process may run on; --xla_cpu_multi_thread_eigen does not change it),
# sets the work under which a call runs on one thread (JAX_ROIALIGN_SERIAL_WORK,
# cc/cpu/handler_common.h; "default": left unset), then writes thread_results(...) to
# the file named.
_THREADS_CHILD = """
import os, sys
if sys.argv[4] != "default":
    os.environ["JAX_ROIALIGN_SERIAL_WORK"] = sys.argv[4]
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:int(sys.argv[2])])
sys.path.insert(0, sys.argv[3])
import test_fuzz
test_fuzz.thread_results(sys.argv[1])
"""


def thread_results(path):
    """Every case's forward, feature and box gradients, float32 and float16, split by
    rows (33 rois), by images (the same rois alternating between the two images: the
    feature gradient's tasks then own whole images,
    cc/cpu/backward_features_handler.cc image_split)
    and by channels (1 roi, 8 channels; a position-sensitive operator's feature
    gradient by bins instead, in both layouts), and the size of XLA's pool."""
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(21)
    results = {}
    for case in CASES:
        layouts = ("NHWC", "NCHW") if case.op.position_sensitive else ("NHWC",)
        for dtype, layout in itertools.product((np.float32, jnp.float16), layouts):
            f = jnp.asarray(features(case, rng, (3, 3), layout, n=2, c_out=8, h=11, w=13))
            f = f.astype(dtype)
            rows = jnp.asarray(edge_rois(2, 11, 13, 1.0, rng, count=24))
            balanced = rows.at[:, 0].set(jnp.arange(rows.shape[0]) % 2)
            for split, r in (("rows", rows), ("images", balanced), ("channels", rows[:1])):
                fn = lambda x, b: case("kernel", x, b, (3, 3), 1.0, 2, True, layout)
                out, vjp = jax.vjp(jax.jit(fn), f, r)
                gf, gr = vjp(jnp.asarray(rng.normal(size=out.shape)).astype(out.dtype))
                for name, x in (("out", out), ("gf", gf), ("gr", gr)):
                    key = f"{case.id}/{np.dtype(dtype).name}/{layout}/{split}/{name}"
                    results[key] = np.asarray(jnp.asarray(x).astype(jnp.float64))
    pool = sum(open(f"/proc/self/task/{t}/comm").read().strip() == "tf_XLAEigen"
               for t in os.listdir("/proc/self/task"))
    np.savez(path, **results, pool=pool)


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux (affinity, /proc) and two CPUs")
def test_same_bits_on_any_number_of_threads(tmp_path):
    """The CPU kernels split rows or channels over XLA's intra-op pool, each task writing
    its own elements in a fixed order: one thread and all of them give the same bits.
    These calls are small enough that by default each runs on one thread; the first two
    runs make every call split (JAX_ROIALIGN_SERIAL_WORK=0), the third leaves the
    default, which must give the same bits too."""
    cpus = len(os.sched_getaffinity(0))
    runs = {}
    for n, serial in ((1, "0"), (cpus, "0"), (cpus, "default")):
        path = tmp_path / f"{n}-{serial}.npz"
        subprocess.run([sys.executable, "-c", _THREADS_CHILD, str(path), str(n),
                        os.path.dirname(__file__), serial], check=True, timeout=600)
        runs[n, serial] = dict(np.load(path))
    pools = {key: run.pop("pool") for key, run in runs.items()}
    assert pools == {(1, "0"): 1, (cpus, "0"): cpus, (cpus, "default"): cpus}
    one = runs[1, "0"]
    for key, run in runs.items():
        assert run.keys() == one.keys()
        for name in one:
            np.testing.assert_array_equal(run[name], one[name], err_msg=f"{key}: {name}")


# ------------------------------------------------------------------ the campaign's findings
#
# Issue 10's fuzz + sanitizer campaign found (1)-(7); each is pinned by a test named for
# it here, or elsewhere where one already existed:
#   (3) float64 boxes of 1e9-1e12 cells: test_values.py::test_huge_boxes_finish_and_match
#   (7) NaN features in every max mode: test_bad_data.py::test_max_modes_skip_nan_features

def _value_and_grads(case, f, rois, size=(2, 2), scale=1.0, sr=-1, aligned=True):
    """Forward and (features, boxes) gradients of sum(output * cot) under jit."""
    fn = lambda x, r: case("kernel", x, r, size, scale, sr, aligned)
    out = jax.jit(fn)(f, rois)
    cot = jnp.asarray(np.random.default_rng(3).normal(size=out.shape)).astype(out.dtype)
    grads = jax.jit(jax.grad(lambda x, r: jnp.sum(fn(x, r) * cot), argnums=(0, 1)))(f, rois)
    return out, grads


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finding1_nonfinite_or_overflowing_high_corner_gives_zeros(case, dtype):
    """(1) A -inf high corner was read as a clamped box (roi_align unaligned, legacy),
    and so was a finite corner that overflows once scaled: both are bad data, on every
    operator, aligned or not (crop_and_resize: scaled by its H - 1)."""
    big = 2e38 if dtype == np.float32 else 1e308  # finite in the geometry dtype; 2x is not
    rows = np.array([[0, 0.5, 0.5, 1.5, 1.5],  # the good row: [1, 1, 3, 3] once scaled
                     [0, 1, 1, 3, -np.inf], [0, 1, 1, -np.inf, 3], [1, 1, 1, -np.inf, -np.inf],
                     [0, 1, 1, 3, big], [1, 1, 1, big, 3], [0, -big, 1, 3, 3],
                     [0, 1, -big, 3, 3]])
    f = jnp.asarray(features(case, np.random.default_rng(4), (2, 2), "NCHW", h=5, w=5) + 3,
                    dtype)
    for aligned in case.aligned_values():
        out, (gf, gr) = _value_and_grads(case, f, rows, scale=2.0, aligned=aligned)
        _, (gf_good, _) = _value_and_grads(case, f, rows[:1], scale=2.0, aligned=aligned)
        assert np.all(np.asarray(out[0]) != 0)
        np.testing.assert_array_equal(out[1:], 0)
        np.testing.assert_array_equal(gf, gf_good)
        np.testing.assert_array_equal(gr[1:], 0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_finding2_no_rois_differentiate_to_zeros(case):
    """(2) jax.grad raised for per-image boxes with no box, zeros((1, 0, 4)). Every form
    of no roi gives an empty output and zero gradients of the inputs' shapes, under jit."""
    for n, rois in ((1, np.zeros((0, 5))), (1, np.zeros((1, 0, 4))), (2, np.zeros((2, 0, 4))),
                    (2, [np.zeros((0, 4)), np.zeros((0, 4))])):
        f = jnp.asarray(features(case, np.random.default_rng(5), (2, 2), "NCHW", n=n))
        out, (gf, gr) = _value_and_grads(case, f, rois)
        assert out.size == 0 and gf.shape == f.shape and np.all(np.asarray(gf) == 0)
        assert jax.tree.map(np.shape, gr) == jax.tree.map(np.shape, rois)


@pytest.mark.parametrize("case", [c for c in CASES if c.sampling],
                         ids=[c.id for c in CASES if c.sampling])
def test_finding3_huge_float32_boxes_are_bounded(case):
    """(3) float32 boxes of +-1e12 with the adaptive grid put ~3e8 samples that float32
    cannot tell apart in each bin's window; storing them threw std::bad_alloc on a pool
    thread, which aborted the process. The in-window samples are now bounded by the map
    (docs/semantics.md, "Unresolvable sample grids"): the call finishes, finite, bounded
    by the features (every weight convex), the same twice."""
    f = jnp.asarray(features(case, np.random.default_rng(6), (2, 3), "NCHW", n=1, h=6, w=7),
                    jnp.float32)
    rows = np.array([[0, -1e12, -1e12, 1e12, 1e12], [0, -1e9, 2.5, 3.5, 1e9],
                     [0, 2, 2, 1e12, 3], [0, -1e12, -3e11, 5, 1e12]])
    for aligned in case.aligned_values():
        out, (gf, gr) = _value_and_grads(case, f, rows, (2, 3), aligned=aligned)
        again, _ = _value_and_grads(case, f, rows, (2, 3), aligned=aligned)
        np.testing.assert_array_equal(out, again)
        assert np.all(np.abs(np.asarray(out)) <= np.abs(np.asarray(f)).max() * (1 + 1e-6))
        assert np.all(np.isfinite(gf)) and np.all(np.isfinite(gr))


def _linear_map(case, n_channels_out, h, w):
    """f[c, y, x] = (c + 1) * (0.3 y + 0.7 x) + c: bilinear interpolation is exact."""
    c = case.channels(n_channels_out, (1, 1))
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    k = np.arange(c)[:, None, None]
    return ((k + 1) * (0.3 * y + 0.7 * x) + k)[None]


@pytest.mark.parametrize("case", [c for c in CASES if c.sampling],
                         ids=[c.id for c in CASES if c.sampling])
def test_finding4_sampling_ratio_is_bounded_and_exact_at_the_bound(case):
    """(4) A large sampling_ratio overflowed the sample count: an abort or silent zeros.
    It is now at most 1024, checked at trace time and again by the FFI handler; 1024
    computes the formula: on a linear map (where bilinear sampling is exact) the average
    of a bin's symmetric grid is the map at the bin's centre, and the maximum is at the
    grid's last sample."""
    f = _linear_map(case, 2, 9, 10)
    box = np.array([[0, 2.3, 2.1, 5.7, 4.9]])
    with pytest.raises(ValueError, match="sampling_ratio must be <= 1024"):
        case("kernel", f, box, 1, 1.0, 1025, True)
    got = np.asarray(case("kernel", f, box, 1, 1.0, 1024, True))[0, :, 0, 0]
    # aligned: the box less half a cell; rotated boxes turn about their centre
    ys, ye, xs, xe = 2.1 - 0.5, 4.9 - 0.5, 2.3 - 0.5, 5.7 - 0.5
    if case.mode == "max":
        last = 1023.5 / 1024
        y, x = ys + last * (ye - ys), xs + last * (xe - xs)
    else:
        y, x = (ys + ye) / 2, (xs + xe) / 2
    k = np.arange(len(got))
    np.testing.assert_allclose(got, (k + 1) * (0.3 * y + 0.7 * x) + k, rtol=1e-9)


def test_finding4_the_ffi_refuses_a_sampling_ratio_over_the_bound():
    """The FFI handler checks the bound too (a caller that skips the Python layer gets an
    error, not a crash)."""
    op = BY_NAME["roi_align"]
    params = _api._params(op, "roi_align", (1, 1), (1.0,), 2, True, None, "NCHW", None)
    params["sampling_ratio"] = 4096
    with pytest.raises(Exception, match="sampling_ratio must be <= 1024"):
        jax.block_until_ready(_primitives.forward_p.bind(
            jnp.zeros((1, 5), jnp.float32), jnp.zeros((0,), jnp.int32),
            jnp.ones((1, 1, 4, 4), jnp.float32), **params))


@pytest.mark.parametrize("case", [c for c in CASES if c.mode == "max" and c.sampling],
                         ids=[c.id for c in CASES if c.mode == "max" and c.sampling])
def test_finding5_huge_float64_boxes_in_max_mode(case):
    """(5) Max mode ordered a bin's samples by a grid ordinal iy * gw + ix, which
    overflowed int64 for float64 boxes of ~1e12 cells (a 2e12 x 2e12 grid). Ties are now
    decided by rows; the result is the formula's (the loop oracle's)."""
    f = features(case, np.random.default_rng(7), (1, 1), "NCHW", n=1, h=6, w=7)
    rows = np.array([[0, -1e12, -1e12, 1e12, 1e12], [0, -3e12, 2.5, 1e12, 4.5],
                     [0, -1e13, -1e13, 1e13, 1e13], [0, 1.5, -1e12, 4.5, 1e12]])
    for f_ in (f, -f):  # negative maps: an outside sample's 0 wins
        np.testing.assert_allclose(case("kernel", f_, rows, (1, 1), 1.0, -1, True),
                                   case.loop(f_, rows, (1, 1), 1.0, -1, True),
                                   rtol=1e-12, atol=1e-14)


def _trace_time_errors():
    """(what, case id, call arguments overriding the good ones, error, match) for the
    checks the campaign found missing, on every operator that takes the argument."""
    out = []
    for case in CASES:
        if case.form != "crop":  # crop_and_resize has no spatial scale
            for scale in (0.0, -0.0, 1e300, 1e39):
                out.append((f"spatial_scale={scale}", case, dict(scale=scale), ValueError,
                            "spatial_scale.* must be > 0 and finite in float32"))
        for size in (10 ** 12, 100000, (2, 65537)):
            out.append((f"size={size}", case, dict(size=size), ValueError,
                        "must be <= 65536 per axis"))
        if case.aligned:
            for aligned in ("no", 1, None):
                out.append((f"aligned={aligned!r}", case, dict(aligned=aligned), TypeError,
                            "aligned must be True or False"))
        if case.sampling:
            out.append(("sampling_ratio=1025", case, dict(sr=1025), ValueError,
                        "sampling_ratio must be <= 1024"))
    return out


@pytest.mark.parametrize("what, case, override, error, match", _trace_time_errors(),
                         ids=[f"{c.id}-{w}" for w, c, *_ in _trace_time_errors()])
def test_finding6_bad_arguments_are_trace_time_errors(what, case, override, error, match):
    """(6) spatial_scale 0 was accepted, 1e300 silently gave zeros, output_size 10**12
    failed in XLA ("Bad StatusOr access") and 100000 ran out of memory, aligned='no' was
    taken as True. Each is now an error at trace time naming the argument."""
    call = dict(size=(2, 2), scale=1.0, sr=-1, aligned=True)
    call.update(override)
    f = np.zeros((1, case.channels(1, (2, 2)), 4, 4), np.float32)
    with pytest.raises(error, match=match):
        jax.jit(lambda x: case("kernel", x, np.zeros((1, 5)), **call))(f)


def test_finding6_rotated_and_deterministic_flags_are_bools():
    f, rois = np.zeros((1, 1, 4, 4)), np.zeros((1, 6))
    with pytest.raises(TypeError, match="clockwise must be True or False, got 'no'"):
        jra.roi_align_rotated(f, rois, 2, clockwise="no")
    with pytest.raises(TypeError, match="deterministic must be True or False, got 'no'"):
        jra.roi_align(f, np.zeros((1, 5)), 2, deterministic="no")


def test_finding6_the_bounds_themselves_are_accepted():
    assert jra.roi_align(np.zeros((1, 1, 2, 2)), np.zeros((0, 5)), (65536, 1), 3.4e38,
                         1024).shape == (0, 1, 65536, 1)


# ------------------------------------------------------------------ found by this module

def test_crop_boxes_that_overflow_once_scaled_give_zeros():
    """crop_and_resize ignored a corner that overflows once scaled by H - 1 when the other
    terms stayed finite (the extrapolation value instead of zeros), and its reference
    disagreed with the kernel on a size or centre that overflows. Now bad data on both
    paths, whatever the crop size."""
    m = float(np.finfo(np.float32).max)
    boxes = np.array([[0.1, 0.1, 0.9, 0.9],                   # the good box
                      [1.1 * m / 9, 0.1, 0.2 * m / 9, 0.9],   # y1 * 9 overflows
                      [0.5 * m / 9, 0.1, 1.1 * m / 9, 0.9],   # y2 * 9 overflows
                      [-2e38, 0.1, 2e38, 0.9],                # (y2 - y1) * 9 overflows
                      [0.1, 2e38, 0.9, 2e38]], np.float32)    # x1 + x2 overflows (W - 1 = 1)
    image = jnp.ones((1, 10, 2, 2), jnp.float32)
    for crop in ((3, 3), (1, 1)):
        for fn in (jra.crop_and_resize, reference.crop_and_resize):
            run = lambda x, b: fn(x, b, np.zeros(5, np.int32), crop, extrapolation_value=0.5)
            out, vjp = jax.vjp(run, image, jnp.asarray(boxes))
            assert np.all(np.asarray(out[0]) != 0)
            np.testing.assert_array_equal(out[1:], 0)
            gi, gb = vjp(jnp.ones_like(out).at[0].set(0))
            np.testing.assert_array_equal(gi, 0)
            np.testing.assert_array_equal(gb, 0)


@pytest.mark.parametrize("case", [c for c in CASES if c.id in (
    "roi_align", "ps_roi_align", "legacy.roi_align_avg", "roi_align_rotated",
    "crop_and_resize")], ids=lambda c: c.id)
def test_reference_feature_gradient_reaches_nan_cells(case):
    """The pure-JAX reference hid its products from FMA with where(p == p, p, nan), whose
    derivative is 0 at a NaN: the feature gradient lost every tap that reads a NaN. The
    operators are linear in the features; their gradient does not depend on the values."""
    rng = np.random.default_rng(8)
    f = features(case, rng, (2, 2), "NCHW", h=6, w=7)
    f[rng.uniform(size=f.shape) < 0.3] = np.nan
    rois = edge_rois(2, 6, 7, 1.0, rng)[:-3]
    grads = []
    for impl in ("kernel", "reference"):
        out, vjp = jax.vjp(lambda x: case(impl, x, rois, (2, 2), 1.0, 2, True), jnp.asarray(f))
        grads.append(vjp(jnp.ones_like(out))[0])
    assert np.any(np.asarray(grads[0])[np.isnan(f)] != 0)
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12, atol=1e-12)
