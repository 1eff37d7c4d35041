"""Benchmark of a work order run: orchestration overhead per task against a worktree plus a commit.

What it measures, per backend (markdown ``QUEUE.md``, and SQLite through
``--db`` after ``orch --db q.db import --from QUEUE.md``):

- a fresh git repository with an ``orch.yaml`` whose agents return at once
  (default ``--agents shell``: worker ``sh -c 'echo done > out.txt'``,
  supervisor ``true``; ``--agents python``: a scripted worker with one write
  and ``python -c pass`` as supervisor), pools ``local`` (capacity W/2) and
  ``cloud`` (the rest) under ``hybrid``, retry backoff 0.05 s;
- ``orch plan --count N`` and ``orch dispatch`` (not timed), then
  ``orch run --job J --workers W`` as one process, timed with
  ``time.perf_counter`` around ``subprocess.run``, and its CPU (user + system
  of it and every process it waited for: agents, git) from
  ``getrusage(RUSAGE_CHILDREN)``;
- the agents' own time: every step's ``duration_s`` (spawn to exit, as the
  runner saw it) summed from the attempts' ``job_manifest.json``;
- in the same repository, right after the run: a bare ``git worktree add -b``
  plus a plain ``git add`` + ``git commit --no-verify`` of one file, ``--base``
  times, one after another (the baseline, wall and CPU), and the agents'
  commands run directly (their CPU, subtracted from the run's).

Figures, per run: tasks per second = N / wall; slot time per task =
wall x W / N (what one worker slot spends per task); orchestration overhead
per task = slot time - agent time per task. Target (issue 6): overhead per
task at most 2x (worktree add + evidence commit). Two more views, since W = 8
slots share 2 cores here: the per-core overhead (wall x min(W, cores) / N -
agent time) and the CPU per task (run CPU / N - agent CPU) against the
baseline's CPU. ``races`` counts attempts lost to concurrent
``git worktree add`` (a known bug; each costs one retry). The backends
alternate run by run so machine noise hits both alike; medians of ``--runs``.

``--profile`` adds in-process runs (Runner + Conductor): one with per-phase
wall times (each phase wrapped; nested phases overlap), one under cProfile
(every attempt thread and the main loop, merged), then what-ifs that patch
this process only (``--profile-runs`` interleaved runs each, medians).

    .venv/bin/python bench/bench_workorder.py [--quick] [--runs 3] [--tasks 200] [--workers 8] [--profile]

A plain script, not a test: timings never become assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2.0  # overhead per task / (worktree add + commit)
HEADER = (
    "| id | status | title | owner | started | attempts | max_attempts | agent | job | depends_on | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
# As on a user's machine, Python may cache bytecode.
RUN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("ORCH_")}
RUN_ENV["PYTHONPATH"] = str(ROOT)


def agents(kind: str) -> dict:
    if kind == "python":
        return {"w": {"kind": "scripted", "steps": [{"write": {"out.txt": "done\n"}}]},
                "s": {"kind": "command", "argv": [sys.executable, "-c", "pass"]}}  # fmt: skip
    return {"w": {"kind": "command", "argv": ["/bin/sh", "-c", "echo done > out.txt"]},
            "s": {"kind": "command", "argv": ["true"]}}  # fmt: skip


def orch_yaml(kind: str, workers: int) -> dict:
    local = max(1, workers // 2)
    return {
        "agents": agents(kind), "worker": "w", "supervisor": "s", "strategy": "hybrid",
        # A lost `git worktree add` race (a known bug) then costs one quick retry, not the default 60 s backoff.
        "retry": {"max_attempts": 3, "backoff_base": 0.05},
        "pools": {"local": {"agent": "w", "capacity": local},
                  "cloud": {"agent": "w", "capacity": max(1, workers - local), "requests_per_minute": 100_000}},
    }  # fmt: skip


def sh(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=RUN_ENV)
    if done.returncode != 0:
        sys.exit(f"benchmark aborted: {' '.join(argv)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def orch(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def make_repo(folder: Path, kind: str, workers: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "QUEUE.md").write_text("# Queue\n\n" + HEADER)
    (folder / "orch.yaml").write_text(yaml.safe_dump(orch_yaml(kind, workers), sort_keys=False))
    (folder / ".gitignore").write_text(".orch/\nQUEUE.md.lock\n*.db\n*.db-*\n")
    (folder / "README.md").write_text("bench repo\n")
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "b@example.invalid"],
                 ["config", "user.name", "orch bench"], ["add", "--all"], ["commit", "-q", "-m", "init"]):  # fmt: skip
        sh(["git", *args], folder)
    return folder / "QUEUE.md"


def prepare(folder: Path, backend: str, tasks: int, kind: str, workers: int) -> tuple[str, list[str]]:
    """A repo with a dispatched work order; returns the job id and the ``orch`` options for the backend."""
    queue = make_repo(folder, kind, workers)
    out = sh(orch("--queue", str(queue), "plan", "--name", "bench", "--count", str(tasks)), folder)
    job = out.split("jobs/")[1].split("/")[0]
    sh(orch("--queue", str(queue), "dispatch", str(folder / "jobs" / job / "work_order.yaml")), folder)
    if backend == "sqlite":
        sh(orch("--db", "q.db", "import", "--from", "QUEUE.md"), folder)
        return job, ["--db", "q.db"]
    return job, ["--queue", str(queue)]


def agent_time(folder: Path) -> float:
    """Seconds the agents ran, summed over every step of every attempt."""
    total = 0.0
    for path in (folder / ".orch" / "runs").glob("*/*/job_manifest.json"):
        for step in json.loads(path.read_text())["steps"]:
            total += sum(step.get(role, {}).get("duration_s", 0.0) for role in ("worker", "supervisor"))
    return total


def races(folder: Path, job: str) -> int:
    """Attempts lost to concurrent ``git worktree add``s (retried), from the job's execution.log."""
    log = (folder / "jobs" / job / "execution.log").read_text()
    return sum("| RETRIED " in line and "git worktree add" in line for line in log.splitlines())


def children_cpu() -> float:
    """CPU seconds (user + system) of every child process waited for so far, and of theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baseline(folder: Path, samples: int, kind: str) -> dict:
    """Medians of a bare ``git worktree add -b`` and of ``git add`` + ``git commit --no-verify`` (wall and CPU),
    and the CPU of one worker + supervisor call run directly."""
    adds, commits, cpus, agent_cpus = [], [], [], []
    probe = PROBES[kind]
    for k in range(samples):
        path = folder / ".orch" / "baseline" / str(k)
        cpu, start = children_cpu(), time.perf_counter()
        sh(["git", "worktree", "add", "-q", "-b", f"bench/baseline-{k}", str(path), "HEAD"], folder)
        adds.append(time.perf_counter() - start)
        (path / "evidence.txt").write_text(f"evidence {k}\n")
        start = time.perf_counter()
        sh(["git", "add", "evidence.txt"], path)
        sh(["git", "commit", "-q", "--no-verify", "-m", f"evidence {k}"], path)
        commits.append(time.perf_counter() - start)
        cpus.append(children_cpu() - cpu)
        cpu = children_cpu()
        for argv in probe:
            sh(argv, path)
        agent_cpus.append(children_cpu() - cpu)
    return {"add": statistics.median(adds), "commit": statistics.median(commits),
            "base_cpu": statistics.median(cpus), "agent_cpu": statistics.median(agent_cpus)}  # fmt: skip


# The agents' CPU, run directly (the scripted worker is approximated by a python one-liner).
PROBES = {
    "shell": (["/bin/sh", "-c", "echo done > out.txt"], ["true"]),
    "python": ([sys.executable, "-c", "open('out.txt', 'w').write('done')"], [sys.executable, "-c", "pass"]),
}


def one_run(root: Path, backend: str, tasks: int, workers: int, kind: str, base_samples: int) -> dict:
    folder = root / f"{backend}-{len(list(root.iterdir()))}"
    job, where = prepare(folder, backend, tasks, kind, workers)
    cpu, start = children_cpu(), time.perf_counter()
    out = sh(orch(*where, "run", "--job", job, "--workers", str(workers)), folder)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    state = json.loads(sh(orch(*where, "job", "status", job, "--json"), folder))
    if state["completed"] != tasks or f"DONE={tasks}" not in out:
        sys.exit(f"benchmark aborted: {backend} run finished {state['completed']} of {tasks} tasks")
    agent = agent_time(folder) / tasks
    base = baseline(folder, base_samples, kind)
    slot = wall * workers / tasks
    cores = min(workers, os.cpu_count() or 1)
    return {
        "backend": backend, "wall": wall, "tps": tasks / wall, "slot": slot, "agent": agent,
        "overhead": slot - agent, "add": base["add"], "commit": base["commit"], "base": base["add"] + base["commit"],
        "core_overhead": wall * cores / tasks - agent, "cpu": cpu / tasks - base["agent_cpu"],
        "base_cpu": base["base_cpu"], "races": races(folder, job),
    }  # fmt: skip


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


COLUMNS = (("wall", "wall s", 1), ("tps", "tasks/s", 1), ("slot", "slot ms", 1000), ("agent", "agent ms", 1000),
           ("overhead", "overhead ms", 1000), ("add", "wt add ms", 1000), ("commit", "commit ms", 1000),
           ("base", "base ms", 1000), ("core_overhead", "per-core ovh ms", 1000), ("cpu", "cpu ms", 1000),
           ("base_cpu", "base cpu ms", 1000), ("races", "races", 1))  # fmt: skip
RATIOS = (("overhead", "base", "ovh/base"), ("core_overhead", "base", "core/base"), ("cpu", "base_cpu", "cpu/base"))


def width(title: str) -> int:
    return max(len(title), 7)


def header() -> str:
    titles = [title for _, title, _ in COLUMNS] + [title for _, _, title in RATIOS]
    return f"{'run':<16} | " + " | ".join(f"{title:>{width(title)}}" for title in titles)


def row(label: str, values: dict) -> str:
    cells = [f"{values[key] * scale:>{width(title)}.{(0 if key == 'races' else 2) if scale == 1 else 1}f}"
             for key, title, scale in COLUMNS]  # fmt: skip
    cells += [f"{values[top] / values[bottom]:>{width(title) - 1}.1f}x" for top, bottom, title in RATIOS]
    return f"{label:<16} | " + " | ".join(cells)


# --- profile: in-process runs with per-phase wall times, cProfile, and what-ifs -------------


@contextmanager
def patched(owner, name: str, value):
    """Set ``owner.name`` for the duration of the block (bench-side only; nothing in orchestrator/ changes)."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield original
    finally:
        setattr(owner, name, original)


PHASES = (
    ("runner", "Runner", "_claim", "any: Runner._claim (route + claim + claimed)"),
    ("conductor", "Conductor", "route", "any: Conductor.route"),
    ("markdown", "MarkdownStore", "claim", "any: store.claim"),
    ("sqlite", "SqliteStore", "claim", "any: store.claim"),
    ("conductor", "Conductor", "claimed", "any: Conductor.claimed (3 log lines)"),
    ("runner", "Attempt", "__init__", "any: Attempt.__init__ (task_prompt)"),
    ("worktree", "Worktrees", "create", "attempt: git worktree add"),
    ("command", "CommandAgent", "step", "attempt: agent step (worker+supervisor)"),
    ("runner", "Attempt", "_check_still_ours", "attempt: still ours? (store read after the worker)"),
    ("runner", "Attempt", "_diff_stat", "attempt: git add + diff --stat"),
    ("runner", "Attempt", "_commit", "attempt: evidence copy + commit"),
    ("markdown", "MarkdownStore", "complete", "attempt: store.complete"),
    ("sqlite", "SqliteStore", "complete", "attempt: store.complete"),
    ("conductor", "Conductor", "ended", "attempt: Conductor.ended (result line)"),
    ("conductor", "Conductor", "step", "attempt: Conductor.step (log line)"),
    ("manifest", "JobManifest", "write", "attempt: job_manifest.json writes"),
    ("conductor", "", "refresh_counters", "counter thread: refresh_counters (queue read, yaml)"),
)


def in_process(root: Path, backend: str, tasks: int, workers: int, kind: str, *, phases: bool = False,
               cprofile: bool = False, serial_claims: bool = False) -> dict:  # fmt: skip
    """One run through the library (Runner + Conductor); what-if switches patch this process only."""
    import cProfile
    import importlib
    import threading

    sys.path.insert(0, str(ROOT))
    from orchestrator import workorder
    from orchestrator.conductor import Conductor
    from orchestrator.config import load_config
    from orchestrator.runner import Runner, RunOptions
    from orchestrator.store import open_store

    modules = {name: importlib.import_module(f"orchestrator.{path}") for name, path in (
        ("runner", "runner"), ("conductor", "conductor"), ("markdown", "store.markdown"),
        ("sqlite", "store.sqlite"), ("worktree", "worktree"), ("command", "agents.command"),
        ("manifest", "manifest"))}  # fmt: skip
    folder = root / f"inproc-{backend}-{len(list(root.iterdir()))}"
    job, _ = prepare(folder, backend, tasks, kind, workers)
    times: dict[str, list[float]] = {}
    profiles: list = []
    lock = threading.Lock()

    def timing(original, label: str):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with lock:
                    times.setdefault(label, []).append(time.perf_counter() - start)

        return wrapper

    with ExitStack() as stack:
        if phases:
            for module, cls, name, label in PHASES:
                owner = getattr(modules[module], cls) if cls else modules[module]
                stack.enter_context(patched(owner, name, timing(getattr(owner, name), label)))
        if serial_claims:  # what if only the main thread claimed (as before claims overlapped)
            stack.enter_context(patched(Runner, "_next_attempt", lambda self: None))
        if cprofile:
            drive = Runner._drive

            def profiled_drive(self, attempt):
                profiler = cProfile.Profile()
                profiler.enable()
                try:
                    drive(self, attempt)
                finally:
                    profiler.disable()
                    with lock:
                        profiles.append(profiler)

            stack.enter_context(patched(Runner, "_drive", profiled_drive))
        cfg = load_config(folder)
        db = str(folder / "q.db") if backend == "sqlite" else None
        store = open_store(queue=folder / "QUEUE.md", db=db, policy=cfg.retry, lease=cfg.lease)
        conductor = Conductor(store, cfg, workorder.Package.of(folder, job))
        runner = Runner(store, cfg, folder, RunOptions(workers=workers, job=job), lambda line: None, conductor)
        conductor.attach(runner)
        main = cProfile.Profile() if cprofile else None
        start = time.perf_counter()
        if main:
            main.enable()
        outcomes = runner.run()
        if main:
            main.disable()
            profiles.insert(0, main)
        wall = time.perf_counter() - start
    if sum(o.state == "SUCCESS" for o in outcomes) != tasks:
        sys.exit(f"benchmark aborted: the in-process {backend} run did not finish every task")
    slot, agent = wall * workers / tasks, agent_time(folder) / tasks
    found = baseline(folder, 5, kind)  # in the same repo, after the run, as in one_run
    return {"wall": wall, "tps": tasks / wall, "overhead": slot - agent, "base": found["add"] + found["commit"],
            "phases": times, "profiles": profiles}  # fmt: skip


def profile(root: Path, tasks: int, workers: int, kind: str, runs: int) -> None:
    import pstats

    run = in_process(root, "markdown", tasks, workers, kind, phases=True)
    print(f"\nphases: in-process markdown run, {tasks} tasks, {workers} workers, wall {run['wall']:.1f}s "
          f"({run['tps']:.1f} tasks/s; each phase wrapped, nested phases overlap; wall time in the phase)")  # fmt: skip
    print(f"{'phase':<56} | {'calls':>5} | {'ms/call':>8} | {'ms/task':>8}")
    for label, samples in sorted(run["phases"].items(), key=lambda kv: -sum(kv[1])):
        print(f"{label:<56} | {len(samples):>5} | {ms(statistics.mean(samples)):>8} | {ms(sum(samples) / tasks):>8}")

    run = in_process(root, "markdown", tasks, workers, kind, cprofile=True)
    stats = pstats.Stats(run["profiles"][0])
    for profiler in run["profiles"][1:]:
        stats.add(profiler)
    print(f"\ncProfile, markdown, main loop + every attempt thread merged (wall {run['wall']:.1f}s under the "
          "profiler), top 20 by own time:")  # fmt: skip
    stats.sort_stats("tottime").print_stats(20)

    print(f"what-ifs, in process, {tasks} tasks, {workers} workers, median of {runs} interleaved runs each "
          "(base: worktree add + commit, 5 samples in each run's repo after the run):")  # fmt: skip
    print(f"{'variant':<34} | {'wall s':>7} | {'tasks/s':>7} | {'overhead ms':>11} | {'base ms':>7} | overhead/base")
    variants = (("markdown", {}), ("markdown", {"serial_claims": True}), ("sqlite", {}),
                ("sqlite", {"serial_claims": True}))  # fmt: skip
    found: list[list[dict]] = [[] for _ in variants]
    for _ in range(runs):
        for samples, (backend, switches) in zip(found, variants, strict=True):
            samples.append(in_process(root, backend, tasks, workers, kind, **switches))
    for samples, (backend, switches) in zip(found, variants, strict=True):
        wall, tps, overhead, own = (statistics.median(r[key] for r in samples)
                                    for key in ("wall", "tps", "overhead", "base"))  # fmt: skip
        label = f"{backend} " + (" + ".join(switches) if switches else "as is")
        print(f"{label:<34} | {wall:7.2f} | {tps:7.1f} | {ms(overhead):>11} | {ms(own):>7} | {overhead / own:6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="runs per backend (default 3)")
    parser.add_argument("--base", type=int, default=15, help="baseline samples per run (default 15)")
    parser.add_argument("--agents", choices=("shell", "python"), default="shell")
    parser.add_argument("--backends", default="markdown,sqlite")
    parser.add_argument("--quick", action="store_true", help="50 tasks, 5 baseline samples (still --runs runs)")
    parser.add_argument("--profile", action="store_true", help="then in-process runs: phases, cProfile, what-ifs")
    parser.add_argument("--profile-runs", type=int, default=3, help="runs of each what-if (default 3)")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.base = 50, 5
    backends = args.backends.split(",")

    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"tasks={args.tasks} workers={args.workers} runs={args.runs} agents={args.agents} base samples={args.base}")
    results: dict[str, list[dict]] = {backend: [] for backend in backends}
    with tempfile.TemporaryDirectory(prefix="orch-bench-wo-") as temp:
        root = Path(temp)
        if args.runs:
            print("\n" + header())
        for k in range(args.runs):
            for backend in backends:
                result = one_run(root, backend, args.tasks, args.workers, args.agents, args.base)
                results[backend].append(result)
                print(row(f"{backend} {k + 1}", result), flush=True)
        medians = {backend: {key: statistics.median(r[key] for r in runs) for key, _, _ in COLUMNS}
                   for backend, runs in results.items() if runs}  # fmt: skip
        print()
        for backend, med in medians.items():
            print(row(f"{backend} median", med))
        print()
        for backend, med in medians.items():
            ratio = med["overhead"] / med["base"]
            print(f"target {backend}: overhead per task <= {TARGET:g}x (worktree add + commit): {ratio:.1f}x "
                  f"{'MET' if ratio <= TARGET else 'NOT MET'}  (per core: {med['core_overhead'] / med['base']:.1f}x, "
                  f"cpu: {med['cpu'] / med['base_cpu']:.1f}x)")  # fmt: skip
        if args.profile:
            profile(root, args.tasks, args.workers, args.agents, args.profile_runs)


if __name__ == "__main__":
    main()
