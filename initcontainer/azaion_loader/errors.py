"""The toolkit's errors: one tree, each class with its own exit code and a fix.

    LoaderError                       (1)  anything unexpected
    +-- ConfigError                   (3)  missing or bad settings
    |   +-- CredentialsMissingError   (4)
    |   +-- FingerprintError          (5)
    +-- ApiError                      (10) the resource API
    |   +-- AuthError                 (11) wrong email or password, or access denied
    |   +-- NotFoundError             (12) unknown resource, version or archive
    |   +-- ConflictError             (13) 409 {ErrorCode, Message}, e.g. hardware mismatch
    |   +-- ApiUnavailableError       (14) connection refused, timeouts, 5xx after retries
    |   +-- ProtocolError             (15) a response that breaks docs/protocol.md
    +-- CdnError                      (20) the S3-compatible CDN
    |   +-- CdnUnavailableError       (21)
    |   +-- CdnNotFoundError          (22) missing bucket or object
    |   +-- CdnAccessError            (23) credentials refused
    +-- IntegrityError                (30) digest or padding mismatch: nothing published
    +-- ImageLoadError                (40) the node's container runtime (Docker or containerd)
    |   +-- DockerUnavailableError    (41)
    |   +-- NotADockerArchiveError    (42)
    |   +-- ImageMissingError         (43)
    |   +-- ContainerdUnavailableError (44)
    |   +-- UnexpectedImagesError     (45) the archive holds tags that may not be loaded
    +-- TargetError                   (50) the output path cannot be written

Every error carries a one-line ``message`` that names the cause and ``hint``
that says what to do.  Messages never contain secrets: callers build them
from names, URLs and sizes only; :meth:`LoaderError.one_line` passes them
through :func:`azaion_loader.redact.printable`, so no control character from
outside (an API's ``Message``) reaches a terminal or a result file.
Context is passed as keyword-only arguments; the cause is chained with
``raise ... from``.
"""

from __future__ import annotations

from azaion_loader.redact import printable

__all__ = [
    "ApiError",
    "ApiUnavailableError",
    "AuthError",
    "CdnAccessError",
    "CdnError",
    "CdnNotFoundError",
    "CdnUnavailableError",
    "ConfigError",
    "ConflictError",
    "ContainerdUnavailableError",
    "CredentialsMissingError",
    "DockerUnavailableError",
    "FingerprintError",
    "ImageLoadError",
    "ImageMissingError",
    "IntegrityError",
    "LoaderError",
    "NotADockerArchiveError",
    "NotFoundError",
    "ProtocolError",
    "TargetError",
    "UnexpectedImagesError",
]


class LoaderError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_code: int = 1
    default_hint: str = "see the log above; report a bug if it persists"
    permanent: bool = False
    """Retrying the same command cannot help (the operator fails the Job at once)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def one_line(self) -> str:
        """The message and the fix on one line, for stderr and termination messages."""
        text = f"{self.message}; {self.hint}" if self.hint else self.message
        return printable(text, limit=2000)


class ConfigError(LoaderError):
    exit_code = 3
    permanent = True
    default_hint = "check the LOADER_* settings (see `loader --help`)"


class CredentialsMissingError(ConfigError):
    exit_code = 4
    default_hint = (
        "set LOADER_EMAIL and LOADER_PASSWORD, or LOADER_CREDENTIALS_DIR to a directory "
        "with `email` and `password` files"
    )


class FingerprintError(ConfigError):
    exit_code = 5
    default_hint = "mount /etc/machine-id or set LOADER_HW_MACHINE_ID"


class ApiError(LoaderError):
    exit_code = 10
    default_hint = "check LOADER_API_URL and the API server's health"

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class AuthError(ApiError):
    exit_code = 11
    permanent = True
    default_hint = "check the email and password in the credentials Secret"


class NotFoundError(ApiError):
    exit_code = 12
    permanent = True
    default_hint = "check the folder, name and version; `loader upload` publishes it"


class ConflictError(ApiError):
    exit_code = 13
    permanent = True
    default_hint = "the API refused the request; see its message"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = 409,
        error_code: int | None = None,
        api_message: str = "",
    ) -> None:
        super().__init__(message, hint=hint, status=status)
        self.error_code = error_code
        self.api_message = api_message


class ApiUnavailableError(ApiError):
    exit_code = 14
    default_hint = "check that LOADER_API_URL is reachable from here and the server is up"


class ProtocolError(ApiError):
    exit_code = 15
    permanent = True
    default_hint = "the server does not follow docs/protocol.md; check LOADER_API_URL"


class CdnError(LoaderError):
    exit_code = 20
    default_hint = "check the CDN settings the API hands out"


class CdnUnavailableError(CdnError):
    exit_code = 21
    default_hint = "check that the CDN endpoint is reachable from here"


class CdnNotFoundError(CdnError):
    exit_code = 22
    permanent = True
    default_hint = "the big part is missing on the CDN: publish it again with `loader upload`"


class CdnAccessError(CdnError):
    exit_code = 23
    permanent = True
    default_hint = "the CDN refused the key pair: ask the API operator to fix the CDN settings"


class IntegrityError(LoaderError):
    exit_code = 30
    permanent = True
    default_hint = (
        "the data does not match the digest from the API: nothing was published; "
        "republish the resource or clear the cache"
    )


class ImageLoadError(LoaderError):
    exit_code = 40
    default_hint = "check the container runtime's log on the node"


class DockerUnavailableError(ImageLoadError):
    exit_code = 41
    default_hint = "start the Docker daemon or set DOCKER_HOST to its socket"


class NotADockerArchiveError(ImageLoadError):
    exit_code = 42
    permanent = True
    default_hint = "publish an archive made by `docker save`"


class ImageMissingError(ImageLoadError):
    exit_code = 43
    permanent = True
    default_hint = "check the expected image names against the archive's manifest.json"


class ContainerdUnavailableError(ImageLoadError):
    exit_code = 44
    default_hint = (
        "start containerd or point --socket (LOADER_RUNTIME_SOCKET) at its socket, "
        "e.g. /run/containerd/containerd.sock or /run/k3s/containerd/containerd.sock"
    )


class UnexpectedImagesError(ImageLoadError):
    exit_code = 45
    permanent = True
    default_hint = (
        "list every image of the archive in spec.images (--images), or publish an archive "
        "that holds only the images it is registered with"
    )


class TargetError(LoaderError):
    exit_code = 50
    permanent = True
    default_hint = "check that the output directory exists and is writable"
