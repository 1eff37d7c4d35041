"""Hypothesis strategies for queue documents full of awkward text."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from orchestrator import mdtable
from orchestrator.model import STATUS_WORDS

AWKWARD = "|\\`*_&#;<>[](){}!-. \t\u00e9\u4e2d\U0001f600\u200b\u2028\x0c\x85:"
cell_text = st.text(alphabet=st.sampled_from(AWKWARD) | st.characters(codec="utf-8"), max_size=24)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,11}", fullmatch=True)
OPTIONAL_COLUMNS = ["title", "owner", "notes", "attempts", "Priority", "x-extra"]


@dataclass
class QueueDoc:
    """A generated QUEUE.md and what it should parse into."""

    text: str
    columns: list[str]
    rows: list[dict[str, str]]
    newline: str
    bom: bool

    @property
    def data(self) -> bytes:
        return (("\ufeff" if self.bom else "") + self.text).encode("utf-8")


PROSE_LINES = [
    "Some prose | with a pipe.",
    "```",
    "| id | status |",
    "| --- | --- |",
    "| fake | PENDING |",
    "```",
    "> quoted | text",
    "- a list item",
    "## A heading",
    "<!-- | id | status | -->",
]


@st.composite
def prose(draw) -> list[str]:
    """Prose that never hides a real table: fenced examples are always closed."""
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        choice = draw(st.sampled_from(["text", "fence", "quote", "list", "heading", "comment"]))
        block = {
            "text": [draw(st.sampled_from(["Plain words.", "Some prose | with a pipe.", "Ünïcødé — text"]))],
            "fence": PROSE_LINES[1:6],
            "quote": [PROSE_LINES[6]],
            "list": [PROSE_LINES[7]],
            "heading": [PROSE_LINES[8]],
            "comment": [PROSE_LINES[9]],
        }[choice]
        lines += block + [""]
    return lines


@st.composite
def queue_docs(draw, min_rows: int = 0, max_rows: int = 8, require: tuple[str, ...] = ()) -> QueueDoc:
    """A valid queue document: prose, the table (padded or not), prose."""
    optional = [c for c in OPTIONAL_COLUMNS if c not in require]
    extra = [*require, *draw(st.lists(st.sampled_from(optional), unique=True, max_size=4))]
    columns = ["id", "status", *extra]
    draw(st.randoms()).shuffle(columns)
    row_ids = draw(st.lists(ids, min_size=min_rows, max_size=max_rows, unique_by=str.lower))
    rows = []
    for item_id in row_ids:
        row = {"id": item_id, "status": draw(st.sampled_from(STATUS_WORDS))}
        for column in extra:
            row[column] = str(draw(st.integers(0, 9))) if column == "attempts" else draw(cell_text)
        rows.append(row)
    return document_of(draw, columns, rows)


def document_of(draw, columns: list[str], rows: list[dict[str, str]]) -> QueueDoc:
    """These rows as a table, padded or not, between prose, with LF or CRLF, with a BOM or not."""
    widths = [12] * len(columns) if draw(st.booleans()) else None
    table = [
        mdtable.render_row(columns, widths),
        "|" + "|".join(" --- " for _ in columns) + "|",
        *(mdtable.render_row([row[c] for c in columns], widths) for row in rows),
    ]
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines = draw(prose()) + table + [""] + draw(prose())
    return QueueDoc(newline.join(lines) + newline, columns, rows, newline, draw(st.booleans()))
