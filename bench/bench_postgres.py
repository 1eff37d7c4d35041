"""Benchmark of claims and completes on PostgreSQL against the SQLite store: cycles per second by worker processes.

One cycle is one item taken and finished by one worker, through the library API:
``c = store.claim(owner, lease=300)`` then ``store.complete(c.item.id, owner, attempt=c.attempt)``.

Backends and durability (each worker reads its settings back from its own
connection, and the output shows them):

- ``postgres``: ``PostgresStore(dsn, pool_size=1)`` on a throwaway cluster
  (``tests/pgcluster.Cluster``: ``initdb``, socket only, ``fsync=on``) with the
  server's defaults otherwise: ``synchronous_commit=on``, ``full_page_writes=on``,
  ``wal_sync_method=fdatasync``. Every claim and every complete is committed and
  flushed to disk before it returns. ``--dsn`` uses an existing server instead
  (it must allow ``CREATE DATABASE``).
- ``sqlite durable``: ``SqliteStore(path, durable=True)``: WAL, ``synchronous=FULL``
  (every commit fsyncs the WAL): the same durability as PostgreSQL here.
- ``sqlite``: ``SqliteStore(path)``, its default: WAL, ``synchronous=NORMAL``
  (survives a crash of the process, not of the machine), for reference.

Each queue starts with ``--items`` (default 10,000) PENDING items, added once
through ``store.add`` (untimed) and copied afresh for every measurement: the
SQLite file is copied; the PostgreSQL database is made with ``CREATE DATABASE
... TEMPLATE``. So every run starts from the same state.

Each measurement starts N worker processes (1, 4 and 8) with ``sys.executable``;
each opens its store, says it is ready, and blocks on a shared ``flock`` the
parent holds; the parent releases them all at once. Each worker loops until
the queue is empty or its time budget is used (``--seconds``, default 2).
Throughput = total cycles / (the last worker's last cycle - the release), both
from ``perf_counter`` (one system-wide monotonic clock on Linux). Process start,
imports and connecting are not timed. Workers also sum the time spent in each
call (waits included) and their own CPU time; PostgreSQL workers also the CPU
time of their server process (``/proc/<backend pid>/stat``).

After each measurement the parent checks the work: every id taken once only,
nothing left IN_PROGRESS, and the queue's own count of DONE items matches the
cycles counted. For PostgreSQL it also reads the server's counters for the
run's database and WAL (``pg_stat_database``, ``pg_stat_wal``): transactions,
WAL flushes (``wal_sync``) and WAL bytes per cycle.

Runs are interleaved (every backend at 1, 4, 8 processes, then again) so
machine noise hits all of them alike; each cell is measured ``--runs`` times
(default 3) after one short untimed warm-up per backend, and the median is
shown. ``--quick``: one run, 1 s budgets. ``--profile``: also time every
statement in the server with ``pg_stat_statements`` (the throwaway cluster is
restarted with it preloaded and ``track_planning`` on): calls per cycle, mean
execution and planning ms, buffers and rows per call.

Targets (issue 8): ``postgres`` at least 0.8x ``sqlite durable`` at 4
processes, and more than it at 8.

Run it from the repository root with the project's virtual environment
(psycopg is the ``postgres`` extra; the server binaries must be installed):

    .venv/bin/python bench/bench_postgres.py [--quick] [--runs N] [--dsn postgresql://...]

Stdlib only besides orch and psycopg; it is a plain script, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    add_run_options,
    commit,
    item_id,
    measure_rounds,
    run_plan,
    run_workers,
    title,
    wait_for_start,
)

TARGETS = ((4, 0.8, ">="), (8, 1.0, ">"))  # postgres / sqlite durable
LEASE = 300.0
MAX_ERRORS = 50  # a worker stops after this many failed cycles
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Backend:
    label: str
    kind: str  # postgres, sqlite
    options: dict = field(default_factory=dict, hash=False)


BACKENDS = (
    Backend("postgres", "postgres"),
    Backend("sqlite durable", "sqlite", {"durable": True}),
    Backend("sqlite", "sqlite", {"durable": False}),
)
BASELINE = "sqlite durable"


def with_database(dsn: str, name: str) -> str:
    """The same server, another database."""
    base, _, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


# --- workers (run as `python bench_postgres.py --worker SPEC`) ------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process on this machine, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def open_worker(spec: dict):
    """Open the queue; returns (claim, complete, durability, server pid or None)."""
    path, options = spec["path"], spec["options"]
    if spec["kind"] == "postgres":
        import psycopg

        from orchestrator.store.postgres import PostgresStore

        store = PostgresStore(path, pool_size=1)
        with psycopg.connect(path, autocommit=True) as conn:
            settings = conn.execute(
                "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
                " current_setting('wal_sync_method'), current_setting('full_page_writes')"
            ).fetchone()
        durability = "fsync={}, synchronous_commit={}, wal_sync_method={}, full_page_writes={}".format(*settings)
        backend_pid = store._run("SELECT pg_backend_pid() AS pid")[0]["pid"]  # the pool's only connection
    else:
        from orchestrator.store.sqlite import SqliteStore

        store = SqliteStore(Path(path), durable=options["durable"], create=False)
        journal = store.db.execute("PRAGMA journal_mode").fetchone()[0]
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[store.db.execute("PRAGMA synchronous").fetchone()[0]]
        durability, backend_pid = f"journal={journal}, synchronous={sync}", None
    return store, durability, backend_pid


def worker_main(spec: dict) -> None:
    store, durability, backend_pid = open_worker(spec)
    owner = f"bench-{spec['index']}@{os.getpid()}"
    print(json.dumps({"ready": True, "durability": durability}), flush=True)

    wait_for_start(spec["barrier"])  # the parent lets every worker go at once
    clock = time.perf_counter
    own_cpu = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = cpu_seconds(backend_pid) if backend_pid else 0.0
    start = clock()
    deadline = start + spec["seconds"]
    ids: list[str] = []
    claim_s = complete_s = 0.0
    errors = 0
    first_error = ""
    end = start
    exhausted = False
    while True:
        try:
            t0 = clock()
            claim = store.claim(owner, lease=LEASE)
            t1 = clock()
            claim_s += t1 - t0
            if claim is None:
                end = t1
                exhausted = True
                break
            store.complete(claim.item.id, owner, attempt=claim.attempt)
            end = clock()
            complete_s += end - t1
        except Exception:
            errors += 1
            first_error = first_error or traceback.format_exc(limit=4)
            if errors >= MAX_ERRORS:
                break
            continue
        ids.append(claim.item.id)
        if end >= deadline:
            break
    after = resource.getrusage(resource.RUSAGE_SELF)
    client = (after.ru_utime - own_cpu.ru_utime) + (after.ru_stime - own_cpu.ru_stime)
    server = (cpu_seconds(backend_pid) - server_cpu) if backend_pid else 0.0
    print(json.dumps({
        "start": start, "end": end, "ids": ids, "exhausted": exhausted, "errors": errors, "first_error": first_error,
        "claim_s": claim_s, "complete_s": complete_s, "client_cpu_s": client, "server_cpu_s": server,
    }), flush=True)  # fmt: skip


# --- queues (built once, copied for every measurement) -----------------------------------------------------


class Postgres:
    """The server: a throwaway cluster, or the one ``--dsn`` names; databases made from one template."""

    TEMPLATE = "orch_bench_template"

    def __init__(self, dsn: str | None, profile: bool = False) -> None:
        import psycopg

        self.psycopg = psycopg
        self.cluster = None
        if dsn is None:
            from tests.pgcluster import Cluster

            self.cluster = Cluster()
            dsn = self.cluster.start()
        self.admin_dsn = dsn
        self.made: list[str] = []
        self.profile = profile
        try:
            if profile:
                self._load_pg_stat_statements()
        except BaseException:
            self.close()
            raise

    def _load_pg_stat_statements(self) -> None:
        """pg_stat_statements with planning times (a throwaway cluster is restarted to preload it)."""
        if self.cluster is not None:
            from tests.pgcluster import server_bin

            with self.admin() as conn:
                conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            log = str(self.cluster.folder / "log")  # a log file, or the server would hold our stdout pipe
            done = self.cluster._run(server_bin("pg_ctl"), "-D", str(self.cluster.data), "-l", log, "-w", "restart")
            if done.returncode:
                raise RuntimeError(f"pg_ctl restart failed: {done.stderr}")
            with self.admin() as conn:
                conn.execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")  # known once loaded
                conn.execute("SELECT pg_reload_conf()")
        with self.admin() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def reset_statements(self) -> None:
        with self.admin() as conn:
            conn.execute("SELECT pg_stat_statements_reset()")

    def statements(self, name: str) -> dict[str, list[float]]:
        """Per statement of the database ``name``: [calls, exec ms, plan ms, shared blocks hit + read, rows]."""
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT query, calls, total_exec_time, total_plan_time, shared_blks_hit + shared_blks_read, rows"
                " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)",
                (name,),
            ).fetchall()
        return {" ".join(query.split()): [float(x) for x in rest] for query, *rest in rows}

    def admin(self):
        return self.psycopg.connect(self.admin_dsn, autocommit=True)

    def settings(self) -> str:
        names = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
                 "shared_buffers", "max_wal_size")  # fmt: skip
        with self.admin() as conn:
            values = [conn.execute(f"SHOW {name}").fetchone()[0] for name in names]
        return ", ".join(f"{name}={value}" for name, value in zip(names, values, strict=True))

    def build_template(self, items: int) -> None:
        from orchestrator.model import Item
        from orchestrator.store.postgres import PostgresStore

        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.TEMPLATE}")
            conn.execute(f"CREATE DATABASE {self.TEMPLATE}")
        self.made.append(self.TEMPLATE)
        dsn = with_database(self.admin_dsn, self.TEMPLATE)
        store = PostgresStore(dsn)
        for first in range(1, items + 1, 1000):
            batch = range(first, min(first + 1000, items + 1))
            store.add([Item(item_id(n), title=title(n)) for n in batch], actor="bench")
        store.close()
        with self.psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")

    def fresh(self, name: str) -> str:
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {self.TEMPLATE}")
        self.made.append(name)
        return with_database(self.admin_dsn, name)

    def counters(self, name: str) -> dict[str, float]:
        """Server counters for one database and for the WAL, to difference around a measurement."""
        with self.admin() as conn:
            commits, rollbacks = conn.execute(
                "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)
            ).fetchone()
            records, fpi, wal_bytes, syncs = conn.execute(
                "SELECT wal_records, wal_fpi, wal_bytes, wal_sync FROM pg_stat_wal"
            ).fetchone()
        return {"commits": commits, "rollbacks": rollbacks, "wal_records": records, "wal_fpi": fpi,
                "wal_bytes": float(wal_bytes), "wal_sync": syncs}  # fmt: skip

    def done_and_held(self, dsn: str) -> tuple[int, int]:
        with self.psycopg.connect(dsn, autocommit=True) as conn:
            done = conn.execute("SELECT count(*) FROM items WHERE status = 'DONE'").fetchone()[0]
            held = conn.execute("SELECT count(*) FROM items WHERE status = 'IN_PROGRESS'").fetchone()[0]
        return done, held

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.made.remove(name)

    def close(self) -> None:
        for name in list(reversed(self.made)):
            try:
                self.drop(name)
            except self.psycopg.Error:
                pass
        if self.cluster is not None:
            self.cluster.stop()


def build_sqlite_template(folder: Path, items: int) -> Path:
    from orchestrator.model import Item
    from orchestrator.store.sqlite import SqliteStore

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "queue.db"
    store = SqliteStore(path)
    store.add([Item(item_id(n), title=title(n)) for n in range(1, items + 1)], actor="bench")
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # fold the WAL in, so copying one file copies the queue
    db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


@dataclass
class Cell:
    rate: float  # cycles/s
    cycles: int
    wall: float
    duplicates: int
    errors: int
    exhausted: bool
    claim_ms: float  # mean ms per claim (its reap included), waits included
    complete_ms: float
    client_cpu_ms: float  # worker CPU ms per cycle
    server_cpu_ms: float  # PostgreSQL backend CPU ms per cycle (0 for SQLite)
    durability: str
    problems: list[str]
    per_worker: list[int]
    server: dict[str, float] = field(default_factory=dict)  # per cycle: commits, wal_sync, wal_bytes ...
    statements: dict[str, list[float]] = field(default_factory=dict)  # --profile: pg_stat_statements totals


def measure(backend: Backend, source, folder: Path, processes: int, seconds: float, name: str) -> Cell:
    folder.mkdir(parents=True)
    server: dict[str, float] = {}
    statements: dict[str, list[float]] = {}
    if backend.kind == "postgres":
        path = source.fresh(name)
        before = source.counters(name)
    else:
        shutil.copyfile(source, folder / "queue.db")
        path = str(folder / "queue.db")
    try:
        profiling = backend.kind == "postgres" and source.profile
        on_ready = source.reset_statements if profiling else lambda: None
        specs = [{"kind": backend.kind, "path": path, "options": backend.options, "index": index,
                  "seconds": seconds} for index in range(processes)]  # fmt: skip
        reports, durability, release = run_workers(Path(__file__).resolve(), backend.label, specs, folder, on_ready)
        ids = [done for report in reports for done in report["ids"]]
        cycles, unique = len(ids), len(set(ids))
        problems = [report["first_error"].strip().splitlines()[-1] for report in reports if report["errors"]]
        if backend.kind == "postgres":
            after = source.counters(name)
            server = {key: (after[key] - before[key]) / max(cycles, 1) for key in after}
            statements = source.statements(name) if profiling else {}
            done, held = source.done_and_held(path)
        else:
            db = sqlite3.connect(path)
            done = db.execute("SELECT count(*) FROM items WHERE status = 'DONE'").fetchone()[0]
            held = db.execute("SELECT count(*) FROM items WHERE status = 'IN_PROGRESS'").fetchone()[0]
            db.close()
        if held or done != unique:
            problems.append(f"the queue has {done} DONE and {held} IN_PROGRESS; workers finished {unique} distinct")
    finally:
        if backend.kind == "postgres":
            source.drop(name)
        shutil.rmtree(folder, ignore_errors=True)
    wall = max(report["end"] for report in reports) - release
    return Cell(
        rate=cycles / wall if wall > 0 else 0.0, cycles=cycles, wall=wall, duplicates=cycles - unique,
        errors=sum(report["errors"] for report in reports), exhausted=any(r["exhausted"] for r in reports),
        claim_ms=1000 * sum(r["claim_s"] for r in reports) / max(cycles, 1),
        complete_ms=1000 * sum(r["complete_s"] for r in reports) / max(cycles, 1),
        client_cpu_ms=1000 * sum(r["client_cpu_s"] for r in reports) / max(cycles, 1),
        server_cpu_ms=1000 * sum(r["server_cpu_s"] for r in reports) / max(cycles, 1),
        durability=" / ".join(sorted(durability)), problems=problems,
        per_worker=sorted(len(report["ids"]) for report in reports), server=server, statements=statements,
    )  # fmt: skip


# --- report ------------------------------------------------------------------------------------------------


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else 0.0


def report(backends, results, durability, processes, runs) -> None:
    width = max(len(b.label) for b in backends)
    print("durability as read from each worker's connection:")
    for backend in backends:
        print(f"  {backend.label:<{width}}  {durability[backend.label]}")
    print()
    header = f"{'backend':<{width}} | " + " | ".join(f"{f'{n} proc':>9}" for n in processes)
    print(f"cycles/s, median of {runs} run(s):")
    print(header)
    print("-" * len(header))
    for backend in backends:
        cells = [median(c.rate for c in results[backend.label][n]) for n in processes]
        marks = ["*" if any(c.exhausted for c in results[backend.label][n]) else " " for n in processes]
        print(f"{backend.label:<{width}} | " + " | ".join(f"{c:8.0f}{m}" for c, m in zip(cells, marks, strict=True)))
    if any(c.exhausted for b in backends for n in processes for c in results[b.label][n]):
        print("* the queue ran empty before the time budget in at least one run")
    print()
    print("every run: cycles/s [fewest-most cycles of one worker] (items handed out twice):")
    for backend in backends:
        for n in processes:
            parts = []
            for c in results[backend.label][n]:
                part = f"{c.rate:.0f}" + (f" [{c.per_worker[0]}-{c.per_worker[-1]}]" if n > 1 else "")
                parts.append(part + (f" ({c.duplicates} dup)" if c.duplicates else ""))
            print(f"  {backend.label:<{width}}  {n}p  " + ", ".join(parts))
    print()
    print("per cycle, median of runs: ms in claim / complete (waits included); CPU ms of the worker + its server")
    for backend in backends:
        parts = []
        for n in processes:
            cells = results[backend.label][n]
            part = f"{median(c.claim_ms for c in cells):.2f} / {median(c.complete_ms for c in cells):.2f}"
            part += f"; cpu {median(c.client_cpu_ms for c in cells):.2f}"
            if backend.kind == "postgres":
                part += f" + {median(c.server_cpu_ms for c in cells):.2f}"
            parts.append(f"{n}p {part}")
        print(f"  {backend.label:<{width}}  " + " | ".join(parts))
    for backend in backends:
        if backend.kind != "postgres":
            continue
        print()
        print(f"{backend.label} server counters per cycle (median of runs): transactions, WAL flushes, WAL bytes")
        for n in processes:
            cells = results[backend.label][n]
            commits = median(c.server.get("commits", 0) for c in cells)
            syncs = median(c.server.get("wal_sync", 0) for c in cells)
            wal = median(c.server.get("wal_bytes", 0) for c in cells)
            records = median(c.server.get("wal_records", 0) for c in cells)
            fpi = median(c.server.get("wal_fpi", 0) for c in cells)
            print(f"  {n}p  {commits:.2f} commits, {syncs:.2f} WAL flushes, {wal:.0f} WAL bytes "
                  f"({records:.1f} records, {fpi:.2f} full-page images)")  # fmt: skip

    if any(c.statements for b in backends for n in processes for c in results[b.label][n]):
        report_statements(results["postgres"], processes)

    labels = {b.label for b in backends}
    print()
    print("targets (postgres / sqlite durable, medians; within each run in brackets):")
    if not {"postgres", BASELINE} <= labels:
        print("  (needs both postgres and sqlite durable)")
        return
    for n, target, how in TARGETS:
        if n not in processes:
            print(f"  at {n} processes: not measured")
            continue
        pg, base = median(c.rate for c in results["postgres"][n]), median(c.rate for c in results[BASELINE][n])
        ratio = pg / base if base else float("inf")
        met = ratio >= target if how == ">=" else ratio > target
        rounds = [p.rate / b.rate if b.rate else float("inf")
                  for p, b in zip(results["postgres"][n], results[BASELINE][n], strict=True)]  # fmt: skip
        within = ", ".join(f"{x:.2f}x" for x in rounds)
        print(f"  at {n} processes: {ratio:.2f}x (target {how} {target}x) [{within}]  {'MET' if met else 'NOT MET'}")
    if "sqlite" in labels:
        for n in processes:
            pg, ref = median(c.rate for c in results["postgres"][n]), median(c.rate for c in results["sqlite"][n])
            print(f"  for reference, postgres / sqlite (synchronous=NORMAL) at {n} processes: {pg / ref:.2f}x")


def report_statements(cells_by_n: dict[int, list[Cell]], processes) -> None:
    """pg_stat_statements over every postgres run at each process count: what each cycle costs in the server."""
    print()
    print("postgres statements (pg_stat_statements, all runs): calls per cycle; mean ms executing / planning;")
    print("shared buffers touched and rows per call. Execution excludes the commit's WAL flush.")
    for n in processes:
        cycles = sum(c.cycles for c in cells_by_n[n])
        totals: dict[str, list[float]] = {}
        for cell in cells_by_n[n]:
            for query, values in cell.statements.items():
                into = totals.setdefault(query, [0.0] * len(values))
                for k, value in enumerate(values):
                    into[k] += value
        print(f"  {n} processes, {cycles} cycles:")
        ranked = sorted(totals.items(), key=lambda pair: -(pair[1][1] + pair[1][2]))
        for query, (calls, exec_ms, plan_ms, blocks, rows) in ranked[:6]:
            if calls < 0.5 * cycles:
                continue
            print(f"    {calls / max(cycles, 1):4.2f}/cycle  exec {exec_ms / calls:6.3f}  plan {plan_ms / calls:6.3f}  "
                  f"buffers {blocks / calls:6.1f}  rows {rows / calls:4.2f}  {shorten(query)}")  # fmt: skip


def shorten(query: str, limit: int = 70) -> str:
    """Which statement it is: its first words and the table it writes, enough to tell claim, reap and complete apart."""
    for marker, name in (("FOR UPDATE SKIP LOCKED ), taken", "claim"), ("expired AS", "reap"),
                         ("done AS", "complete"), ("pg_backend_pid", "backend pid")):  # fmt: skip
        if marker in query:
            return f"[{name}] {query[: limit - len(name) - 3]}"
    return query[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(parser, "time budget per run (default 2; --quick 1)")
    parser.add_argument("--items", type=int, default=10_000, help="PENDING items in each queue")
    parser.add_argument("--dsn", help="an existing PostgreSQL server (default: a throwaway cluster)")
    parser.add_argument("--profile", action="store_true",
                        help="also time every statement with pg_stat_statements (adds a little overhead)")  # fmt: skip
    args = parser.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    runs, seconds, processes, wanted = run_plan(parser, args, [b.label for b in BACKENDS])
    backends = [b for b in BACKENDS if not wanted or b.label in wanted]

    import psycopg

    import orchestrator

    print(f"python {platform.python_version()} ({sys.executable}), SQLite {sqlite3.sqlite_version}, "
          f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()})")  # fmt: skip
    print(f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"orch {commit()} ({Path(orchestrator.__file__).parent}); {datetime.date.today().isoformat()}")
    print(f"runs={runs}, processes={processes}, {args.items:,} items a queue, {seconds:g} s a run")

    started = time.perf_counter()
    server = Postgres(args.dsn, args.profile) if any(b.kind == "postgres" for b in backends) else None
    try:
        if server is not None:
            print(f"PostgreSQL: {server.settings()}")
        print()
        with tempfile.TemporaryDirectory(prefix="orch-bench-postgres-") as temp:
            root = Path(temp)
            sources = {}
            for backend in backends:
                if backend.kind in sources:
                    continue
                t0 = time.perf_counter()
                if backend.kind == "postgres":
                    server.build_template(args.items)
                    sources["postgres"] = server
                else:
                    sources["sqlite"] = build_sqlite_template(root / "template", args.items)
                print(f"built the {backend.kind} queue in {time.perf_counter() - t0:.1f} s")

            def measure_one(backend: Backend, n: int, budget: float, folder: Path) -> Cell:
                name = f"orch_bench_{os.getpid()}_{folder.name.replace('-', '_')}"
                return measure(backend, sources[backend.kind], folder, n, budget, name)

            results, durability = measure_rounds(backends, processes, runs, root, started, measure_one,
                                                 lambda backend: seconds)  # fmt: skip
    finally:
        if server is not None:
            server.close()
    print()
    report(backends, results, durability, processes, runs)


if __name__ == "__main__":
    main()
