"""The kopf handlers: when to reconcile, and what to do with the outcome.

- ``Resource`` / ``ImageUnlock`` created, changed or found at start-up: reconcile
  (``kopf.PermanentError`` for a spec the operator cannot serve, with ``Failed``
  status and a Warning Event; ``kopf.TemporaryError`` with a delay for API trouble).
- A Job of ours changes state: reconcile its owner (status flows back, and an
  ``ImageUnlock`` starts its next nodes).
- A Node joins, leaves, or changes readiness, labels or taints: reconcile every
  ``ImageUnlock`` (and every ``Resource`` still waiting for a node), once per
  burst of such changes (``memory.Coalescer``).
- Every ``resync_seconds``: reconcile everything not finished (a safety net for
  missed events; a Secret created after the fact is picked up here).

Reconciles of one object never run at the same time (a lock per uid).  While
change handlers run (a burst of new objects), follow-ups wait a little: new
objects get their Jobs first, status refreshes come after.  Run with
``azaion-operator`` or ``kopf run -m azaion_operator.handlers``.

State: nothing at module level.  kopf's ``memo`` carries the API client, the
settings and the shared :class:`~azaion_operator.memory.OperatorMemory` (made
at start-up); a Job's or a Node's last seen state is kept in that object's own
memo.  The API is reached only through ``memo.kube``, a
:class:`~azaion_operator.kubeapi.KubeApi` (an in-memory fake in unit tests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import kopf

from azaion_operator import crd
from azaion_operator.diffbase import StatusDiffBaseStorage, StatusProgressStorage
from azaion_operator.errors import KubeError, KubeNotFoundError, SpecError
from azaion_operator.kinds import KINDS
from azaion_operator.kube import KubeClient
from azaion_operator.kubeapi import KubeApi
from azaion_operator.memory import OperatorMemory
from azaion_operator.metrics import Metrics, observations
from azaion_operator.nodes import NodeInfo, node_info
from azaion_operator.reconcile import Event, Report
from azaion_operator.settings import OperatorSettings
from azaion_operator.status import FAILED, failed_status, status_patch

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRY_DELAY = 10.0
_FOLLOWUP_PATIENCE = 10.0
"""How long a follow-up waits for a quiet moment (no new objects) before it goes anyway."""


async def _in_thread(
    executor: concurrent.futures.Executor | None, call: Callable[..., T], *args: Any
) -> T:
    """Run ``call(*args)`` in ``executor`` (``None``: the loop's default) with this context.

    kopf.event finds the object's event queue in kopf's context variables, which
    ``run_in_executor`` (unlike kopf's own handler threads) does not carry over:
    without the copy, Events posted from the thread were lost.
    """
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, call, *args)


def open_kube(pool_size: int) -> KubeApi:
    """The real API client (mypy checks here that it satisfies ``KubeApi``)."""
    return KubeClient.from_environment(pool_size=pool_size)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A kopf body (a read-only view) as plain dicts."""
    return {key: body[key] for key in body}


def _nodes(node_index: kopf.Index) -> list[NodeInfo]:
    return [info for store in node_index.values() for info in store]


# --- start-up -----------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """All kopf tuning in one place, and the operator's own settings and API client."""
    ours = OperatorSettings.from_env(os.environ)
    memo.settings = ours
    memo.memory = OperatorMemory()
    # Reconciles that follow a Job's progress run in a smaller pool of their own,
    # so a burst of new custom resources gets its Jobs first (the follow-ups only
    # refresh status).  The API client's connection pool serves both pools.
    followers = max(2, ours.workers // 4)
    memo.followups = concurrent.futures.ThreadPoolExecutor(
        max_workers=followers, thread_name_prefix="azaion-followup"
    )
    memo.kube = open_kube(ours.workers + followers)
    memo.metrics = Metrics(probe=memo.kube.reachable)
    if ours.metrics_port:
        memo.metrics.serve("0.0.0.0", ours.metrics_port)

    # kopf's bookkeeping lives in status.kopf (the CRDs keep that field): the
    # diff base rides on our own status patch, so a handled object costs one
    # status write, not a status write plus an annotation write (diffbase.py).
    settings.persistence.progress_storage = StatusProgressStorage()
    memo.diffbase = StatusDiffBaseStorage()
    settings.persistence.diffbase_storage = memo.diffbase
    # Synchronous handlers run in this many threads; the API client's pool matches.
    settings.execution.max_workers = ours.workers
    # We post our own Events for each step; kopf turns only warnings and
    # errors of its logger into Events, so a retry storm cannot flood them.
    settings.posting.level = logging.WARNING
    # Watches are re-opened regularly so a silently dropped connection is noticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Each API request from kopf itself (patches, events) gives up after this.
    settings.networking.request_timeout = 60
    # Events of one object are batched briefly so bursts cost one handler run
    # (follow-ups are coalesced per owner on top of this, see job_event).
    settings.batching.batch_window = 0.1
    # Peering is chosen on the command line / by main (standalone by default).
    memo.resync = asyncio.get_running_loop().create_task(_resync_forever(memo))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the resync loop and close the API client's pool."""
    task = getattr(memo, "resync", None)
    if task is not None:
        task.cancel()
    followups = getattr(memo, "followups", None)
    if followups is not None:
        followups.shutdown(wait=False, cancel_futures=True)
    kube = getattr(memo, "kube", None)
    if kube is not None:
        kube.close()
    metrics = getattr(memo, "metrics", None)
    if metrics is not None:
        metrics.close()


@kopf.index("", "v1", "nodes")
def node_index(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeInfo]:
    """Every Node as a ``NodeInfo`` (kept by kopf's watch, so handlers never list Nodes)."""
    return {name: node_info(_plain(body))}


# --- one reconcile, three ways to report it ------------------------------------


def _post(body: Mapping[str, Any], report: Report) -> None:
    for event in report.events:
        kopf.event(cast(Any, body), type=event.type, reason=event.reason, message=event.message)


def _apply(
    memo: kopf.Memo,
    kind: str,
    body: Mapping[str, Any],
    report: Report,
    diffbase: StatusDiffBaseStorage | None = None,
) -> None:
    """Write the report's status (with kopf's diff base when ``diffbase``), post its Events,
    count what changed."""
    kube: KubeApi = memo.kube
    plural = KINDS[kind].plural
    meta = body["metadata"]
    if report.status is not None:
        patch = status_patch(body.get("status") or {}, report.status)
        if patch is not None:
            handled = diffbase.status_fields(body) if diffbase is not None else None
            kube.patch_status(plural, meta["namespace"], meta["name"], {**patch, **(handled or {})})
            if diffbase is not None and handled is not None:
                diffbase.written(meta["uid"], handled)
    created = sum(1 for e in report.events if e.reason == "JobCreated")
    memo.metrics.record(
        observations(
            kind,
            body,
            report.status,
            jobs_created=created,
            now=datetime.datetime.now(datetime.UTC),
        )
    )
    _post(body, report)


def _fail(memo: kopf.Memo, kind: str, body: Mapping[str, Any], error: SpecError) -> None:
    """Record a spec the operator cannot serve: Failed status and a Warning Event (once)."""
    meta = body["metadata"]
    old = body.get("status") or {}
    status = failed_status(
        generation=int(meta.get("generation", 1)),
        reason=error.reason,
        message=error.message,
        previous=old,
        now=_now(),
    )
    again = old.get("phase") == FAILED and old.get("message") == status["message"]
    events = [] if again else [Event("Warning", error.reason, error.message)]
    _apply(memo, kind, body, Report(status, events))


def reconcile(
    memo: kopf.Memo,
    kind: str,
    body: Mapping[str, Any],
    nodes: Sequence[NodeInfo],
    *,
    handler: bool = False,
) -> None:
    """Reconcile one custom resource; raises ``SpecError`` / ``KubeError`` after recording them.

    ``handler``: called from kopf's change handler for this very ``body``, so
    the status patch may record it as handled (kopf's diff base).
    """
    kube: KubeApi = memo.kube
    settings: OperatorSettings = memo.settings
    memory: OperatorMemory = memo.memory
    reconciler = KINDS[kind].reconcile
    metrics: Metrics = memo.metrics
    with memory.locks.hold(body["metadata"]["uid"]):
        try:
            report = reconciler(kube, settings, body, nodes, now=_now(), warned=memory.warned)
        except SpecError as error:
            metrics.reconciled(kind, "spec_error")
            _fail(memo, kind, body, error)
            raise
        except KubeError:
            metrics.reconciled(kind, "api_error")
            raise
        metrics.reconciled(kind, "ok")
        _apply(memo, kind, body, report, memo.diffbase if handler else None)


def _on_change(memo: kopf.Memo, kind: str, body: kopf.Body, node_index: kopf.Index) -> None:
    """Reconcile from a kopf change handler: sort errors into kopf's two kinds."""
    memory: OperatorMemory = memo.memory
    try:
        with memory.gate.busy():
            reconcile(memo, kind, _plain(body), _nodes(node_index), handler=True)
    except SpecError as error:
        raise kopf.PermanentError(error.message) from error
    except KubeError as error:
        if error.transient:
            raise kopf.TemporaryError(error.message, delay=_RETRY_DELAY) from error
        raise kopf.PermanentError(error.message) from error


def _quietly(
    memo: kopf.Memo, kind: str, body: Mapping[str, Any], nodes: Sequence[NodeInfo]
) -> None:
    """Reconcile from an event, a node change or the resync loop: errors are logged only
    (the status already says what is wrong; the next event or resync tries again)."""
    meta = body["metadata"]
    try:
        reconcile(memo, kind, body, nodes)
    except SpecError as error:
        log.info("%s %s/%s: %s", kind, meta["namespace"], meta["name"], error.message)
    except KubeError as error:
        log.warning("%s %s/%s: %s", kind, meta["namespace"], meta["name"], error.message)


# --- Resource and ImageUnlock ----------------------------------------------------


@kopf.on.resume(crd.GROUP, crd.VERSION, crd.RESOURCE_PLURAL)
@kopf.on.create(crd.GROUP, crd.VERSION, crd.RESOURCE_PLURAL)
@kopf.on.update(crd.GROUP, crd.VERSION, crd.RESOURCE_PLURAL)
def resource_changed(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """A Resource appeared, changed (spec, labels, annotations) or was found at start-up."""
    _on_change(memo, crd.RESOURCE_KIND, body, kwargs["node_index"])


@kopf.on.resume(crd.GROUP, crd.VERSION, crd.UNLOCK_PLURAL)
@kopf.on.create(crd.GROUP, crd.VERSION, crd.UNLOCK_PLURAL)
@kopf.on.update(crd.GROUP, crd.VERSION, crd.UNLOCK_PLURAL)
def unlock_changed(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """An ImageUnlock appeared, changed or was found at start-up."""
    _on_change(memo, crd.UNLOCK_KIND, body, kwargs["node_index"])


# --- Jobs ------------------------------------------------------------------------


def _job_state(body: Mapping[str, Any]) -> tuple[Any, ...]:
    status = body.get("status") or {}
    conditions = tuple(
        sorted(
            c.get("type", "") for c in status.get("conditions") or () if c.get("status") == "True"
        )
    )
    return (
        status.get("active") or 0,
        status.get("ready") or 0,
        status.get("succeeded") or 0,
        status.get("failed") or 0,
        conditions,
    )


@kopf.on.event("batch", "v1", "jobs", labels={crd.LABEL_MANAGED_BY: crd.MANAGED_BY})
async def job_event(type: str, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """A Job of ours changed: reconcile its owner when its state really moved.

    The check runs on the event loop (most Job events change nothing that
    matters); only a real move costs a reconcile, in the follow-up pool.  The
    Job's last state is kept in its own memo (kopf forgets it with the Job).
    """
    meta = body.get("metadata") or {}
    if type == "DELETED":
        memo.pop("job_state", None)
    else:
        state = _job_state(body)
        before = memo.get("job_state")
        memo.job_state = state
        # The listing at start-up is covered by the resume handlers; a fresh Job
        # with no pod yet was just reported by the reconcile that created it.
        if type is None or state == before or state == (0, 0, 0, 0, ()):
            return
    labels = meta.get("labels") or {}
    kind = labels.get(crd.LABEL_OWNER_KIND)
    if kind not in KINDS:
        return
    owner = next(
        (ref for ref in meta.get("ownerReferences") or () if ref.get("kind") == kind), None
    )
    if owner is None:
        return
    # One queued follow-up per owner is enough: it reads the owner afresh.
    memory: OperatorMemory = memo.memory
    if not memory.followups.add(str(owner.get("uid"))):
        return
    nodes = _nodes(kwargs["node_index"])
    await _in_thread(
        memo.followups,
        _reconcile_owner,
        memo,
        kind,
        meta["namespace"],
        meta["name"],
        owner,
        nodes,
    )


def _reconcile_owner(
    memo: kopf.Memo,
    kind: str,
    namespace: str,
    job_name: str,
    owner: Mapping[str, Any],
    nodes: Sequence[NodeInfo],
) -> None:
    kube: KubeApi = memo.kube
    memory: OperatorMemory = memo.memory
    memory.gate.wait_quiet(_FOLLOWUP_PATIENCE)
    memory.followups.discard(str(owner.get("uid")))
    try:
        parent = kube.get_custom(KINDS[kind].plural, namespace, owner["name"])
    except KubeNotFoundError:
        return  # the owner is gone; the garbage collector takes the Job
    except KubeError as error:
        log.warning("Job %s/%s: cannot read its owner: %s", namespace, job_name, error)
        return
    if parent["metadata"].get("uid") != owner.get("uid"):
        return
    _quietly(memo, kind, parent, nodes)


# --- Nodes -----------------------------------------------------------------------


def _node_state(info: NodeInfo) -> tuple[Any, ...]:
    return (
        info.ready,
        info.unschedulable,
        tuple(sorted(info.labels.items())),
        tuple(sorted(tuple(sorted(t.items())) for t in info.taints)),
    )


@kopf.on.event("", "v1", "nodes")
def node_event(type: str, name: str, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """A node joined, left or changed in a way that matters: reconcile who may care.

    Changes are coalesced (``memo.memory.node_changes``): a burst of them, as when
    many nodes join, reconciles each custom resource once, after a quiet second
    (at most five after the first change).  The Node's last state is kept in its
    own memo (kopf forgets it with the Node).
    """
    node_index: kopf.Index = kwargs["node_index"]
    info: NodeInfo | None
    if type == "DELETED":
        before = memo.pop("node_state", None)
        info = state = None
    else:
        info = node_info(_plain(body))
        state = _node_state(info)
        before = memo.get("node_state")
        memo.node_state = state
    if type is None or state == before:
        return
    log.debug("node %s changed (%s)", name, type)
    memory: OperatorMemory = memo.memory
    # The reconciles run in the coalescer's thread, with this handler's context
    # (kopf.event finds its queue there, see _in_thread).
    context = contextvars.copy_context()
    memory.node_changes.add(
        name, info, lambda changes: context.run(_nodes_changed, memo, node_index, changes)
    )


def _snapshot(node_index: kopf.Index, attempts: int = 20) -> list[NodeInfo]:
    """The node index read from a thread of our own, while kopf's event loop may change
    it ("dictionary changed size during iteration" as 500 nodes joined): read again."""
    for _ in range(attempts - 1):
        try:
            return _nodes(node_index)
        except RuntimeError:
            continue
    return _nodes(node_index)


def _nodes_changed(
    memo: kopf.Memo, node_index: kopf.Index, changes: Mapping[str, NodeInfo | None]
) -> None:
    """Reconcile after ``changes`` (a node's latest ``NodeInfo``, ``None``: deleted)."""
    nodes = {n.name: n for n in _snapshot(node_index)}
    for name, info in changes.items():  # as the events told, should the index lag
        if info is None:
            nodes.pop(name, None)
        else:
            nodes[name] = info
    log.info("%d node(s) changed: reconciling ImageUnlocks", len(changes))
    _reconcile_all(memo, list(nodes.values()), only_waiting_resources=True)


# --- the resync loop -------------------------------------------------------------


def _reconcile_all(
    memo: kopf.Memo, nodes: Sequence[NodeInfo], *, only_waiting_resources: bool
) -> None:
    kube: KubeApi = memo.kube
    settings: OperatorSettings = memo.settings
    for kind, plural in ((k.name, k.plural) for k in KINDS.values()):
        try:
            items = kube.list_custom(plural, settings.namespaces)
        except KubeError as error:
            log.warning("cannot list %s: %s", plural, error)
            continue
        for item in items:
            status = item.get("status") or {}
            if (
                kind == crd.RESOURCE_KIND
                and only_waiting_resources
                and not (status.get("phase") == FAILED and not status.get("jobName"))
            ):
                continue
            _quietly(memo, kind, item, nodes)


def _resync_once(memo: kopf.Memo) -> None:
    kube: KubeApi = memo.kube
    try:
        nodes = [node_info(n) for n in kube.list_nodes()]
    except KubeError as error:
        log.warning("resync: cannot list nodes: %s", error)
        return
    _reconcile_all(memo, nodes, only_waiting_resources=False)


async def _resync_forever(memo: kopf.Memo) -> None:
    """Reconcile everything every ``resync_seconds`` (a background task, not a handler)."""
    settings: OperatorSettings = memo.settings
    while True:
        await asyncio.sleep(settings.resync_seconds)
        try:
            await _in_thread(None, _resync_once, memo)
        except Exception:  # the loop must survive anything one round runs into
            log.exception("resync round failed")
