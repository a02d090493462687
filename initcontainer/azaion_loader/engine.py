"""What an image unlock needs from a node's container runtime (pure: no I/O here).

Two engines implement :class:`ImageEngine`: :class:`~azaion_loader.docker_cli.DockerCli`
(the ``docker`` CLI) and :class:`~azaion_loader.containerd_cli.ContainerdCli`
(``ctr``, into the namespace the kubelet uses).  :mod:`azaion_loader.image_engines`
is the one place an engine is chosen; :func:`~azaion_loader.archives.unlock_load`
only talks to this interface.

Errors, all :class:`~azaion_loader.errors.ImageLoadError` and below:
``DockerUnavailableError`` / ``ContainerdUnavailableError`` (the engine does not
answer), ``NotADockerArchiveError`` (the engine rejected the stream),
``ImageMissingError`` (raised by callers after :meth:`ImageEngine.missing_images`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = [
    "CONTAINERD",
    "DEFAULT_CONTAINERD_NAMESPACE",
    "DEFAULT_SOCKETS",
    "DOCKER",
    "RUNTIMES",
    "ImageEngine",
    "PendingLoad",
    "normalize_reference",
]

DOCKER = "docker"
CONTAINERD = "containerd"
RUNTIMES = (DOCKER, CONTAINERD)

DEFAULT_SOCKETS = {
    DOCKER: "/var/run/docker.sock",
    CONTAINERD: "/run/containerd/containerd.sock",
}
DEFAULT_CONTAINERD_NAMESPACE = "k8s.io"
"""The containerd namespace the kubelet's CRI plugin reads images from."""


class PendingLoad(Protocol):
    """A load started before its archive is ready (see :meth:`ImageEngine.start_load`)."""

    def check_running(self) -> None:
        """Raise what the engine reported if the load has already ended (e.g. unreachable)."""

    def load(self, chunks: Iterable[bytes | memoryview]) -> list[str]:
        """Stream a ``docker save`` tar; the image names the engine reports as loaded."""

    def cancel(self) -> None:
        """Stop the load before it got a byte; nothing is loaded."""


class ImageEngine(Protocol):
    """A node's container runtime, as far as an image unlock needs it."""

    @property
    def name(self) -> str:
        """``docker`` or ``containerd``."""

    @property
    def address(self) -> str:
        """Where the engine is reached (a socket path or URL), for messages and results."""

    def ping(self) -> str:
        """The engine's version; its "unavailable" error if it does not answer."""

    def start_load(self) -> PendingLoad:
        """Start a load that waits for its archive (its start-up overlaps the caller's checks)."""

    def missing_images(self, refs: Iterable[str]) -> list[str]:
        """The references among ``refs`` that the engine does not have."""

    def remove_image(self, ref: str, *, force: bool = False) -> bool:
        """Remove an image; false if the engine had no such image."""


def _is_domain(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def normalize_reference(ref: str) -> str:
    """The fully qualified form of an image reference, as containerd stores it.

    ``app:1.0`` -> ``docker.io/library/app:1.0``; ``team/app`` ->
    ``docker.io/team/app:latest``; ``registry.local:5000/app:1`` unchanged.
    The same rules as Docker's reference normalisation (the kubelet asks
    containerd for the normalised name).
    """
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest or not _is_domain(first):
        domain, path = "docker.io", name
    else:
        domain, path = first, rest
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    last = path.rsplit("/", 1)[-1]
    if not digest and ":" not in last:
        path += ":latest"
    return f"{domain}/{path}" + (f"@{digest}" if digest else "")
