"""Claims under real concurrency, a worker killed mid-lease, and the pull API as real processes, on both backends.

Every test uses real processes. Workers that must race are started together:
each reports ``ready`` on stdout and then blocks until the test writes ``go``
to its stdin. Every wait has a timeout and nothing asserts on timing. Nothing
sleeps for a lease to run out: after the kill the test passes explicit ``now``
values to the store, so the simulated clock moves past the lease and backoff.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.errors import LeaseLostError
from orchestrator.model import Item, Policy, Status
from orchestrator.store.markdown import MarkdownStore
from orchestrator.store.sqlite import SqliteStore
from tests.conftest import run_orch
from tests.stores import BACKENDS, FULL_HEADER, make_store
from tests.workers import assert_each_item_done_once, finish, popen, read_line, reaped_at_exit, started_together

WORKER_TIMEOUT = 120.0
"""Seconds a group of workers may take from start to finish; far above a normal run."""

WORKERS = 8
ITEMS = {"markdown": 500, "sqlite": 5000}

OPEN_STORE = """\
def open_store(backend, path):
    if backend == "markdown":
        from orchestrator.store.markdown import MarkdownStore
        return MarkdownStore(Path(path), durable=DURABLE)
    from orchestrator.store.sqlite import SqliteStore
    return SqliteStore(Path(path))
"""

CLAIMER = textwrap.dedent(
    """\
    import json, sys
    from pathlib import Path

    DURABLE = False
    {open_store}
    backend, path, owner, api = sys.argv[1:5]
    store = open_store(backend, path)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    if sys.stdin.readline() != "go\\n":
        raise SystemExit("worker: no go signal")
    completed = []
    claim = store.claim(owner, lease=300)
    while claim is not None:
        if api == "complete_and_claim":
            done, next_claim = store.complete_and_claim(claim.item.id, owner, lease=300, attempt=claim.attempt)
        else:
            done = store.complete(claim.item.id, owner, attempt=claim.attempt)
            next_claim = store.claim(owner, lease=300)
        completed.append([done.id, claim.attempt, done.status.value, done.owner])
        claim = next_claim
    sys.stdout.write(json.dumps({{"owner": owner, "completed": completed}}) + "\\n")
    """
).format(open_store=OPEN_STORE)
"""Claims and completes through the library until nothing is runnable; prints what it completed.

``api``: ``claim then complete`` (two calls a cycle) or ``complete_and_claim`` (one call a cycle after the first).

The markdown store is opened with ``durable=False``: every markdown write
fsyncs the new file and the folder, and 1,000 fsynced rewrites by 8 processes
on a CI disk would make this test about the disk. What is under test here is
the lock and the atomic claim; the fsync path is covered by
``test_markdown_concurrency.py`` (SIGKILL mid-rewrite), which runs the real CLI
with ``durable=True``.
"""

DOOMED = textwrap.dedent(
    """\
    import sys
    from pathlib import Path

    DURABLE = True
    {open_store}
    backend, path, owner, lease = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    store = open_store(backend, path)
    claim = store.claim(owner, lease=lease)
    sys.stdout.write(f"claimed {{claim.item.id}} {{claim.attempt}}\\n")
    sys.stdout.flush()
    sys.stdin.read()  # blocks until killed (or until the test's end closes stdin)
    """
).format(open_store=OPEN_STORE)
"""Claims one item with a short lease, says so, and blocks holding it until SIGKILL."""


# --- eight claimers at once --------------------------------------------------------


@pytest.mark.parametrize("api", ["claim then complete", "complete_and_claim"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_eight_processes_claiming_at_once_take_each_item_exactly_once(tmp_path: Path, backend: str, api: str) -> None:
    count = ITEMS[backend]
    store = make_store(backend, tmp_path)
    ids = [f"C-{k:05d}" for k in range(count)]
    store.add([Item(item_id, title=f"claim race {k}") for k, item_id in enumerate(ids)], actor="test")

    started = time.monotonic()
    argvs = [[sys.executable, "-c", CLAIMER, backend, str(store.path), f"w{k}", api] for k in range(WORKERS)]
    with started_together(argvs) as procs:
        outputs = finish(procs)
    elapsed = time.monotonic() - started

    reports = [json.loads(out) for out in outputs]
    assert [report["owner"] for report in reports] == [f"w{k}" for k in range(WORKERS)]
    owner_of = assert_each_item_done_once(store, reports, ids)
    shares = Counter(owner_of.values())
    print(
        f"{backend}, {api}: {count} items by {WORKERS} processes in {elapsed:.1f}s; "
        f"per worker {dict(sorted(shares.items()))}"
    )


# --- a worker killed mid-lease -------------------------------------------------------

KILL_LEASE = 2.0
POLICY = Policy(max_attempts=3, backoff_base=10, backoff_factor=2, jitter=0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_killed_mid_lease_is_reaped_retried_and_fenced_off(tmp_path: Path, backend: str) -> None:
    store = make_store(backend, tmp_path, policy=POLICY)
    store.add([Item("K-1", title="the killed worker's item"), Item("K-2", depends_on=("K-1",))], actor="test")

    argv = [sys.executable, "-c", DOOMED, backend, str(store.path), "dead", str(KILL_LEASE)]
    with reaped_at_exit([popen(argv)]) as (proc,):
        line = read_line(proc, time.monotonic() + WORKER_TIMEOUT)
        assert line == b"claimed K-1 1\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL

    lease_end = store.lease_until("K-1")
    held = store.get("K-1")
    assert (held.status, held.owner, held.attempts) == (Status.IN_PROGRESS, "dead", 1)
    assert lease_end is not None
    claimed_at = lease_end - KILL_LEASE

    # Before the lease ends, the dead worker still holds it: nothing is reaped or claimable.
    before_end = claimed_at + KILL_LEASE / 2
    assert store.reap(now=before_end) == []
    assert store.claim("alive", lease=60, now=before_end) is None
    assert store.claim("alive", lease=60, now=before_end, item_id="K-1") is None
    assert store.get("K-1") == held

    # Once it has ended, the reaper makes the item retry-eligible, the attempt counted.
    reaped = store.reap(now=lease_end)
    assert [item.id for item in reaped] == ["K-1"]
    item = store.get("K-1")
    assert reaped[0] == item
    assert (item.status, item.owner, item.attempts) == (Status.PENDING, "", 1)
    assert "lease_expired:dead" in item.note_list()
    assert item.retry_not_before is not None
    backoff = item.retry_not_before - lease_end
    assert 10 * 0.9 - 1 <= backoff <= 10 * 1.1, backoff
    assert store.lease_until("K-1") is None
    assert [e.event for e in store.events("K-1")] == ["ADDED", "CLAIMED", "REAPED"]

    # Not before its backoff; then it is claimable as attempt 2.
    assert store.claim("alive", lease=60, now=item.retry_not_before - 1) is None
    again = store.claim("alive", lease=60, now=item.retry_not_before)
    assert again is not None
    assert (again.item.id, again.attempt, again.item.owner) == ("K-1", 2, "alive")

    # The dead worker's late report is fenced off, through the library and the CLI.
    with pytest.raises(LeaseLostError):
        store.complete("K-1", "dead", attempt=1, now=item.retry_not_before + 1)
    with pytest.raises(LeaseLostError):
        store.heartbeat("K-1", "dead", lease=60, attempt=1, now=item.retry_not_before + 1)
    where = ["--queue", str(store.path)] if backend == "markdown" else ["--db", str(store.path)]
    late = run_orch(*where, "complete", "--id", "K-1", "--owner", "dead", "--attempt", "1", cwd=tmp_path)
    assert late.returncode == 1, late
    assert late.stdout == ""
    assert late.stderr.startswith("error: ") and "dead" in late.stderr and "K-1" in late.stderr, late.stderr
    assert late.stderr.count("\n") == 1
    still = store.get("K-1")
    assert (still.status, still.owner, still.attempts) == (Status.IN_PROGRESS, "alive", 2)

    done = store.complete("K-1", "alive", attempt=2, now=item.retry_not_before + 2)
    assert (done.status, done.note_list()[-1]) == (Status.DONE, "done:2")
    assert [e.event for e in store.events("K-1")] == ["ADDED", "CLAIMED", "REAPED", "CLAIMED", "COMPLETED"]
    assert store.claim("alive", lease=60, now=item.retry_not_before + 3).item.id == "K-2"


# --- the pull API as real processes ------------------------------------------------------


def _where(backend: str, store) -> list[str]:
    return ["--queue", str(store.path)] if backend == "markdown" else ["--db", str(store.path)]


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def _refused(done: subprocess.CompletedProcess, code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.endswith("\n") and done.stderr.count("\n") == 1
    return done.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_pull_api_claims_heartbeats_completes_and_fails_through_the_cli(tmp_path: Path, backend: str) -> None:
    store = make_store(backend, tmp_path)

    def orch(*args: str) -> subprocess.CompletedProcess:
        return run_orch(*_where(backend, store), *args, cwd=tmp_path)

    assert _refused(orch("claim", "--owner", "a")) == "error: nothing runnable\n"  # an empty queue
    store.add([Item("P-1", title="first"), Item("P-2", title="second"), Item("P-3", max_attempts=1)], actor="test")

    taken = json.loads(_ok(orch("claim", "--owner", "a", "--lease", "120", "--json")))
    assert (taken["id"], taken["attempt"], taken["owner"]) == ("P-1", 1, "a")
    assert taken["item"]["status"] == "IN_PROGRESS" and taken["item"]["attempts"] == 1
    assert taken["lease_until"] == store.lease_until("P-1")

    beat = _ok(orch("heartbeat", "--id", "P-1", "--owner", "a", "--attempt", "1", "--lease", "600"))
    match = re.fullmatch(r"P-1 lease_until=(\d+)\n", beat)
    assert match, beat
    assert abs(int(match.group(1)) - store.lease_until("P-1")) <= 0.5
    beat = json.loads(_ok(orch("heartbeat", "--id", "P-1", "--owner", "a", "--lease", "900", "--json")))
    assert beat == {"id": "P-1", "lease_until": store.lease_until("P-1")}
    assert "P-1" in _refused(orch("heartbeat", "--id", "P-1", "--owner", "b"))
    assert "attempt" in _refused(orch("heartbeat", "--id", "P-1", "--owner", "a", "--attempt", "2"))

    assert "P-1" in _refused(orch("complete", "--id", "P-1", "--owner", "b", "--attempt", "1"))
    assert _ok(orch("complete", "--id", "P-1", "--owner", "a", "--attempt", "1", "--notes", "all green")) == (
        "P-1 -> DONE\n"
    )
    assert store.get("P-1").note_list() == ["done:1", "all green"]
    assert "P-1" in _refused(orch("complete", "--id", "P-1", "--owner", "a", "--attempt", "1"))

    assert _ok(orch("claim", "--owner", "b")) == "P-2\n"
    assert _refused(orch("fail", "--id", "P-2", "--owner", "b", "--reason", " "), code=2).startswith("error: ")
    assert _ok(orch("fail", "--id", "P-2", "--owner", "b", "--attempt", "1", "--reason", "boom | bang")) == (
        "P-2 -> PENDING\n"
    )
    failed = store.get("P-2")
    assert (failed.status, failed.owner, failed.attempts) == (Status.PENDING, "", 1)
    assert failed.note_list()[:2] == ["error:boom | bang", "retry:1"]
    assert failed.retry_not_before is not None
    assert "P-2" in _refused(orch("fail", "--id", "P-2", "--owner", "b", "--attempt", "1", "--reason", "late"))

    taken = json.loads(_ok(orch("claim", "--owner", "c", "--id", "P-3", "--json")))
    assert (taken["id"], taken["attempt"]) == ("P-3", 1)
    final = json.loads(_ok(orch("fail", "--id", "P-3", "--owner", "c", "--attempt", "1", "--reason", "x", "--json")))
    assert (final["status"], final["attempts"], final["notes"]) == ("FAILED", 1, "error:x")

    # P-1 is DONE, P-2 backs off, P-3 used its only attempt: nothing is runnable.
    assert _refused(orch("claim", "--owner", "d")) == "error: nothing runnable\n"
    assert _refused(orch("claim", "--owner", "d", "--json")) == "error: nothing runnable\n"
    assert [e.event for e in store.events("P-2")] == ["ADDED", "CLAIMED", "FAILED"]


AWKWARD_NOTES = "error:a | b \\| c; naïve — 中文 😀; `code | span`"


def _round_trip_items() -> list[Item]:
    """One item in each state, every field used, awkward text where text goes."""
    extra = {"Priority": "high | urgent", "x-Team": " ünïcode, spaced "}
    return [
        Item("R-1", Status.DONE, "Ship | it", "w1", "2027-01-15T08:00:00Z", 1, None, None, "coder", "job-1", (),
             "done:1", extra),
        Item("R-2", Status.IN_PROGRESS, "Fix \\ backslash \\", "w2", "2027-01-15T09:30:00Z", 2, 5, None, "", "job-1",
             ("R-1",), "error:x; retry:1", {"Priority": "", "x-Team": "a"}),
        Item("R-3", Status.PENDING, "Wait for the backoff", "", "", 1, None, 1_800_000_600, "", "", ("R-1", "R-2"),
             f"{AWKWARD_NOTES}; retry:1; retry_not_before=1800000600", {"Priority": "low", "x-Team": ""}),
        Item("R-4", Status.BLOCKED, "Needs a human 🙋\nline 2", "w3", "2027-01-15T10:00:00Z", 3, 3, None, "", "", (),
             "intervention:tests disagree | twice", {"Priority": "", "x-Team": ""}),
        Item("R-5", Status.FAILED, "Gave up", "w1", "2027-01-15T11:00:00Z", 3, None, None, "", "job-2", ("r-1",),
             "error:boom; error:boom; error:boom", {"Priority": "p0", "x-Team": "ops"}),
    ]  # fmt: skip


def _source_store(backend: str, folder: Path):
    """A queue of the round-trip items; the markdown one has the extra columns in its header."""
    folder.mkdir()
    if backend == "sqlite":
        store = SqliteStore(folder / "source.db")
    else:
        path = folder / "QUEUE.md"
        header = FULL_HEADER.replace("| notes |\n", "| notes | Priority | x-Team |\n").replace(
            "| --- |\n", "| --- | --- | --- |\n"
        )
        path.write_text("# Queue\n\nProse | with a pipe.\n\n" + header + "\nMore prose.\n", encoding="utf-8")
        store = MarkdownStore(path)
    store.add(_round_trip_items(), actor="test")
    return store


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_then_import_into_a_fresh_db_round_trips_every_field(tmp_path: Path, backend: str) -> None:
    source = _source_store(backend, tmp_path / "source")
    expected = [item.as_dict() for item in _round_trip_items()]
    assert [item.as_dict() for item in source.items()] == expected  # the source itself holds them exactly

    exported = tmp_path / "EXPORTED.md"
    out = run_orch(*_where(backend, source), "export", "--to", str(exported), cwd=tmp_path)
    assert _ok(out) == f"exported to {exported}: 5 added, 0 updated\n"
    assert [item.as_dict() for item in MarkdownStore(exported).items()] == expected
    checked = run_orch("--queue", str(exported), "validate", cwd=tmp_path)
    assert _ok(checked) == f"{exported}: ok (5 items)\n"

    fresh = tmp_path / "fresh" / "queue.db"
    fresh.parent.mkdir()
    out = run_orch("--db", str(fresh), "import", "--from", str(exported), cwd=tmp_path)
    assert _ok(out) == f"imported from {exported}: 5 added, 0 updated\n"
    imported = SqliteStore(fresh, create=False)
    got = [item.as_dict() for item in imported.items()]
    assert len(got) == len(expected)
    for want_item, got_item in zip(expected, got, strict=True):
        for name, value in want_item.items():
            assert got_item[name] == value, f"{want_item['id']}.{name}"
    assert imported.counts() == {"PENDING": 1, "IN_PROGRESS": 1, "BLOCKED": 1, "FAILED": 1, "DONE": 1}
    assert [e.event for e in imported.events("R-2")] == ["IMPORTED"]
