"""orch init, the QUEUE.md merge driver through real git merges, and orch edit."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from orchestrator.cli import cli
from orchestrator.merge import merge_queues
from orchestrator.model import Status
from orchestrator.queuefile import QueueFile
from orchestrator.store.markdown import MarkdownStore
from tests.conftest import ROOT

HEAD = "# Q\n\n| id | status | title | notes |\n| --- | --- | --- | --- |\n"


def git(repo, *args, check=True):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=check)


def orch(cli_runner, repo, *args):
    result = cli_runner.invoke(cli, ["--queue", str(repo / "QUEUE.md"), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def repo(git_repo, cli_runner, monkeypatch):
    monkeypatch.chdir(git_repo)
    assert cli_runner.invoke(cli, ["init"]).exit_code == 0
    (git_repo / "QUEUE.md").write_text(HEAD + "| A | PENDING | first | |\n| B | FAILED | second | error:x |\n")
    git(git_repo, "add", "--all")
    git(git_repo, "commit", "-q", "-m", "base")
    return git_repo


def branch(repo, name, change):
    git(repo, "checkout", "-q", "-b", name, "main")
    change()
    git(repo, "commit", "-q", "-am", name)
    git(repo, "checkout", "-q", "main")


def test_init_sets_everything_up_and_twice_changes_nothing(git_repo, cli_runner, monkeypatch):
    monkeypatch.chdir(git_repo)
    first = cli_runner.invoke(cli, ["init"])
    assert first.exit_code == 0 and "created QUEUE.md" in first.stdout
    snapshot = {p.name: p.read_bytes() for p in git_repo.iterdir() if p.is_file()}
    config = git(git_repo, "config", "--get", "merge.orch-queue.driver").stdout
    second = cli_runner.invoke(cli, ["init"])
    assert second.stdout == "already set up: nothing to do\n"
    assert {p.name: p.read_bytes() for p in git_repo.iterdir() if p.is_file()} == snapshot
    assert "QUEUE.md merge=orch-queue" in (git_repo / ".gitattributes").read_text()
    assert ".orch/" in (git_repo / ".gitignore").read_text().split()
    assert "merge-driver %O %A %B" in config
    assert cli_runner.invoke(cli, ["validate"]).exit_code == 0
    import yaml

    from orchestrator.config import parse_config

    parse_config(yaml.safe_load((git_repo / "orch.yaml").read_text()))  # the commented defaults are valid


def test_appends_on_both_branches_are_kept(repo, cli_runner):
    branch(repo, "left", lambda: orch(cli_runner, repo, "add", "--title", "from left", "--id", "L"))
    branch(repo, "right", lambda: orch(cli_runner, repo, "add", "--title", "from right", "--id", "R"))
    git(repo, "merge", "-q", "left", "-m", "left")
    done = git(repo, "merge", "-q", "right", "-m", "right", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    items = QueueFile.load("Q", (repo / "QUEUE.md").read_bytes()).items
    assert [item.id for item in items] == ["A", "B", "L", "R"]


def test_different_cells_of_one_row_merge(repo, cli_runner):
    def retitle():
        text = (repo / "QUEUE.md").read_text().replace("| A | PENDING | first |", "| A | PENDING | first, renamed |")
        (repo / "QUEUE.md").write_text(text)

    branch(repo, "title", retitle)
    branch(repo, "cancel", lambda: orch(cli_runner, repo, "cancel", "--id", "A"))
    git(repo, "merge", "-q", "title", "-m", "t")
    assert git(repo, "merge", "-q", "cancel", "-m", "c", check=False).returncode == 0
    item = QueueFile.load("Q", (repo / "QUEUE.md").read_bytes()).items[0]
    assert (item.title, item.status.value, item.notes) == ("first, renamed", "BLOCKED", "cancelled_by_operator")


def test_one_branch_cancelling_what_another_retried_conflicts_on_that_row_only(repo, cli_runner):
    branch(repo, "cancel", lambda: orch(cli_runner, repo, "cancel", "--id", "A"))

    def retry_a():
        orch(cli_runner, repo, "replan", "--id", "A", "--notes", "go")  # PENDING stays PENDING with a note
        text = (repo / "QUEUE.md").read_text().replace("| A | PENDING |", "| A | IN_PROGRESS |")
        (repo / "QUEUE.md").write_text(text)
        orch(cli_runner, repo, "add", "--title", "unrelated", "--id", "C")

    branch(repo, "run", retry_a)
    git(repo, "merge", "-q", "cancel", "-m", "c")
    done = git(repo, "merge", "run", "-m", "r", check=False)
    assert done.returncode != 0
    text = (repo / "QUEUE.md").read_text()
    lines = text.splitlines()
    start, end = lines.index("<<<<<<< ours"), lines.index(">>>>>>> theirs")
    assert lines[start + 1].startswith("| A | BLOCKED") and lines[end - 1].startswith("| A | IN_PROGRESS")
    assert end - start == 4  # just that row, both versions
    assert "| B | FAILED | second | error:x |" in lines and any(line.startswith("| C |") for line in lines)
    validate = subprocess.run([sys.executable, "-m", "orchestrator", "validate"], cwd=repo, capture_output=True,
                              text=True)  # fmt: skip
    assert validate.returncode == 2 and "conflict marker" in validate.stderr


def test_notes_appended_on_both_sides_keep_both():
    base = (HEAD + "| A | FAILED | t | error:x |\n").encode()
    ours = (HEAD + "| A | FAILED | t | error:x; seen by ops |\n").encode()
    theirs = (HEAD + "| A | FAILED | t | error:x; looked at logs |\n").encode()
    result = merge_queues(base, ours, theirs)
    assert result.conflicts == 0
    assert QueueFile.load("Q", result.data).items[0].notes == "error:x; seen by ops; looked at logs"


def test_prose_merges_around_the_table():
    base = ("intro\n\n" + HEAD + "| A | DONE | t | |\n\nend\n").encode()
    ours = ("intro, edited\n\n" + HEAD + "| A | DONE | t | |\n\nend\n").encode()
    theirs = ("intro\n\n" + HEAD + "| A | DONE | t | |\n| B | PENDING | u | |\n\nend, too\n").encode()
    result = merge_queues(base, ours, theirs)
    assert result.conflicts == 0
    assert result.data.decode().startswith("intro, edited\n") and result.data.decode().endswith("end, too\n")


def test_an_unparseable_side_falls_back_to_a_normal_conflict():
    base = (HEAD + "| A | DONE | t | |\n").encode()
    ours = (HEAD + "| A | DONE | t |\n").encode()  # broken row
    theirs = (HEAD + "| A | FAILED | t | |\n").encode()
    result = merge_queues(base, ours, theirs)
    assert result.conflicts >= 1 and b"<<<<<<< ours" in result.data


def test_edit_replaces_the_queue_only_when_valid(queue_file, cli_runner, monkeypatch, tmp_path):
    script = tmp_path / "editor.py"
    script.write_text("import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
                      "p.write_text(p.read_text().replace('Ship it', 'Ship it now'))\n")  # fmt: skip
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    result = cli_runner.invoke(cli, ["--queue", str(queue_file), "edit"])
    assert result.exit_code == 0, result.output
    assert "| Ship it now |" in queue_file.read_text()
    script.write_text("import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
                      "p.write_text(p.read_text().replace('| DONE |', '| FINISHED |'))\n")  # fmt: skip
    before = queue_file.read_bytes()
    result = cli_runner.invoke(cli, ["--queue", str(queue_file), "edit"])
    assert result.exit_code == 2
    assert "unknown status 'FINISHED'" in result.stderr and "kept in" in result.stderr
    assert queue_file.read_bytes() == before
    kept = list((queue_file.parent / ".orch" / "edit").glob("*.rejected-*.md"))
    assert len(kept) == 1 and "| FINISHED |" in kept[0].read_text()


# An editor that checks the queue is locked, starts another writer (`orch claim`) and waits until
# that writer has queued its claim for the lock, then edits the draft.
LOCK_CHECKING_EDITOR = """\
import subprocess, sys, time
from pathlib import Path
from filelock import FileLock, Timeout
queue, draft = Path(sys.argv[1]), Path(sys.argv[2])
try:
    FileLock(str(queue) + ".lock").acquire(timeout=0)
    sys.exit("the queue is not locked while the editor runs")
except Timeout:
    pass
with open(queue.parent / "claim.out", "w") as out:
    claim = subprocess.Popen([sys.executable, "-m", "orchestrator", "--queue", str(queue), "claim", "--owner", "w9",
                              "--id", "ORCH-001"], stdout=out, stderr=out)
deadline = time.monotonic() + 60
while not list((queue.parent / ".orch" / "spool").glob("*.req")):
    if claim.poll() is not None:
        sys.exit("the claim did not wait for the lock")
    if time.monotonic() > deadline:
        sys.exit("the claim never asked for the lock")
    time.sleep(0.01)
draft.write_text(draft.read_text().replace("Write the parser", "Write the parser today"))
"""


def test_edit_holds_the_lock_so_another_writer_waits_and_then_applies_on_top(queue_file, cli_runner, monkeypatch,
                                                                             tmp_path):  # fmt: skip
    script = tmp_path / "editor.py"
    script.write_text(LOCK_CHECKING_EDITOR)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script} {queue_file}")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = cli_runner.invoke(cli, ["--queue", str(queue_file), "edit"])
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    assert result.stdout == f"{queue_file}: saved\n"
    deadline = time.monotonic() + 60  # the claim went on once the lock was free: wait for it, boundedly
    while MarkdownStore(queue_file).get("ORCH-001").status is not Status.IN_PROGRESS:
        assert time.monotonic() < deadline, (tmp_path / "claim.out").read_text()
        time.sleep(0.01)
    item = MarkdownStore(queue_file).get("ORCH-001")
    assert (item.title, item.owner) == ("Write the parser today", "w9")  # the edit, then the claim on top


def test_a_queue_changed_by_hand_while_editing_keeps_the_edit_in_a_recovery_file(queue_file, cli_runner, monkeypatch,
                                                                                tmp_path):  # fmt: skip
    script = tmp_path / "editor.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\nqueue, draft = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "queue.write_text(queue.read_text().replace('Flaky test', 'Flaky test, seen'))  # a hand edit, no lock\n"
        "draft.write_text(draft.read_text().replace('Ship it', 'Ship it now'))\n"
    )  # fmt: skip
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script} {queue_file}")
    result = cli_runner.invoke(cli, ["--queue", str(queue_file), "edit"])
    assert result.exit_code == 2 and result.stdout == ""
    [kept] = (queue_file.parent / ".orch" / "edit").glob("QUEUE.unsaved-*.md")
    assert result.stderr == (f"error: {queue_file} was changed by someone else meanwhile; "
                             f"your edit is kept in {kept}\n")  # fmt: skip
    assert "| Ship it now |" in kept.read_text() and "Flaky test, seen" not in kept.read_text()
    assert "Flaky test, seen" in queue_file.read_text() and "Ship it now" not in queue_file.read_text()


# --- merges that must not produce a queue that does not validate ---------------------------


def append_row(repo, line):
    def change():
        with (repo / "QUEUE.md").open("a") as stream:
            stream.write(line)

    return change


def validate(repo):
    return subprocess.run([sys.executable, "-m", "orchestrator", "validate"], cwd=repo, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip


def test_one_id_added_on_both_branches_in_different_case_and_rows_conflicts_on_the_whole_file(repo):
    """Rows merged by id keep both (ids differ in case), which does not validate; a line merge would
    take both cleanly (different places), which does not validate either: git must stop on a conflict."""

    def insert_after_a():
        text = (repo / "QUEUE.md").read_text()
        (repo / "QUEUE.md").write_text(text.replace("| first | |\n", "| first | |\n| N-1 | PENDING | from left | |\n"))

    branch(repo, "left", insert_after_a)
    branch(repo, "right", append_row(repo, "| n-1 | PENDING | from right | |\n"))
    left, right = (git(repo, "show", f"{name}:QUEUE.md").stdout for name in ("left", "right"))
    git(repo, "merge", "-q", "left", "-m", "left")
    done = git(repo, "merge", "right", "-m", "right", check=False)
    assert done.returncode != 0 and "CONFLICT" in done.stdout
    assert (repo / "QUEUE.md").read_text() == f"<<<<<<< ours\n{left}=======\n{right}>>>>>>> theirs\n"
    assert "QUEUE.md" in git(repo, "diff", "--name-only", "--diff-filter=U").stdout
    checked = validate(repo)
    assert checked.returncode == 2 and "conflict marker" in checked.stderr


def test_both_branches_adding_one_id_with_different_content_conflict_on_that_row(repo):
    branch(repo, "left", append_row(repo, "| N | PENDING | from left | |\n"))
    branch(repo, "right", append_row(repo, "| N | PENDING | from right | |\n"))
    git(repo, "merge", "-q", "left", "-m", "left")
    assert git(repo, "merge", "right", "-m", "right", check=False).returncode != 0
    lines = (repo / "QUEUE.md").read_text().splitlines()
    start = lines.index("<<<<<<< ours")
    assert lines[start:] == ["<<<<<<< ours", "| N | PENDING | from left | |", "=======",
                             "| N | PENDING | from right | |", ">>>>>>> theirs"]  # fmt: skip
    assert validate(repo).returncode == 2


def test_a_branch_that_changes_the_columns_falls_back_to_a_normal_conflict(repo):
    def add_owner_column():
        text = (repo / "QUEUE.md").read_text()
        text = text.replace(
            "| title | notes |\n| --- | --- | --- | --- |", "| title | owner | notes |\n| --- | --- | --- | --- | --- |"
        ).replace("| first | |", "| first | | |")
        (repo / "QUEUE.md").write_text(text.replace("| second | error:x |", "| second | | error:x |"))

    branch(repo, "columns", add_owner_column)
    branch(repo, "more", append_row(repo, "| C | PENDING | third | |\n"))
    git(repo, "merge", "-q", "columns", "-m", "columns")
    done = git(repo, "merge", "more", "-m", "more", check=False)
    assert done.returncode != 0 and "CONFLICT" in done.stdout
    ours = "| id | status | title | owner | notes |\n| --- | --- | --- | --- | --- |\n| A | PENDING | first | | |\n"
    theirs = "| id | status | title | notes |\n| --- | --- | --- | --- |\n| A | PENDING | first | |\n"
    # a line merge: the whole table, not one row, between the markers
    assert (repo / "QUEUE.md").read_text() == (
        f"# Q\n\n<<<<<<< ours\n{ours}| B | FAILED | second | | error:x |\n=======\n"
        f"{theirs}| B | FAILED | second | error:x |\n| C | PENDING | third | |\n>>>>>>> theirs\n"
    )
    assert validate(repo).returncode == 2
