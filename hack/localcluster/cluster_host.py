"""Host preparation for the local cluster: Debian packages, the bridge, iptables."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from cluster_common import Settings, run

log = logging.getLogger("cluster")

# ---------------------------------------------------------------- host preparation

APT_NEEDS = {
    "containerd": "containerd",
    "runc": "runc",
    "etcd": "etcd-server",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "gcc": "gcc",
}


def ensure_packages() -> None:
    """apt-get install the Debian packages the cluster needs, if any is missing."""
    missing = sorted({pkg for exe, pkg in APT_NEEDS.items() if not shutil.which(exe)})
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("containernetworking-plugins")
    if not missing:
        return
    log.info("apt-get install %s", " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def prepare_network(s: Settings) -> None:
    """Create the project's bridge with the host address, and the sysctls/iptables it needs."""
    if run(["ip", "link", "show", s.bridge], check=False, quiet=True).returncode != 0:
        run(["ip", "link", "add", s.bridge, "type", "bridge"])
    prefix = s.pod_cidr.split("/")[1]
    addrs = run(["ip", "-o", "addr", "show", "dev", s.bridge]).stdout
    if f" {s.host_ip}/" not in addrs:
        run(["ip", "addr", "add", f"{s.host_ip}/{prefix}", "dev", s.bridge])
    run(["ip", "link", "set", s.bridge, "up"])
    for key, value in (
        ("net/ipv4/ip_forward", "1"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
        ("net/bridge/bridge-nf-call-ip6tables", "1"),
    ):
        path = Path("/proc/sys") / key
        if path.exists():
            path.write_text(value)
    # Docker sets the FORWARD policy to DROP; let pod traffic through, tagged so `down` removes it.
    for direction in ("-s", "-d"):
        rule = [
            "FORWARD",
            direction,
            s.pod_cidr,
            "-m",
            "comment",
            "--comment",
            "azaion-loader-cluster",
            "-j",
            "ACCEPT",
        ]
        if run(["iptables", "-C", *rule], check=False, quiet=True).returncode != 0:
            run(["iptables", "-I", *rule])


def cleanup_network(s: Settings) -> None:
    """Undo prepare_network: our FORWARD rules, kube-proxy's chains, the bridge."""
    for direction in ("-s", "-d"):
        rule = [
            "FORWARD",
            direction,
            s.pod_cidr,
            "-m",
            "comment",
            "--comment",
            "azaion-loader-cluster",
            "-j",
            "ACCEPT",
        ]
        while run(["iptables", "-D", *rule], check=False, quiet=True).returncode == 0:
            pass
    proxy = s.k8s_bin / "kube-proxy"
    if proxy.exists():
        run([str(proxy), "--cleanup"], check=False, quiet=True)
    remove_kube_chains()
    run(["ip", "link", "del", s.bridge], check=False, quiet=True)


def remove_kube_chains() -> None:
    """Remove the KUBE-* chains the kubelet and kube-proxy leave behind (canaries, firewall)."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = run([tool, "-t", table, "-S"], check=False, quiet=True).stdout.splitlines()
            chains = [r.split()[1] for r in rules if r.startswith("-N KUBE-")]
            for rule in rules:
                parts = rule.split()
                if parts[:1] == ["-A"] and parts[1] not in chains and "-j" in parts:
                    if parts[parts.index("-j") + 1].startswith("KUBE-"):
                        run([tool, "-t", table, "-D", *parts[1:]], check=False, quiet=True)
            for chain in chains:
                run([tool, "-t", table, "-F", chain], check=False, quiet=True)
            for chain in chains:
                run([tool, "-t", table, "-X", chain], check=False, quiet=True)
