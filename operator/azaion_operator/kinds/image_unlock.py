"""The ``ImageUnlock`` kind: its Job per node, its reconcile and its status, in one place.

An ``ImageUnlock`` loads one encrypted image archive into the container
runtime of every matching node (at most ``spec.parallelism`` at once)::

    init  unlock-fetch  loader unlock-fetch ... --workdir /work   credentials, /work (rw),
                        CA bundle and proxy settings (if configured)
    main  unlock-load   loader unlock-load --workdir /work        runtime socket, /work (ro);
                        no credentials, no CA bundle, no proxy: it talks to no network

``unlock-load`` runs as uid 0 with no capabilities at all when no socket group
is configured: the only identity that can open a ``root:docker 0660`` (or
containerd's ``root 0660``) socket whose group id differs from node to node.
Which runtime and socket each node gets is ``runtimes.choose_runtime``'s.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from azaion_operator import crd
from azaion_operator.builders import (
    TERMINATION_LOG,
    WORK_DIR,
    container,
    container_security,
    fetch_container,
    fetch_volumes,
    job_manifest,
    mount,
    offline_env,
    owner_job_name,
    scratch,
    version_args,
)
from azaion_operator.kubeapi import KubeApi
from azaion_operator.memory import Once
from azaion_operator.names import label_value
from azaion_operator.nodes import NodeInfo, eligible_nodes
from azaion_operator.policy import unlock_denial
from azaion_operator.reconcile import (
    JOB_CREATED,
    Event,
    Owner,
    Report,
    check_credentials,
    created_event,
    delete_stale,
    enforce,
    ensure_job,
    job_node,
    no_matching_node,
    pods_by_job,
    replace_stale,
    split_jobs,
    transition_events,
)
from azaion_operator.runtimes import (
    CONTAINERD,
    DOCKER,
    RuntimeChoice,
    UnsupportedRuntime,
    check_socket_policy,
    choose_runtime,
)
from azaion_operator.settings import JobIdentity, OperatorSettings
from azaion_operator.status import (
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    JobOutcome,
    conditions,
    job_outcome,
    one_line,
    outcome_from_item,
)

__all__ = [
    "NodeEntry",
    "build_unlock_job",
    "image_repository",
    "reconcile_unlock",
    "unlock_status",
]


RUNTIME_SOCKET = "/run/azaion-loader/runtime.sock"
"""Where the node's container-runtime socket appears in the unlock-load container."""


def image_repository(image: str) -> str:
    """``registry.local/azaion-loader`` of ``registry.local/azaion-loader:1.0@sha256:...``."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name[: name.rindex(":")]
    return name


def _socket_gid(runtime: str, settings: OperatorSettings) -> int | None:
    if runtime == CONTAINERD:
        return settings.containerd_socket_gid
    return settings.docker_socket_gid


def _runtime_security(
    runtime: str, settings: OperatorSettings, identity: JobIdentity
) -> dict[str, Any]:
    """The unlock-load container: as narrow as the runtime's socket allows."""
    if _socket_gid(runtime, settings) is not None:
        # The socket's group is known: stay non-root, reach it through that group
        # (added to the pod's supplementalGroups).
        return container_security(identity)
    context = container_security(JobIdentity(0, identity.gid, identity.fs_group))
    context["runAsNonRoot"] = False  # reads /work through its group, not as root
    return context


def build_unlock_job(
    unlock: Mapping[str, Any],
    node: NodeInfo,
    settings: OperatorSettings,
    choice: RuntimeChoice,
) -> dict[str, Any]:
    """The Job that fetches an ``ImageUnlock``'s archive and loads it into ``node``'s runtime.

    ``choice``: the runtime and its socket on the node (:func:`runtimes.choose_runtime`).
    """
    spec = unlock["spec"]
    identity = settings.job_identity(unlock["metadata"]["namespace"])
    fetch = fetch_container(
        "unlock-fetch",
        _fetch_args(spec["archive"]),
        mounts=[mount("work", WORK_DIR, read_only=False)],
        node=node,
        identity=identity,
        spec=spec,
        settings=settings,
    )
    load = container(
        "unlock-load",
        _load_args(spec, choice, settings),
        env=offline_env(settings),
        mounts=[
            mount("work", WORK_DIR, read_only=True),
            mount("tmp", "/tmp", read_only=False),
            mount("runtime-socket", RUNTIME_SOCKET, read_only=False),
        ],
        security=_runtime_security(choice.runtime, settings, identity),
        spec=spec,
        settings=settings,
    )
    job = job_manifest(
        unlock,
        name=owner_job_name(unlock, "unl", node.name),
        component="image-unlock-job",
        node=node,
        settings=settings,
        pod_spec={
            "initContainers": [fetch],
            "containers": [load],
            "volumes": _volumes(spec, settings, choice),
        },
    )
    return _for_runtime(job, choice, settings)


def _fetch_args(archive: Mapping[str, Any]) -> list[str]:
    args = ["loader", "unlock-fetch", "--archive-folder", archive["folder"]]
    args += ["--archive-name", archive["name"], *version_args(archive)]
    args += ["--workdir", WORK_DIR, "--json", "--result-file", TERMINATION_LOG]
    return args


def _load_args(
    spec: Mapping[str, Any], choice: RuntimeChoice, settings: OperatorSettings
) -> list[str]:
    args = ["loader", "unlock-load", "--workdir", WORK_DIR]
    args += ["--runtime", choice.runtime, "--socket", RUNTIME_SOCKET]
    # An archive may not replace the image the Jobs themselves run.
    args += ["--forbid-repository", image_repository(settings.job_image)]
    if choice.runtime == CONTAINERD:
        args += ["--namespace", settings.containerd_namespace]
        if spec.get("pinImages"):
            args.append("--pin")
    args += ["--json", "--result-file", TERMINATION_LOG]
    if spec.get("images"):
        args += ["--images", *[str(i) for i in spec["images"]]]
    return args


def _volumes(
    spec: Mapping[str, Any], settings: OperatorSettings, choice: RuntimeChoice
) -> list[dict[str, Any]]:
    return [
        # The encrypted archive lands here: size it by the job's ephemeral
        # storage, not by an arbitrary cap.
        {"name": "work", "emptyDir": {}},
        scratch("tmp", "64Mi"),
        *fetch_volumes(spec, settings),
        {
            "name": "runtime-socket",
            "hostPath": {"path": choice.socket_path, "type": "Socket"},
        },
    ]


def _for_runtime(
    job: dict[str, Any], choice: RuntimeChoice, settings: OperatorSettings
) -> dict[str, Any]:
    """``job`` noting its runtime and socket, in the socket's group if the admin named one."""
    job["metadata"]["annotations"].update(
        {crd.ANNOTATION_RUNTIME: choice.runtime, crd.ANNOTATION_SOCKET: choice.socket_path}
    )
    gid = _socket_gid(choice.runtime, settings)
    if gid is not None:
        pod_security = job["spec"]["template"]["spec"]["securityContext"]
        pod_security["supplementalGroups"] = [gid]
    return job


UNLOCK_STEPS = {"unlock-fetch": "Fetching", "unlock-load": "Loading"}


NODE_UNAVAILABLE = "NodeUnavailable"


# The taints Kubernetes itself adds to a cordoned or NotReady node (not the admin's).
_NODE_STATE_TAINTS = frozenset(
    {
        "node.kubernetes.io/unschedulable",
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    }
)


def _matches(node: NodeInfo, spec: Mapping[str, Any]) -> bool:
    """Whether ``node`` would be eligible if it were Ready and not cordoned."""
    relaxed = dataclasses.replace(
        node,
        ready=True,
        unschedulable=False,
        taints=tuple(t for t in node.taints if t.get("key") not in _NODE_STATE_TAINTS),
    )
    chosen = eligible_nodes(
        [relaxed],
        selector=spec.get("nodeSelector") or {},
        tolerations=spec.get("tolerations") or [],
    )
    return bool(chosen)


def _job_runtime(job: Mapping[str, Any]) -> RuntimeChoice:
    """The runtime and socket an existing unlock Job was built for (its annotations)."""
    notes = (job.get("metadata") or {}).get("annotations") or {}
    return RuntimeChoice(
        str(notes.get(crd.ANNOTATION_RUNTIME) or DOCKER),
        str(notes.get(crd.ANNOTATION_SOCKET) or ""),
    )


def reconcile_unlock(
    kube: KubeApi,
    settings: OperatorSettings,
    body: Mapping[str, Any],
    nodes: Sequence[NodeInfo],
    *,
    now: str,
    warned: Once | None = None,
    job: Mapping[str, Any] | None = None,  # every kind's reconcile takes the same arguments
) -> Report:
    """Ensure one Job per matching node (at most ``spec.parallelism`` running); status, Events.

    The status is the record of each node's outcome: once it names a node's Job as
    ended, that Job and its pods are not read again (:func:`_current_jobs`).
    """
    owner = Owner.of(body)
    enforce(
        unlock_denial(
            owner.namespace,
            owner.spec,
            settings.api_url,
            settings.policy,
            default_secret=settings.credentials_secret,
        )
    )
    check_socket_policy(owner.spec, settings)
    current, events = _current_jobs(kube, owner, nodes)
    by_node = {job_node(j): j for j in current}
    survey = _survey(owner, nodes, by_node)
    outcomes = _outcomes(kube, owner, survey, by_node)
    choices, unsupported = _choose_runtimes(owner.spec, settings, survey, outcomes)
    choices.update({n: _job_runtime(j) for n, j in by_node.items()})
    outcomes.update(unsupported)
    started, adopted, created = _start_jobs(kube, settings, owner, survey, choices, outcomes)
    outcomes.update({n: adopted.get(n, JOB_CREATED) for n in started})
    choices.update({n: _job_runtime(j) for n, j in started.items()})
    events += created
    for name, outcome in outcomes.items():
        before = survey.previous.get(name, {}).get("phase")
        events += transition_events(before, outcome, f"node {name}")
    job_names = {n: j["metadata"]["name"] for n, j in {**by_node, **started}.items()}
    entries = _entries(survey, job_names, outcomes, choices)
    status = unlock_status(
        generation=owner.generation, entries=entries, previous=owner.old, now=now
    )
    return Report(status, events + _phase_events(status, owner.old_phase))


SELECT_BY_NODE_LIMIT = 100
"""Above this many nodes, Jobs or pods are listed by owner alone, not by a set of node
labels (a selector that long costs more than the listing it saves)."""


def _previous(owner: Owner) -> dict[str, Mapping[str, Any]]:
    """The node items of the last status, if it was written for this generation."""
    return {i["name"]: i for i in (owner.old.get("nodes") or ())} if owner.observed else {}


def _recorded_end(item: Mapping[str, Any] | None, job: Mapping[str, Any] | None = None) -> bool:
    """The status records the end of this node's Job (of ``job`` itself, when given)."""
    return bool(
        item
        and item.get("phase") in TERMINAL
        and item.get("jobName")
        # a node that was unavailable keeps its Job, whose result still counts
        and item.get("reason") != NODE_UNAVAILABLE
        and (job is None or item.get("jobName") == job["metadata"]["name"])
    )


def _node_labels(names: Iterable[str]) -> tuple[str, set[str]]:
    """A set-based selector on the node label of Jobs and pods."""
    return crd.LABEL_NODE, {label_value(n) for n in names}


def _current_jobs(
    kube: KubeApi, owner: Owner, nodes: Sequence[NodeInfo]
) -> tuple[list[Mapping[str, Any]], list[Event]]:
    """The owner's Jobs of its current generation that this reconcile reads; older
    generations' Jobs are deleted.

    The first reconcile of a generation lists them all.  After that the status is the
    record: listed are the Jobs none of whose pods has succeeded (the API server
    filters: those running, waiting or failed), and the Jobs of the nodes the status
    shows as not ended (or ended as unavailable, or on a node that has left), which
    may have succeeded since.  A Job that ended since, of a node the status does not
    show with it (a status write lost), is found when its node is started again:
    its creation meets the Job and adopts it (:func:`_start_jobs`).
    """
    if not owner.observed:
        return replace_stale(kube, owner)
    jobs = kube.list_jobs(owner.namespace, owner.selector, not_succeeded=True)
    listed = {job_node(j) for j in jobs}
    known = {n.name for n in nodes}
    recheck = {
        name
        for name, item in _previous(owner).items()
        if item.get("jobName")
        and name not in listed
        and (not _recorded_end(item) or name not in known)
    }
    if len(recheck) > SELECT_BY_NODE_LIMIT:
        jobs = kube.list_jobs(owner.namespace, owner.selector)
    elif recheck:
        jobs += kube.list_jobs(owner.namespace, owner.selector, any_of=_node_labels(recheck))
    unique = list({j["metadata"]["name"]: j for j in jobs}.values())
    current, stale = split_jobs(unique, owner.generation)
    return current, delete_stale(kube, owner.namespace, stale)


@dataclasses.dataclass(frozen=True)
class _Survey:
    """The nodes an ``ImageUnlock`` covers in this reconcile, and what its status said of them."""

    known: dict[str, NodeInfo]
    eligible: dict[str, NodeInfo]
    previous: dict[str, Mapping[str, Any]]
    """The node items of the last status, if it was written for this generation."""
    done_before: set[str]
    """Nodes whose Job's end the status records, its Job not read again (or gone: its TTL)."""
    unavailable: set[str]
    """Nodes still to do that went NotReady or unschedulable before their Job started."""
    targets: list[str]


def _survey(
    owner: Owner, nodes: Sequence[NodeInfo], by_node: Mapping[str, Mapping[str, Any]]
) -> _Survey:
    spec = owner.spec
    previous = _previous(owner)
    known = {n.name: n for n in nodes}
    eligible = {
        n.name: n
        for n in eligible_nodes(
            nodes,
            selector=spec.get("nodeSelector") or {},
            tolerations=spec.get("tolerations") or [],
        )
    }
    done_before = {
        name
        for name, item in previous.items()
        if item.get("phase") in TERMINAL
        and name in known
        and name not in by_node
        # a node that was unavailable and is back gets its Job after all
        and not (item.get("reason") == NODE_UNAVAILABLE and name in eligible)
    }
    # Nodes this status listed as still to do that still match the selector but
    # went NotReady or unschedulable (cordoned) before their Job started: reported
    # as failed at once, never waited on.
    unavailable = {
        name
        for name, item in previous.items()
        if item.get("phase") not in TERMINAL
        and name in known
        and name not in eligible
        and name not in by_node
        and _matches(known[name], spec)
    }
    targets = sorted(set(eligible) | set(by_node) | done_before | unavailable)
    if not targets:
        raise no_matching_node(nodes)
    return _Survey(known, eligible, previous, done_before, unavailable, targets)


def _outcomes(
    kube: KubeApi, owner: Owner, survey: _Survey, by_node: Mapping[str, Mapping[str, Any]]
) -> dict[str, JobOutcome]:
    """Where each node with a Job, or with a recorded end, stands.

    A Job whose end the status records keeps that outcome; only the others' pods are read.
    """
    outcomes = {
        name: outcome_from_item(survey.previous[name])
        for name, job in by_node.items()
        if _recorded_end(survey.previous.get(name), job)
    }
    fresh = [name for name in by_node if name not in outcomes]
    owned = pods_by_job(_pods(kube, owner, fresh))
    for name in fresh:
        outcomes[name] = _node_job_outcome(name, by_node[name], owned, survey.known)
    for name in survey.done_before:
        outcomes[name] = outcome_from_item(survey.previous[name])
    for name in survey.unavailable:
        outcomes[name] = JobOutcome(
            FAILED,
            NODE_UNAVAILABLE,
            f"node {name} went NotReady or unschedulable before its Job started: it has not "
            "got the images (it gets its Job when it is Ready and schedulable again)",
        )
    return outcomes


def _pods(kube: KubeApi, owner: Owner, names: Sequence[str]) -> list[dict[str, Any]]:
    """The pods of the owner's Jobs on the nodes ``names``."""
    if not names:
        return []
    if len(names) > SELECT_BY_NODE_LIMIT:
        return kube.list_pods(owner.namespace, owner.selector)
    return kube.list_pods(owner.namespace, owner.selector, any_of=_node_labels(names))


def _node_job_outcome(
    name: str,
    job: Mapping[str, Any],
    owned: Mapping[str, Sequence[Mapping[str, Any]]],
    known: Mapping[str, NodeInfo],
) -> JobOutcome:
    job_uid = str((job.get("metadata") or {}).get("uid") or "")
    outcome = job_outcome(job, owned.get(job_uid, []), steps=UNLOCK_STEPS)
    if outcome.phase in TERMINAL or name not in known or known[name].ready:
        return outcome
    # Its kubelet is gone: the Job cannot finish until the node is back, so
    # the node is reported and not waited on (nor counted against
    # parallelism). The Job stays; once the node is Ready again, its
    # outcome counts as usual.
    return JobOutcome(
        FAILED,
        NODE_UNAVAILABLE,
        f"node {name} went NotReady while its Job {job['metadata']['name']} ran: "
        "not waited on (the Job stays; its result counts if the node comes back)",
    )


def _choose_runtimes(
    spec: Mapping[str, Any],
    settings: OperatorSettings,
    survey: _Survey,
    outcomes: Mapping[str, JobOutcome],
) -> tuple[dict[str, RuntimeChoice], dict[str, JobOutcome]]:
    """The runtime of each eligible node still to do, and the nodes failed for theirs."""
    choices: dict[str, RuntimeChoice] = {}
    unsupported: dict[str, JobOutcome] = {}
    for name in survey.targets:
        if name in outcomes or name not in survey.eligible:
            continue
        try:
            choices[name] = choose_runtime(spec, survey.eligible[name], settings)
        except UnsupportedRuntime as exc:
            # Decided by the node, not by time: fail that node now, never wait on it.
            unsupported[name] = JobOutcome(FAILED, "UnsupportedRuntime", str(exc))
    return choices, unsupported


def _start_jobs(
    kube: KubeApi,
    settings: OperatorSettings,
    owner: Owner,
    survey: _Survey,
    choices: Mapping[str, RuntimeChoice],
    outcomes: Mapping[str, JobOutcome],
) -> tuple[dict[str, Mapping[str, Any]], dict[str, JobOutcome], list[Event]]:
    """Create Jobs for the nodes still to do while slots are free.

    Returns the Jobs by node, the outcomes of those adopted, and the JobCreated Events.
    Adopted: a Job the status did not show was there already (the status this
    reconcile read was older than the last one written: a follow-up that read it
    before it waited for the lock; or a status write lost).  Its outcome is read
    like any other; one that has ended frees its slot again.
    """
    parallelism = int(owner.spec.get("parallelism") or 1)
    free = parallelism - sum(1 for o in outcomes.values() if o.phase not in TERMINAL)
    waiting = [n for n in survey.targets if n not in outcomes]
    started: dict[str, Mapping[str, Any]] = {}
    adopted: dict[str, JobOutcome] = {}
    events: list[Event] = []
    if not waiting or free <= 0:
        return started, adopted, events
    check_credentials(kube, owner.namespace, owner.spec, settings)
    while free > 0 and waiting:
        batch, waiting = waiting[:free], waiting[free:]
        # Reading every Job (the first reconcile of a generation) found none of these.
        existing = _existing_jobs(kube, owner, batch) if owner.observed else {}
        owned = pods_by_job(_pods(kube, owner, list(existing)))
        manifests = {
            name: build_unlock_job(owner.body, survey.eligible[name], settings, choices[name])
            for name in batch
            if name not in existing
        }
        made = _create_all(kube, owner, manifests)
        for name in batch:
            job, created = (existing[name], False) if name in existing else made[name]
            if name not in existing and not created:  # created by another hand meanwhile
                owned.update(pods_by_job(_pods(kube, owner, [name])))
            started[name] = job
            if created:
                events.append(created_event(job, name))
                outcome = JOB_CREATED
            else:
                outcome = adopted[name] = _node_job_outcome(name, job, owned, survey.known)
            if outcome.phase not in TERMINAL:
                free -= 1
    return started, adopted, events


CREATE_THREADS = 8
"""Jobs one reconcile creates at the same time: one after another, each round trip to a
busy API server (tens of ms) held the next nodes' Jobs back."""


def _create_all(
    kube: KubeApi, owner: Owner, manifests: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[dict[str, Any], bool]]:
    """``ensure_job`` for each node's manifest, up to :data:`CREATE_THREADS` at once.

    All are tried; then the first failure, if any, is raised (the Jobs created are
    found by the next reconcile and adopted).
    """
    if len(manifests) <= 1:
        return {n: ensure_job(kube, m, owner.uid) for n, m in manifests.items()}
    threads = min(CREATE_THREADS, len(manifests))
    with concurrent.futures.ThreadPoolExecutor(threads, "azaion-create") as pool:
        futures = {n: pool.submit(ensure_job, kube, m, owner.uid) for n, m in manifests.items()}
        concurrent.futures.wait(futures.values())
    return {n: f.result() for n, f in futures.items()}


def _existing_jobs(
    kube: KubeApi, owner: Owner, names: Sequence[str]
) -> dict[str, Mapping[str, Any]]:
    """The Jobs of this generation that the nodes ``names`` have already, by node."""
    listed = kube.list_jobs(owner.namespace, owner.selector, any_of=_node_labels(names))
    current, _ = split_jobs(listed, owner.generation)
    wanted = set(names)
    return {job_node(j): j for j in current if job_node(j) in wanted}


def _entries(
    survey: _Survey,
    job_names: Mapping[str, str],
    outcomes: Mapping[str, JobOutcome],
    choices: Mapping[str, RuntimeChoice],
) -> list[NodeEntry]:
    """Each target node's entry; what this reconcile did not learn, the last status says."""
    entries = []
    for name in survey.targets:
        before = survey.previous.get(name, {})
        choice = choices.get(name)
        entries.append(
            NodeEntry(
                node=name,
                job_name=job_names.get(name) or before.get("jobName"),
                outcome=outcomes.get(name),
                runtime=choice.runtime if choice is not None else before.get("runtime"),
                socket_path=(
                    choice.socket_path if choice is not None else before.get("socketPath")
                ),
            )
        )
    return entries


def _phase_events(status: Mapping[str, Any], old_phase: str | None) -> list[Event]:
    """The Event for a whole ``ImageUnlock`` that has just ended."""
    if status["phase"] == old_phase:
        return []
    if status["phase"] == SUCCEEDED:
        return [Event("Normal", "Succeeded", status["message"])]
    if status["phase"] == FAILED:
        return [Event("Warning", "NodesFailed", status["message"])]
    return []


@dataclasses.dataclass(frozen=True)
class NodeEntry:
    """One node of an ``ImageUnlock``: its Job (if any yet) and how it went."""

    node: str
    job_name: str | None
    outcome: JobOutcome | None
    runtime: str | None = None
    """The container runtime the node's Job loads into (``docker``, ``containerd``)."""
    socket_path: str | None = None
    """That runtime's socket on the node."""


def _node_item(entry: NodeEntry) -> dict[str, Any]:
    outcome = entry.outcome
    item: dict[str, Any] = {"name": entry.node, "phase": outcome.phase if outcome else PENDING}
    if entry.job_name:
        item["jobName"] = entry.job_name
    if entry.runtime:
        item["runtime"] = entry.runtime
    if entry.socket_path:
        item["socketPath"] = entry.socket_path
    if outcome is None:
        item["reason"] = "WaitingForSlot"
        item["message"] = "waits until fewer Jobs than spec.parallelism run"
        return item
    item["reason"] = outcome.reason
    item["message"] = one_line(outcome.message)
    if outcome.start_time:
        item["startTime"] = outcome.start_time
    if outcome.completion_time and outcome.phase in TERMINAL:
        item["completionTime"] = outcome.completion_time
    if outcome.phase == SUCCEEDED and outcome.result and outcome.result.get("images"):
        item["images"] = [str(i) for i in outcome.result["images"]]
    return item


def unlock_status(
    *,
    generation: int,
    entries: Sequence[NodeEntry],
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    """The whole ``status`` of an ``ImageUnlock`` from its per-node entries."""
    items = [_node_item(e) for e in sorted(entries, key=lambda e: e.node)]
    tally = _Tally.of(items)
    phase, reason, message = _verdict(tally)
    status: dict[str, Any] = {
        "phase": phase,
        "progress": f"{len(tally.succeeded)}/{tally.desired}",
        "observedGeneration": generation,
        "message": one_line(message),
        "desired": tally.desired,
        "active": len(tally.active),
        "succeeded": len(tally.succeeded),
        "failed": len(tally.failed),
        "nodes": items,
        "failedNodes": [i["name"] for i in tally.failed],
        "images": sorted({img for i in tally.succeeded for img in i.get("images", ())}),
        "conditions": conditions(
            phase=phase,
            reason=reason,
            message=message,
            generation=generation,
            previous=previous.get("conditions") or (),
            now=now,
        ),
    }
    status.update(_times(items, phase))
    return status


@dataclasses.dataclass(frozen=True)
class _Tally:
    """The node items of an ``ImageUnlock``'s status by where they stand."""

    desired: int
    succeeded: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    active: list[dict[str, Any]]
    """With a Job, pending or running."""
    waiting: list[dict[str, Any]]
    """Without a Job yet: waiting for a slot."""

    @classmethod
    def of(cls, items: list[dict[str, Any]]) -> _Tally:
        return cls(
            desired=len(items),
            succeeded=[i for i in items if i["phase"] == SUCCEEDED],
            failed=[i for i in items if i["phase"] == FAILED],
            active=[i for i in items if i["phase"] in (PENDING, RUNNING) and "jobName" in i],
            waiting=[i for i in items if "jobName" not in i and i["phase"] == PENDING],
        )


def _verdict(tally: _Tally) -> tuple[str, str, str]:
    """The phase, reason and message of the whole ``ImageUnlock``."""
    desired, succeeded, failed = tally.desired, tally.succeeded, tally.failed
    if not desired:
        message = "no Ready node matches spec.nodeSelector and tolerates its taints"
        return FAILED, "NoMatchingNode", message
    if len(succeeded) == desired:
        return SUCCEEDED, "Succeeded", f"images loaded on all {desired} nodes"
    if tally.active or tally.waiting:
        message = (
            f"{len(succeeded)}/{desired} nodes done, {len(tally.active)} running, "
            f"{len(tally.waiting)} waiting, {len(failed)} failed"
        )
        if tally.active:
            return RUNNING, "Unlocking", message
        return PENDING, "WaitingForSlot", message
    names = ", ".join(i["name"] for i in failed)
    message = f"{len(failed)}/{desired} nodes failed: {names}; first: {failed[0]['message']}"
    return FAILED, "NodesFailed", message


def _times(items: Sequence[Mapping[str, Any]], phase: str) -> dict[str, str]:
    """When the first node's Job started and, once all ended, when the last one ended."""
    times: dict[str, str] = {}
    starts = [i["startTime"] for i in items if i.get("startTime")]
    if starts:
        times["startTime"] = min(starts)
    if phase in TERMINAL:
        ends = [i["completionTime"] for i in items if i.get("completionTime")]
        if ends:
            times["completionTime"] = max(ends)
    return times
