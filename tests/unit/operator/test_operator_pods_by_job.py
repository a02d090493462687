"""reconcile.pods_by_job: one pass over the pods, the same answer as pods_of per Job."""

from __future__ import annotations

from typing import Any

from azaion_operator.reconcile import pods_by_job, pods_of


def _job(uid: str) -> dict[str, Any]:
    return {"metadata": {"name": f"job-{uid}", "uid": uid}}


def _pod(name: str, *owners: str) -> dict[str, Any]:
    refs = [{"kind": "Job", "name": f"job-{o}", "uid": o} for o in owners]
    return {"metadata": {"name": name, "ownerReferences": refs}}


def test_groups_pods_by_owner_uid_like_pods_of() -> None:
    pods = [_pod("a-1", "a"), _pod("b-1", "b"), _pod("a-2", "a"), _pod("orphan"), _pod("x", "")]
    owned = pods_by_job(pods)
    assert owned == {"a": [pods[0], pods[2]], "b": [pods[1]]}
    for uid in ("a", "b", "c"):
        assert owned.get(uid, []) == pods_of(pods, _job(uid))


def test_pods_without_metadata_are_skipped() -> None:
    assert pods_by_job([{}, {"metadata": {}}, {"metadata": {"ownerReferences": None}}]) == {}
