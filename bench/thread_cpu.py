"""Run the `loader` CLI and print, at exit, the CPU seconds each of its threads used.

    python bench/thread_cpu.py fetch --folder F --name N --out PATH ...

Used by ``bench/fetch.py --threads``.  Every thread's ``run`` is wrapped to
read ``time.thread_time()`` (user + system of that thread) when it ends; the
main thread's is read at exit.  Threads of the same name are summed.  One
line on stderr: ``thread-cpu {"MainThread": 0.91, "loader-read": 0.72, ...}``
plus the process's total from ``os.times()``, so what no Python thread
accounts for (interpreter start, imports before the patch) shows as the
difference.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import sys
import threading
import time

_cpu: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()
_run = threading.Thread.run


def _timed_run(self: threading.Thread) -> None:
    try:
        _run(self)
    finally:
        spent = time.thread_time()
        with _lock:
            _cpu[self.name.split("-")[0] if self.name.startswith("Thread-") else self.name] += spent


def _report() -> None:
    with _lock:
        _cpu["MainThread"] += time.thread_time()
        times = os.times()
        _cpu["(process)"] = times.user + times.system
        line = json.dumps({k: round(v, 3) for k, v in _cpu.items()})
        print(f"thread-cpu {line}", file=sys.stderr)


threading.Thread.run = _timed_run  # type: ignore[method-assign]
atexit.register(_report)

if __name__ == "__main__":
    from azaion_loader.cli.main import run

    sys.argv = ["loader", *sys.argv[1:]]
    run()
