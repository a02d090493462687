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
    api_env,
    container,
    container_security,
    fetch_mounts,
    fetch_volumes,
    job_manifest,
    log_env,
    mount,
    scratch,
)
from azaion_operator.errors import KubeForbiddenError, KubeNotFoundError, SpecError
from azaion_operator.kubeapi import KubeApi
from azaion_operator.memory import Once
from azaion_operator.names import job_name
from azaion_operator.nodes import NodeInfo, eligible_nodes, nodes_matching, pick_node
from azaion_operator.policy import resource_denial
from azaion_operator.reconcile import (
    Event,
    Report,
    check_credentials,
    delete_stale,
    enforce,
    ensure_job,
    finished,
    pods_of,
    split_jobs,
    transition_events,
)
from azaion_operator.settings import OperatorSettings
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
    meta = resource["metadata"]
    spec = resource["spec"]
    source = spec["source"]
    target = spec["target"]
    out = f"{TARGET_DIR}/{target['fileName']}"
    # The namespace's own ids (the admin's): another tenant's Jobs cannot
    # overwrite a file this one delivered to a node directory.
    identity = settings.job_identity(meta["namespace"])

    if "persistentVolumeClaim" in target:
        pvc = target["persistentVolumeClaim"]
        target_volume: dict[str, Any] = {
            "name": "target",
            "persistentVolumeClaim": {"claimName": pvc["claimName"]},
        }
        sub_path = pvc.get("subPath")
    else:
        target_volume = {
            "name": "target",
            "hostPath": {"path": target["hostPath"]["path"], "type": "DirectoryOrCreate"},
        }
        sub_path = None

    fetch_args = ["loader", "fetch", "--folder", source["folder"], "--name", source["name"]]
    if source.get("version"):
        fetch_args += ["--version", str(source["version"])]
    fetch_args += ["--out", out, "--json", "--result-file", f"{RESULTS_DIR}/fetch.json"]

    fetch = container(
        "fetch",
        fetch_args,
        env=api_env(spec, node, settings),
        mounts=[
            mount("target", TARGET_DIR, read_only=False, sub_path=sub_path),
            mount("results", RESULTS_DIR, read_only=False),
            mount("tmp", "/tmp", read_only=False),
            *fetch_mounts(settings),
        ],
        security=container_security(identity),
        spec=spec,
        settings=settings,
    )
    verify = container(
        "verify",
        ["python3", "-c", VERIFY_SHIM, f"{RESULTS_DIR}/fetch.json", out, TERMINATION_LOG],
        env=[{"name": "HOME", "value": "/tmp"}, *log_env(settings)],
        mounts=[
            mount("target", TARGET_DIR, read_only=True, sub_path=sub_path),
            mount("results", RESULTS_DIR, read_only=True),
            mount("tmp", "/tmp", read_only=False),
        ],
        security=container_security(identity),
        spec=spec,
        settings=settings,
    )
    name = job_name(
        prefix="res",
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
    )
    return job_manifest(
        resource,
        name=name,
        component="resource-job",
        node=node,
        settings=settings,
        pod_spec={
            "initContainers": [fetch],
            "containers": [verify],
            "volumes": [
                target_volume,
                scratch("results", "1Mi"),
                scratch("tmp", "64Mi"),
                *fetch_volumes(spec, settings),
            ],
        },
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
        raise SpecError(
            "no Ready Linux node matches spec.nodeSelector and tolerates its taints "
            f"({len(nodes)} nodes known)",
            reason="NoMatchingNode",
        )
    return chosen


def reconcile_resource(
    kube: KubeApi,
    settings: OperatorSettings,
    body: Mapping[str, Any],
    nodes: Sequence[NodeInfo],
    *,
    now: str,
    warned: Once | None = None,
) -> Report:
    """Ensure the one Job of a ``Resource``'s current generation; its status and Events.

    ``warned``: the warnings this process gave already (``None``: a fresh record).
    """
    meta, spec = body["metadata"], body["spec"]
    namespace, uid = meta["namespace"], meta["uid"]
    generation = int(meta.get("generation", 1))
    old = body.get("status") or {}
    if finished(old, generation):
        return Report(None, [])
    enforce(
        resource_denial(
            spec, settings.api_url, settings.policy, default_secret=settings.credentials_secret
        )
    )

    # A first generation with no Job recorded cannot have Jobs of older
    # generations to delete: skip the listing and create at once (a 409 adopts
    # the Job of an earlier run that was interrupted before writing status).
    fresh = generation == 1 and not old.get("jobName")
    jobs = [] if fresh else kube.list_jobs(namespace, {crd.LABEL_OWNER_UID: uid})
    current, stale = split_jobs(jobs, generation)
    events = delete_stale(kube, namespace, stale)

    if current:
        job: Mapping[str, Any] = current[0]
        created = False
    else:
        check_credentials(kube, namespace, spec, settings)
        node = _resource_node(kube, body, nodes, warned or Once())
        job, created = ensure_job(kube, build_resource_job(body, node, settings), uid)
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
        outcome = job_outcome(job, pods_of(pods, job), steps=RESOURCE_STEPS)
    old_phase = old.get("phase") if old.get("observedGeneration") == generation else None
    events += transition_events(old_phase, outcome, f"Job {job_meta['name']}")
    status = resource_status(
        generation=generation,
        node=node_name,
        job_name=job_meta["name"],
        outcome=outcome,
        previous=old,
        now=now,
    )
    return Report(status, events)


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
