"""Atomic publish: a temporary file beside the target, fsync, rename, fsync the directory.

At any point of failure the target holds either its old content or the
complete new one, never a partial file; the temporary file is removed.

    with atomic_writer("/data/model.bin") as out:
        out.write(chunk)
        ...                     # raise here and nothing is published
    # committed: fsynced, renamed onto the target, directory fsynced

Failures to create, write or rename become :class:`~azaion_loader.errors.TargetError`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
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
    "start_writeback",
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
        if self.path.is_dir():
            raise TargetError(f"cannot write {self.path}: it is a directory")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise _target_error("create a file in", directory, exc) from exc
        self.tmp_path = Path(tmp)
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
            raise _target_error("write", self.tmp_path, exc) from exc
        if self.flush_behind and self.size - self._flushed >= self.flush_behind:
            start_writeback(self._file.fileno(), self._flushed, self.size - self._flushed)
            self._flushed = self.size

    def commit(self) -> None:
        """fsync, set the mode, rename onto the target and fsync the directory."""
        if self._closed:
            raise ValueError("the writer is already closed")
        try:
            os.fchmod(self._file.fileno(), self.mode)
            os.fsync(self._file.fileno())
            self._file.close()
            self._closed = True
            os.replace(self.tmp_path, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            self.abort()
            raise _target_error("publish", self.path, exc) from exc
        log.debug("published %s (%d bytes)", self.path, self.size)

    def abort(self) -> None:
        """Close and remove the temporary file; the target is untouched."""
        if not self._closed:
            with contextlib.suppress(OSError):
                self._file.close()
            self._closed = True
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()

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
