"""Imports point down the layers written at the top of src/tailor/__init__.py: a module imports from its
own layer or the layers below, never above (a new upward import fails here), and the units of a layer
listed in tailor.APART import neither one the other."""

import ast
from pathlib import Path

import tailor

SRC = Path(tailor.__file__).parent
RANK = {unit: depth for depth, layer in enumerate(tailor.LAYERS) for unit in layer}
# No known exceptions are left: the last two (tasks -> report, train -> tasks) were removed in session 9.


def unit_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def imported_units(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tailor":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tailor.")}
    return found


def test_every_module_is_in_a_layer():
    units = {unit_of(p) for p in SRC.rglob("*.py")} - {"__init__"}
    assert units <= set(RANK), f"not in tailor.LAYERS: {sorted(units - set(RANK))}"


def imports() -> list[tuple[str, str, str]]:
    """(module path, its unit, a unit it imports) for every tailor import in src/tailor."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        unit = unit_of(path)
        if unit != "__init__":
            rel = path.relative_to(SRC).as_posix()
            found += [(rel, unit, target) for target in sorted(imported_units(ast.parse(path.read_text())))]
    return found


def test_imports_point_down_the_layers():
    upward = [f"{rel} imports tailor.{target} ({unit} is below {target})"
              for rel, unit, target in imports() if target in RANK and RANK[target] < RANK[unit]]
    assert not upward, "\n".join(upward)


def test_units_kept_apart_import_neither_one_the_other():
    assert all(RANK[a] == RANK[b] for a, b in tailor.APART), "APART pairs share a layer"
    apart = {frozenset(pair) for pair in tailor.APART}
    crossing = [f"{rel} imports tailor.{target}" for rel, unit, target in imports()
                if frozenset((unit, target)) in apart]
    assert not crossing, "\n".join(crossing)

