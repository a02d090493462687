"""StreamWatch: a deadline and a minimum rate, checked on a fake clock; a real fire."""

from __future__ import annotations

import socket
import threading
import time

from azaion_loader.watchdog import StreamWatch, shutdown_socket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_deadline() -> None:
    clock = Clock()
    watch = StreamWatch(abort=lambda: None, deadline=110.0, clock=clock)
    assert watch.check() is None
    clock.now = 110.0
    assert watch.check() == "deadline"


def test_rate_is_measured_over_the_window() -> None:
    clock = Clock()
    watch = StreamWatch(abort=lambda: None, min_rate=100, window=10, clock=clock)
    watch._samples.append((clock.now, 0))
    for _ in range(20):  # 150 bytes/s for 20 s: above the floor
        clock.now += 1
        watch.progress(150)
        assert watch.check() is None
    verdicts = []
    for _ in range(10):  # then 50 bytes/s: the last 10 s fall below 100/s after 6 s
        clock.now += 1
        watch.progress(50)
        verdicts.append(watch.check())
    assert verdicts == [None] * 5 + ["rate"] * 5


def test_no_floor_never_fires_on_rate() -> None:
    clock = Clock()
    watch = StreamWatch(abort=lambda: None, min_rate=0, window=1, clock=clock)
    clock.now += 1000
    assert watch.check() is None


def test_fired_watch_unblocks_a_blocked_recv() -> None:
    left, right = socket.socketpair()
    try:
        watch = StreamWatch(abort=lambda: shutdown_socket(left), min_rate=1000, window=0.5)
        started = time.monotonic()
        with watch:
            assert left.recv(10) == b""  # would block forever without the watch
        assert watch.fired == "rate"
        assert time.monotonic() - started < 5
    finally:
        left.close()
        right.close()


def test_stopped_watch_never_fires() -> None:
    fired = threading.Event()
    with StreamWatch(abort=fired.set, deadline=time.monotonic() + 0.3):
        pass
    time.sleep(0.5)
    assert not fired.is_set()
