"""Login throttling: too many failed logins for an email, or from an address, within a
window get 429 with ``Retry-After`` until the oldest of them leaves the window
(docs/protocol.md §2).

In memory, per server process: a restart forgets the failures.  A throttled
attempt is refused before its password is checked and does not count as a
failure, so waiting ``Retry-After`` seconds always helps.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoginLimits", "LoginThrottle"]

_MAX_KEYS = 100_000
"""Above this many tracked emails and addresses, the idle ones are forgotten."""


@dataclass(frozen=True)
class LoginLimits:
    """How many failed logins a window allows."""

    failures_per_email: int = 5
    """Failed logins for one email (any address) within ``window`` before 429."""

    failures_per_address: int = 20
    """Failed logins from one client address (any email) within ``window`` before 429."""

    window: float = 300.0
    """The window, in seconds."""

    def __post_init__(self) -> None:
        if self.failures_per_email < 1 or self.failures_per_address < 1:
            raise ValueError("the login failure limits must be at least 1")
        if self.window <= 0:
            raise ValueError("the login throttling window must be positive")


class LoginThrottle:
    """Counts failed logins per email and per address in a sliding window."""

    def __init__(self, limits: LoginLimits, *, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.get(key)
        if stamps is None:
            return deque()
        while stamps and stamps[0] <= now - self.limits.window:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
        return stamps

    def retry_after(self, email: str, address: str) -> int | None:
        """Seconds to wait if a login for ``email`` from ``address`` is refused now, else None."""
        now = self._clock()
        waits = []
        with self._lock:
            for key, limit in (
                (f"email:{email}", self.limits.failures_per_email),
                (f"addr:{address}", self.limits.failures_per_address),
            ):
                stamps = self._recent(key, now)
                if len(stamps) >= limit:
                    waits.append(stamps[-limit] + self.limits.window - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, email: str, address: str) -> None:
        """Record a failed login."""
        now = self._clock()
        with self._lock:
            if len(self._failures) >= _MAX_KEYS:
                for key in list(self._failures):
                    self._recent(key, now)
            for key in (f"email:{email}", f"addr:{address}"):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, email: str) -> None:
        """Forget the failures of ``email`` after a correct login."""
        with self._lock:
            self._failures.pop(f"email:{email}", None)
