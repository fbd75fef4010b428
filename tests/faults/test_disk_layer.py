"""The disk faults themselves (``bench.disk``): a full tmpfs cuts a write short, the mount goes away
however the test ends, and the shim fails fsync exactly while its trigger exists. If these tools did
nothing, the disk tests and the ``disk`` nemesis would pass without testing anything."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.disk import (
    PAGE,
    Filler,
    MountUnavailable,
    ShimUnavailable,
    Tmpfs,
    build_fail_fsync,
    fail_fsync_env,
)
from tests.node.checkpoint.conftest import server_unreachable

#: A child that fsyncs and fdatasyncs a file and prints what each returned.
PROBE = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
for call in (os.fsync, os.fdatasync):
    try:
        call(fd)
        print("ok")
    except OSError as exc:
        print(exc.errno)
"""


def mounted(path: Path) -> Tmpfs:
    mount = Tmpfs(path, 256 * 1024)
    try:
        mount.mount()
    except MountUnavailable as exc:
        server_unreachable(str(exc))
    return mount


def test_a_full_tmpfs_cuts_the_write_that_needs_a_new_page_short(tmp_path: Path) -> None:
    mount = mounted(tmp_path / "disk")
    try:
        assert os.path.ismount(mount.path)
        log = os.open(mount.path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(log, b"x" * 1000)  # the log's page is partly used
            filler = Filler(mount.path)
            assert filler.fill() > 0 and mount.free_bytes() == 0
            written = [os.write(log, b"r" * 700) for _ in range((PAGE - 1000) // 700)]
            assert written == [700] * len(written)  # the page's slack still takes whole records
            assert os.write(log, b"r" * 700) < 700  # the record that needs the next page: cut short
            with pytest.raises(OSError) as full:
                os.write(log, b"r" * 700)
            assert full.value.errno == errno.ENOSPC
            filler.release(2 * PAGE)
            assert os.write(log, b"r" * 700) == 700
            filler.free()
            assert mount.free_bytes() > 200 * 1024
        finally:
            os.close(log)
    finally:
        mount.unmount()
    assert not mount.path.exists()


def test_the_tmpfs_is_unmounted_and_removed_when_the_test_fails_even_if_busy(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "disk"
    held = None
    with pytest.raises(RuntimeError, match="the test failed"), mounted(path):
        held = os.open(path / "open", os.O_WRONLY | os.O_CREAT, 0o644)  # busy: plain umount fails
        raise RuntimeError("the test failed")
    assert held is not None
    os.close(held)
    assert not os.path.ismount(path) and not (tmp_path / "a").exists()


def test_without_root_there_is_no_mount_and_the_reason_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(MountUnavailable, match="needs root"):
        Tmpfs(tmp_path / "disk").mount()
    assert not (tmp_path / "disk").exists()


def test_the_shim_fails_fsync_and_fdatasync_exactly_while_its_trigger_exists(tmp_path: Path) -> None:
    try:
        library = build_fail_fsync(tmp_path / "shim")
    except ShimUnavailable as exc:
        server_unreachable(str(exc))
    trigger = tmp_path / "trigger"

    def probe(env: dict[str, str]) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(tmp_path / "file")],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.split()

    armed = fail_fsync_env(library, trigger)
    assert probe(armed) == ["ok", "ok"]
    trigger.touch()
    assert probe(armed) == [str(errno.EIO)] * 2
    assert probe({}) == ["ok", "ok"]  # only a process that loads the shim is affected
    trigger.unlink()
    assert probe(armed) == ["ok", "ok"]
