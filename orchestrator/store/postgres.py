"""PostgresStore: one queue for runners on many machines (``--db postgresql://...``).

psycopg 3 (an optional extra: ``pip install orch[postgres]``), autocommit, a
small pool, and one dedicated LISTEN connection. Statements are prepared
(planning each claim again costs as much as running it); behind PgBouncer in
transaction mode set ``ORCH_PGBOUNCER=1``, which turns that off
(``prepare_threshold=None``).

- A claim is one statement: ``UPDATE ... WHERE seq = (SELECT ... FOR UPDATE
  SKIP LOCKED) RETURNING``, re-checking PENDING, attempts and the backoff
  against the database clock, with its event written by the same statement.
  Dependencies are a maintained count of unfinished prerequisites, not a scan.
- Heartbeat and complete are one fenced statement each (owner, attempt and
  state in the WHERE); zero rows means the lease was lost, and the caller is
  told why. Fail, block and release lock the row with the same fence.
- Leases and backoff use the database's clock (``clock_timestamp()``) unless a
  test passes ``now``; audit times too.
- The reaper is one statement with SKIP LOCKED that re-checks its own
  condition, so a completion racing the rescue stays DONE; any runner may run it.
- LISTEN/NOTIFY wakes idle runners on add, complete and replan; polling stays
  the fallback. Nothing notifies per heartbeat.
- Migrations run under ``pg_advisory_xact_lock``; a database newer than the code is refused.
"""

from __future__ import annotations

import json
import os
import random
import select
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from orchestrator import model
from orchestrator.errors import BadInputError, BusyError, DuplicateIdError, LeaseLostError, NotFoundError, SchemaError
from orchestrator.model import DEFAULT_POLICY, Claim, Item, Policy, Status
from orchestrator.store.base import Change, Event

T = TypeVar("T")
CHANNEL = "orch_queue"
REAP_EVERY = 1.0  # seconds between reaps by one store (any runner may reap; one per second is plenty)
MIGRATION_LOCK = 7_236_161  # any constant: the advisory lock every orch migration takes
FIELDS = (
    "id", "status", "title", "owner", "started", "attempts", "max_attempts",
    "retry_not_before", "agent", "job", "depends_on", "notes", "extra",
)  # fmt: skip
NOW = "COALESCE(%(now)s::double precision, extract(epoch FROM clock_timestamp())::double precision)"
SEP = "CASE WHEN notes = '' THEN '' ELSE '; ' END"

REPAIR_COUNTS = """
    WITH fresh AS (
        SELECT q.seq, count(*) FILTER (WHERE p.status IS DISTINCT FROM 'DONE') AS n
        FROM items q JOIN deps d ON d.item_key = q.id_key LEFT JOIN items p ON p.id_key = d.dep_key
        WHERE q.status = 'PENDING' AND q.unfinished_deps > 0
        GROUP BY q.seq
    )
    UPDATE items i SET unfinished_deps = 0 FROM fresh
    WHERE i.seq = fresh.seq AND fresh.n = 0 AND i.unfinished_deps > 0
    RETURNING i.seq
"""
"""Every prerequisite DONE yet a count above 0: a dependent whose deps were written while a prerequisite
completed (the complete's snapshot did not see them). Only ever lowers a count to 0, and only then."""

MIGRATIONS: list[tuple[str, str]] = [
    ("m001_items", """
        CREATE TABLE items (
            seq bigserial PRIMARY KEY,
            id text NOT NULL,
            id_key text NOT NULL UNIQUE,
            status text NOT NULL DEFAULT 'PENDING'
                CHECK (status IN ('PENDING', 'IN_PROGRESS', 'BLOCKED', 'FAILED', 'DONE')),
            title text NOT NULL DEFAULT '',
            owner text NOT NULL DEFAULT '',
            started text NOT NULL DEFAULT '',
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer,
            retry_not_before bigint,
            agent text NOT NULL DEFAULT '',
            job text NOT NULL DEFAULT '',
            depends_on text NOT NULL DEFAULT '',
            notes text NOT NULL DEFAULT '',
            extra jsonb NOT NULL DEFAULT '{}',
            lease_until double precision,
            heartbeat_at double precision,
            unfinished_deps integer NOT NULL DEFAULT 0,
            retries integer NOT NULL DEFAULT 0
        );
        CREATE INDEX items_runnable ON items (seq) WHERE status = 'PENDING' AND unfinished_deps = 0;
        CREATE INDEX items_leases ON items (lease_until) WHERE status = 'IN_PROGRESS';
        CREATE INDEX items_status ON items (status);
        CREATE TABLE deps (item_key text NOT NULL, dep_key text NOT NULL, PRIMARY KEY (item_key, dep_key));
        CREATE INDEX deps_dep ON deps (dep_key);
    """),
    ("m002_events", """
        CREATE TABLE events (
            seq bigserial PRIMARY KEY,
            time timestamptz NOT NULL DEFAULT clock_timestamp(),
            item_id text NOT NULL,
            actor text NOT NULL,
            event text NOT NULL,
            from_status text NOT NULL,
            to_status text NOT NULL,
            note text NOT NULL DEFAULT '',
            data jsonb NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_item ON events (lower(item_id), seq);
    """),
]  # fmt: skip


def _where(dsn: str) -> str:
    """host:port/dbname of a DSN, never its user or password (in user:password@ or ?password=)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - a DSN that does not even parse: show nothing of it
        return "the given DSN"
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _connect_error(dsn: str, error: Exception) -> BadInputError:
    return BadInputError(f"cannot reach PostgreSQL at {_where(dsn)}: {str(error).strip().splitlines()[0]}")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _psycopg():
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise BadInputError(
            "the PostgreSQL backend needs psycopg: pip install 'orch[postgres]' (or pip install 'psycopg[binary,pool]')"
        ) from None
    return psycopg, psycopg_pool


class PostgresStore:
    """The Store contract over PostgreSQL; the reliability policy applies in full."""

    name = "postgres"

    def __init__(self, dsn: str, *, policy: Policy = DEFAULT_POLICY, default_lease: float = 300.0,
                 pool_size: int = 4, rng: random.Random | None = None) -> None:  # fmt: skip
        psycopg, psycopg_pool = _psycopg()
        from psycopg.rows import dict_row

        self.dsn, self.policy, self.default_lease = dsn, policy, default_lease
        self.rng = rng or random.Random()
        self._psycopg, self._errors = psycopg, psycopg.errors
        prepare = None if os.environ.get("ORCH_PGBOUNCER") == "1" else 2
        kwargs = {"autocommit": True, "prepare_threshold": prepare, "row_factory": dict_row}
        self._last_reap = 0.0
        try:  # one plain connection first: a bad DSN fails at once, saying why, without the pool's retries
            psycopg.connect(dsn, autocommit=True).close()
        except psycopg.Error as error:
            raise _connect_error(dsn, error) from None
        try:
            self.pool = psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=pool_size, kwargs=kwargs, open=False)
            self.pool.open(wait=True, timeout=10)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            raise _connect_error(dsn, error) from None
        self._listener = None
        self._listener_lock = threading.Lock()
        self._migrate()

    def close(self) -> None:
        self.pool.close()
        if self._listener is not None:
            self._listener.close()

    # --- plumbing ---------------------------------------------------------------------

    def _run(self, sql: str, params: dict | tuple | None = None) -> list[dict]:
        try:
            with self.pool.connection() as conn:
                cursor = conn.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        except self._psycopg.OperationalError as error:  # a dropped connection, a failover, a pool timeout
            raise BusyError(f"PostgreSQL is unavailable: {_first_line(error)}") from error

    def _tx(self, work: Callable[[Any], T]) -> T:
        try:
            with self.pool.connection() as conn, conn.transaction():
                return work(conn)
        except self._psycopg.OperationalError as error:
            raise BusyError(f"PostgreSQL is unavailable: {_first_line(error)}") from error

    def _migrate(self) -> None:
        """Apply new migrations under an advisory lock: many runners may start at once."""

        def work(conn) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS orch_migrations (name text PRIMARY KEY,"
                         " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())")  # fmt: skip
            done = {row["name"] for row in conn.execute("SELECT name FROM orch_migrations").fetchall()}
            unknown = done - {name for name, _ in MIGRATIONS}
            if unknown:
                raise SchemaError(f"the database was made by a newer orch (migrations {', '.join(sorted(unknown))})")
            for name, sql in MIGRATIONS:
                if name not in done:
                    conn.execute(sql)
                    conn.execute("INSERT INTO orch_migrations (name) VALUES (%s)", (name,))

        self._tx(work)

    @staticmethod
    def _item(row: dict) -> Item:
        return Item(
            row["id"], Status(row["status"]), row["title"], row["owner"], row["started"], row["attempts"],
            row["max_attempts"], row["retry_not_before"], row["agent"], row["job"],
            tuple(part.strip() for part in row["depends_on"].split(",") if part.strip()),
            row["notes"], dict(row["extra"] or {}),
        )  # fmt: skip

    @staticmethod
    def _values(item: Item) -> dict:
        return {
            "id": item.id, "id_key": item.id.lower(), "status": item.status.value, "title": item.title,
            "owner": item.owner, "started": item.started, "attempts": item.attempts,
            "max_attempts": item.max_attempts, "retry_not_before": item.retry_not_before, "agent": item.agent,
            "job": item.job, "depends_on": ", ".join(item.depends_on), "notes": item.notes,
            "extra": json.dumps(item.extra, ensure_ascii=False),
        }  # fmt: skip

    def _policy(self, now: float | None) -> dict:
        p = self.policy
        return {"now": now, "max": p.max_attempts, "base": p.backoff_base, "factor": p.backoff_factor,
                "cap": p.backoff_cap, "jitter": p.jitter}  # fmt: skip

    @staticmethod
    def _record(conn, item_id: str, actor: str, event: str, before: str, after: str, note: str = "", **data) -> None:
        conn.execute(
            "INSERT INTO events (item_id, actor, event, from_status, to_status, note, data)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (item_id, actor, event, before, after, note, json.dumps(data)),
        )

    def _notify(self, conn, reason: str) -> None:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, reason))

    # --- reads ------------------------------------------------------------------------

    def keeps(self, field_name: str) -> bool:
        return True

    def items(self, status: Status | None = None) -> list[Item]:
        if status is None:
            rows = self._run("SELECT * FROM items ORDER BY seq")
        else:
            rows = self._run("SELECT * FROM items WHERE status = %s ORDER BY seq", (status.value,))
        return [self._item(row) for row in rows]

    def counts(self) -> dict[str, int]:
        counts = {status.value: 0 for status in Status}
        for row in self._run("SELECT status, count(*) AS n FROM items GROUP BY status"):
            counts[row["status"]] = row["n"]
        return counts

    def oldest(self, status: Status, limit: int) -> list[Item]:
        rows = self._run("SELECT * FROM items WHERE status = %s ORDER BY started = '', started, seq LIMIT %s",
                         (status.value, limit))  # fmt: skip
        return [self._item(row) for row in rows]

    def get(self, item_id: str) -> Item:
        rows = self._run("SELECT * FROM items WHERE id_key = lower(%s)", (item_id,))
        if not rows:
            raise NotFoundError(item_id, "the PostgreSQL queue")
        return self._item(rows[0])

    def events(self, item_id: str) -> list[Event]:
        rows = self._run("SELECT *, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS t"
                         " FROM events WHERE lower(item_id) = lower(%s) ORDER BY seq", (item_id,))  # fmt: skip
        return [Event(r["t"], r["item_id"], r["actor"], r["event"], r["from_status"], r["to_status"], r["note"],
                      dict(r["data"] or {})) for r in rows]  # fmt: skip

    def lease_until(self, item_id: str) -> float | None:
        rows = self._run("SELECT status, lease_until FROM items WHERE id_key = lower(%s)", (item_id,))
        if not rows:
            raise NotFoundError(item_id, "the PostgreSQL queue")
        return rows[0]["lease_until"] if rows[0]["status"] == "IN_PROGRESS" else None

    def version(self) -> int:
        """A number that grows with every change (the newest event)."""
        return self._run("SELECT coalesce(max(seq), 0) AS n FROM events")[0]["n"]

    def lease_ends(self) -> dict[str, float | None]:
        rows = self._run("SELECT id, lease_until FROM items WHERE status = 'IN_PROGRESS'")
        return {row["id"]: row["lease_until"] for row in rows}

    # --- adding and changing ------------------------------------------------------------

    def _insert(self, conn, item: Item, actor: str, event: str, lease: float | None = None) -> None:
        values = {**self._values(item), "lease_until": lease if item.status is Status.IN_PROGRESS else None}
        columns = ", ".join(values)
        try:
            conn.execute(f"INSERT INTO items ({columns}) VALUES ({', '.join(f'%({c})s' for c in values)})", values)
        except self._errors.UniqueViolation:
            raise DuplicateIdError(item.id, "the PostgreSQL queue") from None
        self._set_deps(conn, item)
        self._record(conn, item.id, actor, event, "", item.status.value)

    def _set_deps(self, conn, item: Item) -> None:
        key = item.id.lower()
        conn.execute("DELETE FROM deps WHERE item_key = %s", (key,))
        for dep in item.depends_on:
            if dep.lower() == key:
                raise BadInputError(f"'{item.id}' depends on itself")
            conn.execute("INSERT INTO deps VALUES (%s, %s) ON CONFLICT DO NOTHING", (key, dep.lower()))
        conn.execute(
            "UPDATE items SET unfinished_deps = (SELECT count(*) FROM deps d WHERE d.item_key = %(k)s AND NOT EXISTS"
            " (SELECT 1 FROM items p WHERE p.id_key = d.dep_key AND p.status = 'DONE')) WHERE id_key = %(k)s",
            {"k": key},
        )

    def _check_known(self, conn, items: list[Item]) -> None:
        for item in items:
            for dep in item.depends_on:
                if not conn.execute("SELECT 1 FROM items WHERE id_key = lower(%s)", (dep,)).fetchone():
                    raise BadInputError(f"'{item.id}' depends on unknown id '{dep}'")

    def add(self, items: list[Item], *, actor: str) -> list[Item]:
        def work(conn) -> list[Item]:
            for item in items:
                self._insert(conn, item, actor, "ADDED")
            self._check_known(conn, items)
            self._notify(conn, "add")
            return list(items)

        return self._tx(work)

    def upsert(self, items: list[Item], *, actor: str) -> tuple[int, int]:
        from orchestrator.timeutil import parse_iso

        def work(conn) -> tuple[int, int]:
            added = replaced = 0
            for item in items:
                lease = (parse_iso(item.started) or 0) + self.default_lease if item.started else None
                old = conn.execute("SELECT * FROM items WHERE id_key = lower(%s) FOR UPDATE", (item.id,)).fetchone()
                if old is None:
                    self._insert(conn, item, actor, "IMPORTED", lease)
                    added += 1
                else:
                    self._write(conn, self._item(old), item, actor, "IMPORTED", lease)
                    replaced += 1
            self._check_known(conn, items)
            self._notify(conn, "add")
            return added, replaced

        return self._tx(work)

    def _write(self, conn, old: Item, new: Item, actor: str, event: str, lease: float | None = None) -> Item:
        values = {**self._values(new), "lease_until": lease if new.status is Status.IN_PROGRESS else None}
        sets = ", ".join(f"{name} = %({name})s" for name in values if name not in ("id_key",))
        conn.execute(f"UPDATE items SET {sets} WHERE id_key = %(id_key)s", values)
        if new.depends_on != old.depends_on:
            self._set_deps(conn, new)
        if (old.status is Status.DONE) != (new.status is Status.DONE):
            step = -1 if new.status is Status.DONE else 1
            conn.execute("UPDATE items SET unfinished_deps = unfinished_deps + %s WHERE id_key IN"
                         " (SELECT item_key FROM deps WHERE dep_key = %s)", (step, new.id.lower()))  # fmt: skip
        note = new.notes[len(old.notes) :].lstrip("; ") if new.notes.startswith(old.notes) else new.notes
        self._record(conn, new.id, actor, event, old.status.value, new.status.value, note)
        if new.status is Status.PENDING and old.status is not Status.PENDING:
            self._notify(conn, "pending")
        return new

    def _locked(self, conn, item_id: str) -> dict:
        row = conn.execute("SELECT * FROM items WHERE id_key = lower(%s) FOR UPDATE", (item_id,)).fetchone()
        if row is None:
            raise NotFoundError(item_id, "the PostgreSQL queue")
        return row

    def update(self, item_id: str, change: Change, *, actor: str, event: str) -> Item:
        def work(conn) -> Item:
            row = self._locked(conn, item_id)
            old = self._item(row)
            new = change(old)
            if new == old:
                return old
            return self._write(conn, old, new, actor, event, row["lease_until"])

        return self._tx(work)

    def remove(self, item_ids: list[str], *, actor: str) -> list[Item]:
        def work(conn) -> list[Item]:
            gone = [self._item(self._locked(conn, item_id)) for item_id in item_ids]
            for item in gone:
                conn.execute("DELETE FROM items WHERE id_key = lower(%s)", (item.id,))
                conn.execute("DELETE FROM deps WHERE item_key = lower(%s)", (item.id,))
                self._record(conn, item.id, actor, "ARCHIVED", item.status.value, "")
            return gone

        return self._tx(work)

    def retry(self, item_id: str, *, actor: str, now: float | None = None) -> Item:
        def work(conn) -> Item:
            clock = conn.execute(f"SELECT {NOW} AS t", {"now": now}).fetchone()["t"]
            row = self._locked(conn, item_id)
            old = self._item(row)
            timed_out = model.is_timed_out(old, row["lease_until"], clock)
            new = model.retry_policy(old, clock, self.policy, self.rng.random(), timed_out=timed_out)
            return self._write(conn, old, new, actor, "RETRIED")

        return self._tx(work)

    # --- claims and leases --------------------------------------------------------------

    def claim(self, owner: str, *, lease: float, now: float | None = None, item_id: str | None = None,
              job: str | None = None) -> Claim | None:  # fmt: skip
        """One statement: pick with SKIP LOCKED, re-check, take, and write the event."""
        self._reap_if_due(now)
        return self._claim_on(None, owner, lease, now, item_id, job)

    def _reap_if_due(self, now: float | None) -> None:
        if now is not None or time.monotonic() - self._last_reap >= REAP_EVERY:
            self._last_reap = time.monotonic()  # a reap per claim would cost a round trip that rarely finds work
            self.reap(now)

    def _fetch(self, conn, sql: str, params: dict | tuple | None = None) -> list[dict]:
        """Rows of ``sql`` on ``conn`` (inside its transaction), or on a pooled connection when None."""
        if conn is None:
            return self._run(sql, params)
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    def _claim_on(self, conn, owner: str, lease: float, now: float | None, item_id: str | None,
                  job: str | None) -> Claim | None:  # fmt: skip
        extra = (" AND id_key = lower(%(item_id)s)" if item_id else "") + (" AND job = %(job)s" if job else "")
        sql = f"""
            WITH clock AS (SELECT {NOW} AS t),
            pick AS (
                SELECT seq FROM items, clock
                WHERE status = 'PENDING' AND unfinished_deps = 0
                  AND (retry_not_before IS NULL OR retry_not_before <= clock.t)
                  AND attempts < COALESCE(max_attempts, %(max)s){extra}
                ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED
            ),
            taken AS (
                UPDATE items SET status = 'IN_PROGRESS', owner = %(owner)s, attempts = attempts + 1,
                    started = to_char(to_timestamp(clock.t) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                    retry_not_before = NULL, lease_until = clock.t + %(lease)s, heartbeat_at = clock.t
                FROM pick, clock
                WHERE items.seq = pick.seq AND items.status = 'PENDING'
                RETURNING items.*
            ),
            logged AS (
                INSERT INTO events (item_id, actor, event, from_status, to_status, data)
                SELECT id, %(owner)s, 'CLAIMED', 'PENDING', 'IN_PROGRESS', jsonb_build_object('attempt', attempts)
                FROM taken
            )
            SELECT * FROM taken
        """
        params = {"now": now, "max": self.policy.max_attempts, "owner": owner, "lease": lease,
                  "item_id": item_id, "job": job}  # fmt: skip
        rows = self._fetch(conn, sql, params)
        if not rows and self._fetch(conn, REPAIR_COUNTS):  # a count left stale by a race: fixed, so look once more
            rows = self._fetch(conn, sql, params)
        if not rows:
            return None
        item = self._item(rows[0])
        return Claim(item, item.attempts, rows[0]["lease_until"])

    def _lost(self, item_id: str, owner: str, attempt: int | None, conn=None) -> LeaseLostError:
        """Why a fenced statement matched no row."""
        rows = self._fetch(conn, "SELECT status, owner, attempts FROM items WHERE id_key = lower(%s)", (item_id,))
        if not rows:
            return LeaseLostError(item_id, owner, "it is gone")
        row = rows[0]
        if row["status"] != "IN_PROGRESS":
            return LeaseLostError(item_id, owner, f"it is {row['status']} now")
        if row["owner"] != owner:
            return LeaseLostError(item_id, owner, f"it is held by {row['owner'] or 'nobody'}")
        return LeaseLostError(item_id, owner, f"attempt {attempt} ended; attempt {row['attempts']} holds it now")

    FENCE = ("id_key = lower(%(id)s) AND status = 'IN_PROGRESS' AND owner = %(owner)s"
             " AND (%(attempt)s::int IS NULL OR attempts = %(attempt)s::int)")  # fmt: skip

    def heartbeat(self, item_id: str, owner: str, *, lease: float, attempt: int | None = None,
                  now: float | None = None) -> float:  # fmt: skip
        rows = self._run(
            f"UPDATE items SET lease_until = {NOW} + %(lease)s, heartbeat_at = {NOW} WHERE {self.FENCE}"
            " RETURNING lease_until",
            {"id": item_id, "owner": owner, "attempt": attempt, "lease": lease, "now": now},
        )
        if not rows:
            raise self._lost(item_id, owner, attempt)
        return rows[0]["lease_until"]

    def complete(self, item_id: str, owner: str, *, attempt: int | None = None, notes: str = "",
                 now: float | None = None) -> Item:  # fmt: skip
        """One fenced statement: DONE, note, dependents' counts, event, and a wake-up."""
        return self._complete_on(None, item_id, owner, attempt, notes)

    def complete_and_claim(self, item_id: str, owner: str, *, lease: float, attempt: int | None = None,
                           notes: str = "", now: float | None = None,
                           job: str | None = None) -> tuple[Item, Claim | None]:  # fmt: skip
        """The complete's statement and the claim's in one transaction (one commit, one round of fsync)."""
        self._reap_if_due(now)

        def work(conn) -> tuple[Item, Claim | None]:
            done = self._complete_on(conn, item_id, owner, attempt, notes)
            return done, self._claim_on(conn, owner, lease, now, None, job)

        return self._tx(work)

    def _complete_on(self, conn, item_id: str, owner: str, attempt: int | None, notes: str) -> Item:
        extra = f"; {notes}" if notes.strip() else ""
        sql = f"""
            WITH done AS (
                UPDATE items SET status = 'DONE', lease_until = NULL,
                    notes = notes || {SEP} || 'done:' || attempts || %(extra)s
                WHERE {self.FENCE} RETURNING *
            ),
            dependents AS (
                UPDATE items SET unfinished_deps = unfinished_deps - 1
                WHERE id_key IN (SELECT d.item_key FROM deps d, done WHERE d.dep_key = done.id_key)
            ),
            logged AS (
                INSERT INTO events (item_id, actor, event, from_status, to_status, note)
                SELECT id, %(owner)s, 'COMPLETED', 'IN_PROGRESS', 'DONE', 'done:' || attempts || %(extra)s FROM done
            ),
            woken AS (  -- only a completion that unblocks a dependent brings new work: wake runners then
                SELECT pg_notify('{CHANNEL}', 'complete') FROM done
                WHERE EXISTS (SELECT 1 FROM deps d WHERE d.dep_key = done.id_key)
            )
            SELECT done.*, (SELECT count(*) FROM woken) AS n FROM done
        """
        rows = self._fetch(conn, sql, {"id": item_id, "owner": owner, "attempt": attempt, "extra": extra})
        if not rows:
            raise self._lost(item_id, owner, attempt, conn)
        return self._item(rows[0])

    def _fenced_change(self, item_id: str, owner: str, attempt: int | None, event: str,
                       change: Callable[[Item, float], Item], now: float | None) -> Item:  # fmt: skip
        def work(conn) -> Item:
            clock = conn.execute(f"SELECT {NOW} AS t", {"now": now}).fetchone()["t"]
            row = conn.execute(f"SELECT * FROM items WHERE {self.FENCE} FOR UPDATE",
                               {"id": item_id, "owner": owner, "attempt": attempt}).fetchone()  # fmt: skip
            if row is None:
                raise self._lost(item_id, owner, attempt)
            old = self._item(row)
            return self._write(conn, old, change(old, clock), owner, event)

        return self._tx(work)

    def fail(self, item_id: str, owner: str, *, note: str, attempt: int | None = None, now: float | None = None,
             retryable: bool = True) -> Item:  # fmt: skip
        def change(item: Item, clock: float) -> Item:
            return model.fail(item, note, clock, self.policy, self.rng.random(), budgeted=retryable)

        return self._fenced_change(item_id, owner, attempt, "FAILED", change, now)

    def block(self, item_id: str, owner: str, *, note: str, attempt: int | None = None) -> Item:
        return self._fenced_change(item_id, owner, attempt, "BLOCKED", lambda item, _: model.block(item, note), None)

    def release(self, item_id: str, owner: str, *, attempt: int | None = None) -> Item:
        return self._fenced_change(item_id, owner, attempt, "RELEASED", lambda item, _: model.release(item), None)

    def reap(self, now: float | None = None) -> list[Item]:
        """One statement, SKIP LOCKED, re-checking its own condition: retried by the policy, or FAILED."""
        sql = f"""
            WITH clock AS (SELECT {NOW} AS t),
            expired AS (
                SELECT seq, random() AS u FROM items, clock
                WHERE status = 'IN_PROGRESS' AND lease_until <= clock.t
                ORDER BY seq FOR UPDATE SKIP LOCKED
            ),
            plan AS (
                SELECT i.seq, e.u, c.t,
                    i.attempts < COALESCE(i.max_attempts, %(max)s) AS again,
                    floor(c.t + least(%(cap)s, %(base)s * power(%(factor)s, greatest(i.attempts - 1, 0)))
                          * (1 + %(jitter)s * (2 * e.u - 1)))::bigint AS not_before
                FROM items i JOIN expired e ON e.seq = i.seq, clock c
            ),
            reaped AS (
                UPDATE items i SET
                    status = CASE WHEN p.again THEN 'PENDING' ELSE 'FAILED' END,
                    owner = CASE WHEN p.again THEN '' ELSE i.owner END,
                    started = CASE WHEN p.again THEN '' ELSE i.started END,
                    lease_until = NULL,
                    retries = i.retries + CASE WHEN p.again THEN 1 ELSE 0 END,
                    retry_not_before = CASE WHEN p.again THEN p.not_before ELSE i.retry_not_before END,
                    notes = i.notes || CASE WHEN i.notes = '' THEN '' ELSE '; ' END
                        || 'lease_expired:' || CASE WHEN i.owner = '' THEN '-' ELSE i.owner END
                        || CASE WHEN p.again THEN '; retry:' || (i.retries + 1)
                            || '; retry_not_before=' || p.not_before ELSE '' END
                FROM plan p
                WHERE i.seq = p.seq AND i.status = 'IN_PROGRESS' AND i.lease_until <= p.t
                RETURNING i.*
            ),
            logged AS (
                INSERT INTO events (item_id, actor, event, from_status, to_status, note)
                SELECT id, 'orch@reaper', 'REAPED', 'IN_PROGRESS', status, 'lease_expired' FROM reaped
            )
            SELECT * FROM reaped
        """
        return [self._item(row) for row in self._run(sql, self._policy(now))]

    # --- waking idle runners ----------------------------------------------------------

    def wait_for_work(self, timeout: float) -> bool:
        """Block until a NOTIFY (add, complete, replan) or ``timeout``; True if woken."""
        psycopg, _ = _psycopg()
        try:
            with self._listener_lock:
                if self._listener is None:
                    self._listener = psycopg.connect(self.dsn, autocommit=True, prepare_threshold=None)
                    self._listener.execute(f"LISTEN {CHANNEL}")
                conn = self._listener
            ready, _, _ = select.select([conn.fileno()], [], [], timeout)
            woken = False
            for _ in conn.notifies(timeout=0, stop_after=None) if ready else ():
                woken = True
            if conn.closed or conn.broken:
                raise psycopg.OperationalError("the LISTEN connection was closed")
            return woken
        except (psycopg.Error, OSError, ValueError) as error:  # a dropped connection: LISTEN again next time
            with self._listener_lock:
                if self._listener is not None:
                    self._listener.close()
                self._listener = None
            raise BusyError(f"PostgreSQL is unavailable: {_first_line(error)}") from error
