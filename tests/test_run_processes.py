"""``orch run`` as real processes: cancel from another shell, pid reuse, recovery after SIGKILL, two runners.

Every runner, cancel and demo here is a separate ``python -m orchestrator``
process on a real git repository in tmp_path; the agents are small Python
scripts that record their pids, so the tests can check that nothing is left
running. Nothing sleeps to let things settle: every wait polls for a condition
until a deadline.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from orchestrator.procs import AgentProcess, ProcessRegistry, start_time
from orchestrator.store.markdown import MarkdownStore
from orchestrator.store.sqlite import SqliteStore
from tests.conftest import ROOT, orch_argv, run_orch
from tests.runs import PY, WAIT, config, git, make_repo, row, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and process groups")

PR_SET_CHILD_SUBREAPER = 36

# A worker agent: starts a child (one that ignores SIGTERM with "stubborn"),
# writes "<its pid> <child pid>" to <pids>/<id>.<attempt>.pids once the child is
# ready, then sleeps. With "first-only" it does all that on attempt 1 only and
# succeeds at once on later attempts.
AGENT = """\
import os, subprocess, sys, time
from pathlib import Path

pids, child_kind = Path(sys.argv[1]), sys.argv[2]
if "first-only" in sys.argv[3:] and os.environ["ORCH_ATTEMPT"] != "1":
    Path("fixed.txt").write_text("done on attempt " + os.environ["ORCH_ATTEMPT"] + "\\n")
    sys.exit(0)
ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if child_kind == "stubborn" else ""
child = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; " + ignore + "print('ready', flush=True); time.sleep(120)"],
    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
)
child.stdout.readline()
name = os.environ["ORCH_ID"] + "." + os.environ["ORCH_ATTEMPT"]
(pids / (name + ".tmp")).write_text(f"{os.getpid()} {child.pid}")
os.replace(pids / (name + ".tmp"), pids / (name + ".pids"))
time.sleep(120)
"""

# A worker agent for two runners on one queue: appends "<id> <attempt> <runner pid>"
# to a shared log (O_APPEND, outside the worktree), then waits until both runners
# have started something, so the two runs really overlap.
LOGGER = """\
import os, sys, time

log = sys.argv[1]
line = f"{os.environ['ORCH_ID']} {os.environ['ORCH_ATTEMPT']} {os.getppid()}\\n"
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, line.encode())
os.close(fd)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    with open(log) as lines:
        runners = {entry.split()[2] for entry in lines if entry.endswith("\\n") and len(entry.split()) == 3}
    if len(runners) >= 2:
        break
    time.sleep(0.01)
"""

# ``git``, except that the first ``worktree add`` first plays out a concurrent
# ``git worktree add`` caught between two writes (its admin folder has gitdir, and
# commondir is created but still empty), until another ``worktree add`` has run
# or a second has passed. A concurrent call runs at once, as it would for real.
GIT_SHIM = """\
#!{python}
import os, shutil, subprocess, sys, time
from pathlib import Path

REAL = {git!r}
args = sys.argv[1:]
if "worktree" not in args or args[args.index("worktree") + 1 :][:1] != ["add"]:
    os.execv(REAL, [REAL, *args])
found = subprocess.run([REAL, "rev-parse", "--git-common-dir"], capture_output=True, text=True, check=True)
common = Path(found.stdout.strip()).resolve()
leader, ready, followed = common / "shim-leader", common / "shim-ready", common / "shim-followed"
try:
    leader.mkdir()
except FileExistsError:
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    code = subprocess.run([REAL, *args]).returncode
    followed.touch()
    sys.exit(code)
half = common / "worktrees" / ".in-flight"
half.mkdir(parents=True)
(half / "gitdir").write_text(str(common.parent / "elsewhere" / ".git") + "\\n")
(half / "commondir").touch()
half.rename(common / "worktrees" / "in-flight")
ready.touch()
deadline = time.monotonic() + 1
while not followed.exists() and time.monotonic() < deadline:
    time.sleep(0.005)
shutil.rmtree(common / "worktrees" / "in-flight")
os.execv(REAL, [REAL, *args])
"""

QUICK = {"kind": "command", "argv": [PY, "-c", "open('ok.txt', 'w').write('ok')"]}
JOB_HEADER = (
    "| id | status | title | owner | started | attempts | max_attempts | agent | job | depends_on | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


# --- processes ------------------------------------------------------------------------


def alive(pid: int, started: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` (a zombie is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rindex(")") + 2 :].split()[0]
    return state != "Z" and start_time(pid) == started


class Processes:
    """Starts ``orch`` processes for a test, stands in for init, and leaves nothing behind.

    The test process becomes a child subreaper and reaps the agents it is told
    about: an agent's child outlives the agent that a cancel killed, and an
    agent outlives the runner that a test killed. A real init reaps such
    orphans; some container inits do not, and a zombie still counts as a
    member of its process group, so without this the tests would measure the
    container rather than orch.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen] = []
        self.orphans: dict[int, int | None] = {}
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._reap, daemon=True)
        self.thread.start()

    def orch(self, *args: str, cwd: Path, name: str) -> subprocess.Popen:
        """``orch ARGS`` in its own session, output to ``<tmp_path>/<name>.out``."""
        out = (self.tmp_path / f"{name}.out").open("w")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(orch_argv(*args), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)  # fmt: skip
        out.close()
        process.output = lambda: (self.tmp_path / f"{name}.out").read_text()
        process.cwd = cwd
        self.started.append(process)
        return process

    def adopt(self, *pids: int) -> dict[int, int | None]:
        """Reap these processes if they are orphaned to us; kill them at teardown if still alive."""
        with self.lock:
            for pid in pids:
                self.orphans[pid] = start_time(pid)
        return {pid: self.orphans[pid] for pid in pids}

    def _reap(self) -> None:
        while not self.done.wait(0.01):
            with self.lock:
                for pid in list(self.orphans):
                    try:
                        reaped, _ = os.waitpid(pid, os.WNOHANG)
                    except ChildProcessError:  # not (yet) ours: its parent lives, or reaped it
                        reaped = start_time(pid) != self.orphans[pid]
                    if reaped:
                        del self.orphans[pid]

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with self.lock:
            for pid, started in self.orphans.items():
                if alive(pid, started):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.orphans and time.monotonic() < deadline:
            time.sleep(0.01)
        self.done.set()
        self.thread.join()
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def processes(tmp_path):
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.close()


def finish(process: subprocess.Popen, timeout: float = WAIT) -> str:
    """Wait for an ``orch`` process to exit 0 and return its output."""
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{process.args[3:]} still running after {timeout:g}s:\n{process.output()}")
    assert code == 0, process.output()
    return process.output()


def agent_repo(tmp_path: Path, rows: list[str], child: str = "stubborn", *flags: str, **settings) -> Path:
    """A repo whose worker ``w`` is the AGENT script (pid files in ``<tmp_path>/pids``); ``quick`` succeeds."""
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    (tmp_path / "pids").mkdir()
    repo = tmp_path / "repo"
    worker = {"kind": "command", "argv": [PY, str(script), str(tmp_path / "pids"), child, *flags]}
    settings = config(worker, **settings)
    settings["agents"]["quick"] = QUICK
    make_repo(repo, [], settings)
    (repo / "QUEUE.md").write_text("# Queue\n\n" + JOB_HEADER + "".join(rows))
    return repo


def job_row(item_id: str, job: str = "", agent: str = "") -> str:
    return f"| {item_id} | PENDING | a task | | | 0 | | {agent} | {job} | | |\n"


def running_agent(run: subprocess.Popen, item_id: str) -> tuple[int, int, int]:
    """(attempt, agent pid, its child's pid) once the item's agent is registered and has written its pids."""
    repo = Path(run.cwd)
    pids = repo.parent / "pids"

    def found() -> tuple[int, int, int] | None:
        for entry in ProcessRegistry(repo / ".orch").entries():
            pid_file = pids / f"{item_id}.{entry.attempt}.pids"
            if (entry.item_id, entry.role) == (item_id, "worker") and pid_file.exists():
                agent, child = map(int, pid_file.read_text().split())
                return entry.attempt, agent, child
        return None

    return wait_for(found, f"{item_id}'s agent to start",
                    detail=lambda: f"runner output:\n{run.output()}\nregistered: {registered(repo)}")  # fmt: skip


def items(repo: Path) -> dict[str, object]:
    return {item.id: item for item in MarkdownStore(repo / "QUEUE.md").items()}


def manifest(repo: Path, item_id: str, attempt: int) -> dict:
    return json.loads((repo / ".orch" / "runs" / item_id / str(attempt) / "job_manifest.json").read_text())


def registered(repo: Path) -> list[str]:
    folder = repo / ".orch" / "procs"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


# --- cancel from another process -----------------------------------------------------------


def test_cancel_from_another_process_stops_the_agent_group_and_the_runner_records_it(tmp_path, processes):
    repo = agent_repo(tmp_path, [job_row("X-1")])
    run = processes.orch("run", cwd=repo, name="run")
    attempt, *agent = running_agent(run, "X-1")
    pids = processes.adopt(*agent)
    assert attempt == 1 and all(alive(pid, started) for pid, started in pids.items())

    cancelled = run_orch("cancel", "--id", "X-1", "--grace", "1", cwd=repo, timeout=WAIT)
    assert (cancelled.returncode, cancelled.stdout, cancelled.stderr) == (0, "X-1 -> BLOCKED\n", "")
    # the agent died on SIGTERM; its child ignores SIGTERM and needs the SIGKILL after the grace
    wait_for(lambda: not any(alive(pid, started) for pid, started in pids.items()), "the agent and its child to go",
             timeout=5)  # fmt: skip

    output = finish(run)
    assert "X-1 CANCELED" in output
    item = items(repo)["X-1"]
    assert item.status.value == "BLOCKED" and item.note_list()[-1] == "cancelled_by_operator"
    assert manifest(repo, "X-1", 1)["state"] == "CANCELED"
    assert registered(repo) == []


@pytest.mark.parametrize("how", [["all"], ["--job", "J"]], ids=["all", "job"])
def test_cancel_all_and_cancel_job_stop_every_running_agent(tmp_path, processes, how):
    # J-1 and J-2 take both worker slots; K-1 (another job, a quick agent) waits its turn
    repo = agent_repo(tmp_path, [job_row("J-1", "J"), job_row("J-2", "J"), job_row("K-1", "K", agent="quick")],
                      child="plain")  # fmt: skip
    run = processes.orch("run", "--workers", "2", cwd=repo, name="run")
    (one, *first), (two, *second) = running_agent(run, "J-1"), running_agent(run, "J-2")
    pids = processes.adopt(*first, *second)

    cancelled = run_orch("cancel", *how, "--grace", "1", cwd=repo, timeout=WAIT)
    assert (cancelled.returncode, cancelled.stdout, cancelled.stderr) == (0, "J-1 -> BLOCKED\nJ-2 -> BLOCKED\n", "")
    wait_for(lambda: not any(alive(pid, started) for pid, started in pids.items()), "both agent groups to go",
             timeout=5)  # fmt: skip

    finish(run)  # then K-1 runs in a freed slot
    after = items(repo)
    assert [after[i].note_list()[-1] for i in ("J-1", "J-2", "K-1")] == [
        "cancelled_by_operator", "cancelled_by_operator", "done:1",
    ]  # fmt: skip
    assert [manifest(repo, "J-1", one)["state"], manifest(repo, "J-2", two)["state"]] == ["CANCELED", "CANCELED"]
    assert registered(repo) == []


@pytest.mark.parametrize("who", ["cancel", "run"])
def test_a_reused_pid_is_never_signalled(tmp_path, who):
    """An entry whose pid now belongs to another process (its start time differs) is dropped, not signalled.

    ``cancel --id`` stops an item's registered agents; a new ``run`` stops those of a runner that died.
    """
    make_repo(tmp_path, [row("X-1")], config(QUICK))
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        if who == "cancel":
            runner_pid, runner_started = os.getpid(), start_time(os.getpid())
        else:
            dead = subprocess.Popen(["true"])  # a runner that has died
            dead.wait()
            runner_pid, runner_started = dead.pid, start_time(os.getpid())
        entry = AgentProcess("X-1", 1, "worker", bystander.pid, bystander.pid, start_time(bystander.pid) + 1,
                             runner_pid, runner_started)  # fmt: skip
        ProcessRegistry(tmp_path / ".orch").register(entry)

        if who == "cancel":
            done = run_orch("cancel", "--id", "X-1", "--grace", "0", cwd=tmp_path, timeout=WAIT)
            assert (done.returncode, done.stdout) == (0, "X-1 -> BLOCKED\n")
        else:
            done = run_orch("run", cwd=tmp_path, timeout=WAIT)
            assert done.returncode == 0 and "X-1 SUCCESS (done:1)" in done.stdout
        assert bystander.poll() is None and alive(bystander.pid, start_time(bystander.pid))
        assert registered(tmp_path) == []  # the stale entry is gone
    finally:
        bystander.kill()
        bystander.wait()


# --- a runner killed with SIGKILL --------------------------------------------------------------


def test_a_new_runner_stops_a_killed_runners_agent_and_the_item_runs_again(tmp_path, processes):
    repo = agent_repo(tmp_path, [job_row("X-1")], "plain", "first-only", lease=2)
    first = processes.orch("run", cwd=repo, name="first")
    attempt, *agent = running_agent(first, "X-1")
    pids = processes.adopt(*agent)
    os.kill(first.pid, signal.SIGKILL)  # the runner only: its agent runs on in its own process group
    first.wait()
    assert attempt == 1 and all(alive(pid, started) for pid, started in pids.items())
    store = MarkdownStore(repo / "QUEUE.md")
    wait_for(lambda: store.lease_until("X-1") < time.time(), "the dead runner's lease to end", timeout=10)

    second = finish(processes.orch("run", cwd=repo, name="second"))
    assert f"stopped agent pid {agent[0]} of X-1 left by a runner that died" in second
    assert not any(alive(pid, started) for pid, started in pids.items())
    assert f"lease_expired:runner-{first.pid}@" in items(repo)["X-1"].notes
    finish(processes.orch("run", cwd=repo, name="third"))  # a no-op once the second runner runs attempt 2 itself

    item = items(repo)["X-1"]
    assert item.status.value == "DONE" and item.note_list()[-1] == "done:2"
    assert any(note.startswith("lease_expired:") for note in item.note_list())
    assert git(repo, "branch", "--list", "orch/X-1/*", "--format=%(refname:short)").split() == [
        "orch/X-1/1", "orch/X-1/2",
    ]  # fmt: skip
    assert manifest(repo, "X-1", 2)["state"] == "SUCCESS"
    assert registered(repo) == []


@pytest.mark.parametrize("backend", ["markdown", "sqlite"])
def test_a_runner_that_reaps_an_expired_lease_runs_the_item_in_the_same_run(tmp_path, backend):
    make_repo(tmp_path, [row("X-1")], config(QUICK, retry={"backoff_base": 0.1}))
    where = ["--db", "q.db"] if backend == "sqlite" else []
    if where:
        assert run_orch(*where, "import", "--from", "QUEUE.md", cwd=tmp_path).returncode == 0
    claimed = run_orch(*where, "claim", "--owner", "ghost", "--lease", "0.2", "--json", cwd=tmp_path)
    until = json.loads(claimed.stdout)["lease_until"]
    wait_for(lambda: time.time() > until, "the ghost's lease to end")  # a worker that died holding X-1

    ran = run_orch(*where, "run", cwd=tmp_path, timeout=WAIT)
    assert ran.returncode == 0, ran.stderr
    store = SqliteStore(tmp_path / "q.db") if where else MarkdownStore(tmp_path / "QUEUE.md")
    notes = store.get("X-1").note_list()
    assert notes[0] == "lease_expired:ghost" and notes[-1] == "done:2", ran.stdout


def test_a_timed_out_agent_that_dies_on_sigterm_ends_the_attempt_without_waiting_out_the_grace(tmp_path, processes):
    sleeper = {"kind": "command", "argv": [PY, "-c", "import time; time.sleep(60)"]}
    make_repo(tmp_path, [row("X-1")], config(sleeper))
    run = processes.orch("run", "--job-timeout", "0.5", cwd=tmp_path, name="run")
    wait_for(lambda: registered(tmp_path), "the agent to start")
    # the agent ends at its first SIGTERM; anything near the 5 s grace means the runner waited for a corpse
    output = finish(run, timeout=4)
    assert "X-1 FAILED (timeout:0.5s)" in output


def test_a_step_timeout_stops_an_agent_whose_child_ignores_sigterm_and_leaves_nothing_running(tmp_path, processes):
    repo = agent_repo(tmp_path, [job_row("X-1")], "stubborn")
    settings = yaml.safe_load((repo / "orch.yaml").read_text())
    settings["agents"]["w"]["timeout"] = 3  # the step's own timeout, not --job-timeout
    (repo / "orch.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    run = processes.orch("run", cwd=repo, name="run")
    attempt, *agent = running_agent(run, "X-1")
    pids = processes.adopt(*agent)

    output = finish(run)  # SIGTERM at 3 s; the child ignores it and is killed after the grace
    assert "X-1 FAILED (timeout:3s)" in output
    assert "raise --job-timeout or agents.<name>.timeout, then `orch retry --id X-1`" in output
    assert not any(alive(pid, started) for pid, started in pids.items())
    assert registered(repo) == []
    assert items(repo)["X-1"].note_list() == ["timeout:3s"]
    assert manifest(repo, "X-1", attempt)["state"] == "FAILED"


# --- two runners on one queue ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["markdown", "sqlite"])
def test_two_runners_on_one_queue_never_run_the_same_item(tmp_path, processes, backend):
    script, log = tmp_path / "logger.py", tmp_path / "ran.log"
    script.write_text(LOGGER)
    ids = [f"P-{n:02d}" for n in range(1, 13)]
    repo = tmp_path / "repo"
    worker = {"kind": "command", "argv": [PY, str(script), str(log)]}
    checks = {"kind": "command", "argv": ["true"]}
    make_repo(repo, [row(item_id) for item_id in ids], config(worker, checks, retry={"backoff_base": 0}))
    where = ["--db", "q.db"] if backend == "sqlite" else []
    if where:
        assert run_orch(*where, "import", "--from", "QUEUE.md", cwd=repo).returncode == 0

    runners = [processes.orch(*where, "run", "--workers", "2", cwd=repo, name=f"run{n}") for n in (1, 2)]
    outputs = [finish(runner, timeout=60) for runner in runners]

    lines = [line.split() for line in log.read_text().splitlines()]
    assert Counter(item_id for item_id, _, _ in lines) == Counter(ids)  # each item's worker ran exactly once
    assert {int(pid) for _, _, pid in lines} == {runner.pid for runner in runners}  # both runners took items
    store = SqliteStore(repo / "q.db") if where else MarkdownStore(repo / "QUEUE.md")
    ran = {item_id: attempt for item_id, attempt, _ in lines}
    for item in store.items():
        *before, last = item.note_list()
        assert last == f"done:{ran[item.id]}"
        assert all(note.startswith(("error:git worktree add", "retry:", "retry_not_before=")) for note in before)
    finished = [int(out.split("run finished: ")[1].split()[0]) for out in outputs]
    assert sum(finished) == sum(int(attempt) for attempt in ran.values())


def test_concurrent_attempts_survive_a_git_worktree_add_in_flight(tmp_path):
    make_repo(tmp_path, [row("A-1"), row("B-1")], config(QUICK))
    shim = tmp_path / "bin" / "git"
    shim.parent.mkdir()
    shim.write_text(GIT_SHIM.format(python=PY, git=shutil.which("git")))
    shim.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}

    ran = subprocess.run(orch_argv("run", "--workers", "2"), cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=WAIT)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / ".git" / "shim-leader").is_dir()  # the shim played its part
    notes = {item.id: item.note_list() for item in items(tmp_path).values()}
    assert notes == {"A-1": ["done:1"], "B-1": ["done:1"]}, ran.stdout


# --- demo and retry --run ----------------------------------------------------------------------


def test_demo_runs_the_main_job_end_to_end(tmp_path):
    folder = tmp_path / "demo"
    done = run_orch("demo", "--dir", str(folder), cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    first_end = next(k for k, line in enumerate(lines) if " SUCCESS (" in line or " FAILED (" in line)
    assert sum(" attempt 1 started in " in line for line in lines[:first_end]) >= 2  # workers run at once (3)
    queue = items(folder)
    assert {item_id: item.status.value for item_id, item in queue.items()} == {
        **{f"DEMO-{n}": "DONE" for n in range(1, 6)}, "DEMO-6": "BLOCKED",
    }  # fmt: skip
    assert queue["DEMO-6"].note_list()[-1] == "intervention:max steps reached (3)"
    assert git(folder, "log", "--format=%s", "main..orch/DEMO-2/1").splitlines() == [
        "DEMO-2 step 2: SUCCESS", "DEMO-2 step 1: CONTINUE",
    ]  # fmt: skip
    notes = queue["DEMO-5"].note_list()
    assert notes[0].startswith("error:") and notes[-1] == "done:2"
    assert [manifest(folder, "DEMO-5", n)["state"] for n in (1, 2)] == ["FAILED", "SUCCESS"]
    assert f"Where to look (in {folder}):" in done.stdout
    assert "git log --format='%h %s' orch/DEMO-2/1" in done.stdout
    assert "summary PENDING=0 IN_PROGRESS=0 BLOCKED=1 FAILED=0 DONE=5" in done.stdout


def test_the_demo_makes_its_own_folder_when_given_none(tmp_path):
    done = run_orch("demo", "--workers", "2", cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    folder = Path(done.stdout.splitlines()[0].removeprefix("demo repository: "))
    try:
        assert folder.is_absolute() and not folder.is_relative_to(tmp_path)
        assert git(folder, "branch", "--list", "orch/*").count("orch/") == 7
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_max_steps_from_the_cli_ends_the_attempt_asking_a_human(tmp_path):
    failing = {"kind": "command", "argv": [PY, "-c", "import sys; print('1 test failed'); sys.exit(1)"]}
    make_repo(tmp_path, [row("X-1")], config(QUICK, failing, max_steps=5))
    done = run_orch("run", "--max-steps", "2", cwd=tmp_path, timeout=WAIT)
    assert (done.returncode, done.stderr) == (0, "")
    assert "X-1 INTERVENTION_REQUIRED (intervention:max steps reached (2)) after 2 steps" in done.stdout
    item = items(tmp_path)["X-1"]
    assert item.status.value == "BLOCKED" and item.note_list() == ["intervention:max steps reached (2)"]
    assert git(tmp_path, "log", "--format=%s", "main..orch/X-1/1").splitlines() == [
        "X-1 step 2: CONTINUE", "X-1 step 1: CONTINUE",
    ]  # fmt: skip
    assert manifest(tmp_path, "X-1", 1)["state"] == "INTERVENTION_REQUIRED"


def test_retry_run_resets_a_failed_item_and_runs_only_it(tmp_path):
    failed = "| X-1 | FAILED | a task | | | 1 | | | | error:boom |\n"
    make_repo(tmp_path, [failed, row("Y-1")], config(QUICK))
    done = run_orch("retry", "--id", "X-1", "--run", cwd=tmp_path, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "X-1 -> PENDING"
    assert "X-1 attempt 2 started" in done.stdout
    queue = items(tmp_path)
    assert queue["X-1"].note_list() == ["error:boom", "retry:1", "done:2"]
    assert queue["Y-1"].status.value == "PENDING"  # --run runs the retried item, nothing else
    assert manifest(tmp_path, "X-1", 2)["state"] == "SUCCESS"


def test_run_id_runs_only_that_item_from_the_configured_base_ref(tmp_path):
    make_repo(tmp_path, [row("A-1"), row("B-2")], config(QUICK, base_ref="release"))
    git(tmp_path, "checkout", "-q", "-b", "release")
    (tmp_path / "ONLY_ON_RELEASE").write_text("r\n")
    git(tmp_path, "add", "ONLY_ON_RELEASE")
    git(tmp_path, "commit", "-q", "-m", "release only")
    release = git(tmp_path, "rev-parse", "release").strip()
    git(tmp_path, "checkout", "-q", "main")
    done = run_orch("run", "--id", "B-2", cwd=tmp_path, timeout=WAIT)
    assert (done.returncode, done.stderr) == (0, "")
    queue = items(tmp_path)
    assert (queue["A-1"].status.value, queue["B-2"].status.value) == ("PENDING", "DONE")
    assert git(tmp_path, "merge-base", "orch/B-2/1", "release").strip() == release  # started from base_ref
    (tmp_path / "orch.yaml").write_text(yaml.safe_dump(config(QUICK, base_ref="no-such-branch")))
    refused = run_orch("run", "--id", "A-1", cwd=tmp_path, timeout=WAIT)
    assert refused.returncode == 2 and "base ref 'no-such-branch' is not a commit" in refused.stderr
    assert items(tmp_path)["A-1"].status.value == "PENDING"
