"""The users and CDN files of `loader serve-api`."""

from __future__ import annotations

from pathlib import Path

import pytest

from azaion_loader.errors import ConfigError
from azaion_loader.server.settings_files import load_cdn_file, load_users_file


def test_users_yaml_mapping_and_json_list(tmp_path: Path) -> None:
    yml = tmp_path / "users.yaml"
    yml.write_text("users:\n  - {email: A@B.test, password: pw, role: admin, max_devices: 3}\n")
    (entry,) = load_users_file(yml)
    assert (entry.email, entry.password, entry.role, entry.max_devices) == (
        "a@b.test",
        "pw",
        "admin",
        3,
    )
    assert "pw" not in repr(entry)
    js = tmp_path / "users.json"
    js.write_text('[{"email": "c@d.test", "password": "x"}]')
    assert [e.role for e in load_users_file(js)] == ["user"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("users: 3\n", "list of users"),
        ("- {email: a@b.test}\n", "user #1"),
        ("- {email: a@b.test, password: canary-x, max_devices: 0}\n", "max_devices"),
        (": : :\n", "not valid YAML"),
    ],
)
def test_bad_users_files(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_users_file(path)
    assert needle in caught.value.message
    assert "canary-x" not in caught.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_users_file(tmp_path / "none.yaml")


def test_cdn_file(tmp_path: Path) -> None:
    path = tmp_path / "cdn.yaml"
    path.write_text(
        "endpoint_url: http://s3:9000\nread: {access_key_id: a, secret_access_key: b}\n"
    )
    assert load_cdn_file(path)["write"] is None
    path.write_text("endpoint_url: http://s3:9000\n")
    with pytest.raises(ConfigError, match="read"):
        load_cdn_file(path)
