"""How a fetch checks and decrypts each resource format, chunk by chunk.

:func:`opener` picks one for a record (docs/protocol.md §5).  The fetch
feeds ``small || big`` through it: :meth:`~Opener.received` wraps the
chunks on the reader thread (format 1 hashes them there), :meth:`~Opener.open`
turns a chunk into plaintext pieces for the writer, and :meth:`~Opener.finish`
does the final checks, raising :class:`IntegrityError` before anything is
published.  Plaintext pieces live in ``ring``'s buffers
(:meth:`azaion_loader.pipeline.Sink.ring`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from typing import Protocol

from azaion_loader.crypto import Decryptor
from azaion_loader.errors import IntegrityError
from azaion_loader.models import FORMAT_SEGMENTED, ResourceRecord
from azaion_loader.pipeline import BufferRing
from azaion_loader.segmented import SegmentDecryptor

__all__ = ["Opener", "opener"]

Chunk = bytes | memoryview


class Opener(Protocol):
    """One record's checks and decryption (see the module's docstring)."""

    def buffer_size(self, chunk_size: int) -> int:
        """The ring's buffer size for chunks of ``chunk_size`` bytes."""
        ...

    def received(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        """``chunks`` as the reader thread passes them on."""
        ...

    def open(self, chunk: Chunk, ring: BufferRing) -> Iterator[memoryview]:
        """The plaintext ``chunk`` yields, in ``ring``'s buffers."""
        ...

    def finish(self) -> Iterator[memoryview | bytes]:
        """The last plaintext, once every check has passed."""
        ...


def _mismatch(rec: ResourceRecord, source: str) -> IntegrityError:
    return IntegrityError(
        f"the SHA-256 of {rec.folder}/{rec.name} (big part from {source}) does not match "
        "the digest from the API"
    )


def _close(chunks: Iterable[Chunk]) -> None:
    close = getattr(chunks, "close", None)
    if callable(close):
        close()


class _CbcOpener:
    """Format 1: SHA-256 of the whole ciphertext on the reader thread, CBC decryption."""

    def __init__(self, rec: ResourceRecord, source: str) -> None:
        self._rec = rec
        self._source = source
        self._digest = hashlib.sha256(rec.small)  # the big part follows on the reader thread
        self._dec = Decryptor(rec.key)

    def buffer_size(self, chunk_size: int) -> int:
        return Decryptor.buffer_size(chunk_size)

    def received(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        # The digest is read only after the reader's end marker, so it is complete.
        try:
            for chunk in chunks:
                self._digest.update(chunk)
                yield chunk
        finally:
            _close(chunks)

    def open(self, chunk: Chunk, ring: BufferRing) -> Iterator[memoryview]:
        yield self._dec.update_into(chunk, ring.next(Decryptor.buffer_size(len(chunk))))

    def finish(self) -> Iterator[memoryview | bytes]:
        if not hmac.compare_digest(self._digest.hexdigest(), self._rec.sha256):
            raise _mismatch(self._rec, self._source)
        yield self._dec.finalize()


class _SegmentOpener:
    """Format 2: each segment's tag checked before its plaintext goes on; the digest of the tags."""

    def __init__(self, rec: ResourceRecord, source: str) -> None:
        self._rec = rec
        self._source = source
        self._dec = SegmentDecryptor(rec.key, rec.size, source=f"{rec.folder}/{rec.name}")

    def buffer_size(self, chunk_size: int) -> int:
        return SegmentDecryptor.buffer_size

    def received(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        return iter(chunks)

    def open(self, chunk: Chunk, ring: BufferRing) -> Iterator[memoryview]:
        return self._dec.feed(chunk, ring)

    def finish(self) -> Iterator[memoryview | bytes]:
        if not hmac.compare_digest(self._dec.finish(), self._rec.sha256):
            raise _mismatch(self._rec, self._source)
        return iter(())


def opener(rec: ResourceRecord, source: str) -> Opener:
    """The opener of ``rec``'s format; ``source`` names where the big part comes from."""
    if rec.format == FORMAT_SEGMENTED:
        return _SegmentOpener(rec, source)
    return _CbcOpener(rec, source)
