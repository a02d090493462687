"""What the operator remembers between handler calls, in one object made at start-up.

kopf hands every handler a ``memo``: one per watched object, each a shallow
copy of the operator's own, so an object made at start-up and put on it is
shared by every handler thread.  :class:`OperatorMemory` is that object; it
holds what spans objects (locks per custom resource, the quiet gate, the
follow-ups already queued, warnings already given).  What belongs to one
watched object (the last state of a Job or a Node) lives in that object's own
memo instead (``handlers``), and goes when kopf forgets the object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator

from azaion_operator.gate import QuietGate

__all__ = ["KeyedLocks", "Once", "OperatorMemory", "PendingSet"]


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
