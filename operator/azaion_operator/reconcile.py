"""Bring one custom resource's Jobs in line with its spec, and compute its status.

``reconcile_resource`` and ``reconcile_unlock`` are idempotent: they list the
Jobs the owner already has (by the owner-uid label), delete those of older
generations, create what is missing (a 409 means the Job exists: it is adopted,
never duplicated) and return the new status with the Events to post.  They
never sleep and never write status themselves: the handlers do that.

A spec the admin's policy refuses (``policy.py``) raises ``SpecError`` with
reason ``PolicyDenied`` before anything else is read or built.  Other permanent
problems (missing Secret, no matching node, missing volume claim) raise
``SpecError`` too; API trouble raises the ``KubeError`` kinds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from azaion_operator import crd
from azaion_operator.builders import (
    build_resource_job,
    build_unlock_job,
    credentials_secret_name,
)
from azaion_operator.errors import (
    KubeConflictError,
    KubeForbiddenError,
    KubeNotFoundError,
    SpecError,
)
from azaion_operator.kube import KubeClient
from azaion_operator.nodes import NodeInfo, eligible_nodes, nodes_matching, pick_node
from azaion_operator.policy import Denial, resource_denial, unlock_denial
from azaion_operator.runtimes import (
    DOCKER,
    RuntimeChoice,
    UnsupportedRuntime,
    check_socket_policy,
    choose_runtime,
)
from azaion_operator.settings import OperatorSettings
from azaion_operator.status import (
    FAILED,
    SUCCEEDED,
    TERMINAL,
    JobOutcome,
    NodeEntry,
    job_outcome,
    outcome_from_item,
    resource_status,
    unlock_status,
)

__all__ = ["Event", "Report", "reconcile_resource", "reconcile_unlock"]

log = logging.getLogger(__name__)

# an ImageUnlock node cordoned or NotReady before its Job (reported, not waited on)
NODE_UNSCHEDULABLE = "NodeUnschedulable"
# the taints Kubernetes adds for a cordoned / NotReady node (not the admin's own)
_NODE_STATE_TAINTS = frozenset(
    {
        "node.kubernetes.io/unschedulable",
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    }
)

RESOURCE_STEPS = {"fetch": "Fetching", "verify": "Verifying"}
UNLOCK_STEPS = {"unlock-fetch": "Fetching", "unlock-load": "Loading"}
SELECTED_NODE = "volume.kubernetes.io/selected-node"
POLICY_DENIED = "PolicyDenied"

# A 403 on PersistentVolumes is an RBAC gap (rbac.create=false with the old
# rules): warn once per process, not on every reconcile of every Resource.
_pv_forbidden_warned = False
_pv_forbidden_guard = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Event:
    """An Event to post on the custom resource."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Report:
    """What a reconcile found: the new status (``None``: leave it) and Events to post."""

    status: dict[str, Any] | None
    events: list[Event]


def _finished(status: Mapping[str, Any], generation: int) -> bool:
    """This generation ran to an end (its Job may be gone after its TTL): nothing to do."""
    return (
        status.get("observedGeneration") == generation
        and status.get("phase") in TERMINAL
        and bool(status.get("jobName") or status.get("nodes"))
    )


def _enforce(denial: Denial | None) -> None:
    """A spec the admin's policy refuses fails before any Secret is read or Job built."""
    if denial is not None:
        raise SpecError(denial.message, reason=POLICY_DENIED)


def _check_credentials(
    kube: KubeClient, namespace: str, spec: Mapping[str, Any], settings: OperatorSettings
) -> None:
    name = credentials_secret_name(spec, settings)
    try:
        usable = {"email", "password"} <= kube.secret_keys(namespace, name)
    except KubeNotFoundError:
        usable = False
    if not usable:
        # Whoever reads the status must not learn which Secrets exist or what they hold.
        raise SpecError(
            f"credentials Secret {namespace}/{name} is not usable: it needs the keys `email` "
            "and `password` (see examples/credentials-secret.yaml)",
            reason="MissingCredentials",
        )


def _split_jobs(
    jobs: Sequence[Mapping[str, Any]], generation: int
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    current, stale = [], []
    for job in jobs:
        labels = (job.get("metadata") or {}).get("labels") or {}
        if labels.get(crd.LABEL_GENERATION) == str(generation):
            current.append(job)
        else:
            stale.append(job)
    return current, stale


def _delete_stale(
    kube: KubeClient, namespace: str, stale: Sequence[Mapping[str, Any]]
) -> list[Event]:
    events = []
    for job in stale:
        meta = job["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        kube.delete_job(namespace, meta["name"])
        events.append(
            Event("Normal", "JobReplaced", f"deleted Job {meta['name']} of an older generation")
        )
    return events


def _ensure_job(kube: KubeClient, manifest: Mapping[str, Any], owner_uid: str) -> tuple[dict, bool]:
    """Create ``manifest``, or adopt the Job of that name if it exists; True if created."""
    meta = manifest["metadata"]
    try:
        return kube.create_job(manifest), True
    except KubeConflictError:
        existing = kube.get_job(meta["namespace"], meta["name"])
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(crd.LABEL_OWNER_UID) != owner_uid:
            raise KubeConflictError(
                f"Job {meta['namespace']}/{meta['name']} exists but belongs to another owner "
                "(an older object of the same name being deleted?)",
                status=409,
            ) from None
        log.info("adopted existing Job %s/%s", meta["namespace"], meta["name"])
        return existing, False


def _pods_of(pods: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    uid = (job.get("metadata") or {}).get("uid")
    return [
        p
        for p in pods
        if any(
            ref.get("uid") == uid for ref in (p.get("metadata") or {}).get("ownerReferences") or ()
        )
    ]


def _transition_events(old_phase: str | None, outcome: JobOutcome, what: str) -> list[Event]:
    if outcome.phase == old_phase:
        return []
    if outcome.phase == SUCCEEDED:
        return [Event("Normal", "Succeeded", f"{what}: {outcome.message}")]
    if outcome.phase == FAILED:
        return [Event("Warning", outcome.reason, f"{what}: {outcome.message}")]
    return []


def _volume_affinity(kube: KubeClient, volume: str) -> Mapping[str, Any] | None:
    """The required node affinity (a v1 NodeSelector) of PersistentVolume ``volume``, if any.

    A volume that is gone or that we may not read gives ``None``: the claim's
    own hints and rendezvous hashing then decide, as they did before.
    """
    global _pv_forbidden_warned
    try:
        pv = kube.persistent_volume(volume)
    except KubeNotFoundError:
        return None
    except KubeForbiddenError as error:
        with _pv_forbidden_guard:
            first, _pv_forbidden_warned = not _pv_forbidden_warned, True
        if first:
            log.warning(
                "%s: node affinity of bound volumes is ignored until the operator may "
                "get persistentvolumes (cluster-wide)",
                error.message,
            )
        return None
    required = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}
    return required if required.get("nodeSelectorTerms") else None


def _resource_node(
    kube: KubeClient,
    body: Mapping[str, Any],
    nodes: Sequence[NodeInfo],
) -> NodeInfo:
    """The node a Resource's Job runs on.

    Among the eligible nodes (restricted, for a claim bound to a volume with
    node affinity, to the nodes that volume can be mounted on): the claim's
    selected node, then the sticky ``status.node``, then rendezvous hashing.
    """
    meta, spec = body["metadata"], body["spec"]
    status = body.get("status") or {}
    candidates = eligible_nodes(
        nodes, selector=spec.get("nodeSelector") or {}, tolerations=spec.get("tolerations") or []
    )
    target = spec["target"]
    selected = None
    if "persistentVolumeClaim" in target:
        claim = target["persistentVolumeClaim"]["claimName"]
        try:
            pvc = kube.volume_claim(meta["namespace"], claim)
        except KubeNotFoundError:
            raise SpecError(
                f"PersistentVolumeClaim {meta['namespace']}/{claim} (spec.target."
                "persistentVolumeClaim.claimName) not found",
                reason="MissingVolumeClaim",
            ) from None
        selected = ((pvc.get("metadata") or {}).get("annotations") or {}).get(SELECTED_NODE)
        volume = (pvc.get("spec") or {}).get("volumeName")
        affinity = _volume_affinity(kube, volume) if volume and candidates else None
        if affinity is not None:
            mountable = nodes_matching(candidates, affinity)
            if not mountable:
                raise SpecError(
                    f"PersistentVolume {volume} (bound to claim {meta['namespace']}/{claim}) "
                    "can be mounted only on nodes matching its spec.nodeAffinity, and none of "
                    f"the {len(candidates)} eligible nodes does: let spec.nodeSelector and "
                    "spec.tolerations admit such a node, make it Ready and schedulable, "
                    "or use a claim on another volume",
                    reason="NoMatchingNode",
                )
            candidates = mountable
    by_name = {n.name: n for n in candidates}
    if selected in by_name:
        return by_name[selected]
    if status.get("node") in by_name:
        return by_name[status["node"]]
    chosen = pick_node(candidates, f"{meta['namespace']}/{meta['name']}")
    if chosen is None:
        raise SpecError(
            "no Ready Linux node matches spec.nodeSelector and tolerates its taints "
            f"({len(nodes)} nodes known)",
            reason="NoMatchingNode",
        )
    return chosen


def reconcile_resource(
    kube: KubeClient,
    settings: OperatorSettings,
    body: Mapping[str, Any],
    nodes: Sequence[NodeInfo],
    *,
    now: str,
) -> Report:
    """Ensure the one Job of a ``Resource``'s current generation; its status and Events."""
    meta, spec = body["metadata"], body["spec"]
    namespace, uid = meta["namespace"], meta["uid"]
    generation = int(meta.get("generation", 1))
    old = body.get("status") or {}
    if _finished(old, generation):
        return Report(None, [])
    _enforce(resource_denial(spec, settings.api_url, settings.policy))

    # A first generation with no Job recorded cannot have Jobs of older
    # generations to delete: skip the listing and create at once (a 409 adopts
    # the Job of an earlier run that was interrupted before writing status).
    fresh = generation == 1 and not old.get("jobName")
    jobs = [] if fresh else kube.list_jobs(namespace, {crd.LABEL_OWNER_UID: uid})
    current, stale = _split_jobs(jobs, generation)
    events = _delete_stale(kube, namespace, stale)

    if current:
        job: Mapping[str, Any] = current[0]
        created = False
    else:
        _check_credentials(kube, namespace, spec, settings)
        node = _resource_node(kube, body, nodes)
        job, created = _ensure_job(kube, build_resource_job(body, node, settings), uid)
        if created:
            events.append(
                Event(
                    "Normal", "JobCreated", f"created Job {job['metadata']['name']} on {node.name}"
                )
            )

    job_meta = job["metadata"]
    node_name = (job_meta.get("annotations") or {}).get(crd.ANNOTATION_NODE, "")
    if created:
        outcome = JobOutcome("Pending", "JobCreated", "the Job waits for its pod")
    else:
        pods = kube.list_pods(namespace, {crd.LABEL_OWNER_UID: uid})
        outcome = job_outcome(job, _pods_of(pods, job), steps=RESOURCE_STEPS)
    old_phase = old.get("phase") if old.get("observedGeneration") == generation else None
    events += _transition_events(old_phase, outcome, f"Job {job_meta['name']}")
    status = resource_status(
        generation=generation,
        node=node_name,
        job_name=job_meta["name"],
        outcome=outcome,
        previous=old,
        now=now,
    )
    return Report(status, events)


def _job_runtime(job: Mapping[str, Any]) -> RuntimeChoice:
    """The runtime and socket an existing unlock Job was built for (its annotations)."""
    notes = (job.get("metadata") or {}).get("annotations") or {}
    return RuntimeChoice(
        str(notes.get(crd.ANNOTATION_RUNTIME) or DOCKER),
        str(notes.get(crd.ANNOTATION_SOCKET) or ""),
    )


def reconcile_unlock(
    kube: KubeClient,
    settings: OperatorSettings,
    body: Mapping[str, Any],
    nodes: Sequence[NodeInfo],
    *,
    now: str,
) -> Report:
    """Ensure one Job per matching node (at most ``spec.parallelism`` running); status, Events."""
    meta, spec = body["metadata"], body["spec"]
    namespace, uid = meta["namespace"], meta["uid"]
    generation = int(meta.get("generation", 1))
    old = body.get("status") or {}
    parallelism = int(spec.get("parallelism") or 1)
    _enforce(unlock_denial(namespace, spec, settings.api_url, settings.policy))

    check_socket_policy(spec, settings)
    jobs = kube.list_jobs(namespace, {crd.LABEL_OWNER_UID: uid})
    current, stale = _split_jobs(jobs, generation)
    events = _delete_stale(kube, namespace, stale)
    by_node = {
        ((j.get("metadata") or {}).get("annotations") or {}).get(crd.ANNOTATION_NODE, ""): j
        for j in current
    }

    same_generation = old.get("observedGeneration") == generation
    previous = {i["name"]: i for i in (old.get("nodes") or ()) if same_generation}
    known = {n.name: n for n in nodes}
    eligible = {
        n.name: n
        for n in eligible_nodes(
            nodes,
            selector=spec.get("nodeSelector") or {},
            tolerations=spec.get("tolerations") or [],
        )
    }
    # A node of this generation's status that still matches the selector but was
    # cordoned (or went NotReady) before its Job was made: reported as failed, never
    # waited on; it gets its Job once it is eligible again.
    matching = {
        n.name
        for n in eligible_nodes(
            [
                dataclasses.replace(
                    n,
                    ready=True,
                    unschedulable=False,
                    taints=tuple(t for t in n.taints if t.get("key") not in _NODE_STATE_TAINTS),
                )
                for n in nodes
            ],
            selector=spec.get("nodeSelector") or {},
            tolerations=spec.get("tolerations") or [],
        )
    }
    blocked = {
        name
        for name, item in previous.items()
        if name in matching
        and name not in eligible
        and name not in by_node
        and (item.get("phase") not in TERMINAL or item.get("reason") == NODE_UNSCHEDULABLE)
    }
    done_before = {
        name
        for name, item in previous.items()
        if item.get("phase") in TERMINAL
        and name in known
        and name not in by_node
        and not (item.get("reason") == NODE_UNSCHEDULABLE and name in eligible)
    }
    targets = sorted(set(eligible) | set(by_node) | done_before | blocked)
    if not targets:
        raise SpecError(
            "no Ready Linux node matches spec.nodeSelector and tolerates its taints "
            f"({len(nodes)} nodes known)",
            reason="NoMatchingNode",
        )

    pods = kube.list_pods(namespace, {crd.LABEL_OWNER_UID: uid}) if by_node else []
    outcomes: dict[str, JobOutcome] = {}
    for name, job in by_node.items():
        outcomes[name] = job_outcome(job, _pods_of(pods, job), steps=UNLOCK_STEPS)
    for name in done_before:
        outcomes[name] = outcome_from_item(previous[name])
    for name in blocked:
        outcomes[name] = JobOutcome(
            FAILED,
            NODE_UNSCHEDULABLE,
            f"node {name} became unschedulable or NotReady before its Job started; no Job made",
        )

    choices = {n: _job_runtime(j) for n, j in by_node.items()}
    for name in targets:
        if name in outcomes or name not in eligible:
            continue
        try:
            choices[name] = choose_runtime(spec, eligible[name], settings)
        except UnsupportedRuntime as exc:
            # Decided by the node, not by time: fail that node now, never wait on it.
            outcomes[name] = JobOutcome(FAILED, "UnsupportedRuntime", str(exc))

    active = sum(1 for o in outcomes.values() if o.phase not in TERMINAL)
    waiting = [n for n in targets if n not in outcomes]
    job_names = {n: j["metadata"]["name"] for n, j in by_node.items()}
    if waiting and active < parallelism:
        _check_credentials(kube, namespace, spec, settings)
    for name in waiting:
        if active >= parallelism:
            break
        job, created = _ensure_job(
            kube, build_unlock_job(body, eligible[name], settings, choices[name]), uid
        )
        job_names[name] = job["metadata"]["name"]
        outcomes[name] = JobOutcome("Pending", "JobCreated", "the Job waits for its pod")
        active += 1
        if created:
            events.append(Event("Normal", "JobCreated", f"created Job {job_names[name]} on {name}"))

    for name, outcome in outcomes.items():
        before = previous.get(name, {}).get("phase")
        events += _transition_events(before, outcome, f"node {name}")
    entries = [
        NodeEntry(
            node=n,
            job_name=job_names.get(n) or previous.get(n, {}).get("jobName"),
            outcome=outcomes.get(n),
            runtime=choices[n].runtime if n in choices else previous.get(n, {}).get("runtime"),
            socket_path=(
                choices[n].socket_path if n in choices else previous.get(n, {}).get("socketPath")
            ),
        )
        for n in targets
    ]
    status = unlock_status(generation=generation, entries=entries, previous=old, now=now)
    if status["phase"] != (old.get("phase") if same_generation else None):
        if status["phase"] == SUCCEEDED:
            events.append(Event("Normal", "Succeeded", status["message"]))
        elif status["phase"] == FAILED:
            events.append(Event("Warning", "NodesFailed", status["message"]))
    return Report(status, events)
