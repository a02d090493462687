"""``/resources``: the listing, registration of a version, and the sealed record."""

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
from azaion_loader.server.validation import parse_resource_put

__all__ = ["blueprint"]

blueprint = Blueprint("resources", __name__)


@blueprint.get("/resources")
def list_resources() -> Response:
    user = current_user()
    return jsonify({"resources": listing_for(user, "resources")})


@blueprint.put("/resources/<folder>/<name>")
def put_resource(folder: str, name: str) -> tuple[Response, int]:
    store = state().store
    return put_version(folder, name, "resources", parse_resource_put, store.put_resource)


@blueprint.get("/resources/<folder>/<name>")
def get_resource(folder: str, name: str) -> Response:
    user = located(folder, name)
    record = state().store.get_resource(folder, name, version_arg())
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
    if record.format != 1:  # so a format-1 envelope is the same as before format 2
        payload["format"] = record.format
    return sealed(user, "resource", payload)
