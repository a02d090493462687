"""KubeClient.list_custom over several namespaces: one that cannot be listed is skipped."""

from __future__ import annotations

import json
import types
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from azaion_operator.errors import KubeForbiddenError
from azaion_operator.kube import KubeClient


class _Custom:
    """Answers list_namespaced_custom_object: 403 for the namespaces in ``forbidden``."""

    def __init__(self, forbidden: set[str]) -> None:
        self.forbidden = forbidden

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, **_: Any
    ) -> Any:
        if namespace in self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        item = {"metadata": {"name": "x", "namespace": namespace}}
        return types.SimpleNamespace(data=json.dumps({"items": [item]}).encode())


def _client(forbidden: set[str]) -> KubeClient:
    kube = KubeClient(kubernetes.client.ApiClient())
    kube._custom = _Custom(forbidden)  # type: ignore[assignment]
    return kube


def test_a_namespace_that_cannot_be_listed_does_not_hide_the_others() -> None:
    items = _client({"gone"}).list_custom("imageunlocks", ["gone", "a", "b"])
    assert [i["metadata"]["namespace"] for i in items] == ["a", "b"]


def test_no_namespace_answering_raises() -> None:
    with pytest.raises(KubeForbiddenError):
        _client({"a", "b"}).list_custom("imageunlocks", ["a", "b"])
