"""The image-engine seam: reference normalisation, engine choice, engine settings (pure)."""

from __future__ import annotations

import pytest

from azaion_loader.containerd_cli import ContainerdCli
from azaion_loader.docker_cli import DockerCli
from azaion_loader.engine import normalize_reference
from azaion_loader.errors import ConfigError
from azaion_loader.image_engines import open_engine
from azaion_loader.settings import EngineSettings, LoaderSettings


@pytest.mark.parametrize(
    ("ref", "normalized"),
    [
        ("app:1.0", "docker.io/library/app:1.0"),
        ("app", "docker.io/library/app:latest"),
        ("team/app:2", "docker.io/team/app:2"),
        ("docker.io/library/app:1", "docker.io/library/app:1"),
        ("registry.local:5000/app:1", "registry.local:5000/app:1"),
        ("registry.local:5000/app", "registry.local:5000/app:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("quay.io/org/team/app:3", "quay.io/org/team/app:3"),
        ("app@sha256:" + "a" * 64, "docker.io/library/app@sha256:" + "a" * 64),
    ],
)
def test_normalize_reference(ref: str, normalized: str) -> None:
    assert normalize_reference(ref) == normalized


def test_open_engine_picks_by_runtime() -> None:
    docker = open_engine(EngineSettings(runtime="docker", socket="/run/d.sock"))
    assert isinstance(docker, DockerCli) and docker.address == "unix:///run/d.sock"
    ctd = open_engine(EngineSettings(runtime="containerd", namespace="ns1", pin=True))
    assert isinstance(ctd, ContainerdCli)
    assert (ctd.address, ctd.namespace, ctd.pin) == ("/run/containerd/containerd.sock", "ns1", True)


def test_engine_settings_from_env_and_flags() -> None:
    env = {
        "LOADER_RUNTIME": "containerd",
        "LOADER_RUNTIME_SOCKET": "/run/k3s/containerd/containerd.sock",
        "LOADER_PIN_IMAGES": "1",
    }
    engine = LoaderSettings.from_env(env).engine
    assert engine == EngineSettings(
        runtime="containerd", socket="/run/k3s/containerd/containerd.sock", pin=True
    )
    flagged = engine.with_flags(runtime="docker", socket="/var/run/docker.sock")
    assert (flagged.runtime, flagged.socket, flagged.pin) == (
        "docker",
        "/var/run/docker.sock",
        True,
    )
    assert LoaderSettings.from_env({}).engine == EngineSettings()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"LOADER_RUNTIME": "cri-o"}, "not supported"),
        ({"LOADER_RUNTIME_SOCKET": "relative.sock"}, "absolute path"),
        ({"LOADER_CONTAINERD_NAMESPACE": "a b"}, "namespace"),
    ],
)
def test_bad_engine_settings(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        LoaderSettings.from_env(env)
