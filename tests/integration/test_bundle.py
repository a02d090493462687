"""The air-gapped install bundle for arm64, built on this amd64 machine (scripts/bundle).

Real parts: ``scripts/bundle --platforms linux/arm64`` builds the arm64 image
(debootstrap's second stage, the Dockerfile's RUN steps and the smoke checks
under qemu-user-static through binfmt_misc), saves it, packages the chart; the
tests check the checksums, render the packaged chart, load the image archive
into the host's Docker engine and into a containerd of the session's own
(``ctr -n k8s.io images import``, as docs/install-offline.md shows), and run the
arm64 image's ``loader --version`` under emulation. The module builds once
(cached under /var/cache/azaion-loader; a cold build takes minutes).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from helm_binary import HELM_CACHE, find_helm
from private_containerd import PrivateContainerd

# The first test builds the bundle: a cold build takes minutes (docs/benchmarks.md).
pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
CHART_YAML = (ROOT / "charts" / "azaion-loader" / "Chart.yaml").read_text()
APP_VERSION = re.search(r'^appVersion:\s*"?([^"\s]+)"?', CHART_YAML, re.M).group(1)  # type: ignore[union-attr]
CHART_VERSION = re.search(r"^version:\s*(\S+)", CHART_YAML, re.M).group(1)  # type: ignore[union-attr]
PROJECT_VERSION = re.search(  # type: ignore[union-attr]
    r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M
).group(1)
IMAGE = f"azaion-loader:{APP_VERSION}"
ARCHIVE = f"images/azaion-loader-{APP_VERSION}-linux-arm64.tar"


def _run(
    argv: list[str], timeout: float = 300, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload,no-any-return]


@pytest.fixture(scope="module")
def helm() -> str:
    """helm as hack/helm_binary.py finds it (scripts/kind-node-image tools builds it)."""
    found = find_helm()
    if found is None:
        pytest.skip(f"helm not found ($AZAION_HELM, $HELM, PATH, {HELM_CACHE}/helm-v3.*/helm)")
    return found


@pytest.fixture(scope="module")
def bundle(docker_engine: str, helm: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scripts/bundle --platforms linux/arm64`` into a temporary directory."""
    binfmt = _run([str(ROOT / "scripts" / "binfmt"), "check", "arm64"])
    if binfmt.returncode != 0:
        pytest.skip(
            "no arm64 emulation: qemu-user-static's binfmt_misc entry is not registered "
            f"(./scripts/install; scripts/binfmt register): {binfmt.stderr.strip()}"
        )
    out = tmp_path_factory.mktemp("bundle")
    built = _run(
        ["nice", str(ROOT / "scripts" / "bundle"), "--platforms", "linux/arm64", "--out", str(out)],
        timeout=2400,
        env={**os.environ, "AZAION_HELM": helm},
    )
    assert built.returncode == 0, (
        f"scripts/bundle exited {built.returncode}:\n{built.stderr[-6000:]}"
    )
    dest = out / f"azaion-loader-{APP_VERSION}"
    assert built.stdout.strip().splitlines()[-1] == str(dest)
    return dest


def test_bundle_holds_the_parts_and_their_checksums(bundle: Path) -> None:
    files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    expected = {
        f"azaion-loader-{CHART_VERSION}.tgz",
        ARCHIVE,
        "INSTALL.md",
        "SHA256SUMS",
        "crds/resources.loader.azaion.com.yaml",
        "crds/imageunlocks.loader.azaion.com.yaml",
        "examples/imageunlock.yaml",
    }
    assert expected <= set(files), files
    listed = [line.split(None, 1)[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()]
    assert listed == sorted(f for f in files if f != "SHA256SUMS")
    checked = _run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=bundle)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # A changed byte is caught.
    crd = bundle / "crds" / "resources.loader.azaion.com.yaml"
    original = crd.read_bytes()
    try:
        crd.write_bytes(original + b"\n")
        assert _run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=bundle).returncode == 1
    finally:
        crd.write_bytes(original)


def test_the_packaged_chart_runs_the_bundled_image(bundle: Path, helm: str) -> None:
    with tarfile.open(bundle / ARCHIVE) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == [IMAGE]
    assert (config["os"], config["architecture"]) == ("linux", "arm64")
    rendered = _run(
        [helm, "template", "azl", str(bundle / f"azaion-loader-{CHART_VERSION}.tgz"), "-n", "azl"]
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    images = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert images == {IMAGE}


def test_arm64_image_loads_into_docker_and_runs_under_emulation(
    bundle: Path, docker_engine: str
) -> None:
    loaded = _run([docker_engine, "load", "--input", str(bundle / ARCHIVE)], timeout=600)
    assert loaded.returncode == 0, loaded.stderr
    assert f"Loaded image: {IMAGE}" in loaded.stdout
    try:
        platform = _run(
            [docker_engine, "image", "inspect", "--format", "{{.Os}}/{{.Architecture}}", IMAGE]
        )
        assert platform.stdout.strip() == "linux/arm64"
        run = [docker_engine, "run", "--rm", "--read-only", "--platform", "linux/arm64", IMAGE]
        version = _run([*run, "loader", "--version"], timeout=300)
        assert version.returncode == 0, version.stderr
        assert version.stdout.strip() == f"loader {PROJECT_VERSION}"
        # An arm64 interpreter, run by the emulator: the ELF header names AArch64 (0xb7).
        machine = _run(
            [
                *run,
                "python3",
                "-c",
                "import platform, sys; h = open(sys.executable, 'rb').read(20); "
                "print(platform.machine(), h[18] | h[19] << 8)",
            ],
            timeout=300,
        )
        assert machine.stdout.split() == ["aarch64", str(0xB7)], machine.stderr
    finally:
        _run([docker_engine, "rmi", IMAGE])


def test_arm64_archive_imports_into_containerd(
    bundle: Path, containerd_engine: PrivateContainerd
) -> None:
    """``ctr -n k8s.io images import`` (docs/install-offline.md) into the session's containerd."""
    ref = f"docker.io/library/{IMAGE}"
    done = containerd_engine.ctr(
        "images", "import", "--platform", "linux/arm64", str(bundle / ARCHIVE)
    )
    try:
        assert done.returncode == 0, done.stderr
        assert ref in containerd_engine.images()
    finally:
        containerd_engine.ctr("images", "rm", ref)
