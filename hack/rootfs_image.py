"""Write a `docker load` archive of one root filesystem tarball, for a given platform.

    python3 hack/rootfs_image.py --tag NAME:TAG --platform linux/arm64 \\
        [--env K=V]... [--label K=V]... [--cmd JSON] ROOTFS.tar | docker load

`docker import --platform` would do, but Docker 20.10 (Debian bookworm's
engine) ignores the platform there and records the host's, so an arm64 root
imported on an amd64 machine is labelled amd64 and `docker build --platform
linux/arm64` then refuses it. This writes the archive `docker save` writes (a
manifest, an image config with the platform, one layer) around the tarball.
Standard library only: scripts/base-image and scripts/build-image run it before
the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import time
from pathlib import Path
from typing import IO, Any


def image_config(
    diff_id: str, platform: str, env: list[str], labels: dict[str, str], cmd: list[str]
) -> dict[str, Any]:
    """The image config of a one-layer image (the fields `docker image inspect` shows)."""
    os_name, _, arch = platform.partition("/")
    arch, _, variant = arch.partition("/")
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "created": created,
        "config": {"Env": env, "Cmd": cmd, "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "hack/rootfs_image.py"}],
    }
    if variant:
        config["variant"] = variant
    return config


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def write_archive(out: IO[bytes], rootfs: Path, tag: str, config: dict[str, Any]) -> None:
    """The `docker save` layout: manifest.json, <config>.json, <layer>/layer.tar."""
    layer_id = config["rootfs"]["diff_ids"][0].split(":", 1)[1]
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_id}/layer.tar"]}]
    with tarfile.open(fileobj=out, mode="w|") as tar:
        _add(tar, config_name, config_bytes)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
        info = tarfile.TarInfo(f"{layer_id}/layer.tar")
        info.size = rootfs.stat().st_size
        info.mtime = int(time.time())
        with rootfs.open("rb") as layer:
            tar.addfile(info, layer)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rootfs_image", description=__doc__.splitlines()[0])
    parser.add_argument("rootfs", type=Path, help="an uncompressed tarball of the root filesystem")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--platform", required=True, help="os/arch[/variant], e.g. linux/arm64")
    parser.add_argument("--env", action="append", default=[], help="K=V (repeatable)")
    parser.add_argument("--label", action="append", default=[], help="K=V (repeatable)")
    parser.add_argument("--cmd", default='["/bin/sh"]', help="the image's CMD as a JSON list")
    args = parser.parse_args(argv)
    labels = dict(item.split("=", 1) for item in args.label)
    config = image_config(
        sha256_of(args.rootfs), args.platform, args.env, labels, json.loads(args.cmd)
    )
    write_archive(sys.stdout.buffer, args.rootfs, args.tag, config)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
