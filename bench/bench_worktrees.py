"""Benchmark of running jobs: worktree creation, claim-to-agent-started and evidence commits.

For a generated repository of 100 files and one of 5,000 files (text files of
1-4 KB in nested folders, committed), measured in the same run and interleaved:

- ``add`` (baseline A): ``git worktree add --quiet -b <branch> <path> HEAD``
  as a subprocess; only the add is timed, the worktree and its branch are
  removed afterwards (untimed);
- ``commit`` (baseline B): ``git commit --no-verify -q -- <file>`` of one
  changed file in that fresh worktree;
- ``orch start``: claim-to-agent-started without a pool. A ``Runner`` over the
  repository (markdown store by default, as ``orch run``) is ticked; the time
  runs from just before ``Runner.tick()`` (which claims the item) until the
  worker agent's ``subprocess.Popen`` is called. The ``Popen`` the command agent
  uses is wrapped (``orchestrator.agents.command.subprocess``) to read the
  clock and then start the real process, so the attempt runs on normally:
  the worker (``sh -c 'echo ... >> <a tracked file>'``) changes one file, the
  supervisor (``true``) says SUCCESS, evidence is committed, the item is DONE.
  The child's own start-up (fork/exec, ``sh``) is not counted: it is the same
  for any launcher;
- ``orch step``: the per-step overhead, ``Attempt._commit`` timed (copy of
  prompts and logs into ``.orch-evidence``, ``step.json``, ``commit_all``:
  ``git add --all`` + ``git commit`` + ``rev-parse``, and the manifest write)
  for the step of that attempt, whose worker changed one file;
- ``orch pool``: claim-to-agent-started as above, on a twin repository whose
  orch.yaml says ``worktree_pool: 4``, after the pool is warm: every timed
  attempt must get its worktree from the pool (checked; else the benchmark
  says so), i.e. a finished, clean worktree moved into place and reset with
  ``checkout -B`` + ``clean``.

Targets (issue 4): ``orch start`` within 1.2x ``add``; ``orch step`` within 2x
``commit``; ``orch pool`` on 5,000 files at most 0.25x ``add``.

Each figure is the median (and minimum) of ``--runs`` runs (default 11; 5 with
``--quick``) after two untimed warm-ups. In each run the three groups (add +
commit, orch start + step, orch pool) take turns going first, and
``os.sync()`` (untimed) runs before each group, so the writes and deletions
of the group before (a 5,000-file worktree is ~13 MB) are not flushed under
the next one. The commit comes right after its add, as the orch step comes
shortly after its worktree was made. It also prints where the time of the
orch figures goes: claim, worktree creation, the rest, and every git command
run (``git.cmd.Git.execute`` and ``orchestrator.worktree.git`` wrapped)
before the worker starts and inside ``_commit``; and, for context,
``_diff_stat`` (``git add --all`` + ``git diff --cached --stat`` for the
supervisor's prompt), which each step also runs before the supervisor and
which is not part of the target's ``_commit``.

It first checks that ``worktree_pool`` works on a small repo (the second of
two attempts must reuse the first one's worktree) and aborts with git's error
if it does not.

Run it from the repository root with the project's virtual environment:

    .venv/bin/python bench/bench_worktrees.py [--runs N] [--quick] [--store sqlite]

Stdlib (plus orch and its dependencies, imported in process); a plain script,
not a test: timings never become assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# As on a user's machine, Python may cache bytecode (this sandbox sets
# PYTHONDONTWRITEBYTECODE=1); the agents inherit this environment.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

import git.cmd  # noqa: E402

import orchestrator.agents.command as command_module  # noqa: E402
from orchestrator import runner as runner_module  # noqa: E402
from orchestrator import worktree as worktree_module  # noqa: E402
from orchestrator.config import load_config  # noqa: E402
from orchestrator.runner import Attempt, Runner, RunOptions  # noqa: E402
from orchestrator.store.markdown import MarkdownStore  # noqa: E402
from orchestrator.store.sqlite import SqliteStore  # noqa: E402
from orchestrator.worktree import Worktrees  # noqa: E402

SIZES = (100, 5_000)
POOL_TARGET_SIZE = 5_000
START_TARGET = 1.2  # orch start / add
STEP_TARGET = 2.0  # orch step / commit
POOL_TARGET = 0.25  # orch pool / add, on 5,000 files
POOL_SIZE = 4
WARMUPS = 2  # untimed runs of each; the pool needs one finished attempt to hold a spare

HEADER = (
    "| id | status | title | owner | started | attempts | max_attempts | agent | depends_on | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
WORDS = (
    "worker supervisor queue lease claim attempt branch commit evidence manifest retry backoff "
    "prompt transcript verdict runner thread process group signal timeout cancel release pool "
    "index tree blob object packfile checkout clean rename atomic fsync replace lock table row "
    "column status owner started notes config agent command argv environment workdir diff stat"
).split()


# --- fixtures ---------------------------------------------------------------------------


def file_layout(count: int) -> list[str]:
    """``count`` relative paths in nested folders: src/<pkg>/<mod>/file_<n>.txt, ~10 files a folder."""
    per_leaf = 10
    leaves = max(1, count // per_leaf)
    modules = max(1, round(leaves**0.5))
    paths = []
    for n in range(count):
        leaf = n % leaves
        paths.append(f"src/pkg{leaf // modules:03d}/mod{leaf % modules:03d}/file_{n:05d}.txt")
    return paths


def file_text(rng: random.Random) -> str:
    """1-4 KB of text in lines of words."""
    size = rng.randint(1024, 4096)
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(4, 14)))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"


def git_run(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmark aborted: git {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def make_repo(folder: Path, count: int, items: int, pool: int) -> str:
    """A committed repo of ``count`` text files plus QUEUE.md (``items`` rows) and orch.yaml; returns the
    path of the file the worker changes."""
    rng = random.Random(4 + count)
    paths = file_layout(count)
    for rel in paths:
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file_text(rng), encoding="utf-8")
    changed = paths[len(paths) // 2]
    rows = "".join(f"| B-{n:04d} | PENDING | bench task {n} | | | 0 | | | | |\n" for n in range(1, items + 1))
    (folder / "QUEUE.md").write_text("# Queue\n\n" + HEADER + rows, encoding="utf-8")
    yaml_lines = [
        "agents:",
        "  w:",
        "    kind: command",
        f"    argv: [sh, -c, 'echo \"$ORCH_ID step $ORCH_STEP\" >> {changed}']",
        "  s:",
        "    kind: command",
        "    argv: ['true']",
        "worker: w",
        "supervisor: s",
        "max_steps: 1",
    ]
    if pool:
        yaml_lines.append(f"worktree_pool: {pool}")
    (folder / "orch.yaml").write_text("\n".join(yaml_lines) + "\n", encoding="utf-8")
    (folder / ".gitignore").write_text(".orch/\nQUEUE.md.lock\n*.db\n*.db-*\n", encoding="utf-8")
    git_run(folder, "init", "-q", "-b", "main")
    git_run(folder, "config", "user.email", "bench@example.invalid")
    git_run(folder, "config", "user.name", "orch bench")
    git_run(folder, "add", "--all")
    git_run(folder, "commit", "-q", "-m", "init")
    return changed


def make_runner(folder: Path, store_kind: str) -> Runner:
    cfg = load_config(folder)
    if store_kind == "sqlite":
        store = SqliteStore(folder / "queue.db", policy=cfg.retry)
        if not store.items():
            store.upsert(MarkdownStore(folder / "QUEUE.md").items(), actor="bench")
    else:
        store = MarkdownStore(folder / "QUEUE.md", policy=cfg.retry)
    return Runner(store, cfg, folder, RunOptions(grace=1.0), lambda line: None)


# --- the pool: is it working, and the proposed fix if not ---------------------------------


def run_one(runner: Runner):
    """Tick once and wait for the attempt to end; its Outcome."""
    claim = runner.tick()
    if claim is None:
        sys.exit("benchmark aborted: nothing to claim (queue too short?)")
    entry = runner.active.get(claim.item.id)
    if entry is not None:
        entry[0].join()
    outcome = runner.outcomes[-1]
    if outcome.item_id != claim.item.id:
        sys.exit(f"benchmark aborted: no outcome for {claim.item.id}")
    return outcome


def pool_check(root: Path, store_kind: str) -> str | None:
    """None if a runner with ``worktree_pool`` recycles a finished worktree; else what went wrong.

    Two attempts on a small repo: the first ends and returns its worktree to
    the pool, the second must take it (one linked worktree left, in the pool).
    """
    folder = root / "pool-check"
    folder.mkdir()
    make_repo(folder, 10, 4, pool=POOL_SIZE)
    runner = make_runner(folder, store_kind)
    for n in (1, 2):
        outcome = run_one(runner)
        if outcome.state != "SUCCESS":
            data = json.loads((folder / ".orch" / "runs" / outcome.item_id / str(outcome.attempt)
                               / "job_manifest.json").read_text(encoding="utf-8"))  # fmt: skip
            message = " ".join(str(data["history"][-1].get("message", "")).split())
            return f"attempt {n} ended {outcome.state} ({outcome.note}): {message[:400]}"
    listing = git_run(folder, "worktree", "list", "--porcelain").split("\n\n")
    linked = [block for block in listing[1:] if block.strip()]
    pool = (folder / ".orch" / "pool").resolve()
    if len(linked) != 1 or str(pool) not in linked[0] or "prunable" in linked[0]:
        return "the second attempt did not recycle the first one's worktree: " + " | ".join(
            " ".join(block.split()) for block in linked)  # fmt: skip
    return None


# --- instrumentation (bench side only: nothing in orchestrator/ changes) -----------------


class Probe:
    """Clock readings taken inside one attempt, and the git commands run in the timed window."""

    def __init__(self) -> None:
        self.reset()
        self.phase: str | None = None  # "start" (tick to worker Popen) or "step" (inside _commit)

    def reset(self) -> None:
        self.marks: dict[str, float] = {}
        self.popens: list[float] = []
        self.git: dict[str, list[tuple[str, float]]] = {"start": [], "step": []}
        self.recycled: bool | None = None
        self.commit_s: list[float] = []
        self.commit_all_s: list[float] = []
        self.diff_stat_s: list[float] = []

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.perf_counter())


PROBE = Probe()
_real_popen = subprocess.Popen


def _marking_popen(*args, **kwargs):
    PROBE.popens.append(time.perf_counter())
    if PROBE.phase == "start":
        PROBE.phase = None
    return _real_popen(*args, **kwargs)


def instrument() -> None:
    """Wrap the agent's Popen, the claim, worktree creation, _commit and git commands."""
    shim = types.ModuleType("subprocess_shim")
    shim.__dict__.update(vars(subprocess))
    shim.Popen = _marking_popen
    command_module.subprocess = shim

    real_execute = git.cmd.Git.execute
    real_git = worktree_module.git  # the evidence path calls git directly, not through GitPython

    def timed(command, call):
        phase = PROBE.phase
        if phase is None:
            return call()
        start = time.perf_counter()
        try:
            return call()
        finally:
            words = [str(word) for word in command if not str(word).startswith("-c")]
            name = next((word for word in words if not word.startswith("-") and "=" not in word), "?")
            if name == "worktree" and len(words) > 1:
                name = f"worktree {words[words.index('worktree') + 1]}"
            PROBE.git[phase].append((name, time.perf_counter() - start))

    def execute(self, command, *args, **kwargs):
        return timed(command[1:], lambda: real_execute(self, command, *args, **kwargs))

    def direct_git(cwd, *args):
        return timed(args, lambda: real_git(cwd, *args))

    git.cmd.Git.execute = execute
    worktree_module.git = direct_git

    real_create = Worktrees.create
    real_from_pool = Worktrees._from_pool

    def create(self, *args, **kwargs):
        PROBE.mark("create_start")
        try:
            return real_create(self, *args, **kwargs)
        finally:
            PROBE.mark("create_end")

    def from_pool(self, *args, **kwargs):
        result = real_from_pool(self, *args, **kwargs)
        PROBE.recycled = result is not None
        return result

    Worktrees.create = create
    Worktrees._from_pool = from_pool

    real_commit = Attempt._commit
    real_diff_stat = Attempt._diff_stat
    real_commit_all = runner_module.commit_all

    def _commit(self, *args, **kwargs):
        PROBE.phase = "step"
        start = time.perf_counter()
        try:
            return real_commit(self, *args, **kwargs)
        finally:
            PROBE.commit_s.append(time.perf_counter() - start)
            PROBE.phase = None

    def _diff_stat(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return real_diff_stat(self, *args, **kwargs)
        finally:
            PROBE.diff_stat_s.append(time.perf_counter() - start)

    def commit_all(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real_commit_all(*args, **kwargs)
        finally:
            PROBE.commit_all_s.append(time.perf_counter() - start)

    Attempt._commit = _commit
    Attempt._diff_stat = _diff_stat
    runner_module.commit_all = commit_all


def claim_timer(runner: Runner) -> None:
    real_claim = runner.store.claim

    def claim(*args, **kwargs):
        result = real_claim(*args, **kwargs)
        PROBE.mark("claimed")
        return result

    runner.store.claim = claim


# --- one run of each measurement ------------------------------------------------------


def baseline(repo: Path, n: int, changed: str) -> tuple[float, float]:
    """Baseline A (worktree add) and B (commit of one changed file); the worktree is removed afterwards."""
    path = repo / ".orch" / "bench" / f"wt-{n}"
    path.parent.mkdir(parents=True, exist_ok=True)
    branch = f"bench/{n}"
    argv = ["git", "-C", str(repo), "worktree", "add", "--quiet", "-b", branch, str(path), "HEAD"]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    add = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"benchmark aborted: {' '.join(argv)}: {done.stderr.strip()}")
    with (path / changed).open("a", encoding="utf-8") as stream:
        stream.write(f"baseline change {n}\n")
    argv = ["git", "-C", str(path), "commit", "--no-verify", "-q", "-m", f"bench {n}", "--", changed]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    commit = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"benchmark aborted: {' '.join(argv)}: {done.stderr.strip()}")
    git_run(repo, "worktree", "remove", "--force", str(path))
    git_run(repo, "branch", "-D", "-q", branch)
    return add, commit


def orch_attempt(runner: Runner, pooled: bool) -> dict:
    """One attempt from just before tick() to its end; the timings the probe took."""
    PROBE.reset()
    PROBE.phase = "start"
    start = time.perf_counter()
    outcome = run_one(runner)
    PROBE.phase = None
    if outcome.state != "SUCCESS":
        sys.exit(f"benchmark aborted: attempt {outcome.attempt} of {outcome.item_id} ended {outcome.state}: "
                 f"{outcome.note}")  # fmt: skip
    if not PROBE.popens:
        sys.exit("benchmark aborted: the worker agent was never started")
    marks = PROBE.marks
    result = {
        "start": PROBE.popens[0] - start,
        "claim": marks["claimed"] - start,
        "to_create": marks["create_start"] - marks["claimed"],
        "create": marks["create_end"] - marks["create_start"],
        "after_create": PROBE.popens[0] - marks["create_end"],
        "step": PROBE.commit_s[0],
        "commit_all": PROBE.commit_all_s[0],
        "diff_stat": PROBE.diff_stat_s[0],
        "git start": PROBE.git["start"],
        "git step": PROBE.git["step"],
        "recycled": PROBE.recycled,
        "worktree": runner.root / ".orch" / "worktrees" / outcome.item_id / str(outcome.attempt),
        "branch": outcome.branch,
    }
    if not pooled:  # untimed: keep the repository in the same state for every run, as the baseline does
        git_run(runner.root, "worktree", "remove", "--force", str(result["worktree"]))
        git_run(runner.root, "branch", "-D", "-q", result["branch"])
    return result


def bench_size(count: int, runs: int, root: Path, store_kind: str) -> dict:
    items = WARMUPS + runs + 2
    plain_repo = root / f"r{count}"
    pool_repo = root / f"r{count}-pool"
    started = time.perf_counter()
    plain_repo.mkdir()
    changed = make_repo(plain_repo, count, items, pool=0)
    pool_repo.mkdir()
    make_repo(pool_repo, count, items, pool=POOL_SIZE)
    made = time.perf_counter() - started
    plain = make_runner(plain_repo, store_kind)
    pooled = make_runner(pool_repo, store_kind)
    claim_timer(plain)
    claim_timer(pooled)

    samples: dict[str, list] = defaultdict(list)
    for n in range(WARMUPS + runs):
        got: dict = {}
        jobs = [
            ("base", baseline, (plain_repo, n, changed)),
            ("one", orch_attempt, (plain, False)),
            ("two", orch_attempt, (pooled, True)),
        ]
        for name, job, job_args in jobs[n % 3 :] + jobs[: n % 3]:  # each takes each place in turn
            os.sync()  # untimed: the last run's writes and deletions are on disk, not under the next one
            got[name] = job(*job_args)
        (add, commit), one, two = got["base"], got["one"], got["two"]
        if n < WARMUPS:
            continue
        if two["recycled"] is not True:
            spares = sorted(path.name for path in (pool_repo / ".orch" / "pool").iterdir())
            sys.exit(f"POOL BROKEN: a timed attempt on the {count}-file repo did not get a pooled worktree "
                     f"(_from_pool returned None; pool: {spares})")  # fmt: skip
        samples["add"].append(add)
        samples["commit"].append(commit)
        for key in ("start", "claim", "to_create", "create", "after_create", "step", "commit_all", "diff_stat"):
            samples[f"orch {key}"].append(one[key])
            samples[f"pool {key}"].append(two[key])
        for key in ("git start", "git step"):
            samples[f"orch {key}"].append(one[key])
            samples[f"pool {key}"].append(two[key])
    samples["made"] = [made]
    return samples


# --- report ----------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def med(values: list[float]) -> float:
    return statistics.median(values)


def git_breakdown(runs: list[list[tuple[str, float]]]) -> list[tuple[str, int, float]]:
    """Per git command (in order of first use): how many per run, and the median of its total per run."""
    names: list[str] = []
    for run in runs:
        names += [name for name, _ in run if name not in names]
    rows = []
    for name in names:
        totals = [sum(t for n, t in run if n == name) for run in runs]
        count = statistics.median([sum(1 for n, _ in run if n == name) for run in runs])
        rows.append((name, round(count), med(totals)))
    return rows


def git_line(runs: list[list[tuple[str, float]]]) -> str:
    return ", ".join(f"{name} x{n} {total * 1000:.1f}" for name, n, total in git_breakdown(runs))


def medians(samples: dict) -> dict[str, float]:
    return {key: med(values) for key, values in samples.items() if "git" not in key}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="timed runs of each measurement per size (default 11)")
    parser.add_argument("--quick", action="store_true", help="5 runs (the minimum for a median worth quoting)")
    parser.add_argument("--store", choices=("markdown", "sqlite"), default="markdown",
                        help="the queue store the runners claim from (default markdown, as orch run)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the generated repositories (prints where)")
    args = parser.parse_args()
    runs = args.runs if args.runs is not None else (5 if args.quick else 11)
    if runs < 1:
        parser.error("--runs must be at least 1")

    version = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"python {platform.python_version()} ({sys.executable}), {version}")
    print(f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, runs={runs}, store={args.store}")

    results: dict[int, dict] = {}
    temp = tempfile.mkdtemp(prefix="orch-bench-wt-")
    try:
        broken = pool_check(Path(temp), args.store)
        if broken:
            sys.exit(f"POOL BROKEN: worktree_pool: {POOL_SIZE} in orch.yaml: {broken}")
        print("pool check: a finished worktree was recycled")
        instrument()
        for count in SIZES:
            results[count] = bench_size(count, runs, Path(temp), args.store)
    finally:
        if args.keep:
            print(f"repositories kept in {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)

    print()
    header = f"{'files':>6} | {'measurement':34} | {'median ms':>9} | {'min ms':>8}"
    print(header)
    print("-" * len(header))
    shown = (
        ("add", "A: git worktree add"),
        ("commit", "B: git commit -- <file>"),
        ("orch start", "orch claim-to-agent-started"),
        ("orch step", "orch step: Attempt._commit"),
        ("pool start", "orch claim-to-agent-started, pool"),
        ("pool step", "orch step: Attempt._commit, pool"),
    )
    for count in SIZES:
        for key, label in shown:
            values = results[count][key]
            print(f"{count:>6} | {label:34} | {ms(med(values)):>9} | {ms(min(values)):>8}")

    print()
    print(f"{'files':>6} | start/add | step/commit | pool start/add   (ratios of medians)")
    for count in SIZES:
        r = medians(results[count])
        print(f"{count:>6} | {r['orch start'] / r['add']:9.2f} | {r['orch step'] / r['commit']:11.2f} | "
              f"{r['pool start'] / r['add']:14.2f}")  # fmt: skip
    context = []
    for count in SIZES:
        both = [a + b for a, b in zip(results[count]["orch step"], results[count]["orch diff_stat"], strict=True)]
        context.append(f"{count:,} files {med(both) / med(results[count]['commit']):.2f}")
    print("context, (_diff_stat + _commit) / commit: " + ", ".join(context))

    print()
    print("targets:")
    verdicts = []
    for count in SIZES:
        r = medians(results[count])
        verdicts.append((f"orch start <= {START_TARGET:g}x add, {count:,} files", r["orch start"] / r["add"],
                         START_TARGET))  # fmt: skip
        verdicts.append((f"orch step <= {STEP_TARGET:g}x commit, {count:,} files", r["orch step"] / r["commit"],
                         STEP_TARGET))  # fmt: skip
    r = medians(results[POOL_TARGET_SIZE])
    verdicts.append((f"orch pool start <= {POOL_TARGET:g}x add, {POOL_TARGET_SIZE:,} files",
                     r["pool start"] / r["add"], POOL_TARGET))  # fmt: skip
    for label, ratio, target in verdicts:
        print(f"  {label:42} {ratio:5.2f}x  {'MET' if ratio <= target else 'NOT MET'}")

    print()
    print("where the time goes (medians, ms):")
    for count in SIZES:
        r = {key: value * 1000 for key, value in medians(results[count]).items()}
        for kind, label in (("orch", "no pool"), ("pool", "pool")):
            print(f"  {count:,} files, {label}:")
            print(f"    start {r[f'{kind} start']:.1f} = claim {r[f'{kind} claim']:.1f}"
                  f" + attempt/thread {r[f'{kind} to_create']:.1f} + Worktrees.create {r[f'{kind} create']:.1f}"
                  f" + manifest/prompt/agent set-up {r[f'{kind} after_create']:.1f}")  # fmt: skip
            print("      git: " + git_line(results[count][f"{kind} git start"]))
            print(f"    step {r[f'{kind} step']:.1f}, of which commit_all {r[f'{kind} commit_all']:.1f}"
                  f" (and before the supervisor, _diff_stat {r[f'{kind} diff_stat']:.1f})")  # fmt: skip
            print("      git: " + git_line(results[count][f"{kind} git step"]))
        print(f"  ({count:,} files: the two repositories were made in {results[count]['made'][0]:.1f} s)")


if __name__ == "__main__":
    main()
