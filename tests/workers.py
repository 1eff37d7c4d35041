"""Worker processes for the concurrency tests: started together, read line by line, never left behind."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import ROOT

TIMEOUT = 120.0


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def popen(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())


def read_line(proc: subprocess.Popen, deadline: float) -> bytes:
    """One line from a worker's stdout, byte by byte so nothing is buffered away."""
    fd = proc.stdout.fileno()
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"worker {proc.pid} did not report in time (so far: {line!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            _, err = proc.communicate(timeout=10)
            raise AssertionError(f"worker exited before it reported:\n{err.decode()}")
        line += chunk
    return line


@contextmanager
def reaped_at_exit(procs: list[subprocess.Popen]) -> Iterator[list[subprocess.Popen]]:
    """Whatever happens, no worker outlives the test."""
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)


@contextmanager
def started_together(argvs: list[list[str]], timeout: float = TIMEOUT) -> Iterator[list[subprocess.Popen]]:
    """One worker process per argv; each says ``ready``, then all are told ``go`` at the same moment."""
    procs: list[subprocess.Popen] = []
    with reaped_at_exit(procs):
        for argv in argvs:
            procs.append(popen(argv))
        deadline = time.monotonic() + timeout
        for proc in procs:
            assert read_line(proc, deadline) == b"ready\n"
        for proc in procs:
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        yield procs


def finish(procs: list[subprocess.Popen], timeout: float = TIMEOUT) -> list[str]:
    """Each worker's stdout, once all exited 0 (stderr empty) within the timeout."""
    deadline = time.monotonic() + timeout
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        assert proc.returncode == 0, f"worker {proc.pid} exited {proc.returncode}:\n{err.decode()}"
        assert err == b"", err.decode()
        outputs.append(out.decode())
    return outputs
