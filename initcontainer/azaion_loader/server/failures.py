"""Protocol failures: each maps to an HTTP status and an ``ErrorCode`` (docs/protocol.md §1).

    ApiFailure                (500, 50)
    +-- BadRequest            (400, 40) malformed request
    +-- LoginFailed           (401, 10) wrong email or password
    +-- TokenInvalid          (401, 11) token missing, invalid or expired
    +-- TooManyLogins         (429, 14) too many failed logins; carries Retry-After
    +-- RoleNotAllowed        (403, 12)
    +-- NotOwner              (403, 13) folder/name is owned by another uploader
    +-- UnknownEntry          (404, 20) unknown resource, archive, version or user
    +-- HardwareMismatch      (409, 30) the user is bound to other hardware
    +-- VersionConflict       (409, 31) the version exists with other content

Messages are sent to the client and logged: they name things, never secrets.
"""

from __future__ import annotations

__all__ = [
    "ApiFailure",
    "BadRequest",
    "HardwareMismatch",
    "LoginFailed",
    "NotOwner",
    "RoleNotAllowed",
    "TokenInvalid",
    "TooManyLogins",
    "UnknownEntry",
    "VersionConflict",
]


class ApiFailure(Exception):
    """A request the server answers with an error body ``{ErrorCode, Message}``."""

    status: int = 500
    error_code: int = 50

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, object]:
        """The JSON error body."""
        return {"ErrorCode": self.error_code, "Message": self.message}

    def headers(self) -> dict[str, str]:
        """Extra response headers."""
        return {}


class BadRequest(ApiFailure):
    status = 400
    error_code = 40


class LoginFailed(ApiFailure):
    status = 401
    error_code = 10


class TokenInvalid(ApiFailure):
    status = 401
    error_code = 11


class TooManyLogins(ApiFailure):
    status = 429
    error_code = 14

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RoleNotAllowed(ApiFailure):
    status = 403
    error_code = 12


class NotOwner(ApiFailure):
    status = 403
    error_code = 13


class UnknownEntry(ApiFailure):
    status = 404
    error_code = 20


class HardwareMismatch(ApiFailure):
    status = 409
    error_code = 30


class VersionConflict(ApiFailure):
    status = 409
    error_code = 31
