"""QUEUE.md house rules: every malformed queue is refused with file:line, and nothing is written."""

from __future__ import annotations

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from orchestrator import mdtable
from orchestrator.cli import cli
from orchestrator.errors import QueueFormatError
from orchestrator.queuefile import QueueFile
from tests.strategies import QueueDoc, cell_text, document_of, queue_docs

HEAD = "| id | status | title | notes |\n| --- | --- | --- | --- |\n"
GOOD = "| ORCH-1 | PENDING | one | |\n"


def table(*rows: str, head: str = HEAD) -> str:
    return head + "".join(rows)


MALFORMED = {
    "no table at all": ("# Queue\n\nnothing here\n", 1),
    "table without id column": ("| key | status |\n| --- | --- |\n| a | PENDING |\n", 1),
    "table without status column": ("| id | state |\n| --- | --- |\n| a | PENDING |\n", 1),
    "queue only inside a code fence": ("intro\n\n```\n" + table(GOOD) + "```\n", 4),
    "queue only inside a quote": ("> " + table(GOOD).replace("\n", "\n> ")[:-2], 1),
    "queue only inside a list": ("- item\n\n  " + table(GOOD).replace("\n", "\n  ")[:-2], 3),
    "queue only inside an HTML comment": ("<!--\n" + table(GOOD) + "-->\n", 2),
    "row without leading pipe": (table(GOOD, "ORCH-2 | PENDING | two | |\n"), 4),
    "row without trailing pipe": (table(GOOD, "| ORCH-2 | PENDING | two | x\n"), 4),
    "row ending in an escaped pipe": (table("| ORCH-2 | PENDING | two | x \\|\n"), 3),
    "row with too few cells": (table(GOOD, "| ORCH-2 | PENDING | two |\n| x | DONE | | |\n"), 4),
    "row with too many cells": (table(GOOD, "| ORCH-2 | PENDING | two | | extra |\n"), 4),
    "duplicate id": (table(GOOD, "| ORCH-1 | DONE | again | |\n"), 4),
    "duplicate id in another case": (table(GOOD, "| orch-1 | DONE | again | |\n"), 4),
    "id with a space": (table("| ORCH 1 | PENDING | x | |\n"), 3),
    "id with a slash": (table("| a/b | PENDING | x | |\n"), 3),
    "id starting with a dash": (table("| -a | PENDING | x | |\n"), 3),
    "id longer than 64": (table(f"| {'a' * 65} | PENDING | x | |\n"), 3),
    "empty id": (table("|  | PENDING | x | |\n"), 3),
    "id with two dots": (table("| a..b | PENDING | x | |\n"), 3),
    "id ending in .lock": (table("| a.lock | PENDING | x | |\n"), 3),
    "unknown status": (table("| a | SLEEPING | x | |\n"), 3),
    "lower-case status": (table("| a | pending | x | |\n"), 3),
    "empty status": (table("| a |  | x | |\n"), 3),
    "lone carriage return": ("intro\rmore\n\n" + table(GOOD), 1),
    "invalid UTF-8": (b"intro\n\n\xff\xfe\n".decode("latin-1") + table(GOOD), 3),
    "header without leading pipe": ("id | status |\n| --- | --- |\n| a | PENDING |\n", 1),
    "delimiter row without outer pipes": ("| id | status |\n--- | ---\n| a | PENDING |\n", 2),
    "duplicate column": ("| id | status | notes | Notes |\n| --- | --- | --- | --- |\n", 1),
    "unnamed column": ("| id | status |  |\n| --- | --- | --- |\n", 1),
    "attempts not a number": ("| id | status | attempts |\n| --- | --- | --- |\n| a | DONE | two |\n", 3),
    "dependency on an unknown id": (
        "| id | status | depends_on |\n| --- | --- | --- |\n| a | PENDING | b |\n", 3),
    "dependency on itself": ("| id | status | depends_on |\n| --- | --- | --- |\n| a | PENDING | a |\n", 3),
    "leftover conflict markers": ("<<<<<<< HEAD\n" + table(GOOD) + "=======\n>>>>>>> other\n", 1),
    "row indented as code": (table(GOOD, "    | ORCH-2 | PENDING | two | |\n"), 4),
    "plain text right after the table": (table(GOOD, "not a row\n"), 4),
    "NUL byte": ("intro\x00\n\n" + table(GOOD), 1),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_queue_is_refused_with_its_line_and_left_untouched(case, tmp_path, cli_runner):
    text, line = MALFORMED[case]
    data = text.encode("latin-1") if case == "invalid UTF-8" else text.encode("utf-8")
    path = tmp_path / "QUEUE.md"
    path.write_bytes(data)
    for args in (["validate"], ["cancel", "--id", "ORCH-1"], ["add", "--title", "x"], ["status"]):
        result = cli_runner.invoke(cli, ["--queue", str(path), *args])
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith(f"error: {path}:{line}: "), result.stderr
        assert result.stdout == ""
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) in (["QUEUE.md"], ["QUEUE.md", "QUEUE.md.lock"])


def test_there_are_at_least_25_kinds_of_malformed_queue():
    assert len(MALFORMED) >= 25


def test_validate_lists_every_problem_not_just_the_first(tmp_path, cli_runner):
    path = tmp_path / "QUEUE.md"
    path.write_text(table("| a | SLEEPING | x | |\n", "| b c | DONE | y | |\n", "| d | DONE | z |\n"))
    result = cli_runner.invoke(cli, ["--queue", str(path), "validate"])
    assert result.exit_code == 2
    assert [line.split(": ")[1] for line in result.stderr.splitlines()] == [
        f"{path}:3", f"{path}:4", f"{path}:5",
    ]  # fmt: skip


def test_problems_name_the_fix():
    queue = QueueFile.parse("Q.md", table("| a | pending | x | |\n").encode())
    assert str(queue.problems[0]) == (
        "Q.md:3: unknown status 'pending' (statuses are upper case); "
        "use one of PENDING, IN_PROGRESS, BLOCKED, FAILED, DONE"
    )


def test_the_first_top_level_queue_table_wins_over_later_ones():
    text = "| id | status |\n| --- | --- |\n| a | DONE |\n\n| id | status |\n| --- | --- |\n| b | DONE |\n"
    assert [item.id for item in QueueFile.load("Q.md", text.encode()).items] == ["a"]


def test_other_tables_and_fenced_examples_before_the_queue_are_skipped():
    text = (
        "| name | value |\n| --- | --- |\n| x | 1 |\n\n"
        "```\n| id | status |\n| --- | --- |\n| fake | DONE |\n```\n\n" + table(GOOD)
    )
    assert [item.id for item in QueueFile.load("Q.md", text.encode()).items] == ["ORCH-1"]


def test_a_queue_with_no_rows_is_valid():
    assert QueueFile.load("Q.md", HEAD.encode()).items == []


def test_unknown_columns_are_kept_as_extra_values():
    text = "| id | Priority | status |\n| --- | --- | --- |\n| a | high | DONE |\n"
    item = QueueFile.load("Q.md", text.encode()).items[0]
    assert item.extra == {"Priority": "high"}


BLOCKS = [
    "Plain prose.",
    "Prose | with | pipes.",
    "```\n| id | status |\n| --- | --- |\n| fenced | DONE |\n```",
    "```\nunclosed fence",
    "~~~\n| id | status |\n| --- | --- |\n| tilde | DONE |\n~~~",
    "> | id | status |\n> | --- | --- |\n> | quoted | DONE |",
    "> a quote",
    "- a list item",
    "1. numbered",
    "- item\n  | id | status |\n  | --- | --- |\n  | listed | DONE |",
    "<!--\n| id | status |\n| --- | --- |\n| commented | DONE |\n-->",
    "<div>\nhtml block\n</div>",
    "    indented code | with pipe",
    "# Heading",
    "Setext\n---",
    "| name | value |\n| --- | --- |\n| other | table |",
    "***",
]


@st.composite
def documents(draw):
    """Blocks around one queue table, glued with or without blank lines."""
    before = draw(st.lists(st.sampled_from(BLOCKS), max_size=4))
    after = draw(st.lists(st.sampled_from(BLOCKS), max_size=2))
    queue = "| id | status |\n| --- | --- |\n| q1 | DONE |\n| q2 | PENDING |"
    glue = draw(
        st.lists(
            st.sampled_from(["\n\n", "\n"]),
            min_size=len(before) + len(after) + 1,
            max_size=len(before) + len(after) + 1,
        )
    )
    parts = [*before, queue, *after]
    text = parts[0]
    for joint, part in zip(glue, parts[1:], strict=False):
        text += joint + part
    return text + "\n", all(j == "\n\n" for j in glue) and "```\nunclosed fence" not in before


def mistune_queue_ids(text: str) -> list[str] | None:
    import mistune

    for token in mistune.create_markdown(renderer=None, plugins=["table"])(text):
        if token["type"] != "table":
            continue
        cell_text = lambda cell: "".join(c.get("raw", "") for c in cell["children"]).strip()  # noqa: E731
        names = [cell_text(cell).lower() for cell in token["children"][0]["children"]]
        if {"id", "status"} <= set(names):
            rows = token["children"][1]["children"]
            return [cell_text(row["children"][names.index("id")]) for row in rows]
    return None


@settings(max_examples=400)
@given(documents())
def test_the_queue_we_find_is_the_one_mistune_sees_or_we_refuse(document):
    text, tidy = document
    queue = QueueFile.parse("Q.md", text.encode())
    if not queue.problems:
        assert [item.id for item in queue.items] == mistune_queue_ids(text)
    elif tidy and mistune_queue_ids(text) == ["q1", "q2"]:
        pytest.fail(f"refused a tidy queue: {queue.problems}")


# --- re-reading a queue from the last one parsed ----------------------------------------------

ROW_EDITS = [
    "| {id} | DONE | {cells}",
    "| {id} | SLEEPING | {cells}",
    "| {id} | done | {cells}",
    "| other-id | PENDING | {cells}",
    "| {id} | BLOCKED | {cells} extra |",
    "| {id} | PENDING | a \\| pipe | {cells}",
    "| {id} | PENDING | &#124; | {cells}",
    "  | {id} | PENDING | {cells}",
    "    | {id} | PENDING | {cells}",
    "| {id} | PENDING | {cells}   ",
    "| {id} | FAILED | lone\rcr | {cells}",
    "| {id} | FAILED | nul\x00 | {cells}",
    "{id} | PENDING | {cells}",
    "not a row",
    "",
    "| {id} | IN_PROGRESS | {cells}",
]


def _outcome(path: str, data: bytes, previous: QueueFile | None = None):
    """What loading gives: the items and where they are, or the problems."""
    try:
        queue = QueueFile.load(path, data, previous=previous)
    except QueueFormatError as error:
        return str(error)
    return [item.as_dict() for item in queue.items], queue.item_lines, queue.counts(), queue.columns


plain_text = st.text(alphabet="abcXYZ-:;0123456789", max_size=12)


@st.composite
def plain_queue_docs(draw) -> QueueDoc:
    """A queue whose cells need no escapes: the rows orch itself writes, mostly read again row by row."""
    columns = ["id", "status", *draw(st.lists(st.sampled_from(["title", "attempts", "notes", "Priority"]),
                                              unique=True))]  # fmt: skip
    rows = []
    for n in range(draw(st.integers(1, 6))):
        row = {"id": f"T-{n}", "status": draw(st.sampled_from(["PENDING", "DONE"]))}
        row.update({c: str(n) if c == "attempts" else draw(plain_text) for c in columns[2:]})
        rows.append(row)
    return document_of(draw, columns, rows)


@settings(max_examples=400)
@given(queue_docs(min_rows=1) | plain_queue_docs(), st.data())
def test_a_queue_read_again_from_the_last_one_parsed_is_what_a_full_parse_gives(doc, data):
    previous = QueueFile.load("Q.md", doc.data)
    lines = doc.data.decode("utf-8-sig").split(doc.newline)
    body = st.integers(previous.item_lines[0], previous.end_index - 1)
    for _ in range(data.draw(st.integers(1, 3))):
        anywhere = data.draw(st.sampled_from([False, False, False, True]))
        index = data.draw(st.integers(0, len(lines) - 1) if anywhere else body)
        kind = data.draw(st.sampled_from(["cell", "cell", "status", "template"]))
        row = mdtable.split_row(mdtable.Line(0, 0, lines[index], ""))
        if kind != "template" and len(row.spans) == len(doc.columns) and row.bordered:
            # a row as orch writes it: the line with one cell's text changed
            others = [k for k, column in enumerate(doc.columns) if column != "id"]  # a new id: see ROW_EDITS
            k = doc.columns.index("status") if kind == "status" else data.draw(st.sampled_from(others))
            texts = plain_text if data.draw(st.integers(0, 3)) else cell_text
            value = data.draw(
                st.sampled_from(["DONE", "IN_PROGRESS", "BLOCKED", "SLEEPING"]) if kind == "status" else texts
            )
            lines[index] = mdtable.replace_cell(row, k, value)
        else:
            row = doc.rows[(index - previous.item_lines[0]) % len(doc.rows)]
            cells = " | ".join(row[c] for c in doc.columns[2:]) + " |" if len(doc.columns) > 2 else ""
            lines[index] = data.draw(st.sampled_from(ROW_EDITS)).format(id=row["id"], cells=cells)
    edited = (("\ufeff" if doc.bom else "") + doc.newline.join(lines)).encode("utf-8")
    event("rows read again" if previous._with_rows_from(edited) is not None else "parsed in full")
    assert _outcome("Q.md", edited, previous) == _outcome("Q.md", edited)


def test_a_hand_edit_of_a_dependency_is_checked_again():
    text = "| id | status | depends_on |\n| --- | --- | --- |\n| a | DONE | |\n| b | PENDING | a |\n"
    previous = QueueFile.load("Q.md", text.encode())
    for edit, problem in (("| b | PENDING | b |", "depends on itself"), ("| b | PENDING | zz |", "unknown id")):
        with pytest.raises(QueueFormatError, match=problem):
            QueueFile.load("Q.md", text.replace("| b | PENDING | a |", edit).encode(), previous=previous)
    same = QueueFile.load("Q.md", text.replace("| a | DONE |", "| a | PENDING |").encode(), previous=previous)
    assert [item.status.value for item in same.items] == ["PENDING", "PENDING"]
    assert QueueFile.load("Q.md", text.encode(), previous=previous) is previous


# --- the bulk read of plain rows -----------------------------------------------------------

NEAR_IDS = ["T-1", "t-1", "T-2", "a.b", "ends.", "x.lock", "a..b", "_low", "é1", "A" * 64, "B" * 65, "", " T-3\t"]
NEAR_STATUSES = ["PENDING", "DONE", " IN_PROGRESS ", "\tFAILED", "done", "SLEEPING", "", "PENDING!"]
NEAR_NUMBERS = ["", "0", " 3 ", "12", "x", "\u0663", "-1", "1 2"]
NEAR_DEPENDS = ["", " ", "T-1", "T-2, a.b", "nobody", "T-1,", "T-2 "]


@st.composite
def near_plain_tables(draw) -> bytes:
    """Tables of rows with no escapes whose cells sit on either side of each house rule."""
    columns = ["id", "status", *draw(st.lists(st.sampled_from(["attempts", "depends_on", "notes"]), unique=True))]
    draw(st.randoms()).shuffle(columns)
    values = {"id": NEAR_IDS, "status": NEAR_STATUSES, "attempts": NEAR_NUMBERS, "depends_on": NEAR_DEPENDS,
              "notes": ["", "plain", " a:b ", "x|y"]}  # fmt: skip
    rows = ["| " + " | ".join(draw(st.sampled_from(values[c])) for c in columns) + " |"
            for _ in range(draw(st.integers(1, 6)))]  # fmt: skip
    if draw(st.booleans()):
        rows[draw(st.integers(0, len(rows) - 1))] += draw(st.sampled_from([" ", "x", "|"]))
    head = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return ("\n".join(["# Queue", "", *head, *rows, "", "after"]) + "\n").encode()


@settings(max_examples=400)
@given(near_plain_tables() | queue_docs(min_rows=1).map(lambda doc: doc.data))
def test_the_bulk_read_of_plain_rows_gives_what_the_row_by_row_read_gives(data):
    from unittest import mock

    from orchestrator import queuefile

    bulk = _outcome("Q.md", data)
    with mock.patch.object(queuefile, "_fast_table", return_value=None):
        row_by_row = _outcome("Q.md", data)
    event("read row by row" if isinstance(QueueFile.parse("Q.md", data).rows, list) else "read in bulk")
    assert bulk == row_by_row


def test_when_mistune_sees_another_table_extent_nothing_is_written(tmp_path, cli_runner, monkeypatch):
    from orchestrator import queuefile

    text = "# Q\n\n" + table(GOOD, "| ORCH-2 | PENDING | two | |\n") + "\nafter\n"
    lines = mdtable.Document(text).texts
    (span,) = mdtable.find_tables(lines)
    assert queuefile._confirmed_by_mistune(lines, span, 4)
    short = mdtable.TableSpan(span.header, span.end - 1)  # our scanner, wrong by one row
    assert not queuefile._confirmed_by_mistune(lines, short, 4)

    path = tmp_path / "QUEUE.md"
    path.write_text(text)
    monkeypatch.setattr(mdtable, "find_tables", lambda found: iter([short]))
    result = cli_runner.invoke(cli, ["--queue", str(path), "cancel", "--id", "ORCH-1"])
    assert result.exit_code == 2 and "mistune does not read this as a top-level table" in result.stderr
    assert path.read_text() == text
