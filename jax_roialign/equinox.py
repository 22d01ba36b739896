"""Equinox modules for every jax_roialign operator (``pip install jax_roialign[equinox]``).

    import equinox as eqx, jax
    from jax_roialign.equinox import RoIAlign

    class Head(eqx.Module):
        conv: eqx.nn.Conv2d
        pool: RoIAlign
        linear: eqx.nn.Linear

        def __init__(self, key):
            k1, k2 = jax.random.split(key)
            self.conv = eqx.nn.Conv2d(3, 16, 3, padding=1, key=k1)
            self.pool = RoIAlign(7, spatial_scale=1.0, sampling_ratio=2, aligned=True)
            self.linear = eqx.nn.Linear(16 * 7 * 7, 10, key=k2)

        def __call__(self, image, boxes):                # (3, H, W), (R, 4): one example
            x = self.pool(self.conv(image), boxes)         # (R, 16, 7, 7)
            return jax.vmap(self.linear)(x.reshape(len(boxes), -1))  # (R, 10)

    logits = jax.vmap(Head(jax.random.PRNGKey(0)))(images, boxes)  # (N, 3, H, W), (N, R, 4)

Each module's fields are the operator's arguments after ``(features, rois)`` (same names,
order and defaults: ``RoIAlign(output_size, spatial_scale, sampling_ratio, aligned,
mode=..., layout=..., deterministic=...)``), all static, except that ``layout`` defaults
to ``"NCHW"``: Equinox's convolutions are channels-first. ``__call__(features, rois)``
takes one example, ``(C, H, W)`` features with ``(R, 4)`` boxes (output ``(R, C, PH,
PW)``), as Equinox layers do, so ``jax.vmap`` maps it over a batch; or a whole batch in
any of the functions' rois forms. The modules hold no arrays, so they work unchanged
under ``eqx.filter_jit``, ``eqx.filter_grad``, ``jax.jit`` and ``jax.grad``.

One module per operator (``__all__`` lists them), generated from the operators'
signatures so that a module can never disagree with its function about an argument's
name or default.
"""

from ._src.frameworks.equinox import MODULES as _MODULES

globals().update(_MODULES)
__all__ = sorted(_MODULES)
