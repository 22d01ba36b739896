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

    # Tests must exercise the compiled kernels, never silently the reference fallback
    # (e.g. a source checkout shadowing the installed package).
    if "cpu" not in jax_roialign.kernel_platforms():
        raise pytest.UsageError(
            f"jax_roialign imported from {jax_roialign.__file__} has no compiled CPU kernels: "
            "install it (pip install .) and run pytest from a directory where the source "
            "checkout does not shadow the installed package")
