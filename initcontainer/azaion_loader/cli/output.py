"""Logging setup and the one-line JSON result of every command."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from azaion_loader.errors import LoaderError
from azaion_loader.settings import LogSettings

__all__ = ["JsonFormatter", "configure_logging", "error_result", "write_result"]

_QUIET = ("botocore", "boto3", "urllib3", "s3transfer", "werkzeug")


def _severity(levelno: int) -> str:
    """kopf's names for the levels (its JSON log lines say ``warn``, not ``WARNING``)."""
    for limit, name in (
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "error"),
    ):
        if levelno <= limit:
            return name
    return "fatal"


class JsonFormatter(logging.Formatter):
    """One JSON object per log record, with the keys of the operator's (kopf's) JSON lines.

    ``message``, ``timestamp`` and ``severity`` as kopf writes them, so the
    operator's and its Jobs' lines read alike in one log store; ``logger``
    besides.
    """

    def format(self, record: logging.LogRecord) -> str:
        import datetime  # here, not at the top: only JSON lines need it, not every start

        doc = {
            "message": record.getMessage(),
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "severity": _severity(record.levelno),
            "logger": record.name,
        }
        return json.dumps(doc)


def configure_logging(settings: LogSettings) -> None:
    """Log to stderr at ``settings.level`` in ``text`` or ``json``; quiet the HTTP libraries."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
    for name in _QUIET:
        # Their DEBUG output carries request headers: never below WARNING.
        logging.getLogger(name).setLevel(logging.WARNING)


def error_result(command: str, exc: LoaderError) -> dict[str, Any]:
    """The result line of a failed command."""
    return {
        "ok": False,
        "command": command,
        "error": type(exc).__name__,
        "exit_code": exc.exit_code,
        "message": exc.one_line(),
    }


def write_result(result: Mapping[str, Any], *, to_stdout: bool, result_file: str | None) -> None:
    """Print the JSON line on stdout and/or write it to ``result_file`` (errors only logged)."""
    line = json.dumps(dict(result), separators=(",", ":"), sort_keys=False)
    if to_stdout:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    if result_file:
        try:
            with open(result_file, "w", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            logging.getLogger(__name__).warning(
                "cannot write the result file %s: %s", result_file, exc.strerror
            )
