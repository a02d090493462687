"""A watchdog for network streams: a total deadline and a minimum byte rate.

Per-read timeouts do not end a peer that sends one byte every few seconds:
each read returns in time, and the transfer never does.  A
:class:`StreamWatch` runs beside the transfer in its own thread and, once
the deadline has passed or fewer than ``min_rate * window`` bytes arrived in
the last ``window`` seconds, calls ``abort`` once (the clients shut their
socket down, which ends the blocked read at once) and records why in
:attr:`StreamWatch.fired`.  The transfer's own error handling then sees a
broken stream, and the client turns it into its error with that reason.

    with StreamWatch(abort=lambda: shutdown(sock), deadline=time.monotonic() + 60) as watch:
        for chunk in stream:
            watch.progress(len(chunk))
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["StreamWatch", "response_sockets", "shutdown_socket"]


def shutdown_socket(sock: Any) -> None:
    """Shut ``sock`` down both ways (a blocked ``recv`` returns), ignoring a closed one."""
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def response_sockets(raw: Any) -> list[Any]:
    """The sockets a urllib3 response may be reading from, to shut down.

    Its connection's socket while the connection is open; once ``http.client``
    has detached it (a ``Connection: close`` answer), only the response's
    file still holds it, under ``fp.raw._sock``.
    """
    found = [getattr(getattr(raw, "connection", None), "sock", None)]
    fp = getattr(getattr(raw, "_fp", None), "fp", None)
    found.append(getattr(getattr(fp, "raw", None), "_sock", None))
    return [sock for sock in found if sock is not None]


class StreamWatch:
    """Calls ``abort`` once when ``deadline`` (monotonic) passes or the rate stays low."""

    def __init__(
        self,
        *,
        abort: Callable[[], None],
        deadline: float | None = None,
        min_rate: float = 0.0,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._abort = abort
        self.deadline = deadline
        self.min_rate = min_rate
        self.window = window
        self._clock = clock
        self._received = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired: str | None = None
        """Why the watch aborted the stream; ``None`` while it has not."""

    def progress(self, n: int) -> None:
        """Count ``n`` more bytes received (called from the transfer's thread)."""
        self._received += n

    def check(self) -> str | None:
        """Why the stream should end now, or ``None`` (one tick of the watch)."""
        now = self._clock()
        if self.deadline is not None and now >= self.deadline:
            return "deadline"
        if self.min_rate <= 0:
            return None
        self._samples.append((now, self._received))
        # Keep one sample at least a window old: the rate is measured against it.
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()
        start, count = self._samples[0]
        if now - start >= self.window and self._received - count < self.min_rate * self.window:
            return "rate"
        return None

    def _run(self) -> None:
        tick = min(0.25, self.window / 8)
        while not self._done.wait(tick):
            why = self.check()
            if why is not None:
                self.fired = why
                self._abort()
                return

    def __enter__(self) -> StreamWatch:
        self._samples.append((self._clock(), 0))
        self._thread = threading.Thread(target=self._run, name="loader-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """End the watch (idempotent); it never fires after this returns."""
        self._done.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
