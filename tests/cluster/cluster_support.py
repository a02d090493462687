"""Helpers for the cluster proof tests: kubectl, pods, image builds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "azaion-loader-base:bookworm"


def kubectl_bin() -> str:
    """The kubectl that `scripts/cluster env` exported, else the one on PATH."""
    return os.environ.get("AZAION_KUBECTL") or shutil.which("kubectl") or "kubectl"


def helm_bin() -> str:
    """The helm that `scripts/cluster env` exported, else the one on PATH."""
    return os.environ.get("AZAION_HELM") or shutil.which("helm") or "helm"


def host_ip() -> str:
    """The address pods use to reach services on the host (the cluster bridge's gateway)."""
    return os.environ.get("AZAION_CLUSTER_HOST_IP", "10.244.0.1")


def kubectl(
    *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run kubectl; fail the test with its stderr when check and it fails."""
    proc = subprocess.run(
        [kubectl_bin(), *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def apply(namespace: str, obj: dict[str, Any]) -> None:
    """kubectl apply one object (JSON) into namespace."""
    kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(obj))


def wait_pod_done(namespace: str, name: str, timeout: float = 120) -> str:
    """Wait until a pod has Succeeded or Failed and return the phase (with events on timeout)."""
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        proc = kubectl(
            "get", "pod", "-n", namespace, name, "-o", "jsonpath={.status.phase}", check=False
        )
        phase = proc.stdout.strip()
        if phase in ("Succeeded", "Failed"):
            return phase
        time.sleep(1)
    events = kubectl("get", "events", "-n", namespace, check=False).stdout
    pytest.fail(
        f"pod {namespace}/{name} not done after {timeout}s (phase {phase!r}); events:\n{events}"
    )


def pod(name: str, image: str, command: list[str], **spec: Any) -> dict[str, Any]:
    """A non-root, read-only-root-filesystem pod that runs command once."""
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / args[0]), *args[1:]], text=True, capture_output=True, check=False
    )


def build_image(tag: str, context: Path) -> None:
    """docker build context as tag (classic builder: no buildx), then import into the cluster."""
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    proc = subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(context)],
        text=True,
        capture_output=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"docker build {tag} failed: {proc.stderr.strip()}")
    proc = script("import-image", tag)
    if proc.returncode != 0:
        pytest.fail(f"scripts/import-image {tag} failed: {proc.stderr.strip()}")


def remove_image(tag: str) -> None:
    """Remove a test image from the host's Docker and from the cluster's containerd."""
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
    sock = os.environ.get(
        "AZAION_CONTAINERD_SOCKET", "/run/azaion-loader-cluster/containerd/containerd.sock"
    )
    ref = tag if "/" in tag else f"docker.io/library/{tag}"
    subprocess.run(
        ["ctr", "--address", sock, "-n", "k8s.io", "images", "rm", ref],
        capture_output=True,
        check=False,
    )
