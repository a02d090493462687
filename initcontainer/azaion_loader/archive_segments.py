"""Archive format 2 (docs/protocol.md §6): the checks of an unlock's three passes.

``E`` is the format-2 segment stream (:mod:`azaion_loader.segmented`) of the
whole ``docker save`` tar under the archive key, with the archives' own AAD;
the record's ``sha256`` is the digest D of the segment tags.

- :class:`FetchCheck`: ``unlock-fetch`` opens every segment as it downloads
  (the plaintext is dropped) and compares D at the end.
- :func:`verify_file`: ``unlock-load``'s first pass over ``archive.enc``,
  before the engine gets a byte: every segment opened, D compared, and the
  plaintext fed to a :class:`~azaion_loader.tar_manifest.TarManifestScanner`
  so the tags come out of the same pass.
- :func:`decrypted`: the load pass, a fresh decryption of the file (it may
  have changed since), each segment checked before it is handed on.

Each raises :class:`~azaion_loader.errors.IntegrityError`.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from azaion_loader.crypto import CHUNK_SIZE
from azaion_loader.errors import IntegrityError
from azaion_loader.pipeline import HASH_CHUNK, BufferRing
from azaion_loader.segmented import ARCHIVE_AAD, SegmentDecryptor
from azaion_loader.tar_manifest import TarManifestScanner, repo_tags

__all__ = ["FetchCheck", "Verified", "decrypted", "verify_file"]


def _decryptor(key: bytes, size: int, source: str) -> SegmentDecryptor:
    return SegmentDecryptor(key, size, source=source, aad=ARCHIVE_AAD)


def _discard_ring() -> BufferRing:
    # The plaintext is used (or dropped) before the next segment is opened.
    return BufferRing(2, SegmentDecryptor.buffer_size)


def _check_digest(digest: str, expected: str, what: str) -> None:
    if not hmac.compare_digest(digest, expected):
        raise IntegrityError(f"the digest of {what} does not match the digest from the API")


class FetchCheck:
    """Opens a format-2 archive fed chunk by chunk as it downloads; :meth:`finish` checks D."""

    def __init__(self, key: bytes, size: int, sha256: str, *, source: str, what: str) -> None:
        self._dec = _decryptor(key, size, source)
        self._ring = _discard_ring()
        self._sha256 = sha256
        self._what = what

    def feed(self, chunk: bytes | memoryview) -> None:
        """Open the segments ``chunk`` completes (their plaintext is dropped)."""
        for _ in self._dec.feed(chunk, self._ring):
            pass

    def finish(self) -> None:
        """:class:`IntegrityError` unless every segment was there and D matches."""
        _check_digest(self._dec.finish(), self._sha256, self._what)


@dataclass(frozen=True)
class Verified:
    """What :func:`verify_file` found: D, the bytes read, and the manifest's tags."""

    sha256: str
    size: int
    tags: list[str] | None
    """The ``RepoTags`` in ``manifest.json``; ``None`` if the tar has none."""


def verify_file(path: str | os.PathLike[str], key: bytes, size: int, sha256: str) -> Verified:
    """Open every segment of ``path`` and compare D; the tags come from the same pass."""
    source = os.fspath(path)
    dec = _decryptor(key, size, source)
    ring = _discard_ring()
    scanner = TarManifestScanner()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    read = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            read += n
            for plain in dec.feed(view[:n], ring):
                if scanner.manifest is None and scanner.valid:
                    scanner.feed(plain)
    digest = dec.finish()
    _check_digest(digest, sha256, source)
    tags = repo_tags(scanner.manifest) if scanner.manifest is not None else None
    return Verified(digest, read, tags)


def decrypted(
    path: str | os.PathLike[str],
    key: bytes,
    size: int,
    sha256: str,
    progress: Callable[[int], object],
    ring: BufferRing,
) -> Iterator[memoryview]:
    """The plaintext of ``path``, segment by segment, each checked, in ``ring``'s buffers.

    A segment that fails (the file changed since it was verified), a file of
    another length or another D raise :class:`IntegrityError` before the
    iteration ends, so a consumer never sees the end of a stream that failed.
    """
    source = os.fspath(path)
    dec = _decryptor(key, size, source)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK_SIZE):
            yield from dec.feed(chunk, ring)
            progress(len(chunk))
    _check_digest(dec.finish(), sha256, source)
