"""The ``likes`` command line: configuration errors are one line and exit 2, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from node.durable.datadir import NodeDataDir
from node.durable.wal import DISCARD_FLAG
from node.process.cli import build_parser, main
from tests.node.conftest import free_ports

SECRET = "security: {secret: 0123456789abcdef}\n"


def likes(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a child process (with ``env`` added to its environment)."""
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
    )


def one_node_on_free_ports(tmp_path: Path) -> tuple[Path, int]:
    """A cluster file of one node on ports nothing uses; returns it and the HTTP port."""
    http, gossip = free_ports(2)
    config = tmp_path / "cluster.yaml"
    node = f"  - {{name: n1, host: 127.0.0.1, http_port: {http}, gossip_port: {gossip}}}\n"
    config.write_text("nodes:\n" + node + SECRET)
    return config, http


@pytest.mark.parametrize("command", ["up", "node", "status"])
def test_a_bad_config_exits_2_with_one_line_naming_the_key(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("nodes:\n  - {name: n1, host: 127.0.0.1, http_port: 8001, gossip_port: x}\n" + SECRET)
    extra = ["--name", "n1"] if command == "node" else []
    result = likes(command, "--config", str(bad), *extra)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "nodes[0].gossip_port" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_version_names_the_installed_package() -> None:
    result = likes("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"likes {version('likes')}"


def test_config_check_passes_what_a_node_would_start_with_and_names_what_it_would_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, http = one_node_on_free_ports(tmp_path)
    assert main(["config", "check", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"{config}: ok: 1 nodes: n1 (127.0.0.1:{http})" in out and "checkpoints: sqlite" in out

    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - {name: n1, host: 127.0.0.1, http_port: 8001, gossip_port: x}\n" + SECRET)
    result = likes("config", "check", str(bad))
    assert result.returncode == 2 and "nodes[0].gossip_port" in result.stderr and not result.stdout

    overridden = likes("config", "check", str(config), env={"LIKES_API__MAX_BATCH_OPS": "0"})
    assert overridden.returncode == 2 and "api.max_batch_ops" in overridden.stderr
    moved = likes("config", "check", str(config), env={"LIKES_STORAGE__DATA_DIR": str(tmp_path / "d")})
    assert moved.returncode == 0 and f"data: {tmp_path / 'd'};" in moved.stdout

    monkeypatch.delenv("LIKES_CHECK_SECRET", raising=False)
    from_env = tmp_path / "env.yaml"
    from_env.write_text(config.read_text().replace(SECRET, "security: {secret_env: LIKES_CHECK_SECRET}\n"))
    assert main(["config", "check", str(from_env)]) == 2
    assert "LIKES_CHECK_SECRET" in capsys.readouterr().err


def test_a_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_an_unknown_node_name_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "nodes:\n  - {name: n1, host: 127.0.0.1, http_port: 8001, gossip_port: 9001}\n" + SECRET
    )
    assert main(["node", "--config", str(config), "--name", "n7"]) == 2
    assert "no node named 'n7'" in capsys.readouterr().err


def test_an_unset_secret_variable_exits_2_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIKES_UNSET_SECRET", raising=False)
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "nodes:\n  - {name: n1, host: 127.0.0.1, http_port: 8001, gossip_port: 9001}\n"
        "security: {secret_env: LIKES_UNSET_SECRET}\n"
    )
    assert main(["up", "--config", str(config)]) == 2
    assert "LIKES_UNSET_SECRET is not set" in capsys.readouterr().err


def test_up_with_no_local_node_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "nodes:\n  - {name: n1, host: 192.0.2.1, http_port: 8001, gossip_port: 9001}\n" + SECRET
    )
    assert main(["up", "--config", str(config)]) == 2
    assert "no node" in capsys.readouterr().err


def test_status_of_a_cluster_that_is_down_says_so_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = one_node_on_free_ports(tmp_path)
    assert main(["status", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "DOWN" in out and "no node answered" in out


def test_usage_errors_exit_2() -> None:
    result = likes("frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_a_node_whose_port_is_taken_exits_1_without_a_traceback(tmp_path: Path) -> None:
    config, http = one_node_on_free_ports(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", http))
        squatter.listen()
        result = likes("node", "--config", str(config), "--name", "n1")
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr


def test_a_second_process_for_the_same_node_exits_1(tmp_path: Path) -> None:
    config, _ = one_node_on_free_ports(tmp_path)
    with NodeDataDir(tmp_path / "data", "n1"):
        result = likes("node", "--config", str(config), "--name", "n1")
    assert result.returncode == 1 and "already running" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["node", "--name", "n1"], ["up"]])
def test_the_flag_a_damaged_store_error_names_is_an_option_of_node_and_up(command: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args([*command, DISCARD_FLAG]).discard_damaged is True
    assert parser.parse_args([*command, "--discard-damaged-snapshot"]).discard_damaged is True  # its old name
    assert parser.parse_args(command).discard_damaged is False
