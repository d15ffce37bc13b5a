"""The compiled form of a rule: a small tree of frozen nodes that :mod:`evaluate` walks.

Rules files are data; :mod:`exoray.strata.rules` checks them and turns each flag into one of
these trees, so evaluation never looks at YAML again and a rule can nest others inline (e.g.
``first_of: [ocr evidence, zero-shot]``) without inventing names for the parts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Combine", "Duplicate", "Evidence", "Feature", "FlagRule", "LinearHead", "Node", "Ref",
           "ZeroShot", "leaves", "refs", "walk"]


@dataclass(frozen=True)
class Feature:
    """A Phase II column (``column``) or a quality issue's score (``issue``) against a threshold.

    ``threshold=None`` only for yes/no issues (grayscale, near_duplicates): flagged at score 1.
    """

    op: str
    threshold: float | None
    column: str | None = None
    issue: str | None = None


@dataclass(frozen=True)
class ZeroShot:
    """CLIP zero-shot: max cosine to ``positive`` prompts minus max cosine to ``negative``."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]
    margin: float = 0.0
    embedding: str = "clip"


@dataclass(frozen=True)
class LinearHead:
    """``vector @ weights + bias`` against a threshold, valid only for the listed model ids."""

    embedding: str
    models: tuple[str, ...]
    weights: tuple[float, ...] = field(repr=False)
    bias: float
    op: str
    threshold: float
    model_name: str = ""


@dataclass(frozen=True)
class Evidence:
    """A Phase V per-image evidence column (``table``: 'ocr', 'detect', ...) against a threshold."""

    table: str
    column: str
    op: str
    threshold: float


@dataclass(frozen=True)
class Duplicate:
    """Membership of duplicate groups: ``any`` member, or ``redundant`` (not the group's keeper)."""

    member: str
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class Combine:
    """``all_of`` / ``any_of`` / ``first_of`` / ``not`` over other nodes."""

    op: str
    inputs: tuple[Node, ...]


@dataclass(frozen=True)
class Ref:
    """Another named flag's result."""

    name: str


Node = Feature | ZeroShot | LinearHead | Evidence | Duplicate | Combine | Ref
LEAF_TYPES = (Feature, ZeroShot, LinearHead, Evidence, Duplicate)


@dataclass(frozen=True)
class FlagRule:
    """One named flag: its compiled tree plus the resolved rule as plain data.

    ``spec`` is what ``to_yaml`` prints and what the rules version hashes (``help`` aside);
    it is excluded from equality and hashing since it is a dict.
    """

    name: str
    kind: str
    node: Node
    help: str = ""
    spec: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


def walk(node: Node) -> Iterator[Node]:
    """``node`` and everything under it, depth first."""
    yield node
    if isinstance(node, Combine):
        for child in node.inputs:
            yield from walk(child)


def leaves(node: Node) -> Iterator[Node]:
    return (n for n in walk(node) if isinstance(n, LEAF_TYPES))


def refs(node: Node) -> list[str]:
    """Names of the flags ``node`` reads, in order, each once."""
    return list(dict.fromkeys(n.name for n in walk(node) if isinstance(n, Ref)))
