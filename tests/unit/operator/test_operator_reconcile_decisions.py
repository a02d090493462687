"""What reconcile decides, against the in-memory ``KubeApi`` (kube_support.FakeKube).

Create, adopt, replace on a new generation, fan out over nodes with a
parallelism, give late nodes their Job, and name the reason of each failure.
Each test runs the kinds' real reconcile; only the API server is in memory.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import pytest
from kube_support import FakeKube

from azaion_operator import crd
from azaion_operator.errors import KubeConflictError, KubeForbiddenError, SpecError
from azaion_operator.kinds.image_unlock import reconcile_unlock
from azaion_operator.kinds.resource import build_resource_job, reconcile_resource
from azaion_operator.memory import Once
from azaion_operator.nodes import NodeInfo
from azaion_operator.policy import Policy
from azaion_operator.reconcile import Report
from azaion_operator.settings import OperatorSettings

NOW = "2026-12-01T00:00:00Z"
SETTINGS = OperatorSettings(
    api_url="https://api.example",
    # The conftest's objects name the credentials Secret "creds".
    policy=Policy(image_unlock_namespaces=("edge",), credentials_secrets=("creds",)),
)


def _reasons(report: Report) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in report.events]


def _next(report: Report, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as the next reconcile sees it: with the status this one reported."""
    assert report.status is not None
    again = copy.deepcopy(body)
    again["status"] = report.status
    return again


@pytest.fixture
def fake() -> FakeKube:
    kube = FakeKube()
    kube.add_secret("edge", "creds", ["email", "password"])  # the Resource's
    kube.add_secret("edge", "azaion-loader-credentials", ["email", "password"])  # the default
    kube.add_claim("edge", "models")
    return kube


@pytest.fixture
def resource(resource: dict[str, Any]) -> dict[str, Any]:
    """The conftest's Resource at its first generation (no status yet)."""
    resource["metadata"]["generation"] = 1
    return resource


# --- Resource ---------------------------------------------------------------------


def test_a_new_resource_gets_one_job_and_a_pending_status(
    fake: FakeKube, resource: dict[str, Any], node: NodeInfo
) -> None:
    report = reconcile_resource(fake, SETTINGS, resource, [node], now=NOW)
    [name] = fake.job_names("edge")
    # A first generation with no Job recorded skips the listing and creates at once.
    assert fake.names() == ["secret_keys", "volume_claim", "create_job"]
    assert _reasons(report) == [("Normal", "JobCreated")]
    assert report.status is not None
    assert (report.status["phase"], report.status["jobName"], report.status["node"]) == (
        "Pending",
        name,
        "edge-1",
    )
    # Once more with that status: the Job is found, not created again.
    fake.calls.clear()
    again = reconcile_resource(fake, SETTINGS, _next(report, resource), [node], now=NOW)
    assert "create_job" not in fake.names() and fake.job_names() == [name]
    assert again.events == []


def test_a_job_left_by_an_interrupted_run_is_adopted_not_duplicated(
    fake: FakeKube, resource: dict[str, Any], node: NodeInfo
) -> None:
    """The Job exists (an earlier run died before writing status): the 409 adopts it."""
    fake.create_job(build_resource_job(resource, node, SETTINGS))
    fake.calls.clear()
    report = reconcile_resource(fake, SETTINGS, resource, [node], now=NOW)
    assert fake.names() == [
        "secret_keys",
        "volume_claim",
        "create_job",
        "get_job",
        "list_pods",
    ]
    assert len(fake.jobs) == 1
    assert report.events == []  # nothing was created, so no JobCreated
    assert report.status is not None and report.status["jobName"] == fake.job_names()[0]


def test_a_job_of_the_same_name_owned_by_another_object_is_a_conflict(
    fake: FakeKube, resource: dict[str, Any], node: NodeInfo
) -> None:
    """An older object of the same name still being deleted: never adopt its Job."""
    job = build_resource_job(resource, node, SETTINGS)
    job["metadata"]["labels"][crd.LABEL_OWNER_UID] = "the-old-object"
    fake.create_job(job)
    with pytest.raises(KubeConflictError) as info:
        reconcile_resource(fake, SETTINGS, resource, [node], now=NOW)
    assert info.value.transient  # kopf retries it; the old Job goes with its owner
    assert "belongs to another owner" in info.value.message


def test_a_new_generation_replaces_the_job_of_the_old_one(
    fake: FakeKube, resource: dict[str, Any], node: NodeInfo
) -> None:
    first = reconcile_resource(fake, SETTINGS, resource, [node], now=NOW)
    [old] = fake.job_names()
    changed = _next(first, resource)
    changed["metadata"]["generation"] = 2
    changed["spec"]["source"]["version"] = "4"
    second = reconcile_resource(fake, SETTINGS, changed, [node], now=NOW)
    [new] = fake.job_names()
    assert new != old
    assert ("delete_job", "edge", old) in fake.calls
    assert _reasons(second) == [("Normal", "JobReplaced"), ("Normal", "JobCreated")]
    assert fake.jobs[("edge", new)]["metadata"]["labels"][crd.LABEL_GENERATION] == "2"
    assert second.status is not None
    assert (second.status["observedGeneration"], second.status["jobName"]) == (2, new)


def test_a_finished_job_reports_its_result_once_and_is_then_left_alone(
    fake: FakeKube, resource: dict[str, Any], node: NodeInfo
) -> None:
    first = reconcile_resource(fake, SETTINGS, resource, [node], now=NOW)
    [name] = fake.job_names()
    fake.finish_job("edge", name, result={"ok": True, "size": 7, "sha256": "ab" * 32})
    done = reconcile_resource(fake, SETTINGS, _next(first, resource), [node], now=NOW)
    assert _reasons(done) == [("Normal", "Succeeded")]
    assert done.status is not None
    assert done.status["phase"] == "Succeeded"
    assert done.status["result"] == {"size": 7, "sha256": "ab" * 32}
    # Finished: no call at all, even after the Job's TTL removed it.
    fake.jobs.clear()
    fake.calls.clear()
    after = reconcile_resource(fake, SETTINGS, _next(done, resource), [node], now=NOW)
    assert after == Report(None, []) and fake.calls == []


def test_a_failed_job_names_the_toolkit_error_as_the_reason(
    fake: FakeKube, resource: dict[str, Any], node: NodeInfo
) -> None:
    first = reconcile_resource(fake, SETTINGS, resource, [node], now=NOW)
    [name] = fake.job_names()
    line = {"ok": False, "error": "IntegrityError", "exit_code": 30, "message": "digest differs"}
    fake.finish_job("edge", name, ok=False, result=line)
    report = reconcile_resource(fake, SETTINGS, _next(first, resource), [node], now=NOW)
    assert _reasons(report) == [("Warning", "IntegrityError")]
    assert report.status is not None
    assert (report.status["phase"], report.status["message"]) == (
        "Failed",
        "verify: IntegrityError (exit 30): digest differs",
    )


@pytest.mark.parametrize(
    ("setup", "nodes", "reason"),
    [
        (lambda k: k.secrets.clear(), 1, "MissingCredentials"),
        (lambda k: k.claims.clear(), 1, "MissingVolumeClaim"),
        (lambda k: None, 0, "NoMatchingNode"),
    ],
)
def test_a_resource_that_cannot_be_served_fails_with_its_reason_and_no_job(
    fake: FakeKube, resource: dict[str, Any], node: NodeInfo, setup: Any, nodes: int, reason: str
) -> None:
    setup(fake)
    with pytest.raises(SpecError) as info:
        reconcile_resource(fake, SETTINGS, resource, [node][:nodes], now=NOW)
    assert info.value.reason == reason
    assert fake.jobs == {}


def test_a_forbidden_volume_read_is_warned_about_once_per_process(
    fake: FakeKube, resource: dict[str, Any], node: NodeInfo, caplog: pytest.LogCaptureFixture
) -> None:
    """An RBAC gap is told once, not on every reconcile; the Job is made anyway."""
    fake.add_claim("edge", "models", volumeName="pv-1")
    forbidden = KubeForbiddenError("get PersistentVolume pv-1: HTTP 403 forbidden", status=403)
    fake.fail("persistent_volume", forbidden, forbidden)
    warned = Once()
    other = copy.deepcopy(resource)
    other["metadata"].update(name="second", uid="another-uid")
    with caplog.at_level(logging.WARNING, logger="azaion_operator.kinds.resource"):
        for body in (resource, other):
            reconcile_resource(fake, SETTINGS, body, [node], now=NOW, warned=warned)
    assert fake.names().count("persistent_volume") == 2
    assert len(fake.jobs) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "get PersistentVolume pv-1: HTTP 403 forbidden: node affinity of bound volumes is "
        "ignored until the operator may get persistentvolumes (cluster-wide)"
    ]


# --- ImageUnlock -----------------------------------------------------------------


def _nodes(node: NodeInfo, *names: str) -> list[NodeInfo]:
    return [dataclasses.replace(node, name=name) for name in names]


def _node_items(report: Report) -> dict[str, tuple[str, str]]:
    assert report.status is not None
    return {i["name"]: (i["phase"], i["reason"]) for i in report.status["nodes"]}


def _on(fake: FakeKube) -> dict[str, str]:
    """Each Job's node."""
    return {
        job["metadata"]["annotations"][crd.ANNOTATION_NODE]: name
        for (_, name), job in fake.jobs.items()
    }


def test_an_unlock_fans_out_no_wider_than_its_parallelism(
    fake: FakeKube, unlock: dict[str, Any], node: NodeInfo
) -> None:
    nodes = _nodes(node, "edge-1", "edge-2", "edge-3")
    first = reconcile_unlock(fake, SETTINGS, unlock, nodes, now=NOW)  # parallelism 2
    assert sorted(_on(fake)) == ["edge-1", "edge-2"]
    assert _node_items(first)["edge-3"] == ("Pending", "WaitingForSlot")
    assert _reasons(first) == [("Normal", "JobCreated")] * 2
    assert first.status is not None and first.status["phase"] == "Running"  # 2 Jobs active

    # One node done: the waiting node gets the free slot.
    fake.finish_job("edge", _on(fake)["edge-1"], result={"ok": True, "images": ["a:1"]})
    body = _next(first, unlock)
    second = reconcile_unlock(fake, SETTINGS, body, nodes, now=NOW)
    assert sorted(_on(fake)) == ["edge-1", "edge-2", "edge-3"]
    assert _node_items(second)["edge-1"] == ("Succeeded", "Succeeded")
    assert ("Normal", "JobCreated") in _reasons(second)

    for name in ("edge-2", "edge-3"):
        fake.finish_job("edge", _on(fake)[name], result={"ok": True, "images": ["a:1", "b:2"]})
    body = _next(second, unlock)
    third = reconcile_unlock(fake, SETTINGS, body, nodes, now=NOW)
    assert third.status is not None
    assert (third.status["phase"], third.status["progress"], third.status["images"]) == (
        "Succeeded",
        "3/3",
        ["a:1", "b:2"],
    )
    assert ("Normal", "Succeeded") in _reasons(third)


def test_a_node_that_joins_after_success_gets_its_job(
    fake: FakeKube, unlock: dict[str, Any], node: NodeInfo
) -> None:
    first = reconcile_unlock(fake, SETTINGS, unlock, [node], now=NOW)
    fake.finish_job("edge", _on(fake)["edge-1"], result={"ok": True, "images": ["a:1"]})
    done = reconcile_unlock(fake, SETTINGS, _next(first, unlock), [node], now=NOW)
    assert done.status is not None and done.status["phase"] == "Succeeded"

    late = _nodes(node, "edge-1", "edge-late")
    fake.calls.clear()
    again = reconcile_unlock(fake, SETTINGS, _next(done, unlock), late, now=NOW)
    assert [c for c in fake.calls if c[0] == "create_job"] == [
        ("create_job", "edge", _on(fake)["edge-late"])
    ]
    assert _node_items(again) == {
        "edge-1": ("Succeeded", "Succeeded"),
        "edge-late": ("Pending", "JobCreated"),
    }
    assert again.status is not None and again.status["phase"] == "Running"


def test_a_failed_node_fails_the_unlock_naming_the_node_and_its_reason(
    fake: FakeKube, unlock: dict[str, Any], node: NodeInfo
) -> None:
    nodes = _nodes(node, "edge-1", "edge-2")
    first = reconcile_unlock(fake, SETTINGS, unlock, nodes, now=NOW)
    line = {"ok": False, "error": "DockerUnavailableError", "message": "no socket"}
    fake.finish_job("edge", _on(fake)["edge-1"], ok=False, result=line)
    fake.finish_job("edge", _on(fake)["edge-2"], result={"ok": True, "images": ["a:1"]})
    report = reconcile_unlock(fake, SETTINGS, _next(first, unlock), nodes, now=NOW)
    assert _node_items(report)["edge-1"] == ("Failed", "DockerUnavailableError")
    assert report.status is not None
    assert (report.status["phase"], report.status["failedNodes"]) == ("Failed", ["edge-1"])
    assert ("Warning", "NodesFailed") in _reasons(report)
    assert ("Warning", "DockerUnavailableError") in _reasons(report)


def test_an_unlock_with_no_eligible_node_fails_with_no_matching_node(
    fake: FakeKube, unlock: dict[str, Any], node: NodeInfo
) -> None:
    unlock["spec"]["nodeSelector"] = {"group": "none-has-it"}
    with pytest.raises(SpecError) as info:
        reconcile_unlock(fake, SETTINGS, unlock, [node], now=NOW)
    assert info.value.reason == "NoMatchingNode"
    assert fake.jobs == {}
