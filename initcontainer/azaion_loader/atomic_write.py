"""Atomic write: a temporary file beside the target, fsync, rename, fsync the directory.

At any point of failure the target holds either its old content or the
complete new one, never a partial file; the temporary file is removed.

The temporary file has no name while it is written (``O_TMPFILE``, where the
file system has it): a process killed by SIGKILL, an OOM kill or a node
crash leaves nothing behind, since the kernel frees a nameless file when its
last descriptor closes.  It gets a name, ``.NAME.XXXXXXXX.tmp``, only at
:meth:`AtomicWriter.commit`, after the caller's checks, for the instant
between the link and the rename.  Where ``O_TMPFILE`` is missing (NFS, old
kernels) the temporary is named from the start.  Either way the writer holds
an exclusive ``flock`` on it, and every new writer first removes the
temporaries of its own target that no live process holds
(:func:`sweep_stale`): only names of that exact pattern, beside the target.
The target must be a regular file or absent: a device (``/dev/null``), a
FIFO or a socket is refused, never replaced.

    with atomic_writer("/data/model.bin") as out:
        out.write(chunk)
        ...                     # raise here and nothing is published
    # committed: fsynced, renamed onto the target, directory fsynced

Failures to create, write or rename become :class:`~azaion_loader.errors.TargetError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from azaion_loader.errors import TargetError

__all__ = [
    "FLUSH_BEHIND",
    "AtomicWriter",
    "atomic_writer",
    "fsync_dir",
    "publish_bytes",
    "scratch_dir",
    "start_writeback",
    "sweep_stale",
    "temp_prefix",
]

log = logging.getLogger(__name__)

FLUSH_BEHIND = 32 * 1024 * 1024
"""Start the writeback of every this many bytes written, so the final fsync has little left."""

_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Any:
    """libc's ``sync_file_range`` (Linux), or ``None``: Python's ``os`` has no binding.

    Looked up on first use, in the symbols the process already has (libc is
    among them): ``ctypes.util.find_library`` would run ``ldconfig -p`` at
    every start of the CLI, even of commands that write nothing.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` to disk, without waiting.

    Best effort (``sync_file_range(SYNC_FILE_RANGE_WRITE)`` where available);
    durability still comes from the fsync at commit.
    """
    func = _sync_file_range()
    if func is not None:
        func(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename inside it is durable (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _target_error(action: str, path: Path, exc: OSError) -> TargetError:
    reason = exc.strerror or type(exc).__name__
    return TargetError(f"cannot {action} {path}: {reason}")


_NAME_PART_MAX = 100
"""Bytes of the target's name kept in a temporary's name (NAME_MAX is 255 bytes)."""
_TEMP_SUFFIX = re.compile(r"[a-z0-9_]{8}\.tmp")


def temp_prefix(name: str) -> str:
    """``.NAME.``: the start of the temporaries' names of a target called ``name``.

    A long name is cut to 100 bytes and followed by 16 hex digits of its
    SHA-256, so the temporary's name stays far below NAME_MAX whatever the
    target's, and still belongs to exactly one target.
    """
    raw = os.fsencode(name)
    if len(raw) <= _NAME_PART_MAX + 20:
        return f".{name}."
    head = os.fsdecode(raw[:_NAME_PART_MAX].decode("utf-8", "ignore").encode("utf-8"))
    return f".{head}~{hashlib.sha256(raw).hexdigest()[:16]}."


def _lock(fd: int) -> bool:
    """Take an exclusive ``flock`` without waiting; whether it was free."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def sweep_stale(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that dead writers of ``path`` left beside it; returns them.

    Only regular files named ``.NAME.XXXXXXXX.tmp`` for this very target
    are candidates, and only those whose ``flock`` is free: a live writer
    (this process or another) holds the lock on its own, so it is skipped.
    """
    target = Path(path)
    prefix = temp_prefix(target.name)
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(target.parent) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        if not _TEMP_SUFFIX.fullmatch(entry.name[len(prefix) :]):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
        finally:
            os.close(fd)
    for stale in removed:
        log.warning("removed %s, a temporary left by an interrupted writer", stale)
    return removed


def _refuse_special(path: Path) -> None:
    """TargetError unless ``path`` is absent or (through symlinks) a regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if stat.S_ISDIR(mode):
        raise TargetError(f"cannot write {path}: it is a directory")
    if not stat.S_ISREG(mode):
        raise TargetError(
            f"cannot write {path}: it is not a regular file (a device, FIFO or socket)",
            hint="choose an output path that is a regular file or does not exist yet",
        )


def _open_nameless(directory: Path) -> int | None:
    """A nameless file in ``directory`` (``O_TMPFILE``), or ``None`` where unsupported.

    Naming it later links ``/proc/self/fd/N``: without ``/proc`` it is not used.
    """
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def _create_named(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new ``PREFIX + 8 random characters + .tmp`` file in ``directory``, mode 0600."""
    for _ in range(100):
        candidate = directory / f"{prefix}{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        return fd, candidate
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


def _link_nameless(fd: int, directory: Path, prefix: str) -> Path:
    """Give the nameless file ``fd`` a fresh temporary name in ``directory``."""
    # With both directory descriptors at their default, os.link calls link(2),
    # which would link the /proc symlink itself: a src_dir_fd makes it linkat(2)
    # with AT_SYMLINK_FOLLOW, the documented way to name an O_TMPFILE file.
    proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(100):
            candidate = directory / f"{prefix}{secrets.token_hex(4)}.tmp"
            try:
                os.link(str(fd), candidate, src_dir_fd=proc_fd, follow_symlinks=True)
            except FileExistsError:
                continue
            return candidate
    finally:
        os.close(proc_fd)
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


class AtomicWriter:
    """A temporary file in the target's directory that becomes the target on :meth:`commit`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        mode: int = 0o644,
        flush_behind: int = FLUSH_BEHIND,
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.flush_behind = flush_behind
        self._flushed = 0
        directory = self.path.parent
        _refuse_special(self.path)
        self._prefix = temp_prefix(self.path.name)
        sweep_stale(self.path)
        self.tmp_path: Path | None = None
        """The temporary's name; ``None`` while it is nameless (``O_TMPFILE``)."""
        try:
            fd = _open_nameless(directory)
            if fd is None:
                fd, self.tmp_path = _create_named(directory, self._prefix)
        except OSError as exc:
            raise _target_error("create a file in", directory, exc) from exc
        # Held until the writer is done: sweep_stale never removes a live temporary.
        _lock(fd)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self.size = 0
        self._closed = False

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` to the temporary file."""
        try:
            view = memoryview(data)
            while view:
                n = self._file.write(view)
                if n is None:  # pragma: no cover - blocking files always write
                    continue
                view = view[n:]
                self.size += n
        except OSError as exc:
            raise _target_error("write", self.tmp_path or self.path, exc) from exc
        if self.flush_behind and self.size - self._flushed >= self.flush_behind:
            start_writeback(self._file.fileno(), self._flushed, self.size - self._flushed)
            self._flushed = self.size

    def commit(self) -> None:
        """fsync, set the mode, rename onto the target and fsync the directory."""
        if self._closed:
            raise ValueError("the writer is already closed")
        try:
            fd = self._file.fileno()
            os.fchmod(fd, self.mode)
            os.fsync(fd)
            if self.tmp_path is None:
                self.tmp_path = _link_nameless(fd, self.path.parent, self._prefix)
            # Renamed while still open, so the lock covers the named instant.
            os.replace(self.tmp_path, self.path)
            self._file.close()
            self._closed = True
            fsync_dir(self.path.parent)
        except OSError as exc:
            self.abort()
            raise _target_error("publish", self.path, exc) from exc
        log.debug("published %s (%d bytes)", self.path, self.size)

    def abort(self) -> None:
        """Close and remove the temporary file; the target is untouched."""
        if self.tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.tmp_path.unlink()
        if not self._closed:
            with contextlib.suppress(OSError):
                self._file.close()
            self._closed = True

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and not self._closed:
            self.commit()
        else:
            self.abort()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, mode: int = 0o644) -> Iterator[AtomicWriter]:
    """Context manager: commit on normal exit, abort (remove the temporary) on any error."""
    writer = AtomicWriter(path, mode=mode)
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
    if not writer._closed:
        writer.commit()


def publish_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_writer(path, mode=mode) as out:
        out.write(data)


_SCRATCH_SUFFIX = re.compile(r"[a-z0-9_]{8}")


def _sweep_scratch(parent: Path, prefix: str) -> None:
    """Remove this user's ``PREFIX + 8 characters`` directories no live process holds."""
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        if not _SCRATCH_SUFFIX.fullmatch(entry.name[len(prefix) :]):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_uid == os.geteuid() and _lock(fd):
                shutil.rmtree(entry.path, ignore_errors=True)
                log.warning("removed %s, a work directory left by an interrupted run", entry.path)
        finally:
            os.close(fd)


@contextlib.contextmanager
def scratch_dir(prefix: str, parent: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """A private (0700) directory ``PREFIX + 8 characters``, removed at the end of the block.

    Like ``tempfile.TemporaryDirectory``, plus: the directory is ``flock``-ed
    while in use, and the directories of the same prefix that a killed
    process left (no lock held, same owner) are removed first, since what an
    unlock keeps there (the encrypted archive and its key fragment) is as
    good as the plaintext.
    """
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    _sweep_scratch(base, prefix)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _lock(fd)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
