"""Session fixtures of the chart end-to-end tests.

Once per session: the image (``scripts/build-image``, then ``kind load`` into the
nodes unless ``AZAION_E2E_SKIP_IMPORT=1``), ``loader dev-stack`` on the cluster's
host address (``AZAION_CLUSTER_HOST_IP``: ``scripts/kind-node-image env`` prints
it), a pool of namespaces ``azl-e2e-<session>-<n>``,
a second API (``loader serve-api``, same demo user) whose CDN is a fault proxy
in front of the dev stack's S3 (``FaultCdnApi``: a test holds a Job's download
there), and the chart (release ``azl-e2e`` in ``azl-e2e-system``) watching
exactly those namespaces and allowing that API in ``policy.allowedApiUrls``, so
the operator processes of ``tests/e2e/operator`` (namespaces ``op-e2e-*``) and
a demo install are never handled twice.

Per test: one namespace from the pool (Pod Security ``privileged``: ImageUnlock
mounts the Docker socket), the credentials Secret, a static hostPath PV with its
claim ``target``.

On a kind cluster (the node is a Docker container) the image goes in with
``kind load docker-image``, and files on the node are read with ``docker exec``.

Environment: ``AZAION_E2E_SKIP_BUILD=1`` uses an ``azaion-loader:dev`` already in
Docker; ``AZAION_E2E_SKIP_IMPORT=1`` assumes the nodes already have it;
``AZAION_E2E_KEEP=1`` leaves the release, the namespaces and the volumes for a
look after the run.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from chart_e2e_support import (
    HOST_VOLUMES,
    NAMESPACE_PREFIX,
    RELEASE,
    RELEASE_NAMESPACE,
    ROOT,
    DevStack,
    FaultCdnApi,
    NodeFiles,
    collect_evidence,
    kubectl,
    ready_operator_pod,
    run,
    start_dev_stack,
    start_fault_cdn_api,
    tool,
    wait_for,
)

IMAGE = os.environ.get("AZAION_E2E_IMAGE", "azaion-loader:dev")
POOL_SIZE = 20  # 17 tests take one (count again when adding tests)
_KEEP = os.environ.get("AZAION_E2E_KEEP") == "1"


def _kubernetes() -> Any:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip(
            "KUBECONFIG is unset: the e2e tests need a cluster "
            '(scripts/kind-node-image create; eval "$(scripts/kind-node-image env)")'
        )
    return pytest.importorskip("kubernetes")


@pytest.fixture(scope="session")
def k8s() -> Any:
    """The ``kubernetes`` module, configured from KUBECONFIG; skips when the cluster is absent."""
    kubernetes = _kubernetes()
    kubernetes.config.load_kube_config()
    try:
        kubernetes.client.VersionApi().get_code(_request_timeout=10)
    except Exception as exc:
        pytest.skip(f"the cluster in KUBECONFIG does not answer: {exc}")
    return kubernetes


@pytest.fixture(scope="session")
def core(k8s: Any) -> Any:
    return k8s.client.CoreV1Api()


@pytest.fixture(scope="session")
def batch(k8s: Any) -> Any:
    return k8s.client.BatchV1Api()


@pytest.fixture(scope="session")
def custom(k8s: Any) -> Any:
    return k8s.client.CustomObjectsApi()


@pytest.fixture(scope="session")
def host_ip(k8s: Any) -> str:
    """The address pods use to reach services on the host (a project-owned bridge)."""
    address = os.environ.get("AZAION_CLUSTER_HOST_IP")
    if not address:
        pytest.fail(
            "no host address for pods: set AZAION_CLUSTER_HOST_IP "
            '(eval "$(scripts/kind-node-image env)" prints the kind network\'s gateway)'
        )
    return str(address)


@pytest.fixture(scope="session")
def node_name(core: Any, host_ip: str) -> str:
    """The node the tests pin their Jobs to and check from the host.

    The Ready node whose address is the host address (the local cluster), else a
    kind node (a Docker container of the host), else the first Ready node. Other
    nodes (e.g. fake nodes of a benchmark on a shared cluster) are never used, nor
    a node that takes no ordinary pods (a tainted control plane of a multi-node
    kind cluster).
    """
    ready = []
    for node in core.list_node().items:
        conds = {c.type: c.status for c in node.status.conditions or []}
        blocked = any(
            t.effect in ("NoSchedule", "NoExecute") for t in node.spec.taints or []
        ) or bool(node.spec.unschedulable)
        if conds.get("Ready") == "True" and not blocked:
            ready.append(node)
    if not ready:
        pytest.fail("no Ready node in the cluster that takes pods (untainted, schedulable)")
    for node in ready:
        if any(a.address == host_ip for a in node.status.addresses or []):
            return str(node.metadata.name)
    for node in ready:
        if NodeFiles.for_node(node.metadata.name).kind_container:
            return str(node.metadata.name)
    return str(ready[0].metadata.name)


@pytest.fixture(scope="session")
def node_selector(core: Any, node_name: str) -> dict[str, str]:
    """A nodeSelector that matches only ``node_name``."""
    labels = core.read_node(node_name).metadata.labels or {}
    hostname = labels.get("kubernetes.io/hostname")
    assert hostname, f"node {node_name} has no kubernetes.io/hostname label"
    return {"kubernetes.io/hostname": hostname}


@pytest.fixture(scope="session")
def node_files(node_name: str) -> NodeFiles:
    return NodeFiles.for_node(node_name)


def _containerd_has(image: str) -> bool:
    """True if the cluster's containerd has ``image`` with the image id Docker has."""
    sock = os.environ.get("AZAION_CONTAINERD_SOCKET", "/run/containerd/containerd.sock")
    ctr = ["ctr", "--address", sock, "-n", "k8s.io"]
    docker_id = run(["docker", "image", "inspect", "--format", "{{.Id}}", image]).stdout.strip()
    ref = image if "/" in image.split(":")[0] else f"docker.io/library/{image}"
    listing = run([*ctr, "images", "ls", f"name=={ref}"], check=False)
    rows = [line.split() for line in listing.stdout.splitlines()[1:] if line.strip()]
    if listing.returncode != 0 or not rows or len(rows[0]) < 3:
        return False
    manifest = run([*ctr, "content", "get", rows[0][2]], check=False)
    if manifest.returncode != 0:
        return False
    return bool(json.loads(manifest.stdout).get("config", {}).get("digest") == docker_id)


@pytest.fixture(scope="session")
def image(k8s: Any, node_files: NodeFiles) -> str:
    """``azaion-loader:dev`` built from this tree and present in the nodes' image store."""
    if os.environ.get("AZAION_E2E_SKIP_BUILD") != "1":
        built = run(["nice", str(ROOT / "scripts" / "build-image")], timeout=1500, check=False)
        assert built.returncode == 0, (
            f"scripts/build-image exited {built.returncode}:\n" + (built.stderr[-4000:])
        )
    else:
        run(["docker", "image", "inspect", IMAGE])
    if os.environ.get("AZAION_E2E_SKIP_IMPORT") == "1":
        return IMAGE
    if node_files.kind_container:
        label = '{{index .Config.Labels "io.x-k8s.kind.cluster"}}'
        cluster = run(["docker", "inspect", "--format", label, node_files.kind_container])
        kind = os.environ.get("KIND", "kind")  # scripts/kind-node-image env
        run([kind, "load", "docker-image", IMAGE, "--name", cluster.stdout.strip()], timeout=900)
    elif not _containerd_has(IMAGE):
        pytest.fail(
            f"{IMAGE} is not in the node's containerd (the node is not a kind node): "
            "load it into the nodes yourself and set AZAION_E2E_SKIP_IMPORT=1"
        )
    return IMAGE


@pytest.fixture(scope="session")
def session_id() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture(scope="session")
def dev_stack(
    k8s: Any, host_ip: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevStack]:
    """``loader dev-stack --host <host_ip>`` on free ports, as a child process."""
    stack = start_dev_stack(host_ip, tmp_path_factory.mktemp("dev-stack"))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def fault_cdn_api(
    dev_stack: DevStack, host_ip: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultCdnApi]:
    """A second API on the host address whose CDN is a fault proxy in front of the dev
    stack's S3 (``FaultCdnApi``); the chart allows it as ``spec.apiUrl``."""
    api = start_fault_cdn_api(host_ip, dev_stack, tmp_path_factory.mktemp("fault-cdn-api"))
    yield api
    api.stop()


@dataclass
class NamespacePool:
    """Namespaces the chart watches, handed out one per test."""

    names: list[str]
    used: int = 0

    def take(self) -> str:
        if self.used >= len(self.names):
            raise AssertionError(f"more than {len(self.names)} tests need a namespace: POOL_SIZE")
        name = self.names[self.used]
        self.used += 1
        return name


@pytest.fixture(scope="session")
def namespace_pool(core: Any, session_id: str) -> Iterator[NamespacePool]:
    names = [f"{NAMESPACE_PREFIX}{session_id}-{n}" for n in range(POOL_SIZE)]
    for name in names:
        core.create_namespace(
            {
                "metadata": {
                    "name": name,
                    "labels": {
                        "app.kubernetes.io/part-of": "azl-e2e",
                        # ImageUnlock and hostPath volumes need "privileged".
                        "pod-security.kubernetes.io/enforce": "privileged",
                    },
                }
            }
        )
    yield NamespacePool(names)
    if not _KEEP:
        for name in names:
            kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def _foreign_clusterwide_operators(k8s: Any) -> list[str]:
    """Deployments running azaion-operator cluster-wide (they would handle our namespaces)."""
    apps = k8s.client.AppsV1Api()
    found = []
    for dep in apps.list_deployment_for_all_namespaces().items:
        if dep.metadata.namespace == RELEASE_NAMESPACE:
            continue
        for container in dep.spec.template.spec.containers:
            if "azaion-operator" not in (container.command or []):
                continue
            env = {e.name: e.value for e in container.env or []}
            if not (env.get("AZAION_OPERATOR_NAMESPACES") or "").strip():
                found.append(f"{dep.metadata.namespace}/{dep.metadata.name}")
    return found


@pytest.fixture(scope="session")
def chart(
    k8s: Any,
    core: Any,
    image: str,
    dev_stack: DevStack,
    fault_cdn_api: FaultCdnApi,
    namespace_pool: NamespacePool,
    node_selector: dict[str, str],
) -> Iterator[str]:
    """The chart, with the local image, watching the session's namespaces; its namespace."""
    foreign = _foreign_clusterwide_operators(k8s)
    if foreign:
        pytest.fail(
            "another azaion-operator watches all namespaces and would handle the tests' "
            f"objects too: {', '.join(foreign)} (helm uninstall it, or install it with "
            "watchNamespaces)"
        )
    watch = "{" + ",".join(namespace_pool.names) + "}"

    def release_namespace_usable() -> bool:
        try:
            found = core.read_namespace(RELEASE_NAMESPACE)
        except k8s.client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return bool(found.status.phase != "Terminating")

    # The previous session deletes it at its end: wait until it is gone.
    wait_for(f"namespace {RELEASE_NAMESPACE} deleted", release_namespace_usable, timeout=180)
    started = time.monotonic()
    run(
        [
            str(ROOT / "scripts" / "install-chart"),
            "--release",
            RELEASE,
            "--namespace",
            RELEASE_NAMESPACE,
            "--image",
            image,
            "--",
            "--set",
            f"watchNamespaces={watch}",
            "--set",
            f"defaults.apiUrl={dev_stack.api_url}",
            # The dev stack serves plain http on the host bridge, and each test's
            # ImageUnlock lives in its own pool namespace (docs/security.md).
            "--set",
            "policy.allowInsecureHttp=true",
            # test_kubelet_restarted_mid_job[pod-running] holds a download at the
            # second API's CDN proxy (FaultCdnApi): a Resource names it in spec.apiUrl.
            "--set",
            f"policy.allowedApiUrls={{{fault_cdn_api.url}}}",
            "--set",
            f"policy.imageUnlockNamespaces={watch}",
            # test_wrong_password_* names its own Secret (docs/security.md).
            "--set",
            "policy.credentialsSecrets={wrong-credentials}",
            "--set",
            "operator.resyncSeconds=10",
            "--set",
            "jobs.pullPolicy=Never",
            "--set",
            "image.pullPolicy=Never",
            "--set-string",
            # The operator runs on the node whose image store has the image.
            "nodeSelector.kubernetes\\.io/hostname=" + node_selector["kubernetes.io/hostname"],
        ],
        timeout=600,
    )
    # A fresh operator for a fresh session: `helm upgrade` with new namespaces restarts it,
    # a same-values upgrade does not; either way wait for a Ready pod.
    wait_for("the operator pod Ready", lambda: ready_operator_pod(core), timeout=180)
    print(f"chart installed in {time.monotonic() - started:.1f}s")
    yield RELEASE_NAMESPACE
    if not _KEEP:
        helm = tool("AZAION_HELM", "helm")
        run([helm, "uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait"], check=False)
        kubectl("delete", "namespace", RELEASE_NAMESPACE, "--wait=false", check=False)


@dataclass
class TestNamespace:
    """One test's namespace, with its target volume on the node."""

    name: str
    host_dir: pathlib.Path
    pv_name: str
    claim: str = "target"


@pytest.fixture(scope="session")
def evidence() -> list[str]:
    """Events, statuses and Job logs of every test namespace, collected before its deletion."""
    return []


@pytest.fixture
def ns(
    chart: str,
    core: Any,
    custom: Any,
    evidence: list[str],
    dev_stack: DevStack,
    namespace_pool: NamespacePool,
    node_files: NodeFiles,
) -> Iterator[TestNamespace]:
    """A namespace of the pool with the credentials Secret and a claim on a hostPath PV."""
    name = namespace_pool.take()
    host_dir = HOST_VOLUMES / name
    pv_name = f"{name}-target"
    try:
        node_files.make_dir(host_dir)
        _make_volume(core, name, pv_name, host_dir)
        core.create_namespaced_secret(
            name,
            {
                "metadata": {"name": "azaion-loader-credentials"},
                "stringData": {"email": dev_stack.email, "password": dev_stack.password},
            },
        )
        yield TestNamespace(name=name, host_dir=host_dir, pv_name=pv_name)
        evidence.append(collect_evidence(core, custom, name))
    finally:
        if not _KEEP:
            kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
            kubectl("delete", "pv", pv_name, "--wait=false", "--ignore-not-found", check=False)
            node_files.remove(host_dir)


def _make_volume(core: Any, namespace: str, pv_name: str, host_dir: pathlib.Path) -> None:
    """A static hostPath PV bound to the claim ``target`` in ``namespace``."""
    core.create_persistent_volume(
        {
            "metadata": {"name": pv_name, "labels": {"app.kubernetes.io/part-of": "azl-e2e"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(host_dir), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": "target"},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "target"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    wait_for(
        "the claim Bound",
        lambda: (
            core.read_namespaced_persistent_volume_claim("target", namespace).status.phase
            == "Bound"
        ),
        timeout=60,
    )


@pytest.fixture(scope="session")
def operator_log_archive() -> list[str]:
    """Logs of operator pods that a test is about to kill (their logs go with them)."""
    return []
