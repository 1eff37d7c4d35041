"""Work orders (seed 004): plan, dispatch, run --job, execution.log, results.jsonl, job status, cleanup, archive.

Real git repositories in tmp_path; ``orch run --job`` runs as a real process
(and in process where only its result matters), its agents are real
processes. Nothing sleeps to let things settle: the runs drain and return.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator import audit, workorder
from orchestrator.cli import cli
from orchestrator.conductor import Conductor
from orchestrator.config import load_config
from orchestrator.model import Status
from orchestrator.runner import Runner, RunOptions
from orchestrator.store import open_store
from orchestrator.store.markdown import MarkdownStore
from orchestrator.store.sqlite import SqliteStore
from orchestrator.workorder import Package
from tests.conftest import ROOT, run_orch
from tests.runs import PY, config, git

JOB_HEADER = (
    "| id | status | title | owner | started | attempts | max_attempts | agent | job | depends_on | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| \[[^\]]+\]\s* \| [A-Z_]+\s* \| .*$")
PARTS = re.compile(r"^\S+ \S+ \| \[(?P<actor>[^\]]+)\]\s* \| (?P<event>[A-Z_]+)\s* \| (?P<message>.*)$")
WRITE_FILE = {"kind": "scripted", "steps": [{"write": {"out.txt": "done\n"}, "say": "wrote out.txt"}]}
SEED_ORDER_KEYS = ["job_id", "name", "created", "status", "manifest", "routing_strategy", "backlog_key", "output",
                   "execution"]  # fmt: skip
SEED_EXECUTION_KEYS = ["started_at", "completed_at", "tasks_dispatched", "tasks_completed", "tasks_failed"]
RESULT_FIELDS = {"id", "status", "attempts", "duration_s", "pool", "branch", "final_commit", "usage", "cost_usd"}


def job_queue(folder: Path, rows: str = "") -> Path:
    """A QUEUE.md whose table has the ``job`` column (and attempts + max_attempts, so retries are budgeted)."""
    folder.mkdir(parents=True, exist_ok=True)
    queue = folder / "QUEUE.md"
    queue.write_text("# Queue\n\n" + JOB_HEADER + rows)
    return queue


def job_repo(folder: Path, settings: dict) -> Path:
    """A committed git repo with that queue and an orch.yaml."""
    queue = job_queue(folder)
    (folder / "orch.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (folder / ".gitignore").write_text(".orch/\nQUEUE.md.lock\n*.db\n*.db-*\n")
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example.invalid"],
                 ["config", "user.name", "orch tests"], ["add", "--all"], ["commit", "-q", "-m", "init"]):  # fmt: skip
        subprocess.run(["git", "-C", str(folder), *args], check=True)
    return queue


def orch(queue: Path, *args: str, db: Path | None = None):
    """``orch --queue QUEUE ...`` (or ``--db``) in process, tracebacks surfacing."""
    where = ["--db", str(db)] if db else ["--queue", str(queue)]
    return CliRunner().invoke(cli, [*where, *args], catch_exceptions=False)


def plan(queue: Path, *args: str, db: Path | None = None) -> Package:
    result = orch(queue, "plan", *args, db=db)
    assert result.exit_code == 0, result.stderr
    folder = re.match(r"Created job package: (.+)/\n", result.stdout).group(1)
    return Package(Path(folder))


def pooled(worker: dict, **settings) -> dict:
    """An orch.yaml: worker ``w``, pools local (2) and cloud (1), hybrid, a fast retry."""
    return config(
        worker, pools={"local": {"agent": "w", "capacity": 2}, "cloud": {"agent": "w", "capacity": 1,
                       "requests_per_minute": 1000, "tokens_per_minute": 1_000_000}},
        strategy="hybrid_supervisor", retry={"max_attempts": 2, "backoff_base": 0.01}, **settings,
    )  # fmt: skip


def run_in_process(root: Path, job: str, workers: int = 1) -> list:
    """One worker by default: these tests need no concurrency, so their runs stay in one order."""
    cfg = load_config(root)
    store = open_store(queue=root / "QUEUE.md", policy=cfg.retry, lease=cfg.lease)
    conductor = Conductor(store, cfg, Package.of(root, job))
    runner = Runner(store, cfg, root, RunOptions(workers=workers, job=job, grace=1.0), lambda line: None, conductor)
    conductor.attach(runner)
    return runner.run()


def log_events(package: Package) -> list[tuple[str, str, str]]:
    lines = package.log.read_text(encoding="utf-8").splitlines()
    assert lines and all(LINE.match(line) for line in lines), [line for line in lines if not LINE.match(line)][:3]
    return [(m["actor"], m["event"], m["message"]) for m in map(PARTS.match, lines)]


# --- plan -----------------------------------------------------------------------------------


def test_plan_count_writes_a_package_and_prints_the_seed_summary(tmp_path):
    queue = job_queue(tmp_path)
    result = orch(queue, "plan", "--name", "Demo - 5 tasks", "--count", "5")
    assert result.exit_code == 0 and result.stderr == ""
    job_id = re.search(r"jobs/(demo_5_tasks_\d{8}_\d{6})/", result.stdout).group(1)
    folder = tmp_path / "jobs" / job_id
    assert result.stdout == (
        f"Created job package: {folder}/\n  - work_order.yaml\n  - manifest.jsonl (5 tasks)\n"
        f"  Strategy: hybrid_supervisor\n  Backlog: job:{job_id}:backlog\n"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.jsonl", "work_order.yaml"]
    order = yaml.safe_load((folder / "work_order.yaml").read_text())
    assert list(order) == SEED_ORDER_KEYS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", order.pop("created"))
    assert {k: v for k, v in order.items() if k != "execution"} == {
        "job_id": job_id, "name": "Demo - 5 tasks", "status": "pending",
        "manifest": {"path": "manifest.jsonl", "count": 5}, "routing_strategy": "hybrid_supervisor",
        "backlog_key": f"job:{job_id}:backlog",
        "output": {"results_path": "results.jsonl", "logs_path": "execution.log"},
    }  # fmt: skip
    execution = order["execution"]
    assert [execution[k] for k in SEED_EXECUTION_KEYS] == [None, None, 0, 0, 0]
    tasks = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert [t["id"] for t in tasks] == ["t001", "t002", "t003", "t004", "t005"]
    assert all(t["prompt"].strip() and t["title"] for t in tasks)


def test_the_work_order_execution_block_has_exactly_the_seed_fields(tmp_path):
    package = plan(job_queue(tmp_path), "--name", "exact", "--count", "1")
    assert list(package.read_order()["execution"]) == SEED_EXECUTION_KEYS


@pytest.mark.parametrize("form", ["jsonl", "yaml-list", "yaml-mapping"])
def test_plan_reads_tasks_from_jsonl_or_yaml(tmp_path, form):
    tasks = [
        {"id": "docs", "title": "Docs", "prompt": "Write the docs.\nTwo lines of them."},
        {"prompt": "A task without an id"},
        {"id": "lint", "prompt": "Fix lint", "agent": "w", "depends_on": ["docs"]},
    ]
    if form == "jsonl":
        path = tmp_path / "tasks.jsonl"
        path.write_text(json.dumps(tasks[0]) + "\n\n" + "".join(json.dumps(t) + "\n" for t in tasks[1:]))
    else:
        path = tmp_path / "tasks.yaml"
        path.write_text(yaml.safe_dump(tasks if form == "yaml-list" else {"tasks": tasks}))
    package = plan(job_queue(tmp_path), "--name", "From file", "--tasks", str(path), "--strategy", "force_metal")
    order = package.read_order()
    assert (order["routing_strategy"], order["manifest"]["count"]) == ("force_metal", 3)
    assert package.tasks() == [tasks[0], {"prompt": "A task without an id", "id": "t002"}, tasks[2]]


def test_a_jsonl_task_without_a_prompt_is_bad_input_naming_its_line(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "fine"}\n\n{"id": "b", "prompt": "fine"}\n{"id": "c", "title": "no prompt"}\n'
    )
    result = orch(job_queue(tmp_path), "plan", "--name", "bad", "--tasks", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"error: {path}:4: each task needs a non-empty 'prompt'\n"
    assert not (tmp_path / "jobs").exists()


def test_a_yaml_task_without_a_prompt_is_bad_input_naming_the_task(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text("tasks:\n  - prompt: fine\n  - id: two\n    prompt: '  '\n")
    result = orch(job_queue(tmp_path), "plan", "--name", "bad", "--tasks", str(path))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"error: {path}: task 2: each task needs a non-empty 'prompt'\n"


def test_a_line_that_is_not_json_is_bad_input_naming_its_line(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": oops}\n')
    result = orch(job_queue(tmp_path), "plan", "--name", "bad", "--tasks", str(path))
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {path}:2: not JSON")


def test_plan_needs_exactly_one_source_of_tasks(tmp_path):
    result = orch(job_queue(tmp_path), "plan", "--name", "x")
    assert result.exit_code == 2 and "give exactly one of --tasks FILE or --count N" in result.stderr


def test_the_full_prompt_reaches_a_task_whose_id_holds_dot_r(tmp_path):
    from orchestrator.workorder import task_prompt

    path = tmp_path / "tasks.jsonl"
    path.write_text('{"id": "fix.readme", "prompt": "Fix the README.\\nAll of it."}\n')
    queue = job_queue(tmp_path)
    package = plan(queue, "--name", "dots", "--tasks", str(path))
    orch(queue, "dispatch", str(package.order))
    [item] = MarkdownStore(queue).items()
    assert task_prompt(tmp_path, item) == "Fix the README.\nAll of it."


def test_task_prompts_follow_an_edited_manifest(tmp_path):
    from orchestrator.workorder import task_prompt

    queue = job_queue(tmp_path)
    package = plan(queue, "--name", "edited", "--count", "2")
    orch(queue, "dispatch", str(package.order))
    item = MarkdownStore(queue).items()[1]
    assert task_prompt(tmp_path, item) == "Write notes/task-2.md saying which task this is (2 of 2)."
    tasks = package.tasks()
    tasks[1]["prompt"] = tasks[1]["prompt"].replace("Write", "Edit ")  # same length: content, not size, counts
    package.manifest.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    assert task_prompt(tmp_path, item) == "Edit  notes/task-2.md saying which task this is (2 of 2)."


# --- dispatch --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["markdown", "sqlite"])
def test_dispatch_adds_one_row_per_task_and_twice_adds_nothing(tmp_path, monkeypatch, backend):
    monkeypatch.chdir(tmp_path)
    queue = job_queue(tmp_path)
    db = tmp_path / "q.db" if backend == "sqlite" else None
    package = plan(queue, "--name", "Demo", "--count", "5", db=db)
    job = package.job_id
    first = orch(queue, "dispatch", str(package.order), db=db)
    assert first.exit_code == 0 and first.stderr == ""
    assert first.stdout == (
        f"Dispatched 5 tasks to job:{job}:backlog\nJob {job} ready for execution\nNext step: orch run --job {job}\n"
    )
    store = SqliteStore(db) if db else MarkdownStore(queue)
    items = store.items()
    assert [(i.id, i.status, i.job, i.title) for i in items] == [
        (f"{job}-t00{k}", Status.PENDING, job, f"Demo task {k} of 5") for k in range(1, 6)
    ]
    before = queue.read_bytes()
    again = orch(queue, "dispatch", str(package.folder), db=db)  # the folder works as well as the file
    assert again.exit_code == 0
    assert again.stdout.splitlines()[:2] == [f"Dispatched 0 tasks to job:{job}:backlog",
                                             "(5 already in the queue, not added again)"]  # fmt: skip
    assert len(store.items()) == 5 and queue.read_bytes() == before
    execution = package.read_order()["execution"]
    assert (package.read_order()["status"], execution["tasks_dispatched"], execution["tasks_completed"]) == (
        "pending", 5, 0)  # fmt: skip


def test_dispatch_replay_adds_a_fresh_set_each_time(tmp_path):
    queue = job_queue(tmp_path)
    package = plan(queue, "--name", "Again", "--count", "3")
    job = package.job_id
    orch(queue, "dispatch", str(package.order))
    replay = orch(queue, "dispatch", "--replay", "--json", str(package.order))
    assert replay.exit_code == 0 and json.loads(replay.stdout) == {"job_id": job, "added": 3, "already_dispatched": 0}
    assert json.loads(orch(queue, "dispatch", "--json", str(package.order)).stdout)["added"] == 0
    orch(queue, "dispatch", "--replay", str(package.order))
    ids = [item.id for item in MarkdownStore(queue).items()]
    assert ids == [f"{job}-t00{k}{run}" for run in ("", ".r2", ".r3") for k in (1, 2, 3)]


def test_a_replayed_finished_job_is_pending_until_it_runs(tmp_path):
    queue = job_queue(tmp_path)
    package = plan(queue, "--name", "Again", "--count", "2")
    orch(queue, "dispatch", str(package.order))
    store = MarkdownStore(queue)
    while (claim := store.claim("w1", lease=60, job=package.job_id)) is not None:
        store.complete(claim.item.id, "w1", attempt=claim.attempt)
    workorder.refresh_counters(store, workorder.Package.of(tmp_path, package.job_id))  # what the runner does
    assert package.read_order()["status"] == "completed"
    orch(queue, "dispatch", "--replay", str(package.order))
    order = package.read_order()
    assert (order["status"], order["execution"]["completed_at"]) == ("pending", None)


def test_a_recount_that_changes_nothing_leaves_the_work_order_file_alone(tmp_path):
    queue = job_queue(tmp_path)
    package = plan(queue, "--name", "still", "--count", "2")
    orch(queue, "dispatch", str(package.order))
    before = (package.order.stat().st_ino, package.order.read_bytes())
    order = workorder.refresh_counters(MarkdownStore(queue), package)
    assert order["execution"]["tasks_dispatched"] == 2
    assert (package.order.stat().st_ino, package.order.read_bytes()) == before  # not even replaced by a copy


def test_dispatch_into_a_queue_without_a_job_column_is_refused(tmp_path):
    queue = tmp_path / "QUEUE.md"
    queue.write_text("| id | status | title | notes |\n| --- | --- | --- | --- |\n")
    package = plan(queue, "--name", "x", "--count", "1")
    result = orch(queue, "dispatch", str(package.order))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {queue}:1: no column named 'job'")


def test_job_status_prints_the_seed_block_while_running(tmp_path):
    queue = job_queue(tmp_path)
    package = plan(queue, "--name", "Demo - 5 tasks", "--count", "5")
    orch(queue, "dispatch", str(package.order))
    store = MarkdownStore(queue)
    for _ in range(3):
        claim = store.claim("w1", lease=60, job=package.job_id)
        store.complete(claim.item.id, "w1", attempt=claim.attempt)
    store.claim("w1", lease=60, job=package.job_id)
    result = orch(queue, "job", "status", package.job_id)
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == seed_block(package, "Demo - 5 tasks", "RUNNING", 5, 1, 3, 0, "60.0")


def test_job_status_of_an_unknown_job_is_refused_naming_it(tmp_path):
    result = orch(job_queue(tmp_path), "job", "status", "nope")
    assert result.exit_code == 1 and result.stdout == ""
    order = tmp_path / "jobs" / "nope" / "work_order.yaml"
    assert result.stderr == f"error: no work order 'nope': {order} does not exist (orch plan makes one)\n"


def seed_block(package: Package, name: str, status: str, dispatched: int, backlog: int, completed: int,
               failed: int, progress: str) -> str:  # fmt: skip
    rule, thin, f = "=" * 60, "-" * 60, package.folder
    return f"""{rule}
JOB STATUS: {package.job_id}
{rule}
Name:      {name}
Status:    {status}
Strategy:  hybrid_supervisor

{thin}
PROGRESS
{thin}
Dispatched:  {dispatched}
Backlog:     {backlog}
Completed:   {completed}
Failed:      {failed}
Progress:    {progress}%

{thin}
FILES
{thin}
Manifest:    {f}/manifest.jsonl
Results:     {f}/results.jsonl
Exec Log:    {f}/execution.log
{rule}
"""


# --- a whole work order, end to end --------------------------------------------------------

# Writes a file named after its item; the task t007 fails (exit 3) on its first run only.
FLAKY_WORKER = """\
import os, pathlib, sys
sys.stdin.read()
item, attempt = os.environ["ORCH_ID"], os.environ["ORCH_ATTEMPT"]
pathlib.Path("out-" + item + ".txt").write_text("attempt " + attempt + "\\n")
marker = pathlib.Path(sys.argv[1]) / (item + ".failed")
if item.endswith("-t007") and not marker.exists():
    marker.write_text(attempt)
    print("flaky: failing once")
    sys.exit(3)
print("wrote out-" + item + ".txt")
"""


def attempts_of(moves: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """A task's moves in the log, split at each PULLED: one list per attempt."""
    groups: list[list[tuple[str, str]]] = []
    for event, message in moves:
        if event == "PULLED":
            groups.append([])
        groups[-1].append((event, message))
    return groups


def test_a_20_task_work_order_runs_end_to_end_with_a_full_audit_trail(tmp_path, tmp_path_factory):
    markers = tmp_path_factory.mktemp("markers")
    settings = pooled({"kind": "command", "argv": [PY, "-c", FLAKY_WORKER, str(markers)]})
    queue = job_repo(tmp_path, settings)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"prompt": f"Task {k}: write your file.\nPrompt line two of {k}."}) + "\n"
                             for k in range(1, 21)))  # fmt: skip
    package = plan(queue, "--name", "Twenty tasks", "--tasks", str(tasks))
    job = package.job_id
    assert orch(queue, "dispatch", str(package.order)).exit_code == 0

    done = run_orch("--queue", str(queue), "run", "--job", job, "--workers", "4", cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "summary PENDING=0 IN_PROGRESS=0 BLOCKED=0 FAILED=0 DONE=20" in done.stdout

    events = log_events(package)
    assert events[0] == ("SYSTEM", audit.JOB_STARTED, f"Job {job} started. 20 tasks in backlog: job:{job}:backlog")
    assert events[1][:2] == ("SYSTEM", audit.DECISION)
    assert events[1][2].startswith("Conductor started with strategy: hybrid_supervisor; pools: local")
    assert events[-1][:2] == ("SYSTEM", audit.JOB_COMPLETED)
    assert events[-1][2].startswith(f"Job {job} finished. Success: 20/20, Failed: 0")
    assert all(e[2].startswith("hybrid: wait (") for e in events[2:-1] if e[0] == "SYSTEM")
    per_task: dict[str, list[tuple[str, str]]] = {}
    for actor, event, message in events[2:-1]:
        if actor != "SYSTEM":
            per_task.setdefault(actor, []).append((event, message))
    assert sorted(per_task) == [f"t{k:03d}" for k in range(1, 21)]
    attempts_used = {}
    for task, moves in per_task.items():
        groups = attempts_of(moves)
        for attempt, group in enumerate(groups, 1):
            end = ["STEP", "COMPLETED"] if attempt == len(groups) else ["RETRIED"]
            assert [event for event, _ in group] == ["PULLED", "ROUTED", "STARTED", *end], (task, groups)
            for event, message in group:
                pattern = {
                    "PULLED": rf"Pulled from job:{job}:backlog \(attempt {attempt}\)",
                    "ROUTED": r"Routed to pool (local|cloud) \(agent w\) \(Hybrid: (local|cloud) pool .*\)",
                    "STARTED": rf"attempt {attempt} on branch orch/{job}-{task}/{attempt}",
                    "STEP": rf"attempt {attempt} step 1: SUCCESS.*",
                    "COMPLETED": r"Finished in \d+\.\ds",
                    "RETRIED": rf"error:w exited 3: flaky: failing once; retry {attempt + 1} queued",
                }[event]
                assert re.fullmatch(pattern, message), (task, event, message)
        attempts_used[task] = len(groups)
    assert attempts_used == {f"t{k:03d}": 2 if k == 7 else 1 for k in range(1, 21)}
    assert per_task["t001"][1][1].endswith("(Hybrid: local pool local 0/2)")  # the first claim fills local

    results = [json.loads(line) for line in package.results.read_text().splitlines()]
    assert sorted(r["id"] for r in results) == [f"{job}-t{k:03d}" for k in range(1, 21)]
    heads = dict(line.split() for line in git(tmp_path, "for-each-ref", "--format=%(refname:short) %(objectname)",
                                                  "refs/heads/orch").splitlines())  # fmt: skip
    for result in results:
        assert RESULT_FIELDS <= set(result), result
        attempts = attempts_used[result["id"].rsplit("-", 1)[1]]
        assert (result["status"], result["attempts"], result["pool"] in ("local", "cloud")) == ("DONE", attempts, True)
        assert result["branch"] == f"orch/{result['id']}/{attempts}"
        assert result["final_commit"] == heads[result["branch"]]
        assert result["duration_s"] > 0 and result["usage"] == {} and result["cost_usd"] == 0
    last = attempts_used["t007"]
    assert git(tmp_path, "show", f"orch/{job}-t007/{last}:out-{job}-t007.txt") == f"attempt {last}\n"
    prompt = (tmp_path / ".orch/runs" / f"{job}-t005" / "1" / "step-01" / "worker.prompt.md").read_text()
    assert f"# Task {job}-t005: Task 5: write your file.\n" in prompt and "Prompt line two of 5." in prompt

    items = [item for item in MarkdownStore(queue).items() if item.job == job]
    order = package.read_order()
    execution = order["execution"]
    assert order["status"] == "completed" and execution["started_at"] and execution["completed_at"]
    assert (execution["tasks_dispatched"], execution["tasks_completed"], execution["tasks_failed"]) == (
        len(items), sum(i.status is Status.DONE for i in items), sum(i.status is Status.FAILED for i in items),
    ) == (20, 20, 0)  # fmt: skip

    status = orch(queue, "job", "status", job)
    assert status.exit_code == 0
    assert status.stdout == seed_block(package, "Twenty tasks", "COMPLETED", 20, 0, 20, 0, "100.0")
    as_json = json.loads(orch(queue, "job", "status", job, "--json").stdout)
    assert as_json == {
        "job_id": job, "name": "Twenty tasks", "status": "COMPLETED", "strategy": "hybrid_supervisor",
        "dispatched": 20, "backlog": 0, "completed": 20, "failed": 0, "progress": 100.0,
        "files": {"manifest": str(package.manifest), "results": str(package.results), "log": str(package.log)},
    }  # fmt: skip


def test_worktree_adds_in_one_repository_never_overlap(tmp_path):
    """Concurrent ``git worktree add``s in one repo lose ~1-2% of adds to git's own race
    ('failed to read .git/worktrees/<n>/commondir'); orch must run them one at a time."""
    from orchestrator.worktree import Worktrees, open_repo

    job_repo(tmp_path, config(WRITE_FILE))
    repo = open_repo(tmp_path)
    both_inside, overlapped = threading.Barrier(2), []

    class RecordingGit:
        """Delegates to git; notes when two ``worktree`` calls are in flight together."""

        def worktree(self, *args):
            try:
                both_inside.wait(timeout=2.0)  # returns only if a second call arrives meanwhile
                overlapped.append(args)
            except threading.BrokenBarrierError:
                pass
            return repo.git.worktree(*args)

        def __getattr__(self, name):
            return getattr(repo.git, name)

    class RepoWithRecordingGit:
        git = RecordingGit()

        def __getattr__(self, name):
            return getattr(repo, name)

    worktrees = Worktrees(RepoWithRecordingGit(), tmp_path / ".orch")
    base = repo.git.rev_parse("HEAD")
    threads = [threading.Thread(target=worktrees.create, args=(f"A-{k}", 1, base)) for k in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert (tmp_path / ".orch/worktrees/A-1/1").is_dir() and (tmp_path / ".orch/worktrees/A-2/1").is_dir()
    assert overlapped == []


def test_a_task_that_names_its_agent_runs_on_that_agent_under_pools(tmp_path):
    flaky = {"kind": "scripted", "steps": [{"write": {"pinned.txt": "x\n"}, "on_attempt": {1: {"exit": 3}}}]}
    settings = pooled(WRITE_FILE)
    settings["agents"]["pinned"] = flaky
    queue = job_repo(tmp_path, settings)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "plain", "prompt": "p"}\n{"id": "pinned", "prompt": "p", "agent": "pinned"}\n')
    package = plan(queue, "--name", "pinned", "--tasks", str(tasks))
    orch(queue, "dispatch", str(package.order))
    run_in_process(tmp_path, package.job_id)
    events = [(actor, event) for actor, event, _ in log_events(package)]
    assert ("pinned", "RETRIED") in events
    assert (tmp_path / ".orch/worktrees" / f"{package.job_id}-pinned" / "2" / "pinned.txt").exists()


def test_threads_claiming_their_next_task_keep_every_pool_within_capacity(tmp_path):
    """More workers than pool places: the runner's threads route and claim concurrently, never past a pool."""
    queue = job_repo(tmp_path, pooled(WRITE_FILE))  # local 2, cloud 1
    package = plan(queue, "--name", "crowd", "--count", "12")
    orch(queue, "dispatch", str(package.order))
    cfg = load_config(tmp_path)
    store = open_store(queue=queue, policy=cfg.retry, lease=cfg.lease)
    conductor = Conductor(store, cfg, package)
    seen, started = [], conductor.router.started

    def counted_start(name, now):
        started(name, now)
        seen.append({pool: state.running for pool, state in conductor.router.pools.items()})

    conductor.router.started = counted_start
    runner = Runner(store, cfg, tmp_path, RunOptions(workers=6, job=package.job_id, grace=1.0), lambda line: None,
                    conductor)  # fmt: skip
    outcomes = runner.run()
    assert sorted(o.item_id for o in outcomes) == [f"{package.job_id}-t{k:03d}" for k in range(1, 13)]
    assert all(o.state == "SUCCESS" and o.attempt == 1 for o in outcomes)
    # every start: the 12 claims, and routes whose claim found nothing (those gave their place back)
    assert len(seen) >= 12 and all(s["local"] <= 2 and s["cloud"] <= 1 for s in seen), seen
    assert all(state.running == 0 for state in conductor.router.pools.values())
    assert not any(t.name == "orch-counters" for t in threading.enumerate())  # the recount thread is gone
    execution = package.read_order()["execution"]
    assert (execution["tasks_dispatched"], execution["tasks_completed"]) == (12, 12)


# --- execution.log under concurrent writers ---------------------------------------------------

WRITER = """\
import random, sys
from pathlib import Path
from orchestrator.audit import append_event
path, writer = Path(sys.argv[1]), int(sys.argv[2])
sys.stdin.read()  # start together
for n in range(500):
    size = random.Random(writer * 1000 + n).randint(3000, 8000)
    body = (f"w{writer}n{n}-" * (size // 8 + 1))[:size]
    append_event(path, f"Job-{writer:02d}", "STEP", f"w{writer} n{n} {body}")
"""


def test_eight_processes_appending_long_lines_never_break_or_interleave_one(tmp_path):
    path = tmp_path / "jobs" / "j" / "execution.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([PY, "-c", WRITER, str(path), str(w)], stdin=subprocess.PIPE, env=env)
               for w in range(8)]  # fmt: skip
    for process in writers:
        process.stdin.close()
    assert [process.wait(timeout=120) for process in writers] == [0] * 8
    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data) > 8 * 500 * 3000
    seen: dict[int, list[int]] = {w: [] for w in range(8)}
    for line in data.decode("utf-8").split("\n")[:-1]:
        assert LINE.match(line), line[:120]
        actor, event, message = PARTS.match(line).group("actor", "event", "message")
        writer, n = (int(x) for x in re.match(r"w(\d+) n(\d+) ", message).groups())
        size = random.Random(writer * 1000 + n).randint(3000, 8000)
        assert (actor, event) == (f"Job-{writer:02d}", "STEP")
        assert message == f"w{writer} n{n} " + (f"w{writer}n{n}-" * (size // 8 + 1))[:size]
        seen[writer].append(n)
    assert seen == {w: list(range(500)) for w in range(8)}


# --- cleanup ----------------------------------------------------------------------------------


def test_cleanup_removes_finished_worktrees_keeps_branches_and_refuses_to_lose_work(tmp_path):
    queue = job_repo(tmp_path, config(WRITE_FILE))
    package = plan(queue, "--name", "tidy", "--count", "3")
    job = package.job_id
    orch(queue, "dispatch", str(package.order))
    assert {o.state for o in run_in_process(tmp_path, job)} == {"SUCCESS"}
    (tmp_path / ".orch/worktrees/.lock").unlink(missing_ok=True)  # the bug pinned just below
    clean, dirty, detached = (tmp_path / ".orch/worktrees" / f"{job}-t00{k}" / "1" for k in (1, 2, 3))
    (dirty / "scratch.txt").write_text("unsaved\n")
    git(detached, "checkout", "-q", "--detach")
    (detached / "extra.txt").write_text("unbranched\n")
    git(detached, "add", "extra.txt")
    git(detached, "commit", "-q", "-m", "work on no branch")
    loose = git(detached, "rev-parse", "HEAD").strip()
    branches = git(tmp_path, "branch", "--list", "orch/*", "--format=%(refname:short)").split()
    assert len(branches) == 3
    refused = [
        f"refused {dirty}: uncommitted changes (scratch.txt); commit it, or use --force",
        f"refused {detached}: commit {loose[:12]} is on no branch; commit it, or use --force",
    ]

    dry = orch(queue, "cleanup", "--job", job, "--dry-run")
    assert dry.exit_code == 1 and dry.stderr == ""
    assert dry.stdout.splitlines() == [f"would remove {clean} (branch orch/{job}-t001/1 kept)", *refused]
    assert clean.is_dir() and dirty.is_dir() and detached.is_dir()

    first = orch(queue, "cleanup", "--job", job)
    assert first.exit_code == 1 and first.stderr == ""
    assert first.stdout.splitlines() == [f"removed {clean} (branch orch/{job}-t001/1 kept)", *refused]
    assert not clean.exists() and dirty.is_dir() and detached.is_dir()
    assert str(clean) not in git(tmp_path, "worktree", "list", "--porcelain")
    manifest = json.loads((tmp_path / ".orch/runs" / f"{job}-t001" / "1" / "job_manifest.json").read_text())
    assert manifest["cleaned"] is True and manifest["history"][-1]["message"] == "worktree removed"

    forced = orch(queue, "cleanup", "--job", job, "--force")
    assert forced.exit_code == 0
    assert forced.stdout.splitlines() == [
        f"removed {dirty} (branch orch/{job}-t002/1 kept): uncommitted changes (scratch.txt)",
        f"removed {detached} (branch orch/{job}-t003/1 kept): commit {loose[:12]} is on no branch",
    ]
    assert not dirty.exists() and not detached.exists()
    assert git(tmp_path, "branch", "--list", "orch/*", "--format=%(refname:short)").split() == branches
    for k in (2, 3):
        data = json.loads((tmp_path / ".orch/runs" / f"{job}-t00{k}" / "1" / "job_manifest.json").read_text())
        assert data["cleaned"] is True and data["history"][-1]["message"] == "worktree removed (forced)"
    assert orch(queue, "cleanup", "--job", job).stdout == "nothing to clean up\n"


def test_cleanup_after_a_run_is_not_tripped_by_the_worktree_lock_file(tmp_path):
    queue = job_repo(tmp_path, config(WRITE_FILE))
    package = plan(queue, "--name", "lockfile", "--count", "1")
    orch(queue, "dispatch", str(package.order))
    run_in_process(tmp_path, package.job_id)
    result = orch(queue, "cleanup", "--finished")
    assert result.exit_code == 0 and result.stdout.startswith("removed ")


# --- archive ----------------------------------------------------------------------------------


def test_archive_moves_finished_packages_and_done_rows_but_keeps_a_row_still_needed(tmp_path):
    queue = job_repo(tmp_path, config(WRITE_FILE))
    package = plan(queue, "--name", "old work", "--count", "2")
    job = package.job_id
    orch(queue, "dispatch", str(package.order))
    run_in_process(tmp_path, job)
    assert package.read_order()["status"] == "completed"
    with queue.open("a") as stream:
        stream.write(f"| LATER-1 | PENDING | needs t001 | | | 0 | | | | {job}-t001 | |\n")
        stream.write("| OLD-1 | DONE | long done | | 2020-01-01T00:00:00Z | 1 | | | | | done:1 |\n")
    archive_queue = tmp_path / "QUEUE.archive.md"

    dry = orch(queue, "archive", "--older-than", "0", "--dry-run")
    assert dry.exit_code == 0
    assert dry.stdout == (f"would move 1 job package to jobs/archive/\n  - {job}\n"
                          f"would move 2 DONE rows to {archive_queue}\n")  # fmt: skip
    assert package.folder.is_dir() and not archive_queue.exists()

    result = orch(queue, "archive", "--older-than", "0")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == f"moved 1 job package to jobs/archive/\n  - {job}\nmoved 2 DONE rows to {archive_queue}\n"
    moved = tmp_path / "jobs" / "archive" / job
    assert not package.folder.exists() and (moved / "work_order.yaml").is_file() and (moved / "results.jsonl").is_file()
    assert [i.id for i in MarkdownStore(archive_queue).items()] == [f"{job}-t002", "OLD-1"]
    assert [(i.id, i.status) for i in MarkdownStore(queue).items()] == [
        (f"{job}-t001", Status.DONE), ("LATER-1", Status.PENDING)]  # fmt: skip
    checked = orch(queue, "validate", str(archive_queue), str(queue))
    assert checked.exit_code == 0 and checked.stderr == ""
    assert checked.stdout == f"{archive_queue}: ok (2 items)\n{queue}: ok (2 items)\n"


def test_archive_keeps_every_row_an_open_row_needs_transitively(tmp_path):
    queue = job_queue(tmp_path, "| A | DONE | a | | 2020-01-01T00:00:00Z | 1 | | | | | done:1 |\n"
                                "| B | DONE | b | | 2020-01-01T00:00:00Z | 1 | | | | A | done:1 |\n"
                                "| C | PENDING | c | | | 0 | | | | B | |\n")  # fmt: skip
    assert orch(queue, "archive", "--older-than", "1").exit_code == 0
    assert orch(queue, "validate").exit_code == 0
    assert [item.id for item in MarkdownStore(queue).items()] == ["A", "B", "C"]


# --- a work order that does not all succeed ---------------------------------------------------

# The supervisor asks for a human on the task "asks" and passes everything else.
ASKING_SUPERVISOR = """\
import os, sys
sys.stdin.read()
if os.environ["ORCH_ID"].endswith("-asks"):
    print("VERDICT: INTERVENTION_REQUIRED which API key?")
else:
    print("VERDICT: SUCCESS looks right")
"""
# A worker that an operator cancels while it runs (the store call an operator's `orch cancel` makes).
CANCELLED_WORKER = """\
import os, sys
from pathlib import Path
from orchestrator.operations import cancel
from orchestrator.store.markdown import MarkdownStore
sys.stdin.read()
cancel(MarkdownStore(Path(sys.argv[1])), os.environ["ORCH_ID"], actor="operator@test")
"""


def test_failed_blocked_and_cancelled_tasks_are_logged_counted_and_reported(tmp_path):
    settings = config(WRITE_FILE, {"kind": "command", "argv": [PY, "-c", ASKING_SUPERVISOR]},
                      retry={"max_attempts": 2, "backoff_base": 0.01})  # fmt: skip
    settings["agents"]["broke"] = {"kind": "scripted", "steps": [{"say": "cannot build", "exit": 3}]}
    settings["agents"]["gone"] = {"kind": "command", "argv": [PY, "-c", CANCELLED_WORKER, str(tmp_path / "QUEUE.md")]}
    queue = job_repo(tmp_path, settings)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(task) + "\n" for task in [
        {"id": "ok", "prompt": "p"}, {"id": "broke", "prompt": "p", "agent": "broke"},
        {"id": "asks", "prompt": "p"}, {"id": "gone", "prompt": "p", "agent": "gone"},
    ]))  # fmt: skip
    package = plan(queue, "--name", "mixed", "--tasks", str(tasks))
    job = package.job_id
    orch(queue, "dispatch", str(package.order))
    run_in_process(tmp_path, job)

    events = log_events(package)
    moves: dict[str, list[tuple[str, str]]] = {}
    for actor, event, message in events:
        moves.setdefault(actor, []).append((event, message))
    start = ["PULLED", "ROUTED", "STARTED"]
    assert [e for e, _ in moves["ok"]] == [*start, "STEP", "COMPLETED"]
    assert [e for e, _ in moves["broke"]] == [*start, "RETRIED", *start, "FAILED"]
    assert moves["broke"][-1][1] == "error:broke exited 3: cannot build"
    assert [e for e, _ in moves["asks"]] == [*start, "STEP", "INTERVENTION"]
    assert moves["asks"][-2][1] == "attempt 1 step 1: INTERVENTION_REQUIRED - which API key?"
    assert moves["asks"][-1][1] == "intervention:which API key?"
    assert [e for e, _ in moves["gone"]] == [*start, "CANCELED"]
    assert moves["gone"][-1][1] == "cancelled"
    assert events[-1] == ("SYSTEM", audit.JOB_COMPLETED,
                          f"Job {job} finished. Success: 1/4, Failed: 1, Blocked: 2 (status failed)")  # fmt: skip

    results = {r["id"]: r for r in map(json.loads, package.results.read_text().splitlines())}
    assert {key: (r["status"], r["attempts"]) for key, r in results.items()} == {
        f"{job}-ok": ("DONE", 1), f"{job}-broke": ("FAILED", 2), f"{job}-asks": ("BLOCKED", 1)}  # fmt: skip
    assert results[f"{job}-broke"]["note"] == "error:broke exited 3: cannot build"
    assert results[f"{job}-broke"]["branch"] == f"orch/{job}-broke/2"
    assert all(RESULT_FIELDS <= set(r) for r in results.values())

    order = package.read_order()
    assert order["status"] == "failed" and order["execution"]["completed_at"]
    assert [order["execution"][k] for k in SEED_EXECUTION_KEYS[2:]] == [4, 1, 1]
    status = orch(queue, "job", "status", job)
    assert status.exit_code == 0 and status.stderr == ""
    assert "Status:    FAILED\n" in status.stdout
    assert "Dispatched:  4\nBacklog:     0\nCompleted:   1\nFailed:      1\nProgress:    25.0%\n" in status.stdout
    as_json = json.loads(orch(queue, "job", "status", job, "--json").stdout)
    assert (as_json["status"], as_json["failed"], as_json["completed"]) == ("FAILED", 1, 1)
    statuses = {item.id: item.status for item in MarkdownStore(queue).items()}
    assert statuses == {f"{job}-ok": Status.DONE, f"{job}-broke": Status.FAILED,
                        f"{job}-asks": Status.BLOCKED, f"{job}-gone": Status.BLOCKED}  # fmt: skip


# Claude Code's `-p --output-format json` result object, with usage and cost; the supervisor
# asks for another step once, so each of the two calls of each role adds its usage.
FAKE_CLAUDE = """\
import json, os, sys
from pathlib import Path
sys.stdin.read()
worker, step = os.environ["ORCH_ROLE"] == "worker", int(os.environ["ORCH_STEP"])
if worker:
    Path("claude.txt").write_text("step " + str(step) + "\\n")
    text, usage, cost = "edited claude.txt", {"input_tokens": 100, "output_tokens": 20}, 0.25
else:
    text = "VERDICT: CONTINUE once more" if step == 1 else "VERDICT: SUCCESS done"
    usage, cost = {"input_tokens": 50, "output_tokens": 5}, 0.125
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": text,
                  "num_turns": 1, "usage": usage, "total_cost_usd": cost}))
"""


def test_usage_and_cost_reported_by_the_agent_are_summed_into_the_result_line(tmp_path):
    fake = {"kind": "claude", "argv": [PY, "-c", FAKE_CLAUDE]}
    queue = job_repo(tmp_path, config(fake, fake))
    package = plan(queue, "--name", "costly", "--count", "1")
    orch(queue, "dispatch", str(package.order))
    [outcome] = run_in_process(tmp_path, package.job_id)
    assert (outcome.state, outcome.steps) == ("SUCCESS", 2)
    [result] = [json.loads(line) for line in package.results.read_text().splitlines()]
    assert result["usage"] == {"input_tokens": 300, "output_tokens": 50, "total_cost_usd": 0.75, "num_turns": 4}
    assert result["cost_usd"] == 0.75
    manifest = json.loads((tmp_path / ".orch/runs" / result["id"] / "1" / "job_manifest.json").read_text())
    assert manifest["usage"] == result["usage"]


# The worker's first attempt ends in an API error that still cost tokens; the second succeeds.
FAKE_CLAUDE_FAILING_ONCE = """\
import json, os, sys
from pathlib import Path
sys.stdin.read()
first = os.environ["ORCH_ATTEMPT"] == "1"
Path("claude.txt").write_text("attempt " + os.environ["ORCH_ATTEMPT"] + "\\n")
print(json.dumps({"type": "result", "subtype": "error_during_execution" if first else "success", "is_error": first,
                  "result": "API Error: 500" if first else "done", "num_turns": 1,
                  "usage": {"input_tokens": 100, "output_tokens": 20}, "total_cost_usd": 0.25}))
"""


def test_a_tasks_result_line_sums_usage_and_cost_over_every_attempt(tmp_path):
    fake = {"kind": "claude", "argv": [PY, "-c", FAKE_CLAUDE_FAILING_ONCE]}
    settings = config(fake, {"kind": "command", "argv": [PY, "-c", "pass"]},
                      retry={"max_attempts": 2, "backoff_base": 0.01})  # fmt: skip
    queue = job_repo(tmp_path, settings)
    package = plan(queue, "--name", "twice", "--count", "1")
    orch(queue, "dispatch", str(package.order))
    outcomes = run_in_process(tmp_path, package.job_id)
    assert [(o.attempt, o.state) for o in outcomes] == [(1, "FAILED"), (2, "SUCCESS")]
    [result] = [json.loads(line) for line in package.results.read_text().splitlines()]
    assert (result["attempts"], result["cost_usd"]) == (2, 0.5)
    assert result["usage"] == {"input_tokens": 200, "output_tokens": 40, "total_cost_usd": 0.5, "num_turns": 2}


# --- cleanup and archive: only what was asked for -------------------------------------------


def test_cleanup_of_one_id_removes_only_that_items_finished_worktrees(tmp_path):
    flaky = {"kind": "scripted", "steps": [{"write": {"out.txt": "done\n"}, "on_attempt": {1: {"exit": 3}}}]}
    settings = config(WRITE_FILE, retry={"max_attempts": 2, "backoff_base": 0.01})
    settings["agents"]["flaky"] = flaky
    queue = job_repo(tmp_path, settings)
    with queue.open("a") as stream:
        for item_id, agent in (("A", "flaky"), ("AA", ""), ("B", "")):
            stream.write(f"| {item_id} | PENDING | t | | | 0 | | {agent} | | | |\n")
    cfg = load_config(tmp_path)
    store = open_store(queue=queue, policy=cfg.retry, lease=cfg.lease)
    Runner(store, cfg, tmp_path, RunOptions(grace=1.0), lambda line: None).run()
    worktrees = tmp_path / ".orch/worktrees"
    assert sorted(str(p.relative_to(worktrees)) for p in worktrees.glob("*/*")) == ["A/1", "A/2", "AA/1", "B/1"]

    dry = orch(queue, "cleanup", "--id", "a", "--dry-run")  # ids ignore case, here as everywhere
    assert dry.stdout.splitlines() == [f"would remove {worktrees / 'A' / str(k)} (branch orch/A/{k} kept)"
                                       for k in (1, 2)]  # fmt: skip
    result = orch(queue, "cleanup", "--id", "A")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.splitlines() == [f"removed {worktrees / 'A' / str(k)} (branch orch/A/{k} kept)"
                                          for k in (1, 2)]  # fmt: skip
    assert sorted(str(p.relative_to(worktrees)) for p in worktrees.glob("*/*")) == ["AA/1", "B/1"]
    assert git(tmp_path, "branch", "--list", "orch/*", "--format=%(refname:short)").split() == [
        "orch/A/1", "orch/A/2", "orch/AA/1", "orch/B/1"]  # fmt: skip
    assert orch(queue, "cleanup", "--id", "A").stdout == "nothing to clean up\n"


def _finished_package(queue: Path, name: str, completed_at: float) -> Package:
    """A dispatched work order whose tasks are DONE, marked completed at ``completed_at`` (local time)."""
    package = plan(queue, "--name", name, "--count", "1")
    orch(queue, "dispatch", str(package.order))
    store = MarkdownStore(queue)
    claim = store.claim("w1", lease=60, job=package.job_id)
    store.complete(claim.item.id, "w1", attempt=claim.attempt)
    order = workorder.refresh_counters(store, package)
    order["execution"]["completed_at"] = workorder.local_now(completed_at)
    package.write_order(order)
    return package


def test_archive_keeps_packages_and_done_rows_younger_than_the_cutoff_and_moves_older_ones(tmp_path):
    from orchestrator.timeutil import now_iso

    now, day, hour = time.time(), 86400.0, 3600.0
    queue = job_queue(tmp_path)
    young = _finished_package(queue, "young", now - 3 * day + hour)
    old = _finished_package(queue, "old", now - 3 * day - hour)
    with queue.open("a") as stream:
        for item_id, started in (("YOUNG-1", now - 3 * day + hour), ("OLD-1", now - 3 * day - hour)):
            stream.write(f"| {item_id} | DONE | t | | {now_iso(started)} | 1 | | | | | done:1 |\n")

    result = orch(queue, "archive", "--older-than", "3")
    assert result.exit_code == 0 and result.stderr == ""
    archive_queue = tmp_path / "QUEUE.archive.md"
    assert result.stdout == (f"moved 1 job package to jobs/archive/\n  - {old.job_id}\n"
                             f"moved 2 DONE rows to {archive_queue}\n")  # fmt: skip
    assert young.folder.is_dir() and not old.folder.exists()
    assert (tmp_path / "jobs" / "archive" / old.job_id / "work_order.yaml").is_file()
    assert [i.id for i in MarkdownStore(queue).items()] == [f"{young.job_id}-t001", "YOUNG-1"]
    assert [i.id for i in MarkdownStore(archive_queue).items()] == [f"{old.job_id}-t001", "OLD-1"]


@pytest.mark.parametrize(("offset", "moved"), [(-1.0, True), (0.0, False), (1.0, False)])
def test_archive_cutoff_is_exact_to_the_second(tmp_path, offset, moved):
    """Finished ``offset`` seconds after the cutoff: moved only when strictly older than DAYS."""
    from orchestrator.archive import archive
    from orchestrator.timeutil import now_iso

    now, days = 2_000_000_000.0, 2.0
    cutoff = now - days * 86400
    queue = job_queue(tmp_path, f"| ROW-1 | DONE | t | | {now_iso(cutoff + offset)} | 1 | | | | | done:1 |\n")
    package = _finished_package(queue, "edge", cutoff + offset)
    report = archive(MarkdownStore(queue), tmp_path, queue, days, dry_run=True, now=now)
    assert report.jobs == ([package.job_id] if moved else [])
    assert ("ROW-1" in report.rows) is moved
