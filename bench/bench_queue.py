"""Benchmark of the markdown queue commands: whole-process wall time of ``orch``.

What it measures, for generated QUEUE.md files of 100, 1,000 and 10,000 rows:

- ``python -c pass`` with the same interpreter as orch (``sys.executable``):
  the baseline cost of starting Python on this machine, measured in the same
  run so the ratios below do not depend on how fast or busy the machine is;
- ``orch --queue QUEUE.md status`` (read-only; the installed console script);
- ``orch --queue QUEUE.md cancel --id <a PENDING id>``: a
  full locked, fsynced write. The file is restored from a pristine copy before
  every cancel run (the copy is not timed), so each run cancels a PENDING row.

Each run is timed with ``time.perf_counter`` around ``subprocess.run``. The
three commands are interleaved (pass, status, cancel, pass, status, ...) so
machine noise hits all of them alike; each is run ``--runs`` times (default
15) after one untimed warm-up, and the median and minimum are printed in ms.

Targets (issue 2), on 10,000 rows: ``status`` within 8x ``python -c pass``
and ``cancel`` within 2x ``status`` (both compared by median).

For context it also prints the in-process time of ``QueueFile.parse`` on the
10,000-row file and the time of ``python -c "import orchestrator.cli"``.

Python is allowed to cache bytecode (``PYTHONDONTWRITEBYTECODE`` is removed
from the children's environment), as on a user's machine; the warm-up run
writes the cache.

Run it from the repository root with the project's virtual environment:

    .venv/bin/python bench/bench_queue.py [--runs N]

Stdlib only; it is a plain script, not a test: timings never become assertions.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (100, 1_000, 10_000)
TARGET_SIZE = 10_000
STATUS_TARGET = 8.0  # status / pass
CANCEL_TARGET = 2.0  # cancel / status

STATUS_WEIGHTS = (
    ("PENDING", 45),
    ("IN_PROGRESS", 20),
    ("DONE", 22),
    ("BLOCKED", 8),
    ("FAILED", 5),
)
VERBS = ("Fix", "Add", "Refactor", "Document", "Speed up", "Test", "Remove", "Port", "Review", "Split")
THINGS = (
    "the login form",
    "retry backoff",
    "the CSV exporter",
    "worktree cleanup",
    "the status page",
    "rate limiting",
    "the billing webhook",
    "search indexing",
    "config loading",
    "the audit log",
    "flaky integration tests",
    "the dashboard charts",
    "password reset emails",
    "the merge driver",
)
TAILS = (
    "for large inputs",
    "on Windows",
    "behind the feature flag",
    "in the admin panel",
    "when the cache is cold",
    "after the schema change",
    "for the mobile client",
    "with clear errors",
)
OWNERS = ("runner-1", "runner-2", "runner-3", "alice@laptop", "bob@ci", "agent-7", "agent-12")
NOTES = {
    "PENDING": ("", "", "", "", "retry:1", "replan:split into two"),
    "IN_PROGRESS": ("", "", "", "retry:1", "retry:1; retry:2"),
    "DONE": ("done:1", "done:2", "retry:1; done:2"),
    "BLOCKED": ("cancelled_by_operator", "intervention:needs a product decision", "intervention:max steps"),
    "FAILED": ("error:exit 1", "timeout:900s", "retry:1; error:agent crashed"),
}

PROSE_BEFORE = """\
# Work queue

This file is the queue for `orch`. Edit rows by hand or in a pull request;
`orch` changes only the rows it moves. New items go at the end of the table.

Statuses: PENDING, IN_PROGRESS, BLOCKED, FAILED, DONE.

"""
PROSE_AFTER = """
## Notes

- Ask in #platform before cancelling someone else's IN_PROGRESS item.
- Items blocked for more than a week are reviewed on Mondays.
"""


def make_title(rng: random.Random) -> str:
    """A title of 30 to 60 characters."""
    while True:
        title = f"{rng.choice(VERBS)} {rng.choice(THINGS)} {rng.choice(TAILS)}"
        if len(title) < 30:
            title += f" (#{rng.randint(100, 9999)})"
        if 30 <= len(title) <= 60:
            return title


def make_queue(rows: int, seed: int = 2) -> tuple[str, str]:
    """The text of a QUEUE.md with ``rows`` items, and the id of a PENDING row near the middle."""
    rng = random.Random(seed + rows)
    words = [word for word, _ in STATUS_WEIGHTS]
    weights = [weight for _, weight in STATUS_WEIGHTS]
    lines = [
        "| id | status | title | owner | started | attempts | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    pending = []
    for n in range(1, rows + 1):
        item_id = f"T-{n:05d}"
        status = rng.choices(words, weights)[0]
        owner = started = ""
        attempts = 0
        notes = rng.choice(NOTES[status])
        if status == "IN_PROGRESS":
            owner = rng.choice(OWNERS)
            day, hour, minute = rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59)
            started = f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:00Z"
            attempts = rng.randint(1, 3)
        elif status in ("DONE", "FAILED", "BLOCKED"):
            attempts = rng.randint(1, 3)
        else:
            pending.append(item_id)
        cells = [item_id, status, make_title(rng), owner, started, str(attempts), notes]
        lines.append("| " + " | ".join(cells) + " |")
    target = pending[len(pending) // 2]
    return PROSE_BEFORE + "\n".join(lines) + "\n" + PROSE_AFTER, target


# As on a user's machine, Python may cache bytecode: this sandbox sets
# PYTHONDONTWRITEBYTECODE=1, which makes every run recompile orch's modules.
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: list[str], cwd: Path) -> float:
    """Wall time of one process in seconds; aborts the benchmark if it does not exit 0."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=RUN_ENV)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(
            f"benchmark aborted: {' '.join(argv)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return elapsed


ORCH = Path(sys.executable).with_name("orch")  # the console script a user runs


def orch(queue: Path, *args: str) -> list[str]:
    return [str(ORCH), "--queue", str(queue), *args]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def bench_size(rows: int, runs: int, root: Path) -> dict[str, list[float]]:
    folder = root / f"q{rows}"
    folder.mkdir()
    text, target = make_queue(rows)
    queue = folder / "QUEUE.md"
    pristine = folder / "QUEUE.md.pristine"
    pristine.write_text(text, encoding="utf-8")
    shutil.copyfile(pristine, queue)

    baseline = [sys.executable, "-c", "pass"]
    status = orch(queue, "status")
    cancel = orch(queue, "cancel", "--id", target)

    def restore() -> None:
        shutil.copyfile(pristine, queue)
        shutil.rmtree(folder / ".orch", ignore_errors=True)

    # One untimed warm-up of each: bytecode caches, page cache.
    timed(baseline, folder)
    timed(status, folder)
    restore()
    timed(cancel, folder)
    if f"| {target} | BLOCKED |" not in queue.read_text(encoding="utf-8"):
        sys.exit(f"benchmark aborted: cancel --id {target} did not make the row BLOCKED")

    times: dict[str, list[float]] = {"pass": [], "status": [], "cancel": []}
    for _ in range(runs):
        times["pass"].append(timed(baseline, folder))
        restore()  # status reads the pristine file too
        times["status"].append(timed(status, folder))
        restore()
        times["cancel"].append(timed(cancel, folder))
    return times


def parse_time(rows: int, runs: int) -> tuple[float, float]:
    """Median and minimum in-process ``QueueFile.parse`` time on a ``rows``-row file."""
    from orchestrator.queuefile import QueueFile

    data = make_queue(rows)[0].encode("utf-8")
    QueueFile.parse("QUEUE.md", data)  # warm-up: first mistune import and regex compiles
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        queue = QueueFile.parse("QUEUE.md", data)
        samples.append(time.perf_counter() - start)
    if queue.problems or len(queue.items) != rows:
        sys.exit(f"benchmark aborted: the generated queue does not parse cleanly: {queue.problems[:3]}")
    return statistics.median(samples), min(samples)


def import_time(runs: int, cwd: Path) -> tuple[float, float]:
    """Median and minimum wall time of ``python -c "import orchestrator.cli"``."""
    argv = [sys.executable, "-c", "import orchestrator.cli"]
    timed(argv, cwd)
    samples = [timed(argv, cwd) for _ in range(runs)]
    return statistics.median(samples), min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each command per size (default 15)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, runs={args.runs}")
    print()

    results: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as temp:
        root = Path(temp)
        header = f"{'rows':>7} | {'':6} | {'median ms':>9} | {'min ms':>8}"
        print(header)
        print("-" * len(header))
        for rows in SIZES:
            results[rows] = bench_size(rows, args.runs, root)
            for name in ("pass", "status", "cancel"):
                samples = results[rows][name]
                print(f"{rows:>7} | {name:6} | {ms(statistics.median(samples)):>9} | {ms(min(samples)):>8}")
        imp_median, imp_min = import_time(args.runs, root)

    print()
    print(f"{'rows':>7} | status/pass | cancel/status   (medians)")
    for rows in SIZES:
        med = {name: statistics.median(samples) for name, samples in results[rows].items()}
        print(f"{rows:>7} | {med['status'] / med['pass']:11.2f} | {med['cancel'] / med['status']:13.2f}")

    med = {name: statistics.median(samples) for name, samples in results[TARGET_SIZE].items()}
    status_ratio = med["status"] / med["pass"]
    cancel_ratio = med["cancel"] / med["status"]
    print()
    print(f"targets on {TARGET_SIZE:,} rows:")
    print(
        f"  status <= {STATUS_TARGET:g}x pass:   {status_ratio:5.2f}x  "
        f"{'MET' if status_ratio <= STATUS_TARGET else 'NOT MET'}"
    )
    print(
        f"  cancel <= {CANCEL_TARGET:g}x status: {cancel_ratio:5.2f}x  "
        f"{'MET' if cancel_ratio <= CANCEL_TARGET else 'NOT MET'}"
    )

    parse_median, parse_min = parse_time(TARGET_SIZE, args.runs)
    print()
    print("context:")
    print(
        f"  QueueFile.parse, {TARGET_SIZE:,} rows, in process: median {ms(parse_median).strip()} ms, "
        f"min {ms(parse_min).strip()} ms"
    )
    print(
        f"  python -c 'import orchestrator.cli':        median {ms(imp_median).strip()} ms, "
        f"min {ms(imp_min).strip()} ms"
    )


if __name__ == "__main__":
    main()
