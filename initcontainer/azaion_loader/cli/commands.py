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
import importlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from azaion_loader.cli import arguments
from azaion_loader.errors import IntegrityError, TargetError
from azaion_loader.pipeline import file_sha256, reuse_big_allocations
from azaion_loader.progress import Progress
from azaion_loader.settings import LoaderSettings
from azaion_loader.workdir import ArchiveCheck

if TYPE_CHECKING:
    from azaion_loader.api_client import ApiClient
    from azaion_loader.cdn import CdnClient
    from azaion_loader.engine import ImageEngine
    from azaion_loader.models import UnlockLoadResult, UploadResult

__all__ = ["COMMANDS", "EXTERNALS", "Command", "External", "Outcome"]

log = logging.getLogger(__name__)

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
    quiet = getattr(args, "no_progress", False) or getattr(args, "quiet", False)
    return Progress(label, total, enabled=not quiet)


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
    reuse_big_allocations()
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
        resource_format=args.format,
    )
    bar.finish()
    return _upload_doc(result, plain_size=result.plain_size, plain_sha256=result.plain_sha256), (
        f"uploaded {result.folder}/{result.name} version {result.version} "
        f"({result.plain_size} bytes)"
    )


def cmd_upload_archive(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader upload-archive``."""
    reuse_big_allocations()
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
        archive_format=args.format,
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


_LISTED = ("folder", "name", "owner", "latest", "versions")
"""The fields of a listing entry that ``loader ls --json`` passes on."""


def _listing_rows(kind: str, items: list[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    from azaion_loader.redact import printable

    rows: list[tuple[str, ...]] = []
    for item in items:
        versions = [str(v.get("version")) for v in item.get("versions") or []]
        rows.append(
            (
                kind.rstrip("s"),
                printable(f"{item.get('folder')}/{item.get('name')}", 200),
                printable(str(item.get("latest")), 100),
                printable(" ".join(versions), 300),
            )
        )
    return rows


def _table(rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell; the last one is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]])
        for row in rows
    )


def cmd_ls(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader ls``: what this user may fetch, with every version."""
    api = _api(settings)
    kinds = (args.kind,) if args.kind else ("resources", "archives")
    listing = {kind: list(api.list_entries(kind, args.folder)) for kind in kinds}
    doc: dict[str, Any] = {"folder": args.folder}
    for kind, items in listing.items():
        doc[kind] = [{k: item[k] for k in _LISTED if k in item} for item in items]
    rows = [row for kind, items in listing.items() for row in _listing_rows(kind, items)]
    where = f" in folder {args.folder}" if args.folder else ""
    if not rows:
        return doc, f"nothing published{where}"
    return doc, _table([("KIND", "FOLDER/NAME", "LATEST", "VERSIONS (oldest first)"), *rows])


def cmd_completion(args: argparse.Namespace, settings: LoaderSettings) -> Outcome:
    """``loader completion``: the shell's completion script on stdout."""
    from azaion_loader.cli import completion

    text = completion.script(args.shell, completion.describe([*COMMANDS, *EXTERNALS]))
    return {"shell": args.shell, "script": text}, text.rstrip("\n")


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, its help, its examples, its options and its handler."""

    name: str
    help: str
    examples: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Handler

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Add this subcommand's options, and those every subcommand has, to ``parser``."""
        arguments.common(parser)
        arguments.verbosity(parser)
        self.arguments(parser)


@dataclass(frozen=True)
class External:
    """A long-running subcommand in a module of its own (it needs the ``server`` extra).

    The module is imported only when its subcommand is named, so the other
    commands do not pay for the server; it offers ``add_arguments``, ``run``
    and its examples as ``EPILOG``.
    """

    name: str
    module_name: str
    help: str

    def load(self) -> ModuleType | None:
        """The module, or None if it cannot be imported (the extra is not installed)."""
        try:
            return importlib.import_module(self.module_name)
        except ImportError as exc:
            log.debug("cannot import %s: %s", self.module_name, exc)
            return None

    def configure(self, parser: argparse.ArgumentParser) -> None:
        """Import the module and add its options to ``parser`` (for completion)."""
        self.add_options(parser, self.load())

    @staticmethod
    def add_options(parser: argparse.ArgumentParser, module: ModuleType | None) -> None:
        """``-q``/``-v`` and the module's options; without the module, a placeholder
        that takes any arguments (``run`` then says what to install)."""
        arguments.verbosity(parser)
        if module is not None and hasattr(module, "add_arguments"):
            module.add_arguments(parser)
        else:
            parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


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
    Command(
        "ls",
        "list the resources and image archives this user may fetch, with their versions",
        "examples:\n  loader ls\n  loader ls --folder models\n  loader ls --kind archives --json\n",
        arguments.ls,
        cmd_ls,
    ),
    Command(
        "completion",
        "print the shell completion script for bash, zsh or fish",
        "examples:\n"
        "  source <(loader completion bash)        # in ~/.bashrc\n"
        "  source <(loader completion zsh)         # in ~/.zshrc, after compinit\n"
        "  loader completion fish > ~/.config/fish/completions/loader.fish\n",
        arguments.completion,
        cmd_completion,
    ),
)
"""Every built-in subcommand, in the order ``loader --help`` lists them."""

EXTERNALS: tuple[External, ...] = (
    External(
        "dev-stack",
        "azaion_loader.server.devstack",
        "run the reference API, moto S3 and demo data on loopback until interrupted",
    ),
    External("serve-api", "azaion_loader.server.cli", "run the reference API server"),
)
"""The long-running subcommands, listed after the built-in ones."""
