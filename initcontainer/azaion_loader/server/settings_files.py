"""Files that configure ``loader serve-api``: users and CDN settings (YAML or JSON).

Users file::

    users:
      - email: alice@example.com
        password: "..."          # read from the file, never from argv
        role: uploader           # user | uploader | admin
        max_devices: 2

(a bare list of users is accepted too).  CDN file: the plaintext of protocol §4.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from azaion_loader.errors import ConfigError
from azaion_loader.server.failures import BadRequest
from azaion_loader.server.validation import parse_cdn_config, parse_user_put

__all__ = ["UserEntry", "load_cdn_file", "load_users_file"]


@dataclass(frozen=True)
class UserEntry:
    """One user to register at start-up."""

    email: str
    password: str
    role: str
    max_devices: int

    def __repr__(self) -> str:
        return f"UserEntry(email={self.email!r}, role={self.role!r}, password=<hidden>)"


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} is not valid YAML or JSON") from exc


def load_users_file(path: Path) -> list[UserEntry]:
    """The users listed in ``path``; ``ConfigError`` naming the bad entry."""
    data = _read(path)
    items = data.get("users") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError(f"{path} must hold a list of users (or a mapping with `users:`)")
    entries = []
    for index, item in enumerate(items):
        try:
            email, password, role, max_devices = parse_user_put(item)
        except BadRequest as exc:
            raise ConfigError(f"{path}: user #{index + 1}: {exc.message}") from None
        entries.append(UserEntry(email, password, role, max_devices))
    return entries


def load_cdn_file(path: Path) -> dict[str, Any]:
    """The CDN settings in ``path``; ``ConfigError`` if malformed."""
    try:
        return parse_cdn_config(_read(path))
    except BadRequest as exc:
        raise ConfigError(f"{path}: {exc.message}") from None
