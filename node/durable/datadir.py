"""A node's data directory: its lock, its actor id and its incarnation.

Layout of ``<data_dir>/<name>/``:

- ``lock``: held (``flock``) for the life of the process, so two processes never write as one node.
- ``actor``: the node's actor id, ``<name>-<16 random hex digits>``, created when absent. A node whose
  data directory is gone therefore starts under a new actor id: reusing an id after losing its state
  would let the new writes vanish under the max-merge of peers that saw the old ones.
- ``incarnation``: the node writes under ``<actor>.<incarnation>``. No dot leaves a node before its
  log record is durable, so a start whose log replayed whole resumes the writer id: every dot it ever
  handed out is back in its state, and the next ones follow them. A start that cut or skipped
  damaged records, or found no log at all, may have lost dots that peers hold, so it takes the next
  incarnation (handing such a dot to another like would let max-merge drop one of them silently);
  so does a log that failed and takes writes again. A node whose snapshot was discarded takes a new
  actor id altogether.
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

    def claim_identity(self, *, resume: bool = False, new_actor: bool = False) -> NodeIdentity:
        """Read or create the actor id and the incarnation (durably, before any write): the last
        incarnation again when ``resume``, else the next; a new actor id when ``new_actor``."""
        if self._lock_fd is None:
            raise DataDirError(f"{self.path}: the data directory is not open")
        if new_actor:
            self._remove("actor")
            self._remove("incarnation")
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
            incarnation = int(previous) + (0 if resume else 1)
        else:
            raise DataDirError(f"{self.path / 'incarnation'}: not an incarnation number: {previous!r}")
        if str(incarnation) != previous:
            self._write("incarnation", str(incarnation))
        return NodeIdentity(actor=actor, incarnation=incarnation)

    def _remove(self, name: str) -> None:
        try:
            (self.path / name).unlink(missing_ok=True)
        except OSError as exc:
            raise DataDirError(f"{self.path / name}: cannot remove: {exc}") from exc

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
