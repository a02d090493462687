#!/usr/bin/env python3
"""kind on these machines (issue 13): a kind node image for Kubernetes v1.32 built
without a registry, and a kind cluster made from it.

    scripts/kind-node-image build     build (or reuse) every part and the node image
    scripts/kind-node-image create    build, then `kind create cluster` (1 control plane, 2 workers)
    scripts/kind-node-image check     prove it: pod-to-pod across nodes, Services, DNS, a volume
    scripts/kind-node-image delete    `kind delete cluster`
    scripts/kind-node-image env       KUBECONFIG, KIND, AZAION_HELM/KUBECTL, host address for pods
    scripts/kind-node-image tools     only kind and helm (what the host-side tests need)
    scripts/kind-node-image exists    exit 0 if the cluster exists, 1 if not
    scripts/kind-node-image load IMAGE...   `kind load docker-image` into every node

Every part comes from what these machines reach (the Go module proxy, Debian's
packages) and is cached by version under /var/cache/azaion-loader:

- kind CLI: `go install sigs.k8s.io/kind@KIND_VERSION` (bin/kind-<ver>/)
- kubeadm, kubelet, kubectl and the control-plane binaries: the local cluster's
  build of k8s.io/kubernetes, hack/localcluster/cluster_build.py (bin/k8s-<ver>/)
- etcd, CoreDNS, flanneld, local-path-provisioner: each `go build` of its
  module (bin/kind-parts/<name>-<ver>/)
- two Debian bookworm roots (debootstrap): the node (systemd, containerd, runc,
  CNI plugins, iptables, ...) and a small "tools" root that the kube-proxy,
  flannel and helper images are made on (kind/rootfs-<name>-<ver>/)
- the component images (registry.k8s.io/kube-apiserver:v1.32.4, ..., pause,
  etcd, CoreDNS, flannel, local-path): one-layer OCI archives written here,
  imported by the node at boot from /kind/images (kind/images-<key>/)
- the node image: the node root plus hack/kind/node/*, `docker import`ed as
  azl-kind-node:<k8s version>-<key>

The node image's own files are in hack/kind/node (entrypoint, systemd units,
containerd config, the CNI manifest). `kind` runs with hack/kind/docker-shim as
its `docker`: see there why. Standard library only, like the cluster tool.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack" / "localcluster"))

from cluster_build import build_helm, build_kubernetes, go_build, go_env, go_install  # noqa: E402
from cluster_common import CACHE, K8S_VERSION, ClusterError, Settings, run  # noqa: E402

log = logging.getLogger("kind-node-image")

KIND_VERSION = "v0.33.0"
CLUSTER_NAME = os.environ.get("AZL_KIND_CLUSTER", "azl-kind")
DOCKER_NETWORK = "azl-kind"
# Another repository name keeps a trial build (e.g. a cold one with its own caches)
# from pruning the node image the cluster uses.
NODE_REPO = os.environ.get("AZL_KIND_NODE_REPO", "azl-kind-node")
CLUSTER_CONFIG = REPO / "hack" / "kind" / "cluster.yaml"
NODE_FILES = REPO / "hack" / "kind" / "node"
DOCKER_SHIM = REPO / "hack" / "kind" / "docker-shim"
PAUSE_SOURCE = REPO / "hack" / "kind" / "pause.c"
KUBECONFIG = Path(os.environ.get("AZL_KIND_KUBECONFIG", "/tmp/kind-work/azl-kind.kubeconfig"))
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")

# What kubeadm v1.32.4 asks for (`kubeadm config images list`), besides the
# kube-* images of K8S_VERSION.
ETCD_VERSION = "v3.5.16"
ETCD_TAG = "3.5.16-0"
COREDNS_VERSION = "v1.11.3"
PAUSE_TAG = "3.10"
FLANNEL_VERSION = "v0.28.10"
LOCAL_PATH_VERSION = "v0.0.30"
# the oldest cri-tools the module proxy serves (v1.32.x: 403 "not available");
# crictl speaks CRI v1, which containerd 1.6 serves. kind's log export runs it.
CRICTL_VERSION = "v1.34.0"

# name -> (Go module, version, package to build)
GO_PARTS = {
    "etcd": ("go.etcd.io/etcd/server/v3", ETCD_VERSION, "go.etcd.io/etcd/server/v3"),
    "coredns": ("github.com/coredns/coredns", COREDNS_VERSION, "github.com/coredns/coredns"),
    "flanneld": ("github.com/flannel-io/flannel", FLANNEL_VERSION, "github.com/flannel-io/flannel"),
    "crictl": ("sigs.k8s.io/cri-tools", CRICTL_VERSION, "sigs.k8s.io/cri-tools/cmd/crictl"),
    "local-path-provisioner": (
        "github.com/rancher/local-path-provisioner",
        LOCAL_PATH_VERSION,
        "github.com/rancher/local-path-provisioner",
    ),
}
# flannel links all its backends: the tencentvpc one requires an SDK version the
# proxy refuses (403 "not available"; v1.0.1000 is served), and the udp one
# needs cgo (so flanneld is dynamic, on the Debian "tools" root of its image).
GO_REPLACES = {
    "flanneld": {
        "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc": "v1.0.1000",
    },
}
GO_CGO = {"flanneld"}

# Debian roots: name -> (version key, packages). Bump the key when the list changes.
ROOTFS = {
    "node": (
        "bookworm-1",
        "systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,conntrack,"
        "iptables,nftables,ebtables,ethtool,socat,iproute2,kmod,procps,util-linux,mount,"
        "ca-certificates,libseccomp2,pigz,findutils,ipset,iputils-ping,netbase",
    ),
    "tools": ("bookworm-1", "iptables,conntrack,nftables,ipset,iproute2,kmod,ca-certificates"),
}

# Units of the Debian root that have no place in a node container.
MASKED_UNITS = (
    "getty@tty1.service",
    "console-getty.service",
    "apt-daily-upgrade.timer",
    "apt-daily.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-pstore.service",
    "systemd-udevd.service",
    "systemd-udev-trigger.service",
)
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def k8s_bin() -> Path:
    return Settings().k8s_bin


def kind_bin() -> Path:
    return CACHE / "bin" / f"kind-{KIND_VERSION}" / "kind"


def part_bin(name: str) -> Path:
    return CACHE / "bin" / "kind-parts" / f"{name}-{GO_PARTS[name][1]}" / name


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    """Log how long a step took (the docs' timings come from these lines)."""
    t0 = time.monotonic()
    log.info("%s ...", what)
    try:
        yield
    except BaseException:
        log.info("%s: %.0f s (failed)", what, time.monotonic() - t0)
        raise
    log.info("%s: %.0f s", what, time.monotonic() - t0)


# ---------------------------------------------------------------- Go builds


def build_kind() -> None:
    """go install sigs.k8s.io/kind@KIND_VERSION into the cache."""
    if kind_bin().exists():
        return
    with timed(f"kind {KIND_VERSION} (go install)"):
        go_install(f"sigs.k8s.io/kind@{KIND_VERSION}", kind_bin().parent, what="kind")


def build_go_part(name: str) -> None:
    """Build one component from its Go module in a throw-away module (no inherited replaces)."""
    module, version, pkg = GO_PARTS[name]
    target = part_bin(name)
    if target.exists():
        return
    work = CACHE / "build" / f"kind-{name}-{version}"
    work.mkdir(parents=True, exist_ok=True)
    replaces = "".join(f"replace {m} => {m} {v}\n" for m, v in GO_REPLACES.get(name, {}).items())
    (work / "go.mod").write_text(
        f"module azaion-loader/kind{name}\n\ngo 1.23\n\nrequire {module} {version}\n\n{replaces}"
    )
    env = dict(go_env(), CGO_ENABLED="1" if name in GO_CGO else "0")
    tmp = target.with_name(name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    with timed(f"{name} {version} (go build)"):
        go_build(work, [pkg], tmp, env=env, log_name=f"kind-{name}-{version}", what=name)
    tmp.rename(target)


def pause_bin() -> Path:
    return CACHE / "bin" / "kind-parts" / "pause-azl1" / "pause"


def build_pause() -> Path:
    """The project's static C pause (hack/kind/pause.c), compiled with gcc."""
    target = pause_bin()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pause.c"
        src.write_text(PAUSE_SOURCE.read_text())
        run(["gcc", "-Os", "-static", "-o", str(target) + ".partial", str(src)])
        run(["strip", str(target) + ".partial"], check=False)
    Path(str(target) + ".partial").rename(target)
    return target


# ---------------------------------------------------------------- Debian roots


def rootfs_tar(name: str) -> Path:
    """debootstrap a Debian root (cached as a tarball by version key)."""
    key, packages = ROOTFS[name]
    cache = CACHE / "kind" / f"rootfs-{name}-{key}"
    tarball = cache / "rootfs.tar"
    if tarball.exists():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rootfs.", dir=cache))
    try:
        with timed(f"debootstrap {name} root ({key})"):
            with (cache / "debootstrap.log").open("w") as fh:
                proc = subprocess.run(
                    [
                        "debootstrap",
                        "--variant=minbase",
                        f"--include={packages}",
                        "bookworm",
                        str(work / "root"),
                        DEBIAN_MIRROR,
                    ],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                )
            if proc.returncode != 0:
                raise ClusterError(f"debootstrap failed (log: {cache / 'debootstrap.log'})")
            root = work / "root"
            for sub in (
                "var/lib/apt/lists",
                "var/cache/apt/archives",
                "usr/share/doc",
                "usr/share/man",
                "usr/share/locale",
            ):
                for p in (root / sub).glob("*"):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    elif p.name != "lock":
                        p.unlink()
            run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(work / "rootfs.tar"), "."])
            (work / "rootfs.tar").rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


# ---------------------------------------------------------------- OCI archives


def _tarinfo(
    path: str, size: int = 0, mode: int = 0o644, kind: bytes = tarfile.REGTYPE
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime, info.type = size, mode, 0, kind
    return info


def _add_file(tar: tarfile.TarFile, path: str, src: Path | bytes, mode: int = 0o755) -> None:
    if isinstance(src, bytes):
        tar.addfile(_tarinfo(path, len(src), mode), io.BytesIO(src))
    else:
        with src.open("rb") as fh:
            tar.addfile(_tarinfo(path, src.stat().st_size, mode), fh)


def _copy_tar(tar: tarfile.TarFile, source: Path, skip: Collection[str] = ()) -> None:
    """Append every member of a tarball (keeping owners and modes), except paths in skip."""
    with tarfile.open(source) as src:
        for member in src:
            if member.name.lstrip("./") in skip:
                continue
            fh = src.extractfile(member) if member.isreg() else None
            tar.addfile(member, fh)


class _HashWriter(io.RawIOBase):
    """A file wrapper that counts and hashes what is written."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.h, self.n = fh, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.fh.write(b)
        self.h.update(b)
        self.n += len(b)
        return len(b)


def oci_image(
    out: Path,
    name: str,
    files: dict[str, Path | bytes],
    *,
    base: Path | None = None,
    entrypoint: list[str] | None = None,
) -> None:
    """Write a one-layer, uncompressed OCI image archive for `ctr images import`.

    The layer is base (a root tarball) if given, plus files {path in image: source}.
    """
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        layer_path = Path(tmp) / "layer.tar"
        with layer_path.open("wb") as raw:
            hw = _HashWriter(raw)
            with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                skip = set()
                if base is not None:
                    skip = {p.lstrip("/") for p in files}
                    _copy_tar(tar, base, skip)
                else:
                    for d in ("etc", "tmp", "usr", "usr/local", "usr/local/bin", "var", "var/run"):
                        mode = 0o1777 if d == "tmp" else 0o755
                        tar.addfile(_tarinfo(d, mode=mode, kind=tarfile.DIRTYPE))
                    _add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\n", 0o644)
                    _add_file(tar, "etc/group", b"root:x:0:\n", 0o644)
                    _add_file(tar, "etc/nsswitch.conf", b"hosts: files dns\n", 0o644)
                for path, src in sorted(files.items()):
                    _add_file(tar, path.lstrip("/"), src)
        layer_digest, layer_size = "sha256:" + hw.h.hexdigest(), hw.n
        config: dict[str, Any] = {"Env": [PATH_ENV]}
        if entrypoint:
            config["Entrypoint"] = entrypoint
        config_b = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": config,
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }
        ).encode()

        def desc(media: str, digest: str, size: int) -> dict[str, Any]:
            return {"mediaType": media, "digest": digest, "size": size}

        def sha(b: bytes) -> str:
            return "sha256:" + hashlib.sha256(b).hexdigest()

        manifest_b = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": desc(
                    "application/vnd.oci.image.config.v1+json", sha(config_b), len(config_b)
                ),
                "layers": [
                    desc("application/vnd.oci.image.layer.v1.tar", layer_digest, layer_size)
                ],
            }
        ).encode()
        mdesc = desc("application/vnd.oci.image.manifest.v1+json", sha(manifest_b), len(manifest_b))
        mdesc["annotations"] = {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
        }
        index_b = json.dumps({"schemaVersion": 2, "manifests": [mdesc]}).encode()
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w") as tar:
            for path, data in (
                ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                ("index.json", index_b),
                ("blobs/sha256/" + sha(config_b)[7:], config_b),
                ("blobs/sha256/" + sha(manifest_b)[7:], manifest_b),
            ):
                _add_file(tar, path, data, 0o644)
            _add_file(tar, "blobs/sha256/" + layer_digest[7:], layer_path, 0o644)
        partial.rename(out)


def component_images() -> dict[str, tuple[dict[str, Path | bytes], str | None, list[str] | None]]:
    """image name -> (files, base root name or None, entrypoint)."""
    kb, v = k8s_bin(), K8S_VERSION
    return {
        f"registry.k8s.io/kube-apiserver:{v}": (
            {"/usr/local/bin/kube-apiserver": kb / "kube-apiserver"},
            None,
            None,
        ),
        f"registry.k8s.io/kube-controller-manager:{v}": (
            {"/usr/local/bin/kube-controller-manager": kb / "kube-controller-manager"},
            None,
            None,
        ),
        f"registry.k8s.io/kube-scheduler:{v}": (
            {"/usr/local/bin/kube-scheduler": kb / "kube-scheduler"},
            None,
            None,
        ),
        # kube-proxy execs iptables-save/-restore and conntrack: a Debian root under it
        f"registry.k8s.io/kube-proxy:{v}": (
            {"/usr/local/bin/kube-proxy": kb / "kube-proxy"},
            "tools",
            None,
        ),
        f"registry.k8s.io/etcd:{ETCD_TAG}": ({"/usr/local/bin/etcd": part_bin("etcd")}, None, None),
        f"registry.k8s.io/coredns/coredns:{COREDNS_VERSION}": (
            {"/coredns": part_bin("coredns")},
            None,
            ["/coredns"],
        ),
        f"registry.k8s.io/pause:{PAUSE_TAG}": ({"/pause": pause_bin()}, None, ["/pause"]),
        f"azaion-loader.local/flanneld:{FLANNEL_VERSION}": (
            {"/usr/local/bin/flanneld": part_bin("flanneld")},
            "tools",
            None,
        ),
        f"azaion-loader.local/local-path-provisioner:{LOCAL_PATH_VERSION}": (
            {"/usr/local/bin/local-path-provisioner": part_bin("local-path-provisioner")},
            None,
            None,
        ),
        # the local-path provisioner's helper pods (sh, mkdir, rm); also a shell for probes
        f"azaion-loader.local/kind-tools:{ROOTFS['tools'][0]}": ({}, "tools", None),
    }


def images_key() -> str:
    """What the component images are made of: names, bases, and each file's size and time."""
    h = hashlib.sha256()
    for name, (files, base, ep) in sorted(component_images().items()):
        h.update(f"{name}|{base}|{ep}|{ROOTFS.get(base or '', '')}".encode())
        for path, src in sorted(files.items()):
            if isinstance(src, Path):
                st = src.stat()
                h.update(f"{path}:{st.st_size}:{int(st.st_mtime)}".encode())
            else:
                h.update(path.encode() + src)
    return h.hexdigest()[:12]


def build_images() -> Path:
    """Write the component images' OCI archives (cached by images_key)."""
    out_dir = CACHE / "kind" / f"images-{images_key()}"
    if (out_dir / "done").exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with timed("component images (OCI archives)"):
        for name, (files, base, ep) in component_images().items():
            fname = name.replace("/", "_").replace(":", "_") + ".tar"
            if not (out_dir / fname).exists():
                oci_image(
                    out_dir / fname,
                    name,
                    files,
                    base=rootfs_tar(base) if base else None,
                    entrypoint=ep,
                )
                log.info("  %s (%d MB)", name, (out_dir / fname).stat().st_size >> 20)
    (out_dir / "done").write_text("")
    return out_dir


# ---------------------------------------------------------------- node image


def node_key(images: Path) -> str:
    """What the node image is made of: the node root's key, every added file, the masks."""
    h = hashlib.sha256()
    h.update(f"{K8S_VERSION}|{ROOTFS['node']}|{images.name}|{MASKED_UNITS}".encode())
    for path, src, mode in node_files(images):
        if path.startswith("kind/images/"):
            continue  # keyed by images.name
        if isinstance(src, bytes):
            h.update(f"{path}:{mode}:".encode() + src)
        elif src.is_relative_to(NODE_FILES):
            h.update(f"{path}:{mode}:".encode() + src.read_bytes())
        else:  # binaries: size and time
            st = src.stat()
            h.update(f"{path}:{mode}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:12]


def node_files(images: Path) -> Iterator[tuple[str, Path | bytes, int]]:
    """(path, source, mode) of everything the node image adds to the node root."""
    kb, nf = k8s_bin(), NODE_FILES
    for b in ("kubeadm", "kubelet", "kubectl"):
        yield f"usr/bin/{b}", kb / b, 0o755
    yield "usr/bin/crictl", part_bin("crictl"), 0o755
    yield "etc/crictl.yaml", b"runtime-endpoint: unix:///run/containerd/containerd.sock\n", 0o644
    yield "usr/local/sbin/azl-node-init", nf / "azl-node-init", 0o755
    yield "usr/local/sbin/azl-kind-import-images", nf / "azl-kind-import-images", 0o755
    yield "usr/local/sbin/azl-kind-egress", nf / "azl-kind-egress", 0o755
    yield "etc/containerd/config.toml", nf / "containerd-config.toml", 0o644
    yield (
        "etc/systemd/system/containerd.service.d/10-azl.conf",
        nf / "systemd" / "containerd-azl.conf",
        0o644,
    )
    for unit in ("kubelet.service", "azl-kind-images.service"):
        yield f"etc/systemd/system/{unit}", nf / "systemd" / unit, 0o644
    yield "etc/sysctl.d/10-azl-kind.conf", nf / "sysctl.conf", 0o644
    yield "etc/default/kubelet", b"KUBELET_EXTRA_ARGS=\n", 0o644
    yield "kind/version", K8S_VERSION.encode(), 0o644
    yield "kind/manifests/default-cni.yaml", nf / "default-cni.yaml", 0o644
    yield "kind/manifests/default-storage.yaml", nf / "default-storage.yaml", 0o644
    for archive in sorted(images.glob("*.tar")):
        yield f"kind/images/{archive.name}", archive, 0o644


def node_image_name(images: Path) -> str:
    return f"{NODE_REPO}:{K8S_VERSION}-{node_key(images)}"


def build_node_image(images: Path) -> str:
    """Stream the node root plus node_files into `docker import` (no container, no registry)."""
    image = node_image_name(images)
    if run(["docker", "image", "inspect", image], check=False).returncode == 0:
        log.info("node image %s already built", image)
        return image
    rootfs = rootfs_tar("node")
    added = list(node_files(images))
    skip = {p for p, _, _ in added}
    with timed(f"node image {image} (docker import)"):
        proc = subprocess.Popen(
            [
                "docker",
                "import",
                "--change",
                'ENTRYPOINT ["/usr/local/sbin/azl-node-init", "/sbin/init"]',
                "--change",
                "ENV container=docker",
                "--change",
                f"LABEL azl.kind.k8s={K8S_VERSION} azl.kind.key={image.rsplit('-', 1)[1]}",
                "-",
                image,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                _copy_tar(tar, rootfs, skip)
                dirs = set()
                for path, _, _ in added:
                    parent = Path(path).parent
                    while str(parent) not in (".", "") and str(parent) not in dirs:
                        dirs.add(str(parent))
                        parent = parent.parent
                for d in sorted(dirs):
                    if d.startswith("kind") or d.startswith("etc/systemd/system/containerd"):
                        tar.addfile(_tarinfo(d, mode=0o755, kind=tarfile.DIRTYPE))
                for path, src, mode in added:
                    _add_file(tar, path, src, mode)
                for unit in MASKED_UNITS:
                    link = _tarinfo(f"etc/systemd/system/{unit}", kind=tarfile.SYMTYPE)
                    link.linkname = "/dev/null"
                    tar.addfile(link)
                for unit in ("azl-kind-images.service",):
                    link = _tarinfo(
                        f"etc/systemd/system/multi-user.target.wants/{unit}", kind=tarfile.SYMTYPE
                    )
                    link.linkname = f"/etc/systemd/system/{unit}"
                    tar.addfile(link)
                link = _tarinfo("opt/cni/bin", kind=tarfile.SYMTYPE)
                link.linkname = "/usr/lib/cni"
                tar.addfile(_tarinfo("opt/cni", mode=0o755, kind=tarfile.DIRTYPE))
                tar.addfile(link)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        assert proc.stderr is not None and proc.stdout is not None
        proc.stdout.read()
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise ClusterError(f"docker import failed: {err.decode().strip()[-800:]}")
    return image


def prune(image: str, images: Path) -> None:
    """Remove this tool's older node images (unless a container uses them) and image archives."""
    tags = run(["docker", "image", "ls", NODE_REPO, "--format", "{{.Repository}}:{{.Tag}}"]).stdout
    for old in tags.split():
        if old != image:
            used = run(["docker", "ps", "-aq", "--filter", f"ancestor={old}"]).stdout.strip()
            if not used and run(["docker", "rmi", old], check=False).returncode == 0:
                log.info("removed old node image %s", old)
    for old_dir in images.parent.glob("images-*"):
        if old_dir != images:
            shutil.rmtree(old_dir, ignore_errors=True)


def build_tools() -> None:
    """kind and helm: what the host side needs (helm is not in the node; the tests use it)."""
    build_kind()
    if not Settings().helm_bin.exists():
        with timed("helm"):
            build_helm(Settings())


def build() -> str:
    """Build every part (cached) and the node image; return its name.

    Not the host's tools (kind, helm): a build beside ``tools`` (scripts/test
    runs both at once) must not build them twice into the same place.
    """
    with timed(f"Kubernetes {K8S_VERSION} binaries incl. kubeadm, kubectl"):
        build_kubernetes(Settings(), extra=("kubeadm", "kubectl"))
    for name in GO_PARTS:
        build_go_part(name)
    build_pause()
    for name in ROOTFS:
        rootfs_tar(name)
    images = build_images()
    image = build_node_image(images)
    prune(image, images)
    return image


# ---------------------------------------------------------------- kind


def kind_env() -> dict[str, str]:
    """kind's environment: the docker shim first on PATH, our own Docker network."""
    shim_dir = Path("/tmp/kind-work/docker-shim")
    shim_dir.mkdir(parents=True, exist_ok=True)
    link = shim_dir / "docker"
    if not link.is_symlink() or os.readlink(link) != str(DOCKER_SHIM):
        link.unlink(missing_ok=True)
        link.symlink_to(DOCKER_SHIM)
    return dict(
        os.environ,
        PATH=f"{shim_dir}:{os.environ['PATH']}",
        KIND_EXPERIMENTAL_DOCKER_NETWORK=DOCKER_NETWORK,
    )


def kind(*args: str, check: bool = True) -> int:
    argv = [str(kind_bin()), *args]
    log.info("run %s", " ".join(argv))
    rc = subprocess.run(argv, env=kind_env()).returncode
    if check and rc != 0:
        raise ClusterError(f"kind {args[0]} failed ({rc})")
    return rc


def cluster_exists() -> bool:
    if not kind_bin().exists():
        return False  # no kind built yet: no cluster of ours either
    proc = subprocess.run(
        [str(kind_bin()), "get", "clusters"], env=kind_env(), text=True, capture_output=True
    )
    return CLUSTER_NAME in proc.stdout.split()


def _unfit_reason(image: str) -> str | None:
    """Why the existing cluster cannot be reused, or None: it must run the node image
    just built, and its API server must be ready (a cluster whose containers were
    restarted, or whose Docker daemon was, often never answers again)."""
    for node in subprocess.run(
        [str(kind_bin()), "get", "nodes", "--name", CLUSTER_NAME],
        env=kind_env(),
        text=True,
        capture_output=True,
    ).stdout.split():
        proc = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Running}} {{.Config.Image}}", node],
            text=True,
            capture_output=True,
        )
        if proc.stdout.split() != ["true", image]:
            return f"node {node} is not a running container of {image} ({proc.stdout.strip()})"
    kubectl = [str(k8s_bin() / "kubectl"), "--kubeconfig", str(KUBECONFIG)]
    deadline = time.monotonic() + 60
    while True:
        proc = subprocess.run(
            [*kubectl, "get", "--raw", "/readyz", "--request-timeout=10s"],
            text=True,
            capture_output=True,
        )
        if proc.returncode == 0:
            return None
        if time.monotonic() > deadline:
            return f"its API server is not ready after 60 s ({proc.stderr.strip()[-200:]})"
        time.sleep(2)


def create(image: str, logs_dir: Path) -> None:
    """kind create cluster from hack/kind/cluster.yaml; an existing cluster is reused
    when it is fit (see _unfit_reason), and otherwise deleted and created anew."""
    if cluster_exists():
        kind("export", "kubeconfig", "--name", CLUSTER_NAME, "--kubeconfig", str(KUBECONFIG))
        reason = _unfit_reason(image)
        if reason is None:
            log.info("cluster %s exists; reusing it (delete it first for a new one)", CLUSTER_NAME)
            return
        log.warning("cluster %s exists but %s: deleting it for a new one", CLUSTER_NAME, reason)
        kind("delete", "cluster", "--name", CLUSTER_NAME, "--kubeconfig", str(KUBECONFIG))
    KUBECONFIG.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    rc = kind(
        "create",
        "cluster",
        "--name",
        CLUSTER_NAME,
        "--image",
        image,
        "--config",
        str(CLUSTER_CONFIG),
        "--kubeconfig",
        str(KUBECONFIG),
        "--retain",
        "--wait",
        "5m",
        "-v",
        "3",
        check=False,
    )
    log.info("kind create cluster: rc %d after %.0f s", rc, time.monotonic() - t0)
    if rc != 0:
        kind("export", "logs", str(logs_dir), "--name", CLUSTER_NAME, check=False)
        raise ClusterError(f"kind create cluster failed; logs exported to {logs_dir}")


CHECK_NS = "azl-kind-check"
PROBE = (REPO / "hack" / "kind" / "probe.sh").read_text()


def check() -> bool:
    """Prove the cluster: pod-to-pod across nodes, Services, cluster DNS, a local-path volume."""
    kubectl = str(k8s_bin() / "kubectl")
    env = dict(os.environ, KUBECONFIG=str(KUBECONFIG))

    def k(*args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [kubectl, *args], env=env, input=stdin, text=True, capture_output=True
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    tools = f"azaion-loader.local/kind-tools:{ROOTFS['tools'][0]}"
    k("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=180s")
    k("-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=180s")
    nodes = k("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").split()
    dns_pod, dns_node = k(
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        "k8s-app=kube-dns",
        "-o",
        "jsonpath={.items[0].status.podIP} {.items[0].spec.nodeName}",
    ).split()
    dns_svc = k("-n", "kube-system", "get", "svc", "kube-dns", "-o", "jsonpath={.spec.clusterIP}")
    api_svc = k("get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}")
    k("delete", "namespace", CHECK_NS, "--ignore-not-found", "--wait=true")
    k("create", "namespace", CHECK_NS)
    pods = []
    for node in nodes:
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"probe-{node}", "namespace": CHECK_NS},
                "spec": {
                    "nodeName": node,
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "probe",
                            "image": tools,
                            "imagePullPolicy": "Never",
                            "command": ["sleep", "600"],
                        }
                    ],
                },
            }
        )
    worker = next((n for n in nodes if "worker" in n), nodes[0])
    pods.append(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": CHECK_NS},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "16Mi"}},
            },
        }
    )
    pods.append(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "volume", "namespace": CHECK_NS},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": worker},
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "w",
                        "image": tools,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "echo hello > /data/f && cat /data/f"],
                        "volumeMounts": [{"name": "d", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
            },
        }
    )
    k("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    k(
        "-n",
        CHECK_NS,
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "!none",
        "--field-selector",
        "metadata.name!=volume",
        "--timeout=120s",
    )
    ok = True
    for node in nodes:
        proc = subprocess.run(
            [
                kubectl,
                "-n",
                CHECK_NS,
                "exec",
                f"probe-{node}",
                "--",
                "env",
                f"DNS_POD={dns_pod}",
                f"DNS_NODE={dns_node}",
                f"DNS_SVC={dns_svc}",
                f"API_SVC={api_svc}",
                "bash",
                "-c",
                PROBE,
            ],
            env=env,
            text=True,
            capture_output=True,
        )
        print(f"from a pod on {node}:\n{proc.stdout.rstrip()}{proc.stderr.rstrip()}")
        ok &= proc.returncode == 0
    k(
        "-n",
        CHECK_NS,
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/volume",
        "--timeout=120s",
        check=False,
    )
    phase = k("-n", CHECK_NS, "get", "pod", "volume", "-o", "jsonpath={.status.phase}")
    pv = k(
        "get",
        "pv",
        "-o",
        'jsonpath={range .items[?(@.spec.claimRef.namespace=="' + CHECK_NS + '")]}'
        "{.metadata.name} {.spec.storageClassName} "
        "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}{end}",
    )
    vol_ok = phase == "Succeeded" and worker in pv
    print(f"{'ok  ' if vol_ok else 'FAIL'} local-path volume on {worker}: pod {phase}, PV {pv}")
    ok &= vol_ok
    k("delete", "namespace", CHECK_NS, "--wait=false")
    return ok


def host_ip() -> str | None:
    """The gateway of the cluster's Docker network: where pods reach the host."""
    proc = run(
        [
            "docker",
            "network",
            "inspect",
            DOCKER_NETWORK,
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        ],
        check=False,
    )
    for address in proc.stdout.split() if proc.returncode == 0 else ():
        if address.count(".") == 3:
            return address
    return None


def env_lines() -> str:
    """Shell exports for the tests, the demo and the scripts (`eval "$(... env)"`)."""
    lines = {
        "KUBECONFIG": str(KUBECONFIG),
        "KIND": str(kind_bin()),
        "AZL_KIND_CLUSTER": CLUSTER_NAME,
        "AZAION_KUBECTL": str(k8s_bin() / "kubectl"),
        "AZAION_HELM": str(Settings().helm_bin),
    }
    with contextlib.suppress(OSError):  # the parts are not built yet
        lines["AZL_KIND_NODE_IMAGE"] = node_image_name(CACHE / "kind" / f"images-{images_key()}")
    address = host_ip()
    if address:
        lines["AZAION_CLUSTER_HOST_IP"] = address
    return "\n".join(f"export {k}={v}" for k, v in lines.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "command", choices=["build", "create", "check", "delete", "env", "tools", "exists", "load"]
    )
    ap.add_argument("images", nargs="*", help="load: the Docker images to load into the nodes")
    ap.add_argument(
        "--logs", default="/tmp/kind-work/logs", help="where `kind export logs` writes on failure"
    )
    a = ap.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    try:
        if a.command == "build":
            print(build())
        elif a.command == "create":
            build_tools()
            create(build(), Path(a.logs))
            print(f"export KUBECONFIG={KUBECONFIG}")
        elif a.command == "check":
            return 0 if check() else 1
        elif a.command == "delete":
            kind("delete", "cluster", "--name", CLUSTER_NAME, "--kubeconfig", str(KUBECONFIG))
        elif a.command == "tools":
            build_tools()
        elif a.command == "exists":
            return 0 if cluster_exists() else 1
        elif a.command == "load":
            if not a.images:
                ap.error("load: name at least one image")
            kind("load", "docker-image", *a.images, "--name", CLUSTER_NAME)
        elif a.command == "env":
            print(env_lines())
    except ClusterError as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
