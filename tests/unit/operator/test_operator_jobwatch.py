"""Our Job watch: LIST then WATCH; only real moves are reported; LIST again after 410 or trouble.

Driven over the in-memory ``KubeApi`` with scripted watch streams (no threads:
``run`` is called directly and stops when the script is used up).  The real
stream reader is ``KubeClient.watch_jobs`` (tests/unit/operator/test_operator_kube_watch.py).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest
from kube_support import FakeKube

from azaion_operator import crd
from azaion_operator.errors import KubeUnavailableError
from azaion_operator.jobwatch import JobWatch

LABELS = {crd.LABEL_MANAGED_BY: crd.MANAGED_BY}
Reports = list[tuple[str, str]]


def _job(name: str, uid: str, *, version: str = "5", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "edge",
            "uid": uid,
            "resourceVersion": version,
            "labels": dict(LABELS),
            "managedFields": [{"manager": "kube-controller-manager"}],
        },
        "status": status,
    }


def _event(type: str, job: Mapping[str, Any], version: str | None = None) -> dict[str, Any]:
    obj = copy.deepcopy(dict(job))
    if version is not None:
        obj["metadata"]["resourceVersion"] = version
    return {"type": type, "object": obj}


class _Script(FakeKube):
    """A FakeKube whose watch stops the JobWatch once every scripted stream was served."""

    watch: JobWatch

    def watch_jobs(self, *args: Any, **kwargs: Any) -> Any:
        if not self.watches:
            self.watch.stop()
            return iter(())
        return super().watch_jobs(*args, **kwargs)


def _run(fake: _Script, *streams: Any) -> Reports:
    reports: Reports = []
    fake.watches = list(streams)
    fake.watch = JobWatch(
        fake,
        "edge",
        LABELS,
        lambda type, job: reports.append((type, job["metadata"]["name"])),
        pause=0,
    )
    fake.watch.run()
    return reports


@pytest.fixture
def fake() -> _Script:
    kube = _Script()
    kube.jobs[("edge", "running")] = _job("running", "u-1", active=1)
    kube.version = 10
    return kube


def test_the_listing_at_start_is_not_reported_and_only_moves_are(fake: _Script) -> None:
    running = fake.jobs[("edge", "running")]
    fresh = _job("fresh", "u-2")
    stream = [
        _event("MODIFIED", running, "11"),  # the same state: a relabel, a heartbeat
        _event("ADDED", fresh, "12"),  # no pod yet: the reconcile that made it reported it
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
        _event("MODIFIED", {**fresh, "status": {"active": 1}}, "14"),
        _event(
            "MODIFIED",
            {
                **running,
                "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
            },
            "15",
        ),
        _event("DELETED", running, "16"),
    ]
    assert _run(fake, stream, []) == [
        ("MODIFIED", "fresh"),
        ("MODIFIED", "running"),
        ("DELETED", "running"),
    ]
    # One listing; the second watch resumed from the last version seen, bookmarks included.
    assert [c for c in fake.calls if c[0] != "watch_jobs"] == [("list_jobs_versioned", "edge")]
    assert [c[2] for c in fake.calls if c[0] == "watch_jobs"] == ["10", "16"]


class _After(list):  # type: ignore[type-arg]
    """A scripted stream that first changes the cluster (what happened while it was served)."""

    def __init__(self, change: Any, events: list[Any]) -> None:
        super().__init__(events)
        self.change = change

    def __iter__(self) -> Any:
        self.change()
        return super().__iter__()


def test_410_gone_lists_again_and_reports_what_moved_or_vanished_meanwhile(
    fake: _Script,
) -> None:
    fake.jobs[("edge", "done")] = _job("done", "u-3", succeeded=1)

    def meanwhile() -> None:
        # While the watch was away: "running" failed, "done" was deleted, "new" appeared
        # with a pod, "idle" appeared without one.
        fake.jobs[("edge", "running")]["status"] = {"failed": 1}
        del fake.jobs[("edge", "done")]
        fake.jobs[("edge", "new")] = _job("new", "u-4", active=1)
        fake.jobs[("edge", "idle")] = _job("idle", "u-5")
        fake.version = 20

    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}
    reports = _run(fake, _After(meanwhile, [gone]), [])
    assert sorted(reports) == [("DELETED", "done"), ("MODIFIED", "new"), ("MODIFIED", "running")]
    assert [c[0] for c in fake.calls] == [
        "list_jobs_versioned",
        "watch_jobs",
        "list_jobs_versioned",
        "watch_jobs",
    ]
    assert fake.calls[-1][2] == "20"  # the new listing's version


def test_a_broken_stream_is_survived_by_listing_again(fake: _Script) -> None:
    running = fake.jobs[("edge", "running")]
    moved = {**running, "status": {"active": 1, "ready": 1}}

    def pod_ready() -> None:
        fake.jobs[("edge", "running")] = copy.deepcopy(moved)

    broken = [_event("MODIFIED", moved, "11"), KubeUnavailableError("watch: ProtocolError")]
    assert _run(fake, KubeUnavailableError("watch: HTTP 503"), _After(pod_ready, broken), []) == [
        ("MODIFIED", "running")
    ]
    # The listings after trouble report nothing: no Job moved since last seen.
    assert [c[0] for c in fake.calls].count("list_jobs_versioned") == 3


def test_a_failing_report_does_not_stop_the_watch(fake: _Script) -> None:
    running = fake.jobs[("edge", "running")]
    seen: list[str] = []

    def on_move(type: str, job: Mapping[str, Any]) -> None:
        seen.append(job["metadata"]["resourceVersion"])
        raise RuntimeError("a bug in a follow-up")

    fake.watches = [
        [
            _event("MODIFIED", {**running, "status": {"active": 1, "ready": 1}}, "11"),
            _event("DELETED", running, "12"),
        ],
        [],
    ]
    fake.watch = JobWatch(fake, "edge", LABELS, on_move, pause=0)
    fake.watch.run()
    assert seen == ["11", "12"]
