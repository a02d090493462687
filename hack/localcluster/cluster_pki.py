"""Certificates (openssl) and kubeconfigs of the local cluster."""

from __future__ import annotations

import base64
import json
import logging
import tempfile
from pathlib import Path

from cluster_common import Settings, run, write

log = logging.getLogger("cluster")

# ---------------------------------------------------------------- certificates


def _openssl(*args: str) -> None:
    run(["openssl", *args])


def make_cert(s: Settings, name: str, cn: str, org: str = "", sans: tuple[str, ...] = ()) -> None:
    """Issue an EC P-256 key and a certificate signed by the cluster CA (server+client auth)."""
    key, crt = s.pki / f"{name}.key", s.pki / f"{name}.crt"
    if crt.exists():
        return
    subj = f"/CN={cn}" + (f"/O={org}" if org else "")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    key.chmod(0o600)
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "csr", Path(tmp) / "ext"
        lines = [
            "basicConstraints=CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth,clientAuth",
        ]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-new", "-key", str(key), "-subj", subj, "-out", str(csr))
        _openssl(
            "x509", "-req", "-in", str(csr),
            "-CA", str(s.pki / "ca.crt"), "-CAkey", str(s.pki / "ca.key"), "-CAcreateserial",
            "-days", "3650", "-extfile", str(ext), "-out", str(crt),
        )  # fmt: skip


def make_pki(s: Settings) -> None:
    """The CA, every component's certificate, and the service-account signing key."""
    s.pki.mkdir(parents=True, exist_ok=True)
    s.pki.chmod(0o700)
    if not (s.pki / "ca.crt").exists():
        _openssl(
            "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(s.pki / "ca.key")
        )
        _openssl(
            "req", "-x509", "-new", "-key", str(s.pki / "ca.key"),
            "-subj", "/CN=azaion-loader-cluster-ca", "-days", "3650", "-out", str(s.pki / "ca.crt"),
        )  # fmt: skip
    if not (s.pki / "sa.key").exists():
        _openssl("genrsa", "-out", str(s.pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(s.pki / "sa.key"), "-pubout", "-out", str(s.pki / "sa.pub"))
    sans = (
        f"IP:{s.host_ip}",
        f"IP:{s.service_ip}",
        "IP:127.0.0.1",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    )
    make_cert(s, "apiserver", "kube-apiserver", sans=sans)
    make_cert(s, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
    make_cert(s, "admin", "kubernetes-admin", "system:masters")
    make_cert(s, "controller-manager", "system:kube-controller-manager")
    make_cert(s, "scheduler", "system:kube-scheduler")
    make_cert(s, "kube-proxy", "system:kube-proxy")
    make_cert(s, "kubelet-client", f"system:node:{s.node_name}", "system:nodes")
    make_cert(
        s,
        "kubelet-serving",
        s.node_name,
        sans=(f"IP:{s.host_ip}", f"DNS:{s.node_name}", "IP:127.0.0.1"),
    )
    make_cert(s, "provisioner", "azaion-loader:hostpath-provisioner")


def kubeconfig(s: Settings, cert: str) -> Path:
    """Write a self-contained kubeconfig for the certificate pair `cert` and return its path."""
    path = s.admin_kubeconfig if cert == "admin" else s.state / "kubeconfigs" / f"{cert}.conf"

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "azaion-loader",
                "cluster": {
                    "server": s.apiserver_url,
                    "certificate-authority-data": b64(s.pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": cert,
                "user": {
                    "client-certificate-data": b64(s.pki / f"{cert}.crt"),
                    "client-key-data": b64(s.pki / f"{cert}.key"),
                },
            }
        ],
        "contexts": [
            {"name": "azaion-loader", "context": {"cluster": "azaion-loader", "user": cert}}
        ],
        "current-context": "azaion-loader",
    }
    write(path, json.dumps(doc, indent=1), 0o600)
    return path
