"""``/healthz``, ``/openapi.yaml``, ``/login`` and ``/me``."""

from __future__ import annotations

from importlib import resources as package_files

from flask import Blueprint, Response, g, jsonify, request

from azaion_loader.server.failures import LoginFailed, TooManyLogins
from azaion_loader.server.passwords import hash_password, verify_password
from azaion_loader.server.routes.common import current_user, json_body, state
from azaion_loader.server.validation import parse_credentials

__all__ = ["blueprint"]

blueprint = Blueprint("session", __name__)

# Verified against when the email is unknown, so that both failures cost the same.
_DUMMY_HASH = hash_password("azaion-loader/dummy")


def _openapi_text() -> str:
    return (
        package_files.files("azaion_loader.server")
        .joinpath("openapi.yaml")
        .read_text(encoding="utf-8")
    )


@blueprint.get("/healthz")
def healthz() -> Response:
    return jsonify({"ok": True})


@blueprint.get("/openapi.yaml")
def openapi() -> Response:
    return Response(_openapi_text(), mimetype="application/yaml")


@blueprint.post("/login")
def login() -> Response:
    email, password = parse_credentials(json_body())
    g.user_email = email
    shared = state()
    address = request.remote_addr or "-"
    wait = shared.throttle.retry_after(email, address)
    if wait is not None:  # refused before the password is checked
        raise TooManyLogins(f"too many failed logins; try again in {wait} s", retry_after=wait)
    user = shared.store.user_by_email(email)
    if user is None:
        verify_password(password, _DUMMY_HASH)
    if user is None or not verify_password(password, user.password_hash):
        shared.throttle.failed(email, address)
        raise LoginFailed("wrong email or password")
    shared.throttle.succeeded(email)
    return jsonify({"token": shared.tokens.issue(user)})


@blueprint.get("/me")
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
