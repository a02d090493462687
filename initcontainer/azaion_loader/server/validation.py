"""Checks of request bodies, path parameters and headers (docs/protocol.md §5, §6).

Pure functions: each returns a typed value or raises ``BadRequest`` with a
message naming the field (never its value, which may be secret).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from azaion_loader.server.failures import BadRequest
from azaion_loader.server.records import ROLES, ArchiveVersion, ResourceVersion

__all__ = [
    "RESOURCE_FORMATS",
    "SEGMENT_SIZE",
    "SMALL_PART_MAX",
    "check_fingerprint",
    "check_folder",
    "check_name",
    "check_version",
    "parse_archive_put",
    "parse_cdn_config",
    "parse_credentials",
    "parse_password_put",
    "parse_resource_put",
    "parse_user_put",
    "resource_size",
    "segmented_size_possible",
    "small_part_size",
]

SMALL_PART_MAX = 3072
RESOURCE_FORMATS = (1, 2)
SEGMENT_SIZE = 1 << 20
"""Plaintext bytes per AES-256-GCM segment of format 2 (the last one may be shorter)."""
_FOLDER = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")
_VERSION = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")


def small_part_size(size: int) -> int:
    """The split point ``s = min(3072, floor(size * 3 / 10))`` for a ciphertext of ``size``."""
    return min(SMALL_PART_MAX, size * 3 // 10)


def resource_size(plain_size: int, fmt: int) -> int:
    """``len(C)`` for a plaintext of ``plain_size`` bytes in resource format ``fmt``.

    Format 1: IV + CBC blocks with PKCS7 padding, ``16 + 16 * (floor(n / 16) + 1)``.
    Format 2: a 16-byte tag per segment, ``n + 16 * max(1, ceil(n / SEGMENT_SIZE))``.
    """
    if fmt == 2:
        return plain_size + 16 * max(1, -(-plain_size // SEGMENT_SIZE))
    return 16 + 16 * (plain_size // 16 + 1)


def segmented_size_possible(size: int) -> bool:
    """Whether some plaintext has a format-2 ciphertext of ``size`` bytes."""
    count = max(1, -(-size // (SEGMENT_SIZE + 16)))
    plain_size = size - 16 * count
    return plain_size >= 0 and resource_size(plain_size, 2) == size


def check_folder(folder: str) -> str:
    """A folder is an S3 bucket name: 3-63 of ``a-z 0-9 . -``, alphanumeric at both ends."""
    if not _FOLDER.match(folder) or ".." in folder:
        raise BadRequest("folder must be a valid S3 bucket name (3-63 chars: a-z 0-9 . -)")
    return folder


def check_name(name: str) -> str:
    """A name: 1-200 of ``A-Z a-z 0-9 . _ -``, not starting with a dot."""
    if not _NAME.match(name):
        raise BadRequest("name must be 1-200 chars of A-Z a-z 0-9 . _ - not starting with '.'")
    return name


def check_version(version: object) -> str:
    """A version: 1-128 of ``A-Z a-z 0-9 . _ -``, not starting with a dot."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise BadRequest("version must be 1-128 chars of A-Z a-z 0-9 . _ - not starting with '.'")
    return version


def check_fingerprint(value: str | None) -> str:
    """The ``X-Hardware-Fingerprint`` header: 64 lowercase hex digits."""
    if value is None:
        raise BadRequest("the X-Hardware-Fingerprint header is required")
    if not _HEX64.match(value):
        raise BadRequest("X-Hardware-Fingerprint must be 64 lowercase hex digits")
    return value


def _object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _b64(body: dict[str, Any], field: str) -> bytes:
    value = body.get(field)
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field} is not valid base64") from None


def _int(body: dict[str, Any], field: str, minimum: int) -> int:
    value = body.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadRequest(f"{field} must be an integer >= {minimum}")
    return value


def _hex64(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not _HEX64.match(value):
        raise BadRequest(f"{field} must be 64 lowercase hex digits")
    return value


def _optional_hex64(body: dict[str, Any], field: str) -> str | None:
    return None if body.get(field) is None else _hex64(body, field)


def _str(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{field} must be a non-empty string")
    return value


def _cbc_size(body: dict[str, Any]) -> int:
    size = _int(body, "size", 32)
    if (size - 16) % 16:
        raise BadRequest("size must be 16 (IV) plus a multiple of 16 (AES-CBC blocks)")
    return size


def _version_or_default(body: dict[str, Any], digest: str) -> str:
    if body.get("version") is None:
        return digest[:16]
    return check_version(body["version"])


def _format(body: dict[str, Any]) -> int:
    """``format`` of a resource or archive body (the same two formats, the same rule)."""
    value = body.get("format")
    if value is None:  # bodies of clients that predate format 2
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or value not in RESOURCE_FORMATS:
        raise BadRequest("format must be 1 or 2 (absent or null: 1)")
    return value


def _archive_size(body: dict[str, Any], fmt: int) -> int:
    """``size`` of an archive, checked against format ``fmt`` (no plaintext size is sent)."""
    if fmt == 1:
        return _cbc_size(body)
    size = _int(body, "size", 16)
    if not segmented_size_possible(size):
        raise BadRequest(
            "size is not a possible format-2 length"
            " (plain_size + 16 * max(1, ceil(plain_size / 1048576)) for some plain_size)"
        )
    return size


def _resource_sizes(body: dict[str, Any], fmt: int) -> tuple[int, int]:
    """``size`` and ``plain_size``, checked against each other for format ``fmt``."""
    if fmt == 1:
        size = _cbc_size(body)
        plain_size = _int(body, "plain_size", 0)
        if size != resource_size(plain_size, 1):
            raise BadRequest(
                "size does not match plain_size (size = 16 + 16 * (plain_size // 16 + 1))"
            )
        return size, plain_size
    size = _int(body, "size", 16)
    plain_size = _int(body, "plain_size", 0)
    if size != resource_size(plain_size, 2):
        raise BadRequest(
            "size does not match plain_size for format 2"
            " (size = plain_size + 16 * max(1, ceil(plain_size / 1048576)))"
        )
    return size, plain_size


def parse_resource_put(body: object, *, created: float) -> ResourceVersion:
    """The body of ``PUT /resources/{folder}/{name}`` as a record."""
    data = _object(body)
    # First: the size rule depends on it.
    fmt = _format(data)
    digest = _hex64(data, "sha256")
    size, plain_size = _resource_sizes(data, fmt)
    small = _b64(data, "small")
    if len(small) != small_part_size(size):
        raise BadRequest("small must be the first min(3072, floor(size * 3 / 10)) bytes")
    if len(_b64(data, "key")) != 32:
        raise BadRequest("key must be 32 bytes")
    return ResourceVersion(
        version=_version_or_default(data, digest),
        small=data["small"],
        key=data["key"],
        sha256=digest,
        size=size,
        plain_size=plain_size,
        created=created,
        plain_sha256=_optional_hex64(data, "plain_sha256"),
        format=fmt,
    )


def parse_archive_put(body: object, *, created: float) -> ArchiveVersion:
    """The body of ``PUT /archives/{folder}/{name}`` as a record."""
    data = _object(body)
    # First: the size rule depends on it.
    fmt = _format(data)
    digest = _hex64(data, "sha256")
    size = _archive_size(data, fmt)
    if len(_b64(data, "fragment")) != 32:
        raise BadRequest("fragment must be 32 bytes")
    images = data.get("images", [])
    if not isinstance(images, list) or not all(
        isinstance(i, str) and _IMAGE.match(i) for i in images
    ):
        raise BadRequest("images must be a list of image references such as repo:tag")
    return ArchiveVersion(
        version=_version_or_default(data, digest),
        fragment=data["fragment"],
        sha256=digest,
        size=size,
        images=tuple(images),
        created=created,
        format=fmt,
    )


def parse_credentials(body: object) -> tuple[str, str]:
    """``{"email", "password"}`` of ``POST /login``."""
    data = _object(body)
    return _str(data, "email").strip().lower(), _str(data, "password")


def parse_password_put(body: object) -> str:
    """``{"password"}`` of ``PUT /users/{email}/password``."""
    return _str(_object(body), "password")


def parse_user_put(body: object) -> tuple[str, str, str, int]:
    """``{"email", "password", "role", "max_devices"}`` of ``POST /users``."""
    data = _object(body)
    email, password = parse_credentials(data)
    if "@" not in email or any(c.isspace() for c in email):
        raise BadRequest("email must be an email address")
    role = data.get("role", "user")
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}")
    max_devices = _int(data, "max_devices", 1) if "max_devices" in data else 1
    return email, password, role, max_devices


def _key_pair(value: object, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadRequest(f"{field} must be an object with access_key_id and secret_access_key")
    return {
        "access_key_id": _str(value, "access_key_id"),
        "secret_access_key": _str(value, "secret_access_key"),
    }


def parse_cdn_config(body: object) -> dict[str, Any]:
    """The CDN settings (protocol §4) as stored: endpoint, region, read and write pairs."""
    data = _object(body)
    endpoint = _str(data, "endpoint_url")
    if not endpoint.startswith(("http://", "https://")):
        raise BadRequest("endpoint_url must be an http(s) URL")
    write = data.get("write")
    return {
        "endpoint_url": endpoint,
        "region": _str(data, "region") if "region" in data else "us-east-1",
        "read": _key_pair(data.get("read"), "read"),
        "write": None if write is None else _key_pair(write, "write"),
    }
