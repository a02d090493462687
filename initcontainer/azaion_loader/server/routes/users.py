"""``/users``: registration, password changes and device resets (admin only)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from azaion_loader.server.accounts import change_password, register_user
from azaion_loader.server.routes.common import ADMIN, current_user, json_body, require_role, state
from azaion_loader.server.validation import parse_password_put, parse_user_put

__all__ = ["blueprint"]

blueprint = Blueprint("users", __name__)


@blueprint.post("/users")
def post_user() -> tuple[Response, int]:
    require_role(current_user(), ADMIN, "register users")
    email, password, role, max_devices = parse_user_put(json_body())
    store = state().store
    created = store.user_by_email(email) is None
    new = register_user(store, email=email, password=password, role=role, max_devices=max_devices)
    body = {"email": new.email, "role": new.role, "max_devices": new.max_devices}
    return jsonify(body), 201 if created else 200


@blueprint.put("/users/<email>/password")
def put_password(email: str) -> Response:
    require_role(current_user(), ADMIN, "change passwords")
    password = parse_password_put(json_body())
    target = change_password(state().store, email=email, password=password)
    return jsonify({"email": target.email})


@blueprint.delete("/users/<email>/devices")
def delete_devices(email: str) -> Response:
    require_role(current_user(), ADMIN, "reset device bindings")
    target = state().store.reset_devices(email)
    return jsonify({"email": target.email, "devices": 0})
