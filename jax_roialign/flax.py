"""Flax modules for every jax_roialign operator (``pip install jax_roialign[flax]``).

    import flax.linen as nn
    from jax_roialign.flax import RoIAlign

    class Head(nn.Module):
        @nn.compact
        def __call__(self, features, boxes):             # (N, H, W, C), (N, R, 4)
            x = RoIAlign(7, spatial_scale=1 / 16, sampling_ratio=2, aligned=True)(features, boxes)
            return nn.Dense(10)(x.reshape(*x.shape[:2], -1))  # (N, R, 10)

Each module is configured with the operator's arguments after ``(features, rois)``
(same names, order and defaults: ``RoIAlign(output_size, spatial_scale, sampling_ratio,
aligned, mode=..., layout=..., deterministic=...)``), except that ``layout`` defaults to
``"NHWC"``, Flax's convention. ``__call__(features, rois)`` applies the operator; the
modules hold no parameters, so they work unchanged under ``jit``, ``grad`` and ``vmap``
inside any ``nn.Module``. Rois take all three forms the operators accept.

One linen module per operator (``__all__`` lists them), also in
``jax_roialign.flax.linen``, and the same names in ``jax_roialign.flax.nnx`` (an
``nnx.Module`` each). The classes are generated from the operators' signatures, so a
module can never disagree with its function about an argument's name or default.
"""

from ._src.frameworks.flax import LINEN as _LINEN
from ._src.frameworks.flax import NNX as _NNX
from ._src.frameworks.flax import namespace as _namespace

globals().update(_LINEN)
linen = _namespace("linen", _LINEN)
nnx = _namespace("nnx", _NNX)

__all__ = sorted(_LINEN) + ["linen", "nnx"]
