"""jax_roialign.flax (linen and nnx), jax_roialign.haiku and jax_roialign.equinox: every
operator's module inside a model with a convolution before it, under jit and grad, equal
to its function.

Skipped only when the framework (the extra) is not installed; CI installs all three.
"""

import inspect
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_roialign as jra
from cases import CASES, form_rois
from jax_roialign._src.operators import OPERATORS

CHANNELS = 18  # divisible by 3x3, so the position-sensitive ops take it too

class ModuleCase:
    """An operator case as a module: its class name, its configuration (the case's, with
    output size 3 and spatial scale 0.5), and the case's features and boxes."""

    def __init__(self, case):
        self.case = case
        # A function's secondary operators (crop_and_resize's "nearest") use its module.
        self.name = next(op.module for op in OPERATORS
                         if op.function == case.op.function and op.module)
        self.kwargs = {k: v for k, v in case.kwargs(2, True).items() if k != "layout"}
        self.args = (3, (0.5,)) if case.levels else (3,) if case.form == "crop" else (3, 0.5)

    def wrap(self, features):
        return [features] if self.case.levels else features

    def boxes(self, boxes, images):
        """The tests' (N, R, 4) pixel boxes as the operator's (N, R, ...) boxes."""
        b = form_rois(self.case.form, boxes, images, "NHWC", 0.5, self.case.config)
        return b[0] if self.case.form == "crop" else b

    def function(self, features, boxes, layout="NHWC"):
        """The function on the module's configuration, in NHWC (Flax's and Haiku's
        default) or NCHW (Equinox's)."""
        extra = (None,) if self.case.form == "crop" else ()  # crop_and_resize's box_indices
        return self.case.fn(self.wrap(features), boxes, *extra, *self.args, layout=layout,
                            **self.kwargs)

    def check(self, out, features, boxes):
        """The module's output equals the function's."""
        np.testing.assert_allclose(out, self.function(features, boxes), rtol=1e-6, atol=1e-6)
        assert out.shape[:4] == (2, 3, 3, 3) and out.shape[4] in (CHANNELS, CHANNELS // 9)


MODULE_CASES = [ModuleCase(c) for c in CASES]
IDS = [c.id for c in CASES]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(2, 12, 14, 3)), jnp.float32)
    # (N, R, 4) boxes in input pixels (spatial_scale 0.5: the images are a stride-2 map).
    corners = np.sort(rng.uniform(0, 24, (2, 3, 2, 2)), axis=2)  # (N, R, x|y, lo|hi)
    boxes = jnp.asarray(corners.transpose(0, 1, 3, 2).reshape(2, 3, 4), jnp.float32)
    return images, boxes


def check_backbone_grads(kernel_grad):
    g = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(kernel_grad)])
    assert np.all(np.isfinite(g)) and np.any(g != 0), "no gradient reached the convolution"


# ----------------------------------------------------------------------------- Flax linen

@pytest.mark.parametrize("case", MODULE_CASES, ids=IDS)
def test_linen_module_under_jit_and_grad(case, data):
    nn = pytest.importorskip("flax.linen")
    from jax_roialign import flax as jf

    module = getattr(jf, case.name)(*case.args, **case.kwargs)
    images, boxes = data
    boxes = case.boxes(boxes, images)

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, b):
            features = nn.Conv(CHANNELS, (3, 3))(x)
            return module.clone()(case.wrap(features), b), features

    model = Model()
    params = model.init(jax.random.PRNGKey(0), images, boxes)
    out, features = jax.jit(model.apply)(params, images, boxes)
    case.check(out, features, boxes)

    loss = lambda p: jnp.sum(model.apply(p, images, boxes)[0] ** 2)
    grads = jax.jit(jax.grad(loss))(params)
    check_backbone_grads(grads["params"]["Conv_0"]["kernel"])

    via_module = jax.grad(lambda f: jnp.sum(module.apply({}, case.wrap(f), boxes) ** 2))(features)
    via_function = jax.grad(lambda f: jnp.sum(case.function(f, boxes) ** 2))(features)
    np.testing.assert_allclose(via_module, via_function, rtol=1e-6, atol=1e-6)


def test_linen_layout_defaults_to_nhwc_and_nchw_is_accepted(data):
    pytest.importorskip("flax.linen")
    from jax_roialign.flax import RoIAlign

    images, boxes = data
    assert RoIAlign(7).layout == "NHWC"
    nhwc = RoIAlign(3, 0.5, 2, True).apply({}, images, boxes)
    nchw = RoIAlign(3, 0.5, 2, True, layout="NCHW").apply({}, images.transpose(0, 3, 1, 2), boxes)
    np.testing.assert_allclose(nchw.transpose(0, 1, 3, 4, 2), nhwc, rtol=1e-6, atol=1e-6)


def test_linen_box_gradient_through_the_module(data):
    """The boxes are differentiable through the module, as through the function."""
    pytest.importorskip("flax.linen")
    from jax_roialign.flax import RoIAlign

    images, boxes = data
    module = RoIAlign(3, 0.5, 2, True)
    g = jax.jit(jax.grad(lambda b: jnp.sum(module.apply({}, images, b) ** 2)))(boxes)
    expected = jax.grad(
        lambda b: jnp.sum(jra.roi_align(images, b, 3, 0.5, 2, True, layout="NHWC") ** 2))(boxes)
    np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-6)


def test_linen_signatures_follow_the_functions():
    pytest.importorskip("flax.linen")
    from jax_roialign import flax as jf

    for module_case in MODULE_CASES:
        case = module_case.case
        fields = inspect.signature(getattr(jf, module_case.name)).parameters
        for p in list(inspect.signature(case.fn).parameters.values())[2:]:
            if p.name in case.op.call_arguments:  # per-call data: an argument of __call__
                assert p.name not in fields, (module_case.name, p.name)
                continue
            default = "NHWC" if p.name == "layout" else p.default
            assert fields[p.name].default == default, (module_case.name, p.name)


def test_per_call_arguments_go_to_call(data):
    """multi_scale_roi_align's `levels` is data of each call, not configuration."""
    pytest.importorskip("flax.linen")
    pytest.importorskip("haiku")
    import haiku as hk

    from jax_roialign import flax as jf
    from jax_roialign import haiku as jh

    images, boxes = data
    pyramid = [images, images[:, ::2, ::2]]
    levels = jnp.asarray([[0, 1, 1], [1, 0, 5]], jnp.int32)
    want = jra.multi_scale_roi_align(pyramid, boxes, 3, (0.5, 0.25), levels=levels,
                                     layout="NHWC")
    linen = jf.MultiScaleRoIAlign(3, (0.5, 0.25)).apply({}, pyramid, boxes, levels=levels)
    haiku = hk.transform(lambda p, b: jh.MultiScaleRoIAlign(3, (0.5, 0.25))(p, b, levels=levels))
    np.testing.assert_array_equal(linen, want)
    np.testing.assert_array_equal(haiku.apply({}, None, pyramid, boxes), want)
    with pytest.raises(TypeError, match="unexpected arguments"):
        jf.RoIAlign(3).apply({}, images, boxes, levels=levels)


def test_linen_bad_configuration_is_reported_at_the_call(data):
    pytest.importorskip("flax.linen")
    from jax_roialign.flax import RoIAlign

    images, boxes = data
    with pytest.raises(ValueError, match="output_size"):
        RoIAlign(0).apply({}, images, boxes)
    with pytest.raises(ValueError, match="mode"):
        RoIAlign(3, mode="median").apply({}, images, boxes)


# ----------------------------------------------------------------------------- Flax nnx

@pytest.mark.parametrize("case", MODULE_CASES, ids=IDS)
def test_nnx_module_under_jit_and_grad(case, data):
    pytest.importorskip("flax")
    from flax import nnx

    from jax_roialign import flax as jf

    images, boxes = data
    boxes = case.boxes(boxes, images)
    pool_type = getattr(jf.nnx, case.name)

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, CHANNELS, (3, 3), rngs=rngs)
            self.pool = pool_type(*case.args, **case.kwargs)

        def __call__(self, x, b):
            features = self.conv(x)
            return self.pool(case.wrap(features), b), features

    model = Model(nnx.Rngs(0))
    out, features = nnx.jit(lambda m, x, b: m(x, b))(model, images, boxes)
    case.check(out, features, boxes)

    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(images, boxes)[0] ** 2)))(model)
    check_backbone_grads(nnx.state(grads.conv)["kernel"])


def test_nnx_import_forms():
    pytest.importorskip("flax")
    from jax_roialign import flax as jf
    from jax_roialign.flax.nnx import RoIAlign

    from jax_roialign.flax.linen import RoIAlign as LinenRoIAlign

    assert RoIAlign is jf.nnx.RoIAlign and LinenRoIAlign is jf.RoIAlign
    assert RoIAlign(7).layout == "NHWC"
    assert list(inspect.signature(RoIAlign).parameters)[:4] == [
        "output_size", "spatial_scale", "sampling_ratio", "aligned"]


# ----------------------------------------------------------------------------- Haiku

@pytest.mark.parametrize("case", MODULE_CASES, ids=IDS)
def test_haiku_module_under_jit_and_grad(case, data):
    hk = pytest.importorskip("haiku")
    from jax_roialign import haiku as jh

    images, boxes = data
    boxes = case.boxes(boxes, images)

    def forward(x, b):
        features = hk.Conv2D(CHANNELS, 3)(x)
        return getattr(jh, case.name)(*case.args, **case.kwargs)(case.wrap(features), b), features

    model = hk.without_apply_rng(hk.transform(forward))
    params = model.init(jax.random.PRNGKey(0), images, boxes)
    out, features = jax.jit(model.apply)(params, images, boxes)
    case.check(out, features, boxes)

    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, images, boxes)[0] ** 2)))(params)
    check_backbone_grads(grads["conv2_d"]["w"])


def test_haiku_layout_default_and_name():
    hk = pytest.importorskip("haiku")
    from jax_roialign.haiku import RoIAlign

    def forward():
        m = RoIAlign(7, 1 / 16, name="pooler")
        return m.layout, m.module_name

    layout, module_name = hk.transform(forward).apply({}, None)
    assert layout == "NHWC" and module_name == "pooler"
    assert "name" in inspect.signature(RoIAlign).parameters


# ----------------------------------------------------------------------------- Equinox

def check_nchw_against_function(case, out, features, boxes):
    """The module's output equals the function's, in NCHW (the Equinox modules' default)."""
    np.testing.assert_allclose(out, case.function(features, boxes, "NCHW"), rtol=1e-6,
                               atol=1e-6)
    assert out.shape[:3] == (2, 3, out.shape[2]) and out.shape[3:] == (3, 3)
    assert out.shape[2] in (CHANNELS, CHANNELS // 9)


@pytest.mark.parametrize("case", MODULE_CASES, ids=IDS)
def test_equinox_module_under_jit_and_grad(case, data):
    eqx = pytest.importorskip("equinox")
    from jax_roialign import equinox as je

    images, boxes = data
    boxes = case.boxes(boxes, images)
    images = images.transpose(0, 3, 1, 2)  # Equinox convolutions are channels-first

    class Model(eqx.Module):
        conv: eqx.nn.Conv2d
        pool: eqx.Module

        def __init__(self, key):
            self.conv = eqx.nn.Conv2d(3, CHANNELS, 3, padding=1, dtype=jnp.float32, key=key)
            self.pool = getattr(je, case.name)(*case.args, **case.kwargs)

        def __call__(self, x, b):  # one example: (3, H, W), (R, 4)
            features = self.conv(x)
            return self.pool(case.wrap(features), b), features

    model = Model(jax.random.PRNGKey(0))
    out, features = eqx.filter_jit(lambda m, x, b: jax.vmap(m)(x, b))(model, images, boxes)
    check_nchw_against_function(case, out, features, boxes)
    # The module on the whole batch at once, under plain jax.jit, agrees.
    batched = jax.jit(lambda f, b: model.pool(case.wrap(f), b))(features, boxes)
    np.testing.assert_allclose(batched, out, rtol=1e-6, atol=1e-6)

    loss = lambda m: jnp.sum(jax.vmap(m)(images, boxes)[0] ** 2)
    grads = eqx.filter_jit(eqx.filter_grad(loss))(model)
    check_backbone_grads(grads.conv.weight)
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(model).conv.weight, grads.conv.weight,
                               rtol=1e-5, atol=1e-6)

    via_module = jax.grad(lambda f: jnp.sum(model.pool(case.wrap(f), boxes) ** 2))(features)
    via_function = jax.grad(lambda f: jnp.sum(case.function(f, boxes, "NCHW") ** 2))(features)
    np.testing.assert_allclose(via_module, via_function, rtol=1e-6, atol=1e-6)


def test_equinox_layout_defaults_to_nchw_and_nhwc_is_accepted(data):
    pytest.importorskip("equinox")
    from jax_roialign.equinox import RoIAlign

    images, boxes = data
    assert RoIAlign(7).layout == "NCHW"
    nhwc = RoIAlign(3, 0.5, 2, True, layout="NHWC")(images, boxes)
    nchw = RoIAlign(3, 0.5, 2, True)(images.transpose(0, 3, 1, 2), boxes)
    np.testing.assert_allclose(nchw.transpose(0, 1, 3, 4, 2), nhwc, rtol=1e-6, atol=1e-6)
    # One example: (H, W, C) features and (R, 4) boxes give (R, PH, PW, C).
    one = RoIAlign(3, 0.5, 2, True, layout="NHWC")(images[1], boxes[1])
    np.testing.assert_allclose(one, nhwc[1], rtol=1e-6, atol=1e-6)


def test_equinox_fields_are_static_and_follow_the_functions():
    eqx = pytest.importorskip("equinox")
    from jax_roialign import equinox as je

    for module_case in MODULE_CASES:
        case = module_case.case
        fields = inspect.signature(getattr(je, module_case.name)).parameters
        for p in list(inspect.signature(case.fn).parameters.values())[2:]:
            if p.name in case.op.call_arguments:
                continue
            default = "NCHW" if p.name == "layout" else p.default
            assert fields[p.name].default == default, (module_case.name, p.name)
    module = je.RoIAlign([7, 7], 1 / 16, 2, True)
    assert jax.tree.leaves(module) == [] and module.output_size == (7, 7)
    assert eqx.tree_equal(module, je.RoIAlign((7, 7), 1 / 16, 2, True))


def test_equinox_bad_configuration_is_reported_at_the_call(data):
    pytest.importorskip("equinox")
    from jax_roialign.equinox import RoIAlign

    images, boxes = data
    with pytest.raises(ValueError, match="output_size"):
        RoIAlign(0)(images, boxes)
    with pytest.raises(ValueError, match="mode"):
        RoIAlign(3, mode="median")(images, boxes)


# ----------------------------------------------------------------------------- optional imports

def run_python(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_importing_the_core_imports_neither_framework():
    out = run_python("import sys, jax_roialign, jax_roialign.reference\n"
                     "optional = ('flax', 'haiku', 'equinox', 'PIL', 'optax', 'torch')\n"
                     "print(sorted(m for m in optional if m in sys.modules))")
    assert out.strip() == "[]"


@pytest.mark.parametrize("framework", ["flax", "haiku", "equinox"])
def test_missing_framework_names_the_extra(framework):
    # None in sys.modules makes `import flax` fail as if Flax were not installed.
    out = run_python(f"import sys\nsys.modules['{framework}'] = None\n"
                     f"try:\n    import jax_roialign.{framework}\n"
                     f"except ImportError as e:\n    print(e)\n")
    assert f"pip install jax_roialign[{framework}]" in out
