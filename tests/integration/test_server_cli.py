"""`loader serve-api` as a process: users and CDN files, persistence, TLS, signals, bad input."""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from azaion_loader import envelope

FP = "c" * 64
PASSWORD = "canary-serve-api-pw-7731"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    return {**env, **extra}


class ServeApi:
    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.err = (tmp_path / f"serve-api-{self.port}.err").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "azaion_loader", "serve-api", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            stderr=self.err,
            env=env or clean_env(),
        )

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def wait_listening(self, scheme: str = "http", verify: str | bool = True) -> str:
        url = f"{scheme}://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve-api exited {self.proc.returncode}: {self.stderr()}")
            try:
                requests.get(f"{url}/healthz", timeout=2, verify=verify).raise_for_status()
                return url
            except requests.RequestException:
                time.sleep(0.2)
        pytest.fail(f"serve-api did not listen: {self.stderr()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.err.close()
        return code


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    users = tmp_path / "users.yaml"
    users.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {"email": "Pub@Example.test", "password": PASSWORD, "role": "uploader"},
                    {"email": "edge@example.test", "password": "edge-pw", "max_devices": 2},
                ]
            }
        )
    )
    cdn = tmp_path / "cdn.json"
    cdn.write_text(
        json.dumps(
            {
                "endpoint_url": "http://127.0.0.1:9",
                "read": {"access_key_id": "r", "secret_access_key": "rs"},
                "write": {"access_key_id": "w", "secret_access_key": "ws"},
            }
        )
    )
    return users, cdn


def login(url: str, email: str, password: str, verify: str | bool = True) -> str:
    resp = requests.post(
        f"{url}/login", json={"email": email, "password": password}, timeout=10, verify=verify
    )
    assert resp.status_code == 200, resp.text
    token: str = resp.json()["token"]
    return token


@pytest.fixture
def running(tmp_path: Path, files: tuple[Path, Path]) -> Iterator[tuple[ServeApi, str, Path]]:
    users, cdn = files
    data = tmp_path / "data"
    server = ServeApi(
        tmp_path, "--data-dir", str(data), "--users-file", str(users), "--cdn-config-file", str(cdn)
    )
    try:
        yield server, server.wait_listening(), data
    finally:
        server.stop(signal.SIGKILL)


def test_users_and_cdn_files_are_installed(running: tuple[ServeApi, str, Path]) -> None:
    server, url, data = running
    token = login(url, "pub@example.test", PASSWORD)
    resp = requests.get(
        f"{url}/cdn-config",
        headers={"Authorization": f"Bearer {token}", "X-Hardware-Fingerprint": FP},
        timeout=10,
    )
    key = envelope.derive_envelope_key(envelope.derive_user_key("pub@example.test", PASSWORD), FP)
    assert envelope.open_envelope(key, "cdn-config", resp.json()["envelope"])["write"] == {
        "access_key_id": "w",
        "secret_access_key": "ws",
    }
    edge = login(url, "edge@example.test", "edge-pw")
    me = requests.get(f"{url}/me", headers={"Authorization": f"Bearer {edge}"}, timeout=10)
    assert me.json() == {
        "email": "edge@example.test",
        "role": "user",
        "devices": 0,
        "max_devices": 2,
    }
    # No password in argv, the log or the state files.
    assert PASSWORD not in " ".join(server.proc.args)  # type: ignore[arg-type]
    assert PASSWORD not in server.stderr()
    for path in data.iterdir():
        assert PASSWORD not in path.read_text(errors="replace")
    assert oct(os.stat(data / "jwt-secret").st_mode & 0o777) == "0o600"


def test_state_and_tokens_survive_a_restart(tmp_path: Path, files: tuple[Path, Path]) -> None:
    users, _ = files
    data = tmp_path / "data"
    first = ServeApi(tmp_path, "--data-dir", str(data), "--users-file", str(users))
    url = first.wait_listening()
    token = login(url, "pub@example.test", PASSWORD)
    auth = {"Authorization": f"Bearer {token}"}
    body = {
        "version": "1",
        "small": "A" * 12,  # 9 bytes: the small part of a 32-byte ciphertext
        "key": "B" * 43 + "=",  # 32 bytes
        "sha256": "e" * 64,
        "size": 32,
        "plain_size": 0,
    }
    assert requests.put(f"{url}/resources/models/m.bin", json=body, headers=auth, timeout=10).ok
    assert first.stop(signal.SIGTERM) == 0
    second = ServeApi(tmp_path, "--data-dir", str(data))
    try:
        url = second.wait_listening()
        listing = requests.get(f"{url}/resources", headers=auth, timeout=10)
        assert listing.status_code == 200  # the old token is still valid
        assert listing.json()["resources"][0]["name"] == "m.bin"
    finally:
        assert second.stop(signal.SIGINT) == 0


def test_sigterm_stops_cleanly_and_frees_the_port(running: tuple[ServeApi, str, Path]) -> None:
    server, _, _ = running
    assert server.stop(signal.SIGTERM) == 0
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0


def test_secret_from_env_must_be_long_enough(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "azaion_loader",
            "serve-api",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            "0",
        ],
        env=clean_env(LOADER_SERVER_JWT_SECRET="short-canary"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert "LOADER_SERVER_JWT_SECRET" in done.stderr
    assert "short-canary" not in done.stderr


def test_bad_users_file_is_a_one_line_error_without_the_password(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(
        yaml.safe_dump([{"email": "x@example.test", "password": PASSWORD, "role": "root"}])
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "azaion_loader",
            "serve-api",
            "--data-dir",
            str(tmp_path / "d"),
            "--users-file",
            str(users),
            "--port",
            "0",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("loader: error:"), done.stderr
    assert "user #1" in lines[0] and "role" in lines[0]
    assert PASSWORD not in done.stderr


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls(tmp_path: Path, files: tuple[Path, Path]) -> None:
    cert, key = _self_signed(tmp_path)
    users, _ = files
    server = ServeApi(
        tmp_path,
        "--data-dir",
        str(tmp_path / "d"),
        "--users-file",
        str(users),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    try:
        url = server.wait_listening("https", verify=str(cert))
        assert url.startswith("https://")
        login(url, "pub@example.test", PASSWORD, verify=str(cert))
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/healthz", timeout=10)  # not trusted by the system CAs
    finally:
        assert server.stop() == 0
