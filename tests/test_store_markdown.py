"""MarkdownStore: commands change exactly the lines they should; every other byte stays."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import operations
from orchestrator.errors import BadInputError, NotEligibleError, NotFoundError
from orchestrator.model import Item, Status
from orchestrator.queuefile import QueueFile
from orchestrator.store.markdown import MarkdownStore
from tests.strategies import QueueDoc, cell_text, queue_docs


def lines_of(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def changed_lines(before: bytes, after: bytes) -> list[int]:
    old, new = lines_of(before), lines_of(after)
    assert len(old) == len(new)
    return [k for k, (a, b) in enumerate(zip(old, new, strict=False)) if a != b]


def store_for(doc: QueueDoc, folder: str) -> MarkdownStore:
    path = Path(folder) / "QUEUE.md"
    path.write_bytes(doc.data)
    return MarkdownStore(path, durable=False)


OPERATIONS = {
    "cancel": lambda store, item_id, text: operations.cancel(store, item_id),
    "replan": lambda store, item_id, text: operations.replan(store, item_id, text),
    "retry": lambda store, item_id, text: operations.retry(store, item_id),
}


@settings(max_examples=300)
@given(queue_docs(min_rows=1), st.sampled_from(sorted(OPERATIONS)), st.data())
def test_each_command_changes_only_its_own_row_and_the_text_reads_back(doc, name, data):
    target = data.draw(st.sampled_from(doc.rows))
    notes_text = data.draw(cell_text)
    with tempfile.TemporaryDirectory() as folder:
        store = store_for(doc, folder)
        before = store.path.read_bytes()
        row_index = QueueFile.load("Q", before).item_lines[[r["id"] for r in doc.rows].index(target["id"])]
        try:
            result = OPERATIONS[name](store, target["id"], notes_text)
        except NotEligibleError:
            assert store.path.read_bytes() == before
            return
        except BadInputError:
            assert name == "replan" and not notes_text.strip()
            assert store.path.read_bytes() == before
            return
        after = store.path.read_bytes()
        assert changed_lines(before, after) in ([row_index], [])
        stored = {item.id: item for item in store.items()}
        assert stored[target["id"]] == result
        for row in doc.rows:
            if row["id"] != target["id"]:
                assert stored[row["id"]].status.value == row["status"]
        if "notes" in doc.columns:
            assert result.notes.startswith(target["notes"])
            if name == "replan":
                assert result.notes.endswith(f"replan:{notes_text}")


@settings(max_examples=200)
@given(queue_docs(require=("title",)), cell_text.filter(str.strip), st.lists(cell_text, max_size=2))
def test_add_appends_one_row_at_the_table_end_and_nothing_else_moves(doc, title, extras):
    with tempfile.TemporaryDirectory() as folder:
        store = store_for(doc, folder)
        before = store.path.read_bytes()
        values = {c: v for c, v in zip([c for c in doc.columns if c in ("x-extra", "Priority")], extras, strict=False)}
        item = operations.add(store, title=title, values=values)
        after = store.path.read_bytes()
        old, new = lines_of(before), lines_of(after)
        assert len(new) == len(old) + 1
        queue = QueueFile.load("Q", after)
        inserted = queue.item_lines[-1]
        assert new[:inserted] + new[inserted + 1 :] == old
        assert queue.items[-1] == item
        assert item.title == title
        assert item.extra == {c: values.get(c, "") for c in doc.columns if c in ("x-extra", "Priority")}


@given(queue_docs(min_rows=1))
def test_an_unchanged_queue_is_never_rewritten(doc):
    with tempfile.TemporaryDirectory() as folder:
        store = store_for(doc, folder)
        store.update(doc.rows[0]["id"], lambda item: item, actor="t", event="NOOP")
        assert store.path.read_bytes() == doc.data


def test_crlf_and_bom_survive_a_write(tmp_path):
    path = tmp_path / "QUEUE.md"
    data = "\ufeffIntro\r\n\r\n| id | status | notes |\r\n| --- | --- | --- |\r\n| a | PENDING | |\r\n"
    path.write_bytes(data.encode())
    store = MarkdownStore(path)
    operations.cancel(store, "a")
    assert path.read_bytes() == data.replace("| a | PENDING | |", "| a | BLOCKED | cancelled_by_operator |").encode()


def test_rows_added_to_a_crlf_table_use_crlf(tmp_path):
    path = tmp_path / "QUEUE.md"
    path.write_bytes(b"| id | status | title |\r\n| --- | --- | --- |\r\n| a | DONE | x |\r\n\r\nend\r\n")
    item = operations.add(MarkdownStore(path), title="new", item_id="b")
    assert path.read_bytes() == (
        b"| id | status | title |\r\n| --- | --- | --- |\r\n| a | DONE | x |\r\n| b | PENDING | new |\r\n\r\nend\r\n"
    )
    assert item.status is Status.PENDING


def test_a_table_at_the_end_without_a_final_newline_gets_rows_appended(tmp_path):
    path = tmp_path / "QUEUE.md"
    path.write_bytes(b"| id | status | title |\n| --- | --- | --- |\n| a | DONE | x |")
    operations.add(MarkdownStore(path), title="new", item_id="b")
    assert path.read_bytes() == b"| id | status | title |\n| --- | --- | --- |\n| a | DONE | x |\n| b | PENDING | new |"


def test_a_refused_change_writes_nothing(queue_file):
    before = queue_file.read_bytes()
    with pytest.raises(NotEligibleError):
        operations.cancel(MarkdownStore(queue_file), "ORCH-003")
    with pytest.raises(NotFoundError):
        operations.cancel(MarkdownStore(queue_file), "ORCH-999")
    assert queue_file.read_bytes() == before
    assert not (queue_file.parent / ".orch").exists()


def test_transitions_are_recorded_as_events(queue_file):
    store = MarkdownStore(queue_file)
    operations.cancel(store, "ORCH-001")
    operations.retry(store, "ORCH-001")
    history = [(e.event, e.from_status, e.to_status, e.note) for e in store.events("ORCH-001")]
    assert history == [
        ("CANCELED", "PENDING", "BLOCKED", "cancelled_by_operator"),
        ("RETRIED", "BLOCKED", "PENDING", "retry:1"),
    ]


def test_a_value_without_a_column_is_refused_before_writing(queue_file):
    before = queue_file.read_bytes()
    with pytest.raises(Exception, match="no column named 'job'"):
        operations.add(MarkdownStore(queue_file), title="x", values={"job": "j1"})
    assert queue_file.read_bytes() == before


def test_file_mode_is_kept_across_a_rewrite(queue_file):
    queue_file.chmod(0o640)
    operations.cancel(MarkdownStore(queue_file), "ORCH-001")
    assert queue_file.stat().st_mode & 0o777 == 0o640


def test_padded_columns_stay_aligned_when_a_status_changes(tmp_path):
    path = tmp_path / "QUEUE.md"
    path.write_text("| id  | status      | notes |\n| --- | ----------- | ----- |\n| a   | IN_PROGRESS |       |\n")
    operations.replan(MarkdownStore(path), "a", "later")
    assert path.read_text().splitlines()[2] == "| a   | BLOCKED     | replan:later |"


def test_items_round_trip_through_rows():
    text = (
        "| id | status | depends_on | attempts |\n| --- | --- | --- | --- |\n"
        "| a | DONE | | 2 |\n| b | PENDING | a | |\n"
    )
    items = QueueFile.load("Q", text.encode()).items
    assert items == [Item("a", Status.DONE, attempts=2), Item("b", depends_on=("a",))]


def test_a_symlinked_queue_is_written_through_the_link(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    real = shared / "QUEUE.md"
    real.write_text("| id | status | notes |\n| --- | --- | --- |\n| A-1 | PENDING | |\n")
    link = tmp_path / "QUEUE.md"
    link.symlink_to(real)
    operations.cancel(MarkdownStore(link), "A-1")
    assert link.is_symlink()
    assert real.read_text().endswith("| A-1 | BLOCKED | cancelled_by_operator |\n")


def test_group_write_permission_survives_the_umask(queue_file):
    queue_file.chmod(0o664)
    old = os.umask(0o022)
    try:
        operations.cancel(MarkdownStore(queue_file), "ORCH-001")
    finally:
        os.umask(old)
    assert queue_file.stat().st_mode & 0o777 == 0o664


def test_heartbeats_live_in_orch_runtime_state_not_in_the_queue(queue_file):
    store = MarkdownStore(queue_file)
    claim = store.claim("w9", lease=30, now=1_800_000_000)
    before = queue_file.read_bytes()
    store.heartbeat(claim.item.id, "w9", lease=30, attempt=claim.attempt, now=1_800_000_010)
    assert queue_file.read_bytes() == before
    assert '"until": 1800000040' in (queue_file.parent / ".orch" / "leases.json").read_text()


def test_rows_set_in_progress_by_hand_are_never_reaped(queue_file):
    store = MarkdownStore(queue_file)
    (queue_file.parent / ".orch").mkdir(exist_ok=True)
    (queue_file.parent / ".orch" / "leases.json").write_text("{torn")  # or lost: the same
    assert store.lease_until("ORCH-002") is None  # IN_PROGRESS in QUEUE.md, but orch holds no lease
    assert store.reap(now=2_000_000_000) == []
    assert store.get("ORCH-002").status is Status.IN_PROGRESS


def test_a_claim_records_its_lease_before_the_row_says_in_progress(queue_file, monkeypatch):
    store = MarkdownStore(queue_file)
    seen = []
    original = store._replace_if_unchanged

    def spy(expected, new_data):
        seen.append(json.loads((queue_file.parent / ".orch" / "leases.json").read_text())["held"])
        return original(expected, new_data)

    monkeypatch.setattr(store, "_replace_if_unchanged", spy)
    claim = store.claim("w", lease=30, now=1_800_000_000)
    assert claim.item.id in seen[0]


def test_without_attempt_columns_a_failure_is_final(tmp_path):
    path = tmp_path / "QUEUE.md"
    path.write_text("| id | status | owner | notes |\n| --- | --- | --- | --- |\n| a | PENDING | | |\n")
    store = MarkdownStore(path)
    claim = store.claim("w", lease=30)
    failed = store.fail("a", "w", note="error:x", attempt=claim.attempt)
    assert failed.status is Status.FAILED
    assert operations.retry(store, "a").status is Status.PENDING
    assert store.claim("w", lease=30).attempt == 2  # attempt numbers still count up, in .orch/


def test_markdown_retry_respects_the_budget_where_the_queue_keeps_one(tmp_path):
    path = tmp_path / "QUEUE.md"
    path.write_text(
        "| id | status | attempts | max_attempts | notes |\n| --- | --- | --- | --- | --- |\n"
        "| a | FAILED | 2 | 2 | |\n| b | BLOCKED | 1 | | |\n"
    )
    store = MarkdownStore(path)
    with pytest.raises(Exception, match="2 of 2 attempts"):
        operations.retry(store, "a")
    assert operations.retry(store, "b").status is Status.PENDING


def test_a_queue_with_the_policys_columns_retries_by_the_policy(tmp_path):
    from orchestrator.errors import LeaseLostError, NotEligibleError
    from orchestrator.model import Policy
    from tests.stores import FULL_HEADER

    path = tmp_path / "QUEUE.md"
    path.write_text("# Queue\n\n" + FULL_HEADER + "| a | PENDING | | | | 0 | 3 | | | | | |\n"
                    "| b | BLOCKED | | | | 1 | 3 | | | | | |\n")  # fmt: skip
    store = MarkdownStore(path, policy=Policy(backoff_base=60, jitter=0), durable=False)
    with pytest.raises(NotEligibleError, match="only FAILED or timed-out IN_PROGRESS"):
        store.retry("b", actor="op")  # BLOCKED: replan it instead, as on a database
    claim = store.claim("w", lease=30, now=1_000)
    with pytest.raises(NotEligibleError):
        store.retry("a", actor="op", now=1_010)  # its lease is still running
    retried = store.retry("a", actor="op", now=1_031)  # the lease ran out before the reaper looked
    assert (retried.status, retried.owner, retried.retry_not_before) == (Status.PENDING, "", 1_031 + 60)
    assert "retry_not_before=1091" in path.read_text().splitlines()[4]
    with pytest.raises(LeaseLostError):
        store.complete("a", "w", attempt=claim.attempt, now=1_032)  # the late worker is fenced off
    assert store.claim("w2", lease=30, now=1_050) is None  # backing off
    assert store.claim("w2", lease=30, now=1_091).item.id == "a"


def test_queued_ops_all_get_the_error_when_the_queue_is_broken(queue_file):
    store = MarkdownStore(queue_file)
    queue_file.write_text("no table any more\n")
    with pytest.raises(Exception, match="no queue table"):
        store.claim("w", lease=30)
    assert not list((queue_file.parent / ".orch" / "spool").glob("*.req"))  # nothing left to replay later


@pytest.mark.parametrize("how", ["in place, same size", "saved as a new file"])
def test_a_hand_edit_between_two_claims_is_read_and_kept(tmp_path, how):
    path = tmp_path / "QUEUE.md"
    rows = "".join(f"| T-{n} | PENDING | task {n} |  |\n" for n in range(4))
    path.write_text("| id | status | title | owner |\n| --- | --- | --- | --- |\n" + rows)
    store = MarkdownStore(path)
    assert store.claim("w", lease=30).item.id == "T-0"
    edited = path.read_text().replace("| T-1 | PENDING | task 1 |", "| T-1 | BLOCKED | task 1 |")
    edited = edited.replace("| T-2 | PENDING | task 2 |", "| T-2 | PENDING | task Z |")
    assert len(edited) == len(path.read_text())  # the same size: "PENDING" and "BLOCKED", "2" and "Z"
    if how == "in place, same size":
        stat = path.stat()
        with open(path, "r+", encoding="utf-8") as file:  # same inode, same size
            file.write(edited)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and even the same mtime
    else:
        path.with_name("QUEUE.md.swp").write_text(edited)
        os.replace(path.with_name("QUEUE.md.swp"), path)
    claim = store.claim("w", lease=30)
    assert (claim.item.id, claim.item.title) == ("T-2", "task Z")  # T-1 is BLOCKED now
    done, nxt = store.complete_and_claim("T-2", "w", lease=30, attempt=claim.attempt)
    assert (done.title, nxt.item.id) == ("task Z", "T-3")
    text = path.read_text()
    assert "| T-1 | BLOCKED | task 1 |" in text and "| T-2 | DONE | task Z | w |" in text


def test_the_lease_book_forgets_attempts_the_queue_keeps(tmp_path):
    path = tmp_path / "QUEUE.md"
    rows = "".join(f"| T-{n} | PENDING | 0 | |\n" for n in range(30))
    path.write_text("| id | status | attempts | notes |\n| --- | --- | --- | --- |\n" + rows)
    store = MarkdownStore(path, durable=False)
    claim = store.claim("w", lease=30)
    while claim is not None:
        _, claim = store.complete_and_claim(claim.item.id, "w", lease=30, attempt=claim.attempt)
    book = json.loads((tmp_path / ".orch" / "leases.json").read_text())
    assert book == {"attempts": {}, "held": {}}
    assert [item.notes for item in store.items()] == ["done:1"] * 30
