"""The disk as a fault: a small tmpfs that fills up, and fsyncs that fail, for real node processes.

Shared by the disk tests (``tests/node/test_disk_faults.py``) and the fault suite's ``disk`` nemesis
(``bench.faults``), so both break the disk the same way:

- ``Tmpfs``: a tmpfs of a few MiB mounted where a node keeps its data dir. Needs root (``mount``);
  where it cannot mount it raises ``MountUnavailable`` saying why. Unmounted (``umount -l`` as the
  fallback) and its mount point removed on the way out, also when the test fails.
- ``Filler``: writes one file until the file system answers ENOSPC, and deletes it to free the space.
  On tmpfs a write that needs a page no longer there is cut short, so a log record written as the
  disk fills is half on disk: the short write a log must notice.
- ``build_fail_fsync``: compiles ``tests/shims/fail_fsync.c``, an LD_PRELOAD shim that makes fsync
  and fdatasync fail with EIO while a trigger file exists (tmpfs never fails an fsync, and production
  code carries no hook for it). ``ShimUnavailable`` where gcc is missing.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

#: Bytes of a page: tmpfs allocates (and runs out) a page at a time.
PAGE = os.sysconf("SC_PAGE_SIZE")
#: The report's disk: a node's data dir on a 2 MiB tmpfs.
DEFAULT_DISK_BYTES = 2 * 1024 * 1024
#: The environment variable the shim reads the trigger file's path from (only the shim reads it).
FAIL_FSYNC_ENV = "LIKES_TEST_FAIL_FSYNC"
SHIM_SOURCE = Path(__file__).resolve().parent.parent / "tests" / "shims" / "fail_fsync.c"
_CHUNK = 64 * 1024
_COMMAND_TIMEOUT = 30.0


class DiskFaultUnavailable(RuntimeError):
    """A disk fault cannot be set up on this machine; the message says what is missing."""


class MountUnavailable(DiskFaultUnavailable):
    """A tmpfs cannot be mounted here (not root, no ``mount``, or the kernel refused)."""


class ShimUnavailable(DiskFaultUnavailable):
    """The fsync shim cannot be built (no gcc, or it failed)."""


class Tmpfs:
    """A tmpfs of ``size`` bytes at ``path`` (created if absent); a context manager, or ``mount`` and
    ``unmount`` by hand. Unmounting also removes the mount point if this object created it."""

    def __init__(self, path: Path, size: int = DEFAULT_DISK_BYTES) -> None:
        self.path = path
        self.size = size
        self.mounted = False
        self._made: list[Path] = []

    def mount(self) -> None:
        """Mount it, or raise ``MountUnavailable`` with the reason (nothing is left behind). Mounting
        what this object already mounted does nothing: a second tmpfs on top would outlive unmount."""
        if self.mounted:
            return
        if os.geteuid() != 0:
            raise MountUnavailable(
                f"mounting a tmpfs at {self.path} needs root (euid {os.geteuid()}): the disk-full faults "
                "put a node's data dir on a small tmpfs"
            )
        if shutil.which("mount") is None or shutil.which("umount") is None:
            raise MountUnavailable("no mount/umount command: cannot mount the tmpfs the disk faults need")
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        self._made = missing  # deepest first: removed in this order
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            self._remove_made()
            raise MountUnavailable(
                f"mount -t tmpfs at {self.path} failed ({done.returncode}): {done.stderr.strip()}; "
                "the disk-full faults need CAP_SYS_ADMIN"
            )
        self.mounted = True

    def unmount(self) -> None:
        """Unmount (lazily if busy: a process we failed to stop may hold a file) and remove what we made."""
        if self.mounted:
            done = subprocess.run(
                ["umount", str(self.path)],
                capture_output=True,
                text=True,
                timeout=_COMMAND_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                lazy = subprocess.run(
                    ["umount", "-l", str(self.path)],
                    capture_output=True,
                    text=True,
                    timeout=_COMMAND_TIMEOUT,
                    check=False,
                )
                if lazy.returncode != 0:
                    raise RuntimeError(
                        f"cannot unmount the tmpfs at {self.path}: {done.stderr.strip()}; "
                        f"umount -l: {lazy.stderr.strip()}"
                    )
            self.mounted = False
        self._remove_made()

    def _remove_made(self) -> None:
        for path in self._made:
            try:
                path.rmdir()
            except OSError:
                break  # not empty (something else lives there now) or gone: leave it and its parents
        self._made = []

    def free_bytes(self) -> int:
        """Bytes still free on it."""
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def __enter__(self) -> Tmpfs:
        self.mount()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.unmount()


class Filler:
    """One file that takes every free byte of a file system, and gives them back when deleted."""

    def __init__(self, directory: Path, name: str = "filler") -> None:
        self.path = directory / name

    def fill(self, *, limit: int = 64 * 1024 * 1024) -> int:
        """Write until the file system answers ENOSPC (the last page's slack included); the bytes the
        filler then holds. Bounded: ``limit`` bytes at most, else RuntimeError (not a small disk)."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        chunk = bytes(_CHUNK)
        try:
            for _ in range(limit // _CHUNK + 2):
                try:
                    if os.write(fd, chunk) == 0:
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            else:
                raise RuntimeError(f"{self.path}: not full after {limit} bytes: is this a small tmpfs?")
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def release(self, nbytes: int) -> None:
        """Give back ``nbytes`` (whole pages) of what the filler holds, keeping the rest full."""
        size = self.path.stat().st_size
        keep = max(0, (size - nbytes) // PAGE * PAGE)
        os.truncate(self.path, keep)

    def free(self) -> None:
        """Delete the filler: the space is free again at once."""
        self.path.unlink(missing_ok=True)


def build_fail_fsync(directory: Path, source: Path = SHIM_SOURCE) -> Path:
    """Compile the fsync shim into ``directory``; the shared library's path for LD_PRELOAD."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ShimUnavailable("gcc is not installed: the fsync-failure shim (tests/shims/fail_fsync.c) is C")
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / "libfailfsync.so"
    done = subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(library), str(source), "-ldl"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ShimUnavailable(f"gcc could not build {source.name}: {done.stderr.strip()[:2000]}")
    return library


def fail_fsync_env(library: Path, trigger: Path) -> dict[str, str]:
    """The environment that loads the shim into a process and arms it with ``trigger``."""
    preload = os.environ.get("LD_PRELOAD", "")
    return {"LD_PRELOAD": f"{library} {preload}".strip(), FAIL_FSYNC_ENV: str(trigger)}


def shim_loaded(pid: int, library: Path) -> bool:
    """Whether process ``pid`` has the shim mapped (else a test of fsync failures proves nothing)."""
    try:
        return str(library) in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
