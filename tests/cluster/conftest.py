"""Fixtures for the proof tests of the local cluster (tests/cluster/cluster.py).

The tests need KUBECONFIG (``eval "$(scripts/cluster env)"``, which ``./scripts/test``
does); without it they skip, saying so. Each test gets its own namespace, deleted after.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_support import BASE_IMAGE, kubectl, script


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder `cluster`, and skip them all without a KUBECONFIG."""
    here = Path(__file__).parent
    reason = (
        'no cluster: KUBECONFIG is unset (run ./scripts/test, or eval "$(scripts/cluster env)")'
    )
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.cluster)
            if not os.environ.get("KUBECONFIG"):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"azl-test-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    # The ServiceAccount controller creates `default` shortly after; pods need it.
    for _ in range(60):
        if kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0:
            break
        time.sleep(0.5)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """A Docker engine on /var/run/docker.sock (scripts/dockerd start), or skip saying why."""
    proc = script("dockerd", "start")
    if proc.returncode != 0:
        pytest.skip(f"no Docker engine: scripts/dockerd start failed: {proc.stderr.strip()}")


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """The project's locally made base image (scripts/base-image), in the host's Docker."""
    proc = script("base-image")
    if proc.returncode != 0:
        pytest.fail(f"scripts/base-image failed: {proc.stderr.strip()}")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def cluster_base_image(base_image: str) -> str:
    """The base image imported into the cluster's containerd."""
    proc = script("import-image", base_image)
    if proc.returncode != 0:
        pytest.fail(f"scripts/import-image {base_image} failed: {proc.stderr.strip()}")
    return base_image
