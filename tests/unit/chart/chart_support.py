"""Helpers for the Helm chart's tests: find helm, run it, pick documents.

The tests need the ``helm`` binary (v3). It is looked up in ``$HELM``, then on
``PATH``, then in the project's build cache
(``$AZAION_CLUSTER_CACHE/bin/helm-<version>/helm``, default
``/var/cache/azaion-loader``, built by ``scripts/kind-node-image tools``); without
it every chart test is skipped with that reason.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "azaion-loader"
CRDS = ROOT / "crds"
# Where scripts/kind-node-image tools builds helm (hack/localcluster/cluster_common.py).
HELM_CACHE = (
    pathlib.Path(os.environ.get("AZAION_CLUSTER_CACHE", "/var/cache/azaion-loader")) / "bin"
)
# The API server version the chart is rendered for (helm template has no cluster).
KUBE_VERSION = "1.32.4"


def find_helm() -> str | None:
    """Return the path of a helm binary, or None."""
    explicit = os.environ.get("HELM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    cached = sorted(HELM_CACHE.glob("helm-v3.*/helm"))
    return str(cached[-1]) if cached else None


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
