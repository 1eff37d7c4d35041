"""Operator conveniences: watch, stale items, reassign, live progress."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import threading
import time
from queue import Queue

from orchestrator import operations
from orchestrator.cli import cli
from orchestrator.model import Item, Status
from orchestrator.procs import AgentProcess, ProcessRegistry
from orchestrator.progress import LiveProgress, bar
from orchestrator.store.markdown import MarkdownStore
from orchestrator.watch import watch
from tests.conftest import ROOT, orch_argv, run_orch
from tests.runs import config, git, make_repo
from tests.stores import make_store


def test_watch_prints_again_only_when_the_summary_changes():
    states = iter(["a", "a", "b", "b", "a"])
    printed, sleeps = [], []
    watch(lambda: next(states), 2.0, printed.append, sleep=sleeps.append, rounds=5)
    assert printed == ["a", "b", "a"]
    assert sleeps == [2.0] * 4


def test_watch_ends_quietly_on_ctrl_c():
    def snapshot() -> str:
        raise KeyboardInterrupt

    watch(snapshot, 1.0, print)  # returns instead of raising


def test_status_summary_is_the_first_line_only(cli_runner, queue_file):
    result = cli_runner.invoke(cli, ["--queue", str(queue_file), "status", "--summary"])
    assert result.stdout == "summary PENDING=1 IN_PROGRESS=1 BLOCKED=1 FAILED=1 DONE=1\n"


def test_expired_leases_and_dead_runners_show_as_stale(tmp_path, cli_runner):
    store = make_store("markdown", tmp_path)
    store.add([Item("a"), Item("b")], actor="t")
    store.claim("w2", lease=10_000_000_000, item_id="b")
    store.claim("w1", lease=10, now=1_000, item_id="a")  # a lease long expired by now
    dead = AgentProcess("b", 1, "worker", 999_999, 999_999, 1, 999_999, 1)  # a runner pid that is not running
    ProcessRegistry(tmp_path / ".orch").register(dead)
    assert operations.stale_items(store, tmp_path / ".orch") == {"a": "lease_expired", "b": "runner_gone"}
    queue = ["--queue", str(store.path)]
    status = cli_runner.invoke(cli, [*queue, "status"]).stdout
    assert "- a owner=w1" in status and "stale=lease_expired" in status and "stale=runner_gone" in status
    workers = json.loads(cli_runner.invoke(cli, [*queue, "workers", "--json"]).stdout)
    assert {load["owner"]: load["stale"] for load in workers["workers"]} == {"w1": ["a"], "w2": ["b"]}


def test_reassign_sends_a_blocked_item_to_another_agent(tmp_path, cli_runner):
    store = make_store("markdown", tmp_path)
    store.add([Item("a", Status.BLOCKED, agent="coder"), Item("b")], actor="t")
    (tmp_path / "orch.yaml").write_text("agents:\n  coder: {argv: [x]}\n  reviewer: {argv: [y]}\n")
    queue = ["--queue", str(store.path)]
    result = cli_runner.invoke(cli, [*queue, "reassign", "--id", "a", "--to", "reviewer"])
    assert result.stdout == "a -> PENDING (agent reviewer)\n"
    item = store.get("a")
    assert (item.status, item.agent, item.note_list()[-1]) == (Status.PENDING, "reviewer", "reassign:reviewer")
    assert store.claim("w", lease=60).item.agent == "reviewer"  # the normal claim picks it up
    refused = cli_runner.invoke(cli, [*queue, "reassign", "--id", "b", "--to", "reviewer"])
    assert refused.exit_code == 1 and "only BLOCKED or FAILED" in refused.stderr
    unknown = cli_runner.invoke(cli, [*queue, "reassign", "--id", "a", "--to", "nobody"])
    assert unknown.exit_code == 2 and "no agent of that name" in unknown.stderr


def test_reassign_needs_an_agent_column_in_a_markdown_queue(queue_file, cli_runner):
    result = cli_runner.invoke(cli, ["--queue", str(queue_file), "reassign", "--id", "ORCH-004", "--to", "x"])
    assert result.exit_code == 2 and "no 'agent' column" in result.stderr
    assert MarkdownStore(queue_file).get("ORCH-004").status is Status.FAILED


def test_live_progress_redraws_its_block_below_the_events():
    out = io.StringIO()
    rows = iter([["  a step 1"], ["  a step 2"], []])
    live = LiveProgress(out, lambda: next(rows))
    live.line("a started")
    live.line("a done")
    live.stop()
    assert out.getvalue() == "a started\n  a step 1\n\x1b[1F\x1b[Ja done\n  a step 2\n\x1b[1F\x1b[J"
    assert bar(5, 20, width=10) == "[##........] 5/20"


def test_a_reassigned_item_runs_its_next_attempt_with_the_new_agent(tmp_path):
    settings = config({"kind": "scripted", "steps": [{"write": {"by.txt": "w\n"}}]})
    for name in ("coder", "reviewer"):
        settings["agents"][name] = {"kind": "scripted", "steps": [{"write": {"by.txt": f"{name}\n"}}]}
    queue = make_repo(tmp_path, ["| A | BLOCKED | a task | | | 1 | | coder | | intervention:stuck |\n"], settings)
    moved = run_orch("--queue", str(queue), "reassign", "--id", "A", "--to", "reviewer", cwd=tmp_path)
    assert (moved.returncode, moved.stdout, moved.stderr) == (0, "A -> PENDING (agent reviewer)\n", "")
    done = run_orch("run", "--once", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "- A attempt 2: SUCCESS branch orch/A/2" in done.stdout
    manifest = json.loads((tmp_path / ".orch/runs/A/2/job_manifest.json").read_text())
    assert [step["worker"]["agent"] for step in manifest["steps"]] == ["reviewer"]
    assert git(tmp_path, "show", "orch/A/2:by.txt") == "reviewer\n"
    evidence = json.loads(git(tmp_path, "show", "orch/A/2:.orch-evidence/A/attempt-2/step-01/step.json"))
    assert evidence["worker"]["agent"] == "reviewer"
    assert MarkdownStore(queue).get("A").status is Status.DONE


def _lines_of(stream) -> Queue:
    """Each line ``stream`` gives, as it comes (a reader thread; get() with a timeout waits boundedly)."""
    lines: Queue = Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_status_watch_as_a_process_prints_on_change_only_and_ends_cleanly_on_sigint(queue_file):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = orch_argv("--queue", str(queue_file), "status", "--summary", "--watch", "--interval", "0.2")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = _lines_of(process.stdout)
        assert lines.get(timeout=60) == "summary PENDING=1 IN_PROGRESS=1 BLOCKED=1 FAILED=1 DONE=1\n"
        # each orch command below takes longer than an interval: unchanged looks print nothing
        assert run_orch("--queue", str(queue_file), "cancel", "--id", "ORCH-001").returncode == 0
        assert lines.get(timeout=60) == "summary PENDING=0 IN_PROGRESS=1 BLOCKED=2 FAILED=1 DONE=1\n"
        assert run_orch("--queue", str(queue_file), "add", "--title", "more", "--id", "ORCH-006").returncode == 0
        assert lines.get(timeout=60) == "summary PENDING=1 IN_PROGRESS=1 BLOCKED=2 FAILED=1 DONE=1\n"
        assert run_orch("--queue", str(queue_file), "status", "--summary").returncode == 0  # a read: no change
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert lines.get(timeout=60) is None  # nothing more was printed
        assert process.stderr.read() == ""  # no traceback
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_orch_run_piped_prints_plain_lines(tmp_path):
    make_repo(tmp_path, ["| A | PENDING | a task | | | 0 | | | | |\n"], config({"kind": "scripted", "steps": [{}]}))
    done = run_orch("run", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr
    assert re.search(r"^A attempt 1 started in .+ on orch/A/1$", done.stdout, re.M)
    assert re.search(r"^A step 1: SUCCESS", done.stdout, re.M)


def test_orch_run_on_a_terminal_draws_the_progress_block_with_step_and_elapsed_time(tmp_path):
    make_repo(tmp_path, ["| A | PENDING | a task | | | 0 | | | | |\n"], config({"kind": "scripted", "steps": [{}]}))
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(orch_argv("run"), cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=slave,
                               stderr=subprocess.PIPE, env=env)  # fmt: skip
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            try:
                data = os.read(master, 65536) if ready else b""
            except OSError:  # EIO: the run ended and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert process.wait(timeout=60) == 0, process.stderr.read()
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    shown = b"".join(chunks).decode().replace("\r\n", "\n")
    # the event "step 1: SUCCESS" is printed while the attempt is still running: the block follows it
    block = re.search(r"A step 1: SUCCESS.*\n  A +attempt 1 +step 1 supervisor +\d+\.\ds\n", shown)
    assert block, shown
    assert "\x1b[1F\x1b[J" in shown  # the block is erased before the next line
    assert "run finished: 1 attempt" in shown
