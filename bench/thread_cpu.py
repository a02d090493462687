"""Run the `loader` CLI and print, at exit, the CPU seconds each of its threads used.

    python bench/thread_cpu.py fetch --folder F --name N --out PATH ...

Used by ``bench/fetch.py --threads``.  Every thread's ``run`` is wrapped to
read ``time.thread_time()`` (user + system of that thread) when it ends; the
main thread's is read at exit.  Threads of the same name are summed.  The
stages inside them are timed the same way around each call (format 1's
ciphertext digest's ``update`` in the reader, ``Decryptor.update_into`` or
format 2's ``SegmentDecryptor.feed`` in the main thread, ``AtomicWriter.write``
in the writer), so the reader's CPU minus its hash is what receiving costs.
One line on stderr: ``thread-cpu {"MainThread": 0.55, "loader-read": 0.90,
"stage: SHA-256 (in loader-read)": 0.6, ...}`` plus the process's total from ``os.times()``.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import sys
import threading
import time
from typing import Any

_cpu: collections.defaultdict[str, float] = collections.defaultdict(float)
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


def _stage(name: str, fn: Any) -> Any:
    """``fn``, adding the CPU its calls take (in their thread) to the stage ``name``."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.thread_time() - start
            with _lock:
                _cpu[name] += spent

    return timed


def _add(name: str, spent: float) -> None:
    with _lock:
        _cpu[name] += spent


def _stage_iter(name: str, fn: Any) -> Any:
    """Like :func:`_stage` for a generator function: the CPU of each step counts."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        steps = fn(*args, **kwargs)
        while True:
            start = time.thread_time()
            try:
                item = next(steps)
            except StopIteration:
                _add(name, time.thread_time() - start)
                return
            _add(name, time.thread_time() - start)
            yield item

    return timed


def _time_stages() -> None:
    """Split the threads' CPU by stage: format 1's ciphertext hash, decryption, write."""
    from azaion_loader import resource_formats
    from azaion_loader.atomic_write import AtomicWriter
    from azaion_loader.crypto import Decryptor
    from azaion_loader.segmented import SegmentDecryptor

    cbc_init = resource_formats._CbcOpener.__init__

    def timed_init(self: Any, *args: Any, **kwargs: Any) -> None:
        cbc_init(self, *args, **kwargs)
        inner = self._digest

        class Timed:
            def __init__(self) -> None:
                self.update = _stage("stage: SHA-256 (in loader-read)", inner.update)
                self.hexdigest = inner.hexdigest

        self._digest = Timed()

    resource_formats._CbcOpener.__init__ = timed_init  # type: ignore[method-assign]
    Decryptor.update_into = _stage(  # type: ignore[method-assign]
        "stage: decrypt (in MainThread)", Decryptor.update_into
    )
    SegmentDecryptor.feed = _stage_iter(  # type: ignore[method-assign]
        "stage: decrypt and check tags (in MainThread)", SegmentDecryptor.feed
    )
    AtomicWriter.write = _stage(  # type: ignore[method-assign]
        "stage: write (in loader-write)", AtomicWriter.write
    )


threading.Thread.run = _timed_run  # type: ignore[method-assign]
atexit.register(_report)

if __name__ == "__main__":
    from azaion_loader.cli.main import run

    _time_stages()
    sys.argv = ["loader", *sys.argv[1:]]
    run()
