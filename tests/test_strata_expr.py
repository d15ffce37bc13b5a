"""exoray.strata.expr: the subset grammar (not > and > or), Kleene masks, errors with columns,
and no eval."""

from __future__ import annotations

import pyarrow as pa
import pytest

from exoray.strata.expr import And, Name, Not, Or, SubsetError, parse_expression, parse_subset

FLAGS = ["text_heavy", "screenshot", "dark", "photo", "a", "b", "c"]


def test_precedence_not_and_or():
    root = parse_expression("a or b and not c")
    assert root == Or((Name("a"), And((Name("b"), Not(Name("c"))))))
    assert parse_expression("not a and b") == And((Not(Name("a")), Name("b")))
    assert parse_expression("a and b or c") == Or((And((Name("a"), Name("b"))), Name("c")))
    assert parse_expression("not not a") == Not(Not(Name("a")))


def test_parentheses_and_canonical_text():
    expr = parse_subset("text_heavy and not (screenshot or dark)", FLAGS)
    assert expr.flags == {"text_heavy", "screenshot", "dark"}
    assert str(expr) == "text_heavy and not (screenshot or dark)"
    assert str(parse_subset("((a))  and(b or c)", FLAGS)) == "a and (b or c)"
    assert str(parse_subset("(a or b) and not c or a", FLAGS)) == "(a or b) and not c or a"
    assert str(parse_subset("a and (b and c)", FLAGS)) == "a and (b and c)"


def test_mask_kleene_and_null_is_false():
    table = pa.table({
        "a": pa.array([True, True, False, None, None, False]),
        "b": pa.array([True, None, None, False, True, False]),
    })
    assert parse_subset("a and b", "ab").mask(table).to_pylist() == \
        [True, False, False, False, False, False]
    assert parse_subset("a or b", "ab").mask(table).to_pylist() == \
        [True, True, False, False, True, False]
    # not of an unknown flag stays unknown, so the image is left out
    assert parse_subset("not a", "ab").mask(table).to_pylist() == \
        [False, False, True, False, False, True]
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=2))
    mask = parse_subset("a or not b", "ab").mask(chunked)
    assert isinstance(mask, pa.Array) and mask.type == pa.bool_()
    assert mask.to_pylist() == [True, True, False, True, False, True]


@pytest.mark.parametrize("text, column, words", [
    ("a and", 6, "expected a flag name, 'not' or '(', got the end"),
    ("a b", 3, "expected 'and', 'or' or the end, got 'b'"),
    ("(a or b", 8, "expected ')' to close the '(' at column 1"),
    ("a or )", 6, "got ')'"),
    ("a & b", 3, "unexpected character '&'"),
    ("__import__('os')", 12, "unexpected character"),
    ("a; import os", 2, "unexpected character ';'"),
    ("", 1, "subset is empty"),
    ("   ", 1, "subset is empty"),
])
def test_syntax_errors_point_at_the_column(text, column, words):
    with pytest.raises(SubsetError) as err:
        parse_subset(text, FLAGS)
    assert err.value.column == column
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_no_eval_of_python():
    # a name-call is a syntax error, never a call; dunder names are only unknown flags
    with pytest.raises(SubsetError, match="column 12: expected 'and', 'or' or the end"):
        parse_subset("__import__ (os)", FLAGS + ["os"])
    with pytest.raises(SubsetError, match="unknown flag '__class__'"):
        parse_subset("__class__", FLAGS)


def test_unknown_flag_lists_the_flags():
    with pytest.raises(SubsetError) as err:
        parse_subset("photo and not darkk", FLAGS)
    message = str(err.value)
    assert err.value.column == 15
    assert "unknown flag 'darkk'" in message and "did you mean 'dark'?" in message
    assert "flags: a, b, c, dark, photo, screenshot, text_heavy" in message


def test_keywords_are_not_flags_and_mask_needs_the_columns():
    with pytest.raises(SubsetError):
        parse_subset("and", ["and"])
    with pytest.raises(SubsetError, match="no column 'b'"):
        parse_subset("a and b", "ab").mask(pa.table({"a": [True]}))
    with pytest.raises(SubsetError, match="must be a string"):
        parse_expression(None)  # type: ignore[arg-type]
