"""The QUEUE.md three-way merge driver: by row id, then by cell.

Rows added on either side are kept (ours first, then theirs, in their order).
Different cells of one row merge; ``notes`` merge as the append-only log they
are (both sides' new entries kept). The same cell changed differently on both
sides puts conflict markers around that one row only. The text around the
table merges line by line with ``git merge-file``. If any version does not
parse, or the result does not validate, the whole file falls back to an
ordinary ``git merge-file`` merge; and if that merges cleanly into a queue
that does not validate either (both sides adding one id, in different rows),
the merge conflicts on the whole file, both versions kept between the markers.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator import mdtable
from orchestrator.model import NOTE_SEPARATOR
from orchestrator.queuefile import QueueFile, _field

OURS_MARK, SPLIT_MARK, THEIRS_MARK = "<<<<<<< ours", "=======", ">>>>>>> theirs"


@dataclass(frozen=True)
class MergeResult:
    """The merged file's bytes and how many rows (or text hunks) conflict."""

    data: bytes
    conflicts: int


def merge_text(base: bytes, ours: bytes, theirs: bytes) -> MergeResult:
    """An ordinary line merge, as git would do it (conflict markers where both sides differ)."""
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder, name) for name in ("ours", "base", "theirs")]
        for path, data in zip(paths, (ours, base, theirs), strict=True):
            path.write_bytes(data)
        done = subprocess.run(
            ["git", "merge-file", "-p", "-L", "ours", "-L", "base", "-L", "theirs", *map(str, paths)],
            capture_output=True,
        )
    if done.returncode < 0 or done.returncode > 127:
        raise RuntimeError(f"git merge-file failed: {done.stderr.decode(errors='replace')}")
    return MergeResult(done.stdout, done.returncode)


def _fallback(base: bytes, ours: bytes, theirs: bytes) -> MergeResult:
    """``merge_text``, unless it would cleanly give a queue that does not validate: then a conflict."""
    result = merge_text(base, ours, theirs)
    if result.conflicts or _parse(result.data) is not None:
        return result
    parts = [OURS_MARK.encode() + b"\n", ours, SPLIT_MARK.encode() + b"\n", theirs, THEIRS_MARK.encode() + b"\n"]
    return MergeResult(b"".join(part if part.endswith(b"\n") else part + b"\n" for part in parts if part), 1)


def merge_cells(base: list[str] | None, ours: list[str], theirs: list[str], columns: list[str]) -> list[str] | None:
    """Cell by cell; None when one cell changed differently on both sides."""
    merged = []
    for k, column in enumerate(columns):
        old = base[k] if base is not None else None
        mine, other = ours[k], theirs[k]
        if mine == other or other == old:
            merged.append(mine)
        elif mine == old:
            merged.append(other)
        elif column == "notes" and old is not None:
            merged.append(_merge_notes(old, mine, other))
        else:
            return None
    return merged


def _merge_notes(old: str, mine: str, other: str) -> str:
    """Both sides appended to the log: keep the common part, then ours, then theirs."""
    if not (mine.startswith(old) and other.startswith(old)):
        return mine if len(mine) >= len(other) else other
    extra = [part for part in other[len(old) :].split(NOTE_SEPARATOR) if part]
    return NOTE_SEPARATOR.join(part for part in [mine, *extra] if part)


class _Table:
    """One version's queue: its cells by id, in order, and the text around the table."""

    def __init__(self, queue: QueueFile) -> None:
        self.queue = queue
        self.columns = queue.columns
        self.items = {item.id: [_field(item, c) for c in queue.columns] for item in queue.items}
        self.order = [item.id for item in queue.items]
        document = queue.document
        start = document.start(queue.header_index)
        end = document.start(queue.end_index) if queue.end_index < len(document) else len(document.text)
        self.before, self.after = document.text[:start], document.text[end:]
        self.lines = {
            item_id: document.texts[index] for item_id, index in zip(self.order, queue.item_lines, strict=True)
        }
        self.head = document.text[start : document.start(queue.header_index + 2)]
        self.ending = document.ending(queue.header_index) or "\n"

    def row_text(self, item_id: str, cells: list[str]) -> str:
        """Our original line when the cells are unchanged, else our line with those cells set."""
        if self.items.get(item_id) == cells:
            return self.lines[item_id]
        if item_id in self.lines:
            row = mdtable.split_row(mdtable.Line(0, 0, self.lines[item_id], ""))
            for k, value in enumerate(cells):
                if row.cells[k] != value:
                    row = mdtable.split_row(mdtable.Line(0, 0, mdtable.replace_cell(row, k, value), ""))
            return row.line.text
        return mdtable.render_row(cells)


def _parse(data: bytes) -> QueueFile | None:
    queue = QueueFile.parse("QUEUE.md", data, confirm=False)
    return None if queue.problems else queue


def merge_queues(base: bytes, ours: bytes, theirs: bytes) -> MergeResult:
    """The three-way merge of whole QUEUE.md files (see the module docstring)."""
    parsed = [_parse(data) for data in (base, ours, theirs)]
    if any(queue is None for queue in parsed) or len({tuple(q.columns) for q in parsed}) != 1:
        return _fallback(base, ours, theirs)
    old, mine, other = (_Table(queue) for queue in parsed)
    rows, conflicts = _merge_rows(old, mine, other)
    before = merge_text(old.before.encode(), mine.before.encode(), other.before.encode())
    after = merge_text(old.after.encode(), mine.after.encode(), other.after.encode())
    ending = mine.ending
    table = mine.head + "".join(line + ending for line in rows)
    text = before.data.decode() + table + after.data.decode()
    bom = "\ufeff" if mine.queue.bom else ""
    data = (bom + text).encode("utf-8")
    total = conflicts + before.conflicts + after.conflicts
    if total == 0 and _parse(data) is None:
        return _fallback(base, ours, theirs)
    return MergeResult(data, total)


def _merge_rows(old: _Table, mine: _Table, other: _Table) -> tuple[list[str], int]:
    rows, conflicts = [], 0
    order = mine.order + [item_id for item_id in other.order if item_id not in mine.items]
    for item_id in order:
        base, ours, theirs = old.items.get(item_id), mine.items.get(item_id), other.items.get(item_id)
        if ours is None:  # added by them, or deleted by us
            if base is None:
                rows.append(other.lines[item_id])
            elif theirs != base:
                rows += _conflict("", other.lines[item_id])
                conflicts += 1
            continue
        if theirs is None:
            if base is None or ours == base:
                if base is None:
                    rows.append(mine.lines[item_id])
                continue  # deleted by them, unchanged by us
            rows += _conflict(mine.lines[item_id], "")
            conflicts += 1
            continue
        merged = merge_cells(base, ours, theirs, mine.columns)
        if merged is None:
            rows += _conflict(mine.lines[item_id], other.lines[item_id])
            conflicts += 1
        else:
            rows.append(mine.row_text(item_id, merged))
    return rows, conflicts


def _conflict(ours: str, theirs: str) -> list[str]:
    return [OURS_MARK, *([ours] if ours else []), SPLIT_MARK, *([theirs] if theirs else []), THEIRS_MARK]


def run_driver(base_path: Path, ours_path: Path, theirs_path: Path) -> int:
    """git's merge driver protocol: merge into %A (ours); exit 0 if clean, 1 if it conflicts."""
    result = merge_queues(base_path.read_bytes(), ours_path.read_bytes(), theirs_path.read_bytes())
    temp = ours_path.with_name(f".{ours_path.name}.orch-merge-{os.getpid()}")
    temp.write_bytes(result.data)
    os.replace(temp, ours_path)
    return 1 if result.conflicts else 0
