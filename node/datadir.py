"""A node's data directory: its lock, its actor id and its incarnation.

Layout of ``<data_dir>/<name>/``:

- ``lock``: held (``flock``) for the life of the process, so two processes never write as one node.
- ``actor``: the node's actor id, ``<name>-<16 random hex digits>``, created when absent. A node whose
  data directory is gone therefore starts under a new actor id: reusing an id after losing its state
  would let the new writes vanish under the max-merge of peers that saw the old ones.
- ``incarnation``: how many times the node has started. Each start writes under
  ``<actor>.<incarnation>``, a fresh writer id, even though the write-ahead log (``wal/``) restores
  every acknowledged write: a delta can reach peers before its own log record is fsynced, and a crash
  in between would otherwise let the next run hand the same dot to another like, which max-merge
  would silently drop. The cost is one version-vector entry per restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from node.errors import DataDirError

_ACTOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}-[0-9a-f]{16}")
#: Incarnations are decimal and bounded so the writer id stays within crdt's 64-character limit.
MAX_INCARNATION = 10**12


@dataclass(frozen=True)
class NodeIdentity:
    """Who a node is: its stable actor id and the writer id of this run."""

    actor: str
    incarnation: int

    @property
    def writer(self) -> str:
        """The actor name this run's CRDT mutations are tagged with."""
        return f"{self.actor}.{self.incarnation}"


class NodeDataDir:
    """The open, locked data directory of one node; use as a context manager."""

    def __init__(self, root: Path, name: str) -> None:
        self.path = root / name
        self.name = name
        self._lock_fd: int | None = None

    def __enter__(self) -> NodeDataDir:
        self.open()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        """Create the directory if needed and take its lock."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DataDirError(f"{self.path}: cannot open the data directory: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise DataDirError(f"{self.path}: locked: node {self.name} is already running") from exc
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def claim_identity(self) -> NodeIdentity:
        """Read or create the actor id and start a new incarnation (durably, before any write)."""
        if self._lock_fd is None:
            raise DataDirError(f"{self.path}: the data directory is not open")
        actor = self._read("actor")
        if actor is None:
            actor = f"{self.name}-{secrets.token_hex(8)}"
            self._write("actor", actor)
        elif not _ACTOR.fullmatch(actor) or not actor.startswith(f"{self.name}-"):
            raise DataDirError(f"{self.path / 'actor'}: not an actor id of node {self.name}: {actor!r}")
        previous = self._read("incarnation")
        if previous is None:
            incarnation = 1
        elif previous.isascii() and previous.isdigit() and int(previous) < MAX_INCARNATION:
            incarnation = int(previous) + 1
        else:
            raise DataDirError(f"{self.path / 'incarnation'}: not an incarnation number: {previous!r}")
        self._write("incarnation", str(incarnation))
        return NodeIdentity(actor=actor, incarnation=incarnation)

    def _read(self, name: str) -> str | None:
        try:
            return (self.path / name).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataDirError(f"{self.path / name}: unreadable: {exc}") from exc

    def _write(self, name: str, value: str) -> None:
        """Replace a small file atomically and durably (write, fsync, rename, fsync the directory)."""
        target = self.path / name
        temporary = target.with_name(f".{name}.tmp")
        try:
            with open(temporary, "w", encoding="ascii") as handle:
                handle.write(value + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
            directory = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise DataDirError(f"{target}: cannot write: {exc}") from exc
