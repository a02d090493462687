"""Benchmark: `loader fetch` against a raw S3 download of the same big part, in one run.

    .venv/bin/python bench/fetch.py --sizes 1024 4096 --repeat 3      # MiB
    .venv/bin/python bench/fetch.py --sizes 1024 --repeat 5 --out-dir /dev/shm \
        --compare-format 1                          # tmpfs target; format 2 against format 1
    .venv/bin/python bench/fetch.py --sizes 1024 --repeat 5 --out-dir /dev/shm --format 1 \
        --compare-source /tmp/old/initcontainer     # A/B against another tree

Starts moto's S3 server (`moto_server`, its own process) and the reference API
server on 127.0.0.1 (bench/benchstack.py) and publishes a random resource of
each size: encrypted by the toolkit's own crypto, its big part put on S3 with
one streaming PUT (moto's multipart completion holds about four copies of the
object in memory, which fails with HTTP 500 at 4 GiB on a 24 GiB machine), then
registered with the API.  Then, ``--repeat`` times in turn, each as a separate
process under /usr/bin/time (wall time including process start, peak RSS):

- raw: one boto3 GET of ``<name>.big`` streamed to a file in 1 MiB chunks,
  then one fsync at the end, so its durability matches the loader's atomic
  publish (the baseline of the ratio);
- raw, no fsync: the same without the fsync (a floor, for reference);
- `loader fetch` (no cache): login, envelope, GET, the format's checks and
  decryption (format 2: each segment's AES-GCM tag; format 1: SHA-256 of the
  ciphertext and AES-256-CBC), temporary file, fsync, rename (the record carries
  the plaintext's SHA-256, registered like `loader upload` does, so fetch
  does not hash the plaintext).

Medians are reported; RSS is the highest seen.  The output file is removed
between runs, so every run writes a new file.  ``--out-dir`` puts it (for
every side) elsewhere, e.g. on tmpfs (``/dev/shm``), where the disk no longer
decides both sides and the software's own cost shows.  ``--compare-source DIR``
also runs ``loader fetch`` (and, with ``--cache-hit``, its cache hits) from
another checkout's ``initcontainer`` in the same rounds (an A/B in one run;
``--format 1`` for trees that predate format 2).  The resource is published in
``--format`` (default 2, what `loader upload` writes); ``--compare-format F``
also publishes a copy in format F and fetches it in the same rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from azaion_loader.api_client import ApiClient
from azaion_loader.crypto import Encryptor, new_key, split_point
from azaion_loader.fingerprint import compute_fingerprint
from azaion_loader.models import FORMAT_SEGMENTED, b64encode
from azaion_loader.segmented import SegmentEncryptor
from azaion_loader.settings import Credentials
from benchstack import (
    LOADER,
    RAW_S3_CLIENT,
    READ,
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

THREAD_CPU = Path(__file__).with_name("thread_cpu.py")


def thread_cpu(stderr: str) -> dict[str, float]:
    """The per-thread CPU line bench/thread_cpu.py printed."""
    for line in stderr.splitlines():
        if line.startswith("thread-cpu "):
            return dict(json.loads(line[len("thread-cpu ") :]))
    raise SystemExit(f"no thread-cpu line in: {stderr[-500:]}")


BASELINE = (
    RAW_S3_CLIENT
    + r"""
bucket, key, out, sync = sys.argv[2:6]
body = s3.get_object(Bucket=bucket, Key=key)["Body"]  # one stream, like the loader
with open(out, "wb") as f:
    while chunk := body.read(1 << 20):
        f.write(chunk)
    if sync == "1":
        os.fsync(f.fileno())
"""
)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def publish(stack: Stack, name: str, mib: int, fmt: int) -> tuple[str, bytes, bytes]:
    """Publish ``mib`` MiB of random data as ``bench/<name>`` in resource format ``fmt``.

    Returns the plaintext's SHA-256, the key and, for format 1, the IV of the
    big part (the small part's last block: CBC chains on the ciphertext).
    """
    key = new_key()
    cipher_path = stack.work / f"{name}.enc"
    plain_digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(cipher_path, "wb") as f:
        if fmt == FORMAT_SEGMENTED:
            sealer = SegmentEncryptor(key)
            for i in range(mib):
                plain = block[i % 997 :] + block[: i % 997]
                plain_digest.update(plain)
                for piece in sealer.seal(plain, last=i == mib - 1):
                    f.write(piece)
            digest = sealer.digest
        else:
            enc = Encryptor(key)
            digest = hashlib.sha256()
            for i in range(mib):
                plain = block[i % 997 :] + block[: i % 997]
                plain_digest.update(plain)
                out = enc.update(plain)
                digest.update(out)
                f.write(out)
            out = enc.finalize()
            digest.update(out)
            f.write(out)
    size = cipher_path.stat().st_size
    small_size = split_point(size)
    s3 = stack.s3_client()
    with open(cipher_path, "rb") as f:
        small = f.read(small_size)
        s3.put_object(Bucket="bench", Key=f"{name}.big", Body=f, ContentLength=size - small_size)
    cipher_path.unlink()
    api = ApiClient(
        stack.api_url,
        Credentials(stack.env["LOADER_EMAIL"], stack.env["LOADER_PASSWORD"]),
        fingerprint=compute_fingerprint("be" * 16, "amd64"),
    )
    body = {
        "small": b64encode(small),
        "key": b64encode(key),
        "sha256": digest.hexdigest(),
        "size": size,
        "plain_size": mib << 20,
        "plain_sha256": plain_digest.hexdigest(),
    }
    if fmt == FORMAT_SEGMENTED:
        body["format"] = fmt
    api.put_resource("bench", name, body)
    return plain_digest.hexdigest(), key, small[-16:]


DECRYPT_FLOOR = r"""
import os, sys, time
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
path, key, iv = sys.argv[1], bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
if iv:
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
else:  # format 2: the same GCM decryption without the tags (they cost ~nothing)
    dec = Cipher(algorithms.AES(key), modes.GCM(bytes(12))).decryptor()
buf, out = bytearray(2 << 20), bytearray((2 << 20) + 16)
view = memoryview(buf)
start, cpu = time.monotonic(), time.process_time()
with open(path, "rb", buffering=0) as f:
    while n := f.readinto(buf):
        dec.update_into(view[:n], out)
print(time.monotonic() - start, time.process_time() - cpu)
"""
"""Read the cached big part and decrypt it into a reused buffer (writes nothing); prints the
loop's wall and CPU seconds, without the interpreter's start and imports."""


def cache_hits(
    args: argparse.Namespace,
    stack: Stack,
    name: str,
    mib: int,
    out: Path,
    plain_sha: str,
    key: str,
    iv: str,
) -> list[str]:
    """Time fetches from a warm cache against ``cp`` of the cached big part + decryption floor."""
    cache = Path(args.out_dir or stack.work) / f"azaion-bench-cache-{os.getpid()}"
    env = dict(stack.env, LOADER_CACHE_DIR=str(cache))
    command = [*LOADER, "fetch", "--folder", "bench", "--name", name]
    command += ["--out", str(out), "--no-progress", "--json"]
    timed(command, env)  # warms the cache
    out.unlink()
    big = cache / "bench" / f"{name}.big"
    copies: list[Run] = []
    floors: list[float] = []
    hits: list[Run] = []
    other: list[Run] = []
    other_env = dict(env, PYTHONPATH=args.compare_source or "")
    for _ in range(args.repeat):
        copies.append(timed(["cp", str(big), str(out)], env))
        out.unlink()
        floor = timed([sys.executable, "-c", DECRYPT_FLOOR, str(big), key, iv], env)
        floors.append(float(floor.stdout.split()[0]))
        for runs, run_env in ((hits, env), (other, other_env)):
            if runs is other and not args.compare_source:
                continue
            run = timed(command, run_env)
            if '"cache":"hit"' not in run.stdout or f'"sha256":"{plain_sha}"' not in run.stdout:
                raise SystemExit(f"the cached fetch of {name} did not hit or verify: {run.stdout}")
            if file_sha256(out) != plain_sha:
                raise SystemExit(f"the cached fetch of {name} wrote the wrong plaintext")
            runs.append(run)
            out.unlink()
        compared = (
            f"; from {args.compare_source} {other[-1].wall:.2f}s CPU {other[-1].cpu:.2f}s"
            if other
            else ""
        )
        print(
            f"  {mib} MiB cache hit: cp {copies[-1].wall:.2f}s + floor {floors[-1]:.2f}s, "
            f"fetch {hits[-1].wall:.2f}s (CPU {hits[-1].cpu:.2f}s){compared}",
            flush=True,
        )
    subprocess.run(["rm", "-rf", str(cache)], check=False)
    c_wall, _ = summary(copies)
    floor_wall = statistics.median(floors)
    h_wall, h_rss = summary(hits)
    if other:
        o_wall, o_rss = summary(other)
        print(
            f"  {mib} MiB cache hit from {args.compare_source}: {o_wall:.2f} s "
            f"({o_wall / (c_wall + floor_wall):.2f}x), CPU {median_cpu(other):.2f} s, "
            f"peak RSS {o_rss:.0f} MiB"
        )
    return [
        f"{mib} MiB",
        f"{c_wall:.2f} s",
        f"{floor_wall:.2f} s",
        f"{c_wall + floor_wall:.2f} s",
        f"{h_wall:.2f} s",
        f"**{h_wall / (c_wall + floor_wall):.2f}x**",
        f"{h_rss:.0f} MiB",
        f"{median_cpu(copies):.2f} s / {median_cpu(hits):.2f} s",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024, 4096], help="MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--out-dir", metavar="DIR", help="where the file is written (e.g. /dev/shm)"
    )
    parser.add_argument(
        "--cache-hit",
        action="store_true",
        help="also time fetches served from a warm cache (beside --out-dir) against `cp` of the "
        "cached big part plus its decryption floor",
    )
    parser.add_argument(
        "--threads",
        action="store_true",
        help="run fetch under bench/thread_cpu.py and report its CPU per thread",
    )
    add_format_arguments(parser, "publish and fetch")
    parser.add_argument(
        "--compare-source",
        metavar="DIR",
        help="also run fetch from this initcontainer/ directory (e.g. of HEAD)",
    )
    args = parser.parse_args()

    print(f"command: {command_line()}")
    print(f"before: {uptime()}", flush=True)
    rows = []
    cache_rows: list[list[str]] = []
    with Stack() as stack:
        stack.s3_client().create_bucket(Bucket="bench")
        out = Path(args.out_dir or stack.work) / f"azaion-bench-out-{os.getpid()}"
        other_env = dict(stack.env, PYTHONPATH=args.compare_source or "")
        compared = args.compare_source or args.compare_format
        other_label = " ".join(
            filter(
                None, [args.compare_source, args.compare_format and f"format {args.compare_format}"]
            )
        )
        for mib in args.sizes:
            name = f"r{mib}"
            plain_sha, key, big_iv = publish(stack, name, mib, args.format)
            other_name, other_sha = name, plain_sha
            if args.compare_format:
                other_name = f"r{mib}-f{args.compare_format}"
                other_sha, _, _ = publish(stack, other_name, mib, args.compare_format)
            raw: list[Run] = []
            raw_nosync: list[Run] = []
            fetch: list[Run] = []
            other: list[Run] = []
            threads: list[dict[str, float]] = []
            other_threads: list[dict[str, float]] = []
            for _ in range(args.repeat):
                for sync, runs in (("1", raw), ("0", raw_nosync)):
                    runs.append(
                        timed(
                            [
                                sys.executable,
                                "-c",
                                BASELINE,
                                stack.s3_url,
                                "bench",
                                f"{name}.big",
                                str(out),
                                sync,
                            ],
                            stack.raw_env(READ),
                        )
                    )
                    out.unlink()
                loader = [sys.executable, str(THREAD_CPU)] if args.threads else LOADER
                for runs, env, rname, sha in (
                    (fetch, stack.env, name, plain_sha),
                    (other, other_env, other_name, other_sha),
                ):
                    if runs is other and not compared:
                        continue
                    command = [*loader, "fetch", "--folder", "bench", "--name", rname]
                    command += ["--out", str(out), "--no-progress", "--json"]
                    run = timed(command, env)
                    if f'"sha256":"{sha}"' not in run.stdout:
                        raise SystemExit(
                            f"fetch of {rname} returned the wrong digest: {run.stdout}"
                        )
                    # Untimed: the file itself, as `loader verify` checks it in a Job.
                    if file_sha256(out) != sha:
                        raise SystemExit(f"fetch of {rname} wrote a file that is not the plaintext")
                    runs.append(run)
                    if args.threads:
                        (threads if runs is fetch else other_threads).append(thread_cpu(run.stderr))
                    out.unlink()
                also = (
                    f"; {other_label} {other[-1].wall:.2f}s CPU {other[-1].cpu:.2f}s"
                    if other
                    else ""
                )
                print(
                    f"  {mib} MiB: raw {raw[-1].wall:.2f}s fetch {fetch[-1].wall:.2f}s "
                    f"(CPU {raw[-1].cpu:.2f}s / {fetch[-1].cpu:.2f}s){also}",
                    flush=True,
                )
            for label, profiled in (("fetch", threads), (other_label, other_threads)):
                if not profiled:
                    continue
                first = profiled[0]
                names = sorted({k for t in profiled for k in t}, key=lambda k: -first.get(k, 0))
                cpu = ", ".join(
                    f"{k} {statistics.median(t.get(k, 0.0) for t in profiled):.2f}" for k in names
                )
                print(f"  {mib} MiB {label} CPU per thread (s, medians): {cpu}")
            r_wall, r_rss = summary(raw)
            n_wall, _ = summary(raw_nosync)
            f_wall, f_rss = summary(fetch)
            if other:
                o_wall, o_rss = summary(other)
                print(
                    f"  {mib} MiB {other_label}: {o_wall:.2f} s "
                    f"({o_wall / r_wall:.2f}x), CPU {median_cpu(other):.2f} s, "
                    f"peak RSS {o_rss:.0f} MiB"
                )
            rows.append(
                [
                    f"{mib} MiB",
                    f"{r_wall:.2f} s",
                    f"{n_wall:.2f} s",
                    f"{f_wall:.2f} s",
                    f"**{f_wall / r_wall:.2f}x**",
                    f"{r_rss:.0f} MiB",
                    f"{f_rss:.0f} MiB",
                    f"{mib / f_wall:.0f} MiB/s",
                    f"{median_cpu(raw):.2f} s / {median_cpu(fetch):.2f} s",
                    f"{median_cpu(raw) * 1024 / mib:.2f} s / "
                    f"{median_cpu(fetch) * 1024 / mib:.2f} s",
                    f"**{median_cpu(fetch) / median_cpu(raw):.2f}x**",
                ]
            )
            Path(out).unlink(missing_ok=True)
            if args.cache_hit:
                cache_rows.append(
                    cache_hits(
                        args,
                        stack,
                        name,
                        mib,
                        out,
                        plain_sha,
                        key.hex(),
                        big_iv.hex() if args.format == 1 else "",
                    )
                )
    print(f"after: {uptime()}")
    print()
    print(
        markdown_table(
            [
                "size",
                "raw GET + fsync",
                "raw GET, no fsync",
                "`loader fetch`",
                "ratio",
                "raw peak RSS",
                "fetch peak RSS",
                "fetch rate",
                "CPU raw / fetch",
                "CPU per GiB raw / fetch",
                "CPU ratio",
            ],
            rows,
        )
    )
    if cache_rows:
        print()
        print(
            markdown_table(
                [
                    "size",
                    "`cp` of the cached big part",
                    "decryption floor",
                    "cp + floor",
                    "`loader fetch`, cache hit",
                    "ratio",
                    "fetch peak RSS",
                    "CPU cp / fetch",
                ],
                cache_rows,
            )
        )
    print(
        f"\nmedians of {args.repeat} runs; ratio = fetch / (raw GET + fsync); wall times "
        "include process start (and, for fetch, login and the envelope); CPU = user + system "
        "seconds of the process, which the machine's load does not change"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
