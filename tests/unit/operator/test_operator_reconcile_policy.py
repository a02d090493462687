"""Reconcile under the admin policy: a refused spec fails with PolicyDenied before any
Secret is read or Job built; an allowed one gets its Job.  The Kubernetes API is a
small recording fake (only pure logic is under test here)."""

from __future__ import annotations

import copy
import dataclasses
import types
from collections.abc import Collection
from typing import Any, cast

import pytest

from azaion_operator import handlers
from azaion_operator.errors import KubeForbiddenError, KubeNotFoundError, SpecError
from azaion_operator.kinds.image_unlock import reconcile_unlock
from azaion_operator.kinds.resource import reconcile_resource
from azaion_operator.kube import KubeClient
from azaion_operator.memory import OperatorMemory
from azaion_operator.metrics import Metrics
from azaion_operator.nodes import NodeInfo
from azaion_operator.policy import Policy
from azaion_operator.reconcile import Report
from azaion_operator.settings import OperatorSettings

NOW = "2026-12-01T00:00:00Z"
ALLOWED = OperatorSettings(
    api_url="https://api.example",
    policy=Policy(
        allowed_api_urls=("http://lab.example",),
        image_unlock_namespaces=("edge",),
        host_path_prefixes=("/var/lib/azaion",),
        credentials_secrets=("creds",),
    ),
)


class FakeKube:
    """Records every call; answers like an API server with no Jobs yet."""

    def __init__(self, secret_keys: frozenset[str] | str | None = frozenset({"email", "password"})):
        self.calls: list[str] = []
        self.created: list[dict[str, Any]] = []
        self.status_patches: list[dict[str, Any]] = []
        self._secret_keys = secret_keys
        self.jobs: list[dict[str, Any]] = []

    def secret_keys(self, namespace: str, name: str) -> frozenset[str]:
        self.calls.append("secret_keys")
        if self._secret_keys is None:
            raise KubeNotFoundError(f"secrets {name} not found", status=404)
        if self._secret_keys == "forbidden":  # outside the RBAC's resourceNames
            raise KubeForbiddenError(f"secrets {name} is forbidden", status=403)
        assert not isinstance(self._secret_keys, str)
        return self._secret_keys

    def list_jobs(
        self,
        namespace: str,
        labels: Any,
        *,
        any_of: tuple[str, Collection[str]] | None = None,
        not_succeeded: bool = False,
    ) -> list[dict[str, Any]]:
        self.calls.append("list_jobs")
        jobs = [j for j in self.jobs if _has_one_of(j, any_of)]
        if not_succeeded:  # the API server's field selector status.successful=0
            jobs = [j for j in jobs if not (j.get("status") or {}).get("succeeded")]
        return copy.deepcopy(jobs)

    def list_pods(self, namespace: str, labels: Any, **_: Any) -> list[dict[str, Any]]:
        self.calls.append("list_pods")
        return []

    def volume_claim(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append("volume_claim")
        return {"metadata": {"name": name}, "spec": {}}

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create_job")
        self.created.append(manifest)
        return copy.deepcopy(manifest)

    def patch_status(self, plural: str, namespace: str, name: str, patch: dict) -> None:
        self.calls.append("patch_status")
        self.status_patches.append(patch)


def _has_one_of(job: dict[str, Any], any_of: tuple[str, Collection[str]] | None) -> bool:
    if any_of is None:
        return True
    key, values = any_of
    return job["metadata"]["labels"].get(key) in values


def _kube(fake: FakeKube) -> KubeClient:
    return cast(KubeClient, fake)


def _resource_body(resource: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(resource)
    body["spec"]["apiUrl"] = "https://api.example"
    body["spec"].update(spec)
    return body


def test_allowed_resource_gets_its_job(resource: dict[str, Any], node: NodeInfo) -> None:
    fake = FakeKube()
    report = reconcile_resource(_kube(fake), ALLOWED, _resource_body(resource), [node], now=NOW)
    assert fake.calls == ["list_jobs", "secret_keys", "volume_claim", "create_job"]
    assert report.status is not None and report.status["phase"] == "Pending"


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ({"apiUrl": "https://collector.attacker.example"}, "policy.allowedApiUrls"),
        ({"apiUrl": "http://lab.example"}, "policy.allowInsecureHttp"),
        (
            {
                "target": {"fileName": "kubelet.conf", "hostPath": {"path": "/etc/kubernetes"}},
                "nodeSelector": {"kubernetes.io/hostname": "edge-1"},
            },
            "policy.hostPathPrefixes",
        ),
        ({"credentialsSecretRef": {"name": "kube-admin-token"}}, "policy.credentialsSecrets"),
    ],
)
def test_refused_resource_fails_with_policy_denied_and_touches_nothing(
    resource: dict[str, Any], node: NodeInfo, spec: dict[str, Any], rule: str
) -> None:
    fake = FakeKube()
    with pytest.raises(SpecError) as info:
        reconcile_resource(_kube(fake), ALLOWED, _resource_body(resource, **spec), [node], now=NOW)
    assert info.value.reason == "PolicyDenied"
    assert info.value.message.startswith(rule + ": ")
    assert fake.calls == []  # no Secret read, no Job listed or created


def test_resource_with_no_api_url_anywhere_is_refused(
    resource: dict[str, Any], node: NodeInfo
) -> None:
    body = _resource_body(resource)
    del body["spec"]["apiUrl"]
    fake = FakeKube()
    with pytest.raises(SpecError) as info:
        reconcile_resource(_kube(fake), OperatorSettings(), body, [node], now=NOW)
    assert (info.value.reason, info.value.message.split(":")[0]) == (
        "PolicyDenied",
        "defaults.apiUrl",
    )
    assert fake.calls == []


def _unlock_body(
    unlock: dict[str, Any], namespace: str, parallelism: int | None = None
) -> dict[str, Any]:
    body = copy.deepcopy(unlock)
    body["metadata"]["namespace"] = namespace
    if parallelism is not None:
        body["spec"]["parallelism"] = parallelism
    return body


def _entry(report: Report, node_name: str) -> dict[str, Any]:
    """That node's entry in an ImageUnlock's ``status.nodes``."""
    return {n["name"]: n for n in report.status["nodes"]}[node_name]


def test_allowed_unlock_gets_a_job_per_node(unlock: dict[str, Any], node: NodeInfo) -> None:
    fake = FakeKube()
    reconcile_unlock(_kube(fake), ALLOWED, _unlock_body(unlock, "edge"), [node], now=NOW)
    assert fake.calls == ["list_jobs", "secret_keys", "create_job"]


@pytest.mark.parametrize(
    ("namespace", "tolerations", "rule"),
    [
        ("team-a", [], "policy.imageUnlockNamespaces"),
        (
            "edge",
            [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
            "policy.allowControlPlane",
        ),
    ],
)
def test_refused_unlock_fails_with_policy_denied_and_touches_nothing(
    unlock: dict[str, Any], node: NodeInfo, namespace: str, tolerations: list, rule: str
) -> None:
    body = _unlock_body(unlock, namespace)
    body["spec"]["tolerations"] = tolerations
    fake = FakeKube()
    with pytest.raises(SpecError) as info:
        reconcile_unlock(_kube(fake), ALLOWED, body, [node], now=NOW)
    assert info.value.reason == "PolicyDenied"
    assert info.value.message.startswith(rule + ": ")
    assert fake.calls == []


@pytest.mark.parametrize("keys", [None, "forbidden", frozenset({"email"}), frozenset()])
def test_missing_credentials_message_says_only_not_usable(
    resource: dict[str, Any], node: NodeInfo, keys: frozenset[str] | str | None
) -> None:
    """Missing, unreadable (RBAC) and keyless Secrets read alike: the status reveals none."""
    fake = FakeKube(secret_keys=keys)
    with pytest.raises(SpecError) as info:
        reconcile_resource(_kube(fake), ALLOWED, _resource_body(resource), [node], now=NOW)
    assert (info.value.reason, info.value.message) == (
        "MissingCredentials",
        "credentials Secret edge/creds is not usable: it needs the keys `email` and `password` "
        "(see examples/credentials-secret.yaml)",
    )
    assert "create_job" not in fake.calls


def test_handler_records_policy_denied_as_failed_condition_and_one_warning_event(
    resource: dict[str, Any], node: NodeInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    posted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(
        handlers.kopf,
        "event",
        lambda body, *, type, reason, message: posted.append((type, reason, message)),
    )
    fake = FakeKube()
    metrics = Metrics(probe=lambda: True)
    memo = types.SimpleNamespace(
        kube=fake, settings=ALLOWED, diffbase=None, metrics=metrics, memory=OperatorMemory()
    )
    body = _resource_body(resource, apiUrl="https://collector.attacker.example")
    with pytest.raises(SpecError):
        handlers.reconcile(cast(Any, memo), "Resource", body, [node])
    message = (
        "policy.allowedApiUrls: spec.apiUrl https://collector.attacker.example is not an "
        "allowed API URL (the operator's defaults.apiUrl or policy.allowedApiUrls): remove "
        "spec.apiUrl, or ask the cluster admin to list it"
    )
    assert posted == [("Warning", "PolicyDenied", message)]
    assert fake.calls == ["patch_status"]
    counted = metrics.registry.get_sample_value
    assert (
        counted("azaion_loader_reconciles_total", {"kind": "Resource", "result": "spec_error"}) == 1
    )
    assert (
        counted("azaion_loader_failures_total", {"kind": "Resource", "reason": "PolicyDenied"}) == 1
    )
    status = fake.status_patches[0]
    assert status["phase"] == "Failed" and status["message"] == message
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"], failed["message"]) == (
        "True",
        "PolicyDenied",
        message,
    )


def test_unlock_picks_the_runtime_per_node_and_skips_unsupported_ones(
    unlock: dict[str, Any], node: NodeInfo
) -> None:
    k3s = dataclasses.replace(
        node,
        name="edge-k3s",
        container_runtime="containerd://1.7.15-k3s1",
        kubelet_version="v1.30.2+k3s1",
    )
    crio = dataclasses.replace(node, name="edge-crio", container_runtime="cri-o://1.30.0")
    body = _unlock_body(unlock, "edge", parallelism=3)
    body["spec"].pop("dockerSocketPath")
    fake = FakeKube()
    report = reconcile_unlock(_kube(fake), ALLOWED, body, [node, k3s, crio], now=NOW)
    sockets = {
        job["metadata"]["annotations"]["loader.azaion.com/node-name"]: job["spec"]["template"][
            "spec"
        ]["volumes"][-1]["hostPath"]["path"]
        for job in fake.created
    }
    assert sockets == {
        "edge-1": "/run/containerd/containerd.sock",
        "edge-k3s": "/run/k3s/containerd/containerd.sock",
    }
    by_name = {n["name"]: n for n in report.status["nodes"]}
    assert (by_name["edge-crio"]["phase"], by_name["edge-crio"]["reason"]) == (
        "Failed",
        "UnsupportedRuntime",
    )
    assert by_name["edge-k3s"]["runtime"] == "containerd"
    assert report.status["desired"] == 3 and report.status["failed"] == 1


def test_unlock_with_a_socket_outside_the_policy_builds_nothing(
    unlock: dict[str, Any], node: NodeInfo
) -> None:
    body = _unlock_body(unlock, "edge")
    body["spec"]["socketPath"] = "/etc/shadow"
    fake = FakeKube()
    with pytest.raises(SpecError) as info:
        reconcile_unlock(_kube(fake), ALLOWED, body, [node], now=NOW)
    assert info.value.reason == "PolicyDenied" and "/etc/shadow" in info.value.message
    assert "create_job" not in fake.calls and "secret_keys" not in fake.calls


def test_a_node_cordoned_before_its_job_is_reported_and_retried_when_back(
    unlock: dict[str, Any], node: NodeInfo
) -> None:
    other = dataclasses.replace(node, name="edge-2")
    body = _unlock_body(unlock, "edge", parallelism=1)
    body["spec"].pop("dockerSocketPath")
    body["status"] = {
        "observedGeneration": 1,
        "nodes": [
            {"name": "edge-1", "phase": "Succeeded", "reason": "Succeeded", "jobName": "j1"},
            {"name": "edge-2", "phase": "Pending", "reason": "WaitingForSlot"},
        ],
    }
    cordoned = dataclasses.replace(other, unschedulable=True)
    fake = FakeKube()
    report = reconcile_unlock(_kube(fake), ALLOWED, body, [node, cordoned], now=NOW)
    by_name = {n["name"]: n for n in report.status["nodes"]}
    assert (by_name["edge-2"]["phase"], by_name["edge-2"]["reason"]) == (
        "Failed",
        "NodeUnavailable",
    )
    assert report.status["phase"] == "Failed"  # terminal: never waited on
    assert fake.created == []  # edge-1 is done, edge-2 is not schedulable
    # Back in service: the node gets its Job.
    body["status"] = report.status
    again = FakeKube()
    reconcile_unlock(_kube(again), ALLOWED, body, [node, other], now=NOW)
    built = [j["metadata"]["annotations"]["loader.azaion.com/node-name"] for j in again.created]
    assert built == ["edge-2"]


def test_unlock_reports_a_node_cordoned_before_its_job_and_gives_it_one_when_uncordoned(
    unlock: dict[str, Any], node: NodeInfo
) -> None:
    """parallelism 1 on two nodes; the waiting one is cordoned, then uncordoned."""
    other = dataclasses.replace(node, name="edge-2")
    body = _unlock_body(unlock, "edge", parallelism=1)
    fake = FakeKube()
    first = reconcile_unlock(_kube(fake), ALLOWED, body, [node, other], now=NOW)
    [job] = fake.created
    assert job["metadata"]["annotations"]["loader.azaion.com/node-name"] == "edge-1"
    waiting = _entry(first, "edge-2")
    assert waiting["phase"] == "Pending" and "jobName" not in waiting

    fake.jobs = [job]
    body["status"] = first.status
    # as the API server has it: a cordon also adds the unschedulable taint
    cordon = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    cordoned = dataclasses.replace(other, unschedulable=True, taints=(*other.taints, cordon))
    second = reconcile_unlock(_kube(fake), ALLOWED, body, [node, cordoned], now=NOW)
    item = _entry(second, "edge-2")
    assert (item["phase"], item["reason"]) == ("Failed", "NodeUnavailable"), item
    assert second.status["desired"] == 2 and "edge-2" in second.status["failedNodes"]
    assert len(fake.created) == 1  # no Job for the cordoned node

    body["status"] = second.status
    third = reconcile_unlock(_kube(fake), ALLOWED, body, [node, other], now=NOW)
    item = _entry(third, "edge-2")
    assert item["phase"] == "Pending" and item.get("reason") != "NodeUnavailable", item
    assert len(fake.created) == 1  # edge-1's Job still holds the one slot


def test_a_node_that_goes_not_ready_while_its_job_runs_is_reported_not_waited_on(
    unlock: dict[str, Any], node: NodeInfo
) -> None:
    """parallelism 2 on two nodes, both Jobs created; one node's kubelet stops answering."""
    other = dataclasses.replace(node, name="edge-2")
    body = _unlock_body(unlock, "edge", parallelism=2)
    fake = FakeKube()
    first = reconcile_unlock(_kube(fake), ALLOWED, body, [node, other], now=NOW)
    assert len(fake.created) == 2
    done = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    fake.jobs = [
        {**job, "status": done if i == 0 else {"active": 1}} for i, job in enumerate(fake.created)
    ]
    body["status"] = first.status
    gone = dataclasses.replace(other, ready=False)
    second = reconcile_unlock(_kube(fake), ALLOWED, body, [node, gone], now=NOW)
    item = _entry(second, "edge-2")
    assert (item["phase"], item["reason"]) == ("Failed", "NodeUnavailable"), item
    assert "NotReady" in item["message"] and item["jobName"]
    assert second.status["phase"] == "Failed" and second.status["failedNodes"] == ["edge-2"]
    assert len(fake.created) == 2  # its Job stays; no new one

    # Back: the Job's own outcome counts again.
    fake.jobs[1]["status"] = done
    body["status"] = second.status
    third = reconcile_unlock(_kube(fake), ALLOWED, body, [node, other], now=NOW)
    assert third.status["phase"] == "Succeeded", third.status


def test_unlock_drops_a_node_whose_label_no_longer_matches(
    unlock: dict[str, Any], node: NodeInfo
) -> None:
    """Only a cordoned/NotReady node is reported; one that stops matching just leaves."""
    other = dataclasses.replace(node, name="edge-2", labels={**node.labels, "group": "a"})
    body = _unlock_body(unlock, "edge", parallelism=1)
    body["spec"]["nodeSelector"] = {"group": "a"}
    both = dataclasses.replace(node, labels={**node.labels, "group": "a"})
    fake = FakeKube()
    first = reconcile_unlock(_kube(fake), ALLOWED, body, [both, other], now=NOW)
    fake.jobs = list(fake.created)
    body["status"] = first.status
    relabelled = dataclasses.replace(other, labels={**node.labels, "group": "b"})
    second = reconcile_unlock(_kube(fake), ALLOWED, body, [both, relabelled], now=NOW)
    assert [n["name"] for n in second.status["nodes"]] == ["edge-1"]
