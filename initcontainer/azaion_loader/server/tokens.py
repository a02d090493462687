"""JWT issuing and checking (HS256, PyJWT).

Claims: ``sub`` (user id), ``email``, ``role``, ``gen`` (the user's token
epoch, raised at each password change), ``iat``, ``exp``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import jwt

from azaion_loader.server.failures import TokenInvalid
from azaion_loader.server.records import User

__all__ = ["TokenService"]

_ALGORITHM = "HS256"


class TokenService:
    """Signs and checks tokens with one secret, which ``rotate`` can replace."""

    def __init__(self, secret: bytes, ttl: int) -> None:
        self._secret = secret
        self._ttl = ttl
        self._lock = threading.Lock()

    def issue(self, user: User, *, now: float | None = None) -> str:
        """A signed token for ``user``, valid for the configured lifetime."""
        issued = int(time.time() if now is None else now)
        claims = {
            "sub": user.id,
            "email": user.email,
            "role": user.role,
            "gen": user.token_epoch,
            "iat": issued,
            "exp": issued + self._ttl,
        }
        with self._lock:
            secret = self._secret
        return jwt.encode(claims, secret, algorithm=_ALGORITHM)

    def check(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; ``TokenInvalid`` if expired, forged or malformed."""
        with self._lock:
            secret = self._secret
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[_ALGORITHM],
                options={"require": ["sub", "role", "iat", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("the token has expired; log in again") from None
        except jwt.InvalidTokenError:
            raise TokenInvalid("the token is invalid; log in again") from None
        return claims

    def rotate(self, secret: bytes | None = None) -> None:
        """Replace the signing secret: every token issued before is invalid from now on."""
        new = os.urandom(32) if secret is None else secret
        with self._lock:
            self._secret = new
