"""What the process benchmarks share: the checkout, the workers' start line, the disk's state, the commit.

``bench_claims.py`` and ``bench_postgres.py`` start their workers as separate
processes (``python <script> --worker SPEC``) that each print one line when
ready, then wait on a ``flock`` the parent holds; the parent releases them
all at once, and each prints its report as its last line.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Measure the orch of this checkout, whatever the venv's editable install points to.
sys.path.insert(0, str(REPO))
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
RUN_ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))


def item_id(n: int) -> str:
    return f"T-{n:05d}"


def title(n: int) -> str:
    return f"Benchmark task {n}: claim it, then complete it"


def wait_for_start(barrier: str) -> None:
    """In a worker: block until the parent releases the start line."""
    fd = os.open(barrier, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def run_workers(script: Path, label: str, specs: list[dict], folder: Path,
                on_ready=lambda: None) -> tuple[list[dict], set[str], float]:  # fmt: skip
    """Start one worker process per spec, release them together; (their reports, durabilities, release time).

    Each spec gets ``barrier``, the start line's path. A worker prints ``{"durability": ...}`` when
    ready and its report (JSON) as its last line at the end.
    """
    barrier_path = folder / "barrier"
    barrier_path.touch()
    barrier = os.open(barrier_path, os.O_RDWR)
    fcntl.flock(barrier, fcntl.LOCK_EX)
    workers = []
    try:
        for index, spec in enumerate(specs):
            log = open(folder / f"worker-{index}.err", "w+")  # closed in the finally below
            argv = [sys.executable, str(script), "--worker", json.dumps({**spec, "barrier": str(barrier_path)})]
            proc = subprocess.Popen(argv, cwd=REPO, env=RUN_ENV, stdout=subprocess.PIPE, stderr=log, text=True)
            workers.append((proc, log))
        durability = set()
        for proc, log in workers:
            line = proc.stdout.readline()
            if not line:
                proc.wait()
                log.seek(0)
                raise RuntimeError(f"{label}: a worker failed before the start:\n{log.read()}")
            durability.add(json.loads(line)["durability"])
        on_ready()
        release = time.perf_counter()
        fcntl.flock(barrier, fcntl.LOCK_UN)
        reports = []
        for proc, log in workers:
            out, _ = proc.communicate()
            if proc.returncode != 0 or not out.strip():
                log.seek(0)
                raise RuntimeError(f"{label}: a worker exited {proc.returncode}:\n{log.read()}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        os.close(barrier)
        for proc, log in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return reports, durability, release


def fsync_probe(folder: Path, count: int = 100) -> tuple[float, float]:
    """Median and 90th percentile ms of appending 4 KiB to a file and fsyncing it: how busy the disk is now."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    samples = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            start = time.perf_counter()
            os.fsync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    samples.sort()
    return 1000 * statistics.median(samples), 1000 * samples[int(0.9 * (len(samples) - 1))]


def machine_state(folder: Path) -> str:
    fsync_median, fsync_p90 = fsync_probe(folder)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"fsync 4 KiB: median {fsync_median:.2f} ms, p90 {fsync_p90:.2f} ms; load average {load}"


def commit() -> str:
    """The checkout's commit, marked dirty if orchestrator/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "orchestrator"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return "?"
    return (head.stdout.strip() or "?") + (" with uncommitted changes in orchestrator/" if dirty.stdout.strip() else "")


PROCESSES = (1, 4, 8)


def add_run_options(parser, seconds_help: str) -> None:
    """The options both process benchmarks take (each adds its own beside them)."""
    parser.add_argument("--runs", type=int, default=None, help="measurements of each cell (default 3; --quick 1)")
    parser.add_argument("--quick", action="store_true", help="one run, shorter time budgets")
    parser.add_argument("--seconds", type=float, default=None, help=seconds_help)
    parser.add_argument("--processes", default=",".join(map(str, PROCESSES)), help="worker counts, comma-separated")
    parser.add_argument("--only", default="", help="backend labels to run, comma-separated (default: all)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def run_plan(parser, args, labels: list[str]) -> tuple[int, float, tuple[int, ...], set[str]]:
    """(runs, seconds a run, process counts, the backend labels asked for: empty for all), checked."""
    runs = args.runs or (1 if args.quick else 3)
    seconds = args.seconds or (1.0 if args.quick else 2.0)
    processes = tuple(int(part) for part in args.processes.split(","))
    if runs < 1 or min(processes) < 1:
        parser.error("--runs and --processes must be at least 1")
    wanted = {label.strip() for label in args.only.split(",") if label.strip()}
    unknown = wanted - set(labels)
    if unknown:
        parser.error(f"unknown backend {sorted(unknown)}; known: {', '.join(labels)}")
    return runs, seconds, processes, wanted


def measure_rounds(backends, processes, runs: int, root: Path, started: float, measure_one, budget_of):
    """An untimed warm-up of each backend, then ``runs`` rounds of every (process count, backend) cell,
    interleaved so machine noise hits all alike; each cell's problems printed as they happen.

    ``measure_one(backend, processes, seconds, folder)`` returns a cell with ``problems``,
    ``duplicates`` and ``durability``. Returns (cells by label and process count, durability by label).
    """
    results = {backend.label: {n: [] for n in processes} for backend in backends}
    durability: dict[str, str] = {}
    folders = (root / f"run-{k}" for k in itertools.count(1))

    def run(backend, n: int, seconds: float):
        cell = measure_one(backend, n, seconds, next(folders))
        for problem in cell.problems:
            print(f"  !! {backend.label}, {n} processes: {problem}")
        if cell.duplicates:
            print(f"  !! {backend.label}, {n} processes: {cell.duplicates} items were handed out twice")
        return cell

    for backend in backends:  # page cache, bytecode caches
        durability[backend.label] = run(backend, 1, 0.3).durability
    print(f"warm-up done; {time.perf_counter() - started:.0f} s so far")
    for r in range(runs):
        print(f"run {r + 1}/{runs}: {machine_state(root)}")
        for n in processes:
            for backend in backends:
                results[backend.label][n].append(run(backend, n, budget_of(backend)))
    print(f"after the last run: {machine_state(root)}; {time.perf_counter() - started:.0f} s in all")
    return results, durability
