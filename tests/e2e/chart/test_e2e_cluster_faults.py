"""Cluster-level faults (issue 11 item 6): the API server restarted while Jobs are
being created (alone, and with the operator killed at the same moment), and a
node's kubelet restarted while a Job runs there.

The faults are real: on a kind cluster the kube-apiserver container (a static
pod) and the operator's container are killed with ``crictl`` inside their node
containers and the kubelet starts them again; the kubelet is restarted with
``systemctl`` (``kind_faults_support.py``). To restart it while a Job's download
is in flight, the download is held at a fault proxy in front of S3
(``FaultCdnApi``, ``hack/fault_proxy.py``) until the restart is done. Each case
asserts that exactly the right Jobs exist afterwards (one per Resource, one per
node of the ImageUnlock, none created twice), that every result is complete and
verified with no temporary beside it, that each custom resource ends Ready
within a bound, and that no secret reaches the operator's logs, Events or
statuses.

They need a kind cluster (node containers to exec into) with two workers that
take pods: ``scripts/e2e-kind --local``. Elsewhere they skip, naming what is
missing.
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import test_e2e_multinode as multinode
from chart_e2e_support import (
    FOLDER,
    GROUP,
    OWNER_UID,
    VERSION,
    DevStack,
    FaultCdnApi,
    NodeFiles,
    collect_evidence,
    operator_logs,
    operator_pods,
    ready_operator_pod,
    sha256,
    wait_for,
)
from kind_faults_support import KindCluster
from test_e2e_chart import JWT, _create, _publish, _publish_archive, _resource

pytestmark = pytest.mark.e2e

# Two schedulable nodes and a per-test node label (shared with the multi-node tests).
workers = multinode.workers
group = multinode.group

RECOVERY_BOUND = 240.0
"""Seconds after the fault within which every custom resource must be Ready."""


@pytest.fixture
def kind(node_files: NodeFiles, k8s: Any) -> Iterator[KindCluster]:
    """The kind cluster of the checked node; skips when the nodes are no kind containers.

    Afterwards, whatever the test's outcome, waits until the API server is ready
    again, so that a fault cannot spill into the next test (a CI run of 30 Nov
    had the next test's setup refused by an API server whose RBAC was not synced).
    """
    cluster = KindCluster.of_node(node_files.kind_container) if node_files.kind_container else None
    if cluster is None:
        pytest.skip(
            "cluster fault test: needs a kind cluster (node containers to run crictl and "
            "systemctl in): scripts/e2e-kind --local"
        )
    yield cluster
    wait_for("the API server ready after the test", lambda: _api_ready(k8s), timeout=180)


def _quiet(call: Callable[[], Any]) -> Any:
    """``call()``, or None while the API server does not answer (it is being restarted)."""
    try:
        return call()
    except Exception:
        return None


def _api_ready(k8s: Any) -> bool:
    """True once ``/readyz`` says ready: served, and RBAC and the informers synced.

    ``/version`` answers earlier than that, while requests can still be refused
    with 403 for want of the RBAC caches.
    """

    def readyz() -> int:
        with k8s.client.ApiClient() as api:
            response = api.call_api(
                "/readyz",
                "GET",
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=3,
            )
        return int(response[1])

    return _quiet(readyz) == 200


class _JobsSeen:
    """Every Job of a namespace seen while polling: name -> the uids it had."""

    def __init__(self, batch: Any, namespace: str) -> None:
        self.batch, self.namespace = batch, namespace
        self.uids: dict[str, set[str]] = {}

    def poll(self) -> list[Any] | None:
        items = _quiet(lambda: self.batch.list_namespaced_job(self.namespace).items)
        for job in items or ():
            self.uids.setdefault(job.metadata.name, set()).add(job.metadata.uid)
        return items


def _kill_at_once(kills: list[Callable[[], None]]) -> None:
    """Run the kills in parallel threads, so they land together; re-raise a failure."""
    errors: list[BaseException] = []

    def guarded(kill: Callable[[], None]) -> None:
        try:
            kill()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in kills]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]


def _statuses(custom: Any, namespace: str, plural: str) -> dict[str, dict[str, Any]] | None:
    listing = _quiet(
        lambda: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    )
    if listing is None:
        return None
    return {o["metadata"]["name"]: dict(o.get("status") or {}) for o in listing["items"]}


def _assert_no_secret(core: Any, custom: Any, namespace: str, dev_stack: DevStack) -> None:
    """The password and any token are absent from the operator's logs (the killed
    container's too), the namespace's Events, statuses and Job logs."""
    texts = {
        "operator logs": operator_logs(core),
        "events, statuses and Job logs": collect_evidence(core, custom, namespace),
    }
    for where, text in texts.items():
        assert text.strip(), f"no {where} to search"
        assert dev_stack.password not in text, f"the password appears in the {where}"
        assert not JWT.search(text), f"a JWT appears in the {where}"


@pytest.fixture
def labelled_workers(core: Any, workers: list[str], group: str) -> Iterator[list[str]]:
    for node in workers:
        multinode._label(core, node, group)
    yield workers


@pytest.mark.parametrize("killed", ["apiserver", "apiserver+operator"])
def test_api_server_restarted_while_jobs_are_created(
    killed: str,
    kind: KindCluster,
    labelled_workers: list[str],
    group: str,
    ns: Any,
    k8s: Any,
    core: Any,
    custom: Any,
    batch: Any,
    dev_stack: DevStack,
    node_files: NodeFiles,
    node_selector: dict[str, str],
    session_id: str,
    tmp_path: Any,
) -> None:
    """Four Resources and an ImageUnlock over both workers are created together; as the
    first Job appears, kube-apiserver is killed (and the operator with it)."""
    data = os.urandom(2_000_000)
    source = f"e2e-apifault-{ns.name}"
    _publish(dev_stack, tmp_path, source, data)
    tag = f"azl-e2e/apifault-{killed.replace('+', '-')}:{session_id}"
    archive = f"e2e-apifault-archive-{ns.name}"
    _publish_archive(dev_stack, tmp_path, archive, tag)

    operator = ready_operator_pod(core)
    assert operator is not None
    apiserver = kind.apiserver_ids()
    kills = [lambda: kind.kill_containers(kind.control_plane, apiserver)]
    if "operator" in killed:
        node = operator.spec.node_name
        ours = kind.operator_ids(node)
        kills.append(lambda: kind.kill_containers(node, ours))
    attempt_before = kind.apiserver_attempt()

    names = [f"r{i}" for i in range(4)]
    for name in names:
        _create(custom, ns.name, _resource(name, source, f"{name}.bin", nodeSelector=node_selector))
    multinode._unlock(custom, ns.name, "fan", archive, tag, group)
    seen = _JobsSeen(batch, ns.name)
    at_kill = wait_for("the first Job", seen.poll, timeout=60, every=0.05)
    _kill_at_once(kills)
    killed_at = time.monotonic()
    killed_wall = datetime.datetime.now(datetime.UTC)
    jobs_at_kill = sorted(j.metadata.name for j in at_kill)

    wait_for("the API server ready", lambda: _api_ready(k8s), timeout=180, every=0.5)
    downtime = time.monotonic() - killed_at
    assert kind.apiserver_attempt() > attempt_before, "kube-apiserver was not restarted"

    def all_ready() -> bool:
        seen.poll()
        resources = _statuses(custom, ns.name, "resources")
        unlocks = _statuses(custom, ns.name, "imageunlocks")
        if resources is None or unlocks is None:
            return False
        return all(resources[n].get("phase") == "Succeeded" for n in names) and (
            unlocks["fan"].get("phase") == "Succeeded"
        )

    wait_for("every custom resource Ready", all_ready, timeout=RECOVERY_BOUND, every=0.5)
    took = time.monotonic() - killed_at
    seen.poll()

    # Exactly the right Jobs: one per Resource, one per worker, none made twice.
    resources = _statuses(custom, ns.name, "resources") or {}
    unlock = (_statuses(custom, ns.name, "imageunlocks") or {})["fan"]
    jobs = batch.list_namespaced_job(ns.name).items
    by_owner: dict[str, list[str]] = {}
    for job in jobs:
        by_owner.setdefault(job.metadata.labels[OWNER_UID], []).append(job.metadata.name)
    expected = {resources[n]["jobName"] for n in names} | {
        item["jobName"] for item in unlock["nodes"]
    }
    assert sorted(j.metadata.name for j in jobs) == sorted(expected), (jobs_at_kill, unlock)
    assert len(jobs) == len(names) + len(labelled_workers)
    assert all(len(v) == 1 for v in seen.uids.values()), f"a Job was recreated: {seen.uids}"
    assert set(seen.uids) == expected, f"a Job came and went: {sorted(seen.uids)}"
    for job in jobs:
        assert not job.status.failed, f"Job {job.metadata.name} had a failed pod"

    # Each result complete and verified, nothing else beside it.
    assert node_files.list_files(ns.host_dir) == sorted(f"{n}.bin" for n in names)
    for name in names:
        assert resources[name]["result"]["sha256"] == sha256(data), resources[name]
        assert node_files.sha256_of(ns.host_dir / f"{name}.bin") == sha256(data), name
    per_node = {item["name"]: item for item in unlock["nodes"]}
    assert sorted(per_node) == labelled_workers, unlock
    for node in labelled_workers:
        assert per_node[node]["phase"] == "Succeeded", per_node[node]
        assert kind.has_image(node, f"docker.io/{tag}"), f"{tag} is not on {node}"

    if "operator" in killed:
        restarts = sum(
            c.restart_count
            for p in operator_pods(core)
            for c in p.status.container_statuses or ()
            if c.name == "operator"
        )
        assert restarts >= 1, "the operator container was not restarted"
    assert ready_operator_pod(core) is not None
    _assert_no_secret(core, custom, ns.name, dev_stack)

    def since(moment: datetime.datetime | None) -> str:
        return "-" if moment is None else f"{(moment - killed_wall).total_seconds():+.0f}s"

    for job in sorted(jobs, key=lambda j: j.metadata.creation_timestamp):
        print(
            f"  {job.metadata.name}: created {since(job.metadata.creation_timestamp)}, "
            f"started {since(job.status.start_time)}, done {since(job.status.completion_time)}"
        )
    print(f"  control plane restarts after the fault: {kind.control_plane_attempts()}")
    print(
        f"{killed} killed with {len(jobs_at_kill)} of {len(expected)} Jobs created "
        f"({', '.join(jobs_at_kill)}); API back in {downtime:.1f}s; all Ready {took:.1f}s "
        f"after the kill; {len(jobs)} Jobs, none twice"
    )


HOLD_AT = 1024 * 1024
"""Bytes of the big part a held download gets before the proxy holds it."""


@pytest.fixture
def held_cdn(fault_cdn_api: FaultCdnApi) -> Iterator[FaultCdnApi]:
    """The second API whose CDN proxy a test arms; released and disarmed afterwards
    whatever the test's outcome, so no download stays held."""
    yield fault_cdn_api
    fault_cdn_api.proxy.release()


def _fetch_container(pod: Any) -> str | None:
    """The container ID of the pod's first init container (the fetch), if it has one."""
    statuses = pod.status.init_container_statuses or ()
    return statuses[0].container_id if statuses else None


def _init_states(pod: Any) -> str:
    """``name:state(restarts)`` of each init container, e.g. ``fetch:running(0)``."""
    out = []
    for s in pod.status.init_container_statuses or ():
        state = next((k for k in ("running", "terminated", "waiting") if getattr(s.state, k)), "?")
        out.append(f"{s.name}:{state}({s.restart_count})")
    return ",".join(out) or "-"


@pytest.mark.parametrize("moment", ["job-created", "pod-running"])
def test_kubelet_restarted_mid_job(
    moment: str,
    kind: KindCluster,
    ns: Any,
    core: Any,
    custom: Any,
    batch: Any,
    dev_stack: DevStack,
    held_cdn: FaultCdnApi,
    node_files: NodeFiles,
    node_name: str,
    node_selector: dict[str, str],
    tmp_path: Any,
) -> None:
    """The kubelet of the Job's node is restarted as soon as the Job exists (its pod is
    scheduled while the kubelet is away), or while the Job's pod runs there.

    ``pod-running``: a 24 MB part fetches in under a second, between two status
    updates of the kubelet, so the download is held on purpose: the Resource names
    the second API (``spec.apiUrl``) whose CDN is the fault proxy, armed to hold the
    big part's stream after 1 MiB. The kubelet is restarted once the init container
    is seen running and the proxy holds the stream; then the stream is released.
    """
    data = os.urandom(24_000_000)
    source = f"e2e-kubelet-{ns.name}"
    spec: dict[str, Any] = {"nodeSelector": node_selector}
    proxy = held_cdn.proxy
    if moment == "pod-running":
        path = tmp_path / source
        path.write_bytes(data)
        published = held_cdn.loader(
            "upload",
            "--folder",
            FOLDER,
            "--name",
            source,
            "--version",
            "1",
            "--no-progress",
            str(path),
        )
        path.unlink()
        assert published["ok"] is True, published
        # Every GET of the big part (a resume after a read timeout too) is held.
        proxy.arm(f"GET /{FOLDER}/{source}.big ".encode(), "hold", at=HOLD_AT, times=20)
        spec["apiUrl"] = held_cdn.url
    else:
        _publish(dev_stack, tmp_path, source, data)
    started_before = kind.kubelet_started(node_name)

    created = _create(custom, ns.name, _resource("kl", source, "kl.bin", **spec))
    uid = created["metadata"]["uid"]
    created_at = time.monotonic()

    def pods() -> list[Any]:
        return list(core.list_namespaced_pod(ns.name, label_selector=f"{OWNER_UID}={uid}").items)

    def init_running() -> Any:
        return next(
            (
                p
                for p in pods()
                if any(s.state and s.state.running for s in p.status.init_container_statuses or ())
            ),
            None,
        )

    def pod_running_and_held() -> Any:
        pod = init_running()
        return pod if pod is not None and proxy.reached.is_set() and proxy.held >= 1 else None

    def job_created() -> Any:
        return batch.list_namespaced_job(ns.name, label_selector=f"{OWNER_UID}={uid}").items

    ready_for = pod_running_and_held if moment == "pod-running" else job_created
    try:
        at_fault = wait_for(f"the fault's moment: {moment}", ready_for, timeout=120, every=0.1)
    except AssertionError as exc:
        jobs = job_created()
        raise AssertionError(
            f"{exc}; proxy reached={proxy.reached.is_set()} held={proxy.held} "
            f"sent={proxy.sent}; pods: {[(p.metadata.name, p.status.to_dict()) for p in pods()]}; "
            f"jobs: {[j.status.to_dict() for j in jobs]}"
        ) from None
    [job] = job_created()
    assert not job.status.succeeded, "the Job finished before the kubelet restart"
    before = (
        f"pod {at_fault.metadata.name} init {_init_states(at_fault)}"
        if moment == "pod-running"
        else "no pod yet"
    )
    held_sent = proxy.sent
    try:
        kind.restart_kubelet(node_name)
        restarted_at = time.monotonic()
        assert kind.kubelet_started(node_name) != started_before, "the kubelet was not restarted"
        if moment == "pod-running":
            # The transfer is still in flight (held) across the restart.
            assert proxy.held >= 1, "the stream was no longer held after the restart"
            assert not node_files.list_files(ns.host_dir), "a file was published while held"
    finally:
        proxy.release()
    released_at = time.monotonic()
    during = proxy.sent - held_sent

    def ready() -> bool:
        obj = _quiet(
            lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns.name, "resources", "kl")
        )
        return bool(obj and (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"))

    wait_for("the Resource terminal", ready, timeout=RECOVERY_BOUND, every=0.5)
    took = time.monotonic() - restarted_at
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns.name, "resources", "kl")
    status = obj["status"]
    final = pods()
    jobs = batch.list_namespaced_job(ns.name).items
    failed = [j.status.failed or 0 for j in jobs]
    summary = (
        f"kubelet on {node_name} restarted at {moment} ({before}; "
        f"{restarted_at - created_at:.1f}s after the Resource was created"
        + (
            f", stream held after {HOLD_AT} bytes, {during} bytes forwarded during the "
            f"restart, released {released_at - restarted_at:.1f}s after it"
            if moment == "pod-running"
            else ""
        )
        + f"); {status.get('phase')} {took:.1f}s after the restart; {len(jobs)} Job(s), "
        f"failed pods {failed}; pods: "
        + "; ".join(f"{p.metadata.name} {p.status.phase} init {_init_states(p)}" for p in final)
        + (
            f"; GETs of the big part at the proxy {proxy.matched} (more than 1: resumed); "
            "the fetch container running at the restart is "
            + (
                "the one that finished"
                if _fetch_container(at_fault) in {_fetch_container(p) for p in final}
                else "gone (another one finished)"
            )
            if moment == "pod-running"
            else ""
        )
    )
    print(summary)
    assert status["phase"] == "Succeeded", (summary, status)
    assert [j.metadata.name for j in jobs] == [job.metadata.name] == [status["jobName"]]
    assert jobs[0].metadata.uid == job.metadata.uid, "the Job was re-created"
    assert status["result"]["sha256"] == sha256(data)
    assert node_files.list_files(ns.host_dir) == ["kl.bin"]
    assert node_files.sha256_of(ns.host_dir / "kl.bin") == sha256(data)
    _assert_no_secret(core, custom, ns.name, dev_stack)
