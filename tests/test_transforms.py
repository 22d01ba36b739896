"""Every operator case under jit and vmap (of values, of gradients, of box JVPs)."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from cases import BOX_CASES, BOX_IDS, CASES, IDS, LAYOUTS, edge_rois, features, smooth_rois


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jit_equals_eager_in_both_rois_forms(case):
    rng = np.random.default_rng(11)
    f = jnp.asarray(features(case, rng, (2, 2), "NCHW", h=6, w=6))
    rows = jnp.asarray(edge_rois(2, 6, 6, 1.0, rng))
    boxes = jnp.asarray(smooth_rois(rng, 6, 6, 6, 1.0)[:, 1:].reshape(2, 3, 4))
    fn = lambda x, r: case("kernel", x, r, (2, 2), 1.0, -1, True)
    for r in (rows, boxes):
        np.testing.assert_array_equal(fn(f, r), jax.jit(fn)(f, r))


MAX_CASES = [c for c in CASES if c.mode == "max"]


def _forward_winners(jaxpr):
    """The shapes of the winners of every forward_p in `jaxpr` (nested ones included)."""
    found = [tuple(eqn.outvars[1].aval.shape) for eqn in jaxpr.eqns
             if eqn.primitive.name == "jax_roialign_forward"]
    for sub in jax.extend.core.subjaxprs(jaxpr):
        found += _forward_winners(sub)
    return found


@pytest.mark.parametrize("case", MAX_CASES, ids=[c.id for c in MAX_CASES])
def test_max_mode_records_winners_only_when_differentiated(case):
    """A forward that is not differentiated writes no winners (they are as large as the
    output); under jvp, grad or vmap of grad the forward records them, and the values of
    both forwards agree."""
    rng = np.random.default_rng(13)
    f = jnp.asarray(features(case, rng, (2, 2), "NHWC", h=6, w=6))
    rows = jnp.asarray(edge_rois(2, 6, 6, 1.0, rng))
    fn = lambda x: case("kernel", x, rows, (2, 2), 1.0, 2, True, "NHWC")
    out_shape = jax.eval_shape(fn, f).shape
    assert _forward_winners(jax.make_jaxpr(fn)(f).jaxpr) == [(0,)]
    assert _forward_winners(jax.make_jaxpr(jax.vmap(fn))(f[None]).jaxpr) == [(0,)]
    out, _ = jax.jvp(fn, (f,), (jnp.ones_like(f),))
    assert _forward_winners(jax.make_jaxpr(lambda x: jax.jvp(fn, (x,), (x,)))(f).jaxpr) == [
        out_shape]
    grad = lambda x: jax.grad(lambda y: jnp.sum(fn(y) ** 2))(x)
    assert _forward_winners(jax.make_jaxpr(grad)(f).jaxpr) == [out_shape]
    # A batch of 1, folded into the kernel's rows.
    assert _forward_winners(jax.make_jaxpr(jax.vmap(grad))(f[None]).jaxpr) == [out_shape]
    np.testing.assert_array_equal(out, jax.jit(fn)(f))
    np.testing.assert_array_equal(jax.vmap(grad)(f[None])[0], jax.jit(grad)(f))


def _hard_maxima(rng, shape, channel_axis):
    """Features that a maximum finds hard: NaN (never wins), +-inf, ties of equal values
    and of +-0 (the first wins), and whole planes of NaN, of -inf and of -0."""
    f = rng.normal(size=shape)
    pick = rng.uniform(size=shape)
    f = np.where(pick < 0.15, np.nan, f)
    f = np.where((pick >= 0.15) & (pick < 0.2), np.inf, f)
    f = np.where((pick >= 0.2) & (pick < 0.25), -np.inf, f)
    f = np.where((pick >= 0.25) & (pick < 0.35), -0.0, f)
    f = np.where((pick >= 0.35) & (pick < 0.45), 0.0, f)
    f = np.where((pick >= 0.45) & (pick < 0.55), -1.5, f)  # ties of a negative value
    planes = np.moveaxis(f, channel_axis, 0)  # a view
    planes[1], planes[2], planes[3] = np.nan, -np.inf, -0.0
    planes[4] = np.where(rng.uniform(size=planes[4].shape) < 0.5, -0.0, 0.0)
    return f


@pytest.mark.parametrize("case", MAX_CASES, ids=[c.id for c in MAX_CASES])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_max_mode_forward_without_winners_has_the_bits_of_the_differentiated_one(
        case, layout, dtype):
    """The inference forward tracks values alone where no implicit 0 competes
    (cc/cpu/channel_loops.h max_block and max_samples_block); the differentiated forward
    tracks each channel's winner. Both must give the same bits on hard maxima
    (`_hard_maxima`), in bins of one chunk of samples and of more (over 64), bins partly
    outside the map (an implicit 0), empty bins, and channels past the last whole
    register block (40 channels: a block of 32 and 8 more). The JVP along the features
    themselves, which re-reads each given winner's sample in the tangent (kernels.h
    forward_given, through channel-last tiles in NCHW), must give those bits too."""
    rng = np.random.default_rng(14)
    h = w = 24
    shape = (2, 40, h, w) if layout == "NCHW" else (2, h, w, 40)
    f = jnp.asarray(_hard_maxima(rng, shape, 1 if layout == "NCHW" else 3), dtype)
    rows = np.concatenate([edge_rois(2, h, w, 1.0, rng), [
        [0, 0.5, 0.5, 23.0, 23.0],    # 2 x 2 bins of 11 x 11 cells (or 121 + samples)
        [1, 2.0, 3.0, 21.5, 17.0],
        [1, -6.0, -4.0, 9.0, 30.0],   # partly outside the map
        [0, 5.0, 5.0, 5.4, 5.2],      # smaller than a cell
    ]])
    for sr in (2, 12):  # 4 and 144 samples per bin where the case samples
        fn = lambda x: case("kernel", x, jnp.asarray(rows), (2, 2), 1.0, sr, True, layout)
        inference = np.asarray(jax.jit(fn)(f))
        differentiated, along_itself = map(np.asarray,
                                           jax.jit(lambda x: jax.jvp(fn, (x,), (x,)))(f))
        bits = np.uint16 if dtype == "float16" else np.uint32
        np.testing.assert_array_equal(inference.view(bits), differentiated.view(bits),
                                      err_msg=f"sampling_ratio {sr}")
        np.testing.assert_array_equal(inference.view(bits), along_itself.view(bits),
                                      err_msg=f"sampling_ratio {sr}, tangent")
        # The hard values reach the outputs: -0 (a maximum of -0s) and -inf (of -infs).
        assert (np.signbit(inference) & (inference == 0)).any() and np.isneginf(inference).any()


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (1, 2)])
@pytest.mark.parametrize("form", ["rows", "per_image"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_vmap_equals_loop(case, in_axes, form, layout):
    """vmap of the value and of the gradient (features, and boxes where differentiable)
    equals the loop over the batch; an invalid batch index stays invalid when folded."""
    rng = np.random.default_rng(12)
    B = 3
    f = np.stack([features(case, rng, (2, 3), layout, h=6, w=7) for _ in range(B)])
    if form == "rows":
        r = np.stack([edge_rois(2, 6, 7, 1.0, rng, count=3) for _ in range(B)])
        r[1, 0, 0] = 7
    else:
        r = np.stack([smooth_rois(rng, 6, 6, 7, 1.0)[:, 1:].reshape(2, 3, 4) for _ in range(B)])
    fa = None if in_axes[0] is None else np.moveaxis(f, 0, in_axes[0])
    ra = None if in_axes[1] is None else np.moveaxis(r, 0, in_axes[1])
    pick = lambda a, i, ax: a[i] if ax is not None else a[0]
    fn = lambda x, b: case("kernel", x, b, (2, 3), 1.0, -1, True, layout)
    args = (jnp.asarray(f[0] if fa is None else fa), jnp.asarray(r[0] if ra is None else ra))
    got = jax.vmap(fn, in_axes)(*args)
    want = np.stack([fn(pick(f, i, in_axes[0]), pick(r, i, in_axes[1])) for i in range(B)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    argnums = (0, 1) if case.box_derivative and form == "per_image" else (0,)
    gfn = jax.grad(lambda x, b: jnp.sum(jnp.sin(fn(x, b))), argnums=argnums)
    got_g = jax.vmap(gfn, in_axes)(*args)
    want_g = [gfn(jnp.asarray(pick(f, i, in_axes[0])), jnp.asarray(pick(r, i, in_axes[1])))
              for i in range(B)]
    for j, leaf in enumerate(got_g):
        np.testing.assert_allclose(leaf, np.stack([w[j] for w in want_g]), rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reference_path_under_vmap_equals_the_loop_bit_for_bit(case):
    """The pure-JAX path (platforms without kernels) keeps its IEEE operations under vmap:
    float32 boxes whose sizes divide unevenly into bins (computed as 7 * (1/3), roi_pool's
    bin 7/3 * 3 would round above 7 and its last bin take one cell more)."""
    rng = np.random.default_rng(14)
    f = jnp.asarray(features(case, rng, (3, 3), "NCHW", h=12, w=14, dtype=np.float32))
    r = jnp.asarray([[[0, 1, 1, 5, 6], [1, 0, 0, 13, 11]], [[1, 2, 3, 4, 4], [0, 3, 2, 9, 10]]],
                    jnp.float32)
    fn = lambda b: case("reference", f, b, (3, 3), 1.0, 2, False)
    np.testing.assert_array_equal(jax.vmap(fn)(r), np.stack([fn(b) for b in r]))


@pytest.mark.parametrize("case", BOX_CASES, ids=BOX_IDS)
def test_vmap_of_jvp_in_boxes(case):
    rng = np.random.default_rng(13)
    f = jnp.asarray(features(case, rng, (2, 2), "NCHW", h=6, w=6))
    boxes = jnp.asarray(smooth_rois(rng, 4, 6, 6, 1.0)[:, 1:].reshape(2, 2, 4))
    tangents = jnp.asarray(rng.normal(size=(3, 2, 2, 4)))
    fn = lambda b: case("kernel", f, b, (2, 2), 1.0, 2, True)
    got = jax.vmap(lambda t: jax.jvp(fn, (boxes,), (t,))[1])(tangents)
    want = np.stack([jax.jvp(fn, (boxes,), (t,))[1] for t in tangents])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
