"""Polling until something holds, for the end-to-end tests and the benchmarks (stdlib only).

Tests and benchmarks may sleep; the operator's handlers never do (they react to
events).  On time-out the error names what was awaited:

    wait_for("the Job", lambda: batch.list_namespaced_job(ns).items, timeout=60)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_for"]


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float = 60.0,
    every: float = 0.5,
    *,
    error: Callable[[str], BaseException] = AssertionError,
) -> Any:
    """Poll ``check`` every ``every`` seconds until it returns something truthy, and return it;
    after ``timeout`` seconds raise ``error`` (AssertionError: a test failure; a benchmark
    passes SystemExit)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
