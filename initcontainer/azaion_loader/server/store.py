"""Users, resources, archives and CDN settings, persisted as JSON files.

Every operation runs under a thread lock and an exclusive ``flock`` on
``<data_dir>/.lock`` (so two processes on one data directory stay consistent),
reads the state file, and replaces it atomically when it changes: write a
temporary file beside it, fsync, rename, fsync the directory.  The files hold
keys, so they are created mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from azaion_loader.atomic_write import publish_bytes
from azaion_loader.server.failures import HardwareMismatch, UnknownEntry, VersionConflict
from azaion_loader.server.ownership import check_may_publish
from azaion_loader.server.records import ArchiveVersion, ResourceVersion, User

__all__ = ["Store"]

log = logging.getLogger(__name__)

_USERS = "users.json"
_RESOURCES = "resources.json"
_ARCHIVES = "archives.json"
_CDN = "cdn.json"


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    # Keys, digests and password hashes: owner-only, never half-written.
    text = json.dumps(data, indent=1, sort_keys=True)
    publish_bytes(path, text.encode("utf-8"), mode=0o600)


class Store:
    """The server's persistent state under one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()
        self._lock_path = self.data_dir / ".lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _load(self, name: str) -> dict[str, Any]:
        path = self.data_dir / name
        try:
            with path.open(encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        return data

    @contextlib.contextmanager
    def _transaction(self, name: str) -> Iterator[dict[str, Any]]:
        """Yield the state of file ``name``; write it back if it changed."""
        with self._locked():
            data = self._load(name)
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                _write_atomic(self.data_dir / name, data)

    # -- users -----------------------------------------------------------------

    def put_user(
        self,
        *,
        email: str,
        role: str,
        password_hash: str,
        user_key: str,
        max_devices: int,
    ) -> User:
        """Create the user ``email``, or update its role, password and device limit.

        A new password (a new ``user_key``) raises ``token_epoch``: earlier tokens fail.
        """
        with self._transaction(_USERS) as data:
            users = data.setdefault("users", {})
            found = self._find_email(users, email)
            if found is None:
                user = User(
                    id=uuid.uuid4().hex,
                    email=email.strip().lower(),
                    role=role,
                    password_hash=password_hash,
                    user_key=user_key,
                    max_devices=max_devices,
                )
                log.info("created user %s (role %s)", user.email, role)
            else:
                user = found
                if user_key != user.user_key:  # K_user depends on the password alone here
                    user.token_epoch += 1
                user.role = role
                user.password_hash = password_hash
                user.user_key = user_key
                user.max_devices = max_devices
                log.info("updated user %s (role %s)", user.email, role)
            users[user.id] = user.to_json()
            return user

    @staticmethod
    def _find_email(users: dict[str, Any], email: str) -> User | None:
        wanted = email.strip().lower()
        for raw in users.values():
            if raw["email"] == wanted:
                return User.from_json(raw)
        return None

    def user_by_email(self, email: str) -> User | None:
        """The user with this email (case-insensitive), or None."""
        with self._locked():
            return self._find_email(self._load(_USERS).get("users", {}), email)

    def user_by_id(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        with self._locked():
            raw = self._load(_USERS).get("users", {}).get(user_id)
            return None if raw is None else User.from_json(raw)

    def bind_device(self, user_id: str, fingerprint: str) -> User:
        """Bind ``fingerprint`` to the user, first come first served up to ``max_devices``."""
        with self._transaction(_USERS) as data:
            raw = data.get("users", {}).get(user_id)
            if raw is None:
                raise UnknownEntry("unknown user")
            user = User.from_json(raw)
            if fingerprint in user.devices:
                return user
            if len(user.devices) >= user.max_devices:
                raise HardwareMismatch(
                    f"user {user.email} is bound to {len(user.devices)} other device(s) "
                    f"(max_devices={user.max_devices}); ask an admin to reset the binding"
                )
            user.devices.append(fingerprint)
            data["users"][user_id] = user.to_json()
            log.info(
                "bound user %s to device %d of %d", user.email, len(user.devices), user.max_devices
            )
            return user

    def set_password(self, email: str, *, password_hash: str, user_key: str) -> User:
        """Replace the user's password; every token issued before is refused from now on."""
        with self._transaction(_USERS) as data:
            user = self._find_email(data.get("users", {}), email)
            if user is None:
                raise UnknownEntry(f"unknown user {email}")
            user.password_hash = password_hash
            user.user_key = user_key
            user.token_epoch += 1
            data["users"][user.id] = user.to_json()
            log.info("changed the password of user %s; earlier tokens are void", user.email)
            return user

    def reset_devices(self, email: str) -> User:
        """Forget every device bound to the user ``email``."""
        with self._transaction(_USERS) as data:
            user = self._find_email(data.get("users", {}), email)
            if user is None:
                raise UnknownEntry(f"unknown user {email}")
            user.devices = []
            data["users"][user.id] = user.to_json()
            log.info("reset the devices of user %s", user.email)
            return user

    # -- resources and archives ------------------------------------------------

    def put_resource(
        self, folder: str, name: str, record: ResourceVersion, publisher: User
    ) -> bool:
        """Register a resource version; True if new, False if the same content was there.

        ``NotOwner`` unless ``publisher`` may publish ``folder/name`` (``ownership``);
        the first publisher becomes its owner, in the same atomic write.
        """
        return self._register(_RESOURCES, "resources", folder, name, record, publisher)

    def _register(
        self,
        filename: str,
        kind: str,
        folder: str,
        name: str,
        record: ResourceVersion | ArchiveVersion,
        publisher: User,
    ) -> bool:
        what = f"{'resource' if kind == 'resources' else 'archive'} {folder}/{name}"
        with self._transaction(filename) as data:
            entries = data.setdefault(kind, {})
            entry = entries.get(f"{folder}/{name}")
            if entry is None:
                entry = {"folder": folder, "name": name, "owner": publisher.email, "versions": []}
            else:
                check_may_publish(entry.get("owner"), publisher, what)
            for raw in entry["versions"]:
                if raw["version"] == record.version:
                    stored = type(record).from_json(raw)
                    if stored == replace(record, created=stored.created):  # same content
                        return False
                    raise VersionConflict(
                        f"version {record.version} of {what} already exists with other content"
                    )
            entry["versions"].append(record.to_json())
            entries[f"{folder}/{name}"] = entry
            log.info("registered %s version %s (by %s)", what, record.version, publisher.email)
            return True

    def get_resource(self, folder: str, name: str, version: str | None) -> ResourceVersion:
        """The given version of a resource, or its latest; ``UnknownEntry`` if absent."""
        with self._locked():
            entry = self._load(_RESOURCES).get("resources", {}).get(f"{folder}/{name}")
        raw = self._pick(entry, version, f"resource {folder}/{name}")
        return ResourceVersion.from_json(raw)

    def put_archive(self, folder: str, name: str, record: ArchiveVersion, publisher: User) -> bool:
        """Register an archive version, like :meth:`put_resource`."""
        return self._register(_ARCHIVES, "archives", folder, name, record, publisher)

    def get_archive(self, folder: str, name: str, version: str | None) -> ArchiveVersion:
        """The given version of an archive, or its latest; ``UnknownEntry`` if absent."""
        with self._locked():
            entry = self._load(_ARCHIVES).get("archives", {}).get(f"{folder}/{name}")
        raw = self._pick(entry, version, f"archive {folder}/{name}")
        return ArchiveVersion.from_json(raw)

    @staticmethod
    def _pick(entry: dict[str, Any] | None, version: str | None, what: str) -> dict[str, Any]:
        if entry is None or not entry["versions"]:
            raise UnknownEntry(f"unknown {what}")
        if version is None:
            latest: dict[str, Any] = entry["versions"][-1]
            return latest
        for raw in entry["versions"]:
            if raw["version"] == version:
                return dict(raw)
        raise UnknownEntry(f"unknown version {version} of {what}")

    def list_entries(self, kind: str, folder: str | None) -> list[dict[str, Any]]:
        """A listing of ``kind`` (``resources`` or ``archives``), optionally in one folder.

        Each item: ``folder``, ``name``, ``owner`` (an email, or None for entries
        registered before owners were recorded), ``latest`` and ``versions``
        (version, sha256, size, created, and ``format`` for versions of
        format 2); no keys, small parts or fragments.
        """
        filename = {"resources": _RESOURCES, "archives": _ARCHIVES}[kind]
        with self._locked():
            entries = self._load(filename).get(kind, {})
        listing = []
        for key in sorted(entries):
            entry = entries[key]
            if (folder is not None and entry["folder"] != folder) or not entry["versions"]:
                continue
            versions = [_listed(raw) for raw in entry["versions"]]
            listing.append(
                {
                    "folder": entry["folder"],
                    "name": entry["name"],
                    "owner": entry.get("owner"),
                    "latest": versions[-1]["version"],
                    "versions": versions,
                }
            )
        return listing

    # -- CDN settings ----------------------------------------------------------

    def set_cdn_config(self, config: dict[str, Any]) -> None:
        """Replace the CDN settings handed out by ``GET /cdn-config``."""
        with self._transaction(_CDN) as data:
            data.clear()
            data.update(config)
        log.info("CDN settings set (endpoint %s)", config.get("endpoint_url"))

    def cdn_config(self) -> dict[str, Any] | None:
        """The CDN settings, or None if none were set."""
        with self._locked():
            data = self._load(_CDN)
        return data or None


def _listed(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored version as listed; ``format`` only when not 1, as in the envelope."""
    item = {k: raw[k] for k in ("version", "sha256", "size", "created")}
    if raw.get("format", 1) != 1:
        item["format"] = raw["format"]
    return item


def now() -> float:
    """Seconds since the epoch, for ``created`` stamps."""
    return time.time()
