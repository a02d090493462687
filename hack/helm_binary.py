"""Where the tests find ``helm`` (v3), the same way in every test folder (stdlib only).

Looked up in ``$AZAION_HELM`` (what ``scripts/kind-node-image env`` exports),
``$HELM``, ``PATH``, then the build cache: ``$AZAION_CLUSTER_CACHE/bin/helm-<version>/helm``
(default ``/var/cache/azaion-loader``), where ``scripts/kind-node-image tools`` builds it
(hack/localcluster/cluster_common.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["HELM_CACHE", "find_helm"]

HELM_CACHE = Path(os.environ.get("AZAION_CLUSTER_CACHE", "/var/cache/azaion-loader")) / "bin"


def find_helm() -> str | None:
    """The path of a helm binary, or None."""
    for variable in ("AZAION_HELM", "HELM"):
        explicit = os.environ.get(variable)
        if explicit:
            return explicit if os.access(explicit, os.X_OK) else None
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    cached = sorted(HELM_CACHE.glob("helm-v3.*/helm"))
    return str(cached[-1]) if cached else None
