"""`loader ls`: what a user may fetch, with its versions, from the API's listing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from loader_cli_support import docker_save_like, run_loader, upload_model


@pytest.fixture
def published(dev_env: Any, tmp_path: Path) -> dict[str, str]:
    """Two versions of models/a.bin, one of models/b.bin and of archive images/app.

    Returns the ``LOADER_*`` env of an ordinary user (role ``user``).
    """
    env = dev_env.merged()
    src = tmp_path / "plain"
    for name, version in (("a.bin", "1"), ("a.bin", "2"), ("b.bin", "7")):
        src.write_bytes(f"{name} {version}".encode())
        assert upload_model(env, src, "--version", version, name=name).code == 0
    archive = tmp_path / "app.tar"
    docker_save_like(archive, "demo/app:1")
    args = ("upload-archive", "--folder", "images", "--name", "app", "--version", "a1")
    assert run_loader(env, *args, str(archive)).code == 0
    user = dev_env.api.create_user(role="user")
    return dev_env.merged(LOADER_EMAIL=user.email, LOADER_PASSWORD=user.password)


def test_ls_lists_resources_and_archives_with_versions(published: dict[str, str]) -> None:
    code, result, _, err = run_loader(published, "ls")
    assert code == 0, err
    assert result is not None and result["ok"] and result["folder"] is None
    resources = {f"{r['folder']}/{r['name']}": r for r in result["resources"]}
    assert list(resources) == ["models/a.bin", "models/b.bin"]
    assert [v["version"] for v in resources["models/a.bin"]["versions"]] == ["1", "2"]
    assert resources["models/a.bin"]["latest"] == "2"
    assert {"sha256", "size", "created"} <= set(resources["models/a.bin"]["versions"][0])
    assert "owner" not in resources["models/a.bin"]  # an ordinary user sees no owners
    assert [(a["folder"], a["name"], a["latest"]) for a in result["archives"]] == [
        ("images", "app", "a1")
    ]


def test_ls_text_is_a_table_on_stdout(published: dict[str, str]) -> None:
    code, _, out, err = run_loader(published, "ls", json=False)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:3] == ["KIND", "FOLDER/NAME", "LATEST"]
    assert rows[1:] == [
        ["resource", "models/a.bin", "2", "1", "2"],
        ["resource", "models/b.bin", "7", "7"],
        ["archive", "images/app", "a1", "a1"],
    ]
    assert "KIND" not in err


def test_ls_folder_and_kind_narrow_the_listing(published: dict[str, str]) -> None:
    code, result, _, err = run_loader(published, "ls", "--folder", "images")
    assert code == 0, err
    assert result is not None and result["resources"] == [] and len(result["archives"]) == 1
    code, result, _, err = run_loader(published, "ls", "--kind", "resources")
    assert code == 0, err
    assert result is not None and "archives" not in result and len(result["resources"]) == 2
    code, _, out, err = run_loader(published, "ls", "--folder", "empty", json=False)
    assert code == 0, err
    assert out.strip() == "nothing published in folder empty"


def test_ls_needs_credentials_and_refuses_a_bad_folder(published: dict[str, str]) -> None:
    env = {k: v for k, v in published.items() if k != "LOADER_PASSWORD"}
    code, result, _, _ = run_loader(env, "ls")
    assert code == 4 and result is not None and result["error"] == "CredentialsMissingError"
    code, result, _, _ = run_loader(published, "ls", "--folder", "../x")
    # As for fetch: the API's 400 is a ProtocolError (15) carrying its one-line reason.
    assert code == 15 and result is not None and "valid S3 bucket name" in result["message"]


def test_ls_shows_the_format_of_format_2_archive_versions_only(
    dev_env: Any, published: dict[str, str], tmp_path: Path
) -> None:
    archive = tmp_path / "app1.tar"
    docker_save_like(archive, "demo/app:1")
    args = ("upload-archive", "--folder", "images", "--name", "app", "--version", "a2")
    assert run_loader(dev_env.merged(), *args, "--format", "1", str(archive)).code == 0
    code, result, _, err = run_loader(published, "ls", "--kind", "archives")
    assert code == 0, err
    versions = result["archives"][0]["versions"]
    # a1 was published in the default format 2; a2 in format 1, listed as before format 2.
    assert [(v["version"], v.get("format")) for v in versions] == [("a1", 2), ("a2", None)]
    assert "format" not in versions[1]
