"""Haiku modules for every jax_roialign operator (``pip install jax_roialign[haiku]``).

    import haiku as hk
    from jax_roialign.haiku import RoIAlign

    def head(features, boxes):                            # (N, H, W, C), (N, R, 4)
        x = RoIAlign(7, spatial_scale=1 / 16, sampling_ratio=2, aligned=True)(features, boxes)
        return hk.Linear(10)(x.reshape(*x.shape[:2], -1))  # (N, R, 10)

    model = hk.transform(head)

Each module takes the operator's arguments after ``(features, rois)`` (same names, order
and defaults: ``RoIAlign(output_size, spatial_scale, sampling_ratio, aligned, mode=...,
layout=..., deterministic=..., name=None)``), except that ``layout`` defaults to
``"NHWC"``, the convention of Haiku's convolutions. ``__call__(features, rois)`` applies
the operator; the modules create no parameters, so they work unchanged inside
``hk.transform`` under ``jit``, ``grad`` and ``vmap``.

One module per operator (``__all__`` lists them), generated from the operators'
signatures so that a module can never disagree with its function about an argument's
name or default.
"""

from ._src.frameworks.haiku import MODULES as _MODULES

globals().update(_MODULES)
__all__ = sorted(_MODULES)
