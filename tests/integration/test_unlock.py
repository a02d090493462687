"""Image archives: `loader upload-archive`, `unlock-fetch`, `unlock-load`, `unlock`, real Docker."""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
from pathlib import Path
from typing import Any

import pytest
from loader_cli_support import (
    docker,
    publish_archive,
    published_and_fetched,
    rootfs_tar,
    run_loader,
    unlock_fetch,
)

from azaion_loader.archives import TarManifestScanner, unlock_load
from azaion_loader.docker_cli import DockerCli
from azaion_loader.errors import ImageLoadError, IntegrityError
from azaion_loader.segmented import SEGMENT_SIZE, TAG_SIZE
from azaion_loader.workdir import ArchiveCheck


def _exists(ref: str) -> bool:
    return docker("image", "inspect", ref).returncode == 0


def test_split_unlock_loads_the_manifest_images(
    dev_env: Any, image_archive: tuple[str, Path], tmp_path: Path, archive_format: int
) -> None:
    ref, archive = image_archive
    published = publish_archive(dev_env, archive, "app", f"--format={archive_format}")
    assert published["images"] == [ref]
    work = tmp_path / "work"
    code, result, _, err = unlock_fetch(dev_env, work)
    assert code == 0, err
    assert sorted(p.name for p in work.iterdir()) == ["archive.enc", "fragment.json"]
    assert oct((work / "fragment.json").stat().st_mode & 0o777) == "0o640"
    assert result["sha256"] == published["sha256"]
    # "format" is written only for format 2: a format-1 fragment.json is as before.
    fragment = json.loads((work / "fragment.json").read_text())
    assert fragment.get("format") == (2 if archive_format == 2 else None)
    assert not _exists(ref)
    # the load step runs with no credentials at all
    bare = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    code, result, _, err = run_loader(bare, "unlock-load", "--workdir", str(work))
    assert code == 0, err
    assert result["images"] == [ref] and result["images_source"] == "manifest"
    assert _exists(ref)


def test_unlock_in_one_process(
    dev_env: Any, image_archive: tuple[str, Path], tmp_path: Path, archive_format: int
) -> None:
    ref, archive = image_archive
    publish_archive(dev_env, archive, "app", f"--format={archive_format}")
    code, result, _, err = run_loader(
        dev_env.merged(),
        "unlock",
        "--archive-folder",
        "images",
        "--archive-name",
        "app",
        "--images",
        ref,
    )
    assert code == 0, err
    assert result["images"] == [ref] and result["images_source"] == "argument"
    assert _exists(ref)


def test_expected_image_missing_after_load(
    dev_env: Any, image_archive: tuple[str, Path], tmp_path: Path
) -> None:
    ref, archive = image_archive
    publish_archive(dev_env, archive)
    missing = f"azaion-test/not-in-archive-{secrets.token_hex(4)}:9"
    code, result, _, err = run_loader(
        dev_env.merged(),
        "unlock",
        "--archive-folder",
        "images",
        "--archive-name",
        "app",
        "--images",
        ref,
        missing,
    )
    assert code == 43, err
    assert result["error"] == "ImageMissingError"
    assert missing in result["message"] and ref not in result["message"].split("lacks")[1]


def test_docker_unreachable(
    dev_env: Any, fetched_archive: tuple[str, Path], tmp_path: Path
) -> None:
    ref, work = fetched_archive
    env = dev_env.merged(DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    code, result, _, err = run_loader(env, "unlock-load", "--workdir", str(work))
    assert code == 41, err
    assert result["error"] == "DockerUnavailableError"
    assert "loader: error: the Docker daemon does not answer" in err
    assert not _exists(ref)


def test_not_a_docker_archive_is_refused_at_publish(dev_env: Any, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(100_000))
    code, result, _, err = run_loader(
        dev_env.merged(), "upload-archive", "--folder", "images", "--name", "junk", str(junk)
    )
    assert code == 42, err
    assert result["error"] == "NotADockerArchiveError"
    listing = dev_env.s3.client().list_objects_v2(Bucket="images")
    assert listing.get("KeyCount", 0) == 0


def test_not_a_docker_archive_at_load(docker_engine: str, dev_env: Any, tmp_path: Path) -> None:
    # A publisher that skips the check (the library allows it for tests) registers junk.
    from azaion_loader.api_client import ApiClient
    from azaion_loader.archives import publish_archive
    from azaion_loader.cdn import CdnClient
    from azaion_loader.fingerprint import compute_fingerprint
    from azaion_loader.settings import Credentials

    api = ApiClient(
        dev_env["LOADER_API_URL"],
        Credentials(dev_env["LOADER_EMAIL"], dev_env.password),
        fingerprint=compute_fingerprint(dev_env["LOADER_HW_MACHINE_ID"], "amd64"),
    )
    junk = tmp_path / "junk.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # a tar, but no manifest.json
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    junk.write_bytes(buf.getvalue())
    publish_archive(
        api,
        CdnClient(api.get_cdn_config()),
        folder="images",
        name="junk",
        path=junk,
        images=["azaion-test/junk:1"],
        require_manifest=False,
    )
    code, result, _, err = run_loader(
        dev_env.merged(), "unlock", "--archive-folder", "images", "--archive-name", "junk"
    )
    assert code == 42, err
    assert result["error"] == "NotADockerArchiveError"
    assert "no manifest.json" in result["message"] and "nothing was loaded" in result["message"]


@pytest.mark.parametrize(
    ("extra", "rule"),
    [
        (["--images", "azaion-test/something-else:1"], "not in the expected images"),
        (["--forbid-repository", "azaion-test/PLACEHOLDER"], "the Jobs' own image repository"),
    ],
)
def test_archive_with_a_tag_not_allowed_loads_nothing(
    dev_env: Any, fetched_archive: tuple[str, Path], extra: list[str], rule: str
) -> None:
    ref, work = fetched_archive
    repository = ref.rsplit(":", 1)[0]
    args = [a.replace("azaion-test/PLACEHOLDER", repository) for a in extra]
    code, result, _, err = run_loader(
        dev_env.merged(), "unlock-load", "--workdir", str(work), *args
    )
    assert code == 45, err
    assert result["error"] == "UnexpectedImagesError"
    assert f"{ref} ({rule})" in result["message"] and "nothing was loaded" in result["message"]
    assert not _exists(ref)


def test_archive_with_a_tag_the_api_did_not_register_loads_nothing(
    dev_env: Any, image_archive: tuple[str, Path], tmp_path: Path
) -> None:
    ref, archive = image_archive
    # The publisher registers another image than the archive holds.
    work = published_and_fetched(
        dev_env, archive, tmp_path / "work", "--images=azaion-test/registered:1"
    )
    code, result, _, err = run_loader(dev_env.merged(), "unlock-load", "--workdir", str(work))
    assert code == 45, err
    assert f"{ref} (not registered with the API)" in result["message"]
    assert not _exists(ref)


def test_tampered_workdir_archive_is_not_loaded(
    dev_env: Any, fetched_archive: tuple[str, Path]
) -> None:
    ref, work = fetched_archive
    enc = work / "archive.enc"
    data = bytearray(enc.read_bytes())
    data[1000] ^= 0x10
    enc.write_bytes(bytes(data))
    code, result, _, err = run_loader(dev_env.merged(), "unlock-load", "--workdir", str(work))
    assert code == 30, err
    assert result["error"] == "IntegrityError"
    assert not _exists(ref)


@pytest.mark.parametrize("where", [5, -5])
def test_flipped_byte_on_cdn_leaves_empty_workdir(
    dev_env: Any, image_archive: tuple[str, Path], tmp_path: Path, archive_format: int, where: int
) -> None:
    _ref, archive = image_archive
    publish_archive(dev_env, archive, "app", f"--format={archive_format}")
    s3 = dev_env.s3.client()
    data = bytearray(s3.get_object(Bucket="images", Key="app.enc")["Body"].read())
    data[where] ^= 0x01
    s3.put_object(Bucket="images", Key="app.enc", Body=bytes(data))
    work = tmp_path / "work"
    code, result, _, err = unlock_fetch(dev_env, work)
    assert code == 30, err
    assert result["error"] == "IntegrityError"
    assert list(work.iterdir()) == []


def test_truncated_workdir_archive_is_not_loaded(
    dev_env: Any, fetched_archive: tuple[str, Path]
) -> None:
    ref, work = fetched_archive
    enc = work / "archive.enc"
    enc.write_bytes(enc.read_bytes()[:-100])
    code, result, _, err = run_loader(dev_env.merged(), "unlock-load", "--workdir", str(work))
    assert code == 30, err
    assert result["error"] == "IntegrityError"
    assert not _exists(ref)


def test_a_format_2_fragment_read_as_format_1_fails_its_sha256(
    dev_env: Any, image_archive: tuple[str, Path], tmp_path: Path
) -> None:
    """What a loader that predates format 2 does with such an archive: it fails, loads nothing."""
    ref, archive = image_archive
    work = published_and_fetched(dev_env, archive, tmp_path / "work", "--format=2")
    fragment = json.loads((work / "fragment.json").read_text())
    del fragment["format"]  # an old loader's fragment.json has no format
    (work / "fragment.json").write_text(json.dumps(fragment))
    code, result, _, err = run_loader(dev_env.merged(), "unlock-load", "--workdir", str(work))
    assert code == 30, err
    assert result["error"] == "IntegrityError"
    assert not _exists(ref)


@pytest.mark.parametrize("segment", [0, 1, -1])
def test_a_segment_changed_after_the_check_kills_the_load(
    dev_env: Any, big_image_archive: tuple[str, Path], tmp_path: Path, segment: int
) -> None:
    """Format 2: the file changes between the check and the load pass (which checks each
    segment again): IntegrityError, the engine's load is killed, nothing is loaded."""
    ref, archive = big_image_archive
    work = published_and_fetched(dev_env, archive, tmp_path / "work", "--format=2")
    check = ArchiveCheck.start(work)
    check.wait()  # verified, tags read
    assert check.tags == [ref]
    enc = work / "archive.enc"
    data = bytearray(enc.read_bytes())
    count = -(-len(data) // (SEGMENT_SIZE + TAG_SIZE))
    assert count >= 3
    index = segment % count
    data[index * (SEGMENT_SIZE + TAG_SIZE) + 100] ^= 0x01
    enc.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"segment {index} of .* failed authentication"):
        unlock_load(DockerCli(), workdir=work, check=check)
    assert not _exists(ref)


def test_unlock_load_without_fetch(tmp_path: Path) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    code, result, _, err = run_loader(bare, "unlock-load", "--workdir", str(tmp_path))
    assert code == 3, err
    assert "unlock-fetch" in result["message"]


def test_docker_cli_import_save_remove(docker_engine: str, tmp_path: Path) -> None:
    """DockerCli's import (streamed on stdin), save (to a file) and remove, on a real engine."""
    cli = DockerCli(docker_engine)
    ref = f"azaion-test/cli-{secrets.token_hex(4)}:1.0"
    rootfs = rootfs_tar()
    image_id = cli.import_image(ref, (rootfs[i : i + 4096] for i in range(0, len(rootfs), 4096)))
    try:
        assert image_id.startswith("sha256:")
        assert cli.missing_images([ref]) == []
        archive = tmp_path / "saved.tar"
        cli.save_image([ref], archive)
        scanner = TarManifestScanner()
        scanner.feed(archive.read_bytes())
        assert scanner.valid and scanner.repo_tags == [ref]
        assert cli.remove_image(ref) is True
        assert cli.missing_images([ref]) == [ref]
        assert cli.remove_image(ref) is False
        with pytest.raises(ImageLoadError, match="docker import"):
            cli.import_image(ref, [b"this is not a tar archive" * 100])
    finally:
        cli.remove_image(ref, force=True)
