"""The steps every kind's reconcile takes (``kinds/<kind>.py`` composes them).

A reconcile is idempotent: it lists the Jobs the owner already has (by the
owner-uid label), deletes those of older generations (:func:`delete_stale`),
creates what is missing (:func:`ensure_job`: a 409 means the Job exists and
is adopted, never duplicated) and returns a :class:`Report`, the new status
with the Events to post.  It never sleeps and never writes status itself: the
handlers do that.

A spec the admin's policy refuses (``policy.py``) raises ``SpecError`` with
reason ``PolicyDenied`` (:func:`enforce`) before anything else is read or
built.  Other permanent problems (missing Secret, no matching node, missing
volume claim) raise ``SpecError`` too; API trouble raises the ``KubeError`` kinds.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from azaion_operator import crd
from azaion_operator.builders import (
    credentials_secret_name,
)
from azaion_operator.errors import (
    KubeConflictError,
    KubeForbiddenError,
    KubeNotFoundError,
    SpecError,
)
from azaion_operator.kubeapi import KubeApi
from azaion_operator.nodes import NodeInfo
from azaion_operator.policy import Denial
from azaion_operator.settings import OperatorSettings
from azaion_operator.status import (
    FAILED,
    PENDING,
    SUCCEEDED,
    TERMINAL,
    JobOutcome,
)

__all__ = [
    "JOB_CREATED",
    "Event",
    "Owner",
    "Report",
    "check_credentials",
    "created_event",
    "delete_stale",
    "enforce",
    "ensure_job",
    "finished",
    "job_node",
    "no_matching_node",
    "pods_by_job",
    "pods_of",
    "replace_stale",
    "split_jobs",
    "transition_events",
]

log = logging.getLogger(__name__)

POLICY_DENIED = "PolicyDenied"

JOB_CREATED = JobOutcome(PENDING, "JobCreated", "the Job waits for its pod")
"""Where a Job this reconcile created (or adopted) stands."""


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


@dataclasses.dataclass(frozen=True)
class Owner:
    """What every reconcile reads of its custom resource's body."""

    body: Mapping[str, Any]
    spec: Mapping[str, Any]
    namespace: str
    uid: str
    generation: int
    old: Mapping[str, Any]
    """The status as last written (empty before the first)."""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(
            body=body,
            spec=body["spec"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation", 1)),
            old=body.get("status") or {},
        )

    @property
    def selector(self) -> dict[str, str]:
        """The label that every Job (and pod) made for this owner carries."""
        return {crd.LABEL_OWNER_UID: self.uid}

    @property
    def observed(self) -> bool:
        """The last status was written for the current generation."""
        return bool(self.old.get("observedGeneration") == self.generation)

    @property
    def old_phase(self) -> str | None:
        """The phase last written for the current generation (``None``: none yet)."""
        return self.old.get("phase") if self.observed else None


def finished(status: Mapping[str, Any], generation: int) -> bool:
    """This generation ran to an end (its Job may be gone after its TTL): nothing to do."""
    return (
        status.get("observedGeneration") == generation
        and status.get("phase") in TERMINAL
        and bool(status.get("jobName") or status.get("nodes"))
    )


def enforce(denial: Denial | None) -> None:
    """A spec the admin's policy refuses fails before any Secret is read or Job built."""
    if denial is not None:
        raise SpecError(denial.message, reason=POLICY_DENIED)


def check_credentials(
    kube: KubeApi, namespace: str, spec: Mapping[str, Any], settings: OperatorSettings
) -> None:
    name = credentials_secret_name(spec, settings)
    try:
        usable = {"email", "password"} <= kube.secret_keys(namespace, name)
    except (KubeNotFoundError, KubeForbiddenError):
        # Forbidden: a name outside the chart's RBAC resourceNames (rbac.create=false
        # with narrower rules); to the CR's author it is as unusable as a missing one.
        usable = False
    if not usable:
        # Whoever reads the status must not learn which Secrets exist or what they hold.
        raise SpecError(
            f"credentials Secret {namespace}/{name} is not usable: it needs the keys `email` "
            "and `password` (see examples/credentials-secret.yaml)",
            reason="MissingCredentials",
        )


def split_jobs(
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


def delete_stale(kube: KubeApi, namespace: str, stale: Sequence[Mapping[str, Any]]) -> list[Event]:
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


def replace_stale(kube: KubeApi, owner: Owner) -> tuple[list[Mapping[str, Any]], list[Event]]:
    """The owner's Jobs of its current generation; those of older ones are deleted."""
    jobs = kube.list_jobs(owner.namespace, owner.selector)
    current, stale = split_jobs(jobs, owner.generation)
    return current, delete_stale(kube, owner.namespace, stale)


def ensure_job(kube: KubeApi, manifest: Mapping[str, Any], owner_uid: str) -> tuple[dict, bool]:
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


def created_event(job: Mapping[str, Any], node: str) -> Event:
    return Event("Normal", "JobCreated", f"created Job {job['metadata']['name']} on {node}")


def job_node(job: Mapping[str, Any]) -> str:
    """The node a Job was built for (its annotation)."""
    notes = (job.get("metadata") or {}).get("annotations") or {}
    return notes.get(crd.ANNOTATION_NODE, "")


def no_matching_node(nodes: Sequence[NodeInfo]) -> SpecError:
    """No node can take the Job (``nodes``: all the nodes known)."""
    return SpecError(
        "no Ready Linux node matches spec.nodeSelector and tolerates its taints "
        f"({len(nodes)} nodes known)",
        reason="NoMatchingNode",
    )


def pods_of(pods: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    uid = (job.get("metadata") or {}).get("uid")
    return [
        p
        for p in pods
        if any(
            ref.get("uid") == uid for ref in (p.get("metadata") or {}).get("ownerReferences") or ()
        )
    ]


def pods_by_job(pods: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """``pods`` grouped by the uid of each Job that owns them, in one pass.

    An ``ImageUnlock`` has a Job per node: asking :func:`pods_of` per Job
    would read every pod once per Job (250,000 owner checks at 500 nodes).
    """
    owned: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        for ref in (pod.get("metadata") or {}).get("ownerReferences") or ():
            if ref.get("uid"):
                owned.setdefault(ref["uid"], []).append(pod)
    return owned


def transition_events(old_phase: str | None, outcome: JobOutcome, what: str) -> list[Event]:
    if outcome.phase == old_phase:
        return []
    if outcome.phase == SUCCEEDED:
        return [Event("Normal", "Succeeded", f"{what}: {outcome.message}")]
    if outcome.phase == FAILED:
        return [Event("Warning", outcome.reason, f"{what}: {outcome.message}")]
    return []
