"""``manifest.json`` of a ``docker save`` tar: from a stream, or from the encrypted archive.

:class:`TarManifestScanner` watches a plaintext stream go by (the load step
feeds it what it feeds the engine).  :func:`sealed_repo_tags` reads the
manifest straight from ``IV || AES-256-CBC(tar)`` before anything is loaded:
CBC decrypts any block given the ciphertext block before it, so only the tar
headers (512 bytes each) and the manifest itself are decrypted, a few
kilobytes however large the archive.  :func:`disallowed_tags` is the rule
that decides whether an archive may be loaded at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from azaion_loader.crypto import IV_SIZE
from azaion_loader.engine import normalize_reference
from azaion_loader.errors import IntegrityError

__all__ = ["TarManifestScanner", "disallowed_tags", "repo_tags", "sealed_repo_tags"]

_BLOCK = 16
_TAR_BLOCK = 512
_SMALL_MEMBER_LIMIT = 4 * 1024 * 1024


def repo_tags(manifest: bytes | None) -> list[str]:
    """The ``RepoTags`` of every image in a ``manifest.json`` (empty if none or unreadable)."""
    if manifest is None:
        return []
    try:
        doc = json.loads(manifest)
    except ValueError:
        return []
    tags: list[str] = []
    if isinstance(doc, list):
        for entry in doc:
            if isinstance(entry, dict):
                for tag in entry.get("RepoTags") or []:
                    if isinstance(tag, str) and tag not in tags:
                        tags.append(tag)
    return tags


class TarManifestScanner:
    """Finds ``manifest.json`` in a tar stream fed chunk by chunk, without buffering it.

    Only headers (512 bytes) and the few small members of interest (the
    manifest, GNU long names, pax headers) are copied; file data is skipped
    by arithmetic.  :attr:`valid` turns false at the first bad header.
    """

    _CAPTURE_LIMIT = 4 * 1024 * 1024

    def __init__(self) -> None:
        self.valid = True
        self.manifest: bytes | None = None
        self.members = 0
        self._header = bytearray()
        self._remaining = 0  # data bytes of the current member still to come
        self._padding = 0
        self._capture: bytearray | None = None
        self._capture_kind = ""
        self._long_name: str | None = None
        self._pax_path: str | None = None
        self._end = False

    @property
    def repo_tags(self) -> list[str]:
        """The ``RepoTags`` of every image in ``manifest.json`` (empty if none found)."""
        return repo_tags(self.manifest)

    def feed(self, data: bytes | memoryview) -> None:
        """Consume the next bytes of the tar stream."""
        view = memoryview(data)
        while view and self.valid and not self._end:
            if self._remaining:
                n = min(self._remaining, len(view))
                if self._capture is not None and len(self._capture) < self._CAPTURE_LIMIT:
                    self._capture += view[:n]
                self._remaining -= n
                view = view[n:]
                if not self._remaining:
                    self._member_done()
                continue
            if self._padding:
                n = min(self._padding, len(view))
                self._padding -= n
                view = view[n:]
                continue
            n = min(512 - len(self._header), len(view))
            self._header += view[:n]
            view = view[n:]
            if len(self._header) == 512:
                header = bytes(self._header)
                self._header.clear()
                self._on_header(header)

    def _on_header(self, header: bytes) -> None:
        if header == b"\0" * 512:
            self._end = True
            return
        if not _checksum_ok(header):
            self.valid = False
            return
        size = _octal(header[124:136])
        if size is None:
            self.valid = False
            return
        kind = header[156:157]
        name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
            if prefix:
                name = f"{prefix}/{name}"
        if kind in (b"L", b"x"):
            self._capture_kind = kind.decode()
        else:
            self.members += 1
            if self._long_name is not None:
                name = self._long_name
            if self._pax_path is not None:
                name = self._pax_path
            self._long_name = self._pax_path = None
            self._capture_kind = "manifest" if name.lstrip("./") == "manifest.json" else ""
        self._capture = bytearray() if self._capture_kind else None
        self._remaining = size
        self._padding = (-size) % 512
        if not size:
            self._member_done()

    def _member_done(self) -> None:
        data = bytes(self._capture) if self._capture is not None else b""
        if self._capture_kind == "manifest":
            self.manifest = data
        elif self._capture_kind == "L":
            self._long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif self._capture_kind == "x":
            for record in data.decode("utf-8", "replace").split("\n"):
                _, _, kv = record.partition(" ")
                key, _, value = kv.partition("=")
                if key == "path":
                    self._pax_path = value
        self._capture = None
        self._capture_kind = ""


def _octal(field: bytes) -> int | None:
    if field and field[0] & 0x80:  # base-256 for large sizes
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def _checksum_ok(header: bytes) -> bool:
    stored = _octal(header[148:156])
    if stored is None:
        return False
    computed = sum(header[:148]) + 32 * 8 + sum(header[156:])
    return stored == computed


class _SealedPlaintext:
    """Random access to the plaintext of ``IV || AES-256-CBC(plaintext)`` in a file."""

    def __init__(self, fd: int, key: bytes, cipher_size: int) -> None:
        self._fd, self._key = fd, key
        self.limit = cipher_size - IV_SIZE  # plaintext plus its padding

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.limit)
        if offset >= end:
            return b""
        first, last = offset // _BLOCK, -(-end // _BLOCK)
        # The block before the first one is the CBC input of the first (the IV for block 0).
        raw = os.pread(self._fd, (last - first + 1) * _BLOCK, first * _BLOCK)
        if len(raw) != (last - first + 1) * _BLOCK:
            raise IntegrityError("the encrypted archive ends inside a cipher block")
        context = Cipher(algorithms.AES(self._key), modes.CBC(raw[:_BLOCK])).decryptor()
        plain = context.update(raw[_BLOCK:]) + context.finalize()
        start = offset - first * _BLOCK
        return plain[start : start + end - offset]


def sealed_repo_tags(path: str | os.PathLike[str], key: bytes) -> list[str] | None:
    """The ``RepoTags`` in the encrypted archive's ``manifest.json``; ``None`` if it has none.

    Reads only the tar headers and the few small members that name things (GNU
    long names, pax headers, the manifest).  Call it on an archive whose
    digest has been checked: the names are then the publisher's.
    """
    fd = os.open(Path(path), os.O_RDONLY)
    try:
        sealed = _SealedPlaintext(fd, key, os.fstat(fd).st_size)
        offset, long_name, pax_path = 0, None, None
        while offset + _TAR_BLOCK <= sealed.limit:
            header = sealed.read(offset, _TAR_BLOCK)
            if header == bytes(_TAR_BLOCK) or not _checksum_ok(header):
                return None  # the end of the archive came first, or this is not a tar
            size = _octal(header[124:136])
            if size is None:
                return None
            kind, data = header[156:157], offset + _TAR_BLOCK
            if kind == b"L":  # GNU long name of the next member
                raw = sealed.read(data, min(size, _SMALL_MEMBER_LIMIT))
                long_name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            elif kind == b"x":  # pax header of the next member
                pax_path = _pax_path(sealed.read(data, min(size, _SMALL_MEMBER_LIMIT)))
            else:
                name = pax_path or long_name or _header_name(header)
                if name.lstrip("./") == "manifest.json":
                    return repo_tags(sealed.read(data, min(size, _SMALL_MEMBER_LIMIT)))
                long_name = pax_path = None
            offset = data + size + (-size) % _TAR_BLOCK
        return None
    finally:
        os.close(fd)


def _header_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
        if prefix:
            name = f"{prefix}/{name}"
    return name


def _pax_path(data: bytes) -> str | None:
    for record in data.decode("utf-8", "replace").split("\n"):
        _, _, kv = record.partition(" ")
        key, _, value = kv.partition("=")
        if key == "path":
            return value
    return None


def _repository(ref: str) -> str:
    """``docker.io/library/app`` of ``app:1.0`` (normalised, without tag or digest)."""
    name = normalize_reference(ref).split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rindex(":")]
    return name


def disallowed_tags(
    tags: Sequence[str],
    *,
    requested: Sequence[str] = (),
    registered: Sequence[str] = (),
    forbidden_repositories: Sequence[str] = (),
) -> list[str]:
    """The archive's tags that may not be loaded, each with the rule it breaks.

    A tag must be among ``requested`` (the caller's ``--images``) when there
    are any, among ``registered`` (what the API recorded at publish time) when
    there are any, and must not name a repository of ``forbidden_repositories``
    (the operator's own image: an archive may not replace the Jobs' image).
    """
    wanted = {normalize_reference(r) for r in requested}
    recorded = {normalize_reference(r) for r in registered}
    forbidden = {_repository(r) for r in forbidden_repositories}
    refused: list[str] = []
    for tag in tags:
        name = normalize_reference(tag)
        if _repository(tag) in forbidden:
            refused.append(f"{tag} (the Jobs' own image repository)")
        elif wanted and name not in wanted:
            refused.append(f"{tag} (not in the expected images)")
        elif recorded and name not in recorded:
            refused.append(f"{tag} (not registered with the API)")
    return refused
