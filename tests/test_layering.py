"""The dependency arrows of docs/architecture.md: crdt imports nothing of the project, gossip nothing
of node, bench sits on top; no production code imports the tests; the like lane shares the write path
with the routes instead of importing them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"crdt", "gossip", "node", "bench", "tests"}
#: What each package may import from the project (besides itself).
ALLOWED = {"crdt": set(), "gossip": set(), "node": {"crdt", "gossip"}, "bench": {"crdt", "gossip", "node"}}
#: Modules that must not import each other: (importer, imported).
FORBIDDEN_EDGES = [("node/http/lane.py", "node.http.api")]
#: The pure core touches no I/O.
FORBIDDEN_IN_CRDT = {"asyncio", "socket", "os", "io", "pathlib", "threading", "selectors"}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_lies_below_it(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    for path in files:
        project_imports = imported_top_levels(path) & PROJECT - {package}
        assert project_imports <= ALLOWED[package], f"{path.relative_to(ROOT)} imports {project_imports}"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN_EDGES)
def test_forbidden_edges_are_absent(importer: str, imported: str) -> None:
    assert imported not in imported_modules(ROOT / importer), f"{importer} imports {imported}"


def test_crdt_does_no_io() -> None:
    for path in sorted((ROOT / "crdt").rglob("*.py")):
        bad = imported_top_levels(path) & FORBIDDEN_IN_CRDT
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from node.state.store import Store\nimport gossip.wire\n")
    assert imported_top_levels(bad) & PROJECT == {"node", "gossip"}
    bad.write_text("from node.http import api\nfrom tests.node import processes\n")
    assert imported_top_levels(bad) & PROJECT == {"node", "tests"}
    assert "node.http.api" in imported_modules(bad)
