"""Users' secrets as the server keeps them: a login hash and K_user, never the password."""

from __future__ import annotations

import base64

from azaion_loader import envelope
from azaion_loader.server.passwords import hash_password
from azaion_loader.server.records import User
from azaion_loader.server.store import Store

__all__ = ["change_password", "register_user"]


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
