"""The coalescer of node changes: a burst is served once, with the latest change of each
key, after a quiet moment, never later than its patience; a failing run stops nothing."""

from __future__ import annotations

import threading
import time
from typing import Any

from azaion_operator.memory import Coalescer


def test_a_burst_is_served_once_with_the_latest_change_of_each_key() -> None:
    served: list[dict[str, Any]] = []
    coalescer = Coalescer(quiet=0.2, patience=5)
    for i in range(100):
        coalescer.add(f"node-{i % 10}", i, served.append)
    assert coalescer.wait_idle(5)
    assert served == [{f"node-{k}": 90 + k for k in range(10)}]


def test_a_steady_stream_is_served_within_the_patience() -> None:
    times: list[float] = []
    coalescer = Coalescer(quiet=0.3, patience=0.5)
    started = time.monotonic()
    while time.monotonic() - started < 1.6:  # a change every 50 ms: never quiet
        coalescer.add("node", 1, lambda _: times.append(time.monotonic() - started))
        time.sleep(0.05)
    assert coalescer.wait_idle(5)
    assert 3 <= len(times) <= 5, times
    assert times[0] < 0.9  # 0.5 s of patience, on a loaded machine


def test_changes_during_a_run_are_served_by_the_next_one() -> None:
    served: list[dict[str, Any]] = []
    running = threading.Event()
    release = threading.Event()

    def serve(changes: dict[str, Any]) -> None:
        served.append(changes)
        running.set()
        release.wait(5)

    coalescer = Coalescer(quiet=0.05, patience=1)
    coalescer.add("a", 1, serve)
    assert running.wait(5)
    coalescer.add("b", 2, serve)
    release.set()
    assert coalescer.wait_idle(5)
    assert served == [{"a": 1}, {"b": 2}]


def test_a_run_that_fails_does_not_stop_the_next() -> None:
    served: list[dict[str, Any]] = []

    def fail(_: dict[str, Any]) -> None:
        raise RuntimeError("the API server went away")

    coalescer = Coalescer(quiet=0.05, patience=1)
    coalescer.add("a", 1, fail)
    assert coalescer.wait_idle(5)
    coalescer.add("b", 2, served.append)
    assert coalescer.wait_idle(5)
    assert served == [{"b": 2}]
