"""Login throttling with a fake clock: limits per email and per address, a sliding window."""

from __future__ import annotations

import pytest

from azaion_loader.server.throttle import LoginLimits, LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_nth_failure_for_an_email_blocks_until_the_oldest_leaves_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(LoginLimits(failures_per_email=3, window=60), clock=clock)
    for step in range(3):
        assert throttle.retry_after("a@x", "10.0.0.1") is None
        throttle.failed("a@x", f"10.0.0.{step}")
        clock.now += 10
    assert throttle.retry_after("a@x", "10.0.0.9") == 30  # the first failure was at 1000
    assert throttle.retry_after("b@x", "10.0.0.9") is None  # other emails are not blocked
    clock.now += 30
    assert throttle.retry_after("a@x", "10.0.0.9") is None


def test_an_address_is_blocked_across_emails() -> None:
    clock = Clock()
    throttle = LoginThrottle(
        LoginLimits(failures_per_email=10, failures_per_address=2, window=60), clock=clock
    )
    throttle.failed("a@x", "10.0.0.1")
    throttle.failed("b@x", "10.0.0.1")
    assert throttle.retry_after("c@x", "10.0.0.1") == 60
    assert throttle.retry_after("c@x", "10.0.0.2") is None


def test_a_correct_login_forgets_the_email_s_failures() -> None:
    throttle = LoginThrottle(LoginLimits(failures_per_email=2, window=60), clock=Clock())
    throttle.failed("a@x", "1")
    throttle.succeeded("a@x")
    throttle.failed("a@x", "1")
    assert throttle.retry_after("a@x", "1") is None


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LoginLimits(failures_per_email=0)
    with pytest.raises(ValueError, match="positive"):
        LoginLimits(window=0)
