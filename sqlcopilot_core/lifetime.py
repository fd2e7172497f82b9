"""Which processes are alive, and child processes that end with their parent: what lets a killed command leave nothing
behind (a temporary server, RUNNING MLflow runs, staging folders) and the next command clean up after it.

    python -c "import os; from sqlcopilot_core import lifetime; print(lifetime.process_identity(os.getpid()))"

A process is named by (host, pid, start time in clock ticks since boot): a pid alone may have been reused by an
unrelated process since; the start time tells them apart (Linux /proc; elsewhere the pid alone is used).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from pathlib import Path

PR_SET_PDEATHSIG = 1


def process_start_ticks(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks since boot (/proc/<pid>/stat field 22), None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])  # after "pid (comm) ": field 3 is index 0


def process_identity(pid: int) -> str:
    """'host:pid:start_ticks' of a process of this machine."""
    return f"{socket.gethostname()}:{pid}:{process_start_ticks(pid) or 0}"


def identity_alive(identity: str) -> bool | None:
    """Whether the process named by process_identity() still runs; None when it ran on another host (unknowable)."""
    host, pid, ticks = identity.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    return pid_alive(int(pid)) and (int(ticks) == 0 or process_start_ticks(int(pid)) in (None, int(ticks)))


def alive_since(host: str, pid: int, since_ns: int) -> bool | None:
    """Whether the process `pid` of `host` still runs and was already running at `since_ns` (epoch nanoseconds), so
    that it is the one that was running then, not a later process given the same pid; None for another host."""
    if host != socket.gethostname():
        return None
    if not pid_alive(pid):
        return False
    ticks = process_start_ticks(pid)
    if ticks is None:
        return True
    started_s = boot_time_s() + ticks / os.sysconf("SC_CLK_TCK")
    return started_s <= since_ns / 1e9 + 1.0  # ticks are coarse: a second of slack


def boot_time_s() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def end_with_parent(sig: int = signal.SIGKILL):
    """A `preexec_fn` for subprocess.Popen: the child receives `sig` when the parent ends, however it ends (Linux
    prctl PR_SET_PDEATHSIG; the signal follows the thread that started the child, so start it from a thread that
    lives as long as the child should)."""
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent ended before prctl took effect
            os._exit(1)

    return preexec
