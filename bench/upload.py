"""Benchmark: `loader upload` against a raw S3 upload of a file of the same size, in one run.

    .venv/bin/python bench/upload.py --sizes 256 1024 --repeat 3      # MiB
    .venv/bin/python bench/upload.py --sizes 1024 --repeat 5 --src-dir /dev/shm   # source on tmpfs

Starts moto's S3 server (`moto_server`, its own process) and the reference API
server on 127.0.0.1 (bench/benchstack.py), writes a random file of each size,
then, ``--repeat`` times in turn, each as a separate process under
/usr/bin/time (wall time including process start, peak RSS):

- raw: boto3 ``upload_file`` of the plaintext file to ``<name>.raw``: a
  multipart upload with the loader's part size and concurrency
  (``azaion_loader.cdn.PART_SIZE``, 3 parts in flight), no checksums;
- `loader upload`: login, CDN settings, one streaming pass that encrypts
  (format 2: AES-256-GCM segments; ``--format 1``: AES-256-CBC and SHA-256 of
  the ciphertext), hashes the plaintext (SHA-256) and sends the big part as a
  multipart upload, then the registration with the API.  Every run registers
  a new version (the default, the digest's prefix).

Medians are reported; RSS is the highest seen.  Memory is constant when the
peak RSS at the largest size equals that at the smallest.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from azaion_loader.cdn import PART_SIZE
from benchstack import (
    LOADER,
    RAW_S3_CLIENT,
    WRITE,
    Run,
    Stack,
    add_format_arguments,
    command_line,
    make_file,
    markdown_table,
    median_cpu,
    summary,
    timed,
    uptime,
)

BASELINE = (
    RAW_S3_CLIENT
    + r"""
from boto3.s3.transfer import TransferConfig
bucket, key, path, part = sys.argv[2:6]
cfg = TransferConfig(multipart_threshold=int(part), multipart_chunksize=int(part),
                     max_concurrency=3)
s3.upload_file(path, bucket, key, Config=cfg)
"""
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 1024], help="MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--compare-source",
        metavar="DIR",
        help="also run upload from this initcontainer/ directory (e.g. of HEAD)",
    )
    add_format_arguments(parser, "upload")
    parser.add_argument(
        "--src-dir",
        metavar="DIR",
        help="where the file to upload is written (e.g. /dev/shm: the disk decides neither side)",
    )
    args = parser.parse_args()
    if args.compare_source and args.compare_format:
        parser.error("--compare-source and --compare-format: one of the two")
    other_label = args.compare_source or f"format {args.compare_format}"

    print(f"command: {command_line()}")
    print(f"before: {uptime()}", flush=True)
    rows = []
    with Stack() as stack:
        stack.s3_client().create_bucket(Bucket="bench")
        other_env = dict(stack.env, PYTHONPATH=args.compare_source or "")
        for mib in args.sizes:
            name = f"u{mib}"
            src = Path(args.src_dir or stack.work) / f"azaion-bench-{name}-{os.getpid()}"
            make_file(src, mib)
            raw: list[Run] = []
            upload: list[Run] = []
            other: list[Run] = []
            for _ in range(args.repeat):
                raw.append(
                    timed(
                        [
                            sys.executable,
                            "-c",
                            BASELINE,
                            stack.s3_url,
                            "bench",
                            f"{name}.raw",
                            str(src),
                            str(PART_SIZE),
                        ],
                        stack.raw_env(WRITE),
                    )
                )
                command = [*LOADER, "upload", "--folder", "bench", "--name", name]
                command += ["--no-progress", "--json", str(src)]
                run = timed([*command, "--format", str(args.format)], stack.env)
                upload.append(run)
                if args.compare_source or args.compare_format:
                    s3 = stack.s3_client()
                    s3.delete_object(Bucket="bench", Key=f"{name}.big")
                    if args.compare_format:
                        command += ["--format", str(args.compare_format)]
                    other.append(timed(command, other_env))
                    print(
                        f"  {mib} MiB {other_label}: {other[-1].wall:.2f}s "
                        f"(CPU {other[-1].cpu:.2f}s)",
                        flush=True,
                    )
                print(
                    f"  {mib} MiB: raw {raw[-1].wall:.2f}s upload {run.wall:.2f}s "
                    f"(CPU {raw[-1].cpu:.2f}s / {run.cpu:.2f}s)",
                    flush=True,
                )
                # moto keeps every object in memory: drop them between runs
                s3 = stack.s3_client()
                for key in (f"{name}.raw", f"{name}.big"):
                    s3.delete_object(Bucket="bench", Key=key)
            src.unlink()
            if other:
                o_wall, o_rss = summary(other)
                print(
                    f"  {mib} MiB {other_label}: {o_wall:.2f} s, CPU "
                    f"{median_cpu(other):.2f} s, peak RSS {o_rss:.0f} MiB"
                )
            r_wall, r_rss = summary(raw)
            u_wall, u_rss = summary(upload)
            rows.append(
                [
                    f"{mib} MiB",
                    f"{r_wall:.2f} s",
                    f"{u_wall:.2f} s",
                    f"**{u_wall / r_wall:.2f}x**",
                    f"{r_rss:.0f} MiB",
                    f"{u_rss:.0f} MiB",
                    f"{mib / u_wall:.0f} MiB/s",
                    f"{median_cpu(raw):.2f} s / {median_cpu(upload):.2f} s",
                    f"{median_cpu(raw) * 1024 / mib:.2f} s / "
                    f"{median_cpu(upload) * 1024 / mib:.2f} s",
                    f"**{median_cpu(upload) / median_cpu(raw):.2f}x**",
                ]
            )
    print(f"after: {uptime()}")
    print()
    print(
        markdown_table(
            [
                "size",
                "raw S3 upload",
                "`loader upload`",
                "ratio",
                "raw peak RSS",
                "upload peak RSS",
                "upload rate",
                "CPU raw / upload",
                "CPU per GiB raw / upload",
                "CPU ratio",
            ],
            rows,
        )
    )
    print(
        f"\nmedians of {args.repeat} runs; ratio = upload / raw; wall times include process "
        "start (and, for the loader, login, CDN settings and registration)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
