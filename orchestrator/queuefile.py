"""QUEUE.md as a document: its queue table, the house rules, and byte-exact edits.

``QueueFile.parse`` reads bytes into items and lists every broken house rule
with its line. ``QueueFile.render`` returns new bytes in which only the cells
that changed (and appended rows) differ; every other byte is the original.
"""

from __future__ import annotations

import functools
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from operator import itemgetter
from typing import NamedTuple

from orchestrator import mdtable
from orchestrator.errors import Problem, QueueFormatError
from orchestrator.model import ID_PATTERN, STATUS_WORDS, Item, Status, id_problem
from orchestrator.timeutil import now_iso, parse_iso

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


def start_key(started: str) -> str:
    """A start time as a string that sorts by time: orch's own format as is, others normalised."""
    if len(started) == 20 and started[-1] == "Z":
        return started
    moment = parse_iso(started)
    return now_iso(moment) if moment is not None else "~" + started  # unreadable: after readable


def parse_depends(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass
class QueueFile:
    """A parsed QUEUE.md: where each item's row is, and the document around it."""

    path: str
    data: bytes
    document: mdtable.Document
    bom: bool
    columns: list[str] = field(default_factory=list)
    header_index: int = -1  # 0-based line index of the header row
    end_index: int = -1  # first line after the table
    rows: list[list[str]] = field(default_factory=list)  # each valid row's cells, see ``exact``
    exact: set[int] = field(default_factory=set)  # rows already decoded; the rest still need strip
    id_list: list[str] = field(default_factory=list)
    status_list: list[str] = field(default_factory=list)
    item_lines: list[int] = field(default_factory=list)  # line index of each item's row
    problems: list[Problem] = field(default_factory=list)
    builder: _ItemBuilder | None = None
    confirmed: bool = False  # mistune agreed on the table (a parse with ``confirm``)
    _items: list[Item] | None = None
    _index: dict[str, int] | None = None

    @property
    def items(self) -> list[Item]:
        """Every item in table order (built on first use: reads often need only counts)."""
        if self._items is None:
            self._items = [self.item_at(k) for k in range(len(self.rows))]
        return self._items

    def item_at(self, k: int) -> Item:
        """The item of the k-th valid row."""
        if self._items is not None:
            return self._items[k]
        return self.builder.make(self.rows[k], k in self.exact)

    def ids(self) -> list[str]:
        return self.id_list

    def ids_in(self, status: Status) -> list[str]:
        """The ids of the items in one status, without building the items."""
        word = status.value
        return [item_id for item_id, seen in zip(self.id_list, self.status_list, strict=True) if seen == word]

    def counts(self) -> dict[str, int]:
        """How many items are in each status, without building the items."""
        counts = dict.fromkeys(STATUS_WORDS, 0)
        for word in self.status_list:
            counts[word] += 1
        return counts

    def oldest(self, status: Status, limit: int) -> list[Item]:
        """Up to ``limit`` items in ``status`` by start time; rows with no start go last."""
        word, at = status.value, self.columns.index("started") if "started" in self.columns else None
        chosen = [k for k, seen in enumerate(self.status_list) if seen == word]
        if at is not None:
            exact = self.exact

            def started(k: int) -> tuple[int, str, int]:
                text = self.rows[k][at] if k in exact else self.rows[k][at].strip(" \t")
                return (0, start_key(text), k) if text else (1, "", k)

            chosen.sort(key=started)
        return [self.item_at(k) for k in chosen[:limit]]

    def select(self, status: Status) -> list[Item]:
        """The items in one status, building only those."""
        word = status.value
        return [self.item_at(k) for k, seen in enumerate(self.status_list) if seen == word]

    @classmethod
    def parse(cls, path: str, data: bytes, *, confirm: bool = True) -> QueueFile:
        """Parse without raising; ``problems`` lists every broken house rule.

        ``confirm`` also has mistune check the table's extent: writes and
        ``validate`` need that; read-only commands may skip it.
        """
        gc_was_on = gc.isenabled()
        gc.disable()  # a parse makes many small objects and no cycles
        try:
            return _Parser(path, data, confirm).parse()
        finally:
            if gc_was_on:
                gc.enable()

    @classmethod
    def load(cls, path: str, data: bytes, *, confirm: bool = True, previous: QueueFile | None = None) -> QueueFile:
        """Parse and raise ``QueueFormatError`` if any house rule is broken.

        ``previous``, a valid queue parsed earlier from this file, saves the
        work where it can: the same bytes give it back as is, and bytes that
        differ from it only in plain rows' cells (what orch's own writes do)
        give a copy with just those rows read again; anything else is parsed
        in full. Either way the result is what a full parse would give.
        """
        if previous is not None and previous.path == path and (previous.confirmed or not confirm):
            if previous.data == data:
                return previous
            derived = previous._with_rows_from(data)
            if derived is not None:
                return derived
        queue = cls.parse(path, data, confirm=confirm)
        if queue.problems:
            raise QueueFormatError(queue.problems)
        return queue

    def _with_rows_from(self, data: bytes) -> QueueFile | None:
        """This queue as ``data`` holds it, if only plain rows' cells changed (same ids, same
        dependencies) and each changed row keeps the house rules; else None, and the caller parses.

        Lines outside the changed rows are the ones this queue was checked
        with, so their verdicts stand: the table's extent (a line starting
        with a pipe never ends it) and what mistune sees (it is shown the
        lines before the table, the header and only the shape of the first
        and last rows, unchanged for a plain row replacing a plain row).
        """
        if self.problems or self.builder is None:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        bom = text.startswith(BOM)
        document = mdtable.Document(text[1:] if bom else text)
        old = self.document
        if bom != self.bom or len(document.parts) != len(old.parts) or document.final_newline != old.final_newline:
            return None
        changed = [index for index, (a, b) in enumerate(zip(old.parts, document.parts, strict=True)) if a != b]
        first = self.header_index + 2
        if not changed or changed[0] < first or changed[-1] >= self.end_index:
            return None
        rows, statuses, exact = self.rows.copy(), list(self.status_list), set(self.exact)
        build = self.builder
        for index in changed:
            k = index - first  # every body line is an item row: this queue had no problems
            cells = _plain_cells(document.texts[index], build.width)
            if cells is None or old.texts[index][:1] != "|":
                return None
            item_id, word = cells[build.id_at].strip(" \t"), cells[build.status_at].strip(" \t")
            if item_id != self.id_list[k] or build.problem(item_id, word, cells) is not None:
                return None
            if build.depends and cells[build.depends[1]].strip(" \t") != self._cell(k, build.depends[1]):
                return None
            rows[k], statuses[k] = cells, word
            exact.discard(k)
        return replace(self, data=data, document=document, rows=rows, status_list=statuses, exact=exact,
                       problems=[], _items=None)  # fmt: skip

    def _cell(self, k: int, column: int) -> str:
        """The k-th row's text in one column, decoded."""
        cell = self.rows[k][column]
        return cell if k in self.exact else cell.strip(" \t")

    @property
    def text(self) -> str:
        return self.document.text

    @property
    def header(self) -> mdtable.Row:
        return mdtable.split_row(self.document.line(self.header_index))

    def index(self) -> dict[str, int]:
        """Each id's row number (k); made once per queue."""
        if self._index is None:
            self._index = {item_id: k for k, item_id in enumerate(self.ids())}
        return self._index

    def missing_columns(self, item: Item, base: Item) -> list[str]:
        """Known fields that differ from ``base`` but have no column to live in."""
        present = set(self.columns)
        return [name for name in KNOWN_COLUMNS if name not in present and getattr(item, name) != getattr(base, name)]

    def stored(self, item: Item) -> Item:
        """``item`` as its row keeps it: fields without a column fall back to their defaults."""
        present = set(self.columns)
        dropped = {name: value for name, value in _DEFAULTS.items() if name not in present}
        extra = {name: item.extra.get(name, "") for name in self.columns if name not in _ITEM_FIELDS}
        return replace(item, extra=extra, **dropped)

    def render(self, changed: list[Item], added: list[Item] = (), removed: list[str] = ()) -> bytes:
        """New file bytes: changed items' cells rewritten, ``removed`` rows dropped, ``added`` appended."""
        where = self.index()
        header = self.header
        edits: dict[int, str | None] = {}
        for item in changed:
            k = where[item.id]
            line = self.document.line(self.item_lines[k])
            edits[line.number - 1] = self._edit_row(header, line, self.item_at(k), item)
            self._check_written(edits[line.number - 1], item, where, added)
        for item_id in removed:
            edits[self.item_lines[where[item_id]]] = None
        text = self.text
        pieces, cursor = [], 0
        for index in sorted(edits):
            line = self.document.line(index)
            pieces.append(text[cursor : line.start])
            if edits[index] is None:
                cursor = line.next_start  # the whole line goes, ending and all
            else:
                pieces.append(edits[index])
                cursor = line.end
        if added:
            pieces += self._appended(header, cursor, added, where)
        else:
            pieces.append(text[cursor:])
        return ((BOM if self.bom else "") + "".join(pieces)).encode("utf-8")

    def _edit_row(self, header: mdtable.Row, line: mdtable.Line, old: Item, new: Item) -> str:
        row = mdtable.split_row(line)
        for k, column in enumerate(self.columns):
            old_value, new_value = _field(old, column), _field(new, column)
            if old_value != new_value:
                start, end = row.spans[k]
                head_start, head_end = header.spans[k]
                aligned = end - start == head_end - head_start
                text = mdtable.replace_cell(row, k, new_value, aligned=aligned)
                row = mdtable.split_row(line._replace(text=text))
        return row.line.text

    def _check_written(self, text: str, item: Item, where: dict[str, int], added: list[Item]) -> None:
        """Refuse to write a row that would break a house rule or not read back as written."""
        from orchestrator.errors import BadInputError

        problem = id_problem(item.id)
        if item.depends_on:
            known = {*(key.lower() for key in where), *(new.id.lower() for new in added)}
            for dependency in item.depends_on:
                if dependency.lower() == item.id.lower():
                    problem = f"'{item.id}' depends on itself"
                elif dependency.lower() not in known:
                    problem = f"'{item.id}' depends on unknown id '{dependency}'"
        row = mdtable.split_row(mdtable.Line(0, 0, text, ""))
        expected = tuple(_field(item, column) for column in self.columns)
        if problem is None and (not row.bordered or row.cells != expected):
            problem = f"row for '{item.id}' would not read back as written"  # a codec bug: never write it
        if problem:
            raise BadInputError(f"{self.path}: refused, {problem}; nothing was written")

    def _appended(self, header: mdtable.Row, cursor: int, added: list[Item], where: dict[str, int]) -> list[str]:
        last = self.document.line(self.end_index - 1)
        ending = header.line.ending or "\n"
        head = self.text[cursor : last.end]
        glue = last.ending or ending
        widths = [b - a for a, b in header.spans]
        if [b - a for a, b in mdtable.split_row(last).spans] != widths:
            widths = None  # pad new rows only when the table is laid out in columns
        new_rows = [mdtable.render_row([_field(item, c) for c in self.columns], widths) for item in added]
        for line, item in zip(new_rows, added, strict=True):
            self._check_written(line, item, where, added)
        body = glue + ending.join(new_rows) + (ending if last.ending else "")
        return [head, body, self.text[last.next_start :]]


def _field(item: Item, column: str) -> str:
    if column in Item.__dataclass_fields__ and column != "extra":
        return format_field(column, getattr(item, column))
    return item.extra.get(column, "")


_ITEM_FIELDS = {f.name for f in fields(Item)} - {"extra"}
_FAST_ID = ID_PATTERN.fullmatch
_DEFAULTS = {f.name: f.default for f in fields(Item) if f.name in _ITEM_FIELDS and f.name != "id"}
_DEFAULTS["depends_on"] = ()


class _Parser:
    """One pass over the document, collecting problems instead of stopping at the first."""

    def __init__(self, path: str, data: bytes, confirm: bool) -> None:
        self.path, self.data, self.confirm = path, data, confirm
        self.problems: list[Problem] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))

    def parse(self) -> QueueFile:
        text, bom = self._decode()
        document = mdtable.Document(text or "")
        queue = QueueFile(self.path, self.data, document, bom, problems=self.problems)
        if text is None or self._line_problems(text, document.texts):
            return queue
        span = self._queue_span(document.texts)
        if span is None:
            return queue
        queue.header_index, queue.end_index = span.header, span.end
        header = mdtable.split_row(document.line(span.header))
        queue.columns = self._columns(header, document.line(span.header + 1))
        if self.problems:
            return queue
        self._items(queue, document)
        if self.confirm and not self.problems:
            queue.confirmed = _confirmed_by_mistune(document.texts, span, len(queue.columns))
            if not queue.confirmed:
                self.problem(
                    span.header + 1,
                    "mistune does not read this as a top-level table ending at line "
                    f"{span.end}; check the lines above it for an unclosed "
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

    def _line_problems(self, text: str, lines: list[str]) -> bool:
        for number in mdtable.lone_cr_lines(text):
            self.problem(number, "lone carriage return (CR); use LF or CRLF line endings")
        if "\x00" in text:
            self.problem(text.count("\n", 0, text.index("\x00")) + 1, "NUL byte; QUEUE.md must be text")
        if not any(text.startswith(m) or f"\n{m}" in text for m in CONFLICT_MARKERS):
            return bool(self.problems)
        conflict = False
        for index, line in enumerate(lines):
            if line.startswith(CONFLICT_MARKERS) or (conflict and line.rstrip() == "======="):
                self.problem(index + 1, "leftover merge conflict marker; resolve the conflict first")
                conflict = True
        return bool(self.problems)

    def _queue_span(self, lines: list[str]) -> mdtable.TableSpan | None:
        for span in mdtable.find_tables(lines):
            header = mdtable.split_row(mdtable.Line(0, 0, lines[span.header], ""))
            names = {cell.strip().lower() for cell in header.cells}
            if set(REQUIRED_COLUMNS) <= names:
                return span
        nested = mdtable.find_nested_header(lines, set(REQUIRED_COLUMNS))
        if nested is not None:
            self.problem(
                nested + 1,
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

    def _items(self, queue: QueueFile, document: mdtable.Document) -> None:
        build = queue.builder = _ItemBuilder(queue.columns, self.problem)
        depends = _fast_table(queue, document)
        if depends is None:
            self._items_exact(queue, document)
            depends = [cells[build.depends[1]] for cells in queue.rows] if build.depends else []
        if build.depends:
            self._dependency_problems(queue, depends)

    def _items_exact(self, queue: QueueFile, document: mdtable.Document) -> None:
        """Row by row, reporting every broken rule with its line."""
        first_line: dict[str, int] = {}
        build = queue.builder
        texts, width, id_at, status_at = document.texts, build.width, build.id_at, build.status_at
        for index in range(queue.header_index + 2, queue.end_index):
            text = texts[index]
            cells = None
            if text[:1] == "|" and "\\" not in text and "&#" not in text:
                body = text.rstrip(" \t")  # the common case, fast: no escapes, no indent
                if len(body) > 1 and body[-1] == "|":
                    cells = body[1:-1].split("|")
            exact = cells is None or len(cells) != width
            if exact:
                row = mdtable.split_row(document.line(index))
                if not self._row_shape_ok(row, width):
                    continue
                cells = list(row.cells)
                item_id, word = cells[id_at], cells[status_at]
            else:
                item_id, word = cells[id_at].strip(" \t"), cells[status_at].strip(" \t")
            if not build.check(item_id, word, cells, index + 1):
                continue
            key = item_id.lower()  # worktree paths collide on case-insensitive disks
            if key in first_line:
                first = first_line[key]
                self.problem(
                    index + 1, f"duplicate id '{item_id}' (first at line {first}); ids must be unique, ignoring case"
                )
                continue
            first_line[key] = index + 1
            if exact:
                queue.exact.add(len(queue.rows))
            queue.rows.append(cells)
            queue.id_list.append(item_id)
            queue.status_list.append(word)
            queue.item_lines.append(index)

    def _row_shape_ok(self, row: mdtable.Row, width: int) -> bool:
        if row.bordered and len(row.cells) == width:
            return True
        number, text = row.line.number, row.line.text
        if not text.strip(" \t").startswith("|") or mdtable._indent(text) > 3:
            self.problem(number, "row must start with '|' (indented at most 3 spaces)")
        elif not row.bordered:
            self.problem(number, "row must end with '|' (a pipe in cell text is written '\\|')")
        else:
            self.problem(number, f"row has {len(row.cells)} cells but the header has {width}; add or remove cells")
        return False

    def _dependency_problems(self, queue: QueueFile, depends: list[str]) -> None:
        """Self and unknown dependencies; only rows with a ``depends_on`` value are looked at (usually few)."""
        at = queue.builder.depends[1]
        listed = [k for k, cell in enumerate(depends) if cell and not cell.isspace()]
        if not listed:
            return
        known = {item_id.lower() for item_id in queue.id_list}
        for k in listed:
            item_id, number = queue.id_list[k], queue.item_lines[k] + 1
            for dependency in parse_depends(queue._cell(k, at)):
                if dependency.lower() == item_id.lower():
                    self.problem(number, f"'{item_id}' depends on itself")
                elif dependency.lower() not in known:
                    self.problem(number, f"'{item_id}' depends on unknown id '{dependency}'")


_STATUS_BY_WORD = {status.value: status for status in Status}
_STATUS_WORDS = frozenset(_STATUS_BY_WORD)


def _plain_cells(text: str, width: int) -> list[str] | None:
    """A plain row's raw cells (pipes at both ends, no indent, no backslash or ``&#``), or None."""
    if text[:1] != "|" or "\\" in text or "&#" in text or "\r" in text or "\x00" in text:
        return None  # (a lone CR or a NUL is a problem a full parse reports)
    body = text.rstrip(" \t")
    cells = body[1:-1].split("|") if len(body) > 1 and body[-1] == "|" else None
    return cells if cells is not None and len(cells) == width else None


def _fast_table(queue: QueueFile, document: mdtable.Document) -> list[str] | None:
    """Read a table of plain rows in bulk and return each row's raw ``depends_on`` cell (none if the
    table has no such column); None, with nothing set, if any row needs the exact path.

    Plain rows start and end with a pipe, with no indent, backslash or ``&#``,
    so splitting on pipes is exact. One regular expression over the whole body
    checks every row's shape, id, status and whole numbers at once (in C, not
    row by row); a row's cells are split only when something asks for them.
    """
    first, end = queue.header_index + 2, queue.end_index
    body = document.texts[first:end]
    if not body:
        queue.rows = _SplitRows(body)
        return []
    text, begin, stop = document.text, document.start(first), document.start(end - 1) + len(document.parts[end - 1])
    if text.find("\\", begin, stop) >= 0 or text.find("&#", begin, stop) >= 0:
        return None
    plain = _plain_rows(tuple(queue.columns))
    found = plain.pattern.findall(text, begin, stop)  # the body in place: no copy of a large table
    if len(found) != len(body):
        return None
    ids, words = list(map(itemgetter(plain.id_at), found)), list(map(itemgetter(plain.status_at), found))
    listed = "\n".join(ids) + "\n"  # one search each for '..' anywhere and a bad ending
    if len(set(map(str.lower, ids))) != len(ids) or ".." in listed or ".\n" in listed or ".lock\n" in listed:
        return None
    queue.rows, queue.id_list, queue.status_list = _SplitRows(body), ids, words
    queue.item_lines = list(range(first, end))
    return [] if plain.depends_at is None else list(map(itemgetter(plain.depends_at), found))


class _PlainRows(NamedTuple):
    pattern: re.Pattern[str]
    id_at: int  # where each match's tuple holds the id, the status and the depends_on cell
    status_at: int
    depends_at: int | None


@functools.lru_cache(maxsize=16)
def _plain_rows(columns: tuple[str, ...]) -> _PlainRows:
    """The pattern of a plain row under this header: ids, statuses and whole numbers valid, cells captured
    where a check needs them (the id and status stripped)."""
    blank = r"[ \t]*"
    cell = {
        "id": f"{blank}({ID_PATTERN.pattern}){blank}",
        "status": f"{blank}({'|'.join(STATUS_WORDS)}){blank}",
        "depends_on": r"([^|\n]*)",
        **dict.fromkeys(INT_COLUMNS, f"{blank}[0-9]*{blank}"),
    }
    captured = [name for name in columns if name in ("id", "status", "depends_on")]
    cells = r"\|".join(cell.get(name, r"[^|\n]*") for name in columns)
    pattern = re.compile(r"^\|" + cells + r"\|\r?$", re.M)  # (a lone CR is refused before this)
    depends_at = captured.index("depends_on") if "depends_on" in captured else None
    return _PlainRows(pattern, captured.index("id"), captured.index("status"), depends_at)


class _SplitRows:
    """Plain rows' cells, each row split from its line when first asked for (a read may need few)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.cells: list[list[str] | None] = [None] * len(lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, k: int) -> list[str]:
        cells = self.cells[k]
        if cells is None:
            cells = self.cells[k] = self.lines[k][1:-1].split("|")
        return cells

    def __setitem__(self, k: int, cells: list[str]) -> None:
        self.cells[k] = cells

    def __iter__(self) -> Iterator[list[str]]:
        return (self[k] for k in range(len(self.lines)))

    def copy(self) -> _SplitRows:
        twin = _SplitRows(self.lines)
        twin.cells = self.cells.copy()
        return twin


class _ItemBuilder:
    """Turns one row's cells into an Item, with the column lookups done once per table."""

    def __init__(self, columns: list[str], report) -> None:
        self.width = len(columns)
        self.report = report
        self.id_at = columns.index("id")
        self.status_at = columns.index("status")
        names = [f.name for f in fields(Item)]
        self.template = [_DEFAULTS.get(name) for name in names]
        at = {name: k for k, name in enumerate(columns)}
        self.texts = [
            (names.index(n), at[n])
            for n in names
            if n in at and n not in INT_COLUMNS and n not in ("id", "status", "depends_on")
        ]
        self.ints = [(names.index(n), at[n], n) for n in INT_COLUMNS if n in at]
        self.depends = (names.index("depends_on"), at["depends_on"]) if "depends_on" in at else None
        self.extra = [(name, k) for k, name in enumerate(columns) if name not in _ITEM_FIELDS]
        self.extra_slot = names.index("extra")

    def check(self, item_id: str, word: str, cells: list[str], number: int) -> bool:
        """Whether a row keeps the house rules; a broken one is reported."""
        problem = self.problem(item_id, word, cells)
        if problem is not None:
            self.report(number, problem)
        return problem is None

    def problem(self, item_id: str, word: str, cells: list[str]) -> str | None:
        """The first house rule the row breaks (id, status, whole numbers), or None."""
        if not _FAST_ID(item_id) or ".." in item_id or item_id[-1] == "." or item_id.endswith(".lock"):
            return id_problem(item_id)
        if word not in _STATUS_BY_WORD:
            hint = " (statuses are upper case)" if word.upper() in STATUS_WORDS else ""
            return f"unknown status '{word}'{hint}; use one of {', '.join(STATUS_WORDS)}"
        for _, k, name in self.ints:
            text = cells[k].strip(" \t")
            if text and not (text.isascii() and text.isdigit()):
                return f"{name} '{text}' is not a whole number"
        return None

    def make(self, cells: list[str], exact: bool) -> Item:
        """The Item for cells that passed ``check``; ``exact`` cells are decoded already."""
        if not exact:
            cells = [cell.strip(" \t") for cell in cells]
        args = self.template.copy()
        args[0], args[1] = cells[self.id_at], _STATUS_BY_WORD[cells[self.status_at]]
        for slot, k in self.texts:
            args[slot] = cells[k]
        for slot, k, _ in self.ints:
            if cells[k]:
                args[slot] = int(cells[k])
        if self.depends and cells[self.depends[1]]:
            args[self.depends[0]] = parse_depends(cells[self.depends[1]])
        args[self.extra_slot] = {name: cells[k] for name, k in self.extra}
        return Item(*args)


def _confirmed_by_mistune(lines: list[str], span: mdtable.TableSpan, width: int) -> bool:
    """Whether mistune agrees this is the first top-level queue table, with the same rows.

    mistune sees a trimmed copy: everything before the table verbatim, the
    table with marker cells (its cell splitting is not GFM's, so real cells
    could mislead it), and the line after the table.
    """
    import mistune

    def shaped(line: str, cells: list[str]) -> str:
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        return indent + "|" + "|".join(f" {cell} " for cell in cells) + "|"

    markers = [f"orchcol{k}" for k in range(width)]
    body = lines[span.header + 2 : span.end]
    sample = body[:1] + body[-1:] if len(body) > 1 else body
    pieces = lines[: span.header]
    pieces.append(shaped(lines[span.header], markers))
    pieces.append(shaped(lines[span.header + 1], ["---"] * width))
    pieces += [shaped(line, ["x"] * width) for line in sample]
    pieces += lines[span.end : span.end + 1]
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
