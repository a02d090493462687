"""What the routes of one application share, kept in ``app.extensions``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from azaion_loader.server.store import Store
from azaion_loader.server.throttle import LoginThrottle
from azaion_loader.server.tokens import TokenService

__all__ = ["ServerState", "server_state"]

EXTENSION = "azaion_loader.server"


@dataclass
class ServerState:
    """The store, the token service and the login throttle of one application."""

    store: Store
    tokens: TokenService
    throttle: LoginThrottle


def server_state(app: Flask) -> ServerState:
    """The state of an application made by :func:`~azaion_loader.server.app.create_app`."""
    state: ServerState = app.extensions[EXTENSION]
    return state
