"""QUEUE.md as a document: its queue table, the house rules, and byte-exact edits.

``QueueFile.parse`` reads bytes into items and lists every broken house rule
with its line. ``QueueFile.render`` returns new bytes in which only the cells
that changed (and appended rows) differ; every other byte is the original.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from orchestrator import mdtable
from orchestrator.errors import Problem, QueueFormatError
from orchestrator.model import STATUS_WORDS, Item, Status, id_problem

BOM = "\ufeff"
REQUIRED_COLUMNS = ("id", "status")
INT_COLUMNS = ("attempts", "max_attempts", "retry_not_before")
KNOWN_COLUMNS = (
    "id", "status", "title", "owner", "started", "attempts", "max_attempts",
    "retry_not_before", "agent", "job", "depends_on", "notes",
)  # fmt: skip
CONFLICT_MARKERS = ("<<<<<<<", ">>>>>>>", "|||||||")


def format_field(column: str, value: object) -> str:
    """The cell value for one item field."""
    if column == "depends_on":
        return ", ".join(value)  # type: ignore[arg-type]
    if value is None:
        return ""
    if column == "attempts":
        return str(value) if value else "0"
    return str(value)


def parse_depends(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass
class QueueFile:
    """A parsed QUEUE.md: where each item's row is, and the document around it."""

    path: str
    data: bytes
    text: str
    bom: bool
    lines: list[mdtable.Line]
    columns: list[str]
    header: mdtable.Row | None
    rows: list[mdtable.Row]
    items: list[Item]
    problems: list[Problem]

    @classmethod
    def parse(cls, path: str, data: bytes) -> QueueFile:
        """Parse without raising; ``problems`` lists every broken house rule."""
        return _Parser(path, data).parse()

    @classmethod
    def load(cls, path: str, data: bytes) -> QueueFile:
        """Parse and raise ``QueueFormatError`` if any house rule is broken."""
        queue = cls.parse(path, data)
        if queue.problems:
            raise QueueFormatError(queue.problems)
        return queue

    def index(self) -> dict[str, int]:
        return {item.id: k for k, item in enumerate(self.items)}

    def missing_columns(self, item: Item, base: Item) -> list[str]:
        """Known fields that differ from ``base`` but have no column to live in."""
        present = set(self.columns)
        return [
            name
            for name in KNOWN_COLUMNS
            if name not in present and getattr(item, name) != getattr(base, name)
        ]

    def stored(self, item: Item) -> Item:
        """``item`` as its row keeps it: fields without a column fall back to their defaults."""
        present = set(self.columns)
        dropped = {name: value for name, value in _DEFAULTS.items() if name not in present}
        extra = {name: item.extra.get(name, "") for name in self.columns if name not in _ITEM_FIELDS}
        return replace(item, extra=extra, **dropped)

    def render(self, changed: list[Item], added: list[Item] = ()) -> bytes:
        """New file bytes: changed items' cells rewritten, added items appended to the table."""
        where = self.index()
        edits: dict[int, str] = {}
        for item in changed:
            k = where[item.id]
            edits[k] = self._edit_row(self.rows[k], self.items[k], item)
        text = self.text
        pieces, cursor = [], 0
        for k in sorted(edits):
            line = self.rows[k].line
            pieces += [text[cursor : line.start], edits[k]]
            cursor = line.end
        if added:
            pieces += self._appended(cursor, added)
        else:
            pieces.append(text[cursor:])
        return ((BOM if self.bom else "") + "".join(pieces)).encode("utf-8")

    def _edit_row(self, row: mdtable.Row, old: Item, new: Item) -> str:
        line = row.line
        for k, column in enumerate(self.columns):
            old_value, new_value = _field(old, column), _field(new, column)
            if old_value != new_value:
                start, end = row.spans[k]
                head_start, head_end = self.header.spans[k]
                aligned = end - start == head_end - head_start
                text = mdtable.replace_cell(row, k, new_value, aligned=aligned)
                row = mdtable.split_row(replace(line, text=text))
                line = row.line
        return line.text

    def _appended(self, cursor: int, added: list[Item]) -> list[str]:
        last = self.rows[-1].line if self.rows else self.lines[self.header.line.number]
        ending = self.header.line.ending or "\n"
        head = self.text[cursor : last.end]
        glue = last.ending or ending
        widths = [b - a for a, b in self.header.spans]
        last_row = self.rows[-1] if self.rows else mdtable.split_row(last)
        if [b - a for a, b in last_row.spans] != widths:
            widths = None  # pad new rows only when the table is laid out in columns
        new_rows = [mdtable.render_row([_field(item, c) for c in self.columns], widths) for item in added]
        body = glue + ending.join(new_rows) + (ending if last.ending else "")
        return [head, body, self.text[last.next_start :]]


def _field(item: Item, column: str) -> str:
    if column in Item.__dataclass_fields__ and column != "extra":
        return format_field(column, getattr(item, column))
    return item.extra.get(column, "")


_ITEM_FIELDS = {f.name for f in fields(Item)} - {"extra"}
_DEFAULTS = {f.name: f.default for f in fields(Item) if f.name in _ITEM_FIELDS and f.name != "id"}


class _Parser:
    """One pass over the document, collecting problems instead of stopping at the first."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path, self.data = path, data
        self.problems: list[Problem] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))

    def parse(self) -> QueueFile:
        text, bom = self._decode()
        lines = mdtable.split_lines(text) if text is not None else []
        queue = QueueFile(self.path, self.data, text or "", bom, lines, [], None, [], [], self.problems)
        if text is None or self._line_problems(text, lines):
            return queue
        span = self._queue_span(lines)
        if span is None:
            return queue
        header = mdtable.split_row(lines[span.header])
        queue.header = header
        queue.columns = self._columns(header, lines[span.header + 1])
        queue.rows = [mdtable.split_row(line) for line in lines[span.header + 2 : span.end]]
        queue.items = self._items(queue.columns, queue.rows)
        if not self.problems and not _confirmed_by_mistune(lines, span, len(queue.columns)):
            self.problem(
                header.line.number,
                "mistune does not read this as a top-level table ending at line "
                f"{lines[span.end - 1].number}; check the lines above it for an unclosed "
                "code fence, list or quote, and put a blank line before and after the table",
            )
        return queue

    def _decode(self) -> tuple[str | None, bool]:
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = self.data.count(b"\n", 0, error.start) + 1
            self.problem(line, f"not UTF-8 (byte 0x{self.data[error.start]:02x}); save the file as UTF-8")
            return None, False
        if text.startswith(BOM):
            return text[1:], True
        return text, False

    def _line_problems(self, text: str, lines: list[mdtable.Line]) -> bool:
        for number in mdtable.lone_cr_lines(text):
            self.problem(number, "lone carriage return (CR); use LF or CRLF line endings")
        if "\x00" in text:
            self.problem(text.count("\n", 0, text.index("\x00")) + 1, "NUL byte; QUEUE.md must be text")
        conflict = False
        for line in lines:
            if line.text.startswith(CONFLICT_MARKERS):
                self.problem(line.number, "leftover merge conflict marker; resolve the conflict first")
                conflict = True
            elif conflict and line.text.rstrip() == "=======":
                self.problem(line.number, "leftover merge conflict marker; resolve the conflict first")
        return bool(self.problems)

    def _queue_span(self, lines: list[mdtable.Line]) -> mdtable.TableSpan | None:
        for span in mdtable.find_tables(lines):
            names = {cell.strip().lower() for cell in mdtable.split_row(lines[span.header]).cells}
            if set(REQUIRED_COLUMNS) <= names:
                return span
        nested = mdtable.find_nested_header(lines, set(REQUIRED_COLUMNS))
        if nested is not None:
            self.problem(
                nested.number,
                "this table is inside a code block, quote, list or HTML; "
                "the queue must be a top-level table with a blank line before it",
            )
        else:
            self.problem(1, "no queue table: add a markdown table whose header has 'id' and 'status' columns")
        return None

    def _columns(self, header: mdtable.Row, delimiter: mdtable.Line) -> list[str]:
        number = header.line.number
        if not header.bordered:
            self.problem(number, "header row must start and end with '|'")
        if not mdtable.split_row(delimiter).bordered:
            self.problem(delimiter.number, "delimiter row must start and end with '|'")
        columns, seen = [], set()
        for k, cell in enumerate(header.cells):
            name = cell.strip().lower() if cell.strip().lower() in KNOWN_COLUMNS else cell.strip()
            if not name:
                self.problem(number, f"column {k + 1} has no name; name it or remove it")
            elif name.lower() in seen:
                self.problem(number, f"column '{name}' appears twice; rename or remove one")
            seen.add(name.lower())
            columns.append(name)
        return columns

    def _items(self, columns: list[str], rows: list[mdtable.Row]) -> list[Item]:
        items, first_line = [], {}
        width = len(columns)
        for row in rows:
            number = row.line.number
            if not self._row_shape_ok(row, width):
                continue
            item = self._item(columns, row)
            if item is None:
                continue
            key = item.id.lower()  # worktree paths collide on case-insensitive disks
            if key in first_line:
                first = first_line[key]
                self.problem(number, f"duplicate id '{item.id}' (first at line {first}); ids must be unique, ignoring case")
                continue
            first_line[key] = number
            items.append(item)
        self._dependency_problems(items, {item.id: first_line[item.id.lower()] for item in items})
        return items

    def _row_shape_ok(self, row: mdtable.Row, width: int) -> bool:
        number, text = row.line.number, row.line.text
        stripped = text.strip(" \t")
        if not stripped.startswith("|") or mdtable._indent(text) > 3:
            self.problem(number, "row must start with '|' (indented at most 3 spaces)")
            return False
        if not row.bordered:
            self.problem(number, "row must end with '|' (a pipe in cell text is written '\\|')")
            return False
        if len(row.cells) != width:
            self.problem(
                number, f"row has {len(row.cells)} cells but the header has {width}; add or remove cells"
            )
            return False
        return True

    def _item(self, columns: list[str], row: mdtable.Row) -> Item | None:
        number = row.line.number
        values = dict(zip(columns, row.cells))
        known = {c: values[c] for c in columns if c in _ITEM_FIELDS}
        extra = {c: values[c] for c in columns if c not in _ITEM_FIELDS}
        problem = id_problem(known["id"])
        if problem:
            self.problem(number, problem)
            return None
        status = known["status"]
        if status not in STATUS_WORDS:
            hint = " (statuses are upper case)" if status.upper() in STATUS_WORDS else ""
            self.problem(number, f"unknown status '{status}'{hint}; use one of {', '.join(STATUS_WORDS)}")
            return None
        for column in INT_COLUMNS:
            text = known.get(column, "")
            if text and not (text.isascii() and text.isdigit()):
                self.problem(number, f"{column} '{text}' is not a whole number")
                return None
        return _build_item(known, extra)

    def _dependency_problems(self, items: list[Item], lines: dict[str, int]) -> None:
        for item in items:
            for dependency in item.depends_on:
                if dependency == item.id:
                    self.problem(lines[item.id], f"'{item.id}' depends on itself")
                elif dependency not in lines:
                    self.problem(lines[item.id], f"'{item.id}' depends on unknown id '{dependency}'")


def _build_item(known: dict[str, str], extra: dict[str, str]) -> Item:
    kwargs: dict = dict(known)
    kwargs["status"] = Status(known["status"])
    kwargs["attempts"] = int(known.get("attempts") or 0)
    for column in ("max_attempts", "retry_not_before"):
        kwargs[column] = int(known[column]) if known.get(column) else None
    if "depends_on" in known:
        kwargs["depends_on"] = parse_depends(known["depends_on"])
    kwargs["extra"] = extra
    return Item(**kwargs)


def _confirmed_by_mistune(lines: list[mdtable.Line], span: mdtable.TableSpan, width: int) -> bool:
    """Whether mistune agrees this is the first top-level queue table, with the same rows.

    mistune sees a trimmed copy: everything before the table verbatim, the
    table with marker cells (its cell splitting is not GFM's, so real cells
    could mislead it), and the line after the table.
    """
    import mistune

    def shaped(line: mdtable.Line, cells: list[str]) -> str:
        indent = line.text[: len(line.text) - len(line.text.lstrip(" \t"))]
        return indent + "|" + "|".join(f" {cell} " for cell in cells) + "|"

    markers = [f"orchcol{k}" for k in range(width)]
    body = lines[span.header + 2 : span.end]
    sample = body[:1] + body[-1:] if len(body) > 1 else body
    pieces = [line.text for line in lines[: span.header]]
    pieces.append(shaped(lines[span.header], markers))
    pieces.append(shaped(lines[span.header + 1], ["---"] * width))
    pieces += [shaped(line, ["x"] * width) for line in sample]
    pieces += [line.text for line in lines[span.end : span.end + 1]]
    tokens = mistune.create_markdown(renderer=None, plugins=["table"])("\n".join(pieces) + "\n")
    for token in tokens:
        if token["type"] != "table":
            continue
        head, body_rows = token["children"][0]["children"], token["children"][1]["children"]
        names = ["".join(child.get("raw", "") for child in cell["children"]) for cell in head]
        if names == markers:
            return len(body_rows) == len(sample)
        if set(REQUIRED_COLUMNS) <= {name.strip().lower() for name in names}:
            return False
    return False
