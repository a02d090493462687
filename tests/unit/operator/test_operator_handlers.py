"""What the kopf handlers decide, called as kopf calls them, over the in-memory ``KubeApi``.

Errors sorted into kopf's two kinds, status and Events recorded, Job and Node
events filtered and coalesced, per-object state kept in each object's memo.
The real handlers run under kopf in ``tests/e2e/operator/test_operator_kopf_runner.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import logging
import types
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import polling
import pytest
from kube_support import FakeKube

from azaion_operator import crd, handlers
from azaion_operator.diffbase import StatusDiffBaseStorage
from azaion_operator.errors import KubeForbiddenError, KubeUnavailableError
from azaion_operator.kinds import resource as resource_kind
from azaion_operator.memory import Coalescer, OperatorMemory
from azaion_operator.metrics import Metrics
from azaion_operator.nodes import NodeInfo
from azaion_operator.policy import Policy
from azaion_operator.settings import OperatorSettings

SETTINGS = OperatorSettings(
    api_url="https://api.example",
    # The conftest's objects name the credentials Secret "creds".
    policy=Policy(image_unlock_namespaces=("edge",), credentials_secrets=("creds",)),
)
Posted = list[tuple[str, str, str]]
_KOPF_EVENT = kopf.event


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> Posted:
    """The Events the handlers post through ``kopf.event``."""
    events: Posted = []

    def event(body: Any, *, type: str, reason: str, message: str) -> None:
        events.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", event)
    return events


@pytest.fixture
def fake() -> FakeKube:
    kube = FakeKube()
    kube.add_secret("edge", "creds", ["email", "password"])
    kube.add_secret("edge", "azaion-loader-credentials", ["email", "password"])
    kube.add_claim("edge", "models")
    return kube


class _Inline:
    """The follow-up pool, run inline: a follow-up is done when ``submit`` returns.

    Like the real pool's threads, it runs outside kopf's context."""

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        contextvars.Context().run(call, *args)


@pytest.fixture
def memo(fake: FakeKube, node: NodeInfo) -> Iterator[kopf.Memo]:
    """The operator's memo as ``handlers.configure`` fills it, with the fake API."""
    memo = kopf.Memo()
    memo.settings = SETTINGS
    # Node changes are served after a short quiet moment (a second in the operator).
    memo.memory = OperatorMemory(node_changes=Coalescer(quiet=0.05, patience=0.5))
    memo.kube = fake
    memo.metrics = Metrics(probe=fake.reachable)
    memo.diffbase = StatusDiffBaseStorage()
    memo.followups = _Inline()
    memo.node_index = _index(node)
    yield memo


def _index(*nodes: NodeInfo) -> dict[str, list[NodeInfo]]:
    """kopf's node index as the handlers read it: each node's store holds its NodeInfo."""
    return {n.name: [n] for n in nodes}


def _stored(fake: FakeKube, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return fake.custom[(plural, meta["namespace"], meta["name"])]


def _object_memo(memo: kopf.Memo) -> kopf.Memo:
    """A watched object's memo: kopf gives each object a shallow copy of the operator's."""
    return copy.copy(memo)


# --- change handlers: errors sorted into kopf's two kinds ---------------------------


def test_a_spec_that_cannot_be_served_is_permanent_failed_and_warned_about_once(
    fake: FakeKube, memo: kopf.Memo, posted: Posted, resource: dict[str, Any], node: NodeInfo
) -> None:
    fake.secrets.clear()
    body = fake.add_custom(crd.RESOURCE_PLURAL, resource)
    with pytest.raises(kopf.PermanentError, match="credentials Secret edge/creds is not usable"):
        handlers.resource_changed(body=copy.deepcopy(body), memo=memo, node_index=_index(node))
    status = _stored(fake, crd.RESOURCE_PLURAL, resource)["status"]
    assert (status["phase"], status["conditions"][-1]["reason"]) == ("Failed", "MissingCredentials")
    assert [(t, r) for t, r, _ in posted] == [("Warning", "MissingCredentials")]
    assert fake.jobs == {}

    # kopf retries nothing permanent, but a later event runs it again: no second Event.
    with pytest.raises(kopf.PermanentError):
        handlers.resource_changed(body=copy.deepcopy(body), memo=memo, node_index=_index(node))
    assert len(posted) == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (KubeUnavailableError("create Job: HTTP 503", status=503), kopf.TemporaryError),
        (KubeForbiddenError("create Job: HTTP 403 forbidden", status=403), kopf.PermanentError),
    ],
)
def test_api_trouble_is_temporary_when_transient_and_permanent_otherwise(
    fake: FakeKube,
    memo: kopf.Memo,
    posted: Posted,
    resource: dict[str, Any],
    node: NodeInfo,
    error: Exception,
    expected: type[Exception],
) -> None:
    fake.fail("create_job", error)
    body = fake.add_custom(crd.RESOURCE_PLURAL, resource)
    with pytest.raises(expected) as info:
        handlers.resource_changed(body=copy.deepcopy(body), memo=memo, node_index=_index(node))
    assert type(info.value) is expected
    if isinstance(info.value, kopf.TemporaryError):
        assert info.value.delay == 10.0
    assert "status" not in _stored(fake, crd.RESOURCE_PLURAL, resource)  # nothing recorded
    assert posted == []
    counted = memo.metrics.registry.get_sample_value
    labels = {"kind": "Resource", "result": "api_error"}
    assert counted("azaion_loader_reconciles_total", labels) == 1


def test_a_served_change_writes_status_with_kopfs_diff_base_and_posts_job_created(
    fake: FakeKube, memo: kopf.Memo, posted: Posted, unlock: dict[str, Any], node: NodeInfo
) -> None:
    body = fake.add_custom(crd.UNLOCK_PLURAL, unlock)
    handlers.unlock_changed(body=copy.deepcopy(body), memo=memo, node_index=_index(node))
    status = _stored(fake, crd.UNLOCK_PLURAL, unlock)["status"]
    assert status["phase"] == "Running" and [n["name"] for n in status["nodes"]] == ["edge-1"]
    # The change handler's patch records the object as handled (diffbase.py): one write.
    assert set(status["kopf"]) == {"last-handled-configuration"}
    assert [(t, r) for t, r, _ in posted] == [("Normal", "JobCreated")]
    assert fake.names().count("patch_status") == 1


# --- Job events (our Job watch reports a move) --------------------------------------


@pytest.fixture
def served(
    fake: FakeKube, memo: kopf.Memo, posted: Posted, resource: dict[str, Any], node: NodeInfo
) -> dict[str, Any]:
    """A Resource handled once: its Job created, its status Pending."""
    body = fake.add_custom(crd.RESOURCE_PLURAL, resource)
    handlers.resource_changed(body=copy.deepcopy(body), memo=memo, node_index=_index(node))
    fake.calls.clear()
    posted.clear()
    [job] = fake.jobs.values()
    return job


def test_a_job_that_moves_brings_its_owner_up_to_date_without_reading_it(
    fake: FakeKube,
    memo: kopf.Memo,
    posted: Posted,
    monkeypatch: pytest.MonkeyPatch,
    resource: dict[str, Any],
    served: dict[str, Any],
) -> None:
    monkeypatch.setattr(kopf, "event", _KOPF_EVENT)  # the follow-ups run outside kopf's context
    handled = _stored(fake, crd.RESOURCE_PLURAL, resource)["status"]["kopf"]
    served["status"] = {"active": 1}
    handlers.job_moved(memo, "MODIFIED", served)
    # The owner as our status write left it, the Job as the watch showed it: its pods only.
    assert fake.names() == ["list_pods", "patch_status"]
    assert _stored(fake, crd.RESOURCE_PLURAL, resource)["status"]["phase"] == "Running"

    fake.finish_job("edge", served["metadata"]["name"], result={"ok": True, "size": 1})
    handlers.job_moved(memo, "MODIFIED", fake.jobs[("edge", served["metadata"]["name"])])
    status = _stored(fake, crd.RESOURCE_PLURAL, resource)["status"]
    assert (status["phase"], status["result"]) == ("Succeeded", {"size": 1})
    # Outside kopf's context the Event is posted with our own client.
    assert [(t, r) for t, r, _ in fake.events] == [("Normal", "Succeeded")] and posted == []
    # A follow-up's patch leaves kopf's diff base as the change handler wrote it.
    assert status["kopf"] == handled
    assert len(memo.memory.bodies) == 0  # final: nothing more to follow


@pytest.mark.parametrize("case", ["operator restarted", "spec changed"])
def test_a_follow_up_reads_its_owner_when_what_it_knows_does_not_cover_the_job(
    fake: FakeKube, memo: kopf.Memo, resource: dict[str, Any], served: dict[str, Any], case: str
) -> None:
    served["status"] = {"active": 1}
    if case == "operator restarted":
        memo.memory = OperatorMemory()  # nothing remembered
        expected = ["get_custom", "list_pods", "patch_status"]
    else:
        # A newer generation that no change handler has served yet: its Job is made here.
        _stored(fake, crd.RESOURCE_PLURAL, resource)["metadata"]["generation"] = 3
        served["metadata"]["labels"][crd.LABEL_GENERATION] = "1"
        expected = ["get_custom", "list_jobs", "delete_job"]
    handlers.job_moved(memo, "MODIFIED", served)
    assert fake.names()[: len(expected)] == expected
    status = _stored(fake, crd.RESOURCE_PLURAL, resource)["status"]
    if case == "spec changed":
        assert status["observedGeneration"] == 3 and "create_job" in fake.names()


def test_a_deleted_job_is_made_again_for_a_resource_that_still_wants_it(
    fake: FakeKube, memo: kopf.Memo, resource: dict[str, Any], served: dict[str, Any]
) -> None:
    del fake.jobs[("edge", served["metadata"]["name"])]
    handlers.job_moved(memo, "DELETED", served)
    assert fake.names()[:2] == ["get_custom", "list_jobs"] and "create_job" in fake.names()
    assert len(fake.jobs) == 1


def test_an_owner_that_went_meanwhile_is_forgotten_quietly(
    fake: FakeKube,
    memo: kopf.Memo,
    resource: dict[str, Any],
    served: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.custom.clear()  # deleted; the garbage collector will take its Job
    served["status"] = {"active": 1}
    handlers.job_moved(memo, "MODIFIED", served)
    assert fake.names() == ["list_pods", "patch_status"]
    assert len(memo.memory.bodies) == 0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_an_image_unlock_follow_up_reads_its_owner_and_reconciles_it_whole(
    fake: FakeKube, memo: kopf.Memo, posted: Posted, unlock: dict[str, Any], node: NodeInfo
) -> None:
    body = fake.add_custom(crd.UNLOCK_PLURAL, unlock)
    handlers.unlock_changed(body=copy.deepcopy(body), memo=memo, node_index=_index(node))
    [job] = fake.jobs.values()
    fake.calls.clear()
    fake.finish_job("edge", job["metadata"]["name"], result={"ok": True, "images": ["a:1"]})
    handlers.job_moved(memo, "MODIFIED", fake.jobs[("edge", job["metadata"]["name"])])
    assert fake.names()[0] == "get_custom" and len(memory_bodies(memo)) == 0
    status = _stored(fake, crd.UNLOCK_PLURAL, unlock)["status"]
    assert [n["phase"] for n in status["nodes"]] == ["Succeeded"]


def memory_bodies(memo: kopf.Memo) -> Any:
    return memo.memory.bodies


@pytest.mark.parametrize("case", ["owner queued already", "owner replaced", "not ours"])
def test_job_moves_that_need_no_reconcile_cost_no_api_call(
    fake: FakeKube, memo: kopf.Memo, served: dict[str, Any], case: str
) -> None:
    kind, served["status"] = None, {"active": 1}
    if case == "owner queued already":
        memo.memory.followups.add(served["metadata"]["ownerReferences"][0]["uid"])
    elif case == "owner replaced":
        served["metadata"]["ownerReferences"][0]["uid"] = "an-older-object"
        kind = "get_custom"
    else:
        del served["metadata"]["labels"][crd.LABEL_OWNER_KIND]
    handlers.job_moved(memo, "MODIFIED", served)
    assert fake.names() == ([kind] if kind else [])


def test_a_queued_follow_up_starts_from_the_latest_job_seen(
    fake: FakeKube, memo: kopf.Memo, resource: dict[str, Any], served: dict[str, Any]
) -> None:
    queued: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
    memo.followups = types.SimpleNamespace(submit=lambda call, *args: queued.append((call, args)))
    handlers.job_moved(memo, "MODIFIED", {**served, "status": {"active": 1}})
    fake.finish_job("edge", served["metadata"]["name"], result={"ok": True, "size": 7})
    handlers.job_moved(memo, "MODIFIED", fake.jobs[("edge", served["metadata"]["name"])])
    assert len(queued) == 1  # one follow-up per owner ...
    call, args = queued[0]
    call(*args)
    # ... which saw the Job finished, not the state that queued it.
    assert _stored(fake, crd.RESOURCE_PLURAL, resource)["status"]["phase"] == "Succeeded"


# --- Node events -------------------------------------------------------------------


def test_a_node_that_joins_gets_its_unlock_job_and_a_waiting_resource_its_job(
    fake: FakeKube,
    memo: kopf.Memo,
    posted: Posted,
    unlock: dict[str, Any],
    resource: dict[str, Any],
    node: NodeInfo,
    make_node: Callable[..., dict[str, Any]],
) -> None:
    unlock_body = fake.add_custom(crd.UNLOCK_PLURAL, unlock)
    handlers.unlock_changed(body=copy.deepcopy(unlock_body), memo=memo, node_index=_index(node))
    # A Resource that waits for a node (none matches its selector yet).
    resource["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "edge-late"}
    resource_body = fake.add_custom(crd.RESOURCE_PLURAL, resource)
    with pytest.raises(kopf.PermanentError, match="no Ready Linux node"):
        handlers.resource_changed(
            body=copy.deepcopy(resource_body), memo=memo, node_index=_index(node)
        )
    assert sorted(fake.jobs) == [("edge", n) for n in fake.job_names()] and len(fake.jobs) == 1

    late = make_node("edge-late")
    node_memo = _object_memo(memo)
    handlers.node_event(
        type="ADDED", name="edge-late", body=late, memo=node_memo, node_index=_index(node)
    )
    assert memo.memory.node_changes.wait_idle(5)
    on = sorted(j["metadata"]["annotations"][crd.ANNOTATION_NODE] for j in fake.jobs.values())
    assert on == ["edge-1", "edge-late", "edge-late"]  # the unlock's, and the Resource's
    unlock_status = _stored(fake, crd.UNLOCK_PLURAL, unlock)["status"]
    assert [n["name"] for n in unlock_status["nodes"]] == ["edge-1", "edge-late"]
    assert _stored(fake, crd.RESOURCE_PLURAL, resource)["status"]["phase"] == "Pending"

    # The same Node again (a resync of kopf's watch, a heartbeat): nothing to do.
    fake.calls.clear()
    handlers.node_event(
        type="MODIFIED", name="edge-late", body=late, memo=node_memo, node_index=_index(node)
    )
    assert memo.memory.node_changes.wait_idle(5)
    assert fake.calls == [] and "node_state" not in memo


def test_a_node_event_leaves_resources_that_have_their_job_alone(
    fake: FakeKube,
    memo: kopf.Memo,
    node: NodeInfo,
    served: dict[str, Any],
    make_node: Callable[..., dict[str, Any]],
) -> None:
    handlers.node_event(
        type="ADDED",
        name="edge-2",
        body=make_node("edge-2"),
        memo=_object_memo(memo),
        node_index=_index(node),
    )
    assert memo.memory.node_changes.wait_idle(5)
    assert fake.names() == ["list_custom", "list_custom"]  # listed, none reconciled


def test_a_burst_of_node_changes_reconciles_once_with_the_latest_of_each(
    fake: FakeKube,
    memo: kopf.Memo,
    posted: Posted,
    unlock: dict[str, Any],
    node: NodeInfo,
    make_node: Callable[..., dict[str, Any]],
) -> None:
    """Nodes joining: each is added, then turns Ready; one gone again before it is served."""
    memo.memory.node_changes = Coalescer(quiet=0.5, patience=5)  # the events come closer
    unlock["spec"]["parallelism"] = 50
    unlock_body = fake.add_custom(crd.UNLOCK_PLURAL, unlock)
    handlers.unlock_changed(body=copy.deepcopy(unlock_body), memo=memo, node_index=_index(node))
    fake.calls.clear()
    names = [f"edge-{i:02d}" for i in range(2, 22)]
    memos = {name: _object_memo(memo) for name in names}
    not_ready = {"conditions": [{"type": "Ready", "status": "False"}]}
    for name in names:
        joining = make_node(name)
        handlers.node_event(
            type="ADDED",
            name=name,
            body={**joining, "status": {**joining["status"], **not_ready}},
            memo=memos[name],
            node_index=_index(node),
        )
    for name in names:
        handlers.node_event(
            type="MODIFIED",
            name=name,
            body=make_node(name),
            memo=memos[name],
            node_index=_index(node),
        )
    handlers.node_event(
        type="DELETED",
        name="edge-21",
        body=make_node("edge-21"),
        memo=memos["edge-21"],
        node_index=_index(node),
    )
    assert memo.memory.node_changes.wait_idle(5)
    assert fake.names().count("list_custom") == 2  # one run: both kinds listed once
    on = sorted(j["metadata"]["annotations"][crd.ANNOTATION_NODE] for j in fake.jobs.values())
    assert on == sorted(["edge-1", *names[:-1]])  # every Ready node that is still there


def test_the_resync_serves_a_resource_whose_secret_came_late(
    fake: FakeKube,
    memo: kopf.Memo,
    posted: Posted,
    resource: dict[str, Any],
    node: NodeInfo,
    make_node: Callable[..., dict[str, Any]],
) -> None:
    secret = fake.secrets.pop(("edge", "creds"))
    body = fake.add_custom(crd.RESOURCE_PLURAL, resource)
    with pytest.raises(kopf.PermanentError):
        handlers.resource_changed(body=copy.deepcopy(body), memo=memo, node_index=_index(node))
    fake.secrets[("edge", "creds")] = secret
    fake.nodes["edge-1"] = make_node("edge-1")
    handlers._resync_once(memo)
    assert len(fake.jobs) == 1
    assert _stored(fake, crd.RESOURCE_PLURAL, resource)["status"]["phase"] == "Pending"
    assert [r for _, r, _ in posted] == ["MissingCredentials", "JobCreated"]


# --- the thread hop and the state --------------------------------------------------


def test_work_sent_to_a_thread_sees_the_handlers_context_variables() -> None:
    """kopf.event finds its queue in a context variable: the follow-up threads must see it."""
    queue: contextvars.ContextVar[str] = contextvars.ContextVar("queue")

    async def handler() -> str:
        queue.set("this object's event queue")
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return await handlers._in_thread(pool, queue.get, "none")

    assert asyncio.run(handler()) == "this object's event queue"


@pytest.mark.parametrize("module", [handlers, resource_kind])
def test_no_mutable_state_at_module_level(module: types.ModuleType) -> None:
    """Per-object state lives in kopf's memo; what spans objects in ``memo.memory``."""
    mutable = {
        name
        for name, value in vars(module).items()
        if isinstance(value, (dict, list, set)) and not name.isupper() and not name.startswith("__")
    }
    assert mutable == set()


def test_the_node_index_is_read_again_when_kopf_changes_it_meanwhile(node: NodeInfo) -> None:
    """kopf changes the index on its event loop while the coalescer's thread reads it."""

    class Changing(dict):  # type: ignore[type-arg]
        reads = 0

        def values(self) -> Any:
            Changing.reads += 1
            if Changing.reads < 3:
                raise RuntimeError("dictionary changed size during iteration")
            return super().values()

    assert handlers._snapshot(Changing(_index(node))) == [node]  # type: ignore[arg-type]
    assert Changing.reads == 3


@pytest.mark.parametrize(("namespaces", "watched"), [(("a", "b"), ["a", "b"]), ((), [""])])
def test_one_job_watch_per_namespace_or_one_cluster_wide_and_they_stop(
    fake: FakeKube, memo: kopf.Memo, namespaces: tuple[str, ...], watched: list[str]
) -> None:
    memo.settings = OperatorSettings(namespaces=namespaces)
    watches = handlers.start_job_watches(memo)
    try:
        polling.wait_for("the listings", lambda: len(fake.calls) >= 2 * len(watched), 5, 0.01)
    finally:
        for watch in watches:
            watch.stop()
    for watch in watches:
        assert watch._thread is not None
        watch._thread.join(5)
        assert not watch._thread.is_alive()
    listed = sorted(c[1] for c in fake.calls if c[0] == "list_jobs_versioned")
    assert listed == watched


def test_the_resync_posts_its_events_with_our_client_outside_kopfs_context(
    fake: FakeKube, memo: kopf.Memo, resource: dict[str, Any], make_node: Callable[..., Any]
) -> None:
    """kopf.event raises LookupError outside kopf's handlers (the resync loop is a task of
    the start-up handler's): the round went on without its Events, now they are posted."""
    fake.add_custom(crd.RESOURCE_PLURAL, resource)
    fake.nodes["edge-1"] = make_node("edge-1")
    contextvars.Context().run(handlers._resync_once, memo)
    assert [r for _, r, _ in fake.events] == ["JobCreated"]
    assert _stored(fake, crd.RESOURCE_PLURAL, resource)["status"]["phase"] == "Pending"
