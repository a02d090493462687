"""The Flask application of the reference API server (docs/protocol.md).

The endpoints live in :mod:`azaion_loader.server.routes`, one blueprint per
resource; this module builds the state they share, logs each request and
turns every failure into the protocol's error body.

Routes::

    GET  /healthz                                      no auth
    GET  /openapi.yaml                                 no auth
    POST /login                                        no auth
    GET  /me                                           any role
    GET  /cdn-config                                   any role, envelope "cdn-config"
    PUT  /cdn-config                                   admin
    POST /users                                        admin
    PUT  /users/{email}/password                       admin
    DELETE /users/{email}/devices                      admin
    GET  /resources[?folder=F]                         any role
    PUT  /resources/{folder}/{name}                    uploader, admin
    GET  /resources/{folder}/{name}[?version=V]        any role, envelope "resource"
    GET  /archives[?folder=F]                          any role
    PUT  /archives/{folder}/{name}                     uploader, admin
    GET  /archives/{folder}/{name}/key-fragment[?version=V]   any role, envelope "key-fragment"
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from azaion_loader.server.accounts import change_password, register_user
from azaion_loader.server.config import ServerConfig
from azaion_loader.server.failures import ApiFailure
from azaion_loader.server.routes import BLUEPRINTS
from azaion_loader.server.state import EXTENSION, ServerState, server_state
from azaion_loader.server.store import Store
from azaion_loader.server.throttle import LoginThrottle
from azaion_loader.server.tokens import TokenService

__all__ = ["ServerState", "change_password", "create_app", "register_user", "server_state"]

log = logging.getLogger(__name__)


def create_app(config: ServerConfig) -> Flask:
    """The reference API server as a WSGI application, state under ``config.data_dir``."""
    app = Flask("azaion_loader.server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = ServerState(
        store=Store(config.data_dir),
        tokens=TokenService(config.jwt_secret, config.token_ttl),
        throttle=LoginThrottle(config.login_limits),
    )
    _log_requests(app)
    _answer_errors(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app


def _log_requests(app: Flask) -> None:
    """One log line per request: method, path, status, user and milliseconds."""

    @app.before_request
    def _start_clock() -> None:
        g.started = time.monotonic()
        g.user_email = "-"

    @app.after_request
    def _log_request(response: Response) -> Response:
        elapsed = (time.monotonic() - g.get("started", time.monotonic())) * 1000
        log.info(
            "%s %s %d user=%s %.1fms",
            request.method,
            request.path,
            response.status_code,
            g.get("user_email", "-"),
            elapsed,
        )
        return response


def _answer_errors(app: Flask) -> None:
    """Every failure as ``{"ErrorCode", "Message"}`` (docs/protocol.md §1); no traceback."""

    @app.errorhandler(ApiFailure)
    def _api_failure(exc: ApiFailure) -> tuple[Response, int, dict[str, str]]:
        return jsonify(exc.body()), exc.status, exc.headers()

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int, dict[str, str]]:
        status = exc.code or 500
        code = {404: 20, 401: 11, 403: 12}.get(status, 40 if status < 500 else 50)
        message = {404: "no such endpoint", 405: "method not allowed"}.get(
            status, exc.description or exc.name
        )
        headers = {}
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:  # RFC 9110 §15.5.6
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return jsonify({"ErrorCode": code, "Message": message}), status, headers

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.error("internal error on %s %s: %s", request.method, request.path, type(exc).__name__)
        log.debug("internal error details", exc_info=exc)
        return jsonify({"ErrorCode": 50, "Message": "internal server error"}), 500
