"""The GFM table codec: cell escaping, exact row splitting, finding top-level tables."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator import mdtable
from orchestrator.mdtable import Line, decode_cell, encode_cell, split_lines, split_row
from tests.strategies import cell_text


def row(text: str) -> mdtable.Row:
    return split_row(Line(1, 0, text, ""))


@given(st.text())
def test_any_text_reads_back_identically(value):
    assert decode_cell(encode_cell(value)) == value


@given(st.lists(cell_text, min_size=1, max_size=6))
def test_escaped_cells_never_split_a_cell_or_add_a_row(values):
    line = mdtable.render_row(values)
    assert "\n" not in line and "\r" not in line
    assert len(line.splitlines()) == 1  # not even an editor's idea of a line break
    parsed = row(line)
    assert parsed.bordered
    assert list(parsed.cells) == values


@given(st.text())
def test_encoded_text_has_no_edge_whitespace_or_control_characters(value):
    encoded = encode_cell(value)
    assert encoded == encoded.strip(" \t")
    assert not any(ord(ch) < 32 or 127 <= ord(ch) <= 159 for ch in encoded)


def test_a_pipe_right_after_a_backslash_never_splits():
    assert row(r"| a \| b | c |").cells == ("a | b", "c")
    assert row(r"| a \\| b |").cells == ("a | b",)  # GFM: still one cell


def test_gfm_unescapes_pipes_before_backslash_escapes():
    assert decode_cell(r"a\\|b") == "a|b"
    assert decode_cell(r"`x\|y`") == "`x|y`"
    assert decode_cell(r"C:\dir") == "C:\\dir"
    assert decode_cell(r"\*stars\*") == "*stars*"
    assert decode_cell("&#10;") == "\n"
    assert decode_cell("R&D &amp; co") == "R&D &amp; co"


def test_hand_written_text_stays_readable_when_written_back():
    assert encode_cell("C:\\dir") == "C:\\dir"
    assert encode_cell("a | b") == "a \\| b"
    assert encode_cell(" padded ") == "&#32;padded&#32;"
    assert encode_cell("two\nlines") == "two&#10;lines"


def test_lines_split_on_newline_only_and_keep_their_endings():
    text = "a\r\nb\x0cc\u2028d\ne"
    lines = split_lines(text)
    assert [line.text for line in lines] == ["a", "b\x0cc\u2028d", "e"]
    assert [line.ending for line in lines] == ["\r\n", "\n", ""]
    assert "".join(line.text + line.ending for line in lines) == text


def test_lone_carriage_returns_are_found_by_line():
    assert mdtable.lone_cr_lines("a\r\nb\rc\nd\r") == [2, 3]


def test_rows_without_outer_pipes_are_rows_but_not_bordered():
    assert not row("a | b").bordered
    assert not row("| a | b").bordered
    assert not row("    | a | b |").bordered
    assert row("   | a | b |").bordered


def test_replacing_a_cell_touches_nothing_else():
    original = row("| one |  two  | three|")
    assert mdtable.replace_cell(original, 1, "2") == "| one |  2    | three|"
    assert mdtable.replace_cell(original, 2, "x|y") == "| one |  two  | x\\|y|"


def test_a_trailing_backslash_never_escapes_the_closing_pipe():
    replaced = mdtable.replace_cell(row("|a|b|"), 1, "end\\")
    assert row(replaced).cells == ("a", "end\\")


def tables(text: str) -> list[int]:
    return [span.header + 1 for span in mdtable.find_tables(mdtable.Document(text).texts)]


TABLE = "| id | status |\n| --- | --- |\n| a | PENDING |\n"


def test_top_level_tables_are_found_with_their_extent():
    spans = list(mdtable.find_tables(mdtable.Document("intro\n\n" + TABLE + "\nafter\n").texts))
    assert [(s.header, s.end) for s in spans] == [(2, 5)]


def test_tables_in_fences_quotes_lists_comments_and_indented_code_are_not_top_level():
    hidden = [
        "```\n" + TABLE + "```\n",
        "~~~~\n" + TABLE + "~~~~\n",
        "".join("> " + line + "\n" for line in TABLE.splitlines()),
        "- item\n\n" + "".join("  " + line + "\n" for line in TABLE.splitlines()),
        "- item\n" + TABLE,
        "<!--\n" + TABLE + "-->\n",
        "".join("    " + line + "\n" for line in TABLE.splitlines()),
    ]
    for text in hidden:
        assert tables(text) == [], text


def test_a_block_start_ends_a_table():
    spans = list(mdtable.find_tables(mdtable.Document(TABLE + "> quote\n").texts))
    assert spans[0].end == 3


@given(st.text(alphabet=st.sampled_from("| \t\\&#;ab10\u00e9"), max_size=30))
def test_the_fast_row_split_agrees_with_the_exact_one(text):
    line = Line(1, 0, text, "")
    spans, bordered = mdtable._split(text)
    fast = split_row(line)
    assert fast.cells == tuple(decode_cell(text[a:b]) for a, b in spans)
    assert fast.bordered == bordered
