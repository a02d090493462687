"""What a reconcile counts (pure), and the /metrics and /readyz endpoint."""

from __future__ import annotations

import datetime
import urllib.error
import urllib.request
from typing import Any

from azaion_operator.metrics import Metrics, Observation, observations

NOW = datetime.datetime(2026, 12, 1, 0, 1, 30, tzinfo=datetime.UTC)


def _body(kind: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": "x", "creationTimestamp": "2026-12-01T00:00:00Z"},
        "status": status or {},
    }


def _failed(reason: str) -> dict[str, Any]:
    return {
        "phase": "Failed",
        "observedGeneration": 1,
        "conditions": [{"type": "Failed", "status": "True", "reason": reason}],
    }


def test_a_resource_delivered() -> None:
    new = {"phase": "Succeeded", "observedGeneration": 1, "result": {"size": 4096}}
    old = {"phase": "Running", "observedGeneration": 1}
    got = list(observations("Resource", _body("Resource", old), new, jobs_created=0, now=NOW))
    assert got == [
        Observation("ready_seconds", (("kind", "Resource"),), 90.0),
        Observation("delivered_bytes", (), 4096),
    ]
    # The same status again counts nothing: each transition once.
    again = _body("Resource", new)
    assert list(observations("Resource", again, new, jobs_created=0, now=NOW)) == []


def test_a_failure_by_reason_and_a_job() -> None:
    got = list(
        observations(
            "Resource", _body("Resource"), _failed("PolicyDenied"), jobs_created=1, now=NOW
        )
    )
    assert got == [
        Observation("jobs_created", (("kind", "Resource"),), 1),
        Observation("failures", (("kind", "Resource"), ("reason", "PolicyDenied"))),
    ]


def test_unlock_nodes_counted_as_they_finish() -> None:
    old = {
        "phase": "Running",
        "observedGeneration": 2,
        "nodes": [{"name": "a", "phase": "Succeeded"}, {"name": "b", "phase": "Running"}],
    }
    new = {
        "phase": "Failed",
        "observedGeneration": 2,
        "conditions": [{"type": "Failed", "status": "True", "reason": "NodesFailed"}],
        "nodes": [
            {"name": "a", "phase": "Succeeded", "reason": "Succeeded"},
            {"name": "b", "phase": "Failed", "reason": "UnsupportedRuntime"},
        ],
    }
    got = list(observations("ImageUnlock", _body("ImageUnlock", old), new, jobs_created=0, now=NOW))
    assert got == [
        Observation("failures", (("kind", "ImageUnlock"), ("reason", "NodesFailed"))),
        Observation("unlock_nodes", (("result", "failed"), ("reason", "UnsupportedRuntime"))),
    ]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_endpoint_serves_metrics_and_readiness() -> None:
    reachable = [True]
    metrics = Metrics(probe=lambda: reachable[0], probe_every=0)
    port = metrics.serve("127.0.0.1", 0)
    try:
        metrics.reconciled("Resource", "ok")
        metrics.record(iter([Observation("failures", (("kind", "Resource"), ("reason", "X")))]))
        metrics.record(iter([Observation("ready_seconds", (("kind", "Resource"),), 3.0)]))
        code, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200
        assert 'azaion_loader_reconciles_total{kind="Resource",result="ok"} 1.0' in text
        assert 'azaion_loader_failures_total{kind="Resource",reason="X"} 1.0' in text
        assert 'azaion_loader_ready_seconds_bucket{kind="Resource",le="5.0"} 1.0' in text
        assert _get(f"http://127.0.0.1:{port}/readyz") == (200, "ok\n")
        reachable[0] = False
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 503
        assert _get(f"http://127.0.0.1:{port}/other")[0] == 404
    finally:
        metrics.close()
