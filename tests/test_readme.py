"""The README's Python examples run as written, as a user runs them (a fresh interpreter,
jax's default configuration), and print what their `# prints:` comments say."""

import ast
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
# The sharding example needs 8 devices: tests/test_sharding.py runs it there.
BLOCKS = [b for b in re.findall(r"(<!-- [a-z-]+ -->\n)?```python\n(.*?)```", README.read_text(),
                                re.S) if b[0] != "<!-- sharding-example -->\n"]
BLOCKS = [code for _, code in BLOCKS]

# Claims a block's comments make beyond its printed lines, checked after it runs: text
# found in the block -> code that raises when the claim is false.
CLAIMS = {"g_boxes": "assert bool((g_boxes != 0).all()), g_boxes  # a nonzero box gradient",
          "optax.apply_updates": "assert float(loss) < 2.2, loss  # the loss falls"}


def _imports(code):
    """The top-level packages a block imports."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_the_readme_has_its_examples():
    assert len(BLOCKS) >= 2
    assert any("jax_roialign.flax" in b and "model.init" in b and "optax" in b for b in BLOCKS)


def test_the_readme_names_every_module():
    from jax_roialign._src.operators import OPERATORS

    section = README.read_text().split("## Flax, Haiku and Equinox")[1].split("\n## ")[0]
    for op in OPERATORS:
        if op.module:
            assert f"`{op.module}`" in section, op.module


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i}")
def test_readme_example_runs_and_prints_what_it_says(index, tmp_path):
    code = BLOCKS[index]
    # jax_roialign.flax needs Flax: the example is skipped only where its extra is missing.
    for name in sorted(_imports(code) - {"jax_roialign"}):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")
    checks = [claim for marker, claim in CLAIMS.items() if marker in code]
    out = subprocess.run([sys.executable, "-c", code + "\n" + "\n".join(checks)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, f"README block {index}:\n{code}\n{out.stdout}{out.stderr}"
    # Each `# prints: X` comment is the next printed line of its kind, in order.
    expected = re.findall(r"^# prints: (.*)$", code, re.M)
    lines = out.stdout.splitlines()
    position = 0
    for want in expected:
        while position < len(lines) and lines[position].strip() != want.strip():
            position += 1
        assert position < len(lines), f"README block {index} should print {want!r}:\n{out.stdout}"
        position += 1
