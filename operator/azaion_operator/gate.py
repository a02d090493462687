"""Change handlers first: follow-ups wait for a quiet moment, for a bounded time.

In a burst of new custom resources, every Job the operator creates soon
changes state and asks for a follow-up reconcile (an API read or three and a
status write).  Run during the burst, those follow-ups compete with the burst
for the API server and the operator's one core; waiting until no change
handler has started for a moment lets the new objects get their Jobs first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

__all__ = ["QuietGate"]


class QuietGate:
    """Tracks change handlers; follow-ups wait (a bounded time) for a quiet moment.

    Quiet: no change handler running and none started for ``quiet`` seconds,
    so that follow-ups stay out of a burst of new objects, not just out of
    the gaps between its handlers.
    """

    def __init__(self, quiet: float = 0.5) -> None:
        self._quiet = quiet
        self._busy = 0
        self._last_start = -quiet
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        with self._changed:
            self._busy += 1
            self._last_start = time.monotonic()
        try:
            yield
        finally:
            with self._changed:
                self._busy -= 1
                self._changed.notify_all()

    def wait_quiet(self, patience: float) -> None:
        """Return once quiet, or after ``patience`` seconds."""
        deadline = time.monotonic() + patience
        with self._changed:
            while True:
                now = time.monotonic()
                calm_at = self._last_start + self._quiet
                if (not self._busy and now >= calm_at) or now >= deadline:
                    return
                # Woken when a handler ends; else re-check when the quiet period would end.
                self._changed.wait(min(deadline, max(calm_at, now + 0.05)) - now)
