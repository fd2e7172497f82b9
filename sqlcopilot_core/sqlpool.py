"""Worker processes that run read-only queries for sqlexec, so that the operating system bounds a query's wall time and
memory, not SQLite reaching its next progress-handler check.

    python -c "from sqlcopilot_core import sqlpool; print(sqlpool.call(('echo', 1), 5.0))"

A worker is a fresh `python -S -m sqlcopilot_core.sqlpool` (never a fork of the caller, which may hold a model of
several GB): it caps its own address space with RLIMIT_AS, ends itself when its parent dies, and answers requests
read from stdin on stdout, each a marshal'd tuple behind an 8-byte length. A caller waits for an answer up to the
query's time limit plus KILL_GRACE_S; a worker that has not answered by then is killed (SIGKILL, whatever C code it
is in) and a new one is started for the next query. Idle workers are kept and reused: starting one costs tens of
milliseconds, a round trip a fraction of one. Requests are ('echo', value) or ('query', db_path, sql, timeout_s,
max_rows), answered by sqlexec.answer_request in the worker.
"""

from __future__ import annotations

import atexit
import marshal
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

WORKER_MEMORY_BYTES = 1 << 30
"""Address-space limit of a worker process (RLIMIT_AS): SQLite and Python fail with 'out of memory' beyond it."""
MAX_ANSWER_BYTES = 256 << 20
"""Largest answer a worker may send; sqlexec caps a result's size well below it."""
KILL_GRACE_S = 0.5
STARTUP_LIMIT_S = 60.0
MAX_IDLE = 2
PARENT_CHECK_S = 0.5
FRAME_HEADER = 8
READ_CHUNK = 1 << 20
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class WorkerFailed(Exception):
    """A worker gave no answer: `kind` is an sqlexec error kind ("timeout" or "other"), the message says why."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# ---- frames: an 8-byte big-endian length, then the marshal'd payload ----

def write_frame(stream, value) -> None:
    payload = marshal.dumps(value)
    stream.write(len(payload).to_bytes(FRAME_HEADER, "big") + payload)
    stream.flush()


def read_frame(fd: int, deadline: float):
    """The next frame's value from `fd`; WorkerFailed when it has not all come by `deadline` or the stream ended."""
    data = bytearray()
    size = None
    while size is None or len(data) < FRAME_HEADER + size:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise WorkerFailed("timeout", "no answer within the time limit")
        wanted = READ_CHUNK if size is None else FRAME_HEADER + size - len(data)
        chunk = os.read(fd, min(wanted, READ_CHUNK))
        if not chunk:
            raise WorkerFailed("other", "the query's worker process ended without an answer")
        data += chunk
        if size is None and len(data) >= FRAME_HEADER:
            size = int.from_bytes(data[:FRAME_HEADER], "big")
            if size > MAX_ANSWER_BYTES:
                raise WorkerFailed("other", f"the worker's answer of {size} bytes exceeds {MAX_ANSWER_BYTES}")
    return marshal.loads(memoryview(data)[FRAME_HEADER:])


# ---- the caller's side ----

class Worker:
    """One worker process; it starts in the background and is waited for at its first request."""

    def __init__(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, "-S", "-m", "sqlcopilot_core.sqlpool", str(os.getpid()), str(WORKER_MEMORY_BYTES)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.ready = False

    def wait_ready(self) -> None:
        try:
            read_frame(self.process.stdout.fileno(), time.monotonic() + STARTUP_LIMIT_S)
        except WorkerFailed as exc:
            self.kill()
            raise WorkerFailed("other", f"the query worker did not start within {STARTUP_LIMIT_S:g} s: {exc}")
        self.ready = True

    def call(self, request: tuple, wait_s: float):
        """The worker's answer to `request`; WorkerFailed (and the worker killed) when none came within `wait_s`."""
        if not self.ready:
            self.wait_ready()
        deadline = time.monotonic() + wait_s
        try:
            write_frame(self.process.stdin, request)
            return read_frame(self.process.stdout.fileno(), deadline)
        except OSError as exc:  # a broken pipe: the worker is gone
            self.kill()
            raise WorkerFailed("other", f"the query's worker process is gone ({exc})") from None
        except BaseException:
            self.kill()
            raise

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


_idle: list[Worker] = []
_lock = threading.Lock()
_owner_pid = os.getpid()


def take_worker() -> Worker:
    """An idle live worker, or a new one. A forked child never uses its parent's workers."""
    global _idle, _owner_pid
    with _lock:
        if _owner_pid != os.getpid():
            _idle, _owner_pid = [], os.getpid()
        while _idle:
            worker = _idle.pop()
            if worker.alive():
                return worker
    return Worker()


def give_back(worker: Worker) -> None:
    with _lock:
        if len(_idle) < MAX_IDLE and _owner_pid == os.getpid():
            _idle.append(worker)
            return
    worker.kill()


def prestart() -> None:
    """Start a worker in the background unless one is idle, so that the first query does not wait for it."""
    with _lock:
        if _owner_pid == os.getpid() and _idle:
            return
    give_back(Worker())


def call(request: tuple, wait_s: float):
    """Run `request` in a pooled worker; WorkerFailed when it gave no answer within `wait_s` seconds."""
    worker = take_worker()
    answer = worker.call(request, wait_s)
    give_back(worker)
    return answer


@atexit.register
def stop_idle_workers() -> None:
    with _lock:
        workers = _idle[:] if _owner_pid == os.getpid() else []
        _idle.clear()
    for worker in workers:
        worker.kill()


# ---- the worker's side ----

def end_with_parent(parent_pid: int) -> None:
    """End this process soon after `parent_pid` is gone, even while a query runs (a thread that checks)."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def serve(parent_pid: int, memory_bytes: int) -> None:
    """Answer requests from stdin on stdout until stdin ends."""
    import resource

    end_with_parent(parent_pid)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by accident goes to stderr, never into the answers
    from sqlcopilot_core.sqlexec import answer_request

    requests = sys.stdin.buffer
    write_frame(answers, ("ready",))
    while True:
        header = requests.read(FRAME_HEADER)
        if len(header) < FRAME_HEADER:
            return
        request = marshal.loads(requests.read(int.from_bytes(header, "big")))
        try:
            write_frame(answers, answer_request(request))
        except MemoryError:
            write_frame(answers, (None, (), "limit", f"the result exceeds the worker's memory limit of "
                                                      f"{memory_bytes} bytes", False))
        except Exception as exc:  # an answer, whatever happened: the caller must not wait for a dead worker
            write_frame(answers, (None, (), "other", f"{type(exc).__name__}: {exc}", False))


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
