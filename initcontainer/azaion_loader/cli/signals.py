"""SIGTERM and SIGHUP end a command the way Ctrl-C does: cleanly, with their own exit code.

Kubernetes stops a container with SIGTERM (Job deletion, ``activeDeadlineSeconds``,
eviction, node drain), a closed terminal sends SIGHUP.  Python's default for
both is to die on the spot, skipping every ``finally``: a fetch left its
temporary file and an unlock its work directory.  Inside
:func:`terminate_on_signals` they raise :class:`Terminated` in the main
thread instead, which unwinds like ``KeyboardInterrupt`` (a ``BaseException``,
so no ``except Exception`` swallows it): writers abort, work directories are
removed, ``docker load`` is killed.  Only the first signal raises; later ones
are ignored, so they cannot interrupt that cleanup halfway.

SIGKILL cannot be caught: :mod:`azaion_loader.atomic_write` covers it with nameless
temporaries and a sweep of stale ones.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

__all__ = ["HANDLED", "Terminated", "terminate_on_signals"]

HANDLED = (signal.SIGTERM, signal.SIGHUP)
"""The signals that end a command cleanly (SIGINT is Python's KeyboardInterrupt)."""


class Terminated(BaseException):
    """A SIGTERM or SIGHUP arrived; unwinds the command like ``KeyboardInterrupt``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"terminated by {self.name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a death by that signal (143 for SIGTERM)."""
        return 128 + self.signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (main thread only)."""
    previous = {sig: signal.signal(sig, _raise) for sig in HANDLED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
