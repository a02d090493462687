"""Plain data exchanged with the API and reported by the commands.

Secret fields (keys, fragments, secret access keys) are left out of ``repr``.
Parsers raise :class:`~azaion_loader.errors.ProtocolError` on documents that
break docs/protocol.md.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from azaion_loader.errors import ProtocolError

__all__ = [
    "FORMAT_CBC",
    "FORMAT_SEGMENTED",
    "CdnConfig",
    "CdnKeys",
    "FetchResult",
    "KeyFragment",
    "ResourceRecord",
    "UnlockFetchResult",
    "UnlockLoadResult",
    "UploadResult",
    "b64decode",
    "b64encode",
]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
FORMAT_CBC = 1
"""Format 1 (resources, archives): ``IV || AES-256-CBC(PKCS7(P))``, checked by SHA-256 of it."""
FORMAT_SEGMENTED = 2
"""Format 2 (resources, archives): 1 MiB segments sealed with AES-256-GCM
(:mod:`azaion_loader.segmented`), checked by the digest of the segments' tags."""
# The formats this loader reads, of resources (docs/protocol.md §5) and archives (§6).
_FORMATS = (FORMAT_CBC, FORMAT_SEGMENTED)


def b64encode(data: bytes) -> str:
    """Standard base64 with padding, as text."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object, what: str) -> bytes:
    """Decode standard base64 or raise :class:`ProtocolError` naming ``what``."""
    if not isinstance(text, str):
        raise ProtocolError(f"`{what}` is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"`{what}` is not valid base64") from exc


def _get(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError(f"the {what} has no valid `{key}`")
    return value


def _digest(doc: Mapping[str, Any], key: str, what: str) -> str:
    value = _get(doc, key, str, what).lower()
    if not _HEX64.match(value):
        raise ProtocolError(f"the {what} has no valid `{key}` (64 hex digits)")
    return str(value)


def _optional_digest(doc: Mapping[str, Any], key: str, what: str) -> str | None:
    return None if doc.get(key) is None else _digest(doc, key, what)


def _format(doc: Mapping[str, Any], what: str) -> int:
    # Absent or null is format 1: envelopes of servers that predate format 2.
    if doc.get("format") is None:
        return FORMAT_CBC
    value = _get(doc, "format", int, what)
    if value not in _FORMATS:
        # A newer format read as an older one would fail its digest; say why instead.
        raise ProtocolError(f"{what}: format {value} is not known to this loader; upgrade it")
    return int(value)


@dataclass(frozen=True)
class CdnKeys:
    """One S3 key pair."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class CdnConfig:
    """The CDN settings the API hands out (docs/protocol.md §4)."""

    endpoint_url: str
    region: str
    read: CdnKeys
    write: CdnKeys | None = None

    @classmethod
    def from_dict(cls, doc: Any) -> CdnConfig:
        """Parse the decrypted ``cdn-config`` envelope."""
        if not isinstance(doc, Mapping):
            raise ProtocolError("the CDN config is not a JSON object")

        def keys(value: Any) -> CdnKeys:
            if not isinstance(value, Mapping):
                raise ProtocolError("the CDN config has an invalid key pair")
            return CdnKeys(
                _get(value, "access_key_id", str, "CDN key pair"),
                _get(value, "secret_access_key", str, "CDN key pair"),
            )

        write = doc.get("write")
        return cls(
            endpoint_url=_get(doc, "endpoint_url", str, "CDN config"),
            region=str(doc.get("region") or "us-east-1"),
            read=keys(doc.get("read")),
            write=None if write is None else keys(write),
        )


@dataclass(frozen=True)
class ResourceRecord:
    """The decrypted ``resource`` envelope: everything but the big part.

    ``plain_sha256`` is the plaintext's digest registered at upload, or
    ``None`` for records registered without it (docs/protocol.md §5).
    ``format`` is the resource format: 1 (AES-256-CBC, ``sha256`` = SHA-256 of
    the ciphertext) or 2 (segmented AES-256-GCM, ``sha256`` = the digest D of
    the segment tags).
    """

    folder: str
    name: str
    version: str
    small: bytes = field(repr=False)
    key: bytes = field(repr=False)
    sha256: str
    size: int
    plain_size: int
    big_key: str
    plain_sha256: str | None = None
    format: int = FORMAT_CBC

    @property
    def big_size(self) -> int:
        """Bytes expected in the big part."""
        return self.size - len(self.small)

    @classmethod
    def from_dict(cls, doc: Any) -> ResourceRecord:
        """Parse and sanity-check the envelope's plaintext."""
        what = "resource record"
        if not isinstance(doc, Mapping):
            raise ProtocolError(f"the {what} is not a JSON object")
        # First: a newer format may lay out the other fields differently.
        fmt = _format(doc, what)
        rec = cls(
            folder=_get(doc, "folder", str, what),
            name=_get(doc, "name", str, what),
            version=str(_get(doc, "version", (str, int), what)),
            small=b64decode(doc.get("small"), "small"),
            key=b64decode(doc.get("key"), "key"),
            sha256=_digest(doc, "sha256", what),
            size=_get(doc, "size", int, what),
            plain_size=_get(doc, "plain_size", int, what),
            big_key=str(doc.get("big_key") or f"{doc.get('name')}.big"),
            plain_sha256=_optional_digest(doc, "plain_sha256", what),
            format=fmt,
        )
        if len(rec.key) != 32:
            raise ProtocolError("the resource key is not 32 bytes")
        if rec.size < len(rec.small) or rec.plain_size < 0:
            raise ProtocolError("the resource record has inconsistent sizes")
        return rec


@dataclass(frozen=True)
class KeyFragment:
    """The decrypted ``key-fragment`` envelope; also the ``fragment.json`` of unlock-fetch.

    ``format`` is the archive format: 1 (AES-256-CBC, ``sha256`` = SHA-256 of
    the ciphertext) or 2 (segmented AES-256-GCM, ``sha256`` = the digest D of
    the segment tags).
    """

    folder: str
    name: str
    version: str
    fragment: bytes = field(repr=False)
    sha256: str
    size: int
    images: tuple[str, ...] = ()
    object_key: str = ""
    format: int = FORMAT_CBC

    @classmethod
    def from_dict(cls, doc: Any) -> KeyFragment:
        """Parse the envelope's plaintext (or a ``fragment.json``)."""
        what = "key fragment"
        if not isinstance(doc, Mapping):
            raise ProtocolError(f"the {what} is not a JSON object")
        # First: a newer format may lay out the other fields differently.
        fmt = _format(doc, what)
        images = doc.get("images") or []
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise ProtocolError(f"the {what} has no valid `images`")
        frag = cls(
            folder=str(doc.get("folder") or ""),
            name=str(doc.get("name") or ""),
            version=str(_get(doc, "version", (str, int), what)),
            fragment=b64decode(doc.get("fragment"), "fragment"),
            sha256=_digest(doc, "sha256", what),
            size=_get(doc, "size", int, what),
            images=tuple(images),
            object_key=str(doc.get("object_key") or f"{doc.get('name')}.enc"),
            format=fmt,
        )
        if not frag.fragment:
            raise ProtocolError("the key fragment is empty")
        return frag

    def to_dict(self) -> dict[str, Any]:
        """The ``fragment.json`` document (contains the secret fragment).

        ``format`` only when it is not 1, so a format-1 file is as before format 2.
        """
        doc: dict[str, Any] = {
            "folder": self.folder,
            "name": self.name,
            "version": self.version,
            "fragment": b64encode(self.fragment),
            "sha256": self.sha256,
            "size": self.size,
            "images": list(self.images),
            "object_key": self.object_key,
        }
        if self.format != FORMAT_CBC:
            doc["format"] = self.format
        return doc


@dataclass(frozen=True)
class FetchResult:
    """Outcome of ``loader fetch``; ``sha256`` is the plaintext's digest.

    That digest is the one registered at upload when the record carries it
    (``loader verify`` then checks the file against it), else computed while
    decrypting.
    """

    path: str
    size: int
    sha256: str
    version: str
    cache: str
    """``off`` (no cache dir), ``hit``, ``miss`` or ``stale-refreshed``."""


@dataclass(frozen=True)
class UploadResult:
    """Outcome of ``loader upload`` / ``upload-archive``; ``sha256`` is the ciphertext's.

    ``plain_sha256`` is the plaintext's (registered with resources; empty for archives).
    """

    folder: str
    name: str
    version: str
    size: int
    sha256: str
    plain_size: int
    images: tuple[str, ...] = ()
    plain_sha256: str = ""


@dataclass(frozen=True)
class UnlockFetchResult:
    """Outcome of ``loader unlock-fetch``; ``sha256`` is the encrypted archive's."""

    workdir: str
    version: str
    size: int
    sha256: str


@dataclass(frozen=True)
class UnlockLoadResult:
    """Outcome of ``loader unlock-load`` / ``unlock``."""

    images: tuple[str, ...]
    sha256: str
    version: str
    images_source: str
    """Where the expected images came from: ``argument``, ``manifest`` or ``api``."""
    runtime: str = "docker"
    """The engine the images were loaded into: ``docker`` or ``containerd``."""
