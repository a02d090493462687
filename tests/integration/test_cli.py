"""The CLI surface: help with examples everywhere, usage errors, interrupts, progress lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from loader_cli_support import LoaderRun, run_loader

from azaion_loader.cli import commands

COMMANDS = [record.name for record in (*commands.COMMANDS, *commands.EXTERNALS)]
"""Every subcommand, from the records the parser is built from (a new one is tested too)."""


def run(*args: str, env: dict[str, str] | None = None) -> LoaderRun:
    """The CLI exactly as given (no ``--json`` added)."""
    return run_loader(env, *args, json=False, progress=True, timeout=60)


def test_every_subcommand_is_listed() -> None:
    assert {
        "fetch",
        "verify",
        "upload",
        "upload-archive",
        "unlock",
        "unlock-fetch",
        "unlock-load",
        "fingerprint",
        "ls",
        "completion",
        "dev-stack",
        "serve-api",
    } <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_examples(command: str) -> None:
    proc = run(command, "--help")
    assert proc.code == 0, proc.stderr
    assert "examples:" in proc.stdout and f"loader {command}" in proc.stdout
    assert "-q, --quiet" in proc.stdout and "-v, --verbose" in proc.stdout
    if command not in ("dev-stack", "serve-api"):
        assert "--json" in proc.stdout and "--result-file" in proc.stdout


def test_usage_error_is_2() -> None:
    proc = run("fetch", "--folder", "x")
    assert proc.code == 2 and "required" in proc.stderr


def test_password_is_not_an_option() -> None:
    assert run("fetch", "--password", "x", "--folder", "a", "--name", "b", "--out", "c").code == 2


def test_fingerprint_json_uses_overrides() -> None:
    env = {**os.environ, "LOADER_HW_MACHINE_ID": "ABC123", "LOADER_HW_ARCH": "x86_64"}
    proc = run("fingerprint", "--json", env=env)
    doc = json.loads(proc.stdout)
    from azaion_loader.fingerprint import compute_fingerprint

    assert doc["ok"] and doc["fingerprint"] == compute_fingerprint("abc123", "amd64")
    assert doc["arch"] == "amd64" and doc["machine_id_source"] == "LOADER_HW_MACHINE_ID"


def test_bad_setting_is_a_config_error() -> None:
    proc = run("fingerprint", env={**os.environ, "LOADER_TIMEOUT": "soon"})
    assert proc.code == 3
    assert proc.stderr.startswith("loader: error: LOADER_TIMEOUT='soon' is not a number")


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupt_exits_130(dev_env: Any, tmp_path: Path) -> None:
    dev_env.api.delay_next(1, 30, path_prefix="/login")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "azaion_loader",
            "fetch",
            "--folder",
            "models",
            "--name",
            "m",
            "--out",
            str(tmp_path / "m"),
            "--json",
        ],
        # A read timeout above the server's delay: the login is still waiting when
        # the signal comes (with the suite's short timeout a retry could get
        # through first, and the fetch end before it).
        env=dev_env.merged(LOADER_TIMEOUT="60", LOADER_DEADLINE="120"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background (`./scripts/test &`, nohup) inherits SIGINT
        # ignored, and Python then keeps it ignored: the signal was lost and the fetch
        # ran on (exit 12 after the login, or a timeout). Ctrl-C's default it is.
        preexec_fn=_sigint_default,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert json.loads(out.splitlines()[-1])["exit_code"] == 130
    assert list(tmp_path.iterdir()) == [] or not (tmp_path / "m").exists()


def test_progress_lines_when_not_a_tty(dev_env: Any, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(os.urandom(64 * 1024 * 1024))
    proc = run("upload", "--folder", "models", "--name", "p", str(src), env=dev_env.merged())
    assert proc.code == 0, proc.stderr
    assert "loader: upload models/p done: 100%" in proc.stderr
    assert proc.stdout.startswith("uploaded models/p version ")


def _closed_port_fetch(out: Path, *flags: str, **env: str) -> LoaderRun:
    """A fetch from a closed loopback port: one retry warning, then exit 14."""
    settings = {
        "LOADER_API_URL": "http://127.0.0.1:1",
        "LOADER_EMAIL": "someone@example.test",
        "LOADER_PASSWORD": "not-a-secret",
        "LOADER_RETRIES": "1",
        "LOADER_DEADLINE": "2",
        "LOADER_HW_MACHINE_ID": "0123456789abcdef0123456789abcdef",
        **env,
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    args = ("fetch", "--folder", "models", "--name", "m", "--out", str(out / "m"), *flags)
    return run(*args, env={**base, **settings})


def test_quiet_shows_errors_only(tmp_path: Path) -> None:
    loud = _closed_port_fetch(tmp_path)
    assert loud.code == 14 and "retrying" in loud.stderr
    quiet = _closed_port_fetch(tmp_path, "-q", LOADER_LOG_LEVEL="DEBUG")  # the flag wins
    assert quiet.code == 14
    errors = [line for line in loud.stderr.splitlines() if line.startswith("loader: error: ")]
    assert len(errors) == 1 and quiet.stderr.splitlines() == errors


def test_verbose_logs_debug(tmp_path: Path) -> None:
    proc = _closed_port_fetch(tmp_path, "--verbose", LOADER_LOG_LEVEL="ERROR")
    assert proc.code == 14
    assert " DEBUG " in proc.stderr and "retrying" in proc.stderr


def test_quiet_and_verbose_exclude_each_other() -> None:
    proc = run("fingerprint", "-q", "-v")
    assert proc.code == 2 and "not allowed with argument" in proc.stderr


def test_quiet_keeps_progress_off_and_the_summary_on_stdout(dev_env: Any, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.write_bytes(os.urandom(8 * 1024 * 1024))
    proc = run("upload", "-q", "--folder", "models", "--name", "q", str(src), env=dev_env.merged())
    assert proc.code == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("uploaded models/q version ")
