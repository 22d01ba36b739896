"""Every operator in plain ``jax.numpy``: the same functions, signatures and checks as
``jax_roialign``'s, computed by the pure-JAX cores (``jax_roialign/_src/reference``) that
the compiled kernels are tested against and that platforms without kernels run.

Known deviation from docs/semantics.md: the adaptive sampling grid (``sampling_ratio <=
0``) is capped at ``ADAPTIVE_GRID_CAP`` samples per bin and axis (a roi over more than
``ADAPTIVE_GRID_CAP * PH`` feature cells is sampled on a capped grid); the kernels have
no cap.
"""

from ._src.api import reference_form as _reference_form
from ._src.operators import OPERATORS as _OPERATORS
from ._src.reference.numerics import ADAPTIVE_GRID_CAP

# One form per public function, named after it ("legacy.roi_align" -> legacy_roi_align);
# operators sharing a function (crop_and_resize's methods) share its form.
_FORMS = {}
for _op in _OPERATORS:
    _FORMS.setdefault(_op.function.replace(".", "_"), _reference_form(_op.name))
globals().update(_FORMS)

__all__ = ["ADAPTIVE_GRID_CAP", *_FORMS]
