"""The markdown store under real concurrency: many writers, hand edits without the lock, SIGKILL.

Every test uses real processes. Workers that must race are started together:
each reports ``ready`` on stdout and then blocks until the test writes ``go``
to its stdin. Every wait has a timeout, and nothing asserts on timing; the
SIGKILL test uses timing only to choose *when* to kill, never to judge the result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator import model
from orchestrator.queuefile import QueueFile
from orchestrator.store.markdown import TEMP_MARK, MarkdownStore
from tests.conftest import SAMPLE_QUEUE, orch_argv, run_orch
from tests.workers import env, finish, started_together

WORKER_TIMEOUT = 120.0
"""Seconds a group of workers may take from start to finish; far above a normal run."""

WORKER = textwrap.dedent(
    """\
    import json, sys
    from orchestrator.cli import cli

    commands = json.loads(sys.argv[1])
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    if sys.stdin.readline() != "go\\n":
        raise SystemExit("worker: no go signal")
    for argv in commands:
        cli.main(argv, standalone_mode=False)
    """
)
"""Runs ``orch`` commands in-process through the real CLI, after the go signal.

In-process because 400 ``orch`` process starts under lock contention take about
a minute on two cores; the SIGKILL test below starts a real ``orch`` each time.
"""

EDITOR = textwrap.dedent(
    """\
    import json, os, sys

    path, how, edits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with open(path, "rb") as f:
        data = f.read()
    for old, new in edits:
        assert data.count(old.encode()) == 1, old
        data = data.replace(old.encode(), new.encode())
    if how == "in-place":
        with open(path, "wb") as f:
            f.write(data)
    else:
        with open(path + ".editor-swap", "wb") as f:
            f.write(data)
        os.replace(path + ".editor-swap", path)
    """
)
"""A person's editor: saves the queue with a hand edit, without taking orch's lock."""


def _temp_files(folder: Path) -> set[str]:
    return {name for name in os.listdir(folder) if TEMP_MARK in name}


def _started_together(command_lists: list[list[list[str]]]):
    """One worker process per command list, all released at the same moment."""
    return started_together([[sys.executable, "-c", WORKER, json.dumps(c)] for c in command_lists], WORKER_TIMEOUT)


def _events(folder: Path) -> list[dict]:
    path = folder / ".orch" / "events.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- many writers at once ---------------------------------------------------------


def test_eight_processes_adding_at_once_lose_nothing(queue_file: Path) -> None:
    workers, per_worker = 8, 50
    titles = [[f"worker {w} item {k:02d} | piped" for k in range(per_worker)] for w in range(workers)]
    commands = [[["--queue", str(queue_file), "add", "--title", title] for title in own] for own in titles]

    with _started_together(commands) as procs:
        outputs = finish(procs)

    printed = [line for out in outputs for line in out.splitlines()]
    assert len(printed) == workers * per_worker
    assert len(set(printed)) == workers * per_worker

    data = queue_file.read_bytes()
    queue = QueueFile.load(str(queue_file), data)
    original = QueueFile.load("sample", SAMPLE_QUEUE.encode()).items
    assert queue.items[: len(original)] == original
    added = queue.items[len(original) :]
    assert len(added) == workers * per_worker
    assert {item.id for item in added} == set(printed)
    assert all(item.status is model.Status.PENDING for item in added)
    assert Counter(item.title for item in added) == Counter(t for own in titles for t in own)
    position = {item.title: k for k, item in enumerate(added)}
    for own in titles:  # each worker's items stay in the order it added them
        assert [position[title] for title in own] == sorted(position[title] for title in own)

    # Prose, header and the original rows are byte-identical; only rows were appended.
    text = data.decode("utf-8")
    table_end = SAMPLE_QUEUE.index("\n\nProse after the table.") + 1
    head, tail = SAMPLE_QUEUE[:table_end], SAMPLE_QUEUE[table_end:]
    assert text.startswith(head)
    assert text.endswith(tail)
    new_rows = text[len(head) : -len(tail)].splitlines()
    assert len(new_rows) == workers * per_worker
    assert all(row.startswith("| ORCH-") and row.endswith(" |") for row in new_rows)

    added_events = [e for e in _events(queue_file.parent) if e["event"] == "ADDED"]
    assert sorted(e["id"] for e in added_events) == sorted(printed)


def test_two_processes_changing_different_rows_at_once_lose_no_update(tmp_path: Path) -> None:
    rows, expected, cancelled, replanned = [], [], [], []
    for k in range(50):  # the two workers' rows alternate, so neighbouring lines change
        if k % 2 == 0:
            item_id = f"C-{k:02d}"
            rows.append(f"| {item_id} | PENDING | To cancel {k} | | |")
            expected.append(f"| {item_id} | BLOCKED | To cancel {k} | | cancelled_by_operator |")
            cancelled.append(item_id)
        else:
            item_id = f"R-{k:02d}"
            rows.append(f"| {item_id} | IN_PROGRESS | To replan {k} | w{k} | picked up |")
            expected.append(f"| {item_id} | BLOCKED | To replan {k} | w{k} | picked up; replan:why {item_id} |")
            replanned.append(item_id)
    before = "# Queue\n\nSome prose.\n\n| id | status | title | owner | notes |\n| --- | --- | --- | --- | --- |\n"
    after = "\nMore prose.\n"
    queue = tmp_path / "QUEUE.md"
    queue.write_text(before + "\n".join(rows) + "\n" + after, encoding="utf-8")

    cancels = [["--queue", str(queue), "cancel", "--id", item_id] for item_id in cancelled]
    replans = [["--queue", str(queue), "replan", "--id", i, "--notes", f"why {i}"] for i in reversed(replanned)]
    with _started_together([cancels, replans]) as procs:
        cancel_out, replan_out = finish(procs)

    assert cancel_out.splitlines() == [f"{item_id} -> BLOCKED" for item_id in cancelled]
    assert replan_out.splitlines() == [f"{item_id} -> BLOCKED" for item_id in reversed(replanned)]
    assert queue.read_text(encoding="utf-8") == before + "\n".join(expected) + "\n" + after
    assert Counter(e["event"] for e in _events(tmp_path)) == {"CANCELED": 25, "REPLANNED": 25}


# --- a person's editor saves without the lock --------------------------------------


def _editor_saves(path: Path, how: str, edits: list[tuple[str, str]]) -> None:
    argv = [sys.executable, "-c", EDITOR, str(path), how, json.dumps(edits)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


EDITOR_STYLES = ["in-place", "rename"]
CANCELLED_ROW = "| ORCH-001 | BLOCKED | Write the parser | | | 0 | cancelled_by_operator |"


def _cancel_while_editor_saves(queue_file: Path, how: str, edits: list[tuple[str, str]]):
    """Cancel ORCH-001; while orch holds the lock, the editor saves its hand edit."""
    seen: list[model.Item] = []

    def change(item: model.Item) -> model.Item:
        seen.append(item)
        if len(seen) == 1:
            _editor_saves(queue_file, how, edits)
        return model.cancel(item)

    result = MarkdownStore(queue_file).update("ORCH-001", change, actor="test", event="CANCELED")
    return result, seen


@pytest.mark.parametrize("how", EDITOR_STYLES)
def test_a_write_racing_an_editor_save_keeps_both_changes(queue_file: Path, how: str) -> None:
    edits = [
        (
            "Prose before the table | with a pipe that is not a table.",
            "Prose a person rewrote meanwhile.",
        ),
        ("| ORCH-003 | DONE | Ship it |", "| ORCH-003 | DONE | Ship it on Friday |"),
    ]
    result, seen = _cancel_while_editor_saves(queue_file, how, edits)

    assert len(seen) == 2  # the change was re-applied to the editor's version
    assert result.status is model.Status.BLOCKED
    expected = SAMPLE_QUEUE.replace("| ORCH-001 | PENDING | Write the parser | | | 0 | |", CANCELLED_ROW)
    for old, new in edits:
        expected = expected.replace(old, new)
    assert queue_file.read_text(encoding="utf-8") == expected
    assert [e["event"] for e in _events(queue_file.parent)] == ["CANCELED"]
    assert _temp_files(queue_file.parent) == set()


@pytest.mark.parametrize("how", EDITOR_STYLES)
def test_an_editor_retitling_the_row_orch_is_changing_keeps_both_changes(queue_file: Path, how: str) -> None:
    edits = [("| Write the parser |", "| Write the parser, with tests |")]
    result, seen = _cancel_while_editor_saves(queue_file, how, edits)

    assert [item.title for item in seen] == ["Write the parser", "Write the parser, with tests"]
    assert result.title == "Write the parser, with tests"
    assert result.status is model.Status.BLOCKED
    row = CANCELLED_ROW.replace("| Write the parser |", "| Write the parser, with tests |")
    expected = SAMPLE_QUEUE.replace("| ORCH-001 | PENDING | Write the parser | | | 0 | |", row)
    assert queue_file.read_text(encoding="utf-8") == expected
    assert [e["event"] for e in _events(queue_file.parent)] == ["CANCELED"]


# --- SIGKILL mid-rewrite -----------------------------------------------------------

BIG_ROWS = 5000
KILLS = 100
FILLER = "a long title so that the queue file is large (over 700 kB) and rewriting it takes a few milliseconds"


def _big_row(k: int, status: str = "PENDING", notes: str = "") -> str:
    notes_cell = f" {notes} " if notes else " "
    return f"| K-{k:05d} | {status} | Item {k}: {FILLER} |{notes_cell}|"


def _operation(k: int) -> tuple[list[str], str, str]:
    """Iteration k's command, the row line it should write and what it prints.

    Even k cancel, odd k replan; the rows are spread over the file.
    """
    row = (k * 57) % BIG_ROWS
    item_id = f"K-{row:05d}"
    if k % 2 == 0:
        args = ["cancel", "--id", item_id]
        return args, _big_row(row, "BLOCKED", "cancelled_by_operator"), f"{item_id} -> BLOCKED\n"
    args = ["replan", "--id", item_id, "--notes", f"kill test {k}"]
    return args, _big_row(row, "PENDING", f"replan:kill test {k}"), f"{item_id} -> PENDING\n"


def _expected_after(current: bytes, k: int) -> bytes:
    old_line = _big_row((k * 57) % BIG_ROWS).encode() + b"\n"
    assert current.count(old_line) == 1
    return current.replace(old_line, _operation(k)[1].encode() + b"\n")


def _folder_state(folder: Path) -> tuple[frozenset[str], tuple[int, int, int]]:
    """What a writer changes first: the folder's names, and the queue file's inode, size, mtime."""
    queue = (folder / "QUEUE.md").stat()
    return frozenset(os.listdir(folder)), (queue.st_ino, queue.st_size, queue.st_mtime_ns)


def _kill_at_some_point(proc: subprocess.Popen, folder: Path, k: int, typical: float) -> None:
    """SIGKILL the writer: for even k as soon as it starts writing, else after a delay.

    Even k: kill as soon as the folder changes (its temp file appears; a writer
    without a temp file would change QUEUE.md itself), plus 0-2.7 ms, so kills
    land while the file is written, fsynced, compared and replaced. Odd k: after
    a delay from 0 to 1.2 times a typical run, so kills also land during start-up,
    while waiting for or holding the lock, and after the process is done.
    """
    if k % 2 == 1:
        try:
            proc.wait(timeout=typical * 1.2 * (k // 2) / (KILLS // 2 - 1))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        return
    untouched = _folder_state(folder)
    deadline = time.monotonic() + WORKER_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        if _folder_state(folder) != untouched:
            extra = time.monotonic() + (k // 2 % 10) * 0.0003
            while time.monotonic() < extra:
                pass
            proc.send_signal(signal.SIGKILL)
            return


def test_killing_writers_mid_rewrite_leaves_the_old_or_the_new_queue(tmp_path: Path) -> None:
    before = "# Big queue\n\nProse before.\n\n| id | status | title | notes |\n| --- | --- | --- | --- |\n"
    after = "\nProse after.\n"
    queue = tmp_path / "QUEUE.md"
    queue.write_text(before + "".join(_big_row(k) + "\n" for k in range(BIG_ROWS)) + after, encoding="utf-8")

    # One undisturbed run: it checks the expected line edit and times a typical run.
    current = queue.read_bytes()
    started = time.monotonic()
    args, _, printed = _operation(KILLS)
    done = run_orch("--queue", str(queue), *args)
    typical = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == (printed, "")
    assert queue.read_bytes() == _expected_after(current, KILLS)
    current = queue.read_bytes()

    outcomes: Counter[str] = Counter()
    for k in range(KILLS):
        expected = _expected_after(current, k)
        proc = subprocess.Popen(
            orch_argv("--queue", str(queue), *_operation(k)[0]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(),
        )  # fmt: skip
        try:
            _kill_at_some_point(proc, tmp_path, k, typical)
            _, err = proc.communicate(timeout=WORKER_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
        data = queue.read_bytes()
        found = "old" if data == current else "new" if data == expected else "neither"
        assert proc.returncode in (0, -signal.SIGKILL), f"iteration {k}: exit {proc.returncode}\n{err.decode()}"
        if proc.returncode == 0:
            assert found == "new", f"iteration {k}: finished but the queue holds {found}"
        assert found != "neither", f"iteration {k}: killed writer left a queue that is neither old nor new"
        outcomes[f"{'finished' if proc.returncode == 0 else 'killed'}, {found}"] += 1
        if _temp_files(tmp_path):
            outcomes["temp file left"] += 1
        current = data
    print(f"typical run {typical:.3f}s; outcomes {dict(outcomes)}")

    # A stale temp file as a killed writer would leave, in case no kill left one.
    (tmp_path / f".QUEUE.md{TEMP_MARK}1-deadbeef").write_bytes(current[:1000])
    expected = _expected_after(current, KILLS + 1)
    args, _, printed = _operation(KILLS + 1)
    done = run_orch("--queue", str(queue), *args)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == (printed, "")
    assert queue.read_bytes() == expected
    assert _temp_files(tmp_path) == set()
    checked = run_orch("--queue", str(queue), "validate")
    assert checked.returncode == 0, checked.stderr
    assert (checked.stdout, checked.stderr) == (f"{queue}: ok ({BIG_ROWS} items)\n", "")
