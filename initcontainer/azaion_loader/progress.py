"""Progress reporting on stderr: a bar on a terminal, periodic lines otherwise.

Library code takes a plain callback ``Callable[[int], None]`` (bytes done
since the last call); the CLI builds a :class:`Progress` and passes its
:meth:`Progress.advance`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "ProgressCallback", "human_size"]

ProgressCallback = Callable[[int], None]


def human_size(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class Progress:
    """Reports bytes done out of ``total`` (``0`` if unknown) under a ``label``."""

    def __init__(
        self,
        label: str,
        total: int = 0,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval: float | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.enabled = enabled
        self._clock = clock
        self._start = clock()
        self._last = self._start
        self._drawn = False

    def set_total(self, total: int) -> None:
        """Set or change the expected total."""
        self.total = total

    def advance(self, n: int) -> None:
        """Count ``n`` more bytes; redraw at most every ``interval`` seconds."""
        self.done += n
        now = self._clock()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._emit(final=False)

    def finish(self) -> None:
        """Draw the last state (and end the bar's line on a terminal)."""
        if self.enabled and (self._drawn or not self.tty):
            self._emit(final=True)

    def _rate(self) -> float:
        elapsed = max(self._clock() - self._start, 1e-6)
        return self.done / elapsed

    def _emit(self, *, final: bool) -> None:
        rate = human_size(self._rate()) + "/s"
        if self.total:
            pct = min(100.0, 100.0 * self.done / self.total)
            amount = f"{human_size(self.done)} / {human_size(self.total)}"
        else:
            pct = 0.0
            amount = human_size(self.done)
        if self.tty:
            width = 30
            filled = int(width * pct / 100) if self.total else 0
            bar = "#" * filled + "-" * (width - filled)
            line = f"\r{self.label} [{bar}] {pct:5.1f}% {amount} {rate}"
            self.stream.write(line + ("\n" if final else ""))
            self._drawn = True
        else:
            state = "done" if final else "progress"
            pct_text = f" {pct:.0f}%" if self.total else ""
            self.stream.write(f"loader: {self.label} {state}:{pct_text} {amount} {rate}\n")
        self.stream.flush()
