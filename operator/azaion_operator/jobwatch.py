"""Our own watch on the operator's Jobs: the moves that matter feed the follow-up reconciles.

Through kopf each Job event cost about 2 ms of CPU (its queues, per-object
tasks, causes, diff base and logging; 3-4 events per Job), and kopf watched
every Job of the namespace, ours or not, filtering by label on its side.
This watch asks the API server for our Jobs only (label selector), reads the
stream as plain JSON in one thread and keeps each Job's last state, so only a
real move costs anything::

    LIST       states recorded, nothing reported (kopf's resume handlers
               reconcile every owner at start-up)
    WATCH      from the listing's version: an ADDED or MODIFIED Job whose state
               moved is reported, a DELETED one always; a fresh Job with no pod
               yet is not (the reconcile that created it reported it)
    the server ends the watch     WATCH again from the last version seen
                                  (bookmarks keep it fresh)
    410 Gone, a broken stream     LIST again after a pause: Jobs whose state
    or any error                  moved, or which vanished, in the gap are
                                  reported (as MODIFIED / DELETED)

``on_move(type, job)`` runs on the watch's thread and must return quickly
(the handlers queue a follow-up); an exception in it is logged, never fatal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from azaion_operator.errors import KubeError
from azaion_operator.kubeapi import KubeApi

__all__ = ["JobWatch", "job_state"]

log = logging.getLogger(__name__)

IDLE: tuple[Any, ...] = (0, 0, 0, 0, ())
"""The state of a Job with no pod yet."""

_KEPT_METADATA = ("name", "namespace", "uid", "labels", "ownerReferences", "annotations")


def job_state(job: Mapping[str, Any]) -> tuple[Any, ...]:
    """What about a Job matters to its owner: pod counts and the conditions that hold."""
    status = job.get("status") or {}
    conditions = tuple(
        sorted(
            c.get("type", "") for c in status.get("conditions") or () if c.get("status") == "True"
        )
    )
    return (
        status.get("active") or 0,
        status.get("ready") or 0,
        status.get("succeeded") or 0,
        status.get("failed") or 0,
        conditions,
    )


class _Gone(Exception):
    """The watch's version is too old (410): list again."""


class JobWatch:
    """LIST + WATCH of the Jobs with ``labels`` in ``namespace`` (``None``: all), in a thread."""

    def __init__(
        self,
        kube: KubeApi,
        namespace: str | None,
        labels: Mapping[str, str],
        on_move: Callable[[str, Mapping[str, Any]], None],
        *,
        timeout: int = 300,
        pause: float = 1.0,
        max_pause: float = 30.0,
    ) -> None:
        self._kube = kube
        self._namespace = namespace
        self._labels = dict(labels)
        self._on_move = on_move
        self._timeout = timeout
        self._pause = pause
        self._max_pause = max_pause
        self._stopped = threading.Event()
        self._known: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        """Each Job's last state and the metadata a DELETED report needs, by uid."""
        self._version = ""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        name = f"azaion-jobwatch-{self._namespace or 'all'}"
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current event (the thread is a daemon: the process need not wait)."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def run(self) -> None:
        """LIST, then WATCH, until :meth:`stop`; LIST again after any trouble."""
        pause = self._pause
        listed = False
        while not self._stopped.is_set():
            try:
                if not listed:
                    self._list(report=bool(self._version))
                    listed = True
                self._watch()
                pause = self._pause  # a watch the server ended normally: all is well
            except _Gone:
                log.info("Job watch %s: version too old, listing again", self._where)
                listed = False
            except KubeError as error:
                log.warning("Job watch %s: %s (listing again in %.0f s)", self._where, error, pause)
                listed = False
                self._stopped.wait(pause)
                pause = min(pause * 2, self._max_pause)
            except Exception:  # the thread must outlive anything one round runs into
                log.exception("Job watch %s failed (listing again in %.0f s)", self._where, pause)
                listed = False
                self._stopped.wait(pause)
                pause = min(pause * 2, self._max_pause)

    @property
    def _where(self) -> str:
        return f"in {self._namespace}" if self._namespace else "in all namespaces"

    def _list(self, *, report: bool) -> None:
        """Record every Job's state; ``report``: also what moved or vanished since last seen."""
        jobs, version = self._kube.list_jobs_versioned(self._namespace, self._labels)
        before = self._known
        self._known = {}
        for job in jobs:
            uid = str(job["metadata"].get("uid"))
            old = before.pop(uid, None)
            state = job_state(job)
            self._known[uid] = (state, _slim(job))
            if report and state != (old[0] if old else IDLE):
                self._report("MODIFIED", job)
        if report:
            for _, meta in before.values():  # deleted while nobody watched
                self._report("DELETED", meta)
        self._version = version

    def _watch(self) -> None:
        events = self._kube.watch_jobs(
            self._namespace, self._labels, self._version, timeout=self._timeout
        )
        for event in events:
            if self._stopped.is_set():
                return
            kind, job = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if job.get("code") == 410:
                    raise _Gone
                raise KubeError(f"watch Jobs {self._where}: {job.get('message', job)}")
            self._version = str((job.get("metadata") or {}).get("resourceVersion") or self._version)
            if kind in ("ADDED", "MODIFIED"):
                self._seen(str(kind), job)
            elif kind == "DELETED":
                self._known.pop(str(job["metadata"].get("uid")), None)
                self._report("DELETED", job)

    def _seen(self, kind: str, job: Mapping[str, Any]) -> None:
        uid = str(job["metadata"].get("uid"))
        old = self._known.get(uid)
        state = job_state(job)
        self._known[uid] = (state, old[1] if old else _slim(job))
        if state != (old[0] if old else IDLE):
            self._report(kind, job)

    def _report(self, kind: str, job: Mapping[str, Any]) -> None:
        try:
            self._on_move(kind, job)
        except Exception:  # one bad report must not stop the watch
            log.exception("Job watch %s: handling a %s Job failed", self._where, kind)


def _slim(job: Mapping[str, Any]) -> dict[str, Any]:
    """What a DELETED report needs of a Job: its metadata without the bulk."""
    meta = job.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta}}
