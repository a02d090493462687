"""The JSON store: users, device binding, versions, listings, atomic files."""

from __future__ import annotations

import json
import os
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from azaion_loader.server.failures import (
    HardwareMismatch,
    NotOwner,
    UnknownEntry,
    VersionConflict,
)
from azaion_loader.server.records import ArchiveVersion, ResourceVersion, User
from azaion_loader.server.store import Store

FP1, FP2, FP3 = "1" * 64, "2" * 64, "3" * 64
PUBLISHER = User(
    id="p", email="p@example.com", role="uploader", password_hash="h", user_key="k", max_devices=1
)


def _user(store: Store, email: str = "A@Example.com", max_devices: int = 1) -> str:
    return store.put_user(
        email=email, role="user", password_hash="h", user_key="k", max_devices=max_devices
    ).id


def _resource(
    version: str, small: str = "c21hbGw=", plain_sha256: str | None = None, fmt: int = 1
) -> ResourceVersion:
    return ResourceVersion(
        version=version,
        small=small,
        key="a2V5",
        sha256="d" * 64,
        size=48 if fmt == 1 else 36,
        plain_size=20,
        plain_sha256=plain_sha256,
        format=fmt,
    )


def test_users_are_found_by_lowercased_email_and_updated_in_place(tmp_path: Path) -> None:
    store = Store(tmp_path)
    user_id = _user(store)
    assert store.user_by_email("a@example.COM").id == user_id  # type: ignore[union-attr]
    updated = store.put_user(
        email="a@example.com", role="admin", password_hash="h2", user_key="k2", max_devices=3
    )
    assert updated.id == user_id
    assert (updated.role, updated.max_devices) == ("admin", 3)
    assert store.user_by_id(user_id).role == "admin"  # type: ignore[union-attr]
    assert store.user_by_email("nobody@example.com") is None


def test_binding_is_first_come_up_to_max_devices(tmp_path: Path) -> None:
    store = Store(tmp_path)
    user_id = _user(store, max_devices=2)
    store.bind_device(user_id, FP1)
    store.bind_device(user_id, FP1)  # the same device again is fine
    store.bind_device(user_id, FP2)
    with pytest.raises(HardwareMismatch) as caught:
        store.bind_device(user_id, FP3)
    assert caught.value.status == 409
    assert caught.value.error_code == 30
    assert store.user_by_id(user_id).devices == [FP1, FP2]  # type: ignore[union-attr]
    store.reset_devices("a@example.com")
    store.bind_device(user_id, FP3)
    assert store.user_by_id(user_id).devices == [FP3]  # type: ignore[union-attr]


def test_binding_survives_a_new_store_on_the_same_directory(tmp_path: Path) -> None:
    user_id = _user(Store(tmp_path))
    Store(tmp_path).bind_device(user_id, FP1)
    with pytest.raises(HardwareMismatch):
        Store(tmp_path).bind_device(user_id, FP2)


def test_same_version_same_content_is_idempotent_other_content_conflicts(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.put_resource("models", "m.bin", _resource("1"), PUBLISHER) is True
    assert store.put_resource("models", "m.bin", _resource("1"), PUBLISHER) is False
    with pytest.raises(VersionConflict) as caught:
        store.put_resource("models", "m.bin", _resource("1", small="b3RoZXI="), PUBLISHER)
    assert (caught.value.status, caught.value.error_code) == (409, 31)


def test_plain_digest_is_stored_and_part_of_the_content(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.put_resource("models", "m.bin", _resource("1", plain_sha256="e" * 64), PUBLISHER)
    assert not store.put_resource(
        "models", "m.bin", _resource("1", plain_sha256="e" * 64), PUBLISHER
    )
    with pytest.raises(VersionConflict):
        store.put_resource("models", "m.bin", _resource("1", plain_sha256="f" * 64), PUBLISHER)
    with pytest.raises(VersionConflict):
        store.put_resource("models", "m.bin", _resource("1"), PUBLISHER)
    assert Store(tmp_path).get_resource("models", "m.bin", "1").plain_sha256 == "e" * 64


def test_versions_stored_without_a_plain_digest_still_load(tmp_path: Path) -> None:
    # A resources.json written before `plain_sha256` existed.
    Store(tmp_path)  # creates the directory layout
    old = _resource("1").to_json()
    del old["plain_sha256"]
    doc = {"resources": {"models/m.bin": {"folder": "models", "name": "m.bin", "versions": [old]}}}
    (tmp_path / "resources.json").write_text(json.dumps(doc))
    record = Store(tmp_path).get_resource("models", "m.bin", None)
    assert record.plain_sha256 is None and record.sha256 == "d" * 64


def test_the_format_is_stored_and_part_of_the_content(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.put_resource("models", "m.bin", _resource("1", fmt=2), PUBLISHER)
    assert not store.put_resource("models", "m.bin", _resource("1", fmt=2), PUBLISHER)
    with pytest.raises(VersionConflict) as caught:
        store.put_resource("models", "m.bin", replace(_resource("1", fmt=2), format=1), PUBLISHER)
    assert (caught.value.status, caught.value.error_code) == (409, 31)
    assert Store(tmp_path).get_resource("models", "m.bin", "1").format == 2
    assert not _resource("1", fmt=2).same_content(replace(_resource("1", fmt=2), format=1))


def test_format_1_versions_are_stored_without_a_format(tmp_path: Path) -> None:
    # As before format 2, so that an older server still reads the state file.
    store = Store(tmp_path)
    store.put_resource("models", "a.bin", _resource("1"), PUBLISHER)
    store.put_resource("models", "b.bin", _resource("1", fmt=2), PUBLISHER)
    stored = json.loads((tmp_path / "resources.json").read_text())["resources"]
    assert "format" not in stored["models/a.bin"]["versions"][0]
    assert stored["models/b.bin"]["versions"][0]["format"] == 2


def test_versions_stored_before_formats_existed_read_as_format_1(tmp_path: Path) -> None:
    Store(tmp_path)
    old = {k: v for k, v in _resource("1").to_json().items() if k != "plain_sha256"}
    assert "format" not in old
    entry = {"folder": "models", "name": "m.bin", "owner": PUBLISHER.email, "versions": [old]}
    (tmp_path / "resources.json").write_text(json.dumps({"resources": {"models/m.bin": entry}}))
    store = Store(tmp_path)
    assert store.get_resource("models", "m.bin", None).format == 1
    # The same content again is an identical retry, not a conflict.
    assert not store.put_resource("models", "m.bin", _resource("1"), PUBLISHER)


def test_the_listing_names_format_2_versions_only(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_resource("models", "m.bin", _resource("1"), PUBLISHER)
    store.put_resource("models", "m.bin", _resource("2", fmt=2), PUBLISHER)
    versions = store.list_entries("resources", "models")[0]["versions"]
    assert [v.get("format") for v in versions] == [None, 2]
    assert set(versions[0]) == {"version", "sha256", "size", "created"}


def test_latest_is_the_last_registered_version(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_resource("models", "m.bin", _resource("2"), PUBLISHER)
    store.put_resource("models", "m.bin", _resource("10", small="eA=="), PUBLISHER)
    assert store.get_resource("models", "m.bin", None).version == "10"
    assert store.get_resource("models", "m.bin", "2").version == "2"
    with pytest.raises(UnknownEntry):
        store.get_resource("models", "m.bin", "3")
    with pytest.raises(UnknownEntry):
        store.get_resource("models", "other.bin", None)


def test_archives_keep_their_images(tmp_path: Path) -> None:
    store = Store(tmp_path)
    record = ArchiveVersion(
        version="1", fragment="Zg==", sha256="e" * 64, size=48, images=("demo/app:1.0",)
    )
    assert store.put_archive("images", "app", record, PUBLISHER)
    assert store.get_archive("images", "app", "1").images == ("demo/app:1.0",)
    listing = store.list_entries("archives", None)
    assert [(e["folder"], e["name"], e["latest"]) for e in listing] == [("images", "app", "1")]
    assert "fragment" not in json.dumps(listing)


def test_listing_filters_by_folder_and_hides_secrets(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_resource("models", "a.bin", _resource("1"), PUBLISHER)
    store.put_resource("other", "b.bin", _resource("1"), PUBLISHER)
    listing = store.list_entries("resources", "models")
    assert [e["name"] for e in listing] == ["a.bin"]
    assert set(listing[0]["versions"][0]) == {"version", "sha256", "size", "created"}


def test_state_files_are_private_and_leave_no_temporaries(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    _user(store)
    store.put_resource("models", "m.bin", _resource("1"), PUBLISHER)
    store.set_cdn_config({"endpoint_url": "http://x", "read": {}, "write": None})
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert names == [".lock", "cdn.json", "resources.json", "users.json"]
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700
    for name in ("cdn.json", "resources.json", "users.json"):
        assert stat.S_IMODE(os.stat(tmp_path / "data" / name).st_mode) == 0o600


def test_concurrent_bindings_never_exceed_max_devices(tmp_path: Path) -> None:
    store = Store(tmp_path)
    user_id = _user(store, max_devices=3)
    outcomes: list[str] = []

    def bind(index: int) -> None:
        try:
            Store(tmp_path).bind_device(user_id, f"{index:064x}")
            outcomes.append("bound")
        except HardwareMismatch:
            outcomes.append("refused")

    threads = [threading.Thread(target=bind, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("bound") == 3
    assert len(store.user_by_id(user_id).devices) == 3  # type: ignore[union-attr]


def test_concurrent_first_publishers_leave_exactly_one_owner(tmp_path: Path) -> None:
    store = Store(tmp_path)
    publishers = [
        User(
            id=str(i),
            email=f"p{i}@example.com",
            role="uploader",
            password_hash="h",
            user_key="k",
            max_devices=1,
        )
        for i in range(8)
    ]
    accepted: list[str] = []

    def publish(user: User) -> None:
        try:
            store.put_resource("models", "m.bin", _resource(user.id), user)
        except NotOwner:
            return
        accepted.append(user.email)

    threads = [threading.Thread(target=publish, args=(u,)) for u in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [owner] = accepted
    [entry] = Store(tmp_path).list_entries("resources", None)
    assert entry["owner"] == owner and len(entry["versions"]) == 1


def _archive(version: str, fmt: int = 1) -> ArchiveVersion:
    return ArchiveVersion(
        version=version, fragment="ZnJhZw==", sha256="e" * 64, size=48, images=("a:1",), format=fmt
    )


def test_an_archive_format_is_stored_listed_and_part_of_the_content(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.put_archive("images", "app", _archive("1"), PUBLISHER)
    assert store.put_archive("images", "app", _archive("2", fmt=2), PUBLISHER)
    with pytest.raises(VersionConflict):
        store.put_archive("images", "app", _archive("2"), PUBLISHER)
    stored = json.loads((tmp_path / "archives.json").read_text())["archives"]["images/app"]
    # Format 1 is stored as before format 2, so an older server still reads the file.
    assert "format" not in stored["versions"][0]
    assert stored["versions"][1]["format"] == 2
    assert Store(tmp_path).get_archive("images", "app", "2").format == 2
    assert Store(tmp_path).get_archive("images", "app", "1").format == 1
    versions = store.list_entries("archives", "images")[0]["versions"]
    assert [v.get("format") for v in versions] == [None, 2]
