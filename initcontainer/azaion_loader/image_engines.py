"""The one place an image engine is chosen (docs/architecture.md, "Image engines")."""

from __future__ import annotations

from azaion_loader.containerd_cli import ContainerdCli
from azaion_loader.docker_cli import DockerCli
from azaion_loader.engine import CONTAINERD, DOCKER, ImageEngine
from azaion_loader.errors import ConfigError
from azaion_loader.settings import EngineSettings

__all__ = ["open_engine"]


def open_engine(settings: EngineSettings) -> ImageEngine:
    """The engine ``settings`` name, on its socket (nothing is contacted yet)."""
    if settings.runtime == DOCKER:
        return DockerCli(socket=settings.socket)
    if settings.runtime == CONTAINERD:
        return ContainerdCli(socket=settings.socket, namespace=settings.namespace, pin=settings.pin)
    raise ConfigError(f"unknown container runtime {settings.runtime!r}: use docker or containerd")
