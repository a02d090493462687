"""The rendered chart is accepted by a real API server (server-side dry run).

Needs a cluster in ``KUBECONFIG`` (``eval "$(scripts/kind-node-image env)"``) and kubectl;
skips with that reason otherwise. Creates one short-lived namespace enforcing Pod
Security ``restricted`` to prove the operator's pod passes it (and that a pod
mounting the Docker socket, as ImageUnlock Jobs do, does not).
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from chart_support import CHART, only, run_helm

pytestmark = pytest.mark.cluster

Render = Callable[..., list[dict[str, Any]]]


def apply_dry_run(
    kubectl: str, docs: list[dict[str, Any]], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl, "apply", "--dry-run=server", "-f", "-", *args],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
def restricted_namespace(kubectl: str) -> Iterator[str]:
    name = f"chart-psa-{uuid.uuid4().hex[:8]}"
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    }
    subprocess.run(
        [kubectl, "create", "-f", "-"],
        input=json.dumps(namespace),
        check=True,
        capture_output=True,
        text=True,
    )
    try:
        yield name
    finally:
        subprocess.run(
            [kubectl, "delete", "namespace", name, "--wait=false"], capture_output=True, check=False
        )


def test_crds_are_accepted(kubectl: str) -> None:
    proc = subprocess.run(
        [kubectl, "apply", "--dry-run=server", "--server-side", "-f", str(CHART / "crds")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == 2


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"watchNamespaces": ["default", "kube-public"]},
        {
            "peering": {"enabled": True, "name": "p"},
            "replicaCount": 2,
            "watchNamespaces": ["default"],
        },
        {
            "rbac": {"create": False},
            "serviceAccount": {"create": False, "name": "x", "annotations": {}},
        },
    ],
)
def test_rendered_chart_is_accepted(kubectl: str, render: Render, values: dict[str, Any]) -> None:
    # Without hooks: Helm creates the `helm test` Pod only once the release's
    # objects (its ServiceAccount) exist; a dry run creates none of them.
    docs = [
        doc
        for doc in render(values, namespace="default")
        if "helm.sh/hook" not in (doc["metadata"].get("annotations") or {})
    ]
    proc = apply_dry_run(kubectl, docs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(server dry run)") == len(docs)


def test_operator_pod_passes_restricted_and_a_socket_pod_does_not(
    kubectl: str, render: Render, restricted_namespace: str
) -> None:
    (deployment,) = only(render(), "Deployment")
    template = deployment["spec"]["template"]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "operator",
            "namespace": restricted_namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": {**template["spec"], "serviceAccountName": "default"},
    }
    accepted = apply_dry_run(kubectl, [pod])
    assert accepted.returncode == 0, accepted.stderr
    assert "Warning" not in accepted.stderr

    socket_pod = copy.deepcopy(pod)
    socket_pod["metadata"]["name"] = "unlock"
    socket_pod["spec"]["volumes"].append(
        {"name": "docker", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}}
    )
    refused = apply_dry_run(kubectl, [socket_pod])
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr and "hostPath" in refused.stderr


def test_helm_test_pod_passes_restricted(
    kubectl: str, render: Render, restricted_namespace: str
) -> None:
    (pod,) = only(render(), "Pod")
    pod["metadata"] = {"name": "helm-test", "namespace": restricted_namespace}
    pod["spec"]["serviceAccountName"] = "default"
    accepted = apply_dry_run(kubectl, [pod])
    assert accepted.returncode == 0, accepted.stderr
    assert "Warning" not in accepted.stderr


def test_notes_tell_what_to_apply_next(kubectl: str, helm: str) -> None:
    out = run_helm(
        helm,
        "install",
        "rel",
        str(CHART),
        "--namespace",
        "default",
        "--dry-run=client",
        "--set",
        "watchNamespaces={edge-a}",
    )
    notes = out.split("NOTES:", 1)[1]
    assert "the namespaces: edge-a" in notes
    assert "create secret generic azaion-loader-credentials" in notes
    assert "kubectl wait" in notes and "--for=condition=Ready" in notes
    assert "pod-security.kubernetes.io/enforce=privileged" in notes
    assert "kubectl apply --server-side" in notes  # the CRD upgrade path
