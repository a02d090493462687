"""The chart's operator and the toolkit's Jobs on a real cluster (issue 5 §3).

Real parts only: the cluster in KUBECONFIG, the chart installed by Helm with the
image built from this tree, ``loader dev-stack`` (reference API + moto S3) on
the cluster's host address, data published with the real ``loader upload``,
results read on the node (the host for the local cluster) and in the host's
Docker. Each test has its own namespace (see conftest.py). The last test reads
what the others left (operator logs, events, statuses, Job logs) for secrets.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest
from chart_e2e_support import (
    FOLDER,
    GROUP,
    OWNER_UID,
    RELEASE,
    RELEASE_NAMESPACE,
    VERSION,
    DevStack,
    NodeFiles,
    conditions_of,
    docker_image_present,
    kubectl,
    kubelet_roots,
    looks_like_tar,
    operator_logs,
    operator_pods,
    ready_operator_pod,
    run,
    sha256,
    wait_for,
)

from azaion_loader.server.devstack import busybox_rootfs

pytestmark = pytest.mark.e2e

if not os.environ.get("KUBECONFIG"):
    pytest.skip(
        "KUBECONFIG is unset: the e2e tests need a cluster "
        '(scripts/kind-node-image create; eval "$(scripts/kind-node-image env)")',
        allow_module_level=True,
    )

# A canary: the wrong password of one test, which must never show up anywhere.
WRONG_PASSWORD = f"canary-pw-{uuid.uuid4().hex}"
# Anything shaped like a JWT (the API's bearer tokens).
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")
WAIT = "180s"
# The chart's default runtimes.docker.socketPath.
DOCKER_SOCKET = pathlib.Path("/var/run/docker.sock")


# --------------------------------------------------------------------------- helpers


def _publish(dev_stack: DevStack, tmp_path: pathlib.Path, name: str, data: bytes) -> str:
    """``loader upload`` ``data`` as ``demo/<name>`` version 1; the plaintext digest."""
    path = tmp_path / name
    path.write_bytes(data)
    result = dev_stack.loader(
        "upload", "--folder", FOLDER, "--name", name, "--version", "1", "--no-progress", str(path)
    )
    path.unlink()
    assert result["ok"] is True, result
    return sha256(data)


# Set by the autouse fixture below: every custom resource is pinned to the checked node.
_NODE_SELECTOR: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _pin_to_the_checked_node(node_selector: dict[str, str]) -> None:
    _NODE_SELECTOR.clear()
    _NODE_SELECTOR.update(node_selector)


def _resource(name: str, source: str, file_name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Resource",
        "metadata": {"name": name},
        "spec": {
            "source": {"folder": FOLDER, "name": source, "version": "1"},
            "target": {"fileName": file_name, "persistentVolumeClaim": {"claimName": "target"}},
            "job": {"backoffLimit": 1, "activeDeadlineSeconds": 300},
            "nodeSelector": dict(_NODE_SELECTOR),
        },
    }
    body["spec"].update(spec)
    return body


def _create(custom: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    plural = "resources" if body["kind"] == "Resource" else "imageunlocks"
    return dict(custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body))


def _get(custom: Any, namespace: str, plural: str, name: str) -> dict[str, Any]:
    return dict(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))


def _wait(kind: str, name: str, namespace: str, condition: str, timeout: str = WAIT) -> float:
    """``kubectl wait --for=condition=...``; asserts it returns 0; the seconds it took."""
    started = time.monotonic()
    done = kubectl(
        "wait",
        "-n",
        namespace,
        f"--for=condition={condition}",
        f"{kind}.{GROUP}/{name}",
        f"--timeout={timeout}",
        check=False,
        timeout=600,
    )
    took = time.monotonic() - started
    if done.returncode != 0:
        obj = kubectl("get", "-n", namespace, f"{kind}.{GROUP}/{name}", "-o", "yaml", check=False)
        events = kubectl("get", "events", "-n", namespace, check=False)
        pods = kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False)
        raise AssertionError(
            f"kubectl wait {condition} {kind}/{name} failed after {took:.0f}s: {done.stderr}\n"
            f"{obj.stdout}\n{events.stdout}\n{pods.stdout}"
        )
    return took


def _jobs(batch: Any, namespace: str, uid: str) -> list[Any]:
    jobs = batch.list_namespaced_job(namespace, label_selector=f"{OWNER_UID}={uid}").items
    return [j for j in jobs if j.metadata.deletion_timestamp is None]


def _job_pods(core: Any, namespace: str, job_name: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items)


# --------------------------------------------------------------------------- tests


def test_resource_is_delivered_byte_identical(
    ns: Any,
    core: Any,
    custom: Any,
    batch: Any,
    dev_stack: DevStack,
    node_files: NodeFiles,
    tmp_path: Any,
) -> None:
    data = os.urandom(300_000)
    digest = _publish(dev_stack, tmp_path, f"e2e-model-{ns.name}", data)
    created = _create(custom, ns.name, _resource("model", f"e2e-model-{ns.name}", "model.bin"))

    took = _wait("resource", "model", ns.name, "Ready")

    obj = _get(custom, ns.name, "resources", "model")
    status = obj["status"]
    assert status["phase"] == "Succeeded", status
    assert conditions_of(obj)["Ready"]["status"] == "True"
    assert status["result"]["sha256"] == digest
    assert status["result"]["size"] == len(data)
    assert node_files.read_bytes(ns.host_dir / "model.bin") == data
    assert node_files.list_files(ns.host_dir) == ["model.bin"], "no temporary files left"
    assert len(_jobs(batch, ns.name, created["metadata"]["uid"])) == 1
    # The Job's completion is seen by a follow-up reconcile (off kopf's handler
    # threads): its Event must still be posted.

    def succeeded_event() -> bool:
        events = core.list_namespaced_event(
            ns.name, field_selector="involvedObject.name=model"
        ).items
        return any(e.reason == "Succeeded" for e in events)

    wait_for("the Succeeded Event", succeeded_event, timeout=30)
    print(f"Resource Ready in {took:.1f}s")


IMAGE_LINE = "azl-e2e: run from an unlocked image"


def _docker_archive(tag: str, tmp_path: pathlib.Path) -> pathlib.Path:
    """A runnable image ``tag`` (static busybox printing IMAGE_LINE) as a ``docker save`` tar.

    The image is made with ``docker import``, saved, and removed from the engine.
    """
    command = json.dumps(["/bin/busybox", "echo", IMAGE_LINE])
    # Binary input: `run` speaks text, so the import goes through subprocess itself.
    made = subprocess.run(
        ["docker", "import", "--change", f"CMD {command}", "-", tag],
        input=busybox_rootfs(),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, made.stderr.decode(errors="replace")
    archive = tmp_path / "images.tar"
    run(["docker", "save", "-o", str(archive), tag])
    run(["docker", "image", "rm", tag])
    return archive


def _publish_archive(dev_stack: DevStack, tmp_path: pathlib.Path, name: str, tag: str) -> bytes:
    """Publish a runnable image archive as ``name``; the archive's plaintext."""
    archive = _docker_archive(tag, tmp_path)
    plain = archive.read_bytes()
    dev_stack.loader(
        "upload-archive",
        "--folder",
        FOLDER,
        "--name",
        name,
        "--version",
        "1",
        "--images",
        tag,
        "--no-progress",
        str(archive),
    )
    archive.unlink()
    return plain


def _ctr(*args: str) -> Any:
    """``ctr`` on the local cluster's containerd, namespace k8s.io."""
    socket = os.environ.get("AZAION_CONTAINERD_SOCKET", "/run/containerd/containerd.sock")
    return run(["ctr", "--address", socket, "-n", "k8s.io", *args], check=False)


def _run_pod(core: Any, namespace: str, image: str, node: str) -> tuple[str, str]:
    """Run ``image`` once with ``imagePullPolicy: Never`` on ``node``; (phase, log)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "from-unlocked-image"},
        "spec": {
            "restartPolicy": "Never",
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True,
                        "runAsUser": 65534,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)

    def finished() -> str | None:
        status = core.read_namespaced_pod("from-unlocked-image", namespace).status
        waiting = [
            c.state.waiting.reason
            for c in status.container_statuses or ()
            if c.state and c.state.waiting and c.state.waiting.reason != "ContainerCreating"
        ]
        if waiting:
            return f"Waiting:{waiting[0]}"  # ErrImageNeverPull and the like: no point waiting
        return status.phase if status.phase in ("Succeeded", "Failed") else None

    phase = wait_for("the pod from the unlocked image to finish", finished, timeout=120)
    log = core.read_namespaced_pod_log("from-unlocked-image", namespace)
    return phase, log


class _EmptyDirWatcher(threading.Thread):
    """Polls the emptyDir volumes of every pod in a namespace on the node while Jobs run."""

    def __init__(self, core: Any, namespace: str, files: NodeFiles, plain: bytes) -> None:
        super().__init__(daemon=True)
        self.core, self.namespace, self.files = core, namespace, files
        self.plain_size, self.plain_sha = len(plain), sha256(plain)
        self.stop = threading.Event()
        self.seen: set[str] = set()
        self.bad: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self._scan()
                time.sleep(0.1)
            self._scan()
        except BaseException as exc:
            self.error = exc

    def _scan(self) -> None:
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            for root in kubelet_roots(self.files):
                base = root / "pods" / pod.metadata.uid / "volumes" / "kubernetes.io~empty-dir"
                for rel, (size, head) in self.files.heads(base).items():
                    self.seen.add(rel)
                    if looks_like_tar(head):
                        self.bad.append(f"{base / rel}: a tar header")
                    if size == self.plain_size and (
                        self.files.sha256_of(base / rel) == self.plain_sha
                    ):
                        self.bad.append(f"{base / rel}: the plaintext archive")


def _unlock_and_watch(
    custom: Any, core: Any, ns: Any, node_files: NodeFiles, plain: bytes, spec: dict[str, Any]
) -> tuple[float, _EmptyDirWatcher]:
    """Create ImageUnlock ``images`` with ``spec`` and wait for Ready, watching the emptyDirs."""
    watcher = _EmptyDirWatcher(core, ns.name, node_files, plain)
    watcher.start()
    try:
        _create(
            custom,
            ns.name,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ImageUnlock",
                "metadata": {"name": "images"},
                "spec": {
                    "job": {"backoffLimit": 1, "activeDeadlineSeconds": 300},
                    "nodeSelector": dict(_NODE_SELECTOR),
                    **spec,
                },
            },
        )
        took = _wait("imageunlock", "images", ns.name, "Ready")
    finally:
        watcher.stop.set()
        watcher.join(timeout=30)
    assert watcher.error is None, watcher.error
    assert any(name.endswith("archive.enc") for name in watcher.seen), (
        f"the watcher never saw the Job's workdir (saw {sorted(watcher.seen)})"
    )
    assert watcher.bad == [], watcher.bad
    assert node_files.list_files(ns.host_dir) == []
    return took, watcher


def test_image_unlock_into_containerd_gives_pods_a_runnable_image(
    ns: Any,
    core: Any,
    custom: Any,
    dev_stack: DevStack,
    node_files: NodeFiles,
    node_name: str,
    session_id: str,
    tmp_path: Any,
) -> None:
    """``runtime: auto`` on a containerd node: a Pod runs the image with pullPolicy Never."""
    tag = f"azl-e2e/runnable:{session_id}"
    name = f"e2e-ctd-images-{session_id}"
    plain = _publish_archive(dev_stack, tmp_path, name, tag)
    ref = f"docker.io/{tag}"
    _ctr("images", "rm", ref)
    try:
        took, _ = _unlock_and_watch(
            custom,
            core,
            ns,
            node_files,
            plain,
            {"archive": {"folder": FOLDER, "name": name}, "images": [tag], "pinImages": True},
        )
        status = _get(custom, ns.name, "imageunlocks", "images")["status"]
        assert status["phase"] == "Succeeded", status
        [node] = status["nodes"]
        assert (node["phase"], node["runtime"]) == ("Succeeded", "containerd"), node
        assert node["socketPath"] == os.environ.get(
            "AZAION_CONTAINERD_SOCKET", "/run/containerd/containerd.sock"
        )
        assert not docker_image_present(tag), "runtime auto on a containerd node used Docker"
        if not node_files.kind_container:  # the host's ctr reaches the local cluster's node
            listed = _ctr("images", "ls", f"name=={ref}")
            assert "io.cri-containerd.pinned=pinned" in listed.stdout, listed.stdout
        phase, log = _run_pod(core, ns.name, tag, node_name)
        assert (phase, log) == ("Succeeded", IMAGE_LINE + "\n")
        print(f"ImageUnlock into containerd Ready in {took:.1f}s; a Pod ran the image")
    finally:
        _ctr("images", "rm", ref)


def test_image_unlock_into_docker_loads_images_and_never_writes_the_plaintext(
    ns: Any,
    core: Any,
    custom: Any,
    dev_stack: DevStack,
    node_files: NodeFiles,
    session_id: str,
    tmp_path: Any,
) -> None:
    """``runtime: docker``: the images land in the node's Docker (workloads outside k8s)."""
    if not node_files.is_socket(DOCKER_SOCKET):
        pytest.skip(
            f"the node has no Docker engine at {DOCKER_SOCKET} (the kind configs mount the "
            "host's into one worker: hack/kind/cluster.yaml, tests/e2e/kind/kind-config.yaml)"
        )
    tag = f"azl-e2e/hello:{session_id}"
    name = f"e2e-images-{session_id}"
    plain = _publish_archive(dev_stack, tmp_path, name, tag)
    assert not docker_image_present(tag)
    try:
        took, watcher = _unlock_and_watch(
            custom,
            core,
            ns,
            node_files,
            plain,
            {"archive": {"folder": FOLDER, "name": name}, "images": [tag], "runtime": "docker"},
        )
        assert docker_image_present(tag), f"{tag} is not in the host's Docker"
        status = _get(custom, ns.name, "imageunlocks", "images")["status"]
        assert status["phase"] == "Succeeded", status
        assert status["nodes"], status
        assert all(node["phase"] == "Succeeded" for node in status["nodes"]), status["nodes"]
        assert all(node["runtime"] == "docker" for node in status["nodes"]), status["nodes"]
        assert tag in status["images"]
        print(f"ImageUnlock Ready in {took:.1f}s; emptyDir files seen: {sorted(watcher.seen)}")
    finally:
        run(["docker", "image", "rm", tag], check=False)


def test_wrong_credentials_fail_fast_without_a_retry_storm(
    ns: Any, core: Any, custom: Any, batch: Any, dev_stack: DevStack, node_files: NodeFiles
) -> None:
    core.create_namespaced_secret(
        ns.name,
        {
            "metadata": {"name": "wrong-credentials"},
            "stringData": {"email": dev_stack.email, "password": WRONG_PASSWORD},
        },
    )
    body = _resource(
        "wrong", "sample.bin", "sample.bin", credentialsSecretRef={"name": "wrong-credentials"}
    )
    body["spec"]["job"]["backoffLimit"] = 3
    created = _create(custom, ns.name, body)

    took = _wait("resource", "wrong", ns.name, "Failed", timeout="120s")

    obj = _get(custom, ns.name, "resources", "wrong")
    failed = conditions_of(obj)["Failed"]
    assert obj["status"]["phase"] == "Failed"
    assert failed["reason"] == "AuthError", failed
    assert "wrong email or password" in failed["message"], failed
    assert "wrong email or password" in obj["status"]["message"]
    # Longer than a resync period (10 s): nothing new is started.
    time.sleep(15)
    jobs = _jobs(batch, ns.name, created["metadata"]["uid"])
    assert len(jobs) == 1, [j.metadata.name for j in jobs]
    pods = _job_pods(core, ns.name, jobs[0].metadata.name)
    assert len(pods) == 1, "a permanent error is not retried (podFailurePolicy)"
    assert node_files.list_files(ns.host_dir) == []
    print(f"Failed (AuthError) in {took:.1f}s, 1 Job, 1 pod")


def test_tampered_big_part_fails_with_integrity_and_leaves_no_file(
    ns: Any, custom: Any, dev_stack: DevStack, node_files: NodeFiles, tmp_path: Any
) -> None:
    import boto3
    from botocore.config import Config

    name = f"e2e-tamper-{ns.name}"
    _publish(dev_stack, tmp_path, name, os.urandom(200_000))
    s3 = boto3.client(
        "s3",
        endpoint_url=dev_stack.s3_url,
        region_name="us-east-1",
        aws_access_key_id="e2e-write",
        aws_secret_access_key="e2e-write-secret",
        config=Config(s3={"addressing_style": "path"}),
    )
    big = bytearray(s3.get_object(Bucket=FOLDER, Key=f"{name}.big")["Body"].read())
    big[len(big) // 2] ^= 0xFF
    s3.put_object(Bucket=FOLDER, Key=f"{name}.big", Body=bytes(big))

    _create(custom, ns.name, _resource("tampered", name, "tampered.bin"))
    took = _wait("resource", "tampered", ns.name, "Failed", timeout="120s")

    obj = _get(custom, ns.name, "resources", "tampered")
    failed = conditions_of(obj)["Failed"]
    assert failed["reason"] == "IntegrityError", failed
    assert "failed authentication" in failed["message"], failed  # format 2: a segment's tag
    assert node_files.list_files(ns.host_dir) == [], "no file, not even a partial one"
    print(f"Failed (IntegrityError) in {took:.1f}s")


def test_a_spec_rejected_by_the_schema_names_the_field(ns: Any, custom: Any, k8s: Any) -> None:
    body = _resource("bad", "sample.bin", "sample.bin")
    body["spec"]["source"]["folder"] = "Bad_Folder"
    done = kubectl("apply", "-n", ns.name, "-f", "-", input=_yaml(body), check=False)
    assert done.returncode != 0
    assert "spec.source.folder" in done.stderr, done.stderr

    body = _resource("bad", "sample.bin", "sub/dir.bin")
    with pytest.raises(k8s.client.ApiException) as info:
        _create(custom, ns.name, body)
    assert info.value.status == 422
    assert "spec.target.fileName" in info.value.body


def test_a_foreign_api_url_is_refused_by_the_charts_policy(
    ns: Any, custom: Any, batch: Any, k8s: Any
) -> None:
    """Whoever may create a Resource cannot send the namespace's credentials elsewhere.

    The chart's ValidatingAdmissionPolicy refuses it at apply time (the operator's
    own PolicyDenied is tested in tests/e2e/operator, where no admission policy binds).
    """
    body = _resource("foreign", "sample.bin", "sample.bin", apiUrl="https://collector.invalid")
    done = kubectl("apply", "-n", ns.name, "-f", "-", input=_yaml(body), check=False)
    assert done.returncode != 0
    assert "ValidatingAdmissionPolicy" in done.stderr, done.stderr
    assert (
        "denied request: policy.allowedApiUrls: spec.apiUrl is not an allowed API URL"
        in done.stderr
    ), done.stderr
    with pytest.raises(k8s.client.ApiException) as info:
        _create(custom, ns.name, body)
    assert info.value.status in (403, 422), info.value
    with pytest.raises(k8s.client.ApiException) as gone:
        _get(custom, ns.name, "resources", "foreign")
    assert gone.value.status == 404
    assert batch.list_namespaced_job(ns.name).items == []


def test_the_operator_may_read_only_the_allowed_credentials_secrets(ns: Any) -> None:
    """RBAC ``resourceNames``: the default and the listed Secret names, in served namespaces."""
    account = f"system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}-azaion-loader"

    def can(verb: str, what: str, namespace: str) -> str:
        done = kubectl("auth", "can-i", verb, what, "-n", namespace, "--as", account, check=False)
        return str(done.stdout.strip())

    assert can("get", "secret/azaion-loader-credentials", ns.name) == "yes"
    assert can("get", "secret/wrong-credentials", ns.name) == "yes"
    assert can("get", "secret/some-database-password", ns.name) == "no"
    assert can("list", "secrets", ns.name) == "no"
    assert can("watch", "secrets", ns.name) == "no"
    # Namespaces the release does not serve: nothing at all.
    for other in ("kube-system", "default"):
        assert can("get", "secret/azaion-loader-credentials", other) == "no"


def _yaml(body: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(body))


def test_deleting_a_resource_removes_its_jobs_and_keeps_the_file(
    ns: Any,
    core: Any,
    custom: Any,
    batch: Any,
    dev_stack: DevStack,
    node_files: NodeFiles,
    tmp_path: Any,
) -> None:
    data = os.urandom(50_000)
    _publish(dev_stack, tmp_path, f"e2e-keep-{ns.name}", data)
    created = _create(custom, ns.name, _resource("keep", f"e2e-keep-{ns.name}", "keep.bin"))
    uid = created["metadata"]["uid"]
    _wait("resource", "keep", ns.name, "Ready")
    jobs = _jobs(batch, ns.name, uid)
    assert len(jobs) == 1

    kubectl("delete", "-n", ns.name, f"resource.{GROUP}/keep", "--wait=true", "--timeout=60s")

    wait_for("the Job gone", lambda: not _jobs(batch, ns.name, uid), timeout=90)
    wait_for(
        "the Job's pods gone",
        lambda: not _job_pods(core, ns.name, jobs[0].metadata.name),
        timeout=90,
    )
    assert node_files.read_bytes(ns.host_dir / "keep.bin") == data


def test_killing_the_operator_mid_job_ends_with_one_job_and_ready(
    ns: Any,
    core: Any,
    custom: Any,
    batch: Any,
    dev_stack: DevStack,
    node_files: NodeFiles,
    operator_log_archive: list[str],
    tmp_path: Any,
) -> None:
    data = os.urandom(3_000_000)
    _publish(dev_stack, tmp_path, f"e2e-restart-{ns.name}", data)
    before = ready_operator_pod(core)
    assert before is not None

    created = _create(
        custom, ns.name, _resource("restart", f"e2e-restart-{ns.name}", "restart.bin")
    )
    uid = created["metadata"]["uid"]
    job = wait_for("the Job", lambda: _jobs(batch, ns.name, uid), timeout=60, every=0.1)[0]
    assert not (job.status and job.status.succeeded), "the Job finished before the kill"

    operator_log_archive.append(operator_logs(core))
    core.delete_namespaced_pod(before.metadata.name, RELEASE_NAMESPACE, grace_period_seconds=0)
    job_done_at_kill = batch.read_namespaced_job_status(job.metadata.name, ns.name).status
    assert not job_done_at_kill.succeeded, "the kill came after the Job completed"

    wait_for(
        "a new operator pod Ready",
        lambda: (
            (p := ready_operator_pod(core)) is not None and p.metadata.name != before.metadata.name
        ),
        timeout=180,
    )
    _wait("resource", "restart", ns.name, "Ready")

    jobs = _jobs(batch, ns.name, uid)
    assert [j.metadata.name for j in jobs] == [job.metadata.name]
    obj = _get(custom, ns.name, "resources", "restart")
    assert obj["status"]["result"]["sha256"] == sha256(data)
    assert node_files.read_bytes(ns.host_dir / "restart.bin") == data
    assert len(operator_pods(core)) == 1


def _scrape(chart: str, path: str) -> tuple[int, str]:
    """GET ``path`` of the operator's metrics Service through the API server's proxy."""
    raw = f"/api/v1/namespaces/{chart}/services/{RELEASE}-azaion-loader-metrics:metrics/proxy{path}"
    done = kubectl("get", "--raw", raw, check=False)
    return done.returncode, done.stdout


def _sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample (``name{labels}``) of a Prometheus text page; 0 if absent."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_a_delivered_resource_and_readiness_answers(
    ns: Any, custom: Any, chart: str, dev_stack: DevStack, tmp_path: Any
) -> None:
    code, before = _scrape(chart, "/metrics")
    assert code == 0, before
    data = os.urandom(120_000)
    _publish(dev_stack, tmp_path, f"e2e-metrics-{ns.name}", data)
    _create(custom, ns.name, _resource("counted", f"e2e-metrics-{ns.name}", "counted.bin"))
    _wait("resource", "counted", ns.name, "Ready")

    def counted() -> str | None:
        _, after = _scrape(chart, "/metrics")
        grew = _sample(after, "azaion_loader_delivered_bytes_total") - _sample(
            before, "azaion_loader_delivered_bytes_total"
        )
        return after if grew >= len(data) else None

    after = wait_for("the delivery counted", counted, timeout=60)
    kind = 'kind="Resource"'
    for name, labels in (
        ("azaion_loader_jobs_created_total", kind),
        ("azaion_loader_reconciles_total", f'{kind},result="ok"'),
        ("azaion_loader_ready_seconds_count", kind),
    ):
        assert _sample(after, name, labels) > _sample(before, name, labels), name
    assert _scrape(chart, "/readyz") == (0, "ok\n")


def test_no_secret_in_logs_events_or_statuses(
    core: Any,
    custom: Any,
    chart: str,
    dev_stack: DevStack,
    namespace_pool: Any,
    evidence: list[str],
    operator_log_archive: list[str],
) -> None:
    if not evidence:
        pytest.skip("run with the other tests of this module: it reads what they left")
    texts = {
        "operator logs": "\n".join([*operator_log_archive, operator_logs(core)]),
        "events, statuses and Job logs": "\n".join(evidence),
    }
    assert "AuthError" in texts["events, statuses and Job logs"], "the evidence is incomplete"
    canaries = {"the demo password": dev_stack.password, "the wrong password": WRONG_PASSWORD}
    for where, text in texts.items():
        assert text.strip(), f"no {where} to search"
        for what, secret in canaries.items():
            assert secret not in text, f"{what} appears in the {where}"
        assert not JWT.search(text), f"a JWT appears in the {where}"
    # The dev stack prints its own settings (the demo password) by design; the API
    # server's request log must still hold no wrong password and no token.
    log = dev_stack.log.read_text()
    assert WRONG_PASSWORD not in log, "the wrong password appears in the dev stack's log"
    assert not JWT.search(log), "a JWT appears in the dev stack's log"
