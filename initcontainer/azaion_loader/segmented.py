"""Format 2 of resources and archives: 1 MiB segments, each sealed with AES-256-GCM.

docs/protocol.md §5 and §6, "Format 2".  Segment ``i`` of ``k`` is
``AES-256-GCM(K, nonce_i, P_i, aad)`` followed by its 16-byte tag, where
``nonce_i`` is ``i`` in 11 big-endian bytes and a last-segment flag byte, so
a reordered, dropped, truncated or appended segment fails authentication.
The AAD names what is sealed (:data:`RESOURCE_AAD`, :data:`ARCHIVE_AAD`), so
a resource's ciphertext does not open as an archive, nor the reverse.
The record's digest is SHA-256 over a label and the tags in order
(:class:`SegmentDecryptor` recomputes it).  Its crypto costs about 0.11 s of
CPU per GiB either way, against format 1's (AES-CBC and SHA-256 of the whole
ciphertext) 0.73 s to fetch and 1.66 s to upload (``bench/floors.py``), and
each segment is checked before its plaintext is handed on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from azaion_loader.errors import IntegrityError

__all__ = [
    "ARCHIVE_AAD",
    "RESOURCE_AAD",
    "SEGMENT_SIZE",
    "TAG_SIZE",
    "SegmentDecryptor",
    "SegmentEncryptor",
    "segment_count",
    "segmented_size",
]

SEGMENT_SIZE = 1 << 20
"""Plaintext bytes per segment (the last one may be shorter)."""
TAG_SIZE = 16
RESOURCE_AAD = b"azaion-loader/v2/resource"
"""The AAD of every segment of a resource (docs/protocol.md §5)."""
ARCHIVE_AAD = b"azaion-loader/v2/archive"
"""The AAD of every segment of an image archive (docs/protocol.md §6)."""
_DIGEST_LABEL = b"azaion-loader/v2/segments\n"
_KEY_SIZE = 32


def segment_count(plain_size: int) -> int:
    """Segments of a plaintext of ``plain_size`` bytes (one, empty, for no bytes)."""
    if plain_size < 0:
        raise ValueError("plain_size must be >= 0")
    return max(1, -(-plain_size // SEGMENT_SIZE))


def segmented_size(plain_size: int) -> int:
    """The ciphertext's length: the plaintext plus one tag per segment."""
    return plain_size + TAG_SIZE * segment_count(plain_size)


def _plain_size(cipher_size: int) -> int | None:
    """The plaintext length a ciphertext of ``cipher_size`` bytes has, or ``None`` if none has."""
    count = max(1, -(-cipher_size // (SEGMENT_SIZE + TAG_SIZE)))
    plain = cipher_size - TAG_SIZE * count
    if plain < 0 or segmented_size(plain) != cipher_size:
        return None
    return plain


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _aes(key: bytes) -> algorithms.AES:
    if len(key) != _KEY_SIZE:
        raise ValueError(f"AES-256 needs a {_KEY_SIZE}-byte key, got {len(key)} bytes")
    return algorithms.AES(key)


class SegmentEncryptor:
    """Seals segments in order; :attr:`digest` covers their tags (the record's ``sha256``)."""

    def __init__(self, key: bytes, *, aad: bytes = RESOURCE_AAD) -> None:
        self._aes = _aes(key)
        self._aad = aad
        self._index = 0
        self._done = False
        self.digest = hashlib.sha256(_DIGEST_LABEL)
        """A ``hashlib`` object: ``hexdigest()`` is the record's digest once the last is sealed."""

    def seal(self, plain: bytes | memoryview, *, last: bool) -> tuple[bytes, bytes]:
        """The ciphertext and tag of the next segment.

        Every segment but the last holds exactly :data:`SEGMENT_SIZE` bytes;
        the last holds 1 to :data:`SEGMENT_SIZE` (0 only when it is the only one).
        """
        size = len(plain)
        if self._done:
            raise ValueError("seal() after the last segment")
        if size > SEGMENT_SIZE or (not last and size != SEGMENT_SIZE):
            raise ValueError(f"a segment other than the last holds exactly {SEGMENT_SIZE} bytes")
        if size == 0 and self._index:
            raise ValueError("only the single segment of an empty plaintext may be empty")
        ctx = Cipher(self._aes, modes.GCM(_nonce(self._index, last))).encryptor()
        ctx.authenticate_additional_data(self._aad)
        sealed = ctx.update(plain)
        ctx.finalize()
        self.digest.update(ctx.tag)
        self._index += 1
        self._done = last
        return sealed, ctx.tag

    def pieces(
        self,
        fill: Callable[[memoryview], int],
        *,
        on_plain: Callable[[memoryview], Any] | None = None,
    ) -> Iterator[bytes]:
        """Seal everything ``fill`` gives; yields each segment's ciphertext, then its tag.

        ``fill(view)`` reads into ``view`` until it is full or the source
        ends and returns the bytes read.  The next segment is read before
        this one is sealed: a segment is the last one only when nothing
        follows it.  ``on_plain`` sees each segment's plaintext, in order.
        """
        views = [memoryview(bytearray(SEGMENT_SIZE)) for _ in range(2)]
        current = 0
        size = fill(views[current])
        while True:
            if on_plain is not None:
                on_plain(views[current][:size])
            following = 1 - current
            more = fill(views[following]) if size == SEGMENT_SIZE else 0
            sealed, tag = self.seal(views[current][:size], last=not more)
            yield sealed
            yield tag
            if not more:
                return
            current, size = following, more


class SegmentDecryptor:
    """Opens a format-2 ciphertext of a known length, fed in pieces of any size.

    :meth:`feed` yields each segment's plaintext once its tag has been
    checked, in a buffer of ``ring`` (``next(size)`` returns a writable
    buffer of at least ``size`` bytes; see
    :class:`~azaion_loader.pipeline.BufferRing` for how long it stays
    valid).  A segment failing its tag, bytes beyond the length, or a feed
    ending early (:meth:`finish`) raise :class:`IntegrityError`.
    """

    buffer_size = SEGMENT_SIZE + 15
    """The ring's buffers: GCM's ``update_into`` wants 15 spare bytes."""

    def __init__(
        self,
        key: bytes,
        cipher_size: int,
        *,
        source: str = "the ciphertext",
        aad: bytes = RESOURCE_AAD,
    ) -> None:
        plain_size = _plain_size(cipher_size)
        if plain_size is None:
            raise IntegrityError(
                f"{source} cannot be a format-2 ciphertext: no plaintext has {cipher_size} bytes"
            )
        self._aes = _aes(key)
        self._aad = aad
        self._source = source
        self._count = segment_count(plain_size)
        self._last_size = plain_size - SEGMENT_SIZE * (self._count - 1)
        self._index = 0
        self._ctx: Any = None
        self._out: memoryview = memoryview(b"")
        self._filled = 0
        self._left = 0
        self._tag = bytearray()
        self._digest = hashlib.sha256(_DIGEST_LABEL)

    def _start(self, ring: Any) -> None:
        last = self._index == self._count - 1
        ctx = Cipher(self._aes, modes.GCM(_nonce(self._index, last))).decryptor()
        ctx.authenticate_additional_data(self._aad)
        self._ctx = ctx
        self._out = memoryview(ring.next(self.buffer_size))
        self._filled = 0
        self._left = self._last_size if last else SEGMENT_SIZE
        self._tag.clear()

    def feed(self, data: bytes | memoryview, ring: Any) -> Iterator[memoryview]:
        """The segments that ``data`` completes, each checked, as views of ``ring``'s buffers."""
        view = memoryview(data)
        while view:
            if self._index == self._count:
                raise IntegrityError(f"{self._source} is longer than its registered size")
            if self._ctx is None:
                self._start(ring)
            if self._left:
                take = view[: self._left]
                self._filled += self._ctx.update_into(take, self._out[self._filled :])
                self._left -= len(take)
                view = view[len(take) :]
                continue
            need = TAG_SIZE - len(self._tag)
            self._tag += view[:need]
            view = view[need:]
            if len(self._tag) < TAG_SIZE:
                return
            try:
                self._ctx.finalize_with_tag(bytes(self._tag))
            except InvalidTag:
                raise IntegrityError(
                    f"segment {self._index} of {self._source} failed authentication "
                    "(altered, reordered or from another resource or archive)"
                ) from None
            self._digest.update(self._tag)
            self._ctx = None
            self._index += 1
            yield self._out[: self._filled]

    def finish(self) -> str:
        """The digest over the tags; :class:`IntegrityError` unless every segment was opened."""
        if self._index != self._count:
            raise IntegrityError(
                f"{self._source} ended after {self._index} of {self._count} segments: truncated"
            )
        return self._digest.hexdigest()
