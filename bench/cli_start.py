"""Benchmark: what importing loguru adds to the CLI's start, both variants in one run.

    .venv/bin/pip install loguru     # not a dependency of the project
    .venv/bin/python bench/cli_start.py --repeat 25

Issue 14 item 6 adopts loguru for the logs unless it costs the CLI's start
more than 15 ms.  Each case runs the real entry point (``cli.main.run``) in a
fresh interpreter through the same ``python -c`` launcher; the candidate
imports loguru first, the baseline does not, so the only difference is
loguru's import.  Runs alternate (baseline, candidate, baseline, ...) so the
machine's load falls on both alike; medians of wall and of CPU (user plus
system, from ``wait4``, which the other engineers' load barely moves).

Cases:

- ``--version``: the shortest run, argument parsing only;
- ``fetch`` that logs: a fetch from a closed loopback port with one retry,
  so it logs a WARNING, imports the HTTP stack and fails with exit code 14
  (no server needed; the 0.05 s backoff is the same for both variants).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

LAUNCH = "import sys; sys.argv[0] = 'loader'; {pre}from azaion_loader.cli.main import run; run()"

FETCH_ENV = {
    "LOADER_API_URL": "http://127.0.0.1:1",
    "LOADER_EMAIL": "bench@example.test",
    "LOADER_PASSWORD": "not-a-secret",
    "LOADER_RETRIES": "1",
    "LOADER_DEADLINE": "0.05",
    "LOADER_HW_MACHINE_ID": "0123456789abcdef0123456789abcdef",
}


def run_once(argv: list[str], env: dict[str, str], expect: int) -> tuple[float, float]:
    """Wall and CPU seconds of one process, which must exit with ``expect``."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != expect:
        raise SystemExit(f"{shlex.join(argv)} exited {proc.returncode}: {err.decode()[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    out = os.path.join(tempfile.mkdtemp(prefix="azl-bench-"), "never-written")
    cases = [
        ("`loader --version`", ["--version"], {}, 0),
        (
            "`loader fetch` (logs a retry, exit 14)",
            ["fetch", "--folder", "f", "--name", "n", "--out", out, "--no-progress"],
            FETCH_ENV,
            14,
        ),
    ]
    print(f"command: {shlex.join(['.venv/bin/python', *sys.argv])}")
    print(f"before: {os.getloadavg()}", flush=True)
    print(
        "| case | baseline wall | with loguru wall | delta "
        "| baseline CPU | with loguru CPU | delta |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, words, extra, expect in cases:
        env = {**os.environ, **extra}
        runs: dict[str, list[tuple[float, float]]] = {"base": [], "loguru": []}
        for _ in range(args.repeat):
            for variant, pre in (("base", ""), ("loguru", "import loguru; ")):
                argv = [sys.executable, "-c", LAUNCH.format(pre=pre), *words]
                runs[variant].append(run_once(argv, env, expect))
        med = {
            v: (statistics.median(w for w, _ in r) * 1e3, statistics.median(c for _, c in r) * 1e3)
            for v, r in runs.items()
        }
        (bw, bc), (lw, lc) = med["base"], med["loguru"]
        print(
            f"| {label} | {bw:.0f} ms | {lw:.0f} ms | {lw - bw:+.0f} ms "
            f"| {bc:.0f} ms | {lc:.0f} ms | {lc - bc:+.0f} ms |",
            flush=True,
        )
    print(f"after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
