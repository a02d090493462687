"""The Flask application of the reference API server (docs/protocol.md).

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

import base64
import logging
import time
from dataclasses import dataclass
from importlib import resources as package_files
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from azaion_loader import envelope
from azaion_loader.server.config import ServerConfig
from azaion_loader.server.failures import (
    ApiFailure,
    BadRequest,
    LoginFailed,
    RoleNotAllowed,
    TokenInvalid,
    TooManyLogins,
    UnknownEntry,
)
from azaion_loader.server.passwords import hash_password, verify_password
from azaion_loader.server.records import UPLOAD_ROLES, User
from azaion_loader.server.store import Store, now
from azaion_loader.server.throttle import LoginThrottle
from azaion_loader.server.tokens import TokenService
from azaion_loader.server.validation import (
    check_fingerprint,
    check_folder,
    check_name,
    check_version,
    parse_archive_put,
    parse_cdn_config,
    parse_credentials,
    parse_password_put,
    parse_resource_put,
    parse_user_put,
)

__all__ = ["ServerState", "change_password", "create_app", "register_user", "server_state"]

log = logging.getLogger(__name__)

_EXTENSION = "azaion_loader.server"
# Verified against when the email is unknown, so that both failures cost the same.
_DUMMY_HASH = hash_password("azaion-loader/dummy")


@dataclass
class ServerState:
    """What the routes share: the store and the token service."""

    store: Store
    tokens: TokenService


def server_state(app: Flask) -> ServerState:
    """The state of an application made by :func:`create_app`."""
    state: ServerState = app.extensions[_EXTENSION]
    return state


def register_user(
    store: Store, *, email: str, password: str, role: str, max_devices: int = 1
) -> User:
    """Create or update a user: the login hash and K_user, never the password itself."""
    user_key = envelope.derive_user_key(email.strip().lower(), password)
    return store.put_user(
        email=email,
        role=role,
        password_hash=hash_password(password),
        user_key=base64.b64encode(user_key).decode("ascii"),
        max_devices=max_devices,
    )


def change_password(store: Store, *, email: str, password: str) -> User:
    """Replace a user's password (login hash and K_user); earlier tokens fail from now on."""
    user_key = envelope.derive_user_key(email.strip().lower(), password)
    return store.set_password(
        email,
        password_hash=hash_password(password),
        user_key=base64.b64encode(user_key).decode("ascii"),
    )


def _openapi_text() -> str:
    return (
        package_files.files("azaion_loader.server")
        .joinpath("openapi.yaml")
        .read_text(encoding="utf-8")
    )


def _json_body() -> object:
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("the body must be JSON (Content-Type: application/json)")
    return body


def create_app(config: ServerConfig) -> Flask:
    """The reference API server as a WSGI application, state under ``config.data_dir``."""
    app = Flask("azaion_loader.server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state = ServerState(
        store=Store(config.data_dir), tokens=TokenService(config.jwt_secret, config.token_ttl)
    )
    app.extensions[_EXTENSION] = state
    store, tokens = state.store, state.tokens
    throttle = LoginThrottle(config.login_limits)

    def current_user() -> User:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise TokenInvalid("missing bearer token; log in first")
        claims = tokens.check(token.strip())
        user = store.user_by_id(str(claims["sub"]))
        if user is None:
            raise TokenInvalid("the token's user no longer exists")
        if claims.get("gen", 0) != user.token_epoch:  # tokens from before "gen" count as 0
            raise TokenInvalid("the token predates a password change; log in again")
        g.user_email = user.email
        return user

    def require_role(user: User, roles: frozenset[str], action: str) -> None:
        if user.role not in roles:
            raise RoleNotAllowed(f"role {user.role} may not {action}")

    def sealed(user: User, purpose: str, payload: dict[str, Any]) -> Response:
        fingerprint = check_fingerprint(request.headers.get("X-Hardware-Fingerprint"))
        store.bind_device(user.id, fingerprint)
        key = envelope.derive_envelope_key(base64.b64decode(user.user_key), fingerprint)
        return jsonify({"envelope": envelope.seal_envelope(key, purpose, payload)})

    def listing_for(user: User, kind: str) -> list[dict[str, Any]]:
        # An empty ?folder= is malformed (400), not "every folder".
        folder = request.args.get("folder")
        listing = store.list_entries(kind, None if folder is None else check_folder(folder))
        if user.role not in UPLOAD_ROLES:  # owners' emails only for publishers
            for item in listing:
                del item["owner"]
        return listing

    def version_arg() -> str | None:
        version = request.args.get("version")
        return None if version is None else check_version(version)  # "?version=" is 400

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

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"ok": True})

    @app.get("/openapi.yaml")
    def openapi() -> Response:
        return Response(_openapi_text(), mimetype="application/yaml")

    @app.post("/login")
    def login() -> Response:
        email, password = parse_credentials(_json_body())
        g.user_email = email
        address = request.remote_addr or "-"
        wait = throttle.retry_after(email, address)
        if wait is not None:  # refused before the password is checked
            raise TooManyLogins(f"too many failed logins; try again in {wait} s", retry_after=wait)
        user = store.user_by_email(email)
        if user is None:
            verify_password(password, _DUMMY_HASH)
        if user is None or not verify_password(password, user.password_hash):
            throttle.failed(email, address)
            raise LoginFailed("wrong email or password")
        throttle.succeeded(email)
        return jsonify({"token": tokens.issue(user)})

    @app.get("/me")
    def me() -> Response:
        user = current_user()
        return jsonify(
            {
                "email": user.email,
                "role": user.role,
                "devices": len(user.devices),
                "max_devices": user.max_devices,
            }
        )

    @app.get("/cdn-config")
    def get_cdn_config() -> Response:
        user = current_user()
        config = store.cdn_config()
        if config is None:
            raise UnknownEntry("the server has no CDN settings")
        payload = dict(config)
        if user.role not in UPLOAD_ROLES:
            payload["write"] = None
        return sealed(user, "cdn-config", payload)

    @app.put("/cdn-config")
    def put_cdn_config() -> Response:
        user = current_user()
        require_role(user, frozenset({"admin"}), "set the CDN settings")
        store.set_cdn_config(parse_cdn_config(_json_body()))
        return jsonify({"ok": True})

    @app.post("/users")
    def post_user() -> tuple[Response, int]:
        user = current_user()
        require_role(user, frozenset({"admin"}), "register users")
        email, password, role, max_devices = parse_user_put(_json_body())
        created = store.user_by_email(email) is None
        new = register_user(
            store, email=email, password=password, role=role, max_devices=max_devices
        )
        body = {"email": new.email, "role": new.role, "max_devices": new.max_devices}
        return jsonify(body), 201 if created else 200

    @app.put("/users/<email>/password")
    def put_password(email: str) -> Response:
        user = current_user()
        require_role(user, frozenset({"admin"}), "change passwords")
        target = change_password(store, email=email, password=parse_password_put(_json_body()))
        return jsonify({"email": target.email})

    @app.delete("/users/<email>/devices")
    def delete_devices(email: str) -> Response:
        user = current_user()
        require_role(user, frozenset({"admin"}), "reset device bindings")
        target = store.reset_devices(email)
        return jsonify({"email": target.email, "devices": 0})

    @app.get("/resources")
    def list_resources() -> Response:
        user = current_user()
        return jsonify({"resources": listing_for(user, "resources")})

    @app.put("/resources/<folder>/<name>")
    def put_resource(folder: str, name: str) -> tuple[Response, int]:
        user = current_user()
        require_role(user, UPLOAD_ROLES, "upload resources")
        check_folder(folder)
        check_name(name)
        record = parse_resource_put(_json_body(), created=now())
        created = store.put_resource(folder, name, record, user)
        return jsonify({"version": record.version}), 201 if created else 200

    @app.get("/resources/<folder>/<name>")
    def get_resource(folder: str, name: str) -> Response:
        user = current_user()
        check_folder(folder)
        check_name(name)
        record = store.get_resource(folder, name, version_arg())
        payload = {
            "folder": folder,
            "name": name,
            "version": record.version,
            "small": record.small,
            "key": record.key,
            "sha256": record.sha256,
            "size": record.size,
            "plain_size": record.plain_size,
            "big_key": f"{name}.big",
        }
        if record.plain_sha256 is not None:  # absent for versions registered without it
            payload["plain_sha256"] = record.plain_sha256
        return sealed(user, "resource", payload)

    @app.get("/archives")
    def list_archives() -> Response:
        user = current_user()
        return jsonify({"archives": listing_for(user, "archives")})

    @app.put("/archives/<folder>/<name>")
    def put_archive(folder: str, name: str) -> tuple[Response, int]:
        user = current_user()
        require_role(user, UPLOAD_ROLES, "upload archives")
        check_folder(folder)
        check_name(name)
        record = parse_archive_put(_json_body(), created=now())
        created = store.put_archive(folder, name, record, user)
        return jsonify({"version": record.version}), 201 if created else 200

    @app.get("/archives/<folder>/<name>/key-fragment")
    def get_key_fragment(folder: str, name: str) -> Response:
        user = current_user()
        check_folder(folder)
        check_name(name)
        record = store.get_archive(folder, name, version_arg())
        payload = {
            "folder": folder,
            "name": name,
            "version": record.version,
            "fragment": record.fragment,
            "sha256": record.sha256,
            "size": record.size,
            "images": list(record.images),
            "object_key": f"{name}.enc",
        }
        return sealed(user, "key-fragment", payload)

    return app
