"""Helpers for the Helm chart's tests: find helm, run it, pick documents.

The tests need the ``helm`` binary (v3), found by hack/helm_binary.py (``$AZAION_HELM``,
``$HELM``, ``PATH``, then ``$AZAION_CLUSTER_CACHE/bin/helm-<version>/helm``, built by
``scripts/kind-node-image tools``); without it every chart test is skipped with that reason.
"""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "azaion-loader"
CRDS = ROOT / "crds"
# The API server version the chart is rendered for (helm template has no cluster).
KUBE_VERSION = "1.32.4"


class HelmFailed(Exception):
    """helm exited non-zero; the message is its stderr."""


def run_helm(helm: str, *args: str) -> str:
    """Run helm with ``args``; return stdout or raise HelmFailed with stderr."""
    proc = subprocess.run([helm, *args], capture_output=True, text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise HelmFailed(proc.stderr.strip())
    return proc.stdout


def only(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The documents of one kind."""
    return [doc for doc in docs if doc["kind"] == kind]


def crd_documents() -> Iterator[tuple[pathlib.Path, dict[str, Any]]]:
    """Each CRD document in the top-level crds/ with its file."""
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc
