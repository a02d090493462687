"""Who may publish a new version of a resource or archive (docs/protocol.md §5, §6).

The rule: the uploader who first registered ``folder/name`` owns it; only the
owner, or a user with the ``admin`` role, may register further versions (an
identical retry included).  Entries registered before owners were recorded
have no owner: only an admin may publish to them.  Pure functions, no I/O.
"""

from __future__ import annotations

from azaion_loader.server.failures import NotOwner
from azaion_loader.server.records import User

__all__ = ["OVERRIDE_ROLES", "check_may_publish"]

OVERRIDE_ROLES = frozenset({"admin"})
"""Roles that may publish to a folder/name owned by someone else."""


def check_may_publish(owner: str | None, user: User, what: str) -> None:
    """Raise :class:`NotOwner` unless ``user`` may publish a new version of ``what``.

    ``owner`` is the email recorded for the entry (``None``: no owner recorded).
    """
    if user.role in OVERRIDE_ROLES or owner == user.email:
        return
    whose = f"owned by {owner}" if owner else "registered before owners were recorded"
    raise NotOwner(
        f"{what} is {whose}: only its owner or an admin may publish new versions; "
        "ask them, or publish under another name"
    )
