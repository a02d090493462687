"""What the endpoints share: the calling user, role checks, sealed envelopes, listings."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, g, jsonify, request

from azaion_loader import envelope
from azaion_loader.server.failures import BadRequest, RoleNotAllowed, TokenInvalid
from azaion_loader.server.records import UPLOAD_ROLES, User
from azaion_loader.server.state import ServerState, server_state
from azaion_loader.server.store import now
from azaion_loader.server.validation import (
    check_fingerprint,
    check_folder,
    check_name,
    check_version,
)

__all__ = [
    "ADMIN",
    "current_user",
    "json_body",
    "listing_for",
    "located",
    "put_version",
    "require_role",
    "sealed",
    "state",
    "version_arg",
]

ADMIN = frozenset({"admin"})


def state() -> ServerState:
    """The state of the application serving this request."""
    return server_state(current_app)


def json_body() -> object:
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("the body must be JSON (Content-Type: application/json)")
    return body


def current_user() -> User:
    """The user of the request's bearer token; ``TokenInvalid`` (401) otherwise."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenInvalid("missing bearer token; log in first")
    shared = state()
    claims = shared.tokens.check(token.strip())
    user = shared.store.user_by_id(str(claims["sub"]))
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
    """``payload`` in an envelope for ``user`` on the request's device, which it binds."""
    fingerprint = check_fingerprint(request.headers.get("X-Hardware-Fingerprint"))
    state().store.bind_device(user.id, fingerprint)
    key = envelope.derive_envelope_key(base64.b64decode(user.user_key), fingerprint)
    return jsonify({"envelope": envelope.seal_envelope(key, purpose, payload)})


def listing_for(user: User, kind: str) -> list[dict[str, Any]]:
    """The listing of ``kind`` for ``user``, in the folder of ``?folder=`` if given."""
    # An empty ?folder= is malformed (400), not "every folder".
    folder = request.args.get("folder")
    listing = state().store.list_entries(kind, None if folder is None else check_folder(folder))
    if user.role not in UPLOAD_ROLES:  # owners' emails only for publishers
        for item in listing:
            del item["owner"]
    return listing


def version_arg() -> str | None:
    version = request.args.get("version")
    return None if version is None else check_version(version)  # "?version=" is 400


def located(folder: str, name: str) -> User:
    """The caller, once the path's folder and name are valid (the start of every record route)."""
    user = current_user()
    check_folder(folder)
    check_name(name)
    return user


def put_version(
    folder: str,
    name: str,
    what: str,
    parse: Callable[..., Any],
    store_put: Callable[[str, str, Any, User], bool],
) -> tuple[Response, int]:
    """Register a version of a resource or archive: 201 when new, 200 when it was already there."""
    user = current_user()
    require_role(user, UPLOAD_ROLES, f"upload {what}")  # a reader's 403 before any 400
    check_folder(folder)
    check_name(name)
    record = parse(json_body(), created=now())
    created = store_put(folder, name, record, user)
    return jsonify({"version": record.version}), 201 if created else 200
