"""``/cdn-config``: the CDN settings, sealed for readers, set by an admin."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from azaion_loader.server.failures import UnknownEntry
from azaion_loader.server.records import UPLOAD_ROLES
from azaion_loader.server.routes.common import (
    ADMIN,
    current_user,
    json_body,
    require_role,
    sealed,
    state,
)
from azaion_loader.server.validation import parse_cdn_config

__all__ = ["blueprint"]

blueprint = Blueprint("cdn_config", __name__)


@blueprint.get("/cdn-config")
def get_cdn_config() -> Response:
    user = current_user()
    config = state().store.cdn_config()
    if config is None:
        raise UnknownEntry("the server has no CDN settings")
    payload = dict(config)
    if user.role not in UPLOAD_ROLES:
        payload["write"] = None
    return sealed(user, "cdn-config", payload)


@blueprint.put("/cdn-config")
def put_cdn_config() -> Response:
    user = current_user()
    require_role(user, ADMIN, "set the CDN settings")
    state().store.set_cdn_config(parse_cdn_config(json_body()))
    return jsonify({"ok": True})
