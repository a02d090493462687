"""Real faults on loopback (issue 11): a proxy cuts, stalls or slows a live stream.

The `loader` CLI runs as a child process against the reference API server and
moto's S3, with :mod:`faultproxy` in between.  Every test checks the exit code
and error class, that the time stayed within the deadline, that no temporary
is left and that the target is absent or still holds its old content.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from loader_cli import fetch_model, upload_model

BIG = 4 * 1024 * 1024 + 123
"""Plaintext size: the big part is several 2 MiB fetch chunks."""


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


def target_dir_with_old(tmp_path: Path) -> tuple[Path, Path]:
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    out = target_dir / "model.bin"
    out.write_bytes(b"old version")
    return target_dir, out


def assert_untouched(target_dir: Path, out: Path) -> None:
    assert out.read_bytes() == b"old version"
    assert sorted(p.name for p in target_dir.iterdir()) == ["model.bin"]  # no temporary


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
    started = time.monotonic()
    code, result, _, err = fetch_model(env, out, timeout=60)
    elapsed = time.monotonic() - started
    assert code == 14, err
    assert result is not None and result["error"] == "ApiUnavailableError"
    assert "within 3 s" in result["message"]
    assert elapsed < 15, elapsed  # a byte every 250 ms would take minutes
    assert_untouched(target_dir, out)


# -- the CDN: stall, trickle, cut -------------------------------------------------


@pytest.mark.parametrize("kind", ["stall", "slow"])
def test_cdn_below_the_minimum_rate_fails_fast(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path, kind: str
) -> None:
    proxy = fault_proxy(dev_env.s3.port)
    proxy.arm(b"GET /models/model.bin.big", kind, at=1024 * 1024, rate=2000)
    cdn_through(dev_env, proxy)
    target_dir, out = target_dir_with_old(tmp_path)
    env = dev_env.merged(
        LOADER_CACHE_DIR="",
        LOADER_TIMEOUT="30",
        LOADER_MIN_RATE="100000",
        LOADER_RATE_WINDOW="1",
    )
    started = time.monotonic()
    code, result, _, err = fetch_model(env, out, timeout=90)
    elapsed = time.monotonic() - started
    assert proxy.reached.is_set()
    assert code == 21, err
    assert result is not None and result["error"] == "CdnUnavailableError"
    assert "slower than 100000 bytes/s" in result["message"]
    assert elapsed < 15, elapsed  # the per-read timeout alone: 30 s, or never for a trickle
    assert_untouched(target_dir, out)


def test_cdn_cut_mid_big_part_publishes_nothing(
    dev_env: Any, published: bytes, fault_proxy: Any, tmp_path: Path
) -> None:
    proxy = fault_proxy(dev_env.s3.port)
    proxy.arm(b"GET /models/model.bin.big", "cut", at=3 * 1024 * 1024)
    cdn_through(dev_env, proxy)
    target_dir, out = target_dir_with_old(tmp_path)
    code, result, _, err = fetch_model(dev_env.merged(LOADER_CACHE_DIR=""), out)
    assert proxy.reached.is_set()
    assert code == 21, err
    assert result is not None and result["error"] == "CdnUnavailableError"
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
    proxy = fault_proxy(dev_env.s3.port)
    proxy.arm(b"GET /models/model.bin.big", "slow", at=2 * 1024 * 1024, rate=50_000)
    cdn_through(dev_env, proxy)
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
    proxy = fault_proxy(dev_env.s3.port)
    proxy.arm(b"GET /models/model.bin.big", "slow", at=2 * 1024 * 1024, rate=50_000)
    cdn_through(dev_env, proxy)
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
    assert result is not None and result["sha256"] == hashlib.sha256(published).hexdigest()
    assert out.read_bytes() == published
    assert [p.name for p in target_dir.iterdir()] == ["model.bin"]
