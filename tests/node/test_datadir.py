"""A node's data directory: a stable actor id, a new incarnation per start, one process at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.durable.datadir import NodeDataDir
from node.errors import DataDirError


def test_the_actor_id_is_created_once_and_kept(tmp_path: Path) -> None:
    with NodeDataDir(tmp_path, "n1") as data_dir:
        first = data_dir.claim_identity()
    with NodeDataDir(tmp_path, "n1") as data_dir:
        second = data_dir.claim_identity()
    assert first.actor == second.actor and first.actor.startswith("n1-")
    assert (tmp_path / "n1" / "actor").read_text().strip() == first.actor
    assert (first.incarnation, second.incarnation) == (1, 2)
    assert first.writer != second.writer and len(second.writer) <= 64


def test_a_node_whose_data_dir_is_gone_gets_a_new_actor_id(tmp_path: Path) -> None:
    with NodeDataDir(tmp_path / "a", "n1") as data_dir:
        first = data_dir.claim_identity()
    with NodeDataDir(tmp_path / "b", "n1") as data_dir:
        second = data_dir.claim_identity()
    assert first.actor != second.actor


def test_two_processes_cannot_run_one_node(tmp_path: Path) -> None:
    with NodeDataDir(tmp_path, "n1"), pytest.raises(DataDirError, match="already running"):
        NodeDataDir(tmp_path, "n1").open()
    with NodeDataDir(tmp_path, "n1"):
        pass  # released on close


@pytest.mark.parametrize(
    ("name", "content"), [("actor", "n2-0123456789abcdef"), ("actor", "junk"), ("incarnation", "x")]
)
def test_corrupt_identity_files_are_reported(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / "n1").mkdir()
    (tmp_path / "n1" / name).write_text(content)
    with NodeDataDir(tmp_path, "n1") as data_dir, pytest.raises(DataDirError, match=name):
        data_dir.claim_identity()


def test_a_start_that_resumes_keeps_the_writer_and_one_that_does_not_takes_the_next(tmp_path: Path) -> None:
    with NodeDataDir(tmp_path, "n1") as data_dir:
        first = data_dir.claim_identity(resume=True)  # nothing to resume: the first incarnation
        again = data_dir.claim_identity(resume=True)
        renewed = data_dir.claim_identity()
    assert (first.incarnation, again.incarnation, renewed.incarnation) == (1, 1, 2)
    assert first.writer == again.writer != renewed.writer
    with NodeDataDir(tmp_path, "n1") as data_dir:
        assert data_dir.claim_identity(resume=True) == renewed


def test_a_new_actor_id_starts_over_at_the_first_incarnation(tmp_path: Path) -> None:
    with NodeDataDir(tmp_path, "n1") as data_dir:
        data_dir.claim_identity()
        old = data_dir.claim_identity()
        new = data_dir.claim_identity(resume=True, new_actor=True)
    assert new.actor != old.actor and new.actor.startswith("n1-") and new.incarnation == 1
    with NodeDataDir(tmp_path, "n1") as data_dir:
        assert data_dir.claim_identity(resume=True) == new
