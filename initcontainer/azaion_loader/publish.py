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
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from azaion_loader.errors import TargetError

__all__ = ["AtomicWriter", "atomic_writer", "fsync_dir", "publish_bytes"]

log = logging.getLogger(__name__)


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

    def __init__(self, path: str | os.PathLike[str], *, mode: int = 0o644) -> None:
        self.path = Path(path)
        self.mode = mode
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
