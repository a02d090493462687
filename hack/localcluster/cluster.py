#!/usr/bin/env python3
"""A real single-node Kubernetes v1.32 on this machine, without any image registry.

Run as root: ``python3 hack/localcluster/cluster.py up|down|status [--json]|env|build``
(``scripts/cluster`` is the wrapper). Python standard library only, so it runs
before the project's virtualenv exists.

Parts: Kubernetes server binaries and helm built from Go modules (cached under
/var/cache/azaion-loader/bin, keyed by version), Debian's etcd, containerd, runc
and CNI plugins, a locally built pause image, certificates made with openssl,
a hostPath volume provisioner (this module, ``provision`` sub-command) and the
project-owned bridge ``azl-br0`` whose address (10.244.0.1) is both the node
address and the address pods use to reach services on the host.
See docs/cluster.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cluster_build import build_all, kubectl_path
from cluster_common import (
    K8S_VERSION,
    PROVISIONER,
    STORAGE_CLASS,
    Api,
    ClusterError,
    Settings,
    ctr,
    run,
    wait_containerd,
    wait_for,
    write,
)
from cluster_host import cleanup_network, ensure_packages, prepare_network
from cluster_images import ensure_pause_image
from cluster_pki import kubeconfig, make_pki
from cluster_procs import Component, running_pid, start, stop
from cluster_provisioner import cmd_provision

log = logging.getLogger("cluster")


# ---------------------------------------------------------------- configs and components


def containerd_component(s: Settings) -> Component:
    """containerd with its own root, state, socket and CNI config (apart from Docker's)."""
    cfg = s.state / "containerd" / "config.toml"
    write(
        cfg,
        f"""version = 2
root = "{s.state}/containerd/root"
state = "{s.run}/containerd/state"
[grpc]
  address = "{s.containerd_sock}"
[ttrpc]
  address = "{s.run}/containerd/containerd.sock.ttrpc"
[debug]
  address = "{s.run}/containerd/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{s.state}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{s.pause_image}"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{s.run}/runc"
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{s.state}/cni/net.d"
""",
    )
    write(
        s.state / "cni" / "net.d" / "10-azaion.conflist",
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "azaion",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": s.bridge,
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": s.pod_cidr, "gateway": s.host_ip}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": f"{s.state}/cni/ipam",
                        },
                    }
                ],
            },
            indent=1,
        ),
    )
    (s.run / "containerd").mkdir(parents=True, exist_ok=True)
    return Component("containerd", ["/usr/bin/containerd", "--config", str(cfg)])


def control_plane(s: Settings) -> list[Component]:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler."""
    b, p = s.k8s_bin, s.pki
    etcd_url = f"http://127.0.0.1:{s.etcd_client_port}"
    etcd = Component(
        "etcd",
        [
            "/usr/bin/etcd",
            "--name=azaion",
            f"--data-dir={s.state}/etcd",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{s.etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{s.etcd_peer_port}",
            f"--initial-cluster=azaion=http://127.0.0.1:{s.etcd_peer_port}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=2147483648",
        ],
        health=f"{etcd_url}/health",
    )
    apiserver = Component(
        "kube-apiserver",
        [
            str(b / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={s.host_ip}",
            f"--advertise-address={s.host_ip}",
            f"--secure-port={s.apiserver_port}",
            f"--tls-cert-file={p}/apiserver.crt",
            f"--tls-private-key-file={p}/apiserver.key",
            f"--client-ca-file={p}/ca.crt",
            f"--kubelet-client-certificate={p}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={p}/apiserver-kubelet-client.key",
            f"--kubelet-certificate-authority={p}/ca.crt",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-cluster-ip-range={s.service_cidr}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p}/sa.pub",
            f"--service-account-signing-key-file={p}/sa.key",
            "--profiling=false",
            "--v=1",
        ],
        health=f"https://{s.host_ip}:{s.apiserver_port}/readyz",
        timeout=90,
    )
    cm = Component(
        "kube-controller-manager",
        [
            str(b / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig(s, 'controller-manager')}",
            f"--authentication-kubeconfig={s.state}/kubeconfigs/controller-manager.conf",
            f"--authorization-kubeconfig={s.state}/kubeconfigs/controller-manager.conf",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            f"--service-account-private-key-file={p}/sa.key",
            f"--root-ca-file={p}/ca.crt",
            f"--cluster-signing-cert-file={p}/ca.crt",
            f"--cluster-signing-key-file={p}/ca.key",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={s.service_cidr}",
            "--profiling=false",
            "--v=1",
        ],
        health="https://127.0.0.1:10257/healthz",
    )
    sched = Component(
        "kube-scheduler",
        [
            str(b / "kube-scheduler"),
            f"--kubeconfig={kubeconfig(s, 'scheduler')}",
            f"--authentication-kubeconfig={s.state}/kubeconfigs/scheduler.conf",
            f"--authorization-kubeconfig={s.state}/kubeconfigs/scheduler.conf",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ],
        health="https://127.0.0.1:10259/healthz",
    )
    return [etcd, apiserver, cm, sched]


def node(s: Settings) -> list[Component]:
    """kubelet and kube-proxy."""
    p = s.pki
    kcfg = s.state / "kubelet" / "config.json"
    write(
        kcfg,
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": s.host_ip,
                "port": 10250,
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": 10248,
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": True},
                    "x509": {"clientCAFile": f"{p}/ca.crt"},
                },
                "authorization": {"mode": "Webhook"},
                "tlsCertFile": f"{p}/kubelet-serving.crt",
                "tlsPrivateKeyFile": f"{p}/kubelet-serving.key",
                "cgroupDriver": "cgroupfs",
                "failSwapOn": False,
                "containerRuntimeEndpoint": f"unix://{s.containerd_sock}",
                "clusterDomain": "cluster.local",
                "resolvConf": "/etc/resolv.conf",
                "podLogsDir": f"{s.state}/pod-logs",
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "evictionHard": {
                    "memory.available": "100Mi",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                },
                "serializeImagePulls": False,
                "protectKernelDefaults": False,
                "registerNode": True,
                "maxPods": 110,
            },
            indent=1,
        ),
    )
    kubelet = Component(
        "kubelet",
        [
            str(s.k8s_bin / "kubelet"),
            f"--config={kcfg}",
            f"--kubeconfig={kubeconfig(s, 'kubelet-client')}",
            f"--hostname-override={s.node_name}",
            f"--node-ip={s.host_ip}",
            f"--root-dir={s.state}/kubelet/root",
            "--v=1",
        ],
        health="http://127.0.0.1:10248/healthz",
    )
    pcfg = s.state / "kube-proxy" / "config.json"
    write(
        pcfg,
        json.dumps(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "mode": "iptables",
                "clusterCIDR": s.pod_cidr,
                "hostnameOverride": s.node_name,
                "bindAddress": s.host_ip,
                "healthzBindAddress": "127.0.0.1:10256",
                "metricsBindAddress": "127.0.0.1:10249",
                "clientConnection": {"kubeconfig": str(kubeconfig(s, "kube-proxy"))},
                "conntrack": {
                    "maxPerCore": 0,
                    "min": 0,
                    "tcpEstablishedTimeout": "0s",
                    "tcpCloseWaitTimeout": "0s",
                },
            },
            indent=1,
        ),
    )
    proxy = Component(
        "kube-proxy",
        [str(s.k8s_bin / "kube-proxy"), f"--config={pcfg}", "--v=1"],
        health="http://127.0.0.1:10256/livez",
    )
    return [kubelet, proxy]


def provisioner_component(s: Settings) -> Component:
    """This module's hostPath provisioner loop, as a detached process."""
    return Component(
        "provisioner",
        [sys.executable, os.path.abspath(__file__), "provision"],
        env={"PYTHONUNBUFFERED": "1"},
    )


# ---------------------------------------------------------------- up / down / status


def node_ready(api: Api, s: Settings) -> bool:
    """True when the node reports Ready=True."""
    status, obj = api.call("GET", f"/api/v1/nodes/{s.node_name}")
    if status != 200:
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in obj["status"].get("conditions", [])
    )


def cluster_objects(s: Settings, api: Api) -> None:
    """The default StorageClass (served by this module's hostPath provisioner)."""
    api.ensure(
        "/apis/storage.k8s.io/v1/storageclasses",
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        },
    )


def cmd_up(s: Settings) -> int:
    """Bring the cluster up, or reuse the parts that already run; wait for the node to be Ready."""
    t0 = time.monotonic()
    if os.geteuid() != 0:
        raise ClusterError("must run as root")
    ensure_packages()
    build_all(s)
    if s.state.exists() and not any(running_pid(s, name) for name in COMPONENTS):
        log.info("stale state from a cluster whose processes are gone: cleaning it first")
        cmd_down(s)
    for d in (s.state, s.run):
        d.mkdir(parents=True, exist_ok=True)
    make_pki(s)
    kubeconfig(s, "admin")
    prepare_network(s)
    start(s, containerd_component(s))
    wait_containerd(s)
    ensure_pause_image(s)
    for comp in control_plane(s):
        start(s, comp)
    log.info("control plane answers (%.0fs)", time.monotonic() - t0)
    api = Api(s)
    cluster_objects(s, api)
    start(s, provisioner_component(s))
    for comp in node(s):
        start(s, comp)
    wait_for("node Ready", lambda: node_ready(api, s), 120, 1)
    wait_for(
        "default ServiceAccount",
        lambda: api.call("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
        60,
    )
    log.info("cluster up in %.0fs", time.monotonic() - t0)
    print(f"export KUBECONFIG={s.admin_kubeconfig}")
    return 0


COMPONENTS = (
    "containerd",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "provisioner",
    "kubelet",
    "kube-proxy",
)


def mounts_under(*roots: Path) -> list[str]:
    """Mount points under the given directories, deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if any(mp == str(r) or mp.startswith(str(r) + "/") for r in roots):
            found.append(mp)
    return sorted(set(found), key=len, reverse=True)


def stop_containers(s: Settings) -> list[str]:
    """Kill every task in the cluster's containerd and return the pods' network namespace paths."""
    netns: list[str] = []
    if not s.containerd_sock.exists() or not running_pid(s, "containerd"):
        return netns
    for cid in ctr(s, "containers", "ls", "-q", check=False).stdout.split():
        info = ctr(s, "containers", "info", cid, check=False, quiet=True)
        try:
            for ns in json.loads(info.stdout)["Spec"]["linux"]["namespaces"]:
                if ns.get("type") == "network" and ns.get("path"):
                    netns.append(ns["path"])
        except (ValueError, KeyError, TypeError):
            pass
        ctr(s, "tasks", "kill", "-s", "SIGKILL", cid, check=False, quiet=True)
    for cid in ctr(s, "containers", "ls", "-q", check=False).stdout.split():
        for _ in range(25):
            done = ctr(s, "tasks", "delete", cid, check=False, quiet=True)
            if done.returncode == 0 or "not found" in done.stderr:
                break
            time.sleep(0.2)
        ctr(s, "containers", "delete", cid, check=False, quiet=True)
    return sorted(set(netns))


def remove_cgroups() -> None:
    """Remove the kubelet's (now empty) kubepods cgroups in every v1 hierarchy."""
    for hier in Path("/sys/fs/cgroup").iterdir():
        top = hier / "kubepods"
        if not top.is_dir():
            continue
        for d in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


def cmd_down(s: Settings) -> int:
    """Stop every process the cluster started (recorded PIDs), unmount and remove all state."""
    if os.geteuid() != 0:
        raise ClusterError("must run as root")
    for name in ("kube-proxy", "kubelet", "provisioner"):
        stop(s, name)
    cfg = s.state / "containerd" / "config.toml"
    if not running_pid(s, "containerd") and cfg.exists() and s.run.exists():
        # containerd died (or was killed with the session) but its shims and
        # containers may live on: restart it so their tasks can be killed.
        log.info("containerd is not running; starting it to clean up its containers")
        start(s, Component("containerd", ["/usr/bin/containerd", "--config", str(cfg)]))
        wait_containerd(s)
    netns = stop_containers(s)
    for name in (
        "kube-scheduler",
        "kube-controller-manager",
        "kube-apiserver",
        "etcd",
        "containerd",
    ):
        stop(s, name)
    for ns in netns:
        run(["umount", ns], check=False, quiet=True)
        Path(ns).unlink(missing_ok=True)
    for mp in mounts_under(s.state, s.run):
        run(["umount", "-l", mp], check=False, quiet=True)
    cleanup_network(s)
    remove_cgroups()
    shutil.rmtree(s.run, ignore_errors=True)
    shutil.rmtree(s.state, ignore_errors=True)
    log.info("cluster down; state removed")
    return 0


def status_dict(s: Settings) -> dict[str, Any]:
    """Machine-readable status: processes, readiness, addresses, kubeconfig."""
    procs = {name: running_pid(s, name) for name in COMPONENTS}
    ready = False
    if procs["kube-apiserver"] and (s.pki / "admin.crt").exists():
        try:
            ready = node_ready(Api(s), s)
        except (OSError, http.client.HTTPException, ValueError):
            ready = False
    return {
        "kubernetes_version": K8S_VERSION,
        "running": all(procs.values()),
        "node_ready": ready,
        "processes": procs,
        "kubeconfig": str(s.admin_kubeconfig),
        "api_server": s.apiserver_url,
        "host_ip": s.host_ip,
        "pod_cidr": s.pod_cidr,
        "service_cidr": s.service_cidr,
        "storage_class": STORAGE_CLASS,
        "containerd_socket": str(s.containerd_sock),
        "kubectl": kubectl_path(s),
        "helm": str(s.helm_bin),
        "state_dir": str(s.state),
    }


def cmd_status(s: Settings, as_json: bool) -> int:
    """Print status; exit 0 when every process runs and the node is Ready, else 1."""
    st = status_dict(s)
    if as_json:
        print(json.dumps(st, indent=1))
    else:
        for name, pid in st["processes"].items():
            print(f"{name:24} {'pid ' + str(pid) if pid else 'not running'}")
        print(f"node ready: {st['node_ready']}  api: {st['api_server']}  host_ip: {st['host_ip']}")
    return 0 if st["running"] and st["node_ready"] else 1


def cmd_env(s: Settings) -> int:
    """Print shell export lines for the cluster (eval "$(scripts/cluster env)")."""
    st = status_dict(s)
    print(f"export KUBECONFIG={st['kubeconfig']}")
    print(f"export AZAION_CLUSTER_HOST_IP={st['host_ip']}")
    print(f"export AZAION_KUBECTL={st['kubectl']}")
    print(f"export AZAION_HELM={st['helm']}")
    print(f"export AZAION_CONTAINERD_SOCKET={st['containerd_socket']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        prog="cluster", description="local single-node Kubernetes for tests"
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="start (or reuse) the cluster; builds binaries when not cached")
    sub.add_parser("down", help="stop every started process and remove all state")
    st = sub.add_parser("status", help="show processes and readiness")
    st.add_argument("--json", action="store_true")
    sub.add_parser("env", help="print export lines (KUBECONFIG, host address, tool paths)")
    sub.add_parser("build", help="build and cache the Kubernetes binaries and helm only")
    sub.add_parser("provision", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s cluster: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    s = Settings()
    try:
        if args.cmd == "up":
            return cmd_up(s)
        if args.cmd == "down":
            return cmd_down(s)
        if args.cmd == "status":
            return cmd_status(s, args.json)
        if args.cmd == "env":
            return cmd_env(s)
        if args.cmd == "build":
            build_all(s)
            return 0
        return cmd_provision(s)
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
