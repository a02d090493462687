"""``azaion-operator``: run the kopf operator with the settings from the environment.

Same as ``kopf run -m azaion_operator.handlers`` with the namespaces, peering
and liveness endpoint taken from ``AZAION_OPERATOR_*`` (docs/operator.md).
Exit codes: 0 after a clean stop, 3 for bad settings.
"""

from __future__ import annotations

import logging
import os
import sys

import kopf

from azaion_operator.settings import OperatorSettings, SettingsError

__all__ = ["main"]

log = logging.getLogger(__name__)


class _QuietWatchHandlers(logging.Filter):
    """Drop kopf's "Handler 'node_event' succeeded." lines: one per Node event, no news.

    What the handler does that matters (reconciles, failures) is logged on its own.
    (Jobs are watched by our own watch, ``jobwatch.py``, which logs no such line.)
    """

    _NOISE = frozenset(f"Handler {name!r} succeeded." for name in ("node_event",))

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg in self._NOISE)


def _configure_logging(settings: OperatorSettings) -> None:
    kopf.configure(
        debug=settings.log_level == "DEBUG",
        verbose=False,
        quiet=settings.log_level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object",
    )
    logging.getLogger().setLevel(settings.log_level)
    logging.getLogger("kopf.objects").addFilter(_QuietWatchHandlers())
    # The Kubernetes client logs every request body at DEBUG: keep it quiet.
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Run the operator until it is stopped (SIGTERM/SIGINT)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if args:
        print(f"azaion-operator: takes no arguments (got {args[0]!r}); see --help", file=sys.stderr)
        return 2
    try:
        settings = OperatorSettings.from_env(os.environ)
    except SettingsError as error:
        print(f"azaion-operator: {error}", file=sys.stderr)
        return 3
    _configure_logging(settings)

    from azaion_operator import handlers  # noqa: F401 - registers the handlers

    log.info(
        "starting: namespaces=%s, image=%s, peering=%s",
        ",".join(settings.namespaces) or "(cluster-wide)",
        settings.job_image,
        settings.peering or "(standalone)",
    )
    kopf.run(
        standalone=not settings.peering,
        peering_name=settings.peering or None,
        clusterwide=settings.clusterwide,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
