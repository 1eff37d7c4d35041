"""The ops spec to the letter: output formats, status policies, safety checks, failure modes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.cli import cli
from orchestrator.model import Status
from orchestrator.store.markdown import MarkdownStore
from tests.conftest import ROOT, SAMPLE_QUEUE, run_orch


def invoke(runner, queue, *args, ok=True):
    result = runner.invoke(cli, ["--queue", str(queue), *args], catch_exceptions=not ok)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def rows(queue) -> dict[str, str]:
    """Each item's row line, by id."""
    return {line.split("|")[1].strip(): line for line in queue.read_text().splitlines() if line.startswith("| ORCH-")}


def test_status_prints_the_summary_then_the_oldest_in_progress(cli_runner, queue_file):
    result = invoke(cli_runner, queue_file, "status")
    assert result.stdout == (
        "summary PENDING=1 IN_PROGRESS=1 BLOCKED=1 FAILED=1 DONE=1\n"
        "top_in_progress:\n"
        "- ORCH-002 owner=w1 started=2026-11-25T10:00:00Z title=Fix | pipes\n"
    )
    assert result.stderr == ""


def test_status_says_none_when_nothing_runs(cli_runner, tmp_path):
    queue = tmp_path / "QUEUE.md"
    queue.write_text("| id | status |\n| --- | --- |\n| a | DONE |\n")
    assert invoke(cli_runner, queue, "status").stdout == (
        "summary PENDING=0 IN_PROGRESS=0 BLOCKED=0 FAILED=0 DONE=1\ntop_in_progress: none\n"
    )


def test_status_lists_at_most_five_running_items_oldest_first(cli_runner, tmp_path):
    queue = tmp_path / "QUEUE.md"
    starts = ["12", "09", "", "11", "08", "10", "07"]
    body = "".join(
        f"| r{k} | IN_PROGRESS | o{k} | {f'2026-11-25T{h}:00:00Z' if h else ''} |\n" for k, h in enumerate(starts)
    )
    queue.write_text("| id | status | owner | started |\n| --- | --- | --- | --- |\n" + body)
    lines = invoke(cli_runner, queue, "status").stdout.splitlines()
    assert lines[0] == "summary PENDING=0 IN_PROGRESS=7 BLOCKED=0 FAILED=0 DONE=0"
    assert [line.split()[1] for line in lines[2:]] == ["r6", "r4", "r1", "r5", "r3"]


def test_status_json_has_the_same_facts(cli_runner, queue_file):
    data = json.loads(invoke(cli_runner, queue_file, "status", "--json").stdout)
    assert data["summary"] == {"PENDING": 1, "IN_PROGRESS": 1, "BLOCKED": 1, "FAILED": 1, "DONE": 1}
    assert [item["id"] for item in data["top_in_progress"]] == ["ORCH-002"]


def test_workers_groups_running_items_by_owner(cli_runner, tmp_path):
    queue = tmp_path / "QUEUE.md"
    queue.write_text(
        "| id | status | owner | started |\n| --- | --- | --- | --- |\n"
        "| a | IN_PROGRESS | w2 | 2026-11-25T10:00:00Z |\n"
        "| b | IN_PROGRESS | w1 | 2026-11-25T11:00:00Z |\n"
        "| c | IN_PROGRESS | w2 | 2026-11-25T09:00:00Z |\n"
        "| d | PENDING | w3 | |\n"
    )
    assert invoke(cli_runner, queue, "workers").stdout == (
        "workers_active=2 in_progress=3\n"
        "- w2 tasks=2 ids=c,a oldest_start=2026-11-25T09:00:00Z\n"
        "- w1 tasks=1 ids=b oldest_start=2026-11-25T11:00:00Z\n"
    )
    data = json.loads(invoke(cli_runner, queue, "workers", "--json").stdout)
    assert data["workers"][0] == {
        "owner": "w2", "tasks": 2, "ids": ["c", "a"], "oldest_start": "2026-11-25T09:00:00Z", "stale": [],
    }  # fmt: skip


def test_workers_says_none_when_nothing_runs(cli_runner, tmp_path):
    queue = tmp_path / "QUEUE.md"
    queue.write_text("| id | status |\n| --- | --- |\n| a | PENDING |\n")
    assert invoke(cli_runner, queue, "workers").stdout == "workers_active=0 in_progress=0\nworkers: none\n"


@pytest.mark.parametrize("item_id", ["ORCH-001", "ORCH-002"])
def test_cancel_blocks_an_active_item_and_appends_the_note(cli_runner, queue_file, item_id):
    before = MarkdownStore(queue_file).get(item_id)
    assert invoke(cli_runner, queue_file, "cancel", "--id", item_id).stdout == f"{item_id} -> BLOCKED\n"
    after = MarkdownStore(queue_file).get(item_id)
    assert after.status is Status.BLOCKED
    assert after.note_list() == [*before.note_list(), "cancelled_by_operator"]


@pytest.mark.parametrize(("item_id", "why"), [("ORCH-003", "it is DONE"), ("ORCH-004", "it is FAILED"),
                                              ("ORCH-005", "it is BLOCKED already")])  # fmt: skip
def test_cancel_refuses_terminal_rows(cli_runner, queue_file, item_id, why):
    before = queue_file.read_bytes()
    result = invoke(cli_runner, queue_file, "cancel", "--id", item_id, ok=False)
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot cancel {item_id}: {why}\n"
    assert result.stdout == ""
    assert queue_file.read_bytes() == before


def test_an_unknown_id_is_refused_with_exit_1(cli_runner, queue_file):
    for args in (["cancel"], ["retry"], ["replan", "--notes", "x"], ["show"]):
        result = invoke(cli_runner, queue_file, *args, "--id", "ORCH-404", ok=False)
        assert result.exit_code == 1
        assert result.stderr == f"error: no item with id 'ORCH-404' in {queue_file}\n"


def test_an_id_that_cannot_exist_is_bad_input(cli_runner, queue_file):
    result = invoke(cli_runner, queue_file, "cancel", "--id", "../etc", ok=False)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: bad id '../etc'")


@pytest.mark.parametrize(
    ("item_id", "after"),
    [("ORCH-002", "BLOCKED"), ("ORCH-001", "PENDING"), ("ORCH-004", "PENDING"), ("ORCH-005", "PENDING"),
     ("ORCH-003", "PENDING")],
)  # fmt: skip
def test_replan_blocks_running_items_and_returns_the_rest_to_pending(cli_runner, queue_file, item_id, after):
    result = invoke(cli_runner, queue_file, "replan", "--id", item_id, "--notes", "scope split into W1/W2")
    assert result.stdout == f"{item_id} -> {after}\n"
    row = rows(queue_file)[item_id]
    assert row.rstrip(" |").endswith("replan:scope split into W1/W2")


def test_replan_to_pending_resets_the_owner(cli_runner, queue_file):
    invoke(cli_runner, queue_file, "replan", "--id", "ORCH-004", "--notes", "again")
    cells = [cell.strip() for cell in rows(queue_file)["ORCH-004"].split("|")[1:-1]]
    assert cells[:5] == ["ORCH-004", "PENDING", "Flaky test", "", ""]
    assert cells[6] == "error:boom; replan:again"


def test_replan_needs_notes(cli_runner, queue_file):
    missing = invoke(cli_runner, queue_file, "replan", "--id", "ORCH-001", ok=False)
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: Missing option '--notes' (see '") and "replan --help')" in missing.stderr
    blank = invoke(cli_runner, queue_file, "replan", "--id", "ORCH-001", "--notes", "  ", ok=False)
    assert blank.exit_code == 2
    assert blank.stderr.startswith("error: missing notes")


@pytest.mark.parametrize("item_id", ["ORCH-004", "ORCH-005"])
def test_retry_returns_failed_or_blocked_work_to_pending(cli_runner, queue_file, item_id):
    assert invoke(cli_runner, queue_file, "retry", "--id", item_id).stdout == f"{item_id} -> PENDING\n"
    assert rows(queue_file)[item_id].rstrip(" |").endswith("; retry:1")


@pytest.mark.parametrize("item_id", ["ORCH-001", "ORCH-002", "ORCH-003"])
def test_retry_refuses_items_that_are_not_failed_or_blocked(cli_runner, queue_file, item_id):
    result = invoke(cli_runner, queue_file, "retry", "--id", item_id, ok=False)
    assert result.exit_code == 1
    assert "only FAILED or BLOCKED items can be retried" in result.stderr


def test_a_missing_queue_is_bad_input(cli_runner, tmp_path):
    result = invoke(cli_runner, tmp_path / "nope.md", "status", ok=False)
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.md'}: no such queue file (pass --queue or run orch init)\n"


def test_the_queue_is_found_from_a_subfolder_up_to_the_repo_root(git_repo, monkeypatch, cli_runner):
    (git_repo / "QUEUE.md").write_text("| id | status |\n| --- | --- |\n| a | PENDING |\n")
    deep = git_repo / "src" / "pkg"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert cli_runner.invoke(cli, ["status"]).stdout.startswith("summary PENDING=1")


def test_the_search_stops_at_the_repo_root(git_repo, monkeypatch, cli_runner):
    (git_repo.parent / "QUEUE.md").write_text("| id | status |\n| --- | --- |\n")
    monkeypatch.chdir(git_repo)
    result = cli_runner.invoke(cli, ["status"])
    assert result.exit_code == 2
    assert "no QUEUE.md in" in result.stderr


def test_add_prints_a_new_id_with_the_configured_prefix(cli_runner, queue_file):
    (queue_file.parent / "orch.yaml").write_text("id_prefix: TASK-\n")
    new_id = invoke(cli_runner, queue_file, "add", "--title", "Write docs | fast").stdout.strip()
    assert new_id.startswith("TASK-") and len(new_id) == len("TASK-") + 6
    shown = json.loads(invoke(cli_runner, queue_file, "show", "--id", new_id, "--json").stdout)
    assert (shown["status"], shown["title"]) == ("PENDING", "Write docs | fast")


def test_reading_the_queue_needs_no_orch_yaml_but_changing_it_does(cli_runner, queue_file):
    (queue_file.parent / "orch.yaml").write_text("retry: [not, a, mapping]\n")
    for command in (["status"], ["workers"], ["show", "--id", "ORCH-002"]):
        invoke(cli_runner, queue_file, *command)
    result = invoke(cli_runner, queue_file, "add", "--title", "T", ok=False)
    assert result.exit_code == 2 and "orch.yaml" in result.stderr and "retry" in result.stderr


def test_add_with_an_id_and_columns(cli_runner, queue_file):
    out = invoke(cli_runner, queue_file, "add", "--title", "T", "--id", "X-1", "--set", "owner=me").stdout
    assert out == "X-1\n"
    assert rows(queue_file).get("X-1") is None  # not an ORCH- row; check the raw line instead
    assert "| X-1 | PENDING | T | me |" in queue_file.read_text()


def test_add_refuses_a_taken_id_and_unknown_columns(cli_runner, queue_file):
    before = queue_file.read_bytes()
    taken = invoke(cli_runner, queue_file, "add", "--title", "T", "--id", "orch-001", ok=False)
    assert taken.exit_code == 1 and "is taken already" in taken.stderr
    unknown = invoke(cli_runner, queue_file, "add", "--title", "T", "--set", "colour=red", ok=False)
    assert unknown.exit_code == 2 and "no column named 'colour'" in unknown.stderr
    malformed = invoke(cli_runner, queue_file, "add", "--title", "T", "--set", "novalue", ok=False)
    assert malformed.exit_code == 2 and "COLUMN=VALUE" in malformed.stderr
    assert queue_file.read_bytes() == before


def test_show_prints_row_notes_and_history(cli_runner, queue_file):
    invoke(cli_runner, queue_file, "cancel", "--id", "ORCH-002")
    text = invoke(cli_runner, queue_file, "show", "--id", "ORCH-002").stdout
    assert text.startswith("id: ORCH-002\nstatus: BLOCKED\ntitle: Fix | pipes\nowner: w1\n")
    assert "notes:\n  - picked up\n  - cancelled_by_operator\nhistory:\n" in text
    assert "operator@cli CANCELED IN_PROGRESS -> BLOCKED cancelled_by_operator" in text


def test_validate_reports_ok_and_works_on_named_files(cli_runner, queue_file, tmp_path):
    assert invoke(cli_runner, queue_file, "validate").stdout == f"{queue_file}: ok (5 items)\n"
    other = tmp_path / "other.md"
    other.write_text("no table\n")
    result = cli_runner.invoke(cli, ["validate", str(queue_file), str(other), "--json"])
    assert result.exit_code == 2
    reports = json.loads(result.stdout)
    assert [r["ok"] for r in reports] == [True, False]
    assert reports[1]["problems"][0]["line"] == 1


def test_help_touches_no_files(tmp_path, monkeypatch, cli_runner):
    monkeypatch.chdir(tmp_path)
    for args in ([], ["cancel", "--help"], ["status", "--help"], ["add", "--help"]):
        assert cli_runner.invoke(cli, [*args, "--help"] if not args else args).exit_code == 0
    assert list(tmp_path.iterdir()) == []


def test_every_command_has_help_text():
    for name, command in cli.commands.items():
        assert command.help and command.help.strip(), name


def test_ops_py_from_a_checkout_is_the_same_cli(queue_file):
    script = ROOT / "orchestrator" / "ops.py"
    done = subprocess.run(
        [sys.executable, str(script), "--queue", str(queue_file), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=queue_file.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == run_orch("--queue", str(queue_file), "status").stdout


def test_errors_from_a_real_process_go_to_stderr_with_exit_codes(queue_file):
    done = run_orch("--queue", str(queue_file), "cancel", "--id", "ORCH-003")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "error: cannot cancel ORCH-003: it is DONE\n")


def test_add_refuses_a_value_that_would_make_the_queue_invalid(cli_runner, tmp_path):
    queue = tmp_path / "QUEUE.md"
    queue.write_text("| id | status | title | depends_on |\n| --- | --- | --- | --- |\n| a | DONE | x | |\n")
    before = queue.read_bytes()
    result = invoke(cli_runner, queue, "add", "--title", "T", "--set", "depends_on=ghost", ok=False)
    assert result.exit_code == 2
    assert "depends on unknown id 'ghost'" in result.stderr and "nothing was written" in result.stderr
    assert queue.read_bytes() == before
    invoke(cli_runner, queue, "add", "--title", "T", "--id", "b", "--set", "depends_on=a")
    assert "| b | PENDING | T | a |" in queue.read_text()


def test_the_projects_own_queue_is_valid(cli_runner):
    result = cli_runner.invoke(cli, ["validate", str(ROOT / "QUEUE.md")])
    assert result.exit_code == 0, result.stderr


def test_usage_mistakes_are_error_lines_with_exit_2(queue_file):
    for args, said in ((["--bogus"], "No such option '--bogus' (see 'orch --help')"),
                       (["status", "--interval", "0"], "Invalid value for '--interval'"),
                       (["job", "status"], "Missing argument 'JOB_ID' (see 'orch job status --help')")):  # fmt: skip
        done = run_orch("--queue", str(queue_file), *args)
        assert done.returncode == 2 and done.stderr.startswith(f"error: {said}"), done.stderr
        assert "Usage:" not in done.stderr and "Traceback" not in done.stderr


def test_reading_a_database_that_does_not_exist_is_an_error_and_makes_none(tmp_path, cli_runner):
    missing = tmp_path / "typo.db"
    for command in (["status"], ["workers"], ["show", "--id", "X-1"], ["export", "--to", str(tmp_path / "Q.md")]):
        result = cli_runner.invoke(cli, ["--db", str(missing), *command])
        assert result.exit_code == 2, result.output
        assert result.stderr == f"error: {missing}: no such database (orch import --from QUEUE.md creates one)\n"
    assert not missing.exists() and not (tmp_path / "Q.md").exists()
    assert cli_runner.invoke(cli, ["--db", str(missing), "add", "--title", "first"]).exit_code == 0
    assert missing.exists()


@pytest.mark.parametrize("backend", ["markdown", "sqlite"])
def test_a_queue_that_cannot_be_written_is_an_error_line_and_left_as_it_was(tmp_path, backend):
    queue = tmp_path / "QUEUE.md"
    queue.write_text(SAMPLE_QUEUE)
    where = ["--queue", str(queue)] if backend == "markdown" else ["--db", str(tmp_path / "q.db")]
    assert run_orch(*where, "add", "--title", "before").returncode == 0
    lock = tmp_path / ("QUEUE.md.lock" if backend == "markdown" else "q.db-lock")
    lock.unlink(missing_ok=True)
    lock.mkdir()  # (tests run as root, so a read-only folder would not stop the write)
    before = run_orch(*where, "status").stdout
    done = run_orch(*where, "add", "--title", "after")
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"error: {lock}: Is a directory\n"
    assert run_orch(*where, "status").stdout == before


def test_the_ops_commands_say_the_same_on_a_database_as_on_the_markdown_queue(tmp_path, cli_runner, queue_file):
    db = ["--db", str(tmp_path / "q.db")]
    assert cli_runner.invoke(cli, [*db, "import", "--from", str(queue_file)]).exit_code == 0
    for command in (["status"], ["workers"], ["cancel", "--id", "ORCH-001"], ["cancel", "--id", "ORCH-003"],
                    ["replan", "--id", "ORCH-002", "--notes", "split it"], ["retry", "--id", "ORCH-004"],
                    ["status", "--json"]):  # fmt: skip
        on_markdown = cli_runner.invoke(cli, ["--queue", str(queue_file), *command])
        on_database = cli_runner.invoke(cli, [*db, *command])
        # import gives the hand-set IN_PROGRESS row a lease from its start (long over); the markdown
        # queue holds no lease on it and never calls it stale
        said = (on_database.exit_code, on_database.stdout.replace(" stale=lease_expired", ""), on_database.stderr)
        if "--json" not in command:
            assert said == (on_markdown.exit_code, on_markdown.stdout, on_markdown.stderr), command
        else:
            assert json.loads(on_database.stdout)["summary"] == json.loads(on_markdown.stdout)["summary"]
    # which rows a retry takes differs on purpose: this markdown queue has no retry_not_before column,
    # so the ops spec's markdown mode (FAILED or BLOCKED) applies, and on a database the reliability policy
    refused = cli_runner.invoke(cli, [*db, "retry", "--id", "ORCH-005"])
    assert refused.exit_code == 1 and "only FAILED or timed-out IN_PROGRESS" in refused.stderr


def test_a_retry_past_max_attempts_is_refused_on_a_database(tmp_path, cli_runner):
    db = ["--db", str(tmp_path / "q.db")]
    item_id = cli_runner.invoke(cli, [*db, "add", "--title", "flaky", "--set", "max_attempts=1"]).stdout.strip()
    taken = json.loads(cli_runner.invoke(cli, [*db, "claim", "--owner", "w1", "--json"]).stdout)
    assert cli_runner.invoke(cli, [*db, "fail", "--id", item_id, "--owner", "w1", "--attempt",
                                   str(taken["attempt"]), "--reason", "boom"]).exit_code == 0  # fmt: skip
    refused = cli_runner.invoke(cli, [*db, "retry", "--id", item_id])
    assert refused.exit_code == 1 and "1 of 1 attempts used" in refused.stderr, refused.stderr


def test_headers_are_read_whatever_their_case(cli_runner, tmp_path):
    queue = tmp_path / "QUEUE.md"
    queue.write_text("| ID | Status | Title |\n| --- | --- | --- |\n| A-1 | PENDING | one |\n")
    invoke(cli_runner, queue, "cancel", "--id", "A-1")
    assert queue.read_text().splitlines()[2] == "| A-1 | BLOCKED | one |"
    summary = invoke(cli_runner, queue, "status", "--summary").stdout
    assert summary.startswith("summary PENDING=0 IN_PROGRESS=0 BLOCKED=1")


def test_new_ids_made_on_two_branches_do_not_collide(cli_runner, tmp_path):
    made = []
    for branch in ("left", "right"):
        queue = tmp_path / branch / "QUEUE.md"
        queue.parent.mkdir()
        queue.write_text(SAMPLE_QUEUE)  # the same starting point, as two branches of one repository have
        made.append({invoke(cli_runner, queue, "add", "--title", f"t{n}").stdout.strip() for n in range(50)})
    assert len(made[0]) == len(made[1]) == 50 and not made[0] & made[1]


def test_show_sums_usage_and_cost_over_every_attempt(cli_runner, queue_file):
    runs = queue_file.parent / ".orch" / "runs" / "ORCH-004"
    for attempt, usage in ((1, {"input_tokens": 100, "output_tokens": 20, "total_cost_usd": 0.25}),
                           (2, {"input_tokens": 50, "output_tokens": 5, "total_cost_usd": 0.125})):  # fmt: skip
        (runs / str(attempt)).mkdir(parents=True)
        (runs / str(attempt) / "job_manifest.json").write_text(json.dumps({"usage": usage, "steps": []}))
    text = invoke(cli_runner, queue_file, "show", "--id", "ORCH-004").stdout
    assert "usage (all attempts): input_tokens=150 output_tokens=25 total_cost_usd=0.375" in text
    shown = json.loads(invoke(cli_runner, queue_file, "show", "--id", "ORCH-004", "--json").stdout)
    assert shown["usage"] == {"input_tokens": 150, "output_tokens": 25, "total_cost_usd": 0.375}
    assert json.loads(invoke(cli_runner, queue_file, "show", "--id", "ORCH-001", "--json").stdout)["usage"] == {}
