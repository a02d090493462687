"""Inputs for the operator unit tests: custom resources and nodes as the API returns them."""

from __future__ import annotations

import copy
import os
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from azaion_operator.nodes import NodeInfo, node_info

GOLDEN = pathlib.Path(__file__).parent / "golden"


def node_manifest(name: str = "edge-1", **overrides: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/os": "linux", "kubernetes.io/hostname": name},
        },
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "nodeInfo": {
                "machineID": "0123456789abcdef0123456789abcdef",
                "architecture": "amd64",
                "operatingSystem": "linux",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kubeletVersion": "v1.32.4",
            },
        },
    }
    for key, value in overrides.items():
        node[key] = value
    return node


@pytest.fixture
def node() -> NodeInfo:
    return node_info(node_manifest())


@pytest.fixture
def make_node() -> Callable[..., dict[str, Any]]:
    """Node manifests as the API returns them (``make_node("edge-2")``)."""
    return node_manifest


@pytest.fixture
def resource() -> dict[str, Any]:
    return {
        "apiVersion": "loader.azaion.com/v1alpha1",
        "kind": "Resource",
        "metadata": {
            "name": "detector-model",
            "namespace": "edge",
            "uid": "11111111-2222-3333-4444-555555555555",
            "generation": 2,
        },
        "spec": {
            "source": {"folder": "models", "name": "detector.onnx", "version": "3"},
            "target": {
                "fileName": "detector.onnx",
                "persistentVolumeClaim": {"claimName": "models", "subPath": "detector"},
            },
            "credentialsSecretRef": {"name": "creds"},
            "apiUrl": "https://api.example",
            "job": {"backoffLimit": 1},
        },
    }


@pytest.fixture
def unlock() -> dict[str, Any]:
    return {
        "apiVersion": "loader.azaion.com/v1alpha1",
        "kind": "ImageUnlock",
        "metadata": {
            "name": "detector-stack",
            "namespace": "edge",
            "uid": "99999999-8888-7777-6666-555555555555",
            "generation": 1,
        },
        "spec": {
            "archive": {"folder": "images", "name": "detector-stack"},
            "images": ["registry.local/detector:1.4.0"],
            "parallelism": 2,
            "dockerSocketPath": "/var/run/docker.sock",
            "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }


def _golden(name: str, actual: Any) -> Any:
    """The golden file's content; with UPDATE_GOLDEN=1, first written from ``actual``.

    A missing golden file fails the test: writing it silently would pass anything.
    """
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(yaml.safe_dump(copy.deepcopy(actual), sort_keys=False, width=100))
    elif not path.exists():
        pytest.fail(f"golden file {path.name} is missing: run with UPDATE_GOLDEN=1 and review it")
    return yaml.safe_load(path.read_text())


@pytest.fixture
def golden() -> Callable[[str, Any], Any]:
    return _golden
