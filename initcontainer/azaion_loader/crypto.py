"""Streaming AES-256-CBC with PKCS7 padding, and SHA-256 helpers.

The wire format (docs/protocol.md §5, §6) is ``C = IV || AES-256-CBC(K, IV, PKCS7(P))``:
the 16-byte IV travels in front of the ciphertext.  :class:`Encryptor` and
:class:`Decryptor` work chunk by chunk, so memory never grows with the size of
the data; :class:`Decryptor` checks the padding only at the very end, where a
bad padding or a truncated input raises :class:`~azaion_loader.errors.IntegrityError`.

CBC has no integrity of its own: callers check the SHA-256 of the whole
ciphertext (delivered by the authenticated API) before trusting the plaintext.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from azaion_loader.errors import IntegrityError
from azaion_loader.pipeline import file_sha256, prefetch
from azaion_loader.segmented import RESOURCE_AAD, SegmentEncryptor

__all__ = [
    "BLOCK_SIZE",
    "CHUNK_SIZE",
    "IV_SIZE",
    "KEY_SIZE",
    "SMALL_PART_MAX",
    "Decryptor",
    "EncryptingReader",
    "Encryptor",
    "StreamResult",
    "ciphertext_size",
    "decrypt_bytes",
    "decrypt_stream",
    "encrypt_bytes",
    "encrypt_stream",
    "iter_chunks",
    "new_key",
    "sha256_bytes",
    "sha256_file",
    "split_point",
]

CHUNK_SIZE = 1 << 20
"""Bytes per read/write when streaming (1 MiB)."""
KEY_SIZE = 32
IV_SIZE = 16
BLOCK_SIZE = 16
SMALL_PART_MAX = 3072
"""The small part is at most 3 KiB (docs/protocol.md §5)."""


def new_key() -> bytes:
    """A fresh random 32-byte AES-256 key."""
    return os.urandom(KEY_SIZE)


def ciphertext_size(plain_size: int) -> int:
    """``len(IV || CBC(PKCS7(P)))`` for a plaintext of ``plain_size`` bytes."""
    if plain_size < 0:
        raise ValueError("plain_size must be >= 0")
    return IV_SIZE + BLOCK_SIZE * (plain_size // BLOCK_SIZE + 1)


def split_point(cipher_size: int) -> int:
    """Where the ciphertext is cut: ``min(3072, floor(cipher_size * 3 / 10))``."""
    if cipher_size < 0:
        raise ValueError("cipher_size must be >= 0")
    return min(SMALL_PART_MAX, cipher_size * 3 // 10)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"AES-256 needs a {KEY_SIZE}-byte key, got {len(key)} bytes")


class Encryptor:
    """Streaming encryption: ``update()`` chunks, then ``finalize()``.

    The first bytes returned are the IV, so the concatenated output is exactly
    ``IV || AES-256-CBC(key, IV, PKCS7(plaintext))``.
    """

    def __init__(self, key: bytes, iv: bytes | None = None) -> None:
        _check_key(key)
        self.iv = iv if iv is not None else os.urandom(IV_SIZE)
        if len(self.iv) != IV_SIZE:
            raise ValueError(f"the IV must be {IV_SIZE} bytes")
        self._ctx = Cipher(algorithms.AES(key), modes.CBC(self.iv)).encryptor()
        self._plain = 0
        self._header_sent = False
        self._done = False

    def update(self, data: bytes | memoryview) -> bytes:
        """Encrypt the next chunk of plaintext; returns the ciphertext available so far."""
        if self._done:
            raise ValueError("update() after finalize()")
        self._plain += len(data)
        out = self._ctx.update(data)
        if not self._header_sent:
            self._header_sent = True
            return self.iv + out
        return out

    def finalize(self) -> bytes:
        """Pad (PKCS7) and return the last ciphertext blocks."""
        if self._done:
            raise ValueError("finalize() called twice")
        self._done = True
        pad = BLOCK_SIZE - self._plain % BLOCK_SIZE
        out = self._ctx.update(bytes([pad]) * pad) + self._ctx.finalize()
        if not self._header_sent:
            self._header_sent = True
            return self.iv + out
        return out


class Decryptor:
    """Streaming decryption of ``IV || ciphertext`` with a PKCS7 check at the end.

    ``update()`` holds back the last plaintext block, which carries the padding;
    ``finalize()`` validates it and raises :class:`IntegrityError` on a bad
    padding, a length that is not a whole number of blocks, or a missing IV.
    """

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self._key = key
        self._iv = b""
        self._ctx: object | None = None
        self._tail = b""
        self._cipher_len = 0
        self._done = False

    def _after_iv(self, data: bytes | memoryview) -> bytes | memoryview:
        """Take the IV from the stream's first bytes; what follows it (empty until then)."""
        if self._done:
            raise ValueError("update() after finalize()")
        if self._ctx is None:
            need = IV_SIZE - len(self._iv)
            self._iv += bytes(data[:need])
            data = data[need:]
            if len(self._iv) < IV_SIZE:
                return b""
            self._ctx = Cipher(algorithms.AES(self._key), modes.CBC(self._iv)).decryptor()
        return data

    def update(self, data: bytes | memoryview) -> bytes:
        """Decrypt the next chunk of ``IV || ciphertext``; returns plaintext ready so far."""
        data = self._after_iv(data)
        if not data:
            return b""
        self._cipher_len += len(data)
        out = self._ctx.update(data)  # type: ignore[union-attr]
        if not out:
            return b""
        joined = self._tail + out if self._tail else out
        cut = len(joined) - BLOCK_SIZE
        self._tail = joined[cut:]
        return joined[:cut]

    @staticmethod
    def buffer_size(data_size: int) -> int:
        """The smallest ``out`` buffer :meth:`update_into` accepts for ``data_size`` bytes."""
        return data_size + 2 * BLOCK_SIZE

    def update_into(self, data: bytes | memoryview, out: bytearray) -> memoryview:
        """Like :meth:`update`, but decrypts into ``out`` without allocating; returns a view of it.

        ``out`` needs at least :meth:`buffer_size` bytes.  The view is valid
        until ``out`` is reused; only the 16-byte held-back block is copied.
        """
        view = memoryview(out)
        if len(view) < self.buffer_size(len(data)):
            raise ValueError("the output buffer is too small")
        data = self._after_iv(data)
        if not data:
            return view[:0]
        self._cipher_len += len(data)
        # The held-back block goes first, the new plaintext right behind it.
        held = len(self._tail)
        view[:held] = self._tail
        n = self._ctx.update_into(data, view[held:])  # type: ignore[union-attr]
        if not n:
            return view[:0]
        end = held + n
        self._tail = bytes(view[end - BLOCK_SIZE : end])
        return view[: end - BLOCK_SIZE]

    def finalize(self) -> bytes:
        """Check the length and the PKCS7 padding; return the last plaintext bytes."""
        if self._done:
            raise ValueError("finalize() called twice")
        self._done = True
        if self._ctx is None:
            raise IntegrityError("the ciphertext is shorter than its IV: it is truncated")
        if self._cipher_len == 0 or self._cipher_len % BLOCK_SIZE:
            raise IntegrityError(
                "the ciphertext is not a whole number of AES blocks: it is truncated or damaged"
            )
        self._ctx.finalize()  # type: ignore[attr-defined]
        last = self._tail
        pad = last[-1] if last else 0
        bad = not 1 <= pad <= BLOCK_SIZE or last[-pad:] != bytes([pad]) * pad
        if len(last) != BLOCK_SIZE or bad:
            raise IntegrityError("the decrypted data has an invalid padding: wrong key or damaged")
        return last[:-pad]


def encrypt_bytes(key: bytes, plaintext: bytes, iv: bytes | None = None) -> bytes:
    """``IV || AES-256-CBC(key, IV, PKCS7(plaintext))`` in one call (small data only)."""
    enc = Encryptor(key, iv)
    return enc.update(plaintext) + enc.finalize()


def decrypt_bytes(key: bytes, ciphertext: bytes) -> bytes:
    """Inverse of :func:`encrypt_bytes`; raises :class:`IntegrityError` on bad padding."""
    dec = Decryptor(key)
    return dec.update(ciphertext) + dec.finalize()


def iter_chunks(src: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Read ``src`` in chunks until EOF."""
    while True:
        chunk = src.read(chunk_size)
        if not chunk:
            return
        yield chunk


@dataclass(frozen=True)
class StreamResult:
    """What a streaming pass saw: bytes in and out, and SHA-256 hex digests of both."""

    size_in: int
    size_out: int
    sha256_in: str
    sha256_out: str


def _pump(chunks: Iterable[bytes], cipher: Encryptor | Decryptor, dst: BinaryIO) -> StreamResult:
    h_in, h_out = hashlib.sha256(), hashlib.sha256()
    n_in = n_out = 0
    for chunk in chunks:
        h_in.update(chunk)
        n_in += len(chunk)
        out = cipher.update(chunk)
        if out:
            h_out.update(out)
            n_out += len(out)
            dst.write(out)
    out = cipher.finalize()
    h_out.update(out)
    n_out += len(out)
    dst.write(out)
    return StreamResult(n_in, n_out, h_in.hexdigest(), h_out.hexdigest())


def encrypt_stream(
    key: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    iv: bytes | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> StreamResult:
    """Encrypt ``src`` into ``dst`` chunk by chunk; ``sha256_out`` is the digest of ``C``."""
    return _pump(iter_chunks(src, chunk_size), Encryptor(key, iv), dst)


def decrypt_stream(
    key: bytes, src: BinaryIO, dst: BinaryIO, *, chunk_size: int = CHUNK_SIZE
) -> StreamResult:
    """Decrypt ``src`` (``IV || ciphertext``) into ``dst``; ``sha256_in`` is the digest of ``C``.

    The caller must not trust ``dst`` before comparing ``sha256_in`` with the
    expected digest; a bad padding raises :class:`IntegrityError`.
    """
    return _pump(iter_chunks(src, chunk_size), Decryptor(key), dst)


def sha256_bytes(data: bytes) -> str:
    """Lowercase hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = CHUNK_SIZE) -> str:
    """Lowercase hex SHA-256 of a file, read in chunks (see :func:`pipeline.file_sha256`)."""
    return file_sha256(path, chunk_size=chunk_size)[0]


class EncryptingReader:
    """A non-seekable, file-like view of ``C = IV || AES-256-CBC(PKCS7(src))``, built lazily.

    ``read()`` returns ciphertext after the first ``small_size`` bytes, which
    are kept in :attr:`small` instead (the split's small part; 0 for none).
    :attr:`digest` covers all of ``C``.  ``on_plain`` sees each plaintext
    chunk (a view of a reused buffer, valid during the call only), ``on_big``
    each piece of returned ciphertext (e.g. a cache copy), ``progress`` the
    plaintext byte counts.

    With ``segmented``, ``C`` is format 2 instead (:mod:`azaion_loader.segmented`:
    1 MiB segments sealed with AES-256-GCM under ``aad``, a resource's by
    default) and :attr:`digest` covers the
    segments' tags (the record's digest of that format); its pieces are cut
    as below, each joined from the segments and tags it spans (one copy).
    What follows is about format 1.

    The ciphertext after the small part is made in pieces of ``chunk_size``
    bytes (a multiple of the block size; the last piece may be shorter): the
    plaintext is read into one reused buffer, exactly as much as each piece
    needs, and each piece is the ``bytes`` the cipher returns.  A consumer that
    reads ``chunk_size`` bytes at a time (boto3 reads each multipart part so)
    gets each piece as it is, without a copy; other reads are served from a
    buffer.  (With a small part that does not end on a block boundary, only
    in ciphertexts under 10 KiB, the pieces are not aligned and every read
    goes through the buffer.)

    With ``read_ahead`` > 0, reading, encrypting and hashing run in a
    background thread that many pieces ahead of the consumer (``on_plain``
    and ``progress`` are then called from that thread), so CBC encryption,
    which is serial, overlaps the consumer's network sends.  Memory: the
    plaintext buffer, the piece being made, the read-ahead, plus what the
    consumer has not read yet.  Call :meth:`close` when done (it stops the
    thread if the consumer stops early).  The uploads use none: boto3 reads
    each 8 MiB part from the thread that submits the parts, so the encryption
    (~10 ms per part) already overlaps the parts in flight, and a part made
    ahead only held 8 MiB more (peak RSS 160 against 151 MiB, the same CPU;
    docs/benchmarks.md).
    """

    def __init__(
        self,
        src: Any,
        key: bytes,
        *,
        small_size: int = 0,
        iv: bytes | None = None,
        on_plain: Callable[[memoryview], None] | None = None,
        on_big: Callable[[memoryview], None] | None = None,
        progress: Callable[[int], None] | None = None,
        chunk_size: int = CHUNK_SIZE,
        read_ahead: int = 0,
        segmented: bool = False,
        aad: bytes = RESOURCE_AAD,
    ) -> None:
        if chunk_size <= 0 or chunk_size % BLOCK_SIZE:
            raise ValueError(f"chunk_size must be a positive multiple of {BLOCK_SIZE}")
        self._src = src
        self._segments = SegmentEncryptor(key, aad=aad) if segmented else None
        self._enc = Encryptor(key, iv) if self._segments is None else None
        self._small_size = small_size
        self._chunk_size = chunk_size
        self.small = bytearray()
        self.digest = hashlib.sha256()
        self.cipher_size = 0
        self.plain_size = 0
        self._buf = bytearray()
        self._eof = False
        self._on_plain = on_plain
        self._on_big = on_big
        self._progress = progress
        if self._segments is not None:
            self.digest = self._segments.digest
        chunks = self._ciphertext() if self._segments is None else self._sealed()
        self._chunks: Iterator[bytes] = prefetch(chunks, read_ahead) if read_ahead else chunks

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """Always false: the ciphertext is produced once, in order."""
        return False

    def _fill(self, view: memoryview) -> int:
        """Read ``src`` into ``view`` until it is full or ``src`` ends; the bytes read."""
        got = 0
        readinto = getattr(self._src, "readinto", None)
        while got < len(view):
            if readinto is not None:
                n = readinto(view[got:])
            else:
                data = self._src.read(len(view) - got)
                n = len(data)
                view[got : got + n] = data
            if not n:
                break
            got += n
        return got

    def _ciphertext(self) -> Iterator[bytes]:
        """Read, encrypt and hash ``src``; yields the ciphertext piece by piece.

        The first piece ends where the small part ends (without one, where a
        piece would): with the IV in front, its plaintext is ``IV_SIZE``
        bytes shorter.  Then each piece is ``chunk_size`` bytes: whole blocks
        in, as many out.
        """
        assert self._enc is not None  # format 1 only
        buf = bytearray(self._chunk_size)
        view = memoryview(buf)
        first = (self._small_size or self._chunk_size) - IV_SIZE
        want = first if 0 < first <= self._chunk_size and first % BLOCK_SIZE == 0 else len(view)
        while True:
            n = self._fill(view[:want])
            out = b""
            if n:
                data = view[:n]
                self.plain_size += n
                if self._on_plain is not None:
                    self._on_plain(data)
                out = self._enc.update(data)
                if self._progress is not None:
                    self._progress(n)
            if n < want:  # the end: the padded last blocks join the last piece
                last = self._enc.finalize()
                out = out + last if out else last
            if out:
                self.digest.update(out)
                self.cipher_size += len(out)
                yield out
            if n < want:
                return
            want = len(view)

    def _sealed(self) -> Iterator[bytes]:
        """Format 2 (:mod:`azaion_loader.segmented`) in pieces cut like format 1's.

        The first piece ends where the small part ends, then each is
        ``chunk_size`` bytes, so that a consumer reading ``chunk_size`` at a
        time gets each piece as it is; each is joined from the segments and
        tags it spans (one copy).
        """
        assert self._segments is not None

        def seen(plain: memoryview) -> None:
            self.plain_size += len(plain)
            if self._on_plain is not None:
                self._on_plain(plain)
            if self._progress is not None:
                self._progress(len(plain))

        want = self._small_size or self._chunk_size
        held: list[memoryview] = []
        held_size = 0
        for sealed in self._segments.pieces(self._fill, on_plain=seen):
            view = memoryview(sealed)
            while view:
                take = view[: want - held_size]
                held.append(take)
                held_size += len(take)
                view = view[len(take) :]
                if held_size == want:
                    yield self._count(b"".join(held))
                    held, held_size, want = [], 0, self._chunk_size
        if held:
            yield self._count(b"".join(held))

    def _count(self, piece: bytes) -> bytes:
        self.cipher_size += len(piece)
        return piece

    def _next_piece(self) -> bytes | memoryview | None:
        """The next piece of the big part (empty when it all went to the small part);
        ``None`` at the end."""
        out = next(self._chunks, None)
        if out is None:
            self._eof = True
            return None
        piece: bytes | memoryview = out
        need = self._small_size - len(self.small)
        if need > 0:
            view = memoryview(out)
            self.small += view[:need]
            piece = view[need:]
        if piece and self._on_big is not None:
            self._on_big(memoryview(piece))
        return piece

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of ciphertext (all the rest if negative); ``b""`` at the end."""
        if size > 0 and not self._buf:
            piece = self._next_piece()
            while piece is not None and not piece:
                piece = self._next_piece()
            if piece is None:
                return b""
            if len(piece) == size and isinstance(piece, bytes):
                return piece  # a whole piece, as the cipher made it: no copy
            self._buf += piece
        while not self._eof and (size < 0 or len(self._buf) < size):
            piece = self._next_piece()
            if piece:
                self._buf += piece
        if size < 0 or size >= len(self._buf):
            data = bytes(self._buf)
            self._buf.clear()
            return data
        with memoryview(self._buf) as view:
            data = bytes(view[:size])  # one copy, not a bytearray slice and then bytes
        del self._buf[:size]
        return data

    def close(self) -> None:
        """Stop the read-ahead thread, if any (the source is not closed)."""
        close = getattr(self._chunks, "close", None)
        if callable(close):
            close()
