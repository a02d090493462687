"""The operator's errors: one tree, sorted into permanent and transient at the edge.

    OperatorError                 anything the operator raises on purpose
    +-- SpecError                 the custom resource cannot be served as written
    |                             (missing Secret, no matching node...): permanent
    +-- KubeError                 the Kubernetes API refused or failed a call
        +-- KubeNotFoundError     404
        +-- KubeConflictError     409 (already exists, or a stale write)
        +-- KubeForbiddenError    401/403: RBAC, permanent until someone fixes it
        +-- KubeInvalidError      400/422: a manifest the API server rejects
        +-- KubeUnavailableError  connection trouble, 429, 5xx: transient

The handlers turn ``SpecError`` into ``kopf.PermanentError`` and the transient
``KubeError`` kinds into ``kopf.TemporaryError`` with a delay.  Messages carry
names and reasons only, never Secret data.
"""

from __future__ import annotations

__all__ = [
    "KubeConflictError",
    "KubeError",
    "KubeForbiddenError",
    "KubeInvalidError",
    "KubeNotFoundError",
    "KubeUnavailableError",
    "OperatorError",
    "SpecError",
]


class OperatorError(Exception):
    """Base of every error the operator raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SpecError(OperatorError):
    """The custom resource cannot be served as written; retrying will not help.

    ``reason`` is a CamelCase word for the ``Failed`` condition and the Event.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class KubeError(OperatorError):
    """A Kubernetes API call failed; ``status`` is the HTTP status when there was one."""

    transient: bool = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubeNotFoundError(KubeError):
    """404: the object does not exist."""


class KubeConflictError(KubeError):
    """409: the object already exists, or the write was based on a stale version."""

    transient = True


class KubeForbiddenError(KubeError):
    """401/403: the operator's service account may not do this (check RBAC)."""


class KubeInvalidError(KubeError):
    """400/422: the API server rejected the manifest."""


class KubeUnavailableError(KubeError):
    """Connection refused, timeouts, 429 and 5xx: try again later."""

    transient = True
