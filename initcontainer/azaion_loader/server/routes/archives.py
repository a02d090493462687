"""``/archives``: the listing, registration of a version, and the sealed key fragment."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from azaion_loader.server.records import UPLOAD_ROLES
from azaion_loader.server.routes.common import (
    current_user,
    json_body,
    listing_for,
    require_role,
    sealed,
    state,
    version_arg,
)
from azaion_loader.server.store import now
from azaion_loader.server.validation import check_folder, check_name, parse_archive_put

__all__ = ["blueprint"]

blueprint = Blueprint("archives", __name__)


@blueprint.get("/archives")
def list_archives() -> Response:
    user = current_user()
    return jsonify({"archives": listing_for(user, "archives")})


@blueprint.put("/archives/<folder>/<name>")
def put_archive(folder: str, name: str) -> tuple[Response, int]:
    user = current_user()
    require_role(user, UPLOAD_ROLES, "upload archives")
    check_folder(folder)
    check_name(name)
    record = parse_archive_put(json_body(), created=now())
    created = state().store.put_archive(folder, name, record, user)
    return jsonify({"version": record.version}), 201 if created else 200


@blueprint.get("/archives/<folder>/<name>/key-fragment")
def get_key_fragment(folder: str, name: str) -> Response:
    user = current_user()
    check_folder(folder)
    check_name(name)
    record = state().store.get_archive(folder, name, version_arg())
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
