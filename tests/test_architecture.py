"""The house rules the code relies on: one registry (and the compiled modules' operator
table agrees with it), a test case for every operator and mode, and package layers that
import only downward, with every import at the top of its module."""

import ast
import pathlib

import pytest

from cases import CASES
from jax_roialign._src import lowering
from jax_roialign._src.api import FUNCTIONS
from jax_roialign._src.operators import BY_NAME, KERNEL_OPS, OPERATORS

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jax_roialign"
# Imported inside functions on purpose: optional dependencies and peers.
OPTIONAL = {"flax", "haiku", "equinox", "optax", "PIL", "torch", "torchvision", "tensorflow",
            "jax_roialign.flax", "jax_roialign.haiku", "jax_roialign.equinox"}


def _optional(target):
    return target.split(".")[0] in OPTIONAL or ".".join(target.split(".")[:2]) in OPTIONAL


def test_compiled_operator_table_matches_the_registry():
    table = lowering.OPERATOR_TABLE
    assert sorted(table) == sorted(KERNEL_OPS)
    for op in (BY_NAME[name] for name in KERNEL_OPS):
        _, position_sensitive, box_derivative, coords, modes = table[op.name]
        assert (position_sensitive, box_derivative, coords) == (
            op.position_sensitive, op.box_derivative, op.box_coords), op.name
        # The kernels take exactly the modes of the operators that call them.
        taken = {m for m, code in lowering.MODES.items() if modes >> code & 1}
        assert taken == {m for o in OPERATORS if o.kernel == op.name for m in o.modes}, op.name
    assert sorted(code for code, *_ in table.values()) == list(range(len(table)))


def test_every_operator_and_mode_has_a_test_case_and_a_function():
    covered = {(c.op_name, c.mode) for c in CASES}
    assert covered == {(op.name, mode) for op in OPERATORS for mode in op.modes}
    assert set(FUNCTIONS) == {op.name for op in OPERATORS}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(p for p in parts if p != "__init__"), path


def _imports(name, path):
    """(imported jax_roialign modules, nested imports of anything not optional)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found, nested = set(), []
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        ours = [t for t in targets if t.split(".")[0] == "jax_roialign"]
        found.update(ours)
        if id(node) not in top and not any(_optional(t) for t in targets):
            nested.append((node.lineno, targets[0]))
    return found, nested


def test_every_import_is_at_the_top_of_its_module():
    """Lazy imports hide cycles; only optional dependencies are imported where used."""
    for name, path in _modules():
        _, nested = _imports(name, path)
        assert not nested, f"{path}: imports inside functions {nested}"


def test_private_layers_import_only_downward():
    """No cycle among jax_roialign's modules, and nothing in _src imports a public module
    or the command-line tools."""
    modules = dict(_modules())
    graph = {}
    for name, path in modules.items():
        found, _ = _imports(name, path)
        graph[name] = {m for m in found if m in modules and m != name}
    for name, deps in graph.items():
        if name.startswith("jax_roialign._src"):
            bad = {d for d in deps if not d.startswith("jax_roialign._src")}
            assert not bad, f"{name} imports {bad}"

    visiting, done = set(), set()

    def visit(node, trail):
        if node in done:
            return
        if node in visiting:
            pytest.fail(f"import cycle: {' -> '.join(trail + [node])}")
        visiting.add(node)
        for dep in graph[node]:
            visit(dep, trail + [node])
        visiting.discard(node)
        done.add(node)

    for node in graph:
        visit(node, [])


def test_reference_cores_import_only_their_numerics():
    for name, path in _modules():
        if name.startswith("jax_roialign._src.reference"):
            found, _ = _imports(name, path)
            assert all(m.startswith("jax_roialign._src.reference") for m in found), name
