"""The subcommands: each builds its clients from settings, runs, and returns its result.

A handler returns ``(result, summary)``: the fields of the JSON result line
and one human sentence for stdout.  Errors propagate as ``LoaderError``.

Each handler imports the modules it needs (the cipher library, HTTP, S3,
Docker), so a command pays only for its own: `unlock-load` starts its digest
check before the rest is imported, on the other core.
"""

from __future__ import annotations

import argparse
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azaion_loader.cli import arguments
from azaion_loader.errors import IntegrityError, TargetError
from azaion_loader.pipeline import file_sha256
from azaion_loader.progress import Progress
from azaion_loader.settings import LoaderSettings
from azaion_loader.workdir import ArchiveCheck

if TYPE_CHECKING:
    from azaion_loader.api_client import ApiClient
    from azaion_loader.cdn import CdnClient
    from azaion_loader.engine import ImageEngine
    from azaion_loader.models import UnlockLoadResult, UploadResult

__all__ = ["COMMANDS", "Command", "Outcome"]

Outcome = tuple[dict[str, Any], str]
Handler = Callable[[argparse.Namespace, LoaderSettings], Outcome]


def _api(settings: LoaderSettings) -> ApiClient:
    from azaion_loader.api_client import ApiClient
    from azaion_loader.fingerprint import read_inputs

    creds = settings.require_credentials()
    fp = read_inputs(settings.hardware).fingerprint
    return ApiClient(settings.api_url, creds, fingerprint=fp, http=settings.http)


def _cdn_factory(api: ApiClient, settings: LoaderSettings) -> Callable[[], CdnClient]:
    def make() -> CdnClient:
        from azaion_loader.cdn import CdnClient

        return CdnClient(api.get_cdn_config(), http=settings.http)

    return make


def _progress(args: argparse.Namespace, label: str, total: int = 0) -> Progress:
    return Progress(label, total, enabled=not getattr(args, "no_progress", False))


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def cmd_fetch(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader fetch``."""
    api = _api(settings)
    bar = _progress(args, f"fetch {args.folder}/{args.name}")
    from azaion_loader import resources

    result = resources.fetch_resource(
        api,
        _cdn_factory(api, settings),
        folder=args.folder,
        name=args.name,
        out=args.out,
        version=args.version,
        cache_dir=settings.with_cache_dir(args.cache_dir).cache_dir,
        progress=bar.advance,
        on_total=bar.set_total,
    )
    bar.finish()
    doc = {
        "size": result.size,
        "sha256": result.sha256,
        "path": result.path,
        "cache": result.cache,
        "version": result.version,
    }
    return doc, (
        f"fetched {args.folder}/{args.name} version {result.version} to {result.path} "
        f"({result.size} bytes, cache {result.cache})"
    )


def cmd_verify(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader verify``."""
    expected = args.sha256.strip().lower()
    try:
        actual, size = file_sha256(args.file)
    except OSError as exc:
        raise TargetError(
            f"cannot read {args.file}: {exc.strerror}", hint="check the path to verify"
        ) from exc
    if not hmac.compare_digest(actual, expected):
        raise IntegrityError(
            f"{args.file} has SHA-256 {actual}, expected {expected}",
            hint="fetch the file again",
        )
    return {"size": size, "sha256": actual, "path": args.file}, f"{args.file}: OK ({size} bytes)"


def _upload_doc(result: UploadResult, **extra: Any) -> dict[str, Any]:
    """The result line of a publish; ``sha256`` and ``size`` are the ciphertext's."""
    return {
        "folder": result.folder,
        "name": result.name,
        "version": result.version,
        "size": result.size,
        "sha256": result.sha256,
        **extra,
    }


def cmd_upload(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader upload``."""
    api = _api(settings)
    cdn = _cdn_factory(api, settings)()
    bar = _progress(args, f"upload {args.folder}/{args.name}", _file_size(args.file))
    from azaion_loader import resources

    result = resources.upload_resource(
        api,
        cdn,
        folder=args.folder,
        name=args.name,
        path=args.file,
        version=args.version,
        cache_dir=settings.with_cache_dir(args.cache_dir).cache_dir,
        progress=bar.advance,
    )
    bar.finish()
    return _upload_doc(result, plain_size=result.plain_size, plain_sha256=result.plain_sha256), (
        f"uploaded {result.folder}/{result.name} version {result.version} "
        f"({result.plain_size} bytes)"
    )


def cmd_upload_archive(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader upload-archive``."""
    api = _api(settings)
    cdn = _cdn_factory(api, settings)()
    bar = _progress(args, f"upload-archive {args.folder}/{args.name}", _file_size(args.archive))
    from azaion_loader import archives

    result = archives.publish_archive(
        api,
        cdn,
        folder=args.folder,
        name=args.name,
        path=args.archive,
        version=args.version,
        images=args.images or None,
        progress=bar.advance,
    )
    bar.finish()
    return _upload_doc(result, images=list(result.images)), (
        f"published archive {result.folder}/{result.name} version {result.version} "
        f"with {', '.join(result.images) or 'no images'}"
    )


def _engine(args: argparse.Namespace, settings: LoaderSettings) -> ImageEngine:
    from azaion_loader.image_engines import open_engine

    return open_engine(
        settings.engine.with_flags(
            runtime=args.runtime, socket=args.socket, namespace=args.namespace, pin=args.pin
        )
    )


def _load_doc(result: UnlockLoadResult) -> dict[str, Any]:
    return {
        "images": list(result.images),
        "images_source": result.images_source,
        "runtime": result.runtime,
        "sha256": result.sha256,
        "version": result.version,
    }


def cmd_unlock(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader unlock``."""
    api = _api(settings)
    bar = _progress(args, f"unlock {args.archive_folder}/{args.archive_name}")
    from azaion_loader import archives

    result = archives.unlock(
        api,
        _cdn_factory(api, settings),
        _engine(args, settings),
        folder=args.archive_folder,
        name=args.archive_name,
        version=args.version,
        images=args.images or None,
        progress=bar.advance,
        forbidden_repositories=args.forbid_repository,
    )
    bar.finish()
    return _load_doc(result), f"loaded {', '.join(result.images)} into {result.runtime}"


def cmd_unlock_fetch(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader unlock-fetch``."""
    api = _api(settings)
    bar = _progress(args, f"unlock-fetch {args.archive_folder}/{args.archive_name}")
    from azaion_loader import archives

    result = archives.unlock_fetch(
        api,
        _cdn_factory(api, settings),
        folder=args.archive_folder,
        name=args.archive_name,
        workdir=args.workdir,
        version=args.version,
        progress=bar.advance,
        on_total=bar.set_total,
    )
    bar.finish()
    doc = {
        "workdir": result.workdir,
        "version": result.version,
        "size": result.size,
        "sha256": result.sha256,
    }
    return doc, f"fetched archive version {result.version} into {result.workdir}"


def cmd_unlock_load(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader unlock-load``."""
    # Hashing the archive takes longer than importing the decryption and the
    # engine's client, and needs neither: it goes first, in its own thread.
    check = ArchiveCheck.start(args.workdir)
    from azaion_loader import archives

    bar = _progress(args, "unlock-load")
    result = archives.unlock_load(
        _engine(args, settings),
        workdir=args.workdir,
        images=args.images or None,
        progress=bar.advance,
        on_total=bar.set_total,
        check=check,
        forbidden_repositories=args.forbid_repository,
    )
    bar.finish()
    return _load_doc(result), f"loaded {', '.join(result.images)} into {result.runtime}"


def cmd_fingerprint(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader fingerprint``."""
    from azaion_loader.fingerprint import read_inputs

    inputs = read_inputs(settings.hardware)
    doc = {
        "fingerprint": inputs.fingerprint,
        "machine_id": inputs.machine_id,
        "machine_id_source": inputs.machine_id_source,
        "arch": inputs.arch,
        "arch_source": inputs.arch_source,
    }
    text = (
        f"{inputs.fingerprint}\n  machine-id={inputs.machine_id} ({inputs.machine_id_source})\n"
        f"  arch={inputs.arch} ({inputs.arch_source})"
    )
    return doc, text


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, its help, its examples, its options and its handler."""

    name: str
    help: str
    examples: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Handler


COMMANDS: tuple[Command, ...] = (
    Command(
        "fetch",
        "download, verify, decrypt and atomically publish a resource",
        "examples:\n"
        "  loader fetch --folder models --name yolo.bin --out /data/yolo.bin\n"
        "  loader fetch --folder models --name yolo.bin --version 3 --out /data/yolo.bin \\\n"
        "      --cache-dir /var/cache/loader --json\n",
        arguments.fetch,
        cmd_fetch,
    ),
    Command(
        "verify",
        "check a file's SHA-256 (no credentials needed)",
        "examples:\n  loader verify --file /data/yolo.bin --sha256 3a7bd3e2360a3d...\n",
        arguments.verify,
        cmd_verify,
    ),
    Command(
        "upload",
        "encrypt and publish a resource (uploader role)",
        "examples:\n"
        "  loader upload --folder models --name yolo.bin ./yolo.bin\n"
        "  loader upload --folder models --name yolo.bin --version 4 ./yolo.bin --json\n",
        arguments.upload,
        cmd_upload,
    ),
    Command(
        "upload-archive",
        "encrypt and publish a `docker save` image archive (uploader role)",
        "examples:\n"
        "  docker save demo/app:1.0 -o app.tar\n"
        "  loader upload-archive --folder images --name app ./app.tar\n"
        "  loader upload-archive --folder images --name app --images demo/app:1.0 ./app.tar\n",
        arguments.upload_archive,
        cmd_upload_archive,
    ),
    Command(
        "unlock",
        "fetch, decrypt and load an image archive into Docker or containerd, check its images",
        "examples:\n"
        "  loader unlock --archive-folder images --archive-name app\n"
        "  loader unlock --archive-folder images --archive-name app --images demo/app:1.0\n"
        "  loader unlock --archive-folder images --archive-name app --runtime containerd \\\n"
        "      --socket /run/k3s/containerd/containerd.sock\n",
        arguments.unlock,
        cmd_unlock,
    ),
    Command(
        "unlock-fetch",
        "first half of unlock: key fragment and encrypted archive into --workdir (no Docker)",
        "examples:\n"
        "  loader unlock-fetch --archive-folder images --archive-name app --workdir /work\n"
        "leaves /work/archive.enc (digest checked) and /work/fragment.json\n",
        arguments.unlock_fetch,
        cmd_unlock_fetch,
    ),
    Command(
        "unlock-load",
        "second half of unlock: decrypt --workdir into Docker or containerd (no credentials)",
        "examples:\n"
        "  loader unlock-load --workdir /work\n"
        "  loader unlock-load --workdir /work --runtime containerd --pin\n"
        "  loader unlock-load --workdir /work --images demo/app:1.0 --result-file "
        "/dev/termination-log\n",
        arguments.unlock_load,
        cmd_unlock_load,
    ),
    Command(
        "fingerprint",
        "print this machine's hardware fingerprint and its inputs",
        "examples:\n"
        "  loader fingerprint\n"
        "  LOADER_HW_MACHINE_ID=$(cat /etc/machine-id) LOADER_HW_ARCH=arm64 loader fingerprint\n",
        arguments.fingerprint,
        cmd_fingerprint,
    ),
)
"""Every built-in subcommand, in the order ``loader --help`` lists them."""
