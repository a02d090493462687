"""What the operator remembers between handler calls, in one object made at start-up.

kopf hands every handler a ``memo``: one per watched object, each a shallow
copy of the operator's own, so an object made at start-up and put on it is
shared by every handler thread.  :class:`OperatorMemory` is that object; it
holds what spans objects (locks per custom resource, the quiet gate, the
follow-ups already queued, warnings already given, node changes waiting to be
served together).  What belongs to one
watched object (the last state of a Job or a Node) lives in that object's own
memo instead (``handlers``), and goes when kopf forgets the object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from azaion_operator.gate import QuietGate

__all__ = ["Bodies", "Coalescer", "KeyedLocks", "Once", "OperatorMemory", "PendingSet"]

log = logging.getLogger(__name__)


class KeyedLocks:
    """One lock per key (a custom resource's uid): its reconciles never overlap."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield


class Once:
    """Keys seen before, so a warning is given once per process, not once per reconcile."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._guard = threading.Lock()

    def first(self, key: str) -> bool:
        """True the first time ``key`` is asked about, False ever after."""
        with self._guard:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True


class PendingSet:
    """Keys with work queued: a second request for a key already queued is dropped
    (its value, if any, replaces the queued one: the work sees the latest)."""

    def __init__(self) -> None:
        self._keys: dict[str, Any] = {}
        self._guard = threading.Lock()

    def add(self, key: str, value: Any = None) -> bool:
        """Queue ``key`` with ``value``; False if it was queued already (the value is updated)."""
        with self._guard:
            queued = key in self._keys
            self._keys[key] = value
            return not queued

    def discard(self, key: str) -> None:
        """The work for ``key`` has started: a new request queues it again."""
        self.take(key)

    def take(self, key: str) -> Any:
        """Like :meth:`discard`, returning the latest value queued with ``key``."""
        with self._guard:
            return self._keys.pop(key, None)


class Bodies:
    """The last known body of each custom resource (by uid), as our own status writes left it.

    A follow-up that starts from it needs no read of its owner.  Kept only
    while the object may still move (the handlers drop it once its status is
    final, when its Job is deleted, and when a write finds the object gone).
    """

    def __init__(self) -> None:
        self._bodies: dict[str, Mapping[str, Any]] = {}
        self._guard = threading.Lock()

    def get(self, uid: str) -> Mapping[str, Any] | None:
        with self._guard:
            return self._bodies.get(uid)

    def put(self, uid: str, body: Mapping[str, Any]) -> None:
        with self._guard:
            self._bodies[uid] = body

    def drop(self, uid: str) -> None:
        with self._guard:
            self._bodies.pop(uid, None)

    def __len__(self) -> int:
        with self._guard:
            return len(self._bodies)


class Coalescer:
    """Changes by key, served together: one run once no change came for ``quiet`` seconds
    (or ``patience`` seconds after the first of a burst), in a thread of its own.

    500 Nodes joining make some 2,000 Node events; each reconciled every custom
    resource (listing them all, and an ``ImageUnlock``'s Jobs) on its own.  Here a
    burst of them costs a few runs, each given the latest change of every key.
    """

    def __init__(self, *, quiet: float, patience: float) -> None:
        self._quiet = quiet
        self._patience = patience
        self._changed = threading.Condition()
        self._pending: dict[str, Any] = {}
        self._serve: Callable[[dict[str, Any]], None] | None = None
        self._first = self._last = 0.0
        self._worker: threading.Thread | None = None

    def add(self, key: str, change: Any, serve: Callable[[dict[str, Any]], None]) -> None:
        """Note ``change`` of ``key``; ``serve`` (the latest given) runs with all pending."""
        with self._changed:
            now = time.monotonic()
            if not self._pending:
                self._first = now
            self._pending[key] = change
            self._serve = serve
            self._last = now
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name="azaion-coalesced", daemon=True
                )
                self._worker.start()
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                while True:
                    if not self._pending or self._serve is None:
                        self._worker = None  # the next change starts a new one
                        self._changed.notify_all()
                        return
                    now = time.monotonic()
                    due = min(self._last + self._quiet, self._first + self._patience)
                    if now >= due:
                        break
                    self._changed.wait(due - now)
                pending, self._pending = self._pending, {}
                serve = self._serve
            try:
                serve(pending)
            except Exception:  # the next burst must be served all the same
                log.exception("serving %d coalesced changes failed", len(pending))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending or being served; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._worker is None, timeout)


@dataclasses.dataclass
class OperatorMemory:
    """The operator's shared memory (``memo.memory``)."""

    locks: KeyedLocks = dataclasses.field(default_factory=KeyedLocks)
    """Reconciles of one custom resource (by uid) run one at a time."""
    gate: QuietGate = dataclasses.field(default_factory=lambda: QuietGate(quiet=0.5))
    """Change handlers go first; follow-ups wait for a quiet moment (``gate``)."""
    followups: PendingSet = dataclasses.field(default_factory=PendingSet)
    """Owners (by uid) with a follow-up reconcile queued (one is enough), each with the
    latest state of the Job that asked for it."""
    bodies: Bodies = dataclasses.field(default_factory=Bodies)
    """The custom resources as our last status write left them (follow-ups start there)."""
    warned: Once = dataclasses.field(default_factory=Once)
    """Warnings already logged (an RBAC gap is told once, not on every reconcile)."""
    node_changes: Coalescer = dataclasses.field(
        default_factory=lambda: Coalescer(quiet=1.0, patience=5.0)
    )
    """Node changes not yet served: a burst of them reconciles each custom resource once."""
