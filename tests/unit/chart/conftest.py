"""Fixtures for the Helm chart's tests (helpers live in chart_support.py)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from chart_support import CHART, KUBE_VERSION, HelmFailed, run_helm
from helm_binary import HELM_CACHE, find_helm


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary, or a skip that says where the tests look for it."""
    path = find_helm()
    if path is None:
        pytest.skip(
            "helm v3 not found: set HELM, put it on PATH, or build it into "
            f"{HELM_CACHE}/helm-<version>/helm (./scripts/kind-node-image tools does)"
        )
    return path


@pytest.fixture
def render(helm: str, tmp_path: pathlib.Path) -> Callable[..., list[dict[str, Any]]]:
    """Render the chart with the given values (a dict); return the parsed documents."""

    def _render(
        values: dict[str, Any] | None = None, *extra: str, namespace: str = "loader-system"
    ) -> list[dict[str, Any]]:
        values_file = tmp_path / "values.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        out = run_helm(
            helm,
            "template",
            "rel",
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            "--values",
            str(values_file),
            *extra,
        )
        return [doc for doc in yaml.safe_load_all(out) if doc]

    return _render


@pytest.fixture
def render_error(render: Callable[..., list[dict[str, Any]]]) -> Callable[..., str]:
    """Render with values that must be refused; return helm's error text."""

    def _render_error(values: dict[str, Any], *extra: str) -> str:
        with pytest.raises(HelmFailed) as failed:
            render(values, *extra)
        return str(failed.value)

    return _render_error


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = os.environ.get("AZAION_KUBECTL") or shutil.which("kubectl")
    if not path:
        pytest.skip("kubectl not found (set AZAION_KUBECTL or put it on PATH)")
    if not os.environ.get("KUBECONFIG"):
        pytest.skip('no cluster: KUBECONFIG is unset (eval "$(scripts/kind-node-image env)")')
    probe = subprocess.run(
        [path, "version", "--request-timeout=5s", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or "serverVersion" not in probe.stdout:
        pytest.skip(f"no cluster answers at KUBECONFIG={os.environ['KUBECONFIG']}")
    return path
