"""Benchmark: `loader unlock-load` against the engine's own load of the plaintext archive.

    .venv/bin/python bench/unlock.py --mib 256 --repeat 3
    .venv/bin/python bench/unlock.py --compare-source /tmp/head/initcontainer
    .venv/bin/python bench/unlock.py --runtime containerd --mib 256 --repeat 5
    .venv/bin/python bench/unlock.py --mib 256 --repeat 5 --compare-format 1 [--fetch]

Needs a Docker engine that answers (``scripts/dockerd start``).  Starts moto's
S3 server and the reference API server on 127.0.0.1 (bench/benchstack.py),
builds an image archive of about ``--mib`` MiB: ``docker import`` of a root
filesystem of random (incompressible) files, ``docker save``, image removed
(through ``azaion_loader.docker_cli.DockerCli``).  Publishes it with ``loader
upload-archive`` and fetches it once with ``loader unlock-fetch`` into a work
directory.  Then, ``--repeat`` times in turn, each as a separate process under
/usr/bin/time (wall time including process start, peak RSS), with the image
removed from the engine and ``sync`` run before every run:

- baseline: ``docker load -i plain.tar`` (the plaintext archive);
- for reference, ``cat plain.tar | docker load``: what feeding ``docker load``
  through a pipe costs by itself (the loader must use a pipe: no plaintext on
  disk);
- `loader unlock-load --workdir W`: ``archive.enc`` checked again (format 1:
  its SHA-256; format 2: every AES-GCM segment opened, the tags read in that
  pass), then the decryption (format 2: each segment checked again) streamed
  into ``docker load`` on its standard input (no plaintext on disk), then
  ``docker image inspect`` of the image.

The archive is published in ``--format`` (default 2, what `loader
upload-archive` writes); ``--compare-format F`` also publishes and fetches it
in format F, and its unlock-load runs in the same rounds (a row of its own).

With ``--compare-source DIR``, ``loader unlock-load`` from another checkout's
``initcontainer`` (put first on ``PYTHONPATH``) runs in turn with the others,
for an A/B in one run (on the ``--format`` archive: a tree that predates
archive format 2 needs ``--format 1``).

With ``--fetch``, each round also times ``loader unlock-fetch`` of each
format into a fresh work directory (the key fragment from the API, ``E`` from
moto, checked while it downloads: format 1 by SHA-256, format 2 by opening
every segment), for a table of its own.

With ``--runtime containerd`` the engine is a private containerd
(hack/private_containerd.py: Debian's containerd, own root and socket, on the
same disk): the baseline is ``ctr -n k8s.io images import plain.tar``, the
reference ``cat plain.tar | ctr ... import -``, and unlock-load runs with
``--runtime containerd``; the image is removed and containerd's content
garbage-collected (``ctr images rm --sync``) before each run.

Medians are reported; RSS is the highest seen (for the baseline, the docker
CLI's; the engine's own work is in the wall time of both).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from azaion_loader.docker_cli import DockerCli
from azaion_loader.engine import normalize_reference
from azaion_loader.errors import LoaderError
from benchstack import (
    LOADER,
    Run,
    Stack,
    add_format_arguments,
    command_line,
    markdown_table,
    median_cpu,
    summary,
    timed,
    uptime,
)

FILE_MIB = 32


def rootfs_chunks(mib: int) -> Iterator[bytes]:
    """A root filesystem tar of ``mib`` MiB of random files, produced chunk by chunk."""
    block = os.urandom(1 << 20)
    files = max(1, mib // FILE_MIB)
    for n in range(files):
        header = tarfile.TarInfo(f"data/blob-{n}.bin")
        header.size = FILE_MIB << 20
        header.mode = 0o644
        yield header.tobuf(format=tarfile.GNU_FORMAT)
        for i in range(FILE_MIB):
            k = (n * FILE_MIB + i) % 997
            yield block[k:] + block[:k]
    yield b"\0" * tarfile.RECORDSIZE  # end-of-archive blocks, padded to a record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="archive size in MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--compare-source",
        metavar="DIR",
        help="also run unlock-load from this initcontainer/ directory (e.g. of HEAD)",
    )
    parser.add_argument(
        "--runtime",
        choices=("docker", "containerd"),
        default="docker",
        help="load into the host's Docker, or into a private containerd",
    )
    add_format_arguments(parser, "publish and unlock")
    parser.add_argument(
        "--fetch", action="store_true", help="also time unlock-fetch of each format, each round"
    )
    args = parser.parse_args()
    if args.runtime == "containerd":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hack"))
        from private_containerd import PrivateContainerd, missing_tools

        if why_not := missing_tools():
            raise SystemExit(why_not)
        with PrivateContainerd() as ctd:
            return measure(args, ctd)
    return measure(args, None)


def measure(args: argparse.Namespace, ctd: Any) -> int:
    """Build, publish and fetch the archive, then time the loads in turn."""

    docker = DockerCli(timeout=600)
    try:
        docker.ping()
    except LoaderError as exc:
        raise SystemExit(f"no Docker engine ({exc}); run scripts/dockerd start") from exc
    print(f"command: {command_line()}")
    print(f"before: {uptime()}", flush=True)
    ref = f"azaion-bench/unlock-{secrets.token_hex(4)}:1.0"
    with Stack() as stack:
        stack.s3_client().create_bucket(Bucket="bench")
        plain = stack.work / "plain.tar"
        docker.import_image(ref, rootfs_chunks(args.mib))
        try:
            docker.save_image([ref], plain)
        finally:
            docker.remove_image(ref, force=True)
        size_mib = plain.stat().st_size / (1 << 20)
        formats = [args.format]
        if args.compare_format and args.compare_format != args.format:
            formats.append(args.compare_format)
        works = {fmt: stack.work / f"work-f{fmt}" for fmt in formats}

        def fetch_cmd(fmt: int) -> list[str]:
            name = f"img-f{fmt}"
            return [
                "unlock-fetch",
                "--archive-folder",
                "bench",
                "--archive-name",
                name,
                "--no-progress",
            ]

        for fmt, work in works.items():
            name = f"img-f{fmt}"
            publish = ["upload-archive", "--folder", "bench", "--name", name, f"--format={fmt}"]
            timed([*LOADER, *publish, str(plain), "--no-progress"], stack.env)
            timed([*LOADER, *fetch_cmd(fmt), "--workdir", str(work)], stack.env)
        bare = {k: v for k, v in stack.env.items() if not k.startswith("LOADER_")}
        base: list[Run] = []
        piped: list[Run] = []
        loads: dict[int, list[Run]] = {fmt: [] for fmt in formats}
        fetches: dict[int, list[Run]] = {fmt: [] for fmt in formats}
        other: list[Run] = []
        runtime_args: list[str] = []
        other_env = dict(bare, PYTHONPATH=args.compare_source) if args.compare_source else bare
        if ctd is None:
            baseline = ["docker", "load", "-i", str(plain)]
            reference = ["sh", "-c", 'cat "$0" | docker load', str(plain)]
            names = ("docker load -i plain.tar", "cat plain.tar \\| docker load", "docker CLI")
        else:
            ctr = ["ctr", "--address", ctd.socket, "--namespace", "k8s.io"]
            baseline = [*ctr, "images", "import", str(plain)]
            reference = ["sh", "-c", 'cat "$0" | "$@" images import -', str(plain), *ctr]
            runtime_args = ["--runtime", "containerd", "--socket", ctd.socket]
            names = ("ctr images import plain.tar", "cat plain.tar \\| ctr images import -", "ctr")

        def unlock_load(fmt: int) -> list[str]:
            work = str(works[fmt])
            flags = ["--no-progress", "--json", *runtime_args]
            return [*LOADER, "unlock-load", "--workdir", work, *flags]

        def fresh() -> None:
            # Same start for every run: no image, and the engine's writes of
            # the run before (and of the image removal) already on disk.
            if ctd is None:
                docker.remove_image(ref, force=True)
            else:
                ctd.ctr("images", "rm", "--sync", normalize_reference(ref))
            os.sync()

        try:
            for _ in range(args.repeat):
                fresh()
                base.append(timed(baseline, bare, stdin=None))
                fresh()
                piped.append(timed(reference, bare))
                turns = [(loads[fmt], bare, fmt) for fmt in formats]
                if args.compare_source:
                    turns.append((other, other_env, args.format))
                for runs, env, fmt in turns:
                    fresh()
                    run = timed(unlock_load(fmt), env)
                    if ref not in run.stdout:
                        raise SystemExit(f"unlock-load did not report {ref}: {run.stdout}")
                    runs.append(run)
                if args.fetch:
                    for fmt in formats:
                        work = stack.work / "fetch-round"
                        fetches[fmt].append(
                            timed([*LOADER, *fetch_cmd(fmt), "--workdir", str(work)], stack.env)
                        )
                        shutil.rmtree(work)
                compared = f" (from {args.compare_source} {other[-1].wall:.2f}s)" if other else ""
                per_format = " ".join(f"format {f} {loads[f][-1].wall:.2f}s" for f in formats)
                print(
                    f"  {size_mib:.0f} MiB: {args.runtime} load {base[-1].wall:.2f}s "
                    f"(piped {piped[-1].wall:.2f}s) unlock-load {per_format}{compared}",
                    flush=True,
                )
        finally:
            fresh()
        b_wall, b_rss = summary(base)
        p_wall, _ = summary(piped)
    print(f"after: {uptime()}")
    if other:
        o_wall, o_rss = summary(other)
        print(
            f"\nunlock-load from {args.compare_source}: {o_wall:.2f} s "
            f"(**{o_wall / b_wall:.2f}x**), peak RSS {o_rss:.0f} MiB, CPU {median_cpu(other):.2f} s"
        )
    print()
    print(
        markdown_table(
            [
                "archive",
                "format",
                f"`{names[0]}`",
                f"`{names[1]}`",
                "`loader unlock-load`",
                "ratio",
                f"{names[2]} peak RSS",
                "unlock-load peak RSS",
                f"CPU {names[2]} / unlock-load",
            ],
            [
                [
                    f"{size_mib:.0f} MiB",
                    str(fmt),
                    f"{b_wall:.2f} s",
                    f"{p_wall:.2f} s ({p_wall / b_wall:.2f}x)",
                    f"{summary(loads[fmt])[0]:.2f} s",
                    f"**{summary(loads[fmt])[0] / b_wall:.2f}x**",
                    f"{b_rss:.0f} MiB",
                    f"{summary(loads[fmt])[1]:.0f} MiB",
                    f"{median_cpu(base):.2f} s / {median_cpu(loads[fmt]):.2f} s",
                ]
                for fmt in formats
            ],
        )
    )
    print(f"\nmedians of {args.repeat} runs; ratio = unlock-load / {names[0]}")
    if args.fetch:
        print()
        print(
            markdown_table(
                ["archive", "format", "`loader unlock-fetch`", "CPU (user+sys)", "peak RSS"],
                [
                    [
                        f"{size_mib:.0f} MiB",
                        str(fmt),
                        f"{summary(fetches[fmt])[0]:.2f} s",
                        f"{median_cpu(fetches[fmt]):.2f} s",
                        f"{summary(fetches[fmt])[1]:.0f} MiB",
                    ]
                    for fmt in formats
                ],
            )
        )
        print(f"\nmedians of {args.repeat} runs of unlock-fetch (API + moto on loopback)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
