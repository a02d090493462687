"""``/archives``: the listing, registration of a version, and the sealed key fragment."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from azaion_loader.server.routes.common import (
    current_user,
    listing_for,
    located,
    put_version,
    sealed,
    state,
    version_arg,
)
from azaion_loader.server.validation import parse_archive_put

__all__ = ["blueprint"]

blueprint = Blueprint("archives", __name__)


@blueprint.get("/archives")
def list_archives() -> Response:
    user = current_user()
    return jsonify({"archives": listing_for(user, "archives")})


@blueprint.put("/archives/<folder>/<name>")
def put_archive(folder: str, name: str) -> tuple[Response, int]:
    store = state().store
    return put_version(folder, name, "archives", parse_archive_put, store.put_archive)


@blueprint.get("/archives/<folder>/<name>/key-fragment")
def get_key_fragment(folder: str, name: str) -> Response:
    user = located(folder, name)
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
    if record.format != 1:  # so a format-1 envelope is the same as before format 2
        payload["format"] = record.format
    return sealed(user, "key-fragment", payload)
