"""Build and cache the Kubernetes binaries and helm from Go modules (module proxy),
for the kind node image and the host-side tests (hack/kind_node_image.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from cluster_common import (
    CACHE,
    HELM_VERSION,
    K8S_BUILD_DATE,
    K8S_COMMIT,
    K8S_STAGING_MODULES,
    K8S_STAGING_VERSION,
    K8S_VERSION,
    SERVER_BINARIES,
    ClusterError,
    Settings,
    run,
    write,
)

log = logging.getLogger("cluster")

# ---------------------------------------------------------------- build


def kubectl_path(s: Settings) -> str:
    """A kubectl of the cluster's minor version: the machine's if v1.32, else the cached build."""
    built = s.k8s_bin / "kubectl"
    if built.exists():
        return str(built)
    system = shutil.which("kubectl")
    if system:
        proc = run([system, "version", "--client", "-o", "json"], check=False)
        if proc.returncode == 0 and json.loads(proc.stdout)["clientVersion"][
            "gitVersion"
        ].startswith("v1.32."):
            return system
    return str(built)


def go_env() -> dict[str, str]:
    """Environment for Go builds: static binaries, go.sum filled from the module proxy.

    The checksum database is skipped for k8s.io modules: its lookups through the
    proxy answer 404 for several staging modules on these machines.
    """
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GONOSUMDB="k8s.io,sigs.k8s.io")
    return env


def go_install(package: str, bin_dir: Path, *, ldflags: str = "-s -w", what: str) -> None:
    """``go install package`` (``path@version``) into ``bin_dir``, atomically.

    The binaries land in ``bin_dir.partial`` first, which is renamed onto
    ``bin_dir`` only once the build succeeded: a cache directory that exists
    is complete.
    """
    out = bin_dir.with_name(bin_dir.name + ".partial")
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["nice", "-n", "10", "go", "install", "-trimpath", "-ldflags", ldflags, package],
        env=dict(go_env(), GOBIN=str(out)),
        text=True,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise ClusterError(f"{what} build failed: {proc.stderr.strip()[-800:]}")
    shutil.rmtree(bin_dir, ignore_errors=True)
    out.rename(bin_dir)


def go_build(
    work: Path,
    packages: list[str],
    out: Path | str,
    *,
    ldflags: str = "-s -w",
    env: dict[str, str] | None = None,
    log_name: str,
    what: str,
) -> None:
    """``go build`` of ``packages`` in the module at ``work`` into ``out`` (a file, or a
    directory ending in ``/``), niced, its output kept in the cache's logs."""
    build_log = CACHE / "logs" / f"{log_name}-build.log"
    build_log.parent.mkdir(parents=True, exist_ok=True)
    argv = ["nice", "-n", "10", "go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(out)]
    with build_log.open("w") as fh:
        proc = subprocess.run(
            [*argv, *packages],
            cwd=work,
            env=env or go_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise ClusterError(f"{what} build failed (log: {build_log})")


def build_helm(s: Settings) -> None:
    """Build helm from helm.sh/helm/v3 through the Go module proxy into the cache."""
    if s.helm_bin.exists():
        return
    t0 = time.monotonic()
    log.info("building helm %s (Go module proxy; a few minutes)", HELM_VERSION)
    # As helm's own Makefile: without the chartutil flags `helm template` (no
    # cluster) assumes Kubernetes v1.20 and refuses the chart's kubeVersion >=1.25.
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    go_install(
        f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}",
        s.helm_bin.parent,
        ldflags=(
            f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"
            f" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major}"
            f" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}"
        ),
        what="helm",
    )
    log.info("helm built in %.0fs", time.monotonic() - t0)


def build_kubernetes(s: Settings, extra: tuple[str, ...] = ()) -> None:
    """Build the Kubernetes server binaries (and kubectl if the machine lacks a v1.32 one).

    extra names more commands of k8s.io/kubernetes/cmd (the kind node image asks
    for kubeadm and kubectl); only the binaries not yet in the cache are built.
    """
    wanted = list(SERVER_BINARIES)
    if not Path(kubectl_path(s)).exists():
        wanted.append("kubectl")
    wanted += [b for b in extra if b not in wanted]
    wanted = [b for b in wanted if not (s.k8s_bin / b).exists()]
    if not wanted:
        return
    t0 = time.monotonic()
    log.info(
        "building Kubernetes %s %s from Go modules (cold: ~15-25 min on 2 cores)",
        K8S_VERSION,
        wanted,
    )
    work = CACHE / "build" / f"k8s-{K8S_VERSION}"
    work.mkdir(parents=True, exist_ok=True)
    replaces = "\n".join(
        f"\tk8s.io/{m} => k8s.io/{m} {K8S_STAGING_VERSION}" for m in K8S_STAGING_MODULES
    )
    gomod = (
        "module azaion-loader/k8sbuild\n\ngo 1.23.0\n\ngodebug default=go1.23\n\n"
        f"require k8s.io/kubernetes {K8S_VERSION}\n\nreplace (\n{replaces}\n)\n"
    )
    if (
        not (work / "go.mod").exists()
        or "require k8s.io/kubernetes" not in (work / "go.mod").read_text()
    ):
        write(work / "go.mod", gomod)
    ld = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        ld += [
            f"-X {pkg}.gitVersion={K8S_VERSION}",
            f"-X {pkg}.gitMajor=1",
            f"-X {pkg}.gitMinor=32",
            f"-X {pkg}.gitCommit={K8S_COMMIT}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={K8S_BUILD_DATE}",
        ]
    out = s.k8s_bin.with_name(s.k8s_bin.name + ".partial")
    out.mkdir(parents=True, exist_ok=True)
    pkgs = [f"k8s.io/kubernetes/cmd/{b}" for b in wanted]
    go_build(
        work,
        pkgs,
        f"{out}/",
        ldflags=" ".join(ld),
        log_name=f"k8s-{K8S_VERSION}",
        what="Kubernetes",
    )
    if s.k8s_bin.exists():
        # Add to the cache in place, one atomic rename per binary: a cluster
        # may be running from (or starting with) the binaries already there.
        for f in out.iterdir():
            os.replace(f, s.k8s_bin / f.name)
        shutil.rmtree(out)
    else:
        out.rename(s.k8s_bin)
    log.info("Kubernetes binaries built in %.0fs", time.monotonic() - t0)
