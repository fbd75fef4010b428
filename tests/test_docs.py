"""The README's configuration table says what the code does: every key of a cluster file, with the
default the code gives it, in the file's unit; no key more, none less. Prose that names a key with a
number says that key's default. The shipped ``cluster.yaml`` names every key, and the README points
at nothing outside the repository."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.config import ClusterConfig, NodeSpec, parse_config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: A key the file must give (a node's name, host and ports).
REQUIRED = "required"
#: Units the README may give a number of bytes in.
UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
#: A row of the table: `section.key` (or `nodes[].key`), then its default cell.
ROW = re.compile(r"^\| `((?:nodes\[\]|[a-z]+)\.[a-z_]+)` \| ([^|]*) \|", re.MULTILINE)


def table(text: str) -> dict[str, Any]:
    """The README's configuration table: key -> its documented default (``REQUIRED``, None when
    unset, else the first backticked value read as YAML)."""
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, Any] = {}
    for key, cell in ROW.findall(section):
        assert key not in rows, f"{key} documented twice"
        cell = cell.strip()
        if cell == REQUIRED:
            rows[key] = REQUIRED
        elif cell == "unset":
            rows[key] = None
        else:
            literal = re.match(r"`([^`]*)`", cell)
            assert literal, f"{key}: the default {cell!r} is neither required, unset nor `a value`"
            rows[key] = yaml.safe_load(literal.group(1))
    return rows


def code_defaults() -> dict[str, Any]:
    """Every key a cluster file may give -> the default the code gives it, as the file writes it."""
    defaults: dict[str, Any] = {}
    for spec in fields(NodeSpec):
        missing = spec.default is MISSING and spec.default_factory is MISSING
        defaults[f"nodes[].{spec.name}"] = REQUIRED if missing else spec.default
    config = ClusterConfig(nodes=())
    for section in fields(ClusterConfig):
        if section.name == "nodes":
            continue
        settings = getattr(config, section.name)
        as_file = getattr(settings, "as_file", None)  # gossip: timings in ms in the file, seconds in code
        pairs = (
            as_file().items()
            if callable(as_file)
            else ((f.name, getattr(settings, f.name)) for f in fields(settings))
        )
        for key, value in pairs:
            defaults[f"{section.name}.{key}"] = value
    return defaults


def same(documented: Any, code: Any) -> bool:
    if isinstance(code, Path):
        return documented is not None and Path(documented) == code
    return type(documented) is type(code) and documented == code


def test_the_readme_documents_every_key_with_the_codes_default() -> None:
    rows, code = table(README.read_text()), code_defaults()
    assert sorted(code.keys() - rows.keys()) == [], "in the code but not in the README's configuration table"
    assert sorted(rows.keys() - code.keys()) == [], "in the README's configuration table but not in the code"
    drifted = {key: (rows[key], code[key]) for key in code if not same(rows[key], code[key])}
    assert drifted == {}, "documented default != the code's (documented, code)"


def test_a_file_setting_every_documented_default_reads_as_one_that_sets_none(tmp_path: Path) -> None:
    """The documented values, in the file's units, are what leaving the keys out gives."""
    minimal: dict[str, Any] = {
        "nodes": [{"name": "n1", "host": "127.0.0.1", "http_port": 8001, "gossip_port": 9001}],
        "security": {"secret": "0123456789abcdef"},
    }
    explicit: dict[str, Any] = {
        key: dict(value) if isinstance(value, dict) else value for key, value in minimal.items()
    }
    for key, value in table(README.read_text()).items():
        section, name = key.split(".")
        if section in ("nodes[]", "security") or value is None:
            continue
        explicit.setdefault(section, {})[name] = value
    assert set(explicit) >= {"storage", "gossip", "api", "checkpoint"}
    assert parse_config(explicit, base_dir=tmp_path) == parse_config(minimal, base_dir=tmp_path)


def test_prose_that_names_a_key_with_a_number_gives_its_default() -> None:
    """``client_rate` 20,000`` anywhere in the README, once the code says 100,000, is a drift (``over
    `key` 413`` is a status, not a value)."""
    code = code_defaults()
    by_name: dict[str, list[Any]] = {}
    for key, value in code.items():
        if type(value) is int:
            by_name.setdefault(key.split(".")[1], []).append(value)
    mentions = re.findall(
        r"(?<!over )`(?:[a-z]+\.)?([a-z_]+)`:? \(?([0-9][0-9,]*(?:\.[0-9]+)?)(?: (KiB|MiB|GiB|ms|s)\b)?",
        README.read_text(),
    )
    checked = 0
    for name, number, unit in mentions:
        if name not in by_name:
            continue
        value = float(number.replace(",", "")) * UNITS.get(unit, 1)
        if unit == "s" and name.endswith("_ms"):
            value *= 1000
        checked += 1
        assert value in by_name[name], (
            f"README: `{name}` {number} {unit}, the code's default is {by_name[name]}"
        )
    assert checked, "no mention checked: has the README's wording changed?"


def test_the_shipped_cluster_file_names_every_key() -> None:
    text = (ROOT / "cluster.yaml").read_text()
    for key in code_defaults():
        name = key.split(".")[1]
        assert re.search(rf"(?:^|[\s{{,#]){name}:", text, re.MULTILINE), f"cluster.yaml names no {key}"


def test_the_readme_points_at_nothing_outside_the_repository() -> None:
    assert "../" not in README.read_text()


#: A markdown link's target: a path, an anchor, or both.
LINK = re.compile(r"\]\(([^)\s#]*)(?:#([^)\s]*))?\)")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub makes of a markdown file's headings (code blocks left out)."""
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())
    headings = re.findall(r"(?m)^#+ (.+)$", text)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("doc", ["README.md", "docs/architecture.md", "docs/performance.md"])
def test_every_link_reaches_a_file_and_heading_in_the_repository(doc: str) -> None:
    path = ROOT / doc
    for target, anchor in LINK.findall(path.read_text()):
        if "://" in target:
            continue
        linked = (path.parent / target).resolve() if target else path
        assert linked.is_relative_to(ROOT) and linked.exists(), f"{doc} links {target}, which is not there"
        if anchor:
            assert linked.suffix == ".md" and anchor in anchors(linked), f"{doc} links {target}#{anchor}"


def test_the_table_reader_sees_a_drift() -> None:
    text = "\n## Configuration\n\n| `api.client_rate` | `20000` | requests/s | x |\n\n## Security\n"
    assert table(text) == {"api.client_rate": 20000}
    assert not same(table(text)["api.client_rate"], code_defaults()["api.client_rate"])
