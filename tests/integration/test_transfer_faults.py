"""Real faults on loopback (issue 11): a proxy cuts, stalls or slows a live stream.

The `loader` CLI runs as a child process against the reference API server and
moto's S3, with :mod:`fault_proxy` (``hack/fault_proxy.py``) in between.  Every
test checks the exit code and error class, that the time stayed within the
deadline, that no temporary is left and that the target is absent or still
holds its old content.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from loader_cli_support import fetch_model, upload_model

LOADER = [sys.executable, "-m", "azaion_loader"]
BIG = 4 * 1024 * 1024 + 123
"""Plaintext size: the big part is several 2 MiB fetch chunks."""
BIG_PART_GET = b"GET /models/model.bin.big"
"""The request most faults are armed on: the big part's download from the CDN."""


@pytest.fixture
def published(dev_env: Any, tmp_path: Path) -> bytes:
    data = os.urandom(BIG)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    code, _, _, err = upload_model(dev_env.merged(LOADER_CACHE_DIR=""), src)
    assert code == 0, err
    return data


def cdn_through(dev_env: Any, proxy: Any) -> None:
    """From now on the API hands out the proxy as the CDN endpoint (same keys)."""
    config = dev_env.api.state.store.cdn_config()
    assert config is not None
    dev_env.api.set_cdn_config({**config, "endpoint_url": proxy.url})


def cdn_fault(
    dev_env: Any, fault_proxy: Any, kind: str, *, request: bytes = BIG_PART_GET, **arm: Any
) -> Any:
    """A proxy in front of S3 with one fault armed on ``request``, handed out as the CDN."""
    proxy = fault_proxy(dev_env.s3.port)
    proxy.arm(request, kind, **arm)
    cdn_through(dev_env, proxy)
    return proxy


def target_dir_with_old(tmp_path: Path) -> tuple[Path, Path]:
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    out = target_dir / "model.bin"
    out.write_bytes(b"old version")
    return target_dir, out


def assert_untouched(target_dir: Path, out: Path) -> None:
    assert out.read_bytes() == b"old version"
    assert sorted(p.name for p in target_dir.iterdir()) == ["model.bin"]  # no temporary


def timed_fetch(
    env: dict[str, str], out: Path, timeout: float
) -> tuple[int, dict[str, Any] | None, str, float]:
    """``fetch_model``'s exit code, JSON result and stderr, and how long it took in seconds."""
    started = time.monotonic()
    code, result, _, err = fetch_model(env, out, timeout=timeout)
    return code, result, err, time.monotonic() - started


def assert_failed(
    code: int, result: dict[str, Any] | None, err: str, exit_code: int, error: str
) -> None:
    """The fetch ended with ``exit_code`` and its JSON result names the error class."""
    assert code == exit_code, err
    assert result is not None and result["error"] == error


def assert_fetched(result: dict[str, Any] | None, out: Path, published: bytes) -> None:
    """The target holds exactly what was published, with no temporary beside it."""
    assert result is not None and result["sha256"] == hashlib.sha256(published).hexdigest()
    assert out.read_bytes() == published
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.bin"]


def start_fetch(env: dict[str, str], out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "azaion_loader",
            "fetch",
            "--folder",
            "models",
            "--name",
            "model.bin",
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- the API: a trickle within every per-read timeout ------------------------------


def test_api_trickle_ends_at_the_deadline(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path
) -> None:
    proxy = fault_proxy(dev_env.api.port)
    proxy.arm(b"GET /resources/models/model.bin", "slow", at=20, rate=4, times=10)
    target_dir, out = target_dir_with_old(tmp_path)
    env = dev_env.merged(
        LOADER_API_URL=proxy.url, LOADER_CACHE_DIR="", LOADER_TIMEOUT="2", LOADER_DEADLINE="3"
    )
    code, result, err, elapsed = timed_fetch(env, out, timeout=60)
    assert_failed(code, result, err, 14, "ApiUnavailableError")
    assert "within 3 s" in result["message"]
    assert elapsed < 15, elapsed  # a byte every 250 ms would take minutes
    assert_untouched(target_dir, out)


# -- the CDN: stall, trickle, cut -------------------------------------------------


def big_size(data: bytes) -> int:
    """Bytes of the big part on the CDN for a plaintext ``data`` (docs/protocol.md §5)."""
    cipher = 16 + 16 * (len(data) // 16 + 1)
    return cipher - min(3072, cipher * 3 // 10)


@pytest.mark.parametrize("kind", ["stall", "slow"])
def test_cdn_below_the_minimum_rate_fails_fast_without_resumes(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path, kind: str
) -> None:
    proxy = cdn_fault(dev_env, fault_proxy, kind, at=1024 * 1024, rate=2000)
    target_dir, out = target_dir_with_old(tmp_path)
    env = dev_env.merged(
        LOADER_CACHE_DIR="",
        LOADER_TIMEOUT="30",
        LOADER_RETRIES="0",
        LOADER_MIN_RATE="100000",
        LOADER_RATE_WINDOW="1",
    )
    code, result, err, elapsed = timed_fetch(env, out, timeout=90)
    assert proxy.reached.is_set()
    assert_failed(code, result, err, 21, "CdnUnavailableError")
    assert "slower than 100000 bytes/s" in result["message"]
    assert elapsed < 15, elapsed  # the per-read timeout alone: 30 s, or never for a trickle
    assert_untouched(target_dir, out)


def test_cdn_stall_resumes_and_the_result_verifies(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path
) -> None:
    """A stall the rate watch detects is resumed with Range; the fetch completes."""
    proxy = cdn_fault(dev_env, fault_proxy, "stall", at=1024 * 1024)
    _, out = target_dir_with_old(tmp_path)
    env = dev_env.merged(LOADER_CACHE_DIR="", LOADER_MIN_RATE="100000", LOADER_RATE_WINDOW="1")
    code, result, _, err = fetch_model(env, out, timeout=90)
    assert proxy.reached.is_set()
    assert code == 0, err
    assert "slower than 100000 bytes/s" in err and "resuming at byte" in err
    assert_fetched(result, out, published)
    assert proxy.sent < big_size(published) + 16 * 1024  # the rest, not the whole again


def test_cdn_stalls_on_every_resume_end_at_the_download_deadline(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path
) -> None:
    """Each resume stalls again: the total deadline ends the download, resumes included."""
    cdn_fault(dev_env, fault_proxy, "stall", at=64 * 1024, times=100)
    target_dir, out = target_dir_with_old(tmp_path)
    env = dev_env.merged(
        LOADER_CACHE_DIR="",
        LOADER_RETRIES="50",
        LOADER_MIN_RATE="100000",
        LOADER_RATE_WINDOW="1",
        LOADER_DOWNLOAD_DEADLINE="5",
    )
    code, result, err, elapsed = timed_fetch(env, out, timeout=90)
    assert_failed(code, result, err, 21, "CdnUnavailableError")
    assert "within 5 s" in result["message"]
    assert err.count("resuming at byte") >= 1
    assert elapsed < 12, elapsed
    assert_untouched(target_dir, out)


def test_cdn_cut_mid_big_part_resumes_from_where_it_stopped(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path
) -> None:
    proxy = cdn_fault(dev_env, fault_proxy, "cut", at=3 * 1024 * 1024)
    _, out = target_dir_with_old(tmp_path)
    code, result, _, err = fetch_model(dev_env.merged(LOADER_CACHE_DIR=""), out)
    assert proxy.reached.is_set()
    assert code == 0, err
    assert "resuming at byte" in err
    assert_fetched(result, out, published)
    assert proxy.connections == 2
    # Starting over would have sent 3 MiB more than the big part.
    assert proxy.sent < big_size(published) + 16 * 1024, proxy.sent


def test_cdn_cut_without_resumes_publishes_nothing(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path
) -> None:
    proxy = cdn_fault(dev_env, fault_proxy, "cut", at=3 * 1024 * 1024)
    target_dir, out = target_dir_with_old(tmp_path)
    code, result, _, err = fetch_model(dev_env.merged(LOADER_CACHE_DIR="", LOADER_RETRIES="0"), out)
    assert proxy.reached.is_set()
    assert_failed(code, result, err, 21, "CdnUnavailableError")
    assert "ended GET models/model.bin.big after" in result["message"]
    assert_untouched(target_dir, out)


def test_cdn_held_then_released_completes_on_one_connection(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path
) -> None:
    """The big part is held after 1 MiB for 3 s (within every default timeout), then
    released: the same stream goes on, no resume, the result verifies (the e2e kubelet
    fault holds a Job's download this way)."""
    proxy = cdn_fault(dev_env, fault_proxy, "hold", at=1024 * 1024, times=10)
    target_dir, out = target_dir_with_old(tmp_path)
    proc = start_fetch(dev_env.merged(LOADER_CACHE_DIR=""), out)
    try:
        assert proxy.reached.wait(60), "the fetch never reached the hold"
        sent = proxy.sent
        time.sleep(3)
        assert proxy.held == 1 and proxy.sent == sent, "the stream was not held"
        assert proc.poll() is None, "the fetch ended while its stream was held"
        assert_untouched(target_dir, out)  # nothing published from a partial stream
        proxy.release()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proxy.release()
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "resuming at byte" not in stderr
    assert_fetched(json.loads(stdout.strip().splitlines()[-1]), out, published)
    assert proxy.connections == proxy.matched == 1 and proxy.held == 0
    assert big_size(published) <= proxy.sent < big_size(published) + 16 * 1024


def test_cdn_object_replaced_before_the_resume_fails_cleanly(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path
) -> None:
    """The big part is replaced while the stream stalls: the resume's If-Match fails."""
    proxy = cdn_fault(dev_env, fault_proxy, "stall", at=2 * 1024 * 1024)
    target_dir, out = target_dir_with_old(tmp_path)
    env = dev_env.merged(LOADER_CACHE_DIR="", LOADER_MIN_RATE="100000", LOADER_RATE_WINDOW="2")
    proc = start_fetch(env, out)
    try:
        assert proxy.reached.wait(60), "the fetch never reached the stall"
        s3 = dev_env.s3.client("test-write", "test-write-secret")
        s3.put_object(Bucket="models", Key="model.bin.big", Body=os.urandom(big_size(published)))
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 21, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["error"] == "CdnUnavailableError"
    assert "was replaced on the CDN" in result["message"]
    assert "Traceback" not in stderr
    assert_untouched(target_dir, out)


# -- signals in mid-stream ----------------------------------------------------------


@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_mid_fetch_cleans_up(
    dev_env: Any,
    published: bytes,
    fault_proxy: Any,
    tmp_path: Path,
    sig: signal.Signals,
    exit_code: int,
) -> None:
    proxy = cdn_fault(dev_env, fault_proxy, "slow", at=2 * 1024 * 1024, rate=50_000)
    target_dir, out = target_dir_with_old(tmp_path)
    proc = start_fetch(dev_env.merged(LOADER_CACHE_DIR=""), out)
    try:
        assert proxy.reached.wait(60), "the fetch never reached the slow part"
        time.sleep(0.5)  # decrypted plaintext is being written now
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    assert f"loader: terminated by {sig.name}" in stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["ok"] is False and result["exit_code"] == exit_code
    assert_untouched(target_dir, out)


def test_sigkill_mid_fetch_leaves_no_plaintext_and_the_next_fetch_completes(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path
) -> None:
    proxy = cdn_fault(dev_env, fault_proxy, "slow", at=2 * 1024 * 1024, rate=50_000)
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    out = target_dir / "model.bin"
    proc = start_fetch(dev_env.merged(LOADER_CACHE_DIR=""), out)
    try:
        assert proxy.reached.wait(60), "the fetch never reached the slow part"
        time.sleep(0.5)
        proc.kill()
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert list(target_dir.iterdir()) == []  # the plaintext temporary had no name
    proxy.disarm()
    code, result, _, err = fetch_model(dev_env.merged(LOADER_CACHE_DIR=""), out)
    assert code == 0, err
    assert_fetched(result, out, published)


# -- servers down, restarted, or answering 503 ---------------------------------------


def test_api_down_then_back_within_the_retries(
    dev_env: Any, published: bytes, tmp_path: Path
) -> None:
    """The API refuses connections, comes back during the retries: the fetch completes."""
    dev_env.api.stop()
    timer = threading.Timer(1.0, dev_env.api.start)
    timer.start()
    try:
        out = tmp_path / "model.bin"
        env = dev_env.merged(LOADER_CACHE_DIR="", LOADER_RETRIES="6")
        code, result, _, err = fetch_model(env, out, timeout=120)
    finally:
        timer.cancel()
        dev_env.api.start()
    assert code == 0, err
    assert result is not None and result["sha256"] == hashlib.sha256(published).hexdigest()
    assert out.read_bytes() == published


def test_api_down_for_good_fails_with_its_class(
    dev_env: Any, published: bytes, tmp_path: Path
) -> None:
    dev_env.api.stop()
    try:
        target_dir, out = target_dir_with_old(tmp_path)
        env = dev_env.merged(LOADER_CACHE_DIR="", LOADER_RETRIES="2")
        code, result, _, err = fetch_model(env, out, timeout=120)
    finally:
        dev_env.api.start()
    assert_failed(code, result, err, 14, "ApiUnavailableError")
    errors = [line for line in err.splitlines() if line.startswith("loader: error:")]
    assert len(errors) == 1 and "Traceback" not in err  # retry warnings, then one line
    assert_untouched(target_dir, out)


@pytest.mark.parametrize(("answers", "code"), [(2, 0), (40, 21)])
def test_cdn_503_storm(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path, answers: int, code: int
) -> None:
    """S3 answers 503 to the big part's GET ``answers`` times: retried through, or given up."""
    proxy = cdn_fault(dev_env, fault_proxy, "503", at=0, times=answers)
    target_dir, out = target_dir_with_old(tmp_path)
    started = time.monotonic()
    got, result, _, err = fetch_model(dev_env.merged(LOADER_CACHE_DIR=""), out, timeout=180)
    assert proxy.reached.is_set()
    assert got == code, err
    if code == 0:
        assert out.read_bytes() == published
        assert sorted(p.name for p in target_dir.iterdir()) == ["model.bin"]
    else:
        assert result is not None and result["error"] == "CdnUnavailableError"
        assert time.monotonic() - started < 120
        assert_untouched(target_dir, out)


# -- signals in an upload and in an image load ----------------------------------------


def test_sigterm_mid_upload_registers_nothing_and_a_new_upload_works(
    dev_env: Any, fault_proxy: Any, tmp_path: Path
) -> None:
    """SIGTERM while the big part goes to the CDN: no record at the API, no cache leftovers."""
    proxy = cdn_fault(
        dev_env, fault_proxy, "stall", request=b"PUT /models/model.bin.big", at=0, times=100
    )
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(BIG))
    cache = tmp_path / "cache"
    env = dev_env.merged(LOADER_CACHE_DIR=str(cache))
    proc = subprocess.Popen(
        [*LOADER, "upload", "--folder", "models", "--name", "model.bin", str(src), "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.reached.wait(60), "the upload never reached the CDN"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert "loader: terminated by SIGTERM" in stderr and "Traceback" not in stderr
    assert dev_env.api.count("PUT", "/resources/models/model.bin") == 0
    leftovers = [p.name for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert leftovers == []
    code, _, _, err = fetch_model(dev_env.merged(LOADER_CACHE_DIR=""), tmp_path / "x")
    assert code == 12, err  # nothing was registered: NotFoundError
    proxy.disarm()
    code, _, _, err = upload_model(dev_env.merged(LOADER_CACHE_DIR=""), src)
    assert code == 0, err


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return found


def test_sigterm_mid_image_load_kills_the_engine_cli(
    dev_env: Any, fetched_archive: tuple[str, Path], tmp_path: Path
) -> None:
    """SIGTERM while `docker load` waits on an engine that never answers: no CLI is left."""
    _, work = fetched_archive
    engine = tmp_path / "silent.sock"
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(engine))
    silent.listen(8)  # accepts connections (the kernel does), reads nothing, answers nothing
    env = dev_env.merged()
    proc = subprocess.Popen(
        [*LOADER, "unlock-load", "--workdir", str(work), "--socket", str(engine), "--json"],
        env={k: v for k, v in env.items() if not k.startswith("LOADER_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (children := _children(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert children, "unlock-load never started the docker CLI"
        time.sleep(1.0)  # the digest matched; the archive went to a CLI that waits on the engine
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        # Checked while the silent engine still holds the CLI's connection open:
        # closing it first would end the CLI by itself.
        alive = [c for c in children if "docker" in _cmdline(c)]
    finally:
        proc.kill()
        silent.close()
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert json.loads(stdout.strip().splitlines()[-1])["exit_code"] == 143
    assert alive == [], f"docker CLI {alive} outlived unlock-load"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
