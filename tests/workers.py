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


def assert_each_item_done_once(store, reports: list[dict], ids: list[str]) -> dict[str, str]:
    """Every id completed on attempt 1 by exactly one worker, none lost or invented, and the store agrees:
    its rows, counts and events. ``reports``: each worker's ``{"owner", "completed": [[id, attempt,
    status, owner], ...]}``. Returns each id's owner."""
    completed_by: dict[str, list[str]] = {}
    for report in reports:
        for item_id, attempt, status, owner in report["completed"]:
            assert (attempt, status, owner) == (1, "DONE", report["owner"]), item_id
            completed_by.setdefault(item_id, []).append(report["owner"])
    twice = {item_id: owners for item_id, owners in completed_by.items() if len(owners) > 1}
    assert twice == {}, "items completed by more than one worker"
    assert sorted(completed_by) == ids, "items lost or invented"
    owner_of = {item_id: owners[0] for item_id, owners in completed_by.items()}

    from orchestrator.model import Status

    items = store.items()
    assert [item.id for item in items] == ids
    for item in items:
        assert (item.status, item.owner, item.attempts, item.notes) == (Status.DONE, owner_of[item.id], 1, "done:1")
    assert store.counts() == {"PENDING": 0, "IN_PROGRESS": 0, "BLOCKED": 0, "FAILED": 0, "DONE": len(ids)}
    for item_id in ids:
        events = store.events(item_id)
        assert [(e.event, e.actor, e.from_status, e.to_status) for e in events] == [
            ("ADDED", "test", "", "PENDING"),
            ("CLAIMED", owner_of[item_id], "PENDING", "IN_PROGRESS"),
            ("COMPLETED", owner_of[item_id], "IN_PROGRESS", "DONE"),
        ], item_id
        assert events[1].data == {"attempt": 1}
    return owner_of
