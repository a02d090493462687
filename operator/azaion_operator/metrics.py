"""Prometheus metrics of the operator, and its readiness, on one small HTTP endpoint.

What is counted comes from comparing a custom resource's status before and
after a reconcile (:func:`observations`, pure), so each transition is counted
once, by the reconcile that caused it:

    azaion_loader_reconciles_total{kind, result}          ok | spec_error | api_error
    azaion_loader_jobs_created_total{kind}
    azaion_loader_failures_total{kind, reason}            the Failed condition's reason
    azaion_loader_ready_seconds{kind}                     apply (creationTimestamp) -> Succeeded
    azaion_loader_unlock_nodes_total{result, reason}      per-node outcomes of ImageUnlocks
    azaion_loader_delivered_bytes_total                   sizes of Resources delivered

``GET /metrics`` serves them; ``GET /readyz`` answers 200 when the API server
answers (the ``probe`` given, asked at most every ``probe_every`` seconds),
503 otherwise, so a readiness probe takes the pod out while it cannot reach
the API server.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.server
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "Observation", "observations"]

_READY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


@dataclasses.dataclass(frozen=True)
class Observation:
    """One increment: ``metric`` (a name below) with ``labels``, by ``value``."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    value: float = 1.0


def _seconds_since(stamp: str | None, now: datetime.datetime) -> float | None:
    if not stamp:
        return None
    try:
        then = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (now - then).total_seconds())


def _failed_reason(status: Mapping[str, Any]) -> str:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return str(condition.get("reason") or "Unknown")
    return "Unknown"


def observations(
    kind: str,
    body: Mapping[str, Any],
    new_status: Mapping[str, Any] | None,
    *,
    jobs_created: int,
    now: datetime.datetime,
) -> Iterator[Observation]:
    """What one reconcile of ``body`` (its old status in ``body``) to ``new_status`` counts."""
    if jobs_created:
        yield Observation("jobs_created", (("kind", kind),), jobs_created)
    if new_status is None:
        return
    old = body.get("status") or {}
    same_generation = old.get("observedGeneration") == new_status.get("observedGeneration")
    before = old.get("phase") if same_generation else None
    after = new_status.get("phase")
    if after != before and after == "Failed":
        yield Observation("failures", (("kind", kind), ("reason", _failed_reason(new_status))))
    if after != before and after == "Succeeded":
        took = _seconds_since((body.get("metadata") or {}).get("creationTimestamp"), now)
        if took is not None:
            yield Observation("ready_seconds", (("kind", kind),), took)
        size = (new_status.get("result") or {}).get("size")
        if kind == "Resource" and isinstance(size, int):
            yield Observation("delivered_bytes", (), size)
    if kind == "ImageUnlock":
        was = {n.get("name"): n.get("phase") for n in (old.get("nodes") or ()) if same_generation}
        for node in new_status.get("nodes") or ():
            phase = node.get("phase")
            if phase in ("Succeeded", "Failed") and was.get(node.get("name")) != phase:
                labels = (("result", phase.lower()), ("reason", str(node.get("reason", ""))))
                yield Observation("unlock_nodes", labels)


class Metrics:
    """The operator's metrics in a registry of their own, and the endpoint serving them."""

    def __init__(self, *, probe: Callable[[], bool], probe_every: float = 5.0) -> None:
        self.registry = CollectorRegistry()
        prefix = "azaion_loader"
        self._counters = {
            "reconciles": Counter(
                f"{prefix}_reconciles",
                "Reconciles of custom resources, by kind and result",
                ["kind", "result"],
                registry=self.registry,
            ),
            "jobs_created": Counter(
                f"{prefix}_jobs_created",
                "Jobs the operator created, by the kind of their owner",
                ["kind"],
                registry=self.registry,
            ),
            "failures": Counter(
                f"{prefix}_failures",
                "Custom resources that ended Failed, by kind and reason",
                ["kind", "reason"],
                registry=self.registry,
            ),
            "unlock_nodes": Counter(
                f"{prefix}_unlock_nodes",
                "Per-node outcomes of ImageUnlocks, by result and reason",
                ["result", "reason"],
                registry=self.registry,
            ),
            "delivered_bytes": Counter(
                f"{prefix}_delivered_bytes",
                "Bytes of Resources delivered (their plaintext size)",
                registry=self.registry,
            ),
        }
        self._ready = Histogram(
            f"{prefix}_ready_seconds",
            "Seconds from a custom resource's creation to Succeeded, by kind",
            ["kind"],
            buckets=_READY_BUCKETS,
            registry=self.registry,
        )
        self._probe, self._probe_every = probe, probe_every
        self._probed: tuple[float, bool] | None = None
        self._probe_lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    def reconciled(self, kind: str, result: str) -> None:
        self._counters["reconciles"].labels(kind=kind, result=result).inc()

    def record(self, items: Iterator[Observation]) -> None:
        for item in items:
            labels = dict(item.labels)
            if item.metric == "ready_seconds":
                self._ready.labels(**labels).observe(item.value)
                continue
            counter = self._counters[item.metric]
            (counter.labels(**labels) if labels else counter).inc(item.value)

    def ready(self) -> bool:
        """Whether the API server answers (the answer is kept ``probe_every`` seconds)."""
        with self._probe_lock:
            now = time.monotonic()
            if self._probed is None or now - self._probed[0] >= self._probe_every:
                self._probed = (now, bool(self._probe()))
            return self._probed[1]

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` and ``/readyz`` in a daemon thread; the port bound."""
        metrics = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] == "/metrics":
                    self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/readyz":
                    ok = metrics.ready()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"no API contact\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # probes every few seconds: no access log

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="azaion-metrics", daemon=True
        ).start()
        return int(self._server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
