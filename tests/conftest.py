import jax
import pytest

# float64 features need x64; test_package.py checks the default configuration in a subprocess.
jax.config.update("jax_enable_x64", True)

_calls = [0]


@pytest.fixture(autouse=True)
def _bounded_compilation_cache():
    """Hundreds of distinct compilations exhaust vm.max_map_count (docs/architecture.md)."""
    yield
    _calls[0] += 1
    if _calls[0] % 150 == 0:
        jax.clear_caches()


def pytest_configure(config):
    import jax_roialign
    from jax_roialign._src.installation import missing_kernels

    # Tests must exercise the compiled kernels, never silently the reference fallback
    # (e.g. a clone's source folder shadowing a non-editable install).
    problem = missing_kernels("cpu")
    if problem:
        raise pytest.UsageError(f"{problem} (jax_roialign imported from {jax_roialign.__file__})")
