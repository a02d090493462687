"""The locally built pause image: a static C program packed as an OCI archive."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from cluster_common import CACHE, PAUSE_VERSION, Settings, ctr, run

log = logging.getLogger("cluster")

PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_term(int s) { (void)s; _exit(0); }
static void on_chld(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {0}, c = {0};
  a.sa_handler = on_term; sigaction(SIGINT, &a, 0); sigaction(SIGTERM, &a, 0);
  c.sa_handler = on_chld; c.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &c, 0);
  for (;;) pause();
}
"""


def oci_archive(name: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str]) -> bytes:
    """A one-layer OCI image archive (for `ctr images import`) from {path: (content, mode)}."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as tar:
        for path, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    layer_tar = layer_buf.getvalue()
    layer_gz = gzip.compress(layer_tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint},
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()],
            },
        }
    ).encode()

    def desc(media: str, data: bytes) -> dict[str, Any]:
        return {
            "mediaType": media,
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json", config),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", layer_gz)],
        }
    ).encode()
    mdesc = desc("application/vnd.oci.image.manifest.v1+json", manifest)
    mdesc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
    }
    index = json.dumps({"schemaVersion": 2, "manifests": [mdesc]}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        blobs = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
        for data in (layer_gz, config, manifest):
            blobs["blobs/sha256/" + hashlib.sha256(data).hexdigest()] = data
        for path, data in blobs.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ensure_pause_image(s: Settings) -> None:
    """Compile a static pause binary, package it as an OCI image and import it into containerd."""
    if ctr(s, "images", "check", f"name=={s.pause_image}", check=False).stdout.count(s.pause_image):
        return
    archive = CACHE / "pause" / PAUSE_VERSION / "pause-oci.tar"
    if not archive.exists():
        with tempfile.TemporaryDirectory() as tmp:
            src, binary = Path(tmp) / "pause.c", Path(tmp) / "pause"
            src.write_text(PAUSE_C)
            run(["gcc", "-Os", "-static", "-o", str(binary), str(src)])
            run(["strip", str(binary)], check=False)
            data = oci_archive(s.pause_image, {"pause": (binary.read_bytes(), 0o755)}, ["/pause"])
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(data)
    ctr(s, "images", "import", "--no-unpack=false", str(archive))
    log.info("pause image %s imported", s.pause_image)
