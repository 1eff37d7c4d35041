"""The run loop with real git worktrees and real agent processes."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest

from orchestrator import manifest as states
from orchestrator import operations
from orchestrator import runner as runner_module
from orchestrator.errors import ConfigError
from orchestrator.model import Status
from orchestrator.runner import TRANSCRIPT_CAP, RunHooks
from orchestrator.store.markdown import MarkdownStore
from orchestrator.store.sqlite import SqliteStore
from tests.runs import PY, WAIT, config, git, make_repo, row, runner, wait_for

WRITE_FILE = {"kind": "scripted", "steps": [{"write": {"out.txt": "hello\n"}, "say": "wrote out.txt"}]}
# An agent that runs until the file named by its argument exists (at most 60 s).
HOLD = (
    "import pathlib, sys, time\n"
    "release, end = pathlib.Path(sys.argv[1]), time.monotonic() + 60\n"
    "while not release.exists() and time.monotonic() < end:\n"
    "    time.sleep(0.02)\n"
)


@pytest.mark.parametrize("backend", ["markdown", "sqlite"])
def test_success_path_commits_evidence_once_per_step_and_marks_done(tmp_path, backend):
    make_repo(tmp_path, [row("A-1", "write a file")], config(WRITE_FILE))
    run = runner(tmp_path, backend=backend)
    [outcome] = run.run()
    assert (outcome.state, outcome.steps, outcome.branch) == (states.SUCCESS, 1, "orch/A-1/1")
    item = run.store.get("A-1")
    assert item.status is Status.DONE and item.note_list() == ["done:1"]
    log = git(tmp_path, "log", "--format=%s", "main..orch/A-1/1").splitlines()
    assert log == ["A-1 step 1: SUCCESS"]
    files = git(tmp_path, "show", "--name-only", "--format=", "orch/A-1/1").split()
    assert "out.txt" in files
    assert {f.rsplit("/", 1)[1] for f in files if f.startswith(".orch-evidence/A-1/attempt-1/step-01/")} == {
        "step.json", "verdict.json", "worker.prompt.md", "worker.transcript.txt",
        "supervisor.prompt.md", "supervisor.transcript.txt",
    } - {"verdict.json"}  # fmt: skip
    body = git(tmp_path, "show", "-s", "--format=%B", "orch/A-1/1")
    assert "Orch-Item: A-1" in body and "Orch-Verdict: SUCCESS" in body and "Orch-Worker-Log-Sha256: " in body
    data = json.loads((tmp_path / ".orch/runs/A-1/1/job_manifest.json").read_text())
    assert data["state"] == "SUCCESS" and len(data["steps"]) == 1
    assert data["steps"][0]["worker"]["exit_code"] == 0
    assert data["steps"][0]["commit"] == git(tmp_path, "rev-parse", "orch/A-1/1").strip()
    changed = {line[3:] for line in git(tmp_path, "status", "--porcelain").splitlines()}
    assert changed <= {"QUEUE.md"}  # the agent's work stays in its worktree


def test_supervisor_feedback_reaches_the_next_worker_prompt(tmp_path):
    supervisor = {"kind": "scripted", "steps": [
        {"verdict": {"verdict": "CONTINUE", "reason": "not yet", "feedback": "rename x to y"}},
        {"verdict": {"verdict": "SUCCESS", "reason": "good"}},
    ]}  # fmt: skip
    make_repo(tmp_path, [row("A-1")], config(WRITE_FILE, supervisor))
    [outcome] = runner(tmp_path).run()
    assert (outcome.state, outcome.steps) == (states.SUCCESS, 2)
    second = (tmp_path / ".orch/runs/A-1/1/step-02/worker.prompt.md").read_text()
    assert "rename x to y" in second
    assert git(tmp_path, "log", "--format=%s", "main..orch/A-1/1").splitlines() == [
        "A-1 step 2: SUCCESS", "A-1 step 1: CONTINUE",
    ]  # fmt: skip


def test_an_item_cancelled_after_a_step_never_starts_another_worker(tmp_path):
    again = {"kind": "scripted", "steps": [{"verdict": {"verdict": "CONTINUE", "reason": "not yet"}}]}
    make_repo(tmp_path, [row("A-1")], config(WRITE_FILE, again, max_steps=3))
    run = runner(tmp_path)

    class CancelAfterTheStep(RunHooks):
        def step(self, item, attempt, step, verdict):
            operations.cancel(run.store, item.id)  # what `orch cancel` does between two agent calls

    run.hooks = CancelAfterTheStep()
    [outcome] = run.run()
    assert (outcome.state, outcome.steps) == (states.CANCELED, 1)
    assert not (tmp_path / ".orch/runs/A-1/1/step-02").exists()  # asked the store before the next worker
    assert run.store.get("A-1").note_list() == ["cancelled_by_operator"]
    assert git(tmp_path, "log", "--format=%s", "main..orch/A-1/1").splitlines() == ["A-1 step 1: CONTINUE"]


def test_an_item_cancelled_while_its_supervisor_runs_ends_cancelled_with_the_step_committed(tmp_path):
    # The supervisor approves, but an operator cancelled the item meanwhile (from another process).
    cancel = ("import os, sys; from pathlib import Path; from orchestrator import operations; "
              "from orchestrator.store.markdown import MarkdownStore; "
              "operations.cancel(MarkdownStore(Path(sys.argv[1])), os.environ['ORCH_ID'])")  # fmt: skip
    supervisor = {"kind": "command", "argv": [PY, "-c", cancel, str(tmp_path / "QUEUE.md")]}
    make_repo(tmp_path, [row("A-1")], config(WRITE_FILE, supervisor))
    run = runner(tmp_path)
    [outcome] = run.run()
    assert (outcome.state, outcome.steps) == (states.CANCELED, 1)  # the completion was fenced off
    assert run.store.get("A-1").note_list() == ["cancelled_by_operator"]
    data = json.loads((tmp_path / ".orch/runs/A-1/1/job_manifest.json").read_text())
    assert data["state"] == "CANCELED" and len(data["steps"]) == 1
    assert git(tmp_path, "log", "--format=%s", "main..orch/A-1/1").splitlines() == ["A-1 step 1: SUCCESS"]


def test_evidence_commits_leave_gits_auto_maintenance_to_the_end_of_the_run(tmp_path, monkeypatch):
    make_repo(tmp_path, [row("A-1"), row("B-1")], config(WRITE_FILE))
    trace, maintained = tmp_path / "git-trace.txt", []
    monkeypatch.setenv("GIT_TRACE", str(trace))
    monkeypatch.setattr(runner_module, "maintain", maintained.append)
    assert [o.state for o in runner(tmp_path, workers=2).run()] == ["SUCCESS", "SUCCESS"]
    commands = [line.split("trace: built-in: ", 1)[1] for line in trace.read_text().splitlines() if "built-in" in line]
    assert sum(c.startswith("git commit") for c in commands) == 2
    assert not [c for c in commands if "maintenance" in c or c.startswith("git gc")]
    assert maintained == [tmp_path.resolve()]  # once, for both commits


def test_intervention_blocks_the_item_with_the_reason(tmp_path):
    supervisor = {"kind": "scripted", "steps": [{"say": "VERDICT: INTERVENTION_REQUIRED needs a product decision"}]}
    make_repo(tmp_path, [row("A-1")], config(WRITE_FILE, supervisor))
    run = runner(tmp_path)
    [outcome] = run.run()
    assert outcome.state == states.INTERVENTION_REQUIRED
    assert run.store.get("A-1").note_list() == ["intervention:needs a product decision"]


def test_running_out_of_steps_asks_a_human(tmp_path):
    failing = {"kind": "command", "argv": [PY, "-c", "import sys; print('1 test failed'); sys.exit(1)"]}
    make_repo(tmp_path, [row("A-1")], config(WRITE_FILE, failing, max_steps=2))
    run = runner(tmp_path)
    [outcome] = run.run()
    assert (outcome.state, outcome.steps) == (states.INTERVENTION_REQUIRED, 2)
    assert run.store.get("A-1").status is Status.BLOCKED
    assert "1 test failed" in (tmp_path / ".orch/runs/A-1/1/step-02/worker.prompt.md").read_text()


def test_an_unreadable_verdict_fails_closed(tmp_path):
    supervisor = {
        "kind": "command",
        "argv": [PY, "-c", "import os; open(os.environ['ORCH_VERDICT_FILE'], 'w').write('{oops')"],
    }
    make_repo(tmp_path, [row("A-1")], config(WRITE_FILE, supervisor))
    run = runner(tmp_path)
    assert run.run()[0].state == states.INTERVENTION_REQUIRED
    assert run.store.get("A-1").note_list() == ["intervention:verdict file is not JSON"]


def test_a_crashing_agent_fails_the_attempt_and_is_retried(tmp_path):
    crash_once = {
        "kind": "scripted",
        "steps": [{"write": {"a": "1"}, "on_attempt": {1: {"say": "segfault", "exit": 139}}}],
    }
    make_repo(tmp_path, [row("A-1")], config(crash_once, retry={"max_attempts": 2, "backoff_base": 0.01}))
    run = runner(tmp_path)
    first, second = run.run()
    assert (first.state, first.attempt, second.state, second.attempt) == ("FAILED", 1, "SUCCESS", 2)
    notes = run.store.get("A-1").note_list()
    assert notes[0] == "error:w exited 139: segfault" and notes[-1] == "done:2"


def test_a_step_timeout_stops_the_agent_and_fails_the_item(tmp_path):
    sleeper = {"kind": "command", "argv": [PY, "-c", "import time; time.sleep(60)"], "timeout": 0.5}
    make_repo(tmp_path, [row("A-1")], config(sleeper))
    run = runner(tmp_path)
    [outcome] = run.run()
    assert outcome.state == states.FAILED
    item = run.store.get("A-1")
    assert item.status is Status.FAILED and item.note_list() == ["timeout:0.5s"]
    history = json.loads((tmp_path / ".orch/runs/A-1/1/job_manifest.json").read_text())["history"]
    assert "orch retry --id A-1" in history[-1]["message"]
    assert run.registry.entries() == []


def test_the_job_timeout_bounds_the_whole_attempt(tmp_path):
    sleeper = {"kind": "command", "argv": [PY, "-c", "import time; time.sleep(60)"]}
    make_repo(tmp_path, [row("A-1")], config(sleeper))
    run = runner(tmp_path, job_timeout=0.5)
    run.run()
    assert run.store.get("A-1").note_list() == ["timeout:0.5s"]


def test_a_prompt_full_of_shell_syntax_reaches_the_agent_verbatim(tmp_path):
    title = "$(touch pwned) `id` ; rm -rf / && echo $HOME | tee x > y 'q' \"dq\" \\n"
    echo = {
        "kind": "command",
        "argv": [PY, "-c", "import sys, pathlib; pathlib.Path('seen.txt').write_text(sys.stdin.read())", "{id}"],
    }
    make_repo(tmp_path, [row("A-1", title.replace("|", "\\|"))], config(echo))
    run = runner(tmp_path)
    run.run()
    seen = (tmp_path / ".orch/worktrees/A-1/1/seen.txt").read_text()
    assert f"# Task A-1: {title}" in seen
    assert not (tmp_path / ".orch/worktrees/A-1/1/pwned").exists()


def test_a_missing_agent_program_is_a_config_error_before_any_claim(tmp_path):
    missing = {"kind": "command", "argv": ["no-such-agent-binary-xyz"]}
    make_repo(tmp_path, [row("A-1")], config(missing))
    with pytest.raises(ConfigError, match="no-such-agent-binary-xyz"):
        runner(tmp_path)
    assert "PENDING" in (tmp_path / "QUEUE.md").read_text()


@pytest.mark.parametrize(("agent", "said"), [("ghost", "no agent named 'ghost'"),
                                              ("broken", "no-such-agent-binary-xyz")])  # fmt: skip
def test_an_agent_a_pending_row_names_is_checked_before_any_claim(tmp_path, agent, said):
    settings = config(WRITE_FILE)
    settings["agents"]["broken"] = {"kind": "command", "argv": ["no-such-agent-binary-xyz"]}
    make_repo(tmp_path, [row("A-1"), row("B-2", agent=agent)], settings)
    with pytest.raises(ConfigError, match=f"{said}.*item B-2 names it in its agent column"):
        runner(tmp_path)
    assert operations.summarize(MarkdownStore(tmp_path / "QUEUE.md")).counts["PENDING"] == 2  # nothing claimed


def test_dependencies_run_in_order(tmp_path):
    make_repo(tmp_path, [row("B", deps="A"), row("A")], config(WRITE_FILE))
    outcomes = runner(tmp_path, workers=2).run()
    assert [o.item_id for o in outcomes] == ["A", "B"]


def test_an_attempt_number_repeated_by_a_reset_queue_gets_a_new_branch(tmp_path):
    make_repo(tmp_path, [row("A-1")], config(WRITE_FILE))
    runner(tmp_path).run()
    queue = tmp_path / "QUEUE.md"
    lines = [row("A-1").rstrip("\n") if line.startswith("| A-1 |") else line for line in queue.read_text().splitlines()]
    queue.write_text("\n".join(lines) + "\n")  # a hand reset: PENDING, attempts back to 0...
    (tmp_path / ".orch/leases.json").unlink()  # ...and no runtime memory of them (a fresh clone, say)
    [outcome] = runner(tmp_path).run()
    assert (outcome.state, outcome.branch) == ("SUCCESS", "orch/A-1/1.2")
    assert git(tmp_path, "rev-parse", "--verify", "orch/A-1/1").strip()  # the old branch is untouched
    assert (tmp_path / ".orch/runs/A-1/1/job_manifest.json").exists()
    assert (tmp_path / ".orch/runs/A-1/1.2/job_manifest.json").exists()


def test_the_worktree_pool_recycles_a_finished_worktree(tmp_path):
    make_repo(tmp_path, [row("A-1"), row("B-1")], config(WRITE_FILE, worktree_pool=2))
    run = runner(tmp_path, once=True)
    [first] = run.run()
    spares = list((tmp_path / ".orch" / "pool").iterdir())
    assert first.state == "SUCCESS" and len(spares) == 1
    [second] = runner(tmp_path, once=True).run()
    assert (second.state, second.branch) == ("SUCCESS", "orch/B-1/1")
    after = list((tmp_path / ".orch" / "pool").iterdir())
    assert len(after) == 1 and after != spares  # A-1's spare was taken, then B-1's returned (else there'd be 2)
    assert git(tmp_path, "log", "--format=%s", "main..orch/B-1/1").splitlines() == ["B-1 step 1: SUCCESS"]
    assert "out.txt" in git(tmp_path, "show", "--name-only", "--format=", "orch/B-1/1")
    assert git(tmp_path, "rev-parse", "orch/A-1/1") != git(tmp_path, "rev-parse", "orch/B-1/1")
    listed = git(tmp_path, "worktree", "list", "--porcelain")
    assert "prunable" not in listed


@pytest.mark.parametrize("backend", ["markdown", "sqlite"])
def test_an_attempt_running_past_its_lease_keeps_the_item_by_heartbeats(tmp_path, backend):
    repo, release = tmp_path / "repo", tmp_path / "release"
    make_repo(repo, [row("A-1")], config({"kind": "command", "argv": [PY, "-c", HOLD, str(release)]}, lease=1))
    run = runner(repo, backend=backend)
    outcomes: list = []
    thread = threading.Thread(target=lambda: outcomes.extend(run.run()), daemon=True)
    thread.start()
    try:
        first_end = wait_for(lambda: run.store.lease_until("A-1"), "the claim")
        wait_for(lambda: time.time() > first_end + 1, "a whole lease to pass after the first one ended")
        other = MarkdownStore(repo / "QUEUE.md") if backend == "markdown" else SqliteStore(repo / "queue.db")
        assert other.reap() == [] and other.claim("intruder", lease=1) is None
        item = other.get("A-1")
        assert (item.status, item.owner) == (Status.IN_PROGRESS, run.options.owner)
        assert other.lease_until("A-1") > first_end + 1
    finally:
        release.touch()
        thread.join(WAIT)
    [outcome] = outcomes
    assert outcome.state == states.SUCCESS
    assert run.store.get("A-1").note_list() == ["done:1"]


def test_the_evidence_transcript_is_capped_and_its_trailer_hashes_the_full_log(tmp_path):
    payload = "".join(f"line {n:06d} {'x' * 57}\n" for n in range(4000)).encode()  # 280,000 bytes
    assert len(payload) > 4 * TRANSCRIPT_CAP
    source = tmp_path / "payload.txt"
    source.write_bytes(payload)
    echo = "import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read())"
    loud = {"kind": "command", "argv": [PY, "-c", echo, str(source)]}
    repo = tmp_path / "repo"
    make_repo(repo, [row("A-1")], config(loud))
    [outcome] = runner(repo).run()
    assert outcome.state == states.SUCCESS
    assert (repo / ".orch/runs/A-1/1/step-01/worker.log").read_bytes() == payload  # the full log stays outside
    copy = git(repo, "show", "orch/A-1/1:.orch-evidence/A-1/attempt-1/step-01/worker.transcript.txt").encode()
    assert len(copy) == TRANSCRIPT_CAP and payload.endswith(copy)  # the evidence keeps the log's end
    digest = hashlib.sha256(payload).hexdigest()
    assert f"Orch-Worker-Log-Sha256: {digest}" in git(repo, "show", "-s", "--format=%B", "orch/A-1/1").splitlines()
    worker = json.loads((repo / ".orch/runs/A-1/1/job_manifest.json").read_text())["steps"][0]["worker"]
    assert (worker["log_sha256"], worker["log_bytes"]) == (digest, len(payload))


def test_an_attempt_ending_while_someone_holds_the_queue_waits_for_it(tmp_path):
    """A long ``orch edit`` (or any holder of the queue lock) must not kill the attempt that ends meanwhile."""
    import subprocess

    repo, release = tmp_path / "repo", tmp_path / "release"
    make_repo(repo, [row("A-1")], config({"kind": "command", "argv": [PY, "-c", HOLD, str(release)]}))
    lines: list[str] = []
    run = runner(repo, report=lines.append)
    run.store.lock_timeout = 0.3
    outcomes: list = []
    thread = threading.Thread(target=lambda: outcomes.extend(run.run()), daemon=True)
    thread.start()
    holder = subprocess.Popen([PY, "-c", "import sys; from filelock import FileLock\n"
                               "with FileLock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()",
                               str(repo / "QUEUE.md.lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        wait_for(lambda: run.store.get("A-1").status is Status.IN_PROGRESS, "the claim")
        assert holder.stdout.readline() == "held\n"
        release.touch()  # the worker ends while the queue is held
        wait_for(lambda: any("the queue is busy" in line for line in lines), "the complete to find the queue busy")
    finally:
        holder.communicate(timeout=WAIT)  # let go of the lock
        release.touch()
        thread.join(WAIT)
    [outcome] = outcomes
    assert outcome.state == states.SUCCESS and outcome.note == "done:1"
    assert run.store.get("A-1").status is Status.DONE
