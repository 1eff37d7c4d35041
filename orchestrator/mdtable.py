"""GFM pipe tables inside a markdown document, with exact positions.

Pure functions: find the top-level tables, split rows exactly as GFM does
(a pipe right after a backslash never splits), turn cell text into values
and back, and splice new cell text into a line without touching its other
bytes. Lines are split on ``\\n`` only (``str.splitlines`` would also split
on form feeds and Unicode separators, which GFM does not).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple


class _Lazy:
    """A regex compiled on first use: a read-only command may never need most of them."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self.pattern, self.flags, self.compiled = pattern, flags, None

    def __getattr__(self, name: str):
        if self.compiled is None:
            self.compiled = re.compile(self.pattern, self.flags)
        return getattr(self.compiled, name)


_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
_DELIMITER_ROW = _Lazy(r"^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_FENCE_OPEN = _Lazy(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_ATX_HEADING = _Lazy(r"^ {0,3}#{1,6}(?:[ \t]|$)")
_THEMATIC_BREAK = _Lazy(r"^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$")
_QUOTE = _Lazy(r"^ {0,3}>")
_LIST_ITEM = _Lazy(r"^( {0,3})([-+*]|\d{1,9}[.)])([ \t]+|$)")
_HTML_RAW = _Lazy(r"^ {0,3}<(script|pre|style|textarea)(?:[\s>]|$)", re.IGNORECASE)
_HTML_RAW_END = _Lazy(r"</(?:script|pre|style|textarea)>", re.IGNORECASE)
_HTML_COMMENT = _Lazy(r"^ {0,3}<!--")
_HTML_BLOCK = _Lazy(r"^ {0,3}</?[A-Za-z][A-Za-z0-9-]*(?:[\s/>]|$)")

_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_DECODE = _Lazy(r"\\([!-/:-@\[-`{-~])|&#([0-9]{1,7});|&#[xX]([0-9a-fA-F]{1,6});")


# --- cell text <-> value -------------------------------------------------------


def _needs_reference(ch: str) -> bool:
    """Characters that could end a line or hide in an editor: written as ``&#N;``."""
    code = ord(ch)
    return code < 32 or 127 <= code <= 159 or code in (0x2028, 0x2029)


def encode_cell(value: str) -> str:
    """Cell text that reads back as ``value`` and can never split a cell or a row."""
    last = len(value) - 1
    tokens = []
    for i, ch in enumerate(value):
        if _needs_reference(ch) or (ch == " " and (i == 0 or i == last)):
            tokens.append(f"&#{ord(ch)};")
        elif ch == "|":
            tokens.append("\\|")
        elif ch == "&" and i < last and value[i + 1] == "#":
            tokens.append("\\&")
        else:
            tokens.append(ch)
    for i in range(last - 1, -1, -1):
        # A backslash before punctuation would escape it, so it escapes itself.
        if tokens[i] == "\\" and tokens[i + 1][0] in _ASCII_PUNCTUATION:
            tokens[i] = "\\\\"
    return "".join(tokens)


def _decode_match(match: re.Match) -> str:
    punctuation, decimal, hexadecimal = match.groups()
    if punctuation is not None:
        return punctuation
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return match.group(0)
    return chr(code)


def decode_cell(raw: str) -> str:
    """The value of a cell's raw text: GFM's pipe unescape, then backslash and ``&#N;``."""
    text = raw.strip(" \t")
    if "\\" not in text and "&#" not in text:
        return text
    return _DECODE.sub(_decode_match, text.replace("\\|", "|"))


# --- lines and rows ------------------------------------------------------------


class Line(NamedTuple):
    """One line of the document: ``text`` excludes the line ending."""

    number: int
    start: int
    text: str
    ending: str  # "\n", "\r\n" or "" for a last line without one

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    @property
    def next_start(self) -> int:
        return self.start + len(self.text) + len(self.ending)


class Document:
    """A text split into lines on ``\\n`` only; offsets are computed when first asked for."""

    def __init__(self, text: str) -> None:
        self.text = text
        parts = text.split("\n")
        self.final_newline = parts[-1] == ""
        if self.final_newline:
            parts.pop()
        self.parts = parts  # each line with its "\r" if it had one
        self.texts = [p[:-1] if p[-1:] == "\r" else p for p in parts] if "\r" in text else parts
        self._starts: list[int] | None = None

    def __len__(self) -> int:
        return len(self.parts)

    def start(self, index: int) -> int:
        """Offset in ``text`` where line ``index`` (0-based) starts."""
        if self._starts is None:
            self._starts = list(accumulate(map(len, self.parts), initial=0))
        return self._starts[index] + index  # each earlier line also had its "\n"

    def ending(self, index: int) -> str:
        if index == len(self.parts) - 1 and not self.final_newline:
            return ""
        return "\r\n" if self.parts[index][-1:] == "\r" else "\n"

    def line(self, index: int) -> Line:
        return Line(index + 1, self.start(index), self.texts[index], self.ending(index))


def split_lines(text: str) -> list[Line]:
    """Lines split on ``\\n`` only; a ``\\r`` before it belongs to the ending."""
    document = Document(text)
    return [document.line(k) for k in range(len(document))]


def lone_cr_lines(text: str) -> list[int]:
    """Line numbers holding a carriage return that is not part of ``\\r\\n``."""
    found = []
    position = text.find("\r")
    while position >= 0:
        if not text.startswith("\n", position + 1):
            found.append(text.count("\n", 0, position) + 1)
        position = text.find("\r", position + 1)
    return found


class Row(NamedTuple):
    """A table line split into cells the GFM way."""

    line: Line
    cells: tuple[str, ...]
    bordered: bool  # starts and ends with an unescaped pipe, indented at most 3 spaces

    @property
    def spans(self) -> tuple[tuple[int, int], ...]:
        """Where each cell's text is in ``line.text`` (between its pipes)."""
        return _split(self.line.text)[0]


def _split(text: str) -> tuple[tuple[tuple[int, int], ...], bool]:
    pipes = [m.start() for m in _UNESCAPED_PIPE.finditer(text)]
    indent = len(text) - len(text.lstrip(" \t"))
    body_end = len(text.rstrip(" \t"))
    leading = bool(pipes) and pipes[0] == indent
    trailing = bool(pipes) and pipes[-1] == body_end - 1 and not (leading and len(pipes) == 1)
    inner = pipes[1 if leading else 0 : len(pipes) - 1 if trailing else len(pipes)]
    cuts = [pipes[0] if leading else indent - 1, *inner, pipes[-1] if trailing else len(text)]
    spans = tuple((cuts[k] + 1, cuts[k + 1]) for k in range(len(cuts) - 1))
    return spans, leading and trailing and _indent(text) <= 3


def split_row(line: Line) -> Row:
    """Split a row the GFM way; outer pipes are optional here, ``bordered`` says if present."""
    text = line.text
    body = text.strip(" \t")
    if "\\" not in body and "&#" not in body and body[:1] == "|" and body[-1:] == "|" and len(body) > 1:
        # The common case, fast: no escapes, outer pipes present.
        cells = tuple([part.strip(" \t") for part in body[1:-1].split("|")])
        return Row(line, cells, text[:4] != "    " and "\t" not in text[: len(text) - len(text.lstrip())])
    spans, bordered = _split(text)
    return Row(line, tuple(decode_cell(text[a:b]) for a, b in spans), bordered)


def is_delimiter_row(text: str) -> bool:
    """A GFM delimiter row with at least one pipe (so at least two columns or outer pipes)."""
    return "|" in text and _DELIMITER_ROW.match(text) is not None


def replace_cell(row: Row, index: int, value: str, *, aligned: bool = False) -> str:
    """The row's text with one cell set to ``value``.

    A padded cell (or one in an ``aligned`` column) keeps its width where the
    new text fits; other cells keep their own spacing.
    """
    start, end = row.spans[index]
    text = row.line.text
    inner = text[start:end]
    encoded = encode_cell(value)
    if not inner.strip(" \t"):
        lead, trail = " ", inner[1:] or " "
    else:
        lead = inner[: len(inner) - len(inner.lstrip(" \t"))]
        trail = inner[len(inner.rstrip(" \t")) :]
    # A trailing backslash must never touch the closing pipe: it would escape it.
    least = 1 if trail or encoded.endswith("\\") else 0
    if aligned or len(trail) > 1:
        pad = max(least, len(inner) - len(lead) - len(encoded))
    else:
        pad = max(least, len(trail))
    return text[:start] + lead + encoded + " " * pad + text[end:]


def render_row(values: list[str], widths: list[int] | None = None) -> str:
    """A bordered row; each cell padded to ``widths`` (inner widths) when given."""
    parts = []
    for i, value in enumerate(values):
        cell = f" {encode_cell(value)} "
        if widths and len(cell) < widths[i]:
            cell += " " * (widths[i] - len(cell))
        parts.append(cell)
    return "|" + "|".join(parts) + "|"


# --- where the tables are ------------------------------------------------------


@dataclass(frozen=True)
class TableSpan:
    """Lines ``header`` .. ``end - 1`` (0-based indexes) form one top-level table."""

    header: int
    end: int


def _indent(text: str) -> int:
    width = 0
    for ch in text:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += 4 - width % 4
        else:
            break
    return width


def _is_blank(text: str) -> bool:
    return not text.strip(" \t")


_BLOCK_START = _Lazy(
    r"""^\ {0,3}(?:
        `{3,} | ~{3,}                                            # code fence
      | \#{1,6}(?:[\ \t]|$)                                      # ATX heading
      | (?:(?:-[\ \t]*){3,}|(?:\*[\ \t]*){3,}|(?:_[\ \t]*){3,})$    # thematic break
      | >                                                        # block quote
      | <!--                                                     # HTML comment
      | <(?i:script|pre|style|textarea)(?:[\s>]|$)               # raw HTML block
      | (?:[-+*]|\d{1,9}[.)])[\ \t]+\S                            # a list item with text
    )""",
    re.VERBOSE,
)


def starts_block(text: str) -> bool:
    """Whether the line opens a block that ends a paragraph or a table."""
    return _BLOCK_START.match(text) is not None


def _header_cells(text: str) -> int:
    return len(split_row(Line(0, 0, text, "")).spans)


class _Scanner:
    """Walks the lines once, tracking the blocks that can hide a table."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.fence: tuple[str, int] | None = None
        self.html_end: re.Pattern | str | None = None
        self.container: str | None = None
        self.list_indent = 0
        self.prev_blank = True
        self.in_paragraph = False

    def tables(self) -> Iterator[TableSpan]:
        i = 0
        while i < len(self.lines):
            text = self.lines[i]
            if self._skip_hidden(text):
                i += 1
                continue
            span = self._table_at(i)
            if span:
                yield span
                i = span.end
                self.prev_blank, self.in_paragraph = False, False
                continue
            self._note_line(text)
            i += 1

    def _skip_hidden(self, text: str) -> bool:
        """True for lines inside code, HTML or a container; updates the block state."""
        if self.fence:
            char, length = self.fence
            close = text.lstrip(" ")
            if _indent(text) <= 3 and close.startswith(char * length) and not close.strip(char + " \t"):
                self.fence = None
            return True
        if self.html_end is not None:
            if self.html_end == "blank":
                if _is_blank(text):
                    self.html_end = None
                    self.prev_blank = True
                return True
            if (isinstance(self.html_end, str) and self.html_end in text) or (
                not isinstance(self.html_end, str) and self.html_end.search(text)
            ):
                self.html_end = None
            return True
        if _is_blank(text):
            self.prev_blank, self.in_paragraph = True, False
            if self.container == "quote":
                self.container = None
            return True
        if self._inside_container(text):
            self._open_nested_fence(text)
            self.prev_blank = False
            return True
        return self._open_hidden_block(text)

    def _inside_container(self, text: str) -> bool:
        if _QUOTE.match(text):
            self.container = "quote"
            return True
        item = _LIST_ITEM.match(text)
        if item and not (self.in_paragraph and _is_blank(text[item.end() :])):
            self.container = "list"
            self.list_indent = (
                len(item.group(0)) if not _is_blank(text[item.end() :]) else len(item.group(1)) + len(item.group(2)) + 1
            )
            return True
        if self.container is None:
            return False
        if not self.prev_blank and not starts_block(text):
            return True  # a lazy continuation line
        if self.container == "list" and _indent(text) >= self.list_indent:
            return True
        self.container = None
        return False

    def _open_nested_fence(self, text: str) -> None:
        stripped = text.lstrip(" \t>")
        stripped = _LIST_ITEM.sub("", stripped, count=1) if _LIST_ITEM.match(stripped) else stripped
        fence = _FENCE_OPEN.match(stripped.lstrip(" "))
        if fence and not (fence.group(2)[0] == "`" and "`" in fence.group(3)):
            self.fence = (fence.group(2)[0], len(fence.group(2)))

    def _open_hidden_block(self, text: str) -> bool:
        indent = _indent(text)
        if indent >= 4 and not self.in_paragraph:
            self.prev_blank = False
            return True  # indented code
        fence = _FENCE_OPEN.match(text)
        if fence and not (fence.group(2)[0] == "`" and "`" in fence.group(3)):
            self.fence = (fence.group(2)[0], len(fence.group(2)))
            self.in_paragraph = False
            return True
        if _HTML_COMMENT.match(text):
            self.html_end = None if "-->" in text[text.index("<!--") + 4 :] else "-->"
            self.in_paragraph = False
            return True
        if _HTML_RAW.match(text):
            self.html_end = None if _HTML_RAW_END.search(text) else _HTML_RAW_END
            self.in_paragraph = False
            return True
        if _HTML_BLOCK.match(text) and not self.in_paragraph:
            self.html_end = "blank"
            return True
        return False

    def _table_at(self, i: int) -> TableSpan | None:
        if i + 1 >= len(self.lines):
            return None
        header, delimiter = self.lines[i], self.lines[i + 1]
        if "|" not in header or _indent(header) > 3 or starts_block(header):
            return None
        if not is_delimiter_row(delimiter) or _header_cells(header) != _header_cells(delimiter):
            return None
        end = i + 2
        count = len(self.lines)
        while end < count:
            text = self.lines[end]
            # A line starting with a pipe can start no other block: skip the block checks.
            if text[:1] != "|" and (_is_blank(text) or starts_block(text)):
                break
            end += 1
        return TableSpan(i, end)

    def _note_line(self, text: str) -> None:
        self.prev_blank = False
        self.in_paragraph = not (_ATX_HEADING.match(text) or _THEMATIC_BREAK.match(text))


def find_tables(lines: list[str]) -> Iterator[TableSpan]:
    """Every top-level GFM table, in order: not inside a code block, HTML block, quote or list."""
    return _Scanner(lines).tables()


def find_nested_header(lines: list[str], wanted: set[str]) -> int | None:
    """Index of the first header row with all ``wanted`` columns anywhere, even inside other blocks."""
    for i in range(len(lines) - 1):
        text = lines[i]
        if "|" in text and is_delimiter_row(lines[i + 1].lstrip(" \t>-*+")):
            names = {cell.lower() for cell in split_row(Line(0, 0, text.lstrip(" \t>"), "")).cells}
            if wanted <= names:
                return i
    return None
