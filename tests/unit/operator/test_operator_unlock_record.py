"""An ``ImageUnlock``'s status is the record of each node's outcome: follow-up reconciles
read only the Jobs (and pods) not yet recorded as ended, and come to the same status as
a reconcile that reads them all.  Over the in-memory ``KubeApi`` (kube_support.FakeKube).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from kube_support import FakeKube

from azaion_operator import crd
from azaion_operator.errors import KubeUnavailableError
from azaion_operator.kinds.image_unlock import reconcile_unlock
from azaion_operator.nodes import NodeInfo
from azaion_operator.policy import Policy
from azaion_operator.reconcile import Report
from azaion_operator.settings import OperatorSettings

NOW = "2026-12-01T00:00:00Z"
SETTINGS = OperatorSettings(
    api_url="https://api.example",
    policy=Policy(image_unlock_namespaces=("edge",), credentials_secrets=("creds",)),
)


@pytest.fixture
def fake() -> FakeKube:
    kube = FakeKube()
    kube.add_secret("edge", "azaion-loader-credentials", ["email", "password"])
    return kube


def _nodes(node: NodeInfo, count: int) -> list[NodeInfo]:
    return [dataclasses.replace(node, name=f"edge-{i:02d}") for i in range(count)]


def _with(body: dict[str, Any], report: Report) -> dict[str, Any]:
    assert report.status is not None
    again = copy.deepcopy(body)
    again["status"] = report.status
    return again


def _on(fake: FakeKube) -> dict[str, str]:
    return {
        job["metadata"]["annotations"][crd.ANNOTATION_NODE]: name
        for (_, name), job in fake.jobs.items()
    }


def _unfinished(fake: FakeKube) -> list[str]:
    return [
        name
        for (_, name), job in sorted(fake.jobs.items())
        if not any(c.get("status") == "True" for c in job["status"].get("conditions") or ())
    ]


def _read_everything(fake: FakeKube, body: dict[str, Any], nodes: list[NodeInfo]) -> Report:
    """What a reconcile that trusts no status says (on a copy of the API's state)."""
    blind = copy.deepcopy(body)
    blind["status"] = {}
    return reconcile_unlock(copy.deepcopy(fake), SETTINGS, blind, nodes, now=NOW)


def test_follow_ups_read_only_what_is_not_recorded_as_ended_and_agree_with_a_full_read(
    fake: FakeKube, unlock: dict[str, Any], node: NodeInfo
) -> None:
    nodes = _nodes(node, 40)
    unlock["spec"]["parallelism"] = 5
    del unlock["spec"]["dockerSocketPath"]
    body = _with(unlock, reconcile_unlock(fake, SETTINGS, unlock, nodes, now=NOW))
    rounds = 0
    while body["status"]["phase"] != "Succeeded":
        rounds += 1
        # Two of the running Jobs end (one still runs in the next round), as Job events
        # trigger follow-ups in a real cluster.
        for name in _unfinished(fake)[:2]:
            fake.finish_job("edge", name, result={"ok": True, "images": [f"img:{rounds}"]})
        for name in _unfinished(fake):
            fake.run_job("edge", name)
        full = _read_everything(fake, body, nodes)
        fake.listed.clear()
        report = reconcile_unlock(fake, SETTINGS, body, nodes, now=NOW)
        assert report.status is not None and full.status is not None
        # The same status as reading every Job and pod (the Jobs are all still there) ...
        for key in ("nodes", "desired", "active", "succeeded", "failed", "images", "phase"):
            assert report.status[key] == full.status[key], key
        # ... from no more than the unfinished Jobs, those just ended, and their pods.
        assert all(count <= 5 for _, count in fake.listed), fake.listed
        # not-succeeded Jobs, just-ended Jobs, their pods, Jobs of the nodes to start
        assert len(fake.listed) <= 4
        assert len(_unfinished(fake)) <= 5  # parallelism kept
        body = _with(body, report)
    status = body["status"]
    assert (status["desired"], status["succeeded"], status["active"], status["failed"]) == (
        40,
        40,
        0,
        0,
    )
    assert {i["jobName"] for i in status["nodes"]} == set(fake.job_names("edge"))
    assert len(status["images"]) == rounds


def test_a_job_whose_status_write_was_lost_is_adopted_with_its_outcome(
    fake: FakeKube, unlock: dict[str, Any], node: NodeInfo
) -> None:
    """parallelism 1: the status that named the second node's Job was never written."""
    nodes = _nodes(node, 3)
    unlock["spec"]["parallelism"] = 1
    del unlock["spec"]["dockerSocketPath"]
    first = reconcile_unlock(fake, SETTINGS, unlock, nodes, now=NOW)
    written = _with(unlock, first)  # edge-00 running, edge-01 and edge-02 waiting
    fake.finish_job("edge", _on(fake)["edge-00"], result={"ok": True, "images": ["a:1"]})
    reconcile_unlock(fake, SETTINGS, written, nodes, now=NOW)  # creates edge-01's Job: lost
    fake.finish_job("edge", _on(fake)["edge-01"], result={"ok": True, "images": ["b:2"]})

    report = reconcile_unlock(fake, SETTINGS, written, nodes, now=NOW)
    assert report.status is not None
    items = {i["name"]: (i["phase"], i.get("jobName")) for i in report.status["nodes"]}
    assert items == {
        "edge-00": ("Succeeded", _on(fake)["edge-00"]),
        "edge-01": ("Succeeded", _on(fake)["edge-01"]),  # adopted, with its result
        "edge-02": ("Pending", _on(fake)["edge-02"]),  # its slot was free: started now
    }
    assert report.status["images"] == ["a:1", "b:2"]
    created = [e.message for e in report.events if e.reason == "JobCreated"]
    assert created == [f"created Job {_on(fake)['edge-02']} on edge-02"]  # one per Job, ever


def test_a_node_that_left_after_its_job_ended_stays_counted_while_the_job_remains(
    fake: FakeKube, unlock: dict[str, Any], node: NodeInfo
) -> None:
    nodes = _nodes(node, 2)
    del unlock["spec"]["dockerSocketPath"]
    body = _with(unlock, reconcile_unlock(fake, SETTINGS, unlock, nodes, now=NOW))
    for name in fake.job_names("edge"):
        fake.finish_job("edge", name)
    body = _with(body, reconcile_unlock(fake, SETTINGS, body, nodes, now=NOW))
    assert body["status"]["progress"] == "2/2"

    remaining = nodes[:1]  # edge-01 leaves the cluster
    kept = reconcile_unlock(fake, SETTINGS, body, remaining, now=NOW)
    assert kept.status is not None and kept.status["progress"] == "2/2"
    fake.delete_job("edge", _on(fake)["edge-01"])  # its TTL
    dropped = reconcile_unlock(fake, SETTINGS, _with(body, kept), remaining, now=NOW)
    assert dropped.status is not None and dropped.status["progress"] == "1/1"


def test_a_reconcile_from_a_stale_status_creates_nothing_twice(
    fake: FakeKube, unlock: dict[str, Any], node: NodeInfo
) -> None:
    """Follow-ups read the object, then wait for the lock: the status they read may be
    older than the one the reconcile before them wrote."""
    nodes = _nodes(node, 30)
    unlock["spec"]["parallelism"] = 10
    del unlock["spec"]["dockerSocketPath"]
    stale = _with(unlock, reconcile_unlock(fake, SETTINGS, unlock, nodes, now=NOW))
    for name in _unfinished(fake)[:6]:
        fake.finish_job("edge", name)
    newer = reconcile_unlock(fake, SETTINGS, stale, nodes, now=NOW)  # starts 6 more
    assert len(fake.jobs) == 16
    for name in ("edge-10", "edge-11", "edge-12"):  # started after the stale status
        fake.finish_job("edge", _on(fake)[name])
    fake.calls.clear()
    late = reconcile_unlock(fake, SETTINGS, stale, nodes, now=NOW)  # the status before
    assert late.status is not None and newer.status is not None
    assert fake.names().count("create_job") == 3  # only the 3 slots freed since
    assert len(fake.jobs) == 19
    assert (late.status["succeeded"], late.status["active"]) == (9, 10)
    assert _read_everything(fake, stale, nodes).status["nodes"] == late.status["nodes"]


def test_jobs_are_created_together_and_one_failure_does_not_stop_the_others(
    fake: FakeKube, unlock: dict[str, Any], node: NodeInfo
) -> None:
    nodes = _nodes(node, 12)
    unlock["spec"]["parallelism"] = 12
    del unlock["spec"]["dockerSocketPath"]
    fake.fail("create_job", KubeUnavailableError("create Job: HTTP 503", status=503))
    with pytest.raises(KubeUnavailableError):
        reconcile_unlock(fake, SETTINGS, unlock, nodes, now=NOW)
    assert len(fake.jobs) == 11  # all but the one that failed
    report = reconcile_unlock(fake, SETTINGS, unlock, nodes, now=NOW)  # no status written
    assert report.status is not None and report.status["active"] == 12
    assert len(fake.jobs) == 12
    created = [e for e in report.events if e.reason == "JobCreated"]
    assert len(created) == 1  # the other 11 were found, not created again
