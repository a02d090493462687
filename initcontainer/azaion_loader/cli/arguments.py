"""Each subcommand's options (argparse), one function per subcommand, and the shared ones."""

from __future__ import annotations

import argparse

__all__ = [
    "common",
    "completion",
    "fetch",
    "fingerprint",
    "ls",
    "unlock",
    "unlock_fetch",
    "unlock_load",
    "upload",
    "upload_archive",
    "verbosity",
    "verify",
]

Parser = argparse.ArgumentParser


def common(parser: Parser) -> None:
    """``--json`` and ``--result-file``: every command that runs once has them."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON result line on stdout at the end"
    )
    parser.add_argument(
        "--result-file",
        metavar="PATH",
        help="also write the JSON result line to PATH (e.g. /dev/termination-log)",
    )


def verbosity(parser: Parser) -> None:
    """``-q`` and ``-v``: every subcommand has them; they beat ``LOADER_LOG_LEVEL``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="errors only on stderr: no progress, no log line below ERROR",
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", help="debug log lines on stderr (level DEBUG)"
    )


def _progress(parser: Parser) -> None:
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar or progress lines on stderr"
    )


def _engine(parser: Parser) -> None:
    parser.add_argument(
        "--runtime",
        choices=("docker", "containerd"),
        help="the container runtime to load into (LOADER_RUNTIME; default docker)",
    )
    parser.add_argument(
        "--socket", metavar="PATH", help="the runtime's socket (LOADER_RUNTIME_SOCKET)"
    )
    parser.add_argument(
        "--namespace",
        metavar="NS",
        help="containerd namespace (LOADER_CONTAINERD_NAMESPACE; default k8s.io)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="containerd: label the images pinned, so image garbage collection keeps them",
    )
    parser.add_argument(
        "--forbid-repository",
        action="append",
        default=[],
        metavar="REPO",
        help="refuse the archive if it holds a tag of REPO (repeatable; e.g. the Jobs' image)",
    )


def _archive(parser: Parser) -> None:
    parser.add_argument("--archive-folder", required=True, help="archive folder (CDN bucket)")
    parser.add_argument("--archive-name", required=True, help="archive name")
    parser.add_argument("--version", help="a specific version (default: the latest)")


def fetch(parser: Parser) -> None:
    parser.add_argument("--folder", required=True, help="resource folder (CDN bucket)")
    parser.add_argument("--name", required=True, help="resource name")
    parser.add_argument("--out", required=True, metavar="PATH", help="where to publish the file")
    parser.add_argument("--version", help="a specific version (default: the latest)")
    parser.add_argument("--cache-dir", metavar="DIR", help="big-part cache (LOADER_CACHE_DIR)")
    _progress(parser)


def verify(parser: Parser) -> None:
    parser.add_argument("--file", required=True, metavar="PATH", help="the file to check")
    parser.add_argument("--sha256", required=True, metavar="HEX", help="the expected digest")


def _format(parser: Parser, what: str, section: str) -> None:
    parser.add_argument(
        "--format",
        type=int,
        choices=(1, 2),
        default=2,
        help=f"{what} format (docs/protocol.md {section}): 2, AES-256-GCM segments (default), "
        "or 1, AES-256-CBC, for loaders that predate format 2",
    )


def upload(parser: Parser) -> None:
    parser.add_argument("--folder", required=True, help="resource folder (CDN bucket)")
    parser.add_argument("--name", required=True, help="resource name")
    parser.add_argument("--version", help="version to register (default: digest prefix)")
    parser.add_argument("--cache-dir", metavar="DIR", help="also keep the big part here")
    _format(parser, "resource", "§5")
    parser.add_argument("file", metavar="FILE", help="the file to publish")
    _progress(parser)


def upload_archive(parser: Parser) -> None:
    parser.add_argument("--folder", required=True, help="archive folder (CDN bucket)")
    parser.add_argument("--name", required=True, help="archive name")
    parser.add_argument("--version", help="version to register (default: digest prefix)")
    parser.add_argument(
        "--images", nargs="+", metavar="IMAGE", help="images to record (default: RepoTags)"
    )
    _format(parser, "archive", "§6")
    parser.add_argument("archive", metavar="ARCHIVE.tar", help="a `docker save` archive")
    _progress(parser)


def unlock(parser: Parser) -> None:
    _archive(parser)
    parser.add_argument("--images", nargs="+", metavar="IMAGE", help="images to check")
    _engine(parser)
    _progress(parser)


def unlock_fetch(parser: Parser) -> None:
    _archive(parser)
    parser.add_argument("--workdir", required=True, metavar="DIR", help="shared directory")
    _progress(parser)


def unlock_load(parser: Parser) -> None:
    parser.add_argument("--workdir", required=True, metavar="DIR", help="left by unlock-fetch")
    parser.add_argument(
        "--images",
        nargs="+",
        metavar="IMAGE",
        help="images to check (default: manifest.json RepoTags, else the API's list)",
    )
    _engine(parser)
    _progress(parser)


def fingerprint(parser: Parser) -> None:
    del parser  # no options of its own


def ls(parser: Parser) -> None:
    parser.add_argument("--folder", help="only this folder (CDN bucket)")
    parser.add_argument(
        "--kind",
        choices=("resources", "archives"),
        help="only resources or only image archives (default: both)",
    )


SHELLS = ("bash", "zsh", "fish")


def completion(parser: Parser) -> None:
    parser.add_argument("shell", choices=SHELLS, help="the shell to print the script for")
