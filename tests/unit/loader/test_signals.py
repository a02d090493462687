"""SIGTERM and SIGHUP unwind a command like Ctrl-C, once; the CLI maps them to 143 and 129."""

from __future__ import annotations

import os
import signal
import time

import pytest

from azaion_loader.cli.signals import Terminated, terminate_on_signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_raises_terminated_and_runs_finally(sig: signal.Signals) -> None:
    cleaned = []
    with pytest.raises(Terminated) as info, terminate_on_signals():
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # interrupted by the handler's exception
        finally:
            cleaned.append(True)
    assert cleaned == [True]
    assert info.value.exit_code == 128 + sig
    assert not isinstance(info.value, Exception)  # passes `except Exception` handlers


def test_second_signal_does_not_interrupt_the_cleanup() -> None:
    steps = []
    with pytest.raises(Terminated), terminate_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: the cleanup goes on
            steps.append("cleanup done")
    assert steps == ["cleanup done"]


def test_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with terminate_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
