"""Which runtime and socket an ImageUnlock's Job uses on a node, and the socket policy (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from azaion_operator.errors import SpecError
from azaion_operator.nodes import NodeInfo
from azaion_operator.runtimes import (
    RuntimeChoice,
    UnsupportedRuntime,
    check_socket_policy,
    choose_runtime,
)
from azaion_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(
    docker_socket="/var/run/docker.sock",
    containerd_socket="/run/containerd/containerd.sock",
    k3s_containerd_socket="/run/k3s/containerd/containerd.sock",
)


def _node(node: NodeInfo, runtime: str, kubelet: str = "v1.32.4") -> NodeInfo:
    return dataclasses.replace(node, container_runtime=runtime, kubelet_version=kubelet)


@pytest.mark.parametrize(
    ("runtime", "kubelet", "spec", "expected"),
    [
        (
            "containerd://1.6.20",
            "v1.32.4",
            {},
            RuntimeChoice("containerd", "/run/containerd/containerd.sock"),
        ),
        (
            "containerd://1.7.15-k3s1",
            "v1.30.2+k3s1",
            {"runtime": "auto"},
            RuntimeChoice("containerd", "/run/k3s/containerd/containerd.sock"),
        ),
        ("docker://26.1.0", "v1.32.4", {}, RuntimeChoice("docker", "/var/run/docker.sock")),
        # forced: Docker workloads outside Kubernetes on a containerd node
        (
            "containerd://1.6.20",
            "v1.32.4",
            {"runtime": "docker"},
            RuntimeChoice("docker", "/var/run/docker.sock"),
        ),
        # the older field still names Docker's socket
        (
            "containerd://1.6.20",
            "v1.32.4",
            {"runtime": "docker", "dockerSocketPath": "/run/docker.sock"},
            RuntimeChoice("docker", "/run/docker.sock"),
        ),
        # ... and is ignored for containerd
        (
            "containerd://1.6.20",
            "v1.32.4",
            {"dockerSocketPath": "/var/run/docker.sock"},
            RuntimeChoice("containerd", "/run/containerd/containerd.sock"),
        ),
        (
            "cri-o://1.30.0",
            "v1.30.0",
            {"runtime": "containerd", "socketPath": "/run/other/containerd.sock"},
            RuntimeChoice("containerd", "/run/other/containerd.sock"),
        ),
    ],
)
def test_choose_runtime(
    node: NodeInfo, runtime: str, kubelet: str, spec: dict[str, Any], expected: RuntimeChoice
) -> None:
    assert choose_runtime(spec, _node(node, runtime, kubelet), SETTINGS) == expected


@pytest.mark.parametrize("runtime", ["cri-o://1.30.0", ""])
def test_auto_on_an_unsupported_runtime(node: NodeInfo, runtime: str) -> None:
    with pytest.raises(UnsupportedRuntime) as err:
        choose_runtime({"runtime": "auto"}, _node(node, runtime), SETTINGS)
    assert "node edge-1 runs container runtime" in str(err.value)
    assert (runtime or "none reported") in str(err.value)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"socketPath": "/run/k3s/containerd/containerd.sock"},
        {"dockerSocketPath": "/var/run/docker.sock"},
        {"socketPath": "/run/extra.sock"},
    ],
)
def test_allowed_sockets(spec: dict[str, Any]) -> None:
    settings = dataclasses.replace(SETTINGS, allowed_socket_paths=("/run/extra.sock",))
    check_socket_policy(spec, settings)


@pytest.mark.parametrize(
    "spec",
    [
        {"socketPath": "/etc/shadow"},
        {"dockerSocketPath": "/run/user/1000/docker.sock"},
        {"socketPath": "/run/extra.sock"},
    ],
)
def test_socket_outside_the_policy_is_denied(spec: dict[str, Any]) -> None:
    with pytest.raises(SpecError) as err:
        check_socket_policy(spec, SETTINGS)
    assert err.value.reason == "PolicyDenied"
    assert "runtimes.allowedSocketPaths" in err.value.message
