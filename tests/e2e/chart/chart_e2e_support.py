"""Helpers for the chart end-to-end tests: processes, the dev stack, node files, Kubernetes.

Everything here talks to real parts: the cluster in ``KUBECONFIG``, the chart
installed by Helm, ``loader dev-stack`` as a child process, the host's Docker.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from fault_proxy import FaultProxy  # hack/fault_proxy.py
from polling import wait_for  # hack/: shared with the benchmarks; the tests import it from here

ROOT = pathlib.Path(__file__).resolve().parents[3]
VENV_BIN = ROOT / ".venv" / "bin"
GROUP, VERSION = "loader.azaion.com", "v1alpha1"
OWNER_UID = "loader.azaion.com/owner-uid"
FOLDER = "demo"  # the bucket `loader dev-stack` creates
RELEASE = "azl-e2e"
RELEASE_NAMESPACE = "azl-e2e-system"
NAMESPACE_PREFIX = "azl-e2e-"
HOST_VOLUMES = pathlib.Path("/var/lib/azaion-loader-e2e")
JOB_UID = 10001


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, 20 s to exit, then SIGKILL: a server the tests started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output as text; a readable AssertionError on failure."""
    done = subprocess.run(
        list(argv),
        env=env,
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}\n"
            f"{done.stderr[-4000:]}"
        )
    return done


def tool(env_name: str, name: str) -> str:
    """A tool from ``$env_name`` (set by ``scripts/kind-node-image env``), else PATH."""
    found = os.environ.get(env_name) or shutil.which(name)
    if not found:
        raise AssertionError(f"{name} not found (set {env_name} or put it on PATH)")
    return found


def kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 300) -> Any:
    """Run kubectl against ``KUBECONFIG``."""
    return run(
        [tool("AZAION_KUBECTL", "kubectl"), *args],
        input=input.encode() if input is not None else None,
        check=check,
        timeout=timeout,
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the dev stack


@dataclass
class DevStack:
    """A running ``loader dev-stack`` and the settings it wrote."""

    proc: subprocess.Popen[bytes]
    env_file: pathlib.Path
    log: pathlib.Path
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return self.settings["LOADER_API_URL"]

    @property
    def s3_url(self) -> str:
        return self.settings["LOADER_DEV_S3_URL"]

    @property
    def email(self) -> str:
        return self.settings["LOADER_EMAIL"]

    @property
    def password(self) -> str:
        return self.settings["LOADER_PASSWORD"]

    def loader_env(self) -> dict[str, str]:
        """The environment for a ``loader`` publisher run against this stack."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
        env.update({k: v for k, v in self.settings.items() if k != "LOADER_DEV_S3_URL"})
        return env

    def loader(self, *args: str, timeout: float = 300) -> dict[str, Any]:
        """Run ``loader ARGS --json --no-progress`` as the demo uploader; its result line."""
        done = run(
            [str(VENV_BIN / "loader"), *args, "--json"], env=self.loader_env(), timeout=timeout
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def stop(self) -> None:
        stop_process(self.proc)


def parse_env_file(text: str) -> dict[str, str]:
    """``export KEY=VALUE`` lines (shell-quoted) into a dict."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("export "):
            continue
        words = shlex.split(line[len("export ") :])
        for word in words:
            key, _, value = word.partition("=")
            settings[key] = value
    return settings


def start_dev_stack(host: str, workdir: pathlib.Path, timeout: float = 240) -> DevStack:
    """``loader dev-stack --host HOST`` on free ports, until its env file appears."""
    workdir.mkdir(parents=True, exist_ok=True)
    env_file = workdir / "dev-stack.env"
    env_file.unlink(missing_ok=True)
    log = workdir / "dev-stack.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    argv = [
        str(VENV_BIN / "loader"),
        "dev-stack",
        "--host",
        host,
        "--api-port",
        "0",
        "--s3-port",
        "0",
        "--no-archive",
        "--env-file",
        str(env_file),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack = DevStack(proc=proc, env_file=env_file, log=log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"loader dev-stack exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        return env_file.exists()

    try:
        wait_for("loader dev-stack to write its env file", ready, timeout=timeout)
    except BaseException:
        stack.stop()
        raise
    stack.settings = parse_env_file(env_file.read_text())
    return stack


@dataclass
class FaultCdnApi:
    """A second reference API (``loader serve-api``) whose CDN is a fault proxy.

    The proxy listens on the host address the nodes reach and forwards to the dev
    stack's S3 (the same moto, the same buckets); the API knows the dev stack's
    demo user with the same password, so a namespace's credentials Secret works
    against both. A Resource reaches it through ``spec.apiUrl``, which the chart
    allows with ``policy.allowedApiUrls`` (a value an admin sets, like
    ``policy.allowInsecureHttp``). Unarmed, the proxy passes everything unchanged;
    a test arms it (e.g. ``hold``) to have a Job's download held mid-stream.
    """

    proc: subprocess.Popen[bytes]
    url: str
    proxy: FaultProxy
    log: pathlib.Path
    dev_stack: DevStack

    def loader(self, *args: str, timeout: float = 300) -> dict[str, Any]:
        """``loader ARGS --json`` as the demo uploader against this API; its result line."""
        env = {**self.dev_stack.loader_env(), "LOADER_API_URL": self.url}
        done = run([str(VENV_BIN / "loader"), *args, "--json"], env=env, timeout=timeout)
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def stop(self) -> None:
        self.proxy.close()
        stop_process(self.proc)


def start_fault_cdn_api(
    host: str, dev_stack: DevStack, workdir: pathlib.Path, timeout: float = 60
) -> FaultCdnApi:
    """A fault proxy on ``host`` in front of the dev stack's S3, and ``loader serve-api``
    on ``host`` (a free port) handing that proxy out as its CDN."""
    s3 = urllib.parse.urlsplit(dev_stack.s3_url)
    assert s3.hostname and s3.port, dev_stack.s3_url
    proxy = FaultProxy(s3.port, host=host, upstream_host=s3.hostname)
    workdir.mkdir(parents=True, exist_ok=True)
    users, cdn = workdir / "users.yaml", workdir / "cdn.yaml"
    for path in (users, cdn):
        path.touch(mode=0o600)
    users.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {
                        "email": dev_stack.email,
                        "password": dev_stack.password,
                        "role": "uploader",
                        "max_devices": 10,
                    }
                ]
            }
        )
    )
    # moto checks no signature: any key pair reaches the dev stack's buckets.
    cdn.write_text(
        yaml.safe_dump(
            {
                "endpoint_url": proxy.url,
                "region": "us-east-1",
                "read": {"access_key_id": "fault-read", "secret_access_key": "fault-read-key"},
                "write": {"access_key_id": "fault-write", "secret_access_key": "fault-write-key"},
            }
        )
    )
    log = workdir / "serve-api.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOADER_")}
    argv = [
        str(VENV_BIN / "loader"),
        "serve-api",
        "--data-dir",
        str(workdir / "api"),
        "--host",
        host,
        "--port",
        "0",
        "--users-file",
        str(users),
        "--cdn-config-file",
        str(cdn),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    api = FaultCdnApi(proc=proc, url="", proxy=proxy, log=log, dev_stack=dev_stack)

    def listening() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"loader serve-api exited {proc.returncode}:\n{log.read_text()}")
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("serve-api: listening on "):
                return line.split()[3]
        return None

    try:
        api.url = wait_for("loader serve-api listening", listening, timeout=timeout, every=0.2)
    except BaseException:
        api.stop()
        raise
    return api


# --------------------------------------------------------------------------- node files


class NodeFiles:
    """Files on the node: the host itself (local cluster) or a kind node container."""

    def __init__(self, kind_container: str | None) -> None:
        self.kind_container = kind_container

    @classmethod
    def for_node(cls, node_name: str) -> NodeFiles:
        """Kind nodes are Docker containers named after the node; else the node is this host."""
        if shutil.which("docker"):
            probe = subprocess.run(
                ["docker", "inspect", "--format", "{{.Config.Labels}}", node_name],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.returncode == 0 and "io.x-k8s.kind" in probe.stdout:
                return cls(node_name)
        return cls(None)

    def _exec(self, script: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        assert self.kind_container
        return subprocess.run(
            ["docker", "exec", self.kind_container, "sh", "-c", script, "sh", *args],
            capture_output=True,
            check=False,
        )

    def make_dir(self, path: pathlib.Path) -> None:
        """An empty directory anyone can write to (hostPath ignores fsGroup)."""
        if self.kind_container:
            self._exec('rm -rf "$1" && mkdir -p "$1" && chmod 0777 "$1"', str(path))
            return
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        path.chmod(0o777)

    def remove(self, path: pathlib.Path) -> None:
        if self.kind_container:
            self._exec('rm -rf "$1"', str(path))
        else:
            shutil.rmtree(path, ignore_errors=True)

    def read_bytes(self, path: pathlib.Path) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        if self.kind_container:
            done = self._exec('[ -f "$1" ] && cat "$1"', str(path))
            return done.stdout if done.returncode == 0 else None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def list_files(self, root: pathlib.Path) -> list[str]:
        """Relative paths of every file below ``root`` (empty if it does not exist)."""
        if self.kind_container:
            done = self._exec('[ -d "$1" ] && cd "$1" && find . -type f', str(root))
            return sorted(
                line[2:] for line in done.stdout.decode().splitlines() if line.startswith("./")
            )
        if not root.is_dir():
            return []
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def heads(self, root: pathlib.Path) -> dict[str, tuple[int, bytes]]:
        """For every file below ``root``: (size, first 512 bytes). Best effort while files move."""
        found: dict[str, tuple[int, bytes]] = {}
        if self.kind_container:
            script = (
                'cd "$1" 2>/dev/null || exit 0; find . -type f | while read -r f; do '
                'printf "%s\\t%s\\t" "$f" "$(stat -c %s "$f")"; '
                'head -c 512 "$f" | od -An -v -tx1 | tr -d " \\n"; echo; done'
            )
            done = self._exec(script, str(root))
            for line in done.stdout.decode(errors="replace").splitlines():
                parts = line.split("\t")
                if len(parts) == 3 and parts[1].isdigit():
                    found[parts[0][2:]] = (int(parts[1]), bytes.fromhex(parts[2]))
            return found
        if not root.is_dir():
            return found
        for path in root.rglob("*"):
            try:
                if not path.is_file():
                    continue
                with path.open("rb") as handle:
                    found[str(path.relative_to(root))] = (path.stat().st_size, handle.read(512))
            except OSError:
                continue
        return found

    def is_socket(self, path: pathlib.Path) -> bool:
        """Whether ``path`` on the node is a Unix socket (e.g. a runtime's)."""
        if self.kind_container:
            return self._exec('[ -S "$1" ]', str(path)).returncode == 0
        return path.is_socket()

    def sha256_of(self, path: pathlib.Path) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else sha256(data)


def looks_like_tar(head: bytes) -> bool:
    """A POSIX/GNU tar header: ``ustar`` at offset 257."""
    return len(head) >= 262 and head[257:262] == b"ustar"


def kubelet_roots(files: NodeFiles) -> list[pathlib.Path]:
    """Where the kubelet keeps pod directories on the node."""
    if files.kind_container:
        return [pathlib.Path("/var/lib/kubelet")]
    roots = []
    state = os.environ.get("AZAION_CLUSTER_STATE_DIR", "/var/lib/azaion-loader-cluster")
    roots.append(pathlib.Path(state) / "kubelet" / "root")
    roots.append(pathlib.Path("/var/lib/kubelet"))
    return roots


# --------------------------------------------------------------------------- Kubernetes


def operator_pods(core: Any) -> list[Any]:
    pods = core.list_namespaced_pod(
        RELEASE_NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}"
    ).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def ready_operator_pod(core: Any) -> Any:
    for pod in operator_pods(core):
        for cond in pod.status.conditions or []:
            if cond.type == "Ready" and cond.status == "True":
                return pod
    return None


def conditions_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions") or []}


def strings_in(objects: Iterable[Any]) -> str:
    """JSON text of objects (API models or dicts), for searching."""
    out = []
    for obj in objects:
        if hasattr(obj, "to_dict"):
            obj = obj.to_dict()
        out.append(json.dumps(obj, default=str))
    return "\n".join(out)


def python() -> str:
    return str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable


def operator_logs(core: Any) -> str:
    """Logs of the running operator pod(s), with a restarted container's previous run."""
    out = []
    for pod in operator_pods(core):
        out.append(core.read_namespaced_pod_log(pod.metadata.name, RELEASE_NAMESPACE))
        try:
            out.append(
                core.read_namespaced_pod_log(pod.metadata.name, RELEASE_NAMESPACE, previous=True)
            )
        except Exception:  # no previous container: nothing to add
            pass
    return "\n".join(out)


def docker_image_present(name: str) -> bool:
    """True if the host's Docker engine has the image."""
    done = subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False)
    return done.returncode == 0


def collect_evidence(core: Any, custom: Any, namespace: str) -> str:
    """Events, custom resources (with status) and Job pod logs of a namespace, as text."""
    parts = [strings_in(core.list_namespaced_event(namespace).items)]
    for plural in ("resources", "imageunlocks"):
        listing = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        parts.append(strings_in(listing.get("items", [])))
    for pod in core.list_namespaced_pod(namespace).items:
        parts.append(strings_in([pod.status]))
        containers = [*(pod.spec.init_containers or []), *pod.spec.containers]
        for container in containers:
            try:
                parts.append(
                    core.read_namespaced_pod_log(
                        pod.metadata.name, namespace, container=container.name
                    )
                )
            except Exception:  # a container that never started has no log
                pass
    return "\n".join(parts)
