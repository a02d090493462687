"""Every CLI path, with canary secrets, at DEBUG in text and JSON: no secret in any output."""

from __future__ import annotations

import base64
import io
import os
import secrets
import tarfile
from pathlib import Path
from typing import Any

import pytest
from loader_cli_support import run_loader

from azaion_loader.api_client import ApiClient
from azaion_loader.fingerprint import compute_fingerprint
from azaion_loader.settings import Credentials


class Outputs:
    """Everything the CLI wrote: stdout, stderr and result files."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def run(self, env: dict[str, str], *args: str, tmp: Path) -> int:
        result_file = tmp / f"result-{len(self.texts)}.json"
        proc = run_loader(env, *args, result_file=str(result_file), progress=True)
        label = " ".join(args[:1])
        self.texts += [(f"{label} stdout", proc.stdout), (f"{label} stderr", proc.stderr)]
        if result_file.exists():
            self.texts.append((f"{label} result", result_file.read_text()))
        return proc.code

    def assert_clean(self, canaries: dict[str, str]) -> None:
        for what, value in canaries.items():
            assert len(value) >= 8, what
            for label, text in self.texts:
                assert value not in text, f"{what} leaked into {label}"
        for label, text in self.texts:
            assert "eyJ" not in text, f"something like a JWT leaked into {label}"
            assert "Traceback" not in text, f"a traceback in {label}"


def _variants() -> list[dict[str, str]]:
    return [
        {"LOADER_LOG_LEVEL": "DEBUG", "LOADER_LOG_FORMAT": "text"},
        {"LOADER_LOG_LEVEL": "DEBUG", "LOADER_LOG_FORMAT": "json"},
    ]


@pytest.mark.parametrize("log_env", _variants(), ids=["text", "json"])
def test_no_secret_in_any_output(
    dev_env: Any, tmp_path: Path, log_env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    out = Outputs()
    env = dev_env.merged(**log_env)
    src = tmp_path / "resource.bin"
    src.write_bytes(os.urandom(300_000))

    # resources: upload, fetch (miss, hit), verify, failures
    assert out.run(env, "upload", "--folder", "models", "--name", "m", str(src), tmp=tmp_path) == 0
    target = tmp_path / "m.out"
    for _ in range(2):
        assert (
            out.run(
                env,
                "fetch",
                "--folder",
                "models",
                "--name",
                "m",
                "--out",
                str(target),
                tmp=tmp_path,
            )
            == 0
        )
    import hashlib

    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert out.run(env, "verify", "--file", str(target), "--sha256", digest, tmp=tmp_path) == 0
    assert out.run(env, "verify", "--file", str(target), "--sha256", "0" * 64, tmp=tmp_path) == 30
    wrong = f"canary-wrong-{secrets.token_hex(8)}"
    assert (
        out.run(
            dev_env.merged(LOADER_PASSWORD=wrong, **log_env),
            "fetch",
            "--folder",
            "models",
            "--name",
            "m",
            "--out",
            str(target),
            tmp=tmp_path,
        )
        == 11
    )
    assert (
        out.run(
            env, "fetch", "--folder", "models", "--name", "none", "--out", str(target), tmp=tmp_path
        )
        == 12
    )
    other_hw = dev_env.merged(LOADER_HW_MACHINE_ID="ee" * 16, LOADER_CACHE_DIR="", **log_env)
    assert (
        out.run(
            other_hw,
            "fetch",
            "--folder",
            "models",
            "--name",
            "m",
            "--out",
            str(target),
            tmp=tmp_path,
        )
        == 0
    )
    assert out.run(env, "fingerprint", tmp=tmp_path) == 0

    # archives: a tar with a manifest (no Docker needed up to unlock-fetch)
    archive = tmp_path / "a.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b'[{"Config":"c.json","RepoTags":["canary/app:1"],"Layers":[]}]'
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(buf.getvalue())
    assert (
        out.run(
            env, "upload-archive", "--folder", "images", "--name", "a", str(archive), tmp=tmp_path
        )
        == 0
    )
    work = tmp_path / "work"
    assert (
        out.run(
            env,
            "unlock-fetch",
            "--archive-folder",
            "images",
            "--archive-name",
            "a",
            "--workdir",
            str(work),
            tmp=tmp_path,
        )
        == 0
    )
    no_docker = dev_env.merged(DOCKER_HOST=f"unix://{tmp_path}/none.sock", **log_env)
    assert out.run(no_docker, "unlock-load", "--workdir", str(work), tmp=tmp_path) == 41
    assert (
        out.run(
            no_docker, "unlock", "--archive-folder", "images", "--archive-name", "a", tmp=tmp_path
        )
        == 41
    )

    # the secrets the runs handled
    api = ApiClient(
        dev_env["LOADER_API_URL"],
        Credentials(dev_env["LOADER_EMAIL"], dev_env.password),
        fingerprint=compute_fingerprint(dev_env["LOADER_HW_MACHINE_ID"], "amd64"),
    )
    rec = api.get_resource("models", "m")
    frag = api.get_key_fragment("images", "a")
    cdn = api.get_cdn_config()
    canaries = {
        "password": dev_env.password,
        "wrong password": wrong,
        "resource key (b64)": base64.b64encode(rec.key).decode(),
        "resource key (hex)": rec.key.hex(),
        "small part (b64)": base64.b64encode(rec.small).decode()[:40],
        "key fragment (b64)": base64.b64encode(frag.fragment).decode(),
        "key fragment (hex)": frag.fragment.hex(),
        "read secret key": cdn.read.secret_access_key,
    }
    if cdn.write is not None:
        canaries["write secret key"] = cdn.write.secret_access_key
    out.assert_clean(canaries)
    assert not (tmp_path / "m.out").with_suffix(".tmp").exists()
    _ = request
