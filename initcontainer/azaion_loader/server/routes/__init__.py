"""The reference server's endpoints, one module per resource, each a Flask blueprint.

``session`` (health, the OpenAPI file, login, ``/me``), ``cdn_config``,
``users``, ``resources`` and ``archives``; what they share (the caller, roles,
sealed envelopes, listings) is in ``common``.
"""

from __future__ import annotations

from flask import Blueprint

from azaion_loader.server.routes import archives, cdn_config, resources, session, users

__all__ = ["BLUEPRINTS"]

BLUEPRINTS: tuple[Blueprint, ...] = (
    session.blueprint,
    cdn_config.blueprint,
    users.blueprint,
    resources.blueprint,
    archives.blueprint,
)
"""Every blueprint, registered on each application in this order."""
