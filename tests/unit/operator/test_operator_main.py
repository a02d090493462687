"""The `azaion-operator` entry point: bad settings end with one line and exit code 3."""

from __future__ import annotations

import subprocess
import sys


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; from azaion_operator.main import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_bad_setting_is_one_line_and_exit_3() -> None:
    result = _run(env={"AZAION_OPERATOR_JOB_BACKOFF_LIMIT": "many", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "azaion-operator: AZAION_OPERATOR_JOB_BACKOFF_LIMIT='many': expected an integer"
    )


def test_unknown_argument_is_a_usage_error() -> None:
    result = _run("--bogus", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "Traceback" not in result.stderr


# That the handlers register with kopf and run is shown through kopf's public runner
# (tests/e2e/operator/test_operator_kopf_runner.py), not by reading its registry's privates.
