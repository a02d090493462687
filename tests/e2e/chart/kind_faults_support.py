"""Faults injected into a kind cluster's nodes, for the cluster-level fault tests.

A kind node is a Docker container running systemd, containerd and the kubelet,
so a fault is a ``docker exec`` into it: ``crictl stop --timeout 0`` kills a
container (the kubelet starts it again: a static pod such as kube-apiserver, or
a pod's container), ``systemctl restart kubelet`` restarts a node's kubelet.
Only containers found by exact name or label are touched.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from chart_e2e_support import RELEASE_NAMESPACE, run


@dataclass(frozen=True)
class KindCluster:
    """The node containers of one kind cluster."""

    name: str
    control_plane: str

    @classmethod
    def of_node(cls, node_container: str) -> KindCluster | None:
        """The cluster the kind node ``node_container`` belongs to; None if it is no kind node."""
        label = '{{index .Config.Labels "io.x-k8s.kind.cluster"}}'
        found = subprocess.run(
            ["docker", "inspect", "--format", label, node_container],
            capture_output=True,
            text=True,
            check=False,
        )
        name = found.stdout.strip()
        if found.returncode != 0 or not name:
            return None
        listed = run(
            [
                "docker",
                "ps",
                "--filter",
                f"label=io.x-k8s.kind.cluster={name}",
                "--filter",
                "label=io.x-k8s.kind.role=control-plane",
                "--format",
                "{{.Names}}",
            ]
        )
        planes = listed.stdout.split()
        if len(planes) != 1:
            return None
        return cls(name=name, control_plane=planes[0])

    # ------------------------------------------------------------------ node commands

    @staticmethod
    def exec(node: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the node container; AssertionError if it fails."""
        return run(["docker", "exec", node, *argv], timeout=timeout)

    def containers(self, node: str, *filters: str) -> list[dict[str, Any]]:
        """``crictl ps`` (running containers) on ``node`` with ``filters``, as dicts."""
        done = self.exec(node, "crictl", "ps", "-o", "json", *filters)
        return list(json.loads(done.stdout).get("containers") or [])

    def kill_containers(self, node: str, ids: list[str]) -> None:
        """Stop the containers at once (SIGKILL, no grace period).

        crictl's own deadline for a runtime call is 2 s by default; on a loaded
        CI machine stopping kube-apiserver took longer (DeadlineExceeded, run of
        30 Nov), so the call gets a minute.
        """
        assert ids, f"no container to kill on {node}"
        self.exec(node, "crictl", "--timeout", "60s", "stop", "--timeout", "0", *ids)

    # ------------------------------------------------------------------ the faults

    def apiserver_ids(self) -> list[str]:
        found = self.containers(self.control_plane, "--name", "^kube-apiserver$")
        return [str(c["id"]) for c in found]

    def apiserver_attempt(self) -> int:
        """How often the kubelet has started kube-apiserver (0 for the first run)."""
        found = self.containers(self.control_plane, "--name", "^kube-apiserver$")
        return max((int(c["metadata"].get("attempt", 0)) for c in found), default=-1)

    def control_plane_attempts(self) -> dict[str, int]:
        """Start count of each control-plane container (a restart after the fault shows here)."""
        found = self.containers(self.control_plane, "--namespace", "kube-system")
        attempts: dict[str, int] = {}
        for c in found:
            name = str(c["metadata"]["name"])
            attempts[name] = max(attempts.get(name, 0), int(c["metadata"].get("attempt", 0)))
        return attempts

    def operator_ids(self, node: str) -> list[str]:
        found = self.containers(
            node,
            "--label",
            f"io.kubernetes.pod.namespace={RELEASE_NAMESPACE}",
            "--label",
            "io.kubernetes.container.name=operator",
        )
        return [str(c["id"]) for c in found]

    def restart_kubelet(self, node: str) -> None:
        self.exec(node, "systemctl", "restart", "kubelet")

    def kubelet_started(self, node: str) -> str:
        """When systemd last started the node's kubelet (a restart changes it)."""
        done = self.exec(
            node, "systemctl", "show", "kubelet", "--property", "ExecMainStartTimestampMonotonic"
        )
        return done.stdout.strip()

    def has_image(self, node: str, reference: str) -> bool:
        """True if the node's containerd (namespace k8s.io) has the image ``reference``."""
        done = subprocess.run(
            ["docker", "exec", node, "crictl", "inspecti", reference],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0
