"""SqliteStore specifics: migrations, the ops spec's reliability policy, busy handling."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from orchestrator import operations
from orchestrator.cli import cli
from orchestrator.errors import MaxAttemptsError, NotEligibleError, SchemaError
from orchestrator.model import Item, Policy, Status
from orchestrator.store.sqlite import MIGRATIONS, SqliteStore

T0 = 1_800_000_000.0


def test_schema_is_created_on_first_use_and_migrating_twice_is_a_noop(tmp_path):
    path = tmp_path / "q.db"
    SqliteStore(path).close()
    first = sqlite3.connect(path).execute("SELECT name, applied_at FROM _orch_migrations").fetchall()
    SqliteStore(path).close()
    again = sqlite3.connect(path).execute("SELECT name, applied_at FROM _orch_migrations").fetchall()
    assert [name for name, _ in first] == [name for name, _ in MIGRATIONS]
    assert again == first


def test_a_database_from_before_m004_migrates_keeping_its_items_and_events(tmp_path, monkeypatch):
    path = tmp_path / "q.db"
    names = [name for name, _ in MIGRATIONS]
    old_steps = MIGRATIONS[: names.index("m004_lean_writes")]
    monkeypatch.setattr("orchestrator.store.sqlite.MIGRATIONS", old_steps)
    old = SqliteStore(path)
    old.add([Item("a"), Item("b")], actor="t")
    claim = old.claim("w", lease=30, now=T0)
    old.complete(claim.item.id, "w", attempt=claim.attempt)
    before = [(e.event, e.item_id) for e in old.events("a")], old.version()
    old.close()
    monkeypatch.undo()

    store = SqliteStore(path)
    db = sqlite3.connect(path)
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"items_status", "events_item"} <= indexes
    assert not {"items_pending", "items_leases"} & indexes
    assert "AUTOINCREMENT" not in db.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()[0]
    assert ([(e.event, e.item_id) for e in store.events("a")], store.version()) == before
    claim = store.claim("w", lease=30)
    assert store.complete(claim.item.id, "w", attempt=claim.attempt).id == "b"
    assert store.version() > before[1]  # new events keep counting up from the old ones
    applied = db.execute("SELECT name, applied_at FROM _orch_migrations").fetchall()
    store.close()
    SqliteStore(path).close()
    assert db.execute("SELECT name, applied_at FROM _orch_migrations").fetchall() == applied
    assert [name for name, _ in applied] == names


def test_a_database_from_a_newer_orch_is_refused(tmp_path):
    path = tmp_path / "q.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO _orch_migrations VALUES ('m999_future', 'x')")
    with pytest.raises(SchemaError, match="newer orch"):
        SqliteStore(path)


def test_a_file_that_is_not_a_database_is_bad_input(tmp_path, cli_runner):
    path = tmp_path / "q.db"
    path.write_text("| id | status |\n")
    result = cli_runner.invoke(cli, ["--db", str(path), "status"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: not an orch queue database")


def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path, cli_runner):
    import sqlite3

    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    result = cli_runner.invoke(cli, ["--db", str(path), "add", "--title", "x"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {path}: not an orch queue database (it holds tables: notes)")
    with sqlite3.connect(path) as db:
        assert [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["notes"]


def test_wal_mode_and_normal_sync_by_default(tmp_path):
    store = SqliteStore(tmp_path / "q.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert SqliteStore(tmp_path / "d.db", durable=True).db.execute("PRAGMA synchronous").fetchone()[0] == 2


@pytest.fixture
def store(tmp_path):
    return SqliteStore(tmp_path / "q.db", policy=Policy(max_attempts=2, backoff_base=60, jitter=0.1))


def test_retry_takes_failed_items_within_the_budget_with_backoff_metadata(store):
    store.add([Item("a")], actor="t")
    claim = store.claim("w", lease=30, now=T0)
    store.fail("a", "w", note="error:x", attempt=claim.attempt, now=T0, retryable=False)
    retried = store.retry("a", actor="op", now=T0 + 5)
    assert retried.status is Status.PENDING
    assert 54 <= retried.retry_not_before - (T0 + 5) <= 66
    assert retried.note_list()[-2:] == ["retry:1", f"retry_not_before={retried.retry_not_before}"]
    assert retried.attempts == 1  # counted when the next attempt is claimed, not twice


def test_retry_takes_a_timed_out_item_but_not_a_live_one(store):
    store.add([Item("a")], actor="t")
    store.claim("w", lease=30, now=T0)
    with pytest.raises(NotEligibleError, match="timed-out IN_PROGRESS"):
        store.retry("a", actor="op", now=T0 + 10)
    assert store.retry("a", actor="op", now=T0 + 31).status is Status.PENDING


def test_retry_refuses_blocked_and_done_in_sqlite_mode(store):
    store.add([Item("b", Status.BLOCKED), Item("d", Status.DONE)], actor="t")
    for item_id in ("b", "d"):
        with pytest.raises(NotEligibleError):
            store.retry(item_id, actor="op")


def test_retry_refuses_when_attempts_are_used_up(store):
    store.add([Item("a", Status.FAILED, attempts=2)], actor="t")
    with pytest.raises(MaxAttemptsError, match="2 of 2 attempts"):
        store.retry("a", actor="op")


def test_replan_to_pending_resets_owner_and_lease(store):
    store.add([Item("a")], actor="t")
    store.claim("w", lease=30, now=T0)
    store.fail("a", "w", note="error:x", now=T0, retryable=False)
    replanned = operations.replan(store, "a", "new plan")
    assert (replanned.status, replanned.owner, store.lease_until("a")) == (Status.PENDING, "", None)


def test_a_writer_holding_the_database_makes_others_wait_not_fail(tmp_path, monkeypatch):
    path = tmp_path / "q.db"
    SqliteStore(path).add([Item("a")], actor="t")
    other = SqliteStore(path, busy_timeout=0.05)  # busy errors come fast: the retry wrapper must absorb them
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another program writing, outside orch's lock
    retried = threading.Event()  # set on the second try: the first one met the busy database
    calls = []
    original = other._transaction

    def counting_tries(work):
        calls.append(1)
        if len(calls) == 2:
            retried.set()
        return original(work)

    monkeypatch.setattr(other, "_transaction", counting_tries)
    thread = threading.Thread(target=lambda: (retried.wait(10), blocker.execute("COMMIT")))
    thread.start()
    assert operations.cancel(other, "a").status is Status.BLOCKED
    thread.join(10)
    assert len(calls) >= 2


def test_each_change_and_its_event_commit_together(store):
    store.add([Item("a")], actor="t")

    def explode(item):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.update("a", explode, actor="t", event="X")
    assert [e.event for e in store.events("a")] == ["ADDED"]


def test_imported_in_progress_items_get_a_lease_from_their_start(store):
    store.upsert([Item("a", Status.IN_PROGRESS, owner="w", started="2027-01-15T08:00:00Z")], actor="import")
    assert store.lease_until("a") == T0 + 300
    assert [item.id for item in store.reap(now=T0 + 301)] == ["a"]
