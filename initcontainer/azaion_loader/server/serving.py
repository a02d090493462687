"""Run a WSGI application on a threaded werkzeug server in a background thread.

Used by ``loader serve-api``, ``loader dev-stack`` (for both the API and moto's
S3 server) and the integration tests.  ``stop`` closes the listening socket, so
the port is free when it returns.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import threading
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

__all__ = ["QuietRequestHandler", "ServerThread", "StopSignals", "wait_for_stop_signal"]

log = logging.getLogger(__name__)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except BaseException:
        listener.close()
        raise
    return listener


class QuietRequestHandler(WSGIRequestHandler):
    """A request handler that leaves request logging to the application."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Do not log: the application logs each request without secrets."""


class ServerThread:
    """A threaded werkzeug server for ``app`` on ``host:port`` (port 0: any free port)."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "api",
        request_handler: type[WSGIRequestHandler] = QuietRequestHandler,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        # Bind here, so that a busy port raises OSError to the caller (werkzeug
        # itself would print and exit), then hand the socket to werkzeug.
        listener = _listen(host, port)
        try:
            self._server: BaseWSGIServer = make_server(
                host,
                port,
                app,
                threaded=True,
                request_handler=request_handler,
                ssl_context=ssl_context,
                fd=listener.fileno(),
            )
        finally:
            listener.close()  # werkzeug holds its own duplicate
        self._scheme = "https" if ssl_context is not None else "http"
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self._scheme}://{host}:{self.port}"

    def start(self) -> ServerThread:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{self.name}-server",
            daemon=True,
        )
        self._thread.start()
        log.info("%s server listening on %s", self.name, self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
            log.info("%s server on %s stopped", self.name, self.url)
        self._server.server_close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StopSignals:
    """Turn SIGINT and SIGTERM into an event while the block runs (main thread only).

    ``with StopSignals() as stop: ... stop.wait()``; the previous handlers are
    restored on exit.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._received: list[int] = []
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: object) -> None:
        self._received.append(signum)
        self._event.set()

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)

    @property
    def stopped(self) -> bool:
        """Whether a stop signal has arrived."""
        return self._event.is_set()

    def wait(self) -> int:
        """Block until a stop signal arrives; returns its number."""
        while not self._event.wait(1.0):
            pass
        return self._received[0]


def wait_for_stop_signal() -> int:
    """Block until SIGINT or SIGTERM arrives; returns the signal number (main thread only)."""
    with StopSignals() as stop:
        return stop.wait()
