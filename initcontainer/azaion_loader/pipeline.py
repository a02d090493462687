"""Bounded background stages, so that network, hashing and disk overlap.

A transfer runs in up to three threads: a reader (:func:`prefetch`: network
or disk reads, and in a fetch the ciphertext digest), the caller (decryption)
and a sink (:class:`Sink`: write, and the plaintext digest when none was
registered).  ``hashlib``, ``cryptography``,
socket and file I/O release the GIL on large buffers, so the stages really
run in parallel.  Every queue is bounded, so memory stays constant; an error
in any stage stops the others and is re-raised in the caller.

:class:`BufferRing` hands out reusable output buffers: with a sink of depth
``d``, a ring of ``d + 2`` buffers is never overwritten while the sink still
holds one (see :meth:`Sink.ring`).

:class:`Background` runs one call in its own thread (the load step's digest
check, while the CLI imports the rest); :func:`file_sha256` hashes a file in
reads large enough that the GIL changes hands rarely.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

__all__ = [
    "HASH_CHUNK",
    "READ_AHEAD",
    "Background",
    "BufferRing",
    "Sink",
    "file_sha256",
    "prefetch",
    "reuse_big_allocations",
]

T = TypeVar("T")

READ_AHEAD = 4
"""Chunks buffered between two stages."""

HASH_CHUNK = 8 * 1024 * 1024
"""Bytes per read of :func:`file_sha256`.  Each read and each digest update
releases the GIL and must take it back, waiting up to the interpreter's
switch interval (5 ms) while another thread runs Python code: big reads
keep those waits rare."""

_POLL = 0.1
_END: Any = object()


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first; returns whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def prefetch(
    source: Iterable[T], depth: int = READ_AHEAD, *, name: str = "loader-read"
) -> Iterator[T]:
    """Iterate ``source`` in a background thread, ``depth`` items ahead.

    Exceptions of ``source`` are re-raised in the consumer; closing the
    returned generator stops the thread (and closes ``source`` if it can).
    """
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in source:
                if not _put(q, ("item", item), stop):
                    return
            _put(q, ("end", None), stop)
        except BaseException as exc:  # noqa: BLE001 - handed over to the consumer
            _put(q, ("error", exc), stop)
        finally:
            close = getattr(source, "close", None)
            if stop.is_set() and callable(close):
                with contextlib.suppress(Exception):
                    close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join(timeout=5)


class Sink(Generic[T]):
    """A background thread calling ``consume(item)`` for each :meth:`put` item, in order.

    At most ``depth`` items wait; :meth:`put` blocks beyond that.  Use it as a
    context manager: leaving the block by an exception cancels the sink, and
    :meth:`close` (on success) waits for the last item.  An error of
    ``consume`` is re-raised by the next :meth:`put` or by :meth:`close`.
    """

    def __init__(
        self, consume: Callable[[T], None], *, depth: int = READ_AHEAD, name: str = "loader-write"
    ) -> None:
        self.depth = depth
        self._consume = consume
        self._q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self._q.get(timeout=_POLL)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is _END or self._stop.is_set():
                return
            try:
                self._consume(item)
            except BaseException as exc:  # noqa: BLE001 - handed over to the producer
                self._error = exc
                self._stop.set()
                return

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: T) -> None:
        """Queue ``item`` (blocks while ``depth`` items wait)."""
        self._raise()
        if not _put(self._q, item, self._stop):
            self._raise()
            raise RuntimeError("the sink is closed")

    def ring(self, size: int) -> BufferRing:
        """Output buffers for this sink's items: never reused while the sink may hold them."""
        return BufferRing(self.depth + 2, size)

    def close(self) -> None:
        """Wait until every item is consumed; re-raise the sink's error."""
        _put(self._q, _END, self._stop)
        self._thread.join()
        self._raise()

    def cancel(self) -> None:
        """Stop as soon as possible, dropping what waits."""
        self._stop.set()
        self._thread.join(timeout=30)

    def __enter__(self) -> Sink[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.cancel()
        elif self._thread.is_alive():
            self.close()


class BufferRing:
    """``count`` reusable ``bytearray`` buffers, handed out in turn.

    With a FIFO sink of depth ``d`` and ``count >= d + 2``, buffer ``i`` is
    handed out again only after item ``i`` left the sink: when the producer
    asks for buffer ``i + count``, at most ``d`` items wait and one is being
    consumed, all newer than ``i``.
    """

    def __init__(self, count: int, size: int) -> None:
        self._buffers = [bytearray(size) for _ in range(count)]
        self._next = 0

    def next(self, size: int) -> bytearray:
        """The next buffer, grown to at least ``size`` bytes."""
        i = self._next
        self._next = (i + 1) % len(self._buffers)
        if len(self._buffers[i]) < size:
            self._buffers[i] = bytearray(size)
        return self._buffers[i]


class Background(Generic[T]):
    """``fn()`` running in its own thread from construction; :meth:`result` waits for it."""

    def __init__(self, fn: Callable[[], T], *, name: str = "loader-background") -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        # Not a daemon: the work runs in C without the GIL (scrypt, SHA-256), and a
        # daemon thread still inside it while the interpreter finalises can crash
        # the process (a fetch with a wrong password once ended in SIGSEGV after
        # its fast 401); at exit the interpreter waits for it instead (<= ~1 s).
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=False)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed over to result()
            self._error = exc

    def result(self) -> T:
        """What ``fn`` returned; what it raised is raised here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
BIG_ALLOCATION = 32 * 1024 * 1024
"""Allocations below this size come from the heap and are reused (:func:`reuse_big_allocations`)."""


def reuse_big_allocations() -> bool:
    """Let glibc's ``malloc`` reuse freed megabyte buffers instead of mapping fresh ones.

    By default glibc serves every allocation of a size it last freed, or
    more, with a new ``mmap``, whose pages the kernel zeroes on first touch:
    a stream that allocates a fresh 1 MiB ``bytes`` per chunk (a cipher's
    ``update``, a file's ``read``, boto3's parts) pays a page fault per 4 KiB
    (measured: AES-256-CBC encryption through ``update`` 2.1 s per GiB of CPU,
    through ``update_into`` a reused buffer 1.1 s; with this setting both
    1.1 s).  Raising the mmap threshold to :data:`BIG_ALLOCATION` (and the
    trim threshold to twice that) serves them from the heap, where freed
    buffers are reused; memory stays bounded by what is live at once.
    Called by the encrypting commands (``upload``, ``upload-archive``); not
    by a fetch, which allocates nothing per chunk and whose peak RSS it raised
    from ~85 to 94 MiB (heap fragments of the start-up kept instead of
    unmapped).  A no-op (``False``) where ``mallopt`` is missing (not glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, BIG_ALLOCATION)
        and mallopt(_M_TRIM_THRESHOLD, 2 * BIG_ALLOCATION)
    )


def file_sha256(path: str | os.PathLike[str], *, chunk_size: int = HASH_CHUNK) -> tuple[str, int]:
    """The lowercase hex SHA-256 and the size of a file, read into one reused buffer."""
    digest = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size
