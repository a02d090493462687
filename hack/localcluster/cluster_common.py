"""Versions, cache paths and helpers of the Go builds that the kind node image uses
(hack/kind_node_image.py; the directory keeps the name of the single-node cluster
tool it once served, docs/cluster.md "Why kind only")."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("cluster")


K8S_VERSION = "v1.32.4"
K8S_STAGING_VERSION = "v0.32.4"
K8S_COMMIT = "59526cd4867447956156ae3a602fcbac10a2c335"
K8S_BUILD_DATE = "2025-04-22T15:56:13Z"
HELM_VERSION = "v3.17.4"

CACHE = Path(os.environ.get("AZAION_CLUSTER_CACHE", "/var/cache/azaion-loader"))

K8S_STAGING_MODULES = (
    "api apiextensions-apiserver apimachinery apiserver cli-runtime client-go "
    "cloud-provider cluster-bootstrap code-generator component-base component-helpers "
    "controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation "
    "endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy "
    "kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission "
    "sample-apiserver sample-cli-plugin sample-controller"
).split()
SERVER_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)


class ClusterError(Exception):
    """A build step failed; the message says which."""


@dataclass(frozen=True)
class Settings:
    """Where the built binaries are cached (keyed by version)."""

    k8s_bin: Path = CACHE / "bin" / f"k8s-{K8S_VERSION}"
    # Keyed by the Kubernetes version too: helm is built with it as its default
    # (`helm template` without a cluster).
    helm_bin: Path = CACHE / "bin" / f"helm-{HELM_VERSION}-k8s{K8S_VERSION}" / "helm"


# ---------------------------------------------------------------- helpers


def run(
    argv: list[str], *, check: bool = True, quiet: bool = False, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing output; raise ClusterError with its stderr on failure."""
    log.debug("run %s", " ".join(argv))
    proc = subprocess.run(argv, text=True, capture_output=True, **kw)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ClusterError(f"{argv[0]} failed ({proc.returncode}): {' | '.join(msg)}")
    if not quiet and proc.returncode != 0:
        log.debug("%s -> %s: %s", argv[0], proc.returncode, proc.stderr.strip())
    return proc


def write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
