"""Login password hashes: scrypt with a random salt, compared in constant time.

The login hash is separate from ``K_user`` (docs/protocol.md §3), whose salt is
fixed by the protocol so that the client can derive the same key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["hash_password", "verify_password"]

_N, _R, _P, _LEN = 2**14, 8, 1, 32
_SCHEME = "scrypt"


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_LEN, maxmem=64 * 1024 * 1024
    )


def hash_password(password: str) -> str:
    """A storable hash ``scrypt$n$r$p$salt$hash`` (base64 parts) of ``password``."""
    salt = os.urandom(16)
    digest = _derive(password, salt, _N, _R, _P)
    b64 = base64.b64encode
    return f"{_SCHEME}${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; False for a malformed hash."""
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != _SCHEME:
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        actual = _derive(password, salt, int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
