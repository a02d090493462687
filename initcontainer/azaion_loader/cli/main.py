"""``loader``: the entry point of the toolkit (console script ``loader``).

Parses arguments, reads the ``LOADER_*`` settings, configures logging (the
only place that does), runs one subcommand, prints a summary or a JSON
result line, and maps every :class:`~azaion_loader.errors.LoaderError` to its
one-line message (``loader: error: ...``) and exit code.  No traceback for
expected failures; Ctrl-C exits with 130, SIGTERM with 143 and SIGHUP with
129, after the same cleanup (:mod:`azaion_loader.cli.signals`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence
from typing import Any

from azaion_loader import __version__
from azaion_loader.cli.commands import COMMANDS, EXTERNALS, Command
from azaion_loader.cli.output import configure_logging, error_result, write_result
from azaion_loader.cli.signals import Terminated, terminate_on_signals
from azaion_loader.errors import ConfigError, LoaderError
from azaion_loader.settings import LoaderSettings

__all__ = ["build_parser", "main"]

log = logging.getLogger("azaion_loader.cli")

SETTINGS_HELP = """\
settings (environment):
  LOADER_API_URL            resource API base URL (default http://127.0.0.1:8080)
  LOADER_EMAIL, LOADER_PASSWORD   credentials, or
  LOADER_CREDENTIALS_DIR    a directory with files `email` and `password` (wins)
  LOADER_CACHE_DIR          big-part cache root (default: no cache)
  LOADER_CA_BUNDLE          CA bundle for the API and the CDN
  LOADER_TIMEOUT, LOADER_RETRIES   seconds per HTTP read (30), retries (4)
  LOADER_DEADLINE           seconds per API call, retries included (300)
  LOADER_MAX_RESPONSE       largest API body in bytes (8 MiB)
  LOADER_MIN_RATE, LOADER_RATE_WINDOW   CDN floor in bytes/s (4096) over seconds (60)
  LOADER_DOWNLOAD_DEADLINE  seconds per CDN download, resumes included (0: none)
  LOADER_HW_MACHINE_ID, LOADER_HW_ARCH   fingerprint overrides
  LOADER_LOG_LEVEL, LOADER_LOG_FORMAT    INFO|DEBUG|...; text|json
  LOADER_RUNTIME            unlock/unlock-load: docker (default) or containerd
  LOADER_RUNTIME_SOCKET     the runtime's socket (default: DOCKER_HOST or
                            /var/run/docker.sock; /run/containerd/containerd.sock)
  LOADER_CONTAINERD_NAMESPACE   containerd namespace (default k8s.io, the kubelet's)
  LOADER_PIN_IMAGES=1       label loaded images pinned (containerd's CRI keeps them)
Credentials are never accepted as arguments.

exit codes: 0 ok, 2 usage, 3-5 configuration, 10-15 API, 20-23 CDN,
30 integrity, 40-45 container runtime, 50 target, 1 unexpected, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP); temporaries are removed first.
"""


def _add_builtin(sub: Any, command: Command) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        command.name,
        help=command.help,
        description=command.help,
        epilog=command.examples + "\n" + SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.configure(parser)
    parser.set_defaults(handler=command.run)
    return parser


def _wanted_external(argv: Sequence[str] | None) -> set[str]:
    """The external subcommands named on the command line (imported only when used)."""
    words = sys.argv[1:] if argv is None else list(argv)
    first = next((w for w in words if not w.startswith("-")), None)
    return {first} if first in {e.name for e in EXTERNALS} else set()


def build_parser(*, load_external: bool | set[str] = True) -> argparse.ArgumentParser:
    """The ``loader`` argument parser with every subcommand.

    ``load_external``: which of ``dev-stack`` / ``serve-api`` to import for their
    options (``True``: both); the others get a placeholder, so that ordinary
    commands do not pay for importing the server.
    """
    parser = argparse.ArgumentParser(
        prog="loader",
        description="Deliver encrypted resources and encrypted Docker image archives.",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"loader {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        _add_builtin(sub, command)
    for external in EXTERNALS:
        wanted = load_external is True or (
            isinstance(load_external, set) and external.name in load_external
        )
        module = external.load() if wanted else None
        p = sub.add_parser(
            external.name,
            help=external.help,
            description=external.help,
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        external.add_options(p, module)
        p.set_defaults(external=(external.module_name, module))
    return parser


def _run_external(args: argparse.Namespace) -> int:
    module_name, module = args.external
    if module is None or not hasattr(module, "run"):
        sys.stderr.write(
            f"loader: error: `loader {args.command}` is not available: {module_name} is "
            "missing; install the server extra: pip install 'azaion-loader[server]'\n"
        )
        return ConfigError.exit_code
    return int(module.run(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loader``; returns the exit code."""
    parser = build_parser(load_external=_wanted_external(argv))
    args = parser.parse_args(argv)
    command: str = args.command
    to_stdout = bool(getattr(args, "json", False))
    result_file: str | None = getattr(args, "result_file", None)
    try:
        settings = LoaderSettings.from_env()
        configure_logging(
            settings.log.with_flags(
                quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False)
            )
        )
        if hasattr(args, "external"):
            return _run_external(args)
        with terminate_on_signals():
            result, summary = args.handler(args, settings)
    except LoaderError as exc:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO)
        cause = exc.__cause__
        if cause is not None:
            log.debug("%s failed; cause: %s", command, type(cause).__name__)
        sys.stderr.write(f"loader: error: {exc.one_line()}\n")
        write_result(error_result(command, exc), to_stdout=to_stdout, result_file=result_file)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\nloader: interrupted\n")
        return _stopped(command, "interrupted", 130, to_stdout, result_file)
    except Terminated as stop:
        sys.stderr.write(f"loader: {stop}: stopped, temporaries removed\n")
        return _stopped(command, str(stop), stop.exit_code, to_stdout, result_file)
    except Exception as exc:
        log.debug("%s failed unexpectedly", command, exc_info=True)
        unexpected = LoaderError(f"unexpected {type(exc).__name__}: {exc}")
        sys.stderr.write(
            f"loader: error: {unexpected.one_line()} (LOADER_LOG_LEVEL=DEBUG shows details)\n"
        )
        write_result(
            error_result(command, unexpected), to_stdout=to_stdout, result_file=result_file
        )
        return 1
    doc = {"ok": True, "command": command, **result}
    if not to_stdout:
        sys.stdout.write(summary + "\n")
        sys.stdout.flush()
    write_result(doc, to_stdout=to_stdout, result_file=result_file)
    return 0


def _stopped(
    command: str, message: str, exit_code: int, to_stdout: bool, result_file: str | None
) -> int:
    """The result line of a command stopped by a signal; returns its exit code."""
    stopped = LoaderError(message, hint="")
    stopped.exit_code = exit_code
    write_result(error_result(command, stopped), to_stdout=to_stdout, result_file=result_file)
    return exit_code


def run() -> None:
    """The ``loader`` console script: :func:`main`, then exit with its code."""
    code = main()
    # What is left is garbage at exit anyway; frozen, it is skipped by the
    # interpreter's final collections (about 30 ms of every run, and Jobs run
    # the CLI once per container).
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
