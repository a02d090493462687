"""Benchmark: `loader fetch` against a raw S3 download of the same big part, in one run.

    .venv/bin/python bench/fetch.py --sizes 1024 4096      # MiB

Starts moto's S3 server (`moto_server`, its own process) and the reference API
server on 127.0.0.1, publishes a random resource of each size with `loader
upload`, then measures, each as a separate process under /usr/bin/time
(wall time and peak RSS):

- baseline: one boto3 GET of `<name>.big`, streamed to a file in 1 MiB chunks (then fsync, so the
  durability matches the loader's atomic publish; the no-fsync time is shown too);
- `loader fetch` (no cache): GET, SHA-256, AES-256-CBC decryption, temporary file,
  fsync, rename.

Scratch files live under /var/cache/azaion-loader/bench (removed afterwards).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from azaion_loader.server import ServerConfig, ServerThread, create_app, server_state
from azaion_loader.server.app import register_user

SCRATCH = Path("/var/cache/azaion-loader/bench")
READ = {"access_key_id": "bench-read", "secret_access_key": "bench-read-secret"}
WRITE = {"access_key_id": "bench-write", "secret_access_key": "bench-write-secret"}

BASELINE = r"""
import os, sys, time, boto3
from botocore.config import Config
url, bucket, key, out, sync = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
    aws_access_key_id="bench-read", aws_secret_access_key="bench-read-secret",
    config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                  response_checksum_validation="when_required"))
t = time.monotonic()
body = s3.get_object(Bucket=bucket, Key=key)["Body"]  # one stream, like the loader
with open(out, "wb") as f:
    while chunk := body.read(1 << 20):
        f.write(chunk)
if sync == "1":
    fd = os.open(out, os.O_RDONLY); os.fsync(fd); os.close(fd)
print(f"inner {time.monotonic() - t:.3f}")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``cmd``."""
    start = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {proc.stderr[-2000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return wall, (int(m.group(1)) / 1024 if m else float("nan"))


def make_file(path: Path, mib: int) -> None:
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(chunk[i % 7 :] + chunk[: i % 7])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024, 4096], help="MiB")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    SCRATCH.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=SCRATCH))
    s3_port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(s3_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    s3_url = f"http://127.0.0.1:{s3_port}"
    app = create_app(ServerConfig(data_dir=work / "api", jwt_secret=secrets.token_bytes(32)))
    api = ServerThread(app, "127.0.0.1", 0).start()
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", s3_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        password = secrets.token_urlsafe(16)
        register_user(
            server_state(app).store,
            email="bench@example.test",
            password=password,
            role="uploader",
            max_devices=2,
        )
        server_state(app).store.set_cdn_config(
            {"endpoint_url": s3_url, "region": "us-east-1", "read": READ, "write": WRITE}
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LOADER_")},
            "LOADER_API_URL": api.url,
            "LOADER_EMAIL": "bench@example.test",
            "LOADER_PASSWORD": password,
            "LOADER_HW_MACHINE_ID": "be" * 16,
            "LOADER_HW_ARCH": "amd64",
            "LOADER_LOG_LEVEL": "WARNING",
        }
        loader = [sys.executable, "-m", "azaion_loader"]
        print(
            f"{'MiB':>6} {'raw S3':>8} {'raw+fsync':>10} {'raw RSS':>8} {'fetch':>8} "
            f"{'ratio':>6} {'fetch RSS':>10} {'upload':>8} {'up RSS':>7}",
            flush=True,
        )
        for mib in args.sizes:
            name = f"r{mib}"
            src = work / name
            make_file(src, mib)
            t_up, rss_up = timed(
                [*loader, "upload", "--folder", "bench", "--name", name, "--no-progress", str(src)],
                env,
            )
            src.unlink()
            out = work / "out"
            for _ in range(args.repeat):
                b_nosync, b_rss = timed(
                    [sys.executable, "-c", BASELINE, s3_url, "bench", f"{name}.big", str(out), "0"],
                    env,
                )
                out.unlink()
                b_sync, _ = timed(
                    [sys.executable, "-c", BASELINE, s3_url, "bench", f"{name}.big", str(out), "1"],
                    env,
                )
                out.unlink()
                f_wall, f_rss = timed(
                    [
                        *loader,
                        "fetch",
                        "--folder",
                        "bench",
                        "--name",
                        name,
                        "--out",
                        str(out),
                        "--no-progress",
                    ],
                    env,
                )
                out.unlink()
                print(
                    f"{mib:>6} {b_nosync:>7.2f}s {b_sync:>9.2f}s {b_rss:>6.0f}Mi "
                    f"{f_wall:>7.2f}s {f_wall / b_sync:>5.2f}x {f_rss:>8.0f}Mi "
                    f"{t_up:>7.2f}s {rss_up:>5.0f}Mi",
                    flush=True,
                )
        print("ratio = fetch / (raw S3 download + fsync); wall times include process start")
    finally:
        api.stop()
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
