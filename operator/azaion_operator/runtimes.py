"""Which container runtime, and which socket, an ImageUnlock's Job uses on a node (pure).

``spec.runtime``: ``auto`` (the default) reads the node's
``status.nodeInfo.containerRuntimeVersion``: ``containerd://`` loads into
containerd (the k3s socket on a node whose kubelet version says ``+k3s``),
``docker://`` (cri-dockerd) into Docker; anything else (``cri-o://``...) is a
runtime the toolkit cannot serve, and that node fails with ``UnsupportedRuntime``
and gets no Job.  ``docker`` and ``containerd`` force the choice.

The socket paths are the admin's (chart values): a custom resource may name
one only if the admin listed it, so a spec cannot point a root container at
an arbitrary host path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from azaion_operator.errors import SpecError
from azaion_operator.nodes import NodeInfo
from azaion_operator.settings import OperatorSettings

__all__ = [
    "AUTO",
    "CONTAINERD",
    "DOCKER",
    "RuntimeChoice",
    "UnsupportedRuntime",
    "check_socket_policy",
    "choose_runtime",
]

AUTO = "auto"
DOCKER = "docker"
CONTAINERD = "containerd"


@dataclasses.dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a node's Job loads into, and that runtime's socket on the node."""

    runtime: str
    socket_path: str


class UnsupportedRuntime(Exception):
    """The node's runtime is one the toolkit cannot load into; the message says which."""


def requested_socket(spec: Mapping[str, Any]) -> str | None:
    """The socket the spec names: ``socketPath``, else the older ``dockerSocketPath``."""
    return spec.get("socketPath") or spec.get("dockerSocketPath") or None


def allowed_sockets(settings: OperatorSettings) -> tuple[str, ...]:
    """Every socket path the admin allows: the per-runtime defaults and the extra list."""
    defaults = (settings.docker_socket, settings.containerd_socket, settings.k3s_containerd_socket)
    return tuple(dict.fromkeys(defaults + settings.allowed_socket_paths))


def check_socket_policy(spec: Mapping[str, Any], settings: OperatorSettings) -> None:
    """``SpecError`` (``PolicyDenied``) for a socket path the admin did not allow."""
    wanted = requested_socket(spec)
    if wanted is not None and wanted not in allowed_sockets(settings):
        raise SpecError(
            f"socket path {wanted} is not allowed by the operator's policy (rule "
            "runtimes.allowedSocketPaths); leave spec.socketPath unset to use the "
            "admin's socket for the runtime, or ask the admin to allow this path",
            reason="PolicyDenied",
        )


def _detected(node: NodeInfo) -> str:
    scheme = node.container_runtime.partition("://")[0].lower()
    if scheme == CONTAINERD:
        return CONTAINERD
    if scheme == DOCKER:
        return DOCKER
    shown = node.container_runtime or "none reported"
    raise UnsupportedRuntime(
        f"node {node.name} runs container runtime {shown}; ImageUnlock can load into "
        "containerd or Docker only (set spec.runtime to force one, or exclude the node "
        "with spec.nodeSelector)"
    )


def choose_runtime(
    spec: Mapping[str, Any], node: NodeInfo, settings: OperatorSettings
) -> RuntimeChoice:
    """The runtime and socket for ``node``; :class:`UnsupportedRuntime` if there is none."""
    wanted = str(spec.get("runtime") or AUTO)
    runtime = _detected(node) if wanted == AUTO else wanted
    if spec.get("socketPath"):
        socket = str(spec["socketPath"])
    elif runtime == DOCKER:
        socket = str(spec.get("dockerSocketPath") or settings.docker_socket)
    elif "+k3s" in node.kubelet_version:
        socket = settings.k3s_containerd_socket
    else:
        socket = settings.containerd_socket
    return RuntimeChoice(runtime, socket)
