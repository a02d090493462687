"""Detached processes of the local cluster, tracked by recorded PID (never by name)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster_common import ClusterError, Settings, http_ok, wait_for, write

log = logging.getLogger("cluster")

# ---------------------------------------------------------------- processes


@dataclass
class Component:
    """A long-running process of the cluster, started detached with its PID recorded."""

    name: str
    argv: list[str]
    health: str = ""
    timeout: float = 60
    env: dict[str, str] = field(default_factory=dict)


def pid_file(s: Settings, name: str) -> Path:
    """Where a component's PID is recorded."""
    return s.state / "pids" / f"{name}.pid"


def running_pid(s: Settings, name: str) -> int | None:
    """The recorded PID of a component if that process still runs the recorded program."""
    pf = pid_file(s, name)
    try:
        pid_s, exe = pf.read_text().split("\n", 1)
        pid = int(pid_s)
        raw = b""
        for _ in range(50):
            # Right after exec the kernel may show an empty cmdline for a moment.
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            if raw:
                break
            time.sleep(0.01)
        cmdline = raw.split(b"\0")
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, ValueError, IndexError):
        return None
    if zombie:
        return None
    return pid if cmdline and cmdline[0].decode() == exe.strip() else None


def start(s: Settings, comp: Component) -> None:
    """Start comp detached (own session, log under the state dir) unless it runs; wait healthy."""
    if running_pid(s, comp.name):
        log.info("%s already running", comp.name)
    else:
        logs = s.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{comp.name}.log").open("ab") as fh:
            proc = subprocess.Popen(
                comp.argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(os.environ, **comp.env),
            )
        write(pid_file(s, comp.name), f"{proc.pid}\n{comp.argv[0]}\n")
        log.info("started %s (pid %d)", comp.name, proc.pid)
    if comp.health:
        log_path = s.state / "logs" / f"{comp.name}.log"

        def probe() -> bool:
            if not running_pid(s, comp.name):
                tail = log_path.read_text(errors="replace").splitlines()[-10:]
                raise ClusterError(f"{comp.name} exited (log: {log_path}):\n" + "\n".join(tail))
            return http_ok(comp.health)

        wait_for(f"{comp.name} health", probe, comp.timeout)


def stop(s: Settings, name: str, timeout: float = 20) -> None:
    """Stop a component by its recorded PID (TERM, then KILL)."""
    pid = running_pid(s, name)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while running_pid(s, name) and time.monotonic() < deadline:
            time.sleep(0.2)
        if running_pid(s, name):
            log.warning("%s (pid %d) ignored TERM; killing", name, pid)
            os.kill(pid, signal.SIGKILL)
        log.info("stopped %s (pid %d)", name, pid)
    pid_file(s, name).unlink(missing_ok=True)
