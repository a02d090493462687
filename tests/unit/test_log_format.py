"""The toolkit's JSON log lines (what the Jobs write) have the keys of the operator's."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator

import kopf
import pytest

from azaion_loader.cli.output import JsonFormatter

LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


@pytest.fixture
def kopf_json() -> Iterator[logging.Formatter]:
    """The formatter kopf installs for ``LogFormat.JSON`` (as the operator configures it)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("asyncio").propagate)
    kopf.configure(log_format=kopf.LogFormat.JSON, log_refkey="object")
    formatter = root.handlers[-1].formatter
    root.handlers[:], root.level, logging.getLogger("asyncio").propagate = saved
    assert formatter is not None
    yield formatter


def _record(level: int) -> logging.LogRecord:
    return logging.LogRecord("azaion_loader.x", level, __file__, 1, "fetched %s", ("m/a",), None)


@pytest.mark.parametrize("level", LEVELS, ids=logging.getLevelName)
def test_json_lines_match_the_operators(kopf_json: logging.Formatter, level: int) -> None:
    record = _record(level)
    ours = json.loads(JsonFormatter().format(record))
    theirs = json.loads(kopf_json.format(record))
    assert set(theirs) <= set(ours)
    assert ours["message"] == theirs["message"] == "fetched m/a"
    assert ours["severity"] == theirs["severity"]
    assert ours["logger"] == "azaion_loader.x"
    ts = datetime.datetime.fromisoformat(ours["timestamp"])
    assert ts == datetime.datetime.fromisoformat(theirs["timestamp"])
    assert ts.utcoffset() == datetime.timedelta(0)
