"""PostgresStore as runners on many hosts use it: real processes, one database, real connections.

Every test gets a fresh database (the ``pg_dsn`` fixture) on a real server: a
throwaway cluster from ``tests/pgcluster.py``, or ``ORCH_TEST_PG_DSN``.
Workers are separate processes that get the DSN in argv. Workers that must race
are started together: each reports ``ready`` and blocks until the test writes
``go`` to its stdin. Every wait has a deadline and polls for a condition;
nothing sleeps to let things settle and nothing asserts on timing (a bound far
above normal is only there so a hang fails instead of waiting forever).
Leases and backoffs are moved past with explicit ``now`` values, never waited out.

Two "hosts" are told apart by their owners (``hostA-...``, ``hostB-...``) and,
where the server must tell connections apart, by ``application_name``; a
failover or a broken network is played by ``pg_terminate_backend`` on one
host's connections.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator import operations
from orchestrator.errors import LeaseLostError, SchemaError
from orchestrator.model import Item, Policy, Status
from orchestrator.store.markdown import MarkdownStore
from orchestrator.store.postgres import CHANNEL, MIGRATIONS, PostgresStore  # imports psycopg on first use only
from orchestrator.store.sqlite import SqliteStore
from tests.conftest import ROOT, orch_argv, run_orch
from tests.runs import PY, config, git, make_repo
from tests.runs import wait_for as _wait_for
from tests.stores import FULL_HEADER
from tests.workers import assert_each_item_done_once, env, finish, popen, read_line, reaped_at_exit, started_together

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and signals")

WAIT = 60.0
"""The most any group of processes or any awaited condition may take; far above a normal run."""


def wait_for(condition, what: str, timeout: float = WAIT, detail=lambda: ""):
    return _wait_for(condition, what, timeout, detail)  # with this file's longer default


T0 = 1_800_000_000.0
LEASE = 60.0
POLICY = Policy(max_attempts=3, backoff_base=10, backoff_factor=2, jitter=0.1)


# --- helpers ---------------------------------------------------------------------------


def _named(dsn: str, application: str) -> str:
    """The DSN with an ``application_name``, so the server can tell this client's connections apart."""
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={application}"


@contextmanager
def _admin(dsn: str, **options):
    """A plain autocommit connection to the test's database, for what the Store API does not show."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, **options) as conn:
        yield conn


def _listening(dsn: str, application: str) -> bool:
    """Whether a connection named ``application`` has run LISTEN on orch's channel and is idle."""
    with _admin(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND query = %s AND state = 'idle'",
            (application, f"LISTEN {CHANNEL}"),
        ).fetchone()
    return row[0] > 0


def _connections(dsn: str, application: str) -> int:
    """How many server connections named ``application`` there are."""
    with _admin(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            (application,),
        ).fetchone()[0]


def _drop_connections(dsn: str, application: str) -> int:
    """Terminate every server connection named ``application``, as a failover or a broken network would."""
    with _admin(dsn) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (application,),
        ).fetchall()
    return len(rows)


def _row(dsn: str, item_id: str) -> dict:
    """The item's raw row, with the columns the Item does not show (lease_until, retries)."""
    from psycopg.rows import dict_row

    with _admin(dsn, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT status, owner, attempts, retries, retry_not_before, lease_until, notes FROM items WHERE id = %s",
            (item_id,),
        ).fetchone()


@pytest.fixture
def store(pg_dsn):
    made = PostgresStore(pg_dsn, policy=POLICY)
    yield made
    made.close()


# --- eight processes on two hosts ------------------------------------------------------------

CLAIMER = textwrap.dedent(
    """\
    import json, sys
    from orchestrator.store.postgres import PostgresStore

    dsn, owner = sys.argv[1:3]
    store = PostgresStore(dsn, pool_size=1)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    if sys.stdin.readline() != "go\\n":
        raise SystemExit("worker: no go signal")
    completed = []
    while (claim := store.claim(owner, lease=300)) is not None:
        done = store.complete(claim.item.id, owner, attempt=claim.attempt)
        completed.append([done.id, claim.attempt, done.status.value, done.owner])
    store.close()
    sys.stdout.write(json.dumps({"owner": owner, "completed": completed}) + "\\n")
    """
)
"""Claims and completes through the library until nothing is runnable; prints what it completed."""

ITEMS = 500
OWNERS = [f"host{host}-w{k}" for host in "AB" for k in range(1, 5)]


def test_eight_processes_on_two_hosts_complete_each_item_exactly_once(store, pg_dsn):
    ids = [f"C-{k:04d}" for k in range(ITEMS)]
    store.add([Item(item_id, title=f"claim race {k}") for k, item_id in enumerate(ids)], actor="test")

    started = time.monotonic()
    argvs = [[sys.executable, "-c", CLAIMER, _named(pg_dsn, owner), owner] for owner in OWNERS]
    with started_together(argvs) as procs:
        outputs = finish(procs)
    elapsed = time.monotonic() - started

    reports = [json.loads(out) for out in outputs]
    assert [report["owner"] for report in reports] == OWNERS
    owner_of = assert_each_item_done_once(store, reports, ids)
    assert store.lease_ends() == {}
    with _admin(pg_dsn) as conn:
        per_event = dict(conn.execute("SELECT event, count(*) FROM events GROUP BY event").fetchall())
    assert per_event == {"ADDED": ITEMS, "CLAIMED": ITEMS, "COMPLETED": ITEMS}

    shares = Counter(owner_of.values())
    hosts = Counter(owner[:5] for owner in shares.elements())
    print(f"postgres: {ITEMS} items by 8 processes in {elapsed:.1f}s; per host {dict(hosts)}, per worker {shares}")


# --- a worker killed mid-lease ------------------------------------------------------------------

DOOMED = textwrap.dedent(
    """\
    import sys
    from orchestrator.store.postgres import PostgresStore

    dsn, owner, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = PostgresStore(dsn)
    claim = store.claim(owner, lease=lease)
    sys.stdout.write(f"claimed {claim.item.id} {claim.attempt}\\n")
    sys.stdout.flush()
    sys.stdin.read()  # blocks until killed (or until the test's end closes stdin)
    """
)
"""Claims one item with a short lease (the database's clock), says so, and blocks holding it until SIGKILL."""

KILL_LEASE = 2.0


def test_a_worker_killed_mid_lease_is_rescued_retried_elsewhere_and_fenced_off(store, pg_dsn, tmp_path):
    store.add([Item("K-1", title="the killed worker's item"), Item("K-2", depends_on=("K-1",))], actor="test")

    argv = [sys.executable, "-c", DOOMED, _named(pg_dsn, "hostA-dead"), "hostA-dead", str(KILL_LEASE)]
    with reaped_at_exit([popen(argv)]) as (proc,):
        assert read_line(proc, time.monotonic() + WAIT) == b"claimed K-1 1\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL

    # Nothing of the claim lived in the dead process's session: the server drops it, the row stays.
    wait_for(lambda: _connections(pg_dsn, "hostA-dead") == 0, "the dead worker's connections to close")
    held = store.get("K-1")
    assert (held.status, held.owner, held.attempts) == (Status.IN_PROGRESS, "hostA-dead", 1)
    lease_end = store.lease_until("K-1")
    assert lease_end is not None

    # Before the lease ends the dead worker still holds it: nothing is reaped or claimable.
    before_end = lease_end - KILL_LEASE / 2
    assert store.reap(now=before_end) == []
    assert store.claim("hostB-w1", lease=LEASE, now=before_end) is None
    assert store.claim("hostB-w1", lease=LEASE, now=before_end, item_id="K-1") is None
    assert store.get("K-1") == held

    # Once it has ended, the reaper (any runner on any host) makes it retry-eligible, the attempt counted.
    reaped = store.reap(now=lease_end)
    assert [item.id for item in reaped] == ["K-1"]
    item = store.get("K-1")
    assert reaped[0] == item
    assert (item.status, item.owner, item.started, item.attempts) == (Status.PENDING, "", "", 1)
    assert item.note_list()[:2] == ["lease_expired:hostA-dead", "retry:1"]
    assert item.retry_not_before is not None
    assert 10 * 0.9 - 1 <= item.retry_not_before - lease_end <= 10 * 1.1, item.retry_not_before - lease_end
    assert store.lease_until("K-1") is None
    assert [(e.event, e.actor, e.to_status) for e in store.events("K-1")] == [
        ("ADDED", "test", "PENDING"), ("CLAIMED", "hostA-dead", "IN_PROGRESS"), ("REAPED", "orch@reaper", "PENDING"),
    ]  # fmt: skip
    assert store.reap(now=lease_end + 1) == []  # reaped once only

    # Not before its backoff; then another host claims it as attempt 2.
    assert store.claim("hostB-w1", lease=LEASE, now=item.retry_not_before - 1) is None
    again = store.claim("hostB-w1", lease=LEASE, now=item.retry_not_before)
    assert again is not None
    assert (again.item.id, again.attempt, again.item.owner) == ("K-1", 2, "hostB-w1")

    # The dead worker's late reports are refused, saying why; so is a stale attempt of the new owner.
    late = item.retry_not_before + 1
    with pytest.raises(LeaseLostError, match="hostA-dead no longer holds K-1: it is held by hostB-w1"):
        store.complete("K-1", "hostA-dead", attempt=1, now=late)
    with pytest.raises(LeaseLostError, match="it is held by hostB-w1"):
        store.heartbeat("K-1", "hostA-dead", lease=60, attempt=1, now=late)
    with pytest.raises(LeaseLostError, match="attempt 1 ended; attempt 2 holds it now"):
        store.complete("K-1", "hostB-w1", attempt=1, now=late)
    refused = run_orch("--db", pg_dsn, "complete", "--id", "K-1", "--owner", "hostA-dead", "--attempt", "1",
                       cwd=tmp_path)  # fmt: skip
    assert refused.returncode == 1, refused
    assert refused.stdout == ""
    assert refused.stderr == "error: hostA-dead no longer holds K-1: it is held by hostB-w1\n"
    still = store.get("K-1")
    assert (still.status, still.owner, still.attempts) == (Status.IN_PROGRESS, "hostB-w1", 2)

    done = store.complete("K-1", "hostB-w1", attempt=2, now=late)
    assert (done.status, done.note_list()[-1]) == (Status.DONE, "done:2")
    assert [e.event for e in store.events("K-1")] == ["ADDED", "CLAIMED", "REAPED", "CLAIMED", "COMPLETED"]
    assert store.claim("hostB-w1", lease=LEASE, now=late).item.id == "K-2"  # its dependent is runnable now


# --- a completion racing the rescue ---------------------------------------------------------------

ROUNDS = 120


def _check_round(pg_dsn: str, store: PostgresStore, item_id: str, completed, reaped: list[Item]) -> str:
    """The one consistent end of a round: completion won, or the rescue won and the completion was refused."""
    row = _row(pg_dsn, item_id)
    events = [(e.event, e.actor, e.from_status, e.to_status) for e in store.events(item_id)]
    claimed = [("ADDED", "test", "", "PENDING"), ("CLAIMED", "hostA-w1", "PENDING", "IN_PROGRESS")]
    if isinstance(completed, Item):
        assert reaped == [], f"{item_id} was completed and also rescued"
        assert completed.status is Status.DONE
        assert row == {"status": "DONE", "owner": "hostA-w1", "attempts": 1, "retries": 0, "retry_not_before": None,
                       "lease_until": None, "notes": "done:1"}, item_id  # fmt: skip
        assert events == [*claimed, ("COMPLETED", "hostA-w1", "IN_PROGRESS", "DONE")], item_id
        return "completed"
    assert isinstance(completed, LeaseLostError), completed
    assert str(completed) == f"hostA-w1 no longer holds {item_id}: it is PENDING now"
    assert [item.id for item in reaped] == [item_id], f"{item_id}: the completion was refused but nothing rescued it"
    assert row["retry_not_before"] is not None
    not_before = row["retry_not_before"]
    notes = f"lease_expired:hostA-w1; retry:1; retry_not_before={not_before}"
    assert row == {"status": "PENDING", "owner": "", "attempts": 1, "retries": 1, "retry_not_before": not_before,
                   "lease_until": None, "notes": notes}, item_id  # fmt: skip
    assert events == [*claimed, ("REAPED", "orch@reaper", "IN_PROGRESS", "PENDING")], item_id
    with pytest.raises(LeaseLostError, match="it is PENDING now"):
        store.complete(item_id, "hostA-w1", attempt=1)
    return "rescued"


def test_a_completion_racing_the_reaper_ends_either_done_or_rescued_never_both(store, pg_dsn):
    completer = PostgresStore(_named(pg_dsn, "hostA-w1"), policy=POLICY, pool_size=1)
    reaper = PostgresStore(_named(pg_dsn, "hostB-w1"), policy=POLICY, pool_size=1)
    after_lease = T0 + LEASE + 1  # the lease is over by the reaper's clock in every round
    try:
        # First, forced: the reaper meets a row that a completion holds locked, skips it, and the completion wins.
        store.add([Item("R-held")], actor="test")
        store.claim("hostA-w1", lease=LEASE, now=T0, item_id="R-held")
        with _admin(pg_dsn) as conn, conn.transaction():
            conn.execute("SELECT 1 FROM items WHERE id = 'R-held' FOR UPDATE")
            assert reaper.reap(now=after_lease) == []
        assert _check_round(pg_dsn, store, "R-held", completer.complete("R-held", "hostA-w1", attempt=1), []) == (
            "completed"
        )

        # Then raced: both start behind a barrier, many times.
        barrier = threading.Barrier(2, timeout=WAIT)

        def complete(item_id: str):
            barrier.wait()
            try:
                return completer.complete(item_id, "hostA-w1", attempt=1)
            except LeaseLostError as error:
                return error

        def reap() -> list[Item]:
            barrier.wait()
            return reaper.reap(now=after_lease)

        outcomes: Counter[str] = Counter()
        with ThreadPoolExecutor(2) as threads:
            for k in range(ROUNDS):
                item_id = f"R-{k:03d}"
                store.add([Item(item_id)], actor="test")
                claim = store.claim("hostA-w1", lease=LEASE, now=T0, item_id=item_id)
                assert (claim.item.id, claim.attempt, claim.lease_until) == (item_id, 1, T0 + LEASE)
                calls = {"complete": (complete, item_id), "reap": (reap,)}
                order = ["complete", "reap"] if k % 2 else ["reap", "complete"]  # who is submitted first
                futures = {name: threads.submit(*calls[name]) for name in order}
                completed = futures["complete"].result(timeout=WAIT)
                reaped = futures["reap"].result(timeout=WAIT)
                outcomes[_check_round(pg_dsn, store, item_id, completed, reaped)] += 1
    finally:
        completer.close()
        reaper.close()

    assert sum(outcomes.values()) == ROUNDS
    with _admin(pg_dsn) as conn:
        both = conn.execute(
            "SELECT item_id FROM events GROUP BY item_id"
            " HAVING count(*) FILTER (WHERE event = 'COMPLETED') > 0 AND count(*) FILTER (WHERE event = 'REAPED') > 0"
        ).fetchall()
        odd = conn.execute(
            "SELECT id FROM items WHERE (status = 'DONE' AND (retry_not_before IS NOT NULL OR retries > 0"
            " OR notes LIKE '%%lease_expired%%')) OR (status <> 'IN_PROGRESS' AND lease_until IS NOT NULL)"
        ).fetchall()
    assert both == [] and odd == []
    print(f"completion vs reaper over {ROUNDS} rounds: {dict(outcomes)}")


# --- dependencies ---------------------------------------------------------------------------------------


def _waiting_on_a_lock(dsn: str, application: str) -> bool:
    """Whether a connection named ``application`` is waiting for a lock another transaction holds."""
    with _admin(dsn) as conn:
        waiting = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND wait_event_type = 'Lock'",
            (application,),
        ).fetchone()[0]
    return waiting > 0


def test_a_dependent_added_while_its_prerequisite_completes_still_becomes_runnable(store, pg_dsn):
    store.add([Item("A", title="the prerequisite")], actor="test")
    claim = store.claim("hostA-w1", lease=LEASE, now=T0)
    planner = PostgresStore(_named(pg_dsn, "hostB-planner"), policy=POLICY, pool_size=1)
    try:
        with _admin(pg_dsn) as blocker, ThreadPoolExecutor(1) as thread:
            # Another transaction holds the id Z (uncommitted), so the planner's add of [B, Z] stops at Z,
            # with B and its dependency on A written but not yet committed: the window a big add always has.
            blocker.execute("BEGIN")
            blocker.execute("INSERT INTO items (id, id_key) VALUES ('Z', 'z')")
            adding = thread.submit(planner.add, [Item("B", depends_on=("A",)), Item("Z")], actor="hostB-planner")
            wait_for(lambda: _waiting_on_a_lock(pg_dsn, "hostB-planner") or adding.done(), "the add to wait on Z")
            store.complete("A", "hostA-w1", attempt=claim.attempt)
            blocker.execute("ROLLBACK")
            adding.result(timeout=WAIT)
    finally:
        planner.close()

    assert store.get("A").status is Status.DONE
    assert [item.id for item in store.items(Status.PENDING)] == ["B", "Z"]
    taken = store.claim("hostB-w1", lease=LEASE, now=T0, item_id="B")
    with _admin(pg_dsn) as conn:
        count = conn.execute("SELECT unfinished_deps FROM items WHERE id = 'B'").fetchone()[0]
    assert taken is not None and taken.item.id == "B", f"B is PENDING, A is DONE, yet unfinished_deps = {count}"


def _unfinished(dsn: str) -> dict[str, int]:
    """Each item's maintained count of unfinished prerequisites (the column the claim reads)."""
    with _admin(dsn) as conn:
        return dict(conn.execute("SELECT id, unfinished_deps FROM items ORDER BY seq").fetchall())


def test_the_unfinished_prerequisite_count_follows_every_change_of_a_prerequisite(store, pg_dsn):
    store.add([Item("A"), Item("C")], actor="test")
    store.add([Item("B", depends_on=("a", "C"))], actor="test")
    assert _unfinished(pg_dsn) == {"A": 0, "C": 0, "B": 2}
    for item_id in ("A", "C"):
        claim = store.claim("w", lease=LEASE, now=T0, item_id=item_id)
        store.complete(item_id, "w", attempt=claim.attempt, now=T0)
    assert _unfinished(pg_dsn) == {"A": 0, "C": 0, "B": 0}
    operations.replan(store, "A", "redo it")  # a DONE prerequisite back to PENDING: B waits again
    assert _unfinished(pg_dsn)["B"] == 1
    assert store.claim("w", lease=LEASE, now=T0, item_id="B") is None
    claim = store.claim("w", lease=LEASE, now=T0, item_id="A")
    store.complete("A", "w", attempt=claim.attempt, now=T0)
    assert _unfinished(pg_dsn)["B"] == 0
    store.upsert([Item("C", Status.FAILED, attempts=1)], actor="test")  # an import that undoes a DONE
    assert _unfinished(pg_dsn)["B"] == 1
    store.upsert([Item("B", depends_on=("A",))], actor="test")  # new prerequisites: counted afresh
    assert _unfinished(pg_dsn)["B"] == 0
    assert store.claim("w", lease=LEASE, now=T0, item_id="B").item.id == "B"


def test_the_claim_reads_the_count_and_never_scans_the_prerequisites(store, pg_dsn):
    store.add([Item("A")], actor="test")
    store.add([Item("B", depends_on=("A",))], actor="test")
    assert store.claim("w", lease=LEASE, now=T0, item_id="B") is None
    with _admin(pg_dsn) as conn:  # a count of 0 while A is still PENDING: only a claim that trusts it takes B
        conn.execute("UPDATE items SET unfinished_deps = 0 WHERE id = 'B'")
    assert store.claim("w", lease=LEASE, now=T0, item_id="B").item.id == "B"


# --- migrations --------------------------------------------------------------------------------------

MIGRATOR = textwrap.dedent(
    """\
    import json, sys
    from orchestrator.model import Item
    from orchestrator.store.postgres import PostgresStore

    dsn, name = sys.argv[1:3]
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    if sys.stdin.readline() != "go\\n":
        raise SystemExit("runner: no go signal")
    store = PostgresStore(dsn)
    store.add([Item("M-" + name)], actor=name)
    sys.stdout.write(json.dumps({"name": name, "items": len(store.items())}) + "\\n")
    store.close()
    """
)
"""Opens the store on go (imports done before), so eight first opens meet on the empty database."""


def test_eight_runners_opening_an_empty_database_at_once_apply_each_migration_once(pg_dsn):
    names = [f"runner-{k}" for k in range(8)]
    with started_together([[sys.executable, "-c", MIGRATOR, pg_dsn, name] for name in names]) as procs:
        outputs = finish(procs)
    assert [json.loads(out)["name"] for out in outputs] == names

    with _admin(pg_dsn) as conn:
        applied = conn.execute("SELECT name, count(*) FROM orch_migrations GROUP BY name ORDER BY name").fetchall()
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename IN ('items', 'events', 'deps')")
        tables = tables.fetchone()
    assert applied == [(name, 1) for name, _ in MIGRATIONS]
    assert tables == (3,)
    store = PostgresStore(pg_dsn)  # and once more, migrated already: a no-op
    assert sorted(item.id for item in store.items()) == sorted(f"M-{name}" for name in names)
    store.close()
    with _admin(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM orch_migrations").fetchone() == (len(MIGRATIONS),)


def test_a_database_from_a_newer_orch_is_refused(store, pg_dsn, tmp_path):
    store.add([Item("N-1")], actor="test")
    with _admin(pg_dsn) as conn:
        conn.execute("INSERT INTO orch_migrations (name) VALUES ('m900_from_the_future')")

    with pytest.raises(SchemaError, match=r"newer orch \(migrations m900_from_the_future\)"):
        PostgresStore(pg_dsn)
    for argv in (["status"], ["add", "--title", "more work"]):
        refused = run_orch("--db", pg_dsn, *argv, cwd=tmp_path)
        assert refused.returncode == 2, refused
        assert refused.stdout == ""
        assert refused.stderr == "error: the database was made by a newer orch (migrations m900_from_the_future)\n"
    assert [item.id for item in store.items()] == ["N-1"]


# --- waking idle runners ------------------------------------------------------------------------------

WAITER = textwrap.dedent(
    """\
    import json, sys, time
    from orchestrator.store.postgres import PostgresStore

    store = PostgresStore(sys.argv[1])
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    started = time.monotonic()
    woken = store.wait_for_work(timeout=30)
    sys.stdout.write(json.dumps({"woken": woken, "seconds": time.monotonic() - started}) + "\\n")
    store.close()
    """
)
"""An idle runner's wait: LISTEN, then block for up to 30 s."""


def test_an_add_on_another_connection_wakes_an_idle_waiter_at_once(store, pg_dsn):
    with reaped_at_exit([popen([sys.executable, "-c", WAITER, _named(pg_dsn, "hostB-idle")])]) as (proc,):
        assert read_line(proc, time.monotonic() + WAIT) == b"ready\n"
        wait_for(lambda: _listening(pg_dsn, "hostB-idle"), "the waiter to LISTEN")
        store.add([Item("W-1")], actor="hostA-operator")
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0 and err == b"", err.decode()
    report = json.loads(out)
    assert report["woken"] is True
    assert report["seconds"] < 15, report  # woken by the NOTIFY, not by its 30 s timeout


def test_add_complete_and_replan_wake_a_waiter_and_heartbeats_do_not(store, pg_dsn):
    waiter = PostgresStore(pg_dsn, policy=POLICY)
    try:
        assert waiter.wait_for_work(timeout=0.05) is False  # now listening; nothing happened yet
        store.add([Item("W-1"), Item("W-2", depends_on=("W-1",)), Item("W-3")], actor="test")
        assert waiter.wait_for_work(timeout=WAIT) is True
        claim = store.claim("hostA-w1", lease=LEASE)
        store.heartbeat("W-1", "hostA-w1", lease=LEASE, attempt=claim.attempt)
        assert waiter.wait_for_work(timeout=0.3) is False
        store.complete("W-1", "hostA-w1", attempt=claim.attempt)  # unblocks W-2: new work
        assert waiter.wait_for_work(timeout=WAIT) is True
        from orchestrator import operations

        operations.replan(store, "W-1", notes="again")
        assert store.get("W-1").status is Status.PENDING
        assert waiter.wait_for_work(timeout=WAIT) is True
        assert waiter.wait_for_work(timeout=0.05) is False  # every wake-up was taken
        lone = store.claim("hostA-w1", lease=LEASE, item_id="W-3")
        store.complete("W-3", "hostA-w1", attempt=lone.attempt)  # unblocks nothing: no wake-up
        assert waiter.wait_for_work(timeout=0.3) is False
    finally:
        waiter.close()


QUICK = {"kind": "command", "argv": [PY, "-c", "open('ok.txt', 'w').write('ok')"]}


def _runner(tmp_path: Path, dsn: str, name: str, repo: Path, *args: str) -> subprocess.Popen:
    """``orch --db DSN run ARGS`` in its own session in ``repo``, output to ``<tmp_path>/<name>.out``."""
    out = (tmp_path / f"{name}.out").open("w")
    proc = subprocess.Popen(orch_argv("--db", _named(dsn, name), "run", *args), cwd=repo, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env(),
                            start_new_session=True)  # fmt: skip
    out.close()
    proc.output = lambda: (tmp_path / f"{name}.out").read_text()
    return proc


@contextmanager
def _stopped_at_exit(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_an_idle_forever_runner_picks_up_an_item_added_later(store, pg_dsn, tmp_path):
    repo = tmp_path / "repo"
    make_repo(repo, [], config(QUICK))
    with _stopped_at_exit(_runner(tmp_path, pg_dsn, "hostA-runner", repo, "--forever")) as proc:
        wait_for(lambda: _listening(pg_dsn, "hostA-runner") or proc.poll() is not None, "the runner to idle",
                 detail=proc.output)  # fmt: skip
        assert proc.poll() is None, proc.output()
        assert store.counts()["DONE"] == 0

        store.add([Item("LW-1", title="arrives while the runner idles")], actor="hostB-operator")
        wait_for(lambda: store.get("LW-1").status is Status.DONE or proc.poll() is not None, "LW-1 to be done",
                 detail=proc.output)  # fmt: skip
        assert proc.poll() is None, proc.output()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=WAIT)
    output = proc.output()
    assert proc.returncode == 130, output
    assert "LW-1 attempt 1 started" in output and "Traceback" not in output, output
    item = store.get("LW-1")
    assert (item.status, item.attempts, item.notes) == (Status.DONE, 1, "done:1")
    assert item.owner.startswith(f"runner-{proc.pid}@")
    assert [e.event for e in store.events("LW-1")] == ["ADDED", "CLAIMED", "COMPLETED"]
    assert git(repo, "log", "-1", "--format=%s", "orch/LW-1/1").startswith("LW-1 step 1: SUCCESS")


# --- stopping a runner -------------------------------------------------------------------------------------

BLOCKER = """\
import os, sys, time
from pathlib import Path

release = Path(sys.argv[1])
Path(sys.argv[2]).write_text(f"{os.getpid()}")
deadline = time.monotonic() + 60
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.02)
"""
"""A worker agent that writes its pid, then runs until the test releases it (or 60 s pass)."""


def _blocking_repo(tmp_path: Path, **settings) -> tuple[Path, Path, Path]:
    """A repo whose worker blocks until ``release`` exists; it writes its pid to ``started``."""
    script, release, started = tmp_path / "blocker.py", tmp_path / "release", tmp_path / "started"
    script.write_text(BLOCKER)
    repo = tmp_path / "repo"
    make_repo(repo, [], config({"kind": "command", "argv": [PY, str(script), str(release), str(started)]}, **settings))
    return repo, release, started


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_sigint_stops_a_runner_giving_its_item_back_and_stopping_its_agent(store, pg_dsn, tmp_path):
    repo, release, started = _blocking_repo(tmp_path)
    store.add([Item("SI-1", title="running when the runner is stopped")], actor="test")
    agent = None
    try:
        with _stopped_at_exit(_runner(tmp_path, pg_dsn, "hostA-runner", repo, "--forever")) as proc:
            wait_for(lambda: started.exists() or proc.poll() is not None, "the agent to start", detail=proc.output)
            agent = int(wait_for(lambda: started.read_text(), "the agent's pid"))
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=WAIT)
        assert proc.returncode == 130, proc.output()
        assert "items released" in proc.output()
        item = store.get("SI-1")
        assert (item.status, item.owner, item.attempts) == (Status.PENDING, "", 1), item
        assert [e.event for e in store.events("SI-1")] == ["ADDED", "CLAIMED", "RELEASED"]
        assert not _alive(agent), "the agent outlived its runner"
    finally:
        release.touch()  # whatever happened, the agent ends
        if agent is not None:
            wait_for(lambda: not _alive(agent), "the released agent to end")


# --- connections dropped under a runner (a failover, a restart, a broken network) -----------------------


def test_a_runner_keeps_heartbeating_after_its_connections_are_dropped(store, pg_dsn, tmp_path):
    repo, release, started = _blocking_repo(tmp_path, lease=3, heartbeat=0.3)
    store.add([Item("HB-1", title="a long attempt")], actor="test")
    with _stopped_at_exit(_runner(tmp_path, pg_dsn, "hostA-runner", repo)) as proc:
        try:
            wait_for(lambda: started.exists() or proc.poll() is not None, "the agent to start", detail=proc.output)
            assert proc.poll() is None, proc.output()
            assert _drop_connections(pg_dsn, "hostA-runner") >= 1
            with _admin(pg_dsn) as conn:
                dropped_at = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]

            def renewed() -> bool:
                if "Traceback" in proc.output() or proc.poll() is not None:
                    pytest.fail(f"the runner broke on the dropped connection:\n{proc.output()}")
                return (store.lease_until("HB-1") or 0) > dropped_at + 3 + 0.5  # renewed after the drop

            wait_for(renewed, "a heartbeat after the drop", timeout=20, detail=proc.output)
        finally:
            release.touch()
        wait_for(lambda: proc.poll() is not None, "the run to end", detail=proc.output)
    assert proc.returncode == 0, proc.output()
    assert store.get("HB-1").status is Status.DONE


def test_a_forever_runner_survives_its_connections_being_dropped(store, pg_dsn, tmp_path):
    repo = tmp_path / "repo"
    make_repo(repo, [], config(QUICK))
    with _stopped_at_exit(_runner(tmp_path, pg_dsn, "hostA-runner", repo, "--forever")) as proc:
        wait_for(lambda: _listening(pg_dsn, "hostA-runner") or proc.poll() is not None, "the runner to idle",
                 detail=proc.output)  # fmt: skip
        assert _drop_connections(pg_dsn, "hostA-runner") >= 1
        store.add([Item("DC-1", title="added after a failover")], actor="test")
        wait_for(lambda: store.get("DC-1").status is Status.DONE or proc.poll() is not None, "DC-1 to be done",
                 detail=proc.output)  # fmt: skip
        assert proc.poll() is None, proc.output()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=WAIT)
    assert proc.returncode == 130, proc.output()
    assert "Traceback" not in proc.output()


# --- moving a queue between all three backends -------------------------------------------------------------

AWKWARD_NOTES = "error:a | b \\| c; naïve — 中文 😀; `code | span`"


def _round_trip_items() -> list[Item]:
    """One item in each state, every field used, awkward text where text goes."""
    extra = {"Priority": "high | urgent", "x-Team": " ünïcode, spaced "}
    return [
        Item("R-1", Status.DONE, "Ship | it", "w1", "2027-01-15T08:00:00Z", 1, None, None, "coder", "job-1", (),
             "done:1", extra),
        Item("R-2", Status.IN_PROGRESS, "Fix \\ backslash \\", "hostA-w2", "2027-01-15T09:30:00Z", 2, 5, None, "",
             "job-1", ("R-1",), "error:x; retry:1", {"Priority": "", "x-Team": "a"}),
        Item("R-3", Status.PENDING, "Wait for the backoff", "", "", 1, None, 1_800_000_600, "", "", ("R-1", "R-2"),
             f"{AWKWARD_NOTES}; retry:1; retry_not_before=1800000600", {"Priority": "low", "x-Team": ""}),
        Item("R-4", Status.BLOCKED, "Needs a human 🙋\nsecond line", "w3", "2027-01-15T10:00:00Z", 3, 3, None, "", "",
             (), "intervention:tests disagree | twice", {"Priority": "", "x-Team": ""}),
        Item("R-5", Status.FAILED, "Gave up", "hostB-w1", "2027-01-15T11:00:00Z", 3, None, None, "", "job-2", ("r-1",),
             "error:boom; error:boom; error:boom", {"Priority": "p0", "x-Team": "ops"}),
    ]  # fmt: skip


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_import_and_export_move_a_queue_markdown_to_postgres_to_sqlite_to_markdown(pg_dsn, tmp_path):
    expected = [item.as_dict() for item in _round_trip_items()]
    source = tmp_path / "QUEUE.md"
    header = FULL_HEADER.replace("| notes |\n", "| notes | Priority | x-Team |\n").replace(
        "| --- |\n", "| --- | --- | --- |\n"
    )
    source.write_text("# Queue\n\nProse | with a pipe.\n\n" + header + "\nMore prose.\n", encoding="utf-8")
    MarkdownStore(source).add(_round_trip_items(), actor="test")
    assert [item.as_dict() for item in MarkdownStore(source).items()] == expected

    def orch(*args: str) -> str:
        return _ok(run_orch(*args, cwd=tmp_path))

    assert orch("--db", pg_dsn, "import", "--from", str(source)) == f"imported from {source}: 5 added, 0 updated\n"
    postgres = PostgresStore(pg_dsn)
    assert [item.as_dict() for item in postgres.items()] == expected
    assert postgres.counts() == {"PENDING": 1, "IN_PROGRESS": 1, "BLOCKED": 1, "FAILED": 1, "DONE": 1}
    assert [e.event for e in postgres.events("R-2")] == ["IMPORTED"]
    assert postgres.lease_until("R-2") is not None  # an imported IN_PROGRESS item gets a lease, so it can be reaped

    middle = tmp_path / "FROM-POSTGRES.md"
    assert orch("--db", pg_dsn, "export", "--to", str(middle)) == f"exported to {middle}: 5 added, 0 updated\n"
    database = tmp_path / "queue.db"
    assert orch("--db", str(database), "import", "--from", str(middle)) == (
        f"imported from {middle}: 5 added, 0 updated\n"
    )
    sqlite = SqliteStore(database, create=False)
    assert [item.as_dict() for item in sqlite.items()] == expected

    final = tmp_path / "FROM-SQLITE.md"
    assert orch("--db", str(database), "export", "--to", str(final)) == f"exported to {final}: 5 added, 0 updated\n"
    assert [item.as_dict() for item in MarkdownStore(final).items()] == expected
    assert orch("--queue", str(final), "validate") == f"{final}: ok (5 items)\n"

    # And back into PostgreSQL over the same ids: every item replaced, nothing changed.
    assert orch("--db", pg_dsn, "import", "--from", str(final)) == f"imported from {final}: 0 added, 5 updated\n"
    assert [item.as_dict() for item in postgres.items()] == expected
    postgres.close()
    sqlite.close()


# --- missing driver, bad DSN ----------------------------------------------------------------------------------

SECRET = "s3cret-Pa55"

WITHOUT_PSYCOPG = textwrap.dedent(
    """\
    import builtins, sys

    how = sys.argv[1]
    if how == "sys.modules":
        sys.modules["psycopg"] = None  # import psycopg now raises ImportError
        sys.modules["psycopg_pool"] = None
    else:
        real_import = builtins.__import__

        def without_psycopg(name, *args, **kwargs):
            if name.split(".")[0] in ("psycopg", "psycopg_pool"):
                raise ImportError(f"No module named {name!r}")
            return real_import(name, *args, **kwargs)

        builtins.__import__ = without_psycopg
    from orchestrator.cli import cli

    cli.main(sys.argv[2:], prog_name="orch")
    """
)
"""``orch ARGS`` in a process where psycopg cannot be imported."""


@pytest.mark.parametrize("how", ["sys.modules", "builtins.__import__"])
def test_without_psycopg_the_error_names_the_extra(tmp_path, how):
    dsn = f"postgresql://orch:{SECRET}@db.example.invalid/queue"
    done = subprocess.run([sys.executable, "-c", WITHOUT_PSYCOPG, how, "--db", dsn, "status"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=WAIT, env=env())  # fmt: skip
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert done.stderr == (
        "error: the PostgreSQL backend needs psycopg: pip install 'orch[postgres]'"
        " (or pip install 'psycopg[binary,pool]')\n"
    )
    assert SECRET not in done.stderr


BAD_DSNS = {
    "password-in-userinfo": f"postgresql://orch:{SECRET}@127.0.0.1:1/queue",
    "password-in-query": f"postgresql://orch@127.0.0.1:1/queue?password={SECRET}&connect_timeout=2",
}


@pytest.fixture(scope="module")
def bad_dsn_runs(tmp_path_factory):
    """``orch --db <bad DSN> status`` for each bad DSN, all started at once (each takes the pool's 10 s)."""
    folder = tmp_path_factory.mktemp("bad-dsn")
    procs = {name: subprocess.Popen(orch_argv("--db", dsn, "status"), cwd=folder, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env())
             for name, dsn in BAD_DSNS.items()}  # fmt: skip
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=WAIT)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def test_a_bad_dsn_is_bad_input_and_the_password_is_not_shown(bad_dsn_runs):
    done = bad_dsn_runs["password-in-userinfo"]
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert "error: cannot reach PostgreSQL at 127.0.0.1:1/queue" in done.stderr
    assert SECRET not in done.stderr and "orch:" not in done.stderr


def test_a_password_given_as_a_dsn_parameter_is_not_shown_either(bad_dsn_runs):
    done = bad_dsn_runs["password-in-query"]
    assert done.returncode == 2, done
    assert done.stdout == ""
    assert SECRET not in done.stderr, done.stderr


def test_a_bad_dsn_gives_one_error_line_that_says_why(bad_dsn_runs):
    done = bad_dsn_runs["password-in-userinfo"]
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: cannot reach PostgreSQL at 127.0.0.1:1/queue: ")
    assert "refused" in done.stderr


# --- the test harness ------------------------------------------------------------------------------


def _databases(dsn: str) -> set[str]:
    with _admin(dsn) as conn:
        return {name for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall()}


def test_a_contract_test_run_on_its_own_uses_the_server_the_environment_names(pg_server):
    """Its ``store`` fixture asks for ``pg_dsn`` inside the test, after ``_isolated_env`` deleted every ORCH_*
    variable: ORCH_TEST_PG_DSN and ORCH_REQUIRE_PG must have been read before, or it starts a cluster of its
    own (or skips, where there is none) instead of using the server CI named."""
    node = "tests/test_store_contract.py::test_an_unknown_id_is_not_found[postgres]"
    before = _databases(pg_server)
    named = {**os.environ, "PYTHONPATH": str(ROOT), "ORCH_TEST_PG_DSN": pg_server, "ORCH_REQUIRE_PG": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node], cwd=ROOT,
                          env=named, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
    assert len(_databases(pg_server) - before) == 1, "its fresh database is not on the named server"
