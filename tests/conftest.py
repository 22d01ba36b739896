import os
import sys

import jax
import pytest

# float64 features need x64; tests/test_x64_off.py checks the default config separately.
jax.config.update("jax_enable_x64", True)

sys.path.insert(0, os.path.dirname(__file__))

_calls = [0]


@pytest.fixture(autouse=True)
def _bounded_compilation_cache():
    """Hundreds of distinct compilations exhaust vm.max_map_count (DESIGN.md)."""
    yield
    _calls[0] += 1
    if _calls[0] % 150 == 0:
        jax.clear_caches()
