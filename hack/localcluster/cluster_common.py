"""Shared parts of the local cluster tool: settings, errors, subprocess and API helpers."""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("cluster")


K8S_VERSION = "v1.32.4"
K8S_STAGING_VERSION = "v0.32.4"
K8S_COMMIT = "59526cd4867447956156ae3a602fcbac10a2c335"
K8S_BUILD_DATE = "2025-04-22T15:56:13Z"
HELM_VERSION = "v3.17.4"
PAUSE_VERSION = "3.10-azl1"

CACHE = Path(os.environ.get("AZAION_CLUSTER_CACHE", "/var/cache/azaion-loader"))
STATE = Path("/var/lib/azaion-loader-cluster")
RUN = Path("/run/azaion-loader-cluster")

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

PROVISIONER = "azaion-loader.local/hostpath"
STORAGE_CLASS = "azaion-local"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


class ClusterError(Exception):
    """A step of bringing the cluster up or down failed; the message says which."""


@dataclass(frozen=True)
class Settings:
    """Where and how the cluster runs; every address is on the project's own bridge or loopback."""

    node_name: str = "azaion-node"
    bridge: str = "azl-br0"
    pod_cidr: str = "10.244.0.0/24"
    host_ip: str = "10.244.0.1"
    service_cidr: str = "10.96.0.0/24"
    service_ip: str = "10.96.0.1"
    apiserver_port: int = 6443
    etcd_client_port: int = 12379
    etcd_peer_port: int = 12380
    pause_image: str = f"azaion-loader.local/pause:{PAUSE_VERSION}"
    k8s_bin: Path = CACHE / "bin" / f"k8s-{K8S_VERSION}"
    # Keyed by the Kubernetes version too: helm is built with it as its default
    # (`helm template` without a cluster).
    helm_bin: Path = CACHE / "bin" / f"helm-{HELM_VERSION}-k8s{K8S_VERSION}" / "helm"
    state: Path = STATE
    run: Path = RUN

    @property
    def apiserver_url(self) -> str:
        """The API server's URL, on the bridge address."""
        return f"https://{self.host_ip}:{self.apiserver_port}"

    @property
    def containerd_sock(self) -> Path:
        """The cluster's own containerd socket (not Docker's)."""
        return self.run / "containerd" / "containerd.sock"

    @property
    def pki(self) -> Path:
        """Certificates and keys."""
        return self.state / "pki"

    @property
    def admin_kubeconfig(self) -> Path:
        """The cluster-admin kubeconfig that `env` exports."""
        return self.state / "kubeconfig"


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


def wait_for(what: str, probe: Any, timeout: float, interval: float = 0.5) -> Any:
    """Call probe() until it returns a truthy value; raise ClusterError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = probe()
        except (OSError, ValueError, http.client.HTTPException) as exc:
            result = None
            last = str(exc)
        else:
            last = "not yet"
        if result:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what} ({last})")
        time.sleep(interval)


# ---------------------------------------------------------------- API access (stdlib)


class Api:
    """A minimal client of the API server with a client certificate (stdlib only)."""

    def __init__(self, s: Settings, cert: str = "admin") -> None:
        self._host = s.host_ip
        self._port = s.apiserver_port
        self._ctx = ssl.create_default_context(cafile=str(s.pki / "ca.crt"))
        self._ctx.load_cert_chain(str(s.pki / f"{cert}.crt"), str(s.pki / f"{cert}.key"))

    def call(
        self, method: str, path: str, body: Any = None, timeout: float = 10
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON or text)."""
        conn = http.client.HTTPSConnection(
            self._host, self._port, context=self._ctx, timeout=timeout
        )
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read().decode()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw

    def ensure(self, path: str, obj: dict[str, Any]) -> None:
        """Create obj at collection path unless it exists."""
        status, resp = self.call("POST", path, obj)
        if status not in (200, 201, 409):
            raise ClusterError(
                f"creating {obj['kind']} {obj['metadata']['name']} failed: {status} {resp}"
            )


def http_ok(url: str) -> bool:
    """True when url answers 200 (TLS unverified: self-signed health endpoints on loopback)."""
    ctx = ssl._create_unverified_context()
    scheme, rest = url.split("://", 1)
    hostport, _, path = rest.partition("/")
    host, port = hostport.split(":")
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=3)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=3)
    try:
        conn.request("GET", "/" + path)
        return conn.getresponse().status == 200
    finally:
        conn.close()


def ctr(s: Settings, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ctr against the cluster's containerd, namespace k8s.io."""
    return run(["ctr", "--address", str(s.containerd_sock), "-n", "k8s.io", *args], **kw)


def wait_containerd(s: Settings) -> None:
    """Wait until the cluster's containerd answers."""
    wait_for("containerd", lambda: ctr(s, "version", check=False, quiet=True).returncode == 0, 30)
