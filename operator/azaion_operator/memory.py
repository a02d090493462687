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
from collections.abc import Callable, Iterator
from typing import Any

from azaion_operator.gate import QuietGate

__all__ = ["Coalescer", "KeyedLocks", "Once", "OperatorMemory", "PendingSet"]

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
    """Keys with work queued: a second request for a key already queued is dropped."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._guard = threading.Lock()

    def add(self, key: str) -> bool:
        """Queue ``key``; False if it was queued already."""
        with self._guard:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def discard(self, key: str) -> None:
        """The work for ``key`` has started: a new request queues it again."""
        with self._guard:
            self._keys.discard(key)


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
    """Owners (by uid) with a follow-up reconcile queued: one is enough, it reads afresh."""
    warned: Once = dataclasses.field(default_factory=Once)
    """Warnings already logged (an RBAC gap is told once, not on every reconcile)."""
    node_changes: Coalescer = dataclasses.field(
        default_factory=lambda: Coalescer(quiet=1.0, patience=5.0)
    )
    """Node changes not yet served: a burst of them reconciles each custom resource once."""
