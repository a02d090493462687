"""Settings of the reference API server, read at its entry points."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from azaion_loader.server.throttle import LoginLimits

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_TOKEN_TTL", "ServerConfig"]

DEFAULT_TOKEN_TTL = 3600
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """How one reference API server instance behaves."""

    data_dir: Path
    """Directory holding the JSON state files (created if missing, mode 0700)."""

    jwt_secret: bytes
    """HS256 signing key of the tokens; at least 32 bytes."""

    token_ttl: int = DEFAULT_TOKEN_TTL
    """Lifetime of an issued token, in seconds."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body accepted; bigger bodies get 413."""

    login_limits: LoginLimits = field(default_factory=LoginLimits)
    """Failed logins allowed per email and per address within a window (then 429)."""

    def __post_init__(self) -> None:
        if len(self.jwt_secret) < 32:
            raise ValueError("the JWT secret must be at least 32 bytes")
        if self.token_ttl < 1:
            raise ValueError("the token lifetime must be at least 1 second")
