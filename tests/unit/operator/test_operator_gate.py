"""The quiet gate: follow-ups wait while change handlers run or just started, never forever."""

from __future__ import annotations

import threading
import time

from azaion_operator.gate import QuietGate


def test_quiet_gate_does_not_wait_when_nothing_ran() -> None:
    gate = QuietGate(quiet=0.5)
    started = time.monotonic()
    gate.wait_quiet(patience=5)
    assert time.monotonic() - started < 0.1


def test_waits_for_the_quiet_period_after_a_handler() -> None:
    gate = QuietGate(quiet=0.3)
    with gate.busy():
        pass
    started = time.monotonic()
    gate.wait_quiet(patience=5)
    assert 0.25 <= time.monotonic() - started < 1.0


def test_waits_while_a_handler_runs_then_the_quiet_period() -> None:
    gate = QuietGate(quiet=0.2)
    release = threading.Event()

    def handler() -> None:
        with gate.busy():
            release.wait(5)

    thread = threading.Thread(target=handler)
    thread.start()
    time.sleep(0.05)
    threading.Timer(0.4, release.set).start()
    started = time.monotonic()
    gate.wait_quiet(patience=5)
    waited = time.monotonic() - started
    thread.join()
    # Blocked until the handler ended (~0.35 s) and not longer than its quiet period after.
    assert 0.3 <= waited < 1.0


def test_patience_bounds_the_wait() -> None:
    gate = QuietGate(quiet=0.1)
    with gate.busy():
        started = time.monotonic()
        gate.wait_quiet(patience=0.3)
        assert 0.25 <= time.monotonic() - started < 1.0
