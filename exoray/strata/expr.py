"""Subset expressions over flag names, e.g. ``text_heavy and not (screenshot or dark)``.

A user types these at the command line and in rules files, so they are parsed by a small
tokenizer and a recursive-descent parser and never handed to ``eval``: the only things that can
appear are flag names, ``and``, ``or``, ``not`` and parentheses. Precedence is ``not`` > ``and``
> ``or`` (as in Python and SQL), so ``a or b and not c`` is ``a or (b and (not c))``.

Flags are three-valued (a flag is null where it could not be computed, e.g. no CLIP vector):
``and``/``or``/``not`` follow Kleene logic (SQL's), so ``dark or photo`` is true for a dark image
even where ``photo`` is unknown, and ``not photo`` is unknown where ``photo`` is. A subset keeps
only the rows whose result is true: an unknown membership is left out (null -> False), so a subset
never claims an image it could not decide on. Rules' ``expr:`` flags use the same grammar and
logic (see :mod:`exoray.strata.evaluate`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["And", "KEYWORDS", "Name", "Not", "Or", "SubsetError", "SubsetExpr", "parse_expression",
           "parse_subset"]

KEYWORDS = frozenset({"and", "or", "not"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SubsetError(ValueError):
    """A subset expression that cannot be used; ``column`` (1-based) points at the problem."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class Name:
    name: str
    column: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]


Node = Name | Not | And | Or
_PRECEDENCE = {Or: 1, And: 2, Not: 3, Name: 4}


@dataclass(frozen=True)
class _Token:
    kind: str  # 'name', 'and', 'or', 'not', '(', ')', 'end'
    text: str
    column: int


def _describe(token: _Token) -> str:
    return "the end" if token.kind == "end" else repr(token.text)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "()":
            tokens.append(_Token(ch, ch, i + 1))
            i += 1
            continue
        match = _NAME.match(text, i)
        if match is None:
            raise SubsetError(f"subset {text!r}, column {i + 1}: unexpected character {ch!r}; "
                              "use flag names, and, or, not and parentheses", i + 1)
        word = match.group()
        kind = word if word in KEYWORDS else "name"
        tokens.append(_Token(kind, word, i + 1))
        i = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    """expr := or;  or := and ('or' and)*;  and := unary ('and' unary)*;
    unary := 'not' unary | atom;  atom := NAME | '(' or ')'."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, token: _Token, expected: str) -> SubsetError:
        return SubsetError(f"subset {self.text!r}, column {token.column}: expected {expected}, "
                           f"got {_describe(token)}", token.column)

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise SubsetError("subset is empty; join flag names with and/or/not, e.g. "
                              "'photo and not dark'", 1)
        node = self.parse_or()
        if self.peek().kind != "end":
            raise self.fail(self.peek(), "'and', 'or' or the end")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.peek().kind == "or":
            self.take()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_unary()]
        while self.peek().kind == "and":
            self.take()
            items.append(self.parse_unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_unary(self) -> Node:
        if self.peek().kind == "not":
            self.take()
            return Not(self.parse_unary())
        return self.parse_atom()

    def parse_atom(self) -> Node:
        token = self.take()
        if token.kind == "name":
            return Name(token.text, token.column)
        if token.kind == "(":
            node = self.parse_or()
            closing = self.peek()
            if closing.kind != ")":
                raise self.fail(closing, f"')' to close the '(' at column {token.column}")
            self.take()
            return node
        raise self.fail(token, "a flag name, 'not' or '('")


def parse_expression(text: str) -> Node:
    """Syntax only: the tree of ``text`` (flag names are not checked)."""
    if not isinstance(text, str):
        raise SubsetError(f"subset must be a string like 'photo and not dark', got {text!r}")
    return _Parser(text).parse()


def names(node: Node) -> Iterator[Name]:
    """Every flag name in ``node``, left to right."""
    if isinstance(node, Name):
        yield node
    elif isinstance(node, Not):
        yield from names(node.operand)
    else:
        for child in node.operands:
            yield from names(child)


def unknown_flag_message(name: str, known: Iterable[str]) -> str:
    """``unknown flag 'x'; did you mean 'y'? flags: ...`` (shared with rules errors)."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown flag {name!r}; {hint}flags: {', '.join(known) or '(none)'}"


def format_node(node: Node, parent: int = 0) -> str:
    """Canonical text with only the parentheses precedence needs."""
    prec = _PRECEDENCE[type(node)]
    if isinstance(node, Name):
        text = node.name
    elif isinstance(node, Not):
        text = "not " + format_node(node.operand, prec)
    else:
        joiner = " and " if isinstance(node, And) else " or "
        # same-precedence children need parentheses: (a or b) or c is kept as written
        text = joiner.join(format_node(child, prec + 1) for child in node.operands)
    return f"({text})" if prec < parent else text


@dataclass(frozen=True)
class SubsetExpr:
    """A parsed, checked subset expression; ``mask`` selects the rows of a flags table."""

    root: Node
    text: str

    @property
    def flags(self) -> frozenset[str]:
        return frozenset(n.name for n in names(self.root))

    def __str__(self) -> str:
        return format_node(self.root)

    def mask(self, table: pa.Table) -> pa.Array:
        """Boolean array, one per row: true where the expression is true (unknown -> False)."""
        missing = sorted(self.flags - set(table.column_names))
        if missing:
            raise SubsetError(f"subset {self.text!r}: the table has no column "
                              f"{', '.join(map(repr, missing))}; evaluate the rules first")
        result = pc.fill_null(self._eval(self.root, table), False)
        if isinstance(result, pa.ChunkedArray):
            result = result.combine_chunks()
        return result

    def _eval(self, node: Node, table: pa.Table) -> pa.Array | pa.ChunkedArray:
        if isinstance(node, Name):
            return pc.cast(table[node.name], pa.bool_())
        if isinstance(node, Not):
            return pc.invert(self._eval(node.operand, table))
        combine = pc.and_kleene if isinstance(node, And) else pc.or_kleene
        out = self._eval(node.operands[0], table)
        for child in node.operands[1:]:
            out = combine(out, self._eval(child, table))
        return out


def parse_subset(expr: str, known: Iterable[str]) -> SubsetExpr:
    """Parse ``expr`` and check every flag name against ``known`` (errors name the column)."""
    known = set(known)
    root = parse_expression(expr)
    for name in names(root):
        if name.name not in known:
            raise SubsetError(f"subset {expr!r}, column {name.column}: "
                              f"{unknown_flag_message(name.name, known)}", name.column)
    return SubsetExpr(root, expr)
