"""The lean diff-base storage builds exactly kopf's essence, without sharing the body's objects."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from azaion_operator import crd
from azaion_operator.diffbase import LeanAnnotationsDiffBaseStorage

KEY = "last-handled-configuration"


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
                f"{crd.GROUP}/{KEY}": '{"spec": {}}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "kopf.zalando.org/touch-dummy": "x",
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
        "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]},
    }


def test_same_essence_as_kopf() -> None:
    stock = kopf.AnnotationsDiffBaseStorage(prefix=crd.GROUP, key=KEY)
    lean = LeanAnnotationsDiffBaseStorage(prefix=crd.GROUP, key=KEY)
    expected = stock.build(body=kopf.Body(_body()))
    assert lean.build(body=kopf.Body(_body())) == expected
    assert expected == {
        "spec": _body()["spec"],
        "metadata": {"labels": {"team": "vision"}, "annotations": {"note": "kept"}},
    }


def test_essence_is_a_copy() -> None:
    body = _body()
    essence: Any = LeanAnnotationsDiffBaseStorage(prefix=crd.GROUP, key=KEY).build(
        body=kopf.Body(body)
    )
    essence["spec"]["source"]["folder"] = "changed"
    essence["spec"]["tolerations"].append({})
    essence["metadata"]["labels"]["x"] = "y"
    assert body == _body()


def test_extra_fields_fall_back_to_kopf() -> None:
    stock = kopf.AnnotationsDiffBaseStorage(prefix=crd.GROUP, key=KEY)
    lean = LeanAnnotationsDiffBaseStorage(prefix=crd.GROUP, key=KEY)
    fields = [("status", "phase")]
    body = copy.deepcopy(_body())
    assert lean.build(body=kopf.Body(body), extra_fields=fields) == stock.build(
        body=kopf.Body(body), extra_fields=fields
    )
