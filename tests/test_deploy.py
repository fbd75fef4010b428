"""The deployment files name only what exists: the systemd unit runs the console script and systemd
accepts it, the image copies every package the wheel ships, and compose runs the image with a cluster
file a node starts with, one service per node."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from node.config import load_config
from tests.node.checkpoint.conftest import server_unreachable

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = PROJECT["project"]["scripts"]


def test_the_unit_runs_the_console_script_and_systemd_accepts_it(tmp_path: Path) -> None:
    unit = (ROOT / "deploy" / "likes-node@.service").read_text()
    found = re.search(r"^ExecStart=(\S+) node --config (\S+) --name %i", unit, re.M)
    assert found is not None, "ExecStart runs `likes node --config FILE --name %i`"
    program, config = found.groups()
    assert Path(program).name in SCRIPTS and config in unit.split("[Unit]")[0]  # the header says where
    verify = shutil.which("systemd-analyze")
    if verify is None:
        server_unreachable("systemd-analyze is not installed here: the unit's syntax is not checked")
    here = Path(sys.executable).with_name(Path(program).name)  # this checkout's console script
    local = tmp_path / "likes-node@n1.service"
    local.write_text(unit.replace(program, str(here)))
    result = subprocess.run([verify, "verify", str(local)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_image_copies_every_package_the_wheel_ships() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied: set[str] = set()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _destination = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file"
                copied.add(source)
    packages = {name.split(".")[0] for name in PROJECT["tool"]["setuptools"]["packages"]}
    assert packages | {"pyproject.toml", "README.md", "LICENSE"} <= copied
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', dockerfile, re.M)
    assert entry is not None and entry[1] in SCRIPTS


def test_compose_runs_one_service_per_node_of_a_cluster_file_a_node_starts_with() -> None:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services: dict[str, Any] = compose["services"]
    nodes = {name: service for name, service in services.items() if "build" in service}
    for service in services.values():
        assert set(service.get("depends_on", ())) <= set(services)
    mounted: set[Path] = set()
    for name, service in nodes.items():
        assert (ROOT / service["build"] / "Dockerfile").exists()
        command = service["command"]
        assert command[:1] == ["node"] and command[command.index("--name") + 1] == name
        target = command[command.index("--config") + 1]
        sources = [volume.split(":")[0] for volume in service["volumes"] if volume.split(":")[1] == target]
        assert len(sources) == 1, f"{name}: nothing mounted at {target}"
        mounted.add(ROOT / sources[0])
    assert len(mounted) == 1, "every node reads the same cluster file"
    (path,) = mounted
    config = load_config(path, {"LIKES_SECRET": "a-secret-of-32-bytes-0123456789ab"})
    config.security.resolve({"LIKES_SECRET": "a-secret-of-32-bytes-0123456789ab"})
    assert [spec.name for spec in config.nodes] == list(nodes)
    for spec in config.nodes:
        assert spec.host == spec.name, "a node reaches the others by their service names"
        assert f"{spec.http_port}:{spec.http_port}" in nodes[spec.name]["ports"]
    assert "LIKES_SECRET" in yaml.safe_dump(services[config.nodes[0].name]["environment"])
