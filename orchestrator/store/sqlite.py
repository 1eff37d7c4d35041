"""SqliteStore: the queue in one SQLite file, for many concurrent workers.

WAL mode; every write is one ``BEGIN IMMEDIATE`` transaction holding the state
change and its event. Writers of this process and others first take a sidecar
``flock`` (``<db>-lock``, named like SQLite's own ``-wal`` and ``-shm``) so
they queue in the kernel instead of polling on SQLite's busy handler; the
busy timeout and a retry wrapper still cover any other writer, so "database
is locked" never reaches a user. The schema is an append-only list of
migrations applied on open.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from orchestrator import model
from orchestrator.errors import (
    BusyError,
    DuplicateIdError,
    LeaseLostError,
    MissingPathError,
    NotFoundError,
    SchemaError,
)
from orchestrator.model import DEFAULT_POLICY, Claim, Item, Policy, Status
from orchestrator.store.base import Change, Event
from orchestrator.timeutil import now_iso, parse_iso

T = TypeVar("T")
SCHEMA_NAME = "orch-queue"
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = []
FIELDS = (
    "id", "status", "title", "owner", "started", "attempts", "max_attempts",
    "retry_not_before", "agent", "job", "depends_on", "notes", "extra",
)  # fmt: skip
BUSY_RETRY_SECONDS = 60.0
REAP_EVERY = 1.0  # seconds between a store's reaper queries on the real clock (a claim rarely finds a lease ended)


def migration(function: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
    """Register a schema step; names are recorded in ``_orch_migrations``; never edit a shipped one."""
    MIGRATIONS.append((function.__name__, function))
    return function


@migration
def m001_items(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE items (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE COLLATE NOCASE,
            status TEXT NOT NULL DEFAULT 'PENDING'
                CHECK (status IN ('PENDING', 'IN_PROGRESS', 'BLOCKED', 'FAILED', 'DONE')),
            title TEXT NOT NULL DEFAULT '',
            owner TEXT NOT NULL DEFAULT '',
            started TEXT NOT NULL DEFAULT '',
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER,
            retry_not_before INTEGER,
            agent TEXT NOT NULL DEFAULT '',
            job TEXT NOT NULL DEFAULT '',
            depends_on TEXT NOT NULL DEFAULT '',
            notes TEXT NOT NULL DEFAULT '',
            extra TEXT NOT NULL DEFAULT '{}',
            lease_until REAL,
            heartbeat_at REAL
        )"""
    )
    db.execute("CREATE INDEX items_pending ON items (seq) WHERE status = 'PENDING'")
    db.execute("CREATE INDEX items_leases ON items (lease_until) WHERE status = 'IN_PROGRESS'")
    db.execute("CREATE INDEX items_status ON items (status)")
    db.execute(
        "CREATE TABLE deps (item_id TEXT NOT NULL COLLATE NOCASE, dep_id TEXT NOT NULL COLLATE NOCASE,"
        " PRIMARY KEY (item_id, dep_id)) WITHOUT ROWID"
    )


@migration
def m002_events(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            time TEXT NOT NULL,
            item_id TEXT NOT NULL,
            actor TEXT NOT NULL,
            event TEXT NOT NULL,
            from_status TEXT NOT NULL,
            to_status TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            data TEXT NOT NULL DEFAULT '{}'
        )"""
    )
    db.execute("CREATE INDEX events_item ON events (item_id, seq)")


@migration
def m003_meta(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@migration
def m004_lean_writes(db: sqlite3.Connection) -> None:
    """Drop what every write paid for and nothing read.

    No query plan uses the partial indexes ``items_pending`` and
    ``items_leases`` (claims and the reaper use ``items_status``), yet each
    status change updated both. ``events.seq`` loses ``AUTOINCREMENT``, which
    wrote ``sqlite_sequence`` with every event: events are never deleted, so
    a plain rowid keeps growing just the same.
    """
    db.execute("DROP INDEX IF EXISTS items_pending")
    db.execute("DROP INDEX IF EXISTS items_leases")
    db.execute(
        """CREATE TABLE events_new (
            seq INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            item_id TEXT NOT NULL,
            actor TEXT NOT NULL,
            event TEXT NOT NULL,
            from_status TEXT NOT NULL,
            to_status TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            data TEXT NOT NULL DEFAULT '{}'
        )"""
    )
    db.execute("INSERT INTO events_new SELECT seq, time, item_id, actor, event, from_status, to_status, note, data"
               " FROM events")  # fmt: skip
    db.execute("DROP TABLE events")
    db.execute("ALTER TABLE events_new RENAME TO events")
    db.execute("CREATE INDEX events_item ON events (item_id, seq)")
    db.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")


INSERT_EVENT = (
    "INSERT INTO events (time, item_id, actor, event, from_status, to_status, note, data)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
COMPLETE = (
    "UPDATE items SET status = 'DONE', lease_until = NULL,"
    " notes = notes || CASE WHEN notes = '' THEN '' ELSE '; ' END || 'done:' || attempts || :extra"
    " WHERE id = :id AND status = 'IN_PROGRESS' AND owner = :owner AND (:attempt IS NULL OR attempts = :attempt)"
    " RETURNING *"
)
"""``model.complete`` as one fenced statement: it matches only while this owner and attempt hold the item."""

RUNNABLE = """
    status = 'PENDING'
    AND (retry_not_before IS NULL OR retry_not_before <= :now)
    AND attempts < COALESCE(max_attempts, :max_attempts)
    AND NOT EXISTS (
        SELECT 1 FROM deps d WHERE d.item_id = items.id
        AND NOT EXISTS (SELECT 1 FROM items p WHERE p.id = d.dep_id AND p.status = 'DONE')
    )
"""


Step = Callable[[sqlite3.Connection, list], "sqlite3.Row | None"]
"""Part of a write: runs its statements, adds its events' ``INSERT_EVENT`` parameters to the list, returns a row."""


def _logging(*steps: Step) -> Callable[[sqlite3.Connection], list]:
    """A write running ``steps`` in order, then inserting all their events in one statement; their rows."""

    def work(db: sqlite3.Connection) -> list:
        events: list[tuple] = []
        rows = [step(db, events) for step in steps]
        if events:
            db.execute(INSERT_EVENT + ", (?, ?, ?, ?, ?, ?, ?, ?)" * (len(events) - 1), sum(events, ()))
        return rows

    return work


class SqliteStore:
    """The Store contract over SQLite; the reliability policy applies in full."""

    name = "sqlite"

    def __init__(
        self, path: Path, *, policy: Policy = DEFAULT_POLICY, durable: bool = False, busy_timeout: float = 30.0,
        rng: random.Random | None = None, create: bool = True, default_lease: float = 300.0,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.policy = policy
        self.default_lease = default_lease  # for IN_PROGRESS items imported without a lease
        self.rng = rng or random.Random()
        if not create and not self.path.exists():
            raise MissingPathError(f"{self.path}: no such database (orch import --from QUEUE.md creates one)")
        self._thread_lock = threading.RLock()
        self._lock_fd: int | None = None
        self._pid = os.getpid()
        self._last_reap = -REAP_EVERY  # the first claim on the real clock reaps
        try:
            self.db = self._connect(busy_timeout, durable)
            self._migrate()
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
                raise
            raise SchemaError(f"{self.path}: not an orch queue database ({error})") from None

    # --- connection, locking, transactions -------------------------------------

    def _connect(self, busy_timeout: float, durable: bool) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        self._retrying(lambda: db.execute("PRAGMA journal_mode = WAL"))
        # NORMAL in WAL survives any crash of the process; FULL also survives power loss.
        db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    def _file_lock(self) -> int:
        if self._lock_fd is None or self._pid != os.getpid():
            self._lock_fd = os.open(f"{self.path}-lock", os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        return self._lock_fd

    def _retrying(self, action: Callable[[], T]) -> T:
        """Run ``action``, retrying while another writer holds the database."""
        deadline = time.monotonic() + BUSY_RETRY_SECONDS
        delay = 0.001
        while True:
            try:
                return action()
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                if time.monotonic() > deadline:
                    raise BusyError(
                        f"{self.path} stayed locked by another writer for {BUSY_RETRY_SECONDS:g}s"
                    ) from None
                time.sleep(delay * (1 + self.rng.random()))
                delay = min(delay * 2, 0.1)

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction; it may run again if the database was busy."""
        with self._thread_lock:
            fd = self._file_lock()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                return self._retrying(lambda: self._transaction(work))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = work(self.db)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    def _migrate(self) -> None:
        """Apply every migration not yet recorded, each in its own transaction; twice is a no-op."""

        def step(db: sqlite3.Connection) -> bool:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "_orch_migrations" not in tables:  # someone else's database: never add our tables to it
                raise SchemaError(f"{self.path}: not an orch queue database (it holds tables: "
                                  f"{', '.join(sorted(tables)[:5])}); give --db a new file or an orch one")  # fmt: skip
            db.execute("CREATE TABLE IF NOT EXISTS _orch_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            done = {row[0] for row in db.execute("SELECT name FROM _orch_migrations")}
            unknown = done - {name for name, _ in MIGRATIONS}
            if unknown:
                raise SchemaError(
                    f"{self.path} was made by a newer orch (migrations {', '.join(sorted(unknown))}); upgrade orch"
                )
            for name, function in MIGRATIONS:
                if name not in done:
                    function(db)
                    db.execute("INSERT INTO _orch_migrations VALUES (?, ?)", (name, now_iso()))
                    return True
            return False

        while self.write(step):
            pass

    def close(self) -> None:
        self.db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- rows <-> items ----------------------------------------------------------

    @staticmethod
    def _item(row: sqlite3.Row) -> Item:
        fields = list(row[1:14])  # id .. extra by position (m001_items' column order): faster than by name
        depends, extra = fields[10], fields[12]
        fields[1] = Status(fields[1])
        fields[10] = tuple(part.strip() for part in depends.split(",") if part.strip()) if depends else ()
        fields[12] = json.loads(extra) if extra != "{}" else {}
        return Item(*fields)

    @staticmethod
    def _values(item: Item) -> dict:
        return {
            "id": item.id, "status": item.status.value, "title": item.title, "owner": item.owner,
            "started": item.started, "attempts": item.attempts, "max_attempts": item.max_attempts,
            "retry_not_before": item.retry_not_before, "agent": item.agent, "job": item.job,
            "depends_on": ", ".join(item.depends_on), "notes": item.notes,
            "extra": json.dumps(item.extra, ensure_ascii=False),
        }  # fmt: skip

    def _row(self, db: sqlite3.Connection, item_id: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise NotFoundError(item_id, str(self.path))
        return row

    def _save(self, db: sqlite3.Connection, item: Item, *, lease_until: float | None = None,
              old: Item | None = None) -> None:  # fmt: skip
        """Write ``item``'s row; given the ``old`` item, only the columns (and deps) that changed."""
        values = self._values(item)
        values["lease_until"] = lease_until if item.status is Status.IN_PROGRESS else None
        before = self._values(old) if old is not None else {}
        names = [name for name in values if name != "id" and (name not in before or values[name] != before[name])]
        sets = ", ".join(f"{name} = :{name}" for name in names)
        db.execute(f"UPDATE items SET {sets} WHERE id = :id", values)
        if old is None or old.depends_on != item.depends_on:
            self._save_deps(db, item)

    @staticmethod
    def _save_deps(db: sqlite3.Connection, item: Item) -> None:
        db.execute("DELETE FROM deps WHERE item_id = ?", (item.id,))
        db.executemany("INSERT OR IGNORE INTO deps VALUES (?, ?)", [(item.id, dep) for dep in item.depends_on])

    @staticmethod
    def _record(db: sqlite3.Connection, item_id: str, actor: str, event: str, before: str, after: str,
                note: str = "", *, at: str | None = None, data: str = "{}") -> None:  # fmt: skip
        """Append one event; ``at`` (its time) and ``data`` (JSON) may be made before the write lock is taken."""
        db.execute(INSERT_EVENT, (at or now_iso(), item_id, actor, event, before, after, note, data))

    def _transition(self, db, old: Item, new: Item, actor: str, event: str, *, lease_until=None) -> Item:
        self._save(db, new, lease_until=lease_until, old=old)
        note = new.notes[len(old.notes) :].lstrip("; ") if new.notes.startswith(old.notes) else new.notes
        self._record(db, new.id, actor, event, old.status.value, new.status.value, note)
        return new

    # --- reads --------------------------------------------------------------------

    def keeps(self, field_name: str) -> bool:
        """Every item field has a column in the database."""
        return True

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        """A query outside any write: one connection is shared by threads, so it waits its turn."""
        with self._thread_lock:
            return self._retrying(lambda: self.db.execute(sql, params).fetchall())

    def items(self, status: Status | None = None) -> list[Item]:
        if status is None:
            rows = self._read("SELECT * FROM items ORDER BY seq")
        else:
            rows = self._read("SELECT * FROM items WHERE status = ? ORDER BY seq", (status.value,))
        return [self._item(row) for row in rows]

    def counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in Status}
        for status, count in self._read("SELECT status, count(*) FROM items GROUP BY status"):
            counts[status] = count
        return counts

    def oldest(self, status: Status, limit: int) -> list[Item]:
        rows = self._read(
            "SELECT * FROM items WHERE status = ? ORDER BY started = '', started, seq LIMIT ?", (status.value, limit)
        )
        return [self._item(row) for row in rows]

    def get(self, item_id: str) -> Item:
        return self._item(self._one(item_id))

    def _one(self, item_id: str) -> sqlite3.Row:
        rows = self._read("SELECT * FROM items WHERE id = ?", (item_id,))
        if not rows:
            raise NotFoundError(item_id, str(self.path))
        return rows[0]

    def events(self, item_id: str) -> list[Event]:
        rows = self._read("SELECT * FROM events WHERE item_id = ? ORDER BY seq", (item_id,))
        return [
            Event(r["time"], r["item_id"], r["actor"], r["event"], r["from_status"], r["to_status"], r["note"],
                  json.loads(r["data"]))
            for r in rows
        ]  # fmt: skip

    def version(self) -> int:
        """A number that grows with every change (the newest event)."""
        return self._read("SELECT coalesce(max(seq), 0) FROM events")[0][0]

    def lease_ends(self) -> dict[str, float | None]:
        """Every IN_PROGRESS item's lease end."""
        rows = self._read("SELECT id, lease_until FROM items WHERE status = 'IN_PROGRESS'")
        return {row[0]: row[1] for row in rows}

    def lease_until(self, item_id: str) -> float | None:
        """When the item's current lease ends (None if it is not leased)."""
        return self._one(item_id)["lease_until"]

    # --- operator writes ----------------------------------------------------------

    def add(self, items: list[Item], *, actor: str) -> list[Item]:
        def work(db: sqlite3.Connection) -> list[Item]:
            for item in items:
                try:
                    db.execute(
                        f"INSERT INTO items ({', '.join(FIELDS)}) VALUES ({', '.join(':' + f for f in FIELDS)})",
                        self._values(item),
                    )
                except sqlite3.IntegrityError:
                    raise DuplicateIdError(item.id, str(self.path)) from None
                self._save_deps(db, item)
                self._record(db, item.id, actor, "ADDED", "", item.status.value)
            self._check_dependencies(db, items)
            return list(items)

        return self.write(work)

    def _check_dependencies(self, db: sqlite3.Connection, items: list[Item]) -> None:
        from orchestrator.errors import BadInputError

        for item in items:
            for dependency in item.depends_on:
                if dependency.lower() == item.id.lower():
                    raise BadInputError(f"'{item.id}' depends on itself")
                if db.execute("SELECT 1 FROM items WHERE id = ?", (dependency,)).fetchone() is None:
                    raise BadInputError(f"'{item.id}' depends on unknown id '{dependency}'")

    def upsert(self, items: list[Item], *, actor: str) -> tuple[int, int]:
        """Insert new items and replace existing ones by id, all at once; (added, replaced)."""

        def work(db: sqlite3.Connection) -> tuple[int, int]:
            added = replaced = 0
            for item in items:
                row = db.execute("SELECT * FROM items WHERE id = ?", (item.id,)).fetchone()
                lease = (parse_iso(item.started) or time.time()) + self.default_lease
                if row is None:
                    db.execute(
                        f"INSERT INTO items ({', '.join(FIELDS)}) VALUES ({', '.join(':' + f for f in FIELDS)})",
                        self._values(item),
                    )
                    self._save(db, item, lease_until=lease)
                    self._record(db, item.id, actor, "IMPORTED", "", item.status.value)
                    added += 1
                else:
                    self._transition(db, self._item(row), item, actor, "IMPORTED", lease_until=lease)
                    replaced += 1
            self._check_dependencies(db, items)
            return added, replaced

        return self.write(work)

    def remove(self, item_ids: list[str], *, actor: str) -> list[Item]:
        """Take items out of the queue (``orch archive``); their events stay."""

        def work(db: sqlite3.Connection) -> list[Item]:
            gone = [self._item(self._row(db, item_id)) for item_id in item_ids]
            for item in gone:
                db.execute("DELETE FROM items WHERE id = ?", (item.id,))
                db.execute("DELETE FROM deps WHERE item_id = ?", (item.id,))
                self._record(db, item.id, actor, "ARCHIVED", item.status.value, "")
            return gone

        return self.write(work)

    def update(self, item_id: str, change: Change, *, actor: str, event: str) -> Item:
        def work(db: sqlite3.Connection) -> Item:
            row = self._row(db, item_id)
            old = self._item(row)
            new = change(old)
            if new == old:
                return old
            lease = row["lease_until"] if new.status is Status.IN_PROGRESS else None
            return self._transition(db, old, new, actor, event, lease_until=lease)

        return self.write(work)

    def retry(self, item_id: str, *, actor: str, now: float | None = None) -> Item:
        """The ops spec's reliability policy: FAILED or timed-out IN_PROGRESS, attempts left, backoff."""
        now = time.time() if now is None else now

        def work(db: sqlite3.Connection) -> Item:
            row = self._row(db, item_id)
            old = self._item(row)
            timed_out = model.is_timed_out(old, row["lease_until"], now)
            new = model.retry_policy(old, now, self.policy, self.rng.random(), timed_out=timed_out)
            return self._transition(db, old, new, actor, "RETRIED")

        return self.write(work)

    # --- claims and leases --------------------------------------------------------

    def claim(self, owner: str, *, lease: float, now: float | None = None, item_id: str | None = None,
              job: str | None = None) -> Claim | None:  # fmt: skip
        """Take the first runnable item atomically; None when nothing is runnable."""
        (taken,) = self.write(_logging(self._taking(owner, lease, now, item_id, job)))
        return self._claim_of(taken)

    def _taking(self, owner: str, lease: float, now: float | None, item_id: str | None, job: str | None) -> Step:
        """A claim's statements as a step (see ``_logging``); its row is the one taken, or None.

        Everything that needs no lock (the clock, parameters, the event's
        time) is made here, before the lock is taken: the lock is what every
        worker waits for.
        """
        if now is not None:
            reap = True
        else:  # on the real clock, reap once a REAP_EVERY: a claim rarely finds a lease ended
            reap = time.monotonic() - self._last_reap >= REAP_EVERY
            self._last_reap = time.monotonic() if reap else self._last_reap
            now = time.time()
        where = RUNNABLE + (" AND id = :item_id" if item_id else "") + (" AND job = :job" if job else "")
        sql = (
            "UPDATE items SET status = 'IN_PROGRESS', owner = :owner, started = :started,"
            " attempts = attempts + 1, retry_not_before = NULL, lease_until = :lease_until, heartbeat_at = :now"
            f" WHERE seq = (SELECT seq FROM items WHERE {where} ORDER BY seq LIMIT 1) AND status = 'PENDING'"
            " RETURNING *"
        )
        started = now_iso(now)
        params = {"now": now, "max_attempts": self.policy.max_attempts, "item_id": item_id, "job": job,
                  "owner": owner, "started": started, "lease_until": now + lease}  # fmt: skip

        def take(db: sqlite3.Connection, events: list[tuple]) -> sqlite3.Row | None:
            if reap:
                self._reap(db, now)
            row = db.execute(sql, params).fetchone()
            if row is not None:
                data = f'{{"attempt": {row[6]}}}'  # attempts
                events.append((started, row[1], owner, "CLAIMED", "PENDING", "IN_PROGRESS", "", data))
            return row

        return take

    def _claim_of(self, row: sqlite3.Row | None) -> Claim | None:
        if row is None:
            return None
        item = self._item(row)
        return Claim(item, item.attempts, row["lease_until"])

    def _held(self, db: sqlite3.Connection, item_id: str, owner: str, attempt: int | None) -> tuple[Item, sqlite3.Row]:
        row = self._row(db, item_id)
        item = self._item(row)
        model.check_holder(item, owner, attempt, item.attempts)
        return item, row

    def heartbeat(self, item_id: str, owner: str, *, lease: float, attempt: int | None = None,
                  now: float | None = None) -> float:  # fmt: skip
        """Extend the lease; refused (``LeaseLostError``) if ``owner`` no longer holds the item."""
        now = time.time() if now is None else now

        def work(db: sqlite3.Connection) -> float:
            self._held(db, item_id, owner, attempt)
            db.execute("UPDATE items SET lease_until = ?, heartbeat_at = ? WHERE id = ?", (now + lease, now, item_id))
            return now + lease

        return self.write(work)

    def complete(self, item_id: str, owner: str, *, attempt: int | None = None, notes: str = "",
                 now: float | None = None) -> Item:  # fmt: skip
        (done,) = self.write(_logging(self._completing(item_id, owner, attempt, notes)))
        return self._item(done)

    def complete_and_claim(self, item_id: str, owner: str, *, lease: float, attempt: int | None = None,
                           notes: str = "", now: float | None = None,
                           job: str | None = None) -> tuple[Item, Claim | None]:  # fmt: skip
        """Complete, then claim the next item, in one transaction: one commit a cycle instead of two."""
        finish = self._completing(item_id, owner, attempt, notes)
        done, taken = self.write(_logging(finish, self._taking(owner, lease, now, None, job)))
        return self._item(done), self._claim_of(taken)

    def _completing(self, item_id: str, owner: str, attempt: int | None, notes: str) -> Step:
        """A complete's statement as a step (see ``_logging``); its row is the DONE one."""
        params = {"id": item_id, "owner": owner, "attempt": attempt, "extra": f"; {notes}" if notes.strip() else ""}
        at = now_iso()

        def finish(db: sqlite3.Connection, events: list[tuple]) -> sqlite3.Row:
            row = db.execute(COMPLETE, params).fetchone()
            if row is None:
                self._held(db, item_id, owner, attempt)  # raises NotFoundError or LeaseLostError, saying why
                raise LeaseLostError(item_id, owner, "it changed meanwhile")  # pragma: no cover - checked above
            note = f"done:{row[6]}{params['extra']}"  # attempts
            events.append((at, row[1], owner, "COMPLETED", "IN_PROGRESS", "DONE", note, "{}"))
            return row

        return finish

    def fail(self, item_id: str, owner: str, *, note: str, attempt: int | None = None, now: float | None = None,
             retryable: bool = True) -> Item:  # fmt: skip
        """End an attempt as failed; the policy retries it after a backoff while attempts are left."""
        now = time.time() if now is None else now

        def work(db: sqlite3.Connection) -> Item:
            item, _ = self._held(db, item_id, owner, attempt)
            new = model.fail(item, note, now, self.policy, self.rng.random(), budgeted=retryable)
            return self._transition(db, item, new, owner, "FAILED")

        return self.write(work)

    def block(self, item_id: str, owner: str, *, note: str, attempt: int | None = None) -> Item:
        """End an attempt that needs a human: BLOCKED with the reason."""

        def work(db: sqlite3.Connection) -> Item:
            item, _ = self._held(db, item_id, owner, attempt)
            return self._transition(db, item, model.block(item, note), owner, "BLOCKED")

        return self.write(work)

    def release(self, item_id: str, owner: str, *, attempt: int | None = None) -> Item:
        """Give a claim back unfinished: PENDING again, the attempt still counted."""

        def work(db: sqlite3.Connection) -> Item:
            item, _ = self._held(db, item_id, owner, attempt)
            return self._transition(db, item, model.release(item), owner, "RELEASED")

        return self.write(work)

    def reap(self, now: float | None = None) -> list[Item]:
        """Items whose lease ended: retried per the policy, or FAILED when out of attempts."""
        now = time.time() if now is None else now
        return self.write(lambda db: self._reap(db, now))

    def _reap(self, db: sqlite3.Connection, now: float) -> list[Item]:
        rows = db.execute(
            "SELECT * FROM items WHERE status = 'IN_PROGRESS' AND lease_until <= ? ORDER BY seq", (now,)
        ).fetchall()
        reaped = []
        for row in rows:
            item = self._item(row)
            new = model.fail(item, f"lease_expired:{item.owner or '-'}", now, self.policy, self.rng.random())
            reaped.append(self._transition(db, item, new, "orch@reaper", "REAPED"))
        return reaped
