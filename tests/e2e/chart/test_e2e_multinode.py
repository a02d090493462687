"""Several real nodes (issue 13 item 3): ImageUnlock fan-out with ``parallelism``,
per-node status, each node's own machine ID (and a key fragment sealed for one node
that does not open on another), a node labelled later, a node cordoned mid-run, a
node whose kubelet stops answering mid-run; a Resource whose claim's volume is bound
to one node runs there.

These need at least two Ready nodes that take pods (the 3-node kind cluster that
``./scripts/test`` brings up: two workers); on a single-node cluster they skip.
Each test labels the nodes it uses with its own ``azl-e2e-multi=<id>`` and removes
the label (and any cordon or pause) at its end, so the nodes are as before.
"""

from __future__ import annotations

import datetime
import itertools
import os
import pathlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from chart_e2e_support import FOLDER, GROUP, OWNER_UID, VERSION, DevStack, NodeFiles, run, wait_for
from test_e2e_chart import IMAGE_LINE, _publish, _publish_archive, _run_pod

from azaion_loader.envelope import derive_envelope_key, derive_user_key, open_envelope
from azaion_loader.errors import AuthError
from azaion_loader.fingerprint import compute_fingerprint

pytestmark = pytest.mark.e2e

LABEL = "azl-e2e-multi"
NODE_ANNOTATION = "loader.azaion.com/node-name"


@pytest.fixture
def workers(core: Any) -> list[str]:
    """Names of the Ready nodes that take ordinary pods; skips below two."""
    names = []
    for node in core.list_node().items:
        conds = {c.type: c.status for c in node.status.conditions or []}
        tainted = any(t.effect in ("NoSchedule", "NoExecute") for t in node.spec.taints or [])
        if conds.get("Ready") == "True" and not tainted and not node.spec.unschedulable:
            names.append(str(node.metadata.name))
    if len(names) < 2:
        pytest.skip(
            f"multi-node test: needs 2 Ready schedulable nodes, the cluster has {len(names)} "
            "(run on the kind cluster: scripts/e2e-kind --local)"
        )
    return sorted(names)


@pytest.fixture
def group(core: Any) -> Iterator[str]:
    """This test's label value; every node carrying it is relabelled/uncordoned at the end."""
    value = uuid.uuid4().hex[:8]
    yield value
    for node in core.list_node(label_selector=f"{LABEL}={value}").items:
        core.patch_node(node.metadata.name, {"metadata": {"labels": {LABEL: None}}})
    # uncordon whatever a test cordoned (the label is gone by now: by annotation)
    for node in core.list_node().items:
        notes = node.metadata.annotations or {}
        if notes.get("azl-e2e-cordoned-by") == value:
            core.patch_node(
                node.metadata.name,
                {
                    "spec": {"unschedulable": None},
                    "metadata": {"annotations": {"azl-e2e-cordoned-by": None}},
                },
            )


def _label(core: Any, node: str, value: str) -> None:
    core.patch_node(node, {"metadata": {"labels": {LABEL: value}}})


def _cordon(core: Any, node: str, value: str) -> None:
    core.patch_node(
        node,
        {
            "spec": {"unschedulable": True},
            "metadata": {"annotations": {"azl-e2e-cordoned-by": value}},
        },
    )


def _unlock(
    custom: Any, namespace: str, name: str, archive: str, tag: str, group: str, **spec: Any
) -> str:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImageUnlock",
        "metadata": {"name": name},
        "spec": {
            "archive": {"folder": "demo", "name": archive},
            "images": [tag],
            "job": {"backoffLimit": 1, "activeDeadlineSeconds": 300},
            "nodeSelector": {LABEL: group},
            **spec,
        },
    }
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "imageunlocks", body
    )
    return str(created["metadata"]["uid"])


def _status(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "imageunlocks", name)
    return dict(obj.get("status") or {})


class _JobLog:
    """Every Job of one owner seen while polling: node, start and completion time, env."""

    def __init__(self, batch: Any, namespace: str, uid: str) -> None:
        self.batch, self.namespace, self.uid = batch, namespace, uid
        self.jobs: dict[str, dict[str, Any]] = {}
        self.max_active = 0

    def poll(self) -> None:
        items = self.batch.list_namespaced_job(
            self.namespace, label_selector=f"{OWNER_UID}={self.uid}"
        ).items
        running = 0
        for job in items:
            seen = self.jobs.setdefault(job.metadata.name, {})
            seen["node"] = (job.metadata.annotations or {}).get(NODE_ANNOTATION)
            seen["start"] = job.status.start_time or seen.get("start")
            seen["end"] = job.status.completion_time or seen.get("end")
            env = {}
            for container in job.spec.template.spec.containers + (
                job.spec.template.spec.init_containers or []
            ):
                env.update({e.name: e.value for e in container.env or [] if e.value is not None})
            seen["machine_id"] = env.get("LOADER_HW_MACHINE_ID")
            if (
                not (job.status.succeeded or job.status.failed)
                and job.metadata.deletion_timestamp is None
            ):
                running += 1
        self.max_active = max(self.max_active, running)


def _watch_until(
    log: _JobLog, custom: Any, namespace: str, name: str, done: Any, timeout: float = 300
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        log.poll()
        status = _status(custom, namespace, name)
        if done(status):
            log.poll()
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s; status {status}; jobs {log.jobs}")
        time.sleep(0.5)


def _terminal(status: dict[str, Any]) -> bool:
    return status.get("phase") in ("Succeeded", "Failed")


def test_unlock_fans_out_to_every_node_one_at_a_time_each_with_its_own_machine_id(
    workers: list[str],
    ns: Any,
    core: Any,
    custom: Any,
    batch: Any,
    dev_stack: Any,
    group: str,
    session_id: str,
    tmp_path: Any,
) -> None:
    """``parallelism: 1`` on two nodes: two Jobs, never at once, each node its machine ID."""
    tag = f"azl-e2e/multi:{session_id}"
    _publish_archive(dev_stack, tmp_path, f"e2e-multi-{session_id}", tag)
    for node in workers:
        _label(core, node, group)
    started = time.monotonic()
    uid = _unlock(custom, ns.name, "fan", f"e2e-multi-{session_id}", tag, group, parallelism=1)
    log = _JobLog(batch, ns.name, uid)
    status = _watch_until(log, custom, ns.name, "fan", _terminal)
    took = time.monotonic() - started
    assert status["phase"] == "Succeeded", status
    assert status["desired"] == len(workers) and status["succeeded"] == len(workers), status
    per_node = {item["name"]: item for item in status["nodes"]}
    assert sorted(per_node) == workers, status["nodes"]
    for item in per_node.values():
        assert (item["phase"], item["runtime"]) == ("Succeeded", "containerd"), item

    jobs = sorted(log.jobs.values(), key=lambda j: j["start"])
    assert sorted(j["node"] for j in jobs) == workers, jobs
    assert log.max_active <= 1, f"more than parallelism=1 Jobs ran at once: {jobs}"
    for earlier, later in itertools.pairwise(jobs):
        assert earlier["end"] and earlier["end"] <= later["start"], (
            f"Jobs overlap with parallelism 1: {earlier} / {later}"
        )
    # each Job carries its own node's machine ID (the hardware fingerprint input)
    machine_ids = {n: core.read_node(n).status.node_info.machine_id for n in workers}
    assert len(set(machine_ids.values())) == len(workers), machine_ids
    for job in jobs:
        assert job["machine_id"] == machine_ids[job["node"]].strip().lower(), (job, machine_ids)
    # the image is in each node's containerd: a Pod runs it there
    for node in workers:
        phase, out = _run_pod(core, ns.name, tag, node)
        assert (phase, out) == ("Succeeded", IMAGE_LINE + "\n"), node
        core.delete_namespaced_pod("from-unlocked-image", ns.name, grace_period_seconds=0)
        wait_for(
            "the pod gone",
            lambda: (
                not core.list_namespaced_pod(
                    ns.name, field_selector="metadata.name=from-unlocked-image"
                ).items
            ),
            timeout=60,
        )
    spans = ", ".join(f"{j['node']} {j['start']:%T}-{j['end']:%T}" for j in jobs)
    print(f"fan-out to {len(workers)} nodes, parallelism 1, Ready in {took:.1f}s: {spans}")

    # What the API serves to one node (the key fragment, sealed for that node's
    # fingerprint) opens with that node's key only, never with another node's.
    user_key = derive_user_key(dev_stack.email, dev_stack.password)
    fingerprints = {
        n: compute_fingerprint(machine_ids[n], core.read_node(n).status.node_info.architecture)
        for n in workers
    }
    assert len(set(fingerprints.values())) == len(workers), fingerprints
    fragments = set()
    for served_to, fp in fingerprints.items():
        envelope = _key_fragment_envelope(dev_stack, f"e2e-multi-{session_id}", fp)
        for opener, other_fp in fingerprints.items():
            key = derive_envelope_key(user_key, other_fp)
            if opener == served_to:
                fragments.add(open_envelope(key, "key-fragment", envelope)["fragment"])
            else:
                with pytest.raises(AuthError):
                    open_envelope(key, "key-fragment", envelope)
    assert len(fragments) == 1  # the same fragment, sealed for each node apart


def _key_fragment_envelope(dev_stack: DevStack, archive: str, fingerprint: str) -> str:
    """The key fragment's envelope as the API serves it to the node with ``fingerprint``."""
    login = requests.post(
        f"{dev_stack.api_url}/login",
        json={"email": dev_stack.email, "password": dev_stack.password},
        timeout=60,
    )
    assert login.status_code == 200, login.text
    reply = requests.get(
        f"{dev_stack.api_url}/archives/{FOLDER}/{archive}/key-fragment",
        headers={
            "Authorization": f"Bearer {login.json()['token']}",
            "X-Hardware-Fingerprint": fingerprint,
        },
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["envelope"])


def test_a_node_labelled_later_gets_its_job(
    workers: list[str],
    ns: Any,
    core: Any,
    custom: Any,
    batch: Any,
    dev_stack: Any,
    group: str,
    session_id: str,
    tmp_path: Any,
) -> None:
    """The selector matches one node; labelling a second one later gives it a Job too."""
    first, second = workers[0], workers[1]
    tag = f"azl-e2e/later:{session_id}"
    _publish_archive(dev_stack, tmp_path, f"e2e-later-{session_id}", tag)
    _label(core, first, group)
    uid = _unlock(custom, ns.name, "later", f"e2e-later-{session_id}", tag, group)
    log = _JobLog(batch, ns.name, uid)
    status = _watch_until(log, custom, ns.name, "later", _terminal)
    assert status["phase"] == "Succeeded" and [n["name"] for n in status["nodes"]] == [first]
    labelled = datetime.datetime.now(datetime.UTC)
    _label(core, second, group)

    def both_done(st: dict[str, Any]) -> bool:
        items = {n["name"]: n.get("phase") for n in st.get("nodes") or ()}
        return items == {first: "Succeeded", second: "Succeeded"} and st.get("phase") == "Succeeded"

    status = _watch_until(log, custom, ns.name, "later", both_done, timeout=240)
    assert status["succeeded"] == 2, status
    by_node = {j["node"]: j for j in log.jobs.values()}
    assert set(by_node) == {first, second}, log.jobs
    assert by_node[second]["start"] >= labelled.replace(microsecond=0), by_node[second]
    print(
        f"{second} labelled at {labelled:%T}, its Job ran {by_node[second]['start']:%T}-"
        f"{by_node[second]['end']:%T}"
    )


def test_a_node_cordoned_mid_run_is_reported_and_not_waited_on(
    workers: list[str],
    ns: Any,
    core: Any,
    custom: Any,
    batch: Any,
    dev_stack: Any,
    group: str,
    session_id: str,
    tmp_path: Any,
) -> None:
    """``parallelism: 1``; the second node is cordoned while the first Job runs."""
    first, second = workers[0], workers[1]
    tag = f"azl-e2e/cordon:{session_id}"
    _publish_archive(dev_stack, tmp_path, f"e2e-cordon-{session_id}", tag)
    for node in (first, second):
        _label(core, node, group)
    uid = _unlock(custom, ns.name, "cordon", f"e2e-cordon-{session_id}", tag, group, parallelism=1)
    log = _JobLog(batch, ns.name, uid)
    started = time.monotonic()

    def first_running(st: dict[str, Any]) -> bool:
        # the first node's Job exists and the status lists the second one as waiting
        # (a node cordoned before it was ever in the status is simply not a target)
        waiting = {n["name"]: n for n in st.get("nodes") or ()}.get(second) or {}
        return (
            any(j["node"] == first for j in log.jobs.values())
            and waiting.get("phase") == "Pending"
            and "jobName" not in waiting
        )

    _watch_until(log, custom, ns.name, "cordon", first_running, timeout=120)
    _cordon(core, second, group)
    status = _watch_until(log, custom, ns.name, "cordon", _terminal, timeout=300)
    took = time.monotonic() - started
    per_node = {item["name"]: item for item in status.get("nodes") or ()}
    assert per_node.get(first, {}).get("phase") == "Succeeded", status
    assert second in per_node, f"the cordoned node {second} is not in the status: {status}"
    assert (per_node[second]["phase"], per_node[second]["reason"]) == (
        "Failed",
        "NodeUnavailable",
    ), per_node[second]
    assert status["phase"] == "Failed" and status["failedNodes"] == [second], status
    assert not any(j["node"] == second and j.get("end") for j in log.jobs.values()), log.jobs
    print(f"cordoned {second}: terminal {status['phase']} in {took:.1f}s; {per_node[second]}")


def _node_ready(core: Any, node: str) -> bool:
    conds = {c.type: c.status for c in core.read_node(node).status.conditions or []}
    return conds.get("Ready") == "True"


def _node_takes_pods(core: Any, node: str) -> bool:
    """Ready, and the node controller has lifted its not-ready/unreachable taints."""
    found = core.read_node(node)
    tainted = any(t.effect in ("NoSchedule", "NoExecute") for t in found.spec.taints or [])
    return _node_ready(core, node) and not tainted and not found.spec.unschedulable


def test_a_node_whose_kubelet_stops_mid_run_is_reported_and_not_waited_on(
    workers: list[str],
    node_name: str,
    ns: Any,
    core: Any,
    custom: Any,
    batch: Any,
    dev_stack: Any,
    group: str,
    session_id: str,
    tmp_path: Any,
) -> None:
    """``parallelism: 2``; one node's container is paused (``docker pause``) as the unlock starts.

    Its Job is created while the API still has the node Ready, so the Job waits
    for a kubelet that does not answer. Once the node is NotReady the status
    reports it ``Failed``/``NodeUnavailable`` and the unlock ends ``Failed``
    (not at the Job's deadline). After ``docker unpause`` the same Job runs and
    the unlock ends ``Succeeded``.
    """
    # never the node the operator and the pinned tests use
    frozen = next(n for n in workers if n != node_name)
    other = next(n for n in workers if n != frozen)
    container = NodeFiles.for_node(frozen).kind_container
    if not container:
        pytest.skip(f"pausing a node needs a kind node (a Docker container); {frozen} is not one")
    tag = f"azl-e2e/frozen:{session_id}"
    _publish_archive(dev_stack, tmp_path, f"e2e-frozen-{session_id}", tag)
    for node in (other, frozen):
        _label(core, node, group)
    run(["docker", "pause", container])
    paused_at = time.monotonic()
    try:
        uid = _unlock(
            custom, ns.name, "frozen", f"e2e-frozen-{session_id}", tag, group, parallelism=2
        )
        log = _JobLog(batch, ns.name, uid)
        status = _watch_until(log, custom, ns.name, "frozen", _terminal, timeout=240)
        reported = time.monotonic() - paused_at
        per_node = {item["name"]: item for item in status.get("nodes") or ()}
        assert per_node[other]["phase"] == "Succeeded", status
        assert (per_node[frozen]["phase"], per_node[frozen]["reason"]) == (
            "Failed",
            "NodeUnavailable",
        ), per_node[frozen]
        assert status["phase"] == "Failed" and status["failedNodes"] == [frozen], status
        assert not _node_ready(core, frozen)
        assert any(j["node"] == frozen for j in log.jobs.values()), log.jobs
        print(f"{frozen} paused: reported {per_node[frozen]['reason']} after {reported:.0f}s")
    finally:
        run(["docker", "unpause", container], check=False)
    wait_for(f"{frozen} Ready again", lambda: _node_ready(core, frozen), timeout=180)

    def both_done(st: dict[str, Any]) -> bool:
        items = {n["name"]: n.get("phase") for n in st.get("nodes") or ()}
        return items == {other: "Succeeded", frozen: "Succeeded"} and st.get("phase") == "Succeeded"

    status = _watch_until(log, custom, ns.name, "frozen", both_done, timeout=240)
    assert status["succeeded"] == 2, status
    assert len({j["node"] for j in log.jobs.values()}) == len(log.jobs) == 2, log.jobs
    # as before the test, for the next ones (the node controller lifts the taints a bit later)
    wait_for(f"{frozen} untainted", lambda: _node_takes_pods(core, frozen), timeout=180)
    print(f"{frozen} back after {time.monotonic() - paused_at:.0f}s; its Job finished the unlock")


def _default_storage_class(k8s: Any) -> str | None:
    storage = k8s.client.StorageV1Api()
    for sc in storage.list_storage_class().items:
        notes = sc.metadata.annotations or {}
        if notes.get("storageclass.kubernetes.io/is-default-class") == "true":
            if sc.volume_binding_mode == "WaitForFirstConsumer":
                return str(sc.metadata.name)
    return None


def test_a_resource_on_a_claim_bound_to_one_node_runs_there(
    workers: list[str],
    node_name: str,
    k8s: Any,
    ns: Any,
    core: Any,
    custom: Any,
    batch: Any,
    dev_stack: Any,
    group: str,
    session_id: str,
    image: str,
    tmp_path: Any,
) -> None:
    """A node-local volume (local-path, bound on one worker) decides where the Resource's Job runs.

    The Resource's nodeSelector matches both workers; the claim's volume was
    provisioned on the one that is not the tests' default node, and the Job must
    run there and leave the file in that node's volume directory.
    """
    storage_class = _default_storage_class(k8s)
    if storage_class is None:
        pytest.skip("needs a default StorageClass with WaitForFirstConsumer (kind's local-path)")
    bound_to = next(n for n in workers if n != node_name)
    for node in workers:
        _label(core, node, group)
    core.create_namespaced_persistent_volume_claim(
        ns.name,
        {
            "metadata": {"name": "local"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "64Mi"}},
            },
        },
    )
    # A first consumer on ``bound_to`` has the volume provisioned there.
    core.create_namespaced_pod(
        ns.name,
        {
            "metadata": {"name": "bind-volume"},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"kubernetes.io/hostname": bound_to},
                "containers": [
                    {
                        "name": "touch",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "true"],
                        "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                    }
                ],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "local"}}],
            },
        },
    )
    wait_for(
        "the bind pod Succeeded",
        lambda: core.read_namespaced_pod("bind-volume", ns.name).status.phase == "Succeeded",
        timeout=180,
    )
    claim = core.read_namespaced_persistent_volume_claim("local", ns.name)
    pv = core.read_persistent_volume(claim.spec.volume_name)
    terms = pv.spec.node_affinity.required.node_selector_terms
    assert [v for t in terms for e in t.match_expressions for v in e.values] == [bound_to], terms
    core.delete_namespaced_pod("bind-volume", ns.name, grace_period_seconds=0)

    data = os.urandom(200_000)
    name = f"e2e-local-{session_id}"
    _publish(dev_stack, tmp_path, name, data)
    created = custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        ns.name,
        "resources",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Resource",
            "metadata": {"name": "local"},
            "spec": {
                "source": {"folder": FOLDER, "name": name, "version": "1"},
                "target": {
                    "fileName": "model.bin",
                    "persistentVolumeClaim": {"claimName": "local"},
                },
                "job": {"backoffLimit": 1, "activeDeadlineSeconds": 300},
                "nodeSelector": {LABEL: group},
            },
        },
    )

    def phase() -> str | None:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, ns.name, "resources", "local")
        found = (obj.get("status") or {}).get("phase")
        return found if found in ("Succeeded", "Failed") else None

    assert wait_for("the Resource done", phase, timeout=240) == "Succeeded"
    [job] = batch.list_namespaced_job(
        ns.name, label_selector=f"{OWNER_UID}={created['metadata']['uid']}"
    ).items
    pods = core.list_namespaced_pod(ns.name, label_selector=f"job-name={job.metadata.name}").items
    assert {p.spec.node_name for p in pods} == {bound_to}, [p.spec.node_name for p in pods]
    host_dir = (pv.spec.host_path or pv.spec.local).path
    on_node = NodeFiles.for_node(bound_to)
    assert on_node.read_bytes(pathlib.Path(host_dir) / "model.bin") == data
    print(f"Resource on a volume bound to {bound_to} ran there; file in {host_dir}")
