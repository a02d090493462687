"""The ``Resource`` kind: its Job, its reconcile and its status, in one place.

A ``Resource`` delivers one file: a Job on one node whose init container
fetches, verifies, decrypts and atomically writes it into the target volume
(a PVC, or a host path the admin's policy allows) and whose main container
verifies the published file and reports its size and digest::

    init  fetch   loader fetch ... --out /target/<file>   credentials, target (rw), /results (rw),
                  CA bundle and proxy settings (if configured)
    main  verify  loader verify --file ... --sha256 <from /results/fetch.json>
                  target (ro), /results (ro); writes the termination message

The shared pieces (containers, mounts, the Job around them, conditions, the
reconcile steps every kind takes) are in ``builders``, ``status`` and
``reconcile``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from azaion_operator import crd
from azaion_operator.builders import (
    RESULTS_DIR,
    TARGET_DIR,
    TERMINATION_LOG,
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
from azaion_operator.errors import KubeForbiddenError, KubeNotFoundError, SpecError
from azaion_operator.kubeapi import KubeApi
from azaion_operator.memory import Once
from azaion_operator.nodes import NodeInfo, eligible_nodes, nodes_matching, pick_node
from azaion_operator.policy import resource_denial
from azaion_operator.reconcile import (
    JOB_CREATED,
    Event,
    Owner,
    Report,
    check_credentials,
    created_event,
    enforce,
    ensure_job,
    finished,
    job_node,
    no_matching_node,
    pods_of,
    replace_stale,
    transition_events,
)
from azaion_operator.settings import JobIdentity, OperatorSettings
from azaion_operator.status import (
    SUCCEEDED,
    TERMINAL,
    JobOutcome,
    conditions,
    job_outcome,
    one_line,
    progress_word,
)

__all__ = ["VERIFY_SHIM", "build_resource_job", "reconcile_resource", "resource_status"]

log = logging.getLogger(__name__)


# The verify container reads the digest the fetch container recorded and hands
# it to `loader verify` (the digest is not secret; exec keeps verify's exit code).
VERIFY_SHIM = (
    "import json, os, sys\n"
    "try:\n"
    "    with open(sys.argv[1], encoding='utf-8') as f:\n"
    "        sha = json.loads(f.read().strip().splitlines()[-1])['sha256']\n"
    "except (OSError, ValueError, KeyError, IndexError, TypeError) as e:\n"
    "    print('verify: no digest in %s: %s' % (sys.argv[1], e), file=sys.stderr)\n"
    "    sys.exit(3)\n"
    "os.execvp('loader', ['loader', 'verify', '--file', sys.argv[2], '--sha256', sha,"
    " '--json', '--result-file', sys.argv[3]])\n"
)


def build_resource_job(
    resource: Mapping[str, Any], node: NodeInfo, settings: OperatorSettings
) -> dict[str, Any]:
    """The Job that fetches one ``Resource`` into its target on ``node`` and verifies it."""
    meta, spec = resource["metadata"], resource["spec"]
    out = f"{TARGET_DIR}/{spec['target']['fileName']}"
    # The namespace's own ids (the admin's): another tenant's Jobs cannot
    # overwrite a file this one delivered to a node directory.
    identity = settings.job_identity(meta["namespace"])
    target_volume, sub_path = _target_volume(spec["target"])
    fetch = fetch_container(
        "fetch",
        _fetch_args(spec["source"], out),
        mounts=[
            mount("target", TARGET_DIR, read_only=False, sub_path=sub_path),
            mount("results", RESULTS_DIR, read_only=False),
        ],
        node=node,
        identity=identity,
        spec=spec,
        settings=settings,
    )
    return job_manifest(
        resource,
        name=owner_job_name(resource, "res"),
        component="resource-job",
        node=node,
        settings=settings,
        pod_spec={
            "initContainers": [fetch],
            "containers": [_verify_container(out, sub_path, identity, spec, settings)],
            "volumes": [
                target_volume,
                scratch("results", "1Mi"),
                scratch("tmp", "64Mi"),
                *fetch_volumes(spec, settings),
            ],
        },
    )


def _target_volume(target: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The volume the file is delivered to, and the sub-path of it to mount."""
    if "persistentVolumeClaim" in target:
        pvc = target["persistentVolumeClaim"]
        claim = {"name": "target", "persistentVolumeClaim": {"claimName": pvc["claimName"]}}
        return claim, pvc.get("subPath")
    host_path = {"path": target["hostPath"]["path"], "type": "DirectoryOrCreate"}
    return {"name": "target", "hostPath": host_path}, None


def _fetch_args(source: Mapping[str, Any], out: str) -> list[str]:
    args = ["loader", "fetch", "--folder", source["folder"], "--name", source["name"]]
    args += version_args(source)
    args += ["--out", out, "--json", "--result-file", f"{RESULTS_DIR}/fetch.json"]
    return args


def _verify_container(
    out: str,
    sub_path: str | None,
    identity: JobIdentity,
    spec: Mapping[str, Any],
    settings: OperatorSettings,
) -> dict[str, Any]:
    """Checks the published file against the digest the fetch recorded; no network."""
    return container(
        "verify",
        ["python3", "-c", VERIFY_SHIM, f"{RESULTS_DIR}/fetch.json", out, TERMINATION_LOG],
        env=offline_env(settings),
        mounts=[
            mount("target", TARGET_DIR, read_only=True, sub_path=sub_path),
            mount("results", RESULTS_DIR, read_only=True),
            mount("tmp", "/tmp", read_only=False),
        ],
        security=container_security(identity),
        spec=spec,
        settings=settings,
    )


RESOURCE_STEPS = {"fetch": "Fetching", "verify": "Verifying"}


SELECTED_NODE = "volume.kubernetes.io/selected-node"


def _volume_affinity(kube: KubeApi, volume: str, warned: Once) -> Mapping[str, Any] | None:
    """The required node affinity (a v1 NodeSelector) of PersistentVolume ``volume``, if any.

    A volume that is gone or that we may not read gives ``None``: the claim's
    own hints and rendezvous hashing then decide, as they did before.
    """
    try:
        pv = kube.persistent_volume(volume)
    except KubeNotFoundError:
        return None
    except KubeForbiddenError as error:
        # An RBAC gap (rbac.create=false with the old rules): told once per
        # process, not on every reconcile of every Resource.
        if warned.first("get persistentvolumes forbidden"):
            log.warning(
                "%s: node affinity of bound volumes is ignored until the operator may "
                "get persistentvolumes (cluster-wide)",
                error.message,
            )
        return None
    required = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}
    return required if required.get("nodeSelectorTerms") else None


def _resource_node(
    kube: KubeApi,
    body: Mapping[str, Any],
    nodes: Sequence[NodeInfo],
    warned: Once,
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
        affinity = _volume_affinity(kube, volume, warned) if volume and candidates else None
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
        raise no_matching_node(nodes)
    return chosen


def reconcile_resource(
    kube: KubeApi,
    settings: OperatorSettings,
    body: Mapping[str, Any],
    nodes: Sequence[NodeInfo],
    *,
    now: str,
    warned: Once | None = None,
    job: Mapping[str, Any] | None = None,
) -> Report:
    """Ensure the one Job of a ``Resource``'s current generation; its status and Events.

    ``warned``: the warnings this process gave already (``None``: a fresh record).
    ``job``: the Job as a watch event just showed it (a follow-up); when it is
    the one the status names, of the current generation, the Job listing is
    skipped (a Resource has one Job).
    """
    owner = Owner.of(body)
    if finished(owner.old, owner.generation):
        return Report(None, [])
    enforce(
        resource_denial(
            owner.spec,
            settings.api_url,
            settings.policy,
            default_secret=settings.credentials_secret,
        )
    )
    # A first generation with no Job recorded cannot have Jobs of older
    # generations to delete: skip the listing and create at once (a 409 adopts
    # the Job of an earlier run that was interrupted before writing status).
    fresh = owner.generation == 1 and not owner.old.get("jobName")
    current: list[Mapping[str, Any]]
    events: list[Event]
    if job is not None and _is_current(job, owner):
        current, events = [job], []
    else:
        current, events = ([], []) if fresh else replace_stale(kube, owner)
    if current:
        job, created = current[0], False
    else:
        job, created = _start_job(kube, settings, owner, nodes, warned or Once())
        if created:
            events.append(created_event(job, job_node(job)))
    outcome = JOB_CREATED if created else _job_outcome(kube, owner, job)
    events += transition_events(owner.old_phase, outcome, f"Job {job['metadata']['name']}")
    status = resource_status(
        generation=owner.generation,
        node=job_node(job),
        job_name=job["metadata"]["name"],
        outcome=outcome,
        previous=owner.old,
        now=now,
    )
    return Report(status, events)


def _is_current(job: Mapping[str, Any], owner: Owner) -> bool:
    """``job`` is the one the status names, of the current generation, and not going away."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    return (
        meta.get("name") == owner.old.get("jobName")
        and labels.get(crd.LABEL_OWNER_UID) == owner.uid
        and labels.get(crd.LABEL_GENERATION) == str(owner.generation)
        and not meta.get("deletionTimestamp")
    )


def _start_job(
    kube: KubeApi,
    settings: OperatorSettings,
    owner: Owner,
    nodes: Sequence[NodeInfo],
    warned: Once,
) -> tuple[Mapping[str, Any], bool]:
    """Create the Job on the node chosen for it (or adopt it); True if created."""
    check_credentials(kube, owner.namespace, owner.spec, settings)
    node = _resource_node(kube, owner.body, nodes, warned)
    return ensure_job(kube, build_resource_job(owner.body, node, settings), owner.uid)


def _job_outcome(kube: KubeApi, owner: Owner, job: Mapping[str, Any]) -> JobOutcome:
    """Where ``job`` stands, read from it and its pods."""
    pods = kube.list_pods(owner.namespace, owner.selector)
    return job_outcome(job, pods_of(pods, job), steps=RESOURCE_STEPS)


def resource_status(
    *,
    generation: int,
    node: str,
    job_name: str,
    outcome: JobOutcome,
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    """The whole ``status`` of a ``Resource`` whose Job stands at ``outcome``."""
    status: dict[str, Any] = {
        "phase": outcome.phase,
        "progress": progress_word(outcome.phase, outcome.reason),
        "observedGeneration": generation,
        "node": node,
        "jobName": job_name,
        "message": one_line(outcome.message),
        "conditions": conditions(
            phase=outcome.phase,
            reason=outcome.reason,
            message=outcome.message,
            generation=generation,
            previous=previous.get("conditions") or (),
            now=now,
        ),
    }
    if outcome.start_time:
        status["startTime"] = outcome.start_time
    if outcome.completion_time and outcome.phase in TERMINAL:
        status["completionTime"] = outcome.completion_time
    if outcome.phase == SUCCEEDED and outcome.result:
        result = {
            k: outcome.result[k]
            for k in ("size", "sha256", "path", "version")
            if k in outcome.result
        }
        if result:
            status["result"] = result
    return status
