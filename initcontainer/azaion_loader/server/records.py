"""The server's records: plain dataclasses with JSON round trips."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ROLES", "UPLOAD_ROLES", "ArchiveVersion", "ResourceVersion", "User"]

ROLES = ("user", "uploader", "admin")
UPLOAD_ROLES = frozenset({"uploader", "admin"})


@dataclass
class User:
    """A registered user.  ``user_key`` is base64 of K_user (protocol §3), never the password."""

    id: str
    email: str
    role: str
    password_hash: str
    user_key: str
    max_devices: int
    devices: list[str] = field(default_factory=list)
    token_epoch: int = 0
    """Raised at each password change; tokens carry it (claim ``gen``) and older ones fail."""

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored on disk."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> User:
        """The inverse of ``to_json``."""
        return cls(**data)


@dataclass(frozen=True)
class ResourceVersion:
    """One version of a split resource: what the API keeps (protocol §5).

    ``plain_sha256`` is ``None`` for versions registered without it (older clients).
    ``format`` is the resource format, 1 (AES-256-CBC) or 2 (segmented AES-256-GCM);
    versions stored before format 2 existed have none and read as 1.
    """

    version: str
    small: str
    key: str
    sha256: str
    size: int
    plain_size: int
    created: float = 0.0
    plain_sha256: str | None = None
    format: int = 1

    def same_content(self, other: ResourceVersion) -> bool:
        """Whether ``other`` carries the same content (``created`` aside)."""
        fields = ("small", "key", "sha256", "size", "plain_size", "plain_sha256", "format")
        return all(getattr(self, f) == getattr(other, f) for f in fields)

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored on disk (``format`` only when it is not 1)."""
        data = asdict(self)
        # Format-1 versions are stored as before, so a server that predates
        # format 2 still reads the state files.
        if self.format == 1:
            del data["format"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResourceVersion:
        """The inverse of ``to_json``."""
        return cls(**data)


@dataclass(frozen=True)
class ArchiveVersion:
    """One version of an encrypted image archive (protocol §6).

    ``format`` is the archive format, 1 (AES-256-CBC) or 2 (segmented
    AES-256-GCM); versions stored before format 2 existed have none and read as 1.
    """

    version: str
    fragment: str
    sha256: str
    size: int
    images: tuple[str, ...]
    created: float = 0.0
    format: int = 1

    def same_content(self, other: ArchiveVersion) -> bool:
        """Whether ``other`` carries the same content (``created`` aside)."""
        return (self.fragment, self.sha256, self.size, self.images, self.format) == (
            other.fragment,
            other.sha256,
            other.size,
            other.images,
            other.format,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored on disk (``format`` only when it is not 1)."""
        data = asdict(self)
        data["images"] = list(self.images)
        if self.format == 1:  # as before format 2, for servers that predate it
            del data["format"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArchiveVersion:
        """The inverse of ``to_json``."""
        return cls(**{**data, "images": tuple(data["images"])})
