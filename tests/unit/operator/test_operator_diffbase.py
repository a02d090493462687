"""The status diff-base storage: kopf's essence, riding on the handler's status patch."""

from __future__ import annotations

import copy
import json
from typing import Any

import kopf

from azaion_operator import crd
from azaion_operator.diffbase import FIELD, StatusDiffBaseStorage, StatusProgressStorage


def _body() -> dict[str, Any]:
    return {
        "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
        "kind": "Resource",
        "metadata": {
            "name": "model",
            "namespace": "edge",
            "uid": "0c6a",
            "generation": 3,
            "resourceVersion": "77",
            "labels": {"team": "vision"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "note": "kept",
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:source": {}}}}],
            "ownerReferences": [{"kind": "Deployment", "name": "d", "uid": "1"}],
        },
        "spec": {
            "source": {"folder": "models", "name": "detector.onnx"},
            "target": {"fileName": "detector.onnx", "hostPath": {"path": "/data"}},
            "tolerations": [{"operator": "Exists"}],
        },
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "Ready", "status": "False"}],
            "kopf": {FIELD: '{"spec":{}}'},
        },
    }


def _stock() -> kopf.StatusDiffBaseStorage:
    return kopf.StatusDiffBaseStorage(name="kopf", field=f"status.{{name}}.{FIELD}")


def test_same_essence_as_kopf() -> None:
    expected = _stock().build(body=kopf.Body(_body()))
    assert StatusDiffBaseStorage().build(body=kopf.Body(_body())) == expected
    assert expected == {
        "spec": _body()["spec"],
        "metadata": {"labels": {"team": "vision"}, "annotations": {"note": "kept"}},
    }


def test_essence_is_a_copy() -> None:
    body = _body()
    essence: Any = StatusDiffBaseStorage().build(body=kopf.Body(body))
    essence["spec"]["source"]["folder"] = "changed"
    essence["spec"]["tolerations"].append({})
    essence["metadata"]["labels"]["x"] = "y"
    assert body == _body()


def test_extra_fields_fall_back_to_kopf() -> None:
    fields = [("status", "phase")]
    body = copy.deepcopy(_body())
    assert StatusDiffBaseStorage().build(body=kopf.Body(body), extra_fields=fields) == (
        _stock().build(body=kopf.Body(body), extra_fields=fields)
    )


def test_status_fields_are_what_kopf_would_store_and_fetch() -> None:
    storage = StatusDiffBaseStorage()
    fields = storage.status_fields(_body())
    patch = kopf.Patch()
    essence = _stock().build(body=kopf.Body(_body()))
    _stock().store(body=kopf.Body(_body()), patch=patch, essence=essence)
    assert fields == {"kopf": {FIELD: patch["status"]["kopf"][FIELD]}}
    stored = {**_body(), "status": {"kopf": fields["kopf"]}}
    assert storage.fetch(body=kopf.Body(stored)) == essence
    assert json.loads(fields["kopf"][FIELD]) == essence


def test_store_sends_nothing_once_written() -> None:
    storage = StatusDiffBaseStorage()
    body = kopf.Body(_body())
    essence = storage.build(body=body)
    storage.written("0c6a", storage.status_fields(_body()))
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=essence)
    assert dict(patch) == {}
    # Only once: the next store (a later handling) writes as kopf does.
    storage.store(body=body, patch=patch, essence=essence)
    assert patch["status"]["kopf"][FIELD] == json.dumps(essence, separators=(",", ":"))


def test_store_writes_a_different_essence() -> None:
    storage = StatusDiffBaseStorage()
    body = kopf.Body(_body())
    storage.written("0c6a", storage.status_fields(_body()))
    changed = {**_body(), "spec": {**_body()["spec"], "version": "2"}}
    essence = storage.build(body=kopf.Body(changed))
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=essence)
    assert json.loads(patch["status"]["kopf"][FIELD]) == essence


def test_status_patch_leaves_kopf_alone() -> None:
    from azaion_operator.status import status_patch

    old = {"phase": "Pending", "kopf": {FIELD: "{}"}}
    assert status_patch(old, {"phase": "Pending"}) is None
    assert status_patch(old, {"phase": "Running"}) == {"phase": "Running"}


def test_progress_clear_is_kopfs() -> None:
    stock = kopf.StatusProgressStorage(name="kopf")
    ours = StatusProgressStorage()
    built = StatusDiffBaseStorage().build(body=kopf.Body(_body()))
    assert ours.clear(essence=copy.deepcopy(built)) == stock.clear(essence=built)
    with_status: Any = {**copy.deepcopy(built), "status": {"kopf": {"progress": {"h": {}}}}}
    assert ours.clear(essence=copy.deepcopy(with_status)) == stock.clear(essence=with_status)
    empty: Any = {"spec": {}, "metadata": {"labels": {}}}
    assert ours.clear(essence=copy.deepcopy(empty)) == stock.clear(essence=empty)
