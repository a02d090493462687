"""kopf's per-event "Handler 'node_event' succeeded." lines are dropped; everything else stays."""

from __future__ import annotations

import logging

from azaion_operator.main import _QuietWatchHandlers


def _record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)


def test_watch_handler_success_lines_are_dropped() -> None:
    quiet = _QuietWatchHandlers()
    assert not quiet.filter(_record("Handler 'node_event' succeeded."))


def test_other_lines_pass() -> None:
    quiet = _QuietWatchHandlers()
    assert quiet.filter(_record("Handler 'resource_changed' succeeded."))
    assert quiet.filter(_record("Handler 'node_event' failed with an exception.", logging.ERROR))
    assert quiet.filter(_record("Handler 'node_event' succeeded.", logging.WARNING))
