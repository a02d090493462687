"""The kopf handlers: when to reconcile, and what to do with the outcome.

- ``Resource`` / ``ImageUnlock`` created, changed or found at start-up: reconcile
  (``kopf.PermanentError`` for a spec the operator cannot serve, with ``Failed``
  status and a Warning Event; ``kopf.TemporaryError`` with a delay for API trouble).
- A Job of ours changes state (our own watch, ``jobwatch.py``, not kopf's):
  reconcile its owner (status flows back, and an ``ImageUnlock`` starts its
  next nodes).  A ``Resource`` follow-up starts from the body our last status
  write left and the Job the watch showed: no read of the owner, no Job listing.
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
at start-up); a Node's last seen state is kept in that object's own memo, a
Job's in the Job watch.  The API is reached only through ``memo.kube``, a
:class:`~azaion_operator.kubeapi.KubeApi` (an in-memory fake in unit tests).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import datetime
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import kopf

from azaion_operator import crd
from azaion_operator.diffbase import StatusDiffBaseStorage, StatusProgressStorage
from azaion_operator.errors import KubeError, KubeNotFoundError, SpecError
from azaion_operator.jobwatch import JobWatch
from azaion_operator.kinds import KINDS
from azaion_operator.kube import KubeClient
from azaion_operator.kubeapi import KubeApi
from azaion_operator.memory import OperatorMemory
from azaion_operator.metrics import Metrics, observations
from azaion_operator.nodes import NodeInfo, node_info
from azaion_operator.reconcile import Event, Report
from azaion_operator.settings import OperatorSettings
from azaion_operator.status import FAILED, TERMINAL, failed_status, merged, status_patch

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
    for _ in range(10):
        try:
            return [info for store in list(node_index.values()) for info in store]
        except RuntimeError:  # kopf changed the index meanwhile (read from another thread)
            continue
    return [info for store in list(node_index.values()) for info in store]


# --- start-up -----------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
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
    # (No batching window: kopf 1.45 removed time-based batching, and setting
    # settings.batching.batch_window only warned; each event is processed in turn.)
    # Peering is chosen on the command line / by main (standalone by default).
    memo.resync = asyncio.get_running_loop().create_task(_resync_forever(memo))
    # kopf's live node index, for follow-ups that run outside kopf's handlers.
    memo.node_index = kwargs["node_index"]
    memo.jobwatches = start_job_watches(memo)


def start_job_watches(memo: kopf.Memo) -> list[JobWatch]:
    """Our Job watch, one per watched namespace (or one cluster-wide), already running.

    Not kopf's: through kopf each Job event cost about 2 ms of CPU (jobwatch.py).
    """
    ours: OperatorSettings = memo.settings
    watches = [
        JobWatch(
            memo.kube,
            namespace,
            {crd.LABEL_MANAGED_BY: crd.MANAGED_BY},
            lambda type, job: job_moved(memo, type, job),
            timeout=300,
        )
        for namespace in (ours.namespaces or (None,))
    ]
    for watch in watches:
        watch.start()
    return watches


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Stop the Job watches and the resync loop, and close the API client's pool."""
    for watch in getattr(memo, "jobwatches", ()):
        watch.stop()
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


def _post(kube: KubeApi, body: Mapping[str, Any], report: Report) -> None:
    """Post the report's Events: through kopf inside its handlers, else with our client.

    kopf.event needs kopf's context (its event queue), which only its handlers
    (and threads that copied their context) have; the follow-ups of our Job
    watch and the resync loop run outside it.
    """
    for event in report.events:
        try:
            kopf.event(cast(Any, body), type=event.type, reason=event.reason, message=event.message)
        except LookupError:
            try:
                kube.post_event(body, type=event.type, reason=event.reason, message=event.message)
            except KubeError as error:
                log.warning("cannot post Event %s: %s", event.reason, error.message)


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
    status = body.get("status") or {}
    if report.status is not None:
        patch = status_patch(status, report.status)
        if patch is not None:
            handled = diffbase.status_fields(body) if diffbase is not None else None
            written = {**patch, **(handled or {})}
            kube.patch_status(plural, meta["namespace"], meta["name"], written)
            status = merged(status, written)
            if diffbase is not None and handled is not None:
                diffbase.written(meta["uid"], handled)
    if KINDS[kind].follows_jobs:
        _remember(memo, body, status)
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
    _post(kube, body, report)


def _remember(memo: kopf.Memo, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    """Keep ``body`` with the status just written, for the follow-ups (while it may move)."""
    memory: OperatorMemory = memo.memory
    uid = str(body["metadata"]["uid"])
    if status.get("phase") in TERMINAL:
        memory.bodies.drop(uid)
        return
    meta = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
    memory.bodies.put(
        uid,
        {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": copy.deepcopy(meta),
            "spec": copy.deepcopy(body["spec"]),
            "status": copy.deepcopy(dict(status)),
        },
    )


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
    memory: OperatorMemory = memo.memory
    with memory.locks.hold(body["metadata"]["uid"]):
        _reconcile_held(memo, kind, body, nodes, handler=handler)


def _reconcile_held(
    memo: kopf.Memo,
    kind: str,
    body: Mapping[str, Any],
    nodes: Sequence[NodeInfo],
    *,
    handler: bool = False,
    job: Mapping[str, Any] | None = None,
) -> None:
    """:func:`reconcile` with the object's lock held; ``job``: the Job a watch event showed."""
    kube: KubeApi = memo.kube
    settings: OperatorSettings = memo.settings
    memory: OperatorMemory = memo.memory
    metrics: Metrics = memo.metrics
    of_kind = KINDS[kind]
    try:
        report = of_kind.reconcile(
            kube,
            settings,
            body,
            nodes,
            now=_now(),
            warned=memory.warned,
            job=job if of_kind.follows_jobs else None,
        )
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


def job_moved(memo: kopf.Memo, type: str, job: Mapping[str, Any]) -> None:
    """Our Job watch saw a Job of ours move (``jobwatch.py``): queue its owner's follow-up.

    Runs on the watch's thread; the reconcile runs in the follow-up pool.  One
    queued follow-up per owner is enough: it starts from the latest Job seen.
    """
    meta = job.get("metadata") or {}
    kind = (meta.get("labels") or {}).get(crd.LABEL_OWNER_KIND)
    if kind not in KINDS:
        return
    owner = next(
        (ref for ref in meta.get("ownerReferences") or () if ref.get("kind") == kind), None
    )
    if owner is None:
        return
    memory: OperatorMemory = memo.memory
    uid = str(owner.get("uid"))
    if type == "DELETED":
        memory.bodies.drop(uid)  # the owner may be gone too; a follow-up reads it afresh
    if not memory.followups.add(uid, None if type == "DELETED" else job):
        return
    memo.followups.submit(
        _reconcile_owner, memo, kind, meta["namespace"], meta["name"], dict(owner)
    )


def _reconcile_owner(
    memo: kopf.Memo, kind: str, namespace: str, job_name: str, owner: Mapping[str, Any]
) -> None:
    memory: OperatorMemory = memo.memory
    memory.gate.wait_quiet(_FOLLOWUP_PATIENCE)
    uid = str(owner.get("uid"))
    job = memory.followups.take(uid)
    nodes = _nodes(memo.node_index)
    try:
        with memory.locks.hold(uid):
            parent = _owner_body(memo, kind, namespace, owner, job)
            if parent is None:
                return
            _reconcile_held(memo, kind, parent, nodes, job=job)
    except SpecError as error:
        log.info("%s %s/%s: %s", kind, namespace, owner.get("name"), error.message)
    except KubeNotFoundError:
        memory.bodies.drop(uid)  # the owner went meanwhile; the garbage collector takes the Job
    except KubeError as error:
        log.warning("%s %s/%s: %s", kind, namespace, owner.get("name"), error.message)
    except Exception:  # a pool thread's failure would otherwise go unseen
        log.exception(
            "follow-up of %s %s/%s (Job %s) failed", kind, namespace, owner.get("name"), job_name
        )


def _owner_body(
    memo: kopf.Memo,
    kind: str,
    namespace: str,
    owner: Mapping[str, Any],
    job: Mapping[str, Any] | None,
) -> Mapping[str, Any] | None:
    """The owner as our last status write left it, if that covers ``job``; else read afresh.

    ``None``: the owner is gone or replaced (the garbage collector takes the Job).
    """
    memory: OperatorMemory = memo.memory
    uid = str(owner.get("uid"))
    if job is not None and KINDS[kind].follows_jobs:
        known = memory.bodies.get(uid)
        labels = (job.get("metadata") or {}).get("labels") or {}
        if known is not None and str(known["metadata"].get("generation", 1)) == labels.get(
            crd.LABEL_GENERATION
        ):
            return known
    kube: KubeApi = memo.kube
    try:
        parent = kube.get_custom(KINDS[kind].plural, namespace, owner["name"])
    except KubeNotFoundError:
        return None
    if parent["metadata"].get("uid") != owner.get("uid"):
        return None
    return parent


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
