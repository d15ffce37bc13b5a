"""Evaluate resolved rules over Phase II features (+ embeddings, duplicates, Phase V evidence).

Pure and vectorised: the caller (the Phase IV pipeline) reads BASE and writes the table; this
module only turns columns into flags, so the same definitions serve the pipeline, tests and
notebooks, and a million rows cost a few numpy passes per flag.

Per flag the table has ``<flag>`` (bool), ``<flag>_score`` (float32) and ``<flag>_evidence``
(string). A flag is null where it could not be computed (no CLIP vector for the image, no input
at all); if that holds for every image, :attr:`Evaluation.skipped` says why in one line (what to
run). Combinations use Kleene logic (see :mod:`exoray.strata.expr`): ``all_of`` is false as soon
as one input is false, even if another is unknown, and true only when all are true; ``any_of``
mirrors it; ``first_of`` takes, per image, the first input that could be computed, which is how
stronger evidence (OCR, detections) overrides CLIP zero-shot where it exists. Scores are signed
distances past each rule's threshold (> 0 when flagged), so they combine by min (all_of), max
(any_of) and negation (not) and stay consistent with the flag.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from exoray.strata import nodes as N
from exoray.strata.rules import Rules
from exoray.strata.signals import LEAVES, Inputs, Result, Vectors

__all__ = ["Evaluation", "evaluate"]

Rows = np.ndarray | pa.Array | pa.ChunkedArray


@dataclass
class Evaluation:
    """One row per features row (image_id, fingerprint, rules_version, per-flag columns),
    flags skipped for every image with the reason, and notes on partial inputs."""

    table: pa.Table
    skipped: dict[str, str]
    notes: list[str] = field(default_factory=list)


def _combine(op: str, parts: list[Result]) -> Result:
    reasons = tuple(dict.fromkeys(r for p in parts for r in p.reasons))
    if op == "not":
        (p,) = parts
        return Result(~p.flag & p.valid, p.valid, -p.score, p.bits, p.reasons)
    if op == "first_of":
        last = parts[-1]
        flag, valid, score, bits = last.flag, last.valid, last.score, last.bits
        for p in reversed(parts[:-1]):
            flag = np.where(p.valid, p.flag, flag)
            score = np.where(p.valid, p.score, score)
            bits = np.where(p.valid, p.bits, bits)
            valid = p.valid | valid
        return Result(flag, valid, score, bits, reasons)
    any_true = functools.reduce(np.logical_or, [p.valid & p.flag for p in parts])
    any_false = functools.reduce(np.logical_or, [p.valid & ~p.flag for p in parts])
    all_valid = functools.reduce(np.logical_and, [p.valid for p in parts])
    if op == "all_of":
        flag = all_valid & ~any_false
        valid = any_false | flag
        score = functools.reduce(np.fmin, [p.score for p in parts])
    else:  # any_of
        flag = any_true
        valid = any_true | all_valid
        score = functools.reduce(np.fmax, [p.score for p in parts])
    bits = functools.reduce(np.bitwise_or, [p.bits for p in parts])
    return Result(flag, valid, np.where(valid, score, math.nan), np.where(valid, bits, 0),
                  reasons)


def _node(node: N.Node, ctx: Inputs, done: dict[str, Result]) -> Result:
    if isinstance(node, N.Ref):
        return done[node.name]
    if isinstance(node, N.Combine):
        return _combine(node.op, [_node(child, ctx, done) for child in node.inputs])
    return LEAVES[type(node)](ctx, node)


def _evidence_column(ctx: Inputs, bits: np.ndarray) -> pa.Array:
    """Bits -> 'features+clip' strings (null where nothing was used), one label per distinct set."""
    present = np.bincount(bits, minlength=1)  # bits are small: a few evidence kinds
    uniq = np.flatnonzero(present)
    code = np.zeros(present.size, dtype=np.int32)
    code[uniq] = np.arange(uniq.size, dtype=np.int32)
    labels = pa.array([ctx.label(int(b)) for b in uniq], pa.string())
    indices = pa.array(code[bits], mask=bits == 0)
    return pa.DictionaryArray.from_arrays(indices, labels).cast(pa.string())


def _prompts_by_family(rules: Rules) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rule in rules.flags:
        for leaf in N.leaves(rule.node):
            if isinstance(leaf, N.ZeroShot):
                out.setdefault(leaf.embedding, []).extend((*leaf.positive, *leaf.negative))
    return {family: list(dict.fromkeys(prompts)) for family, prompts in out.items()}


def _row_indices(rows: Rows | None, total: int) -> np.ndarray | None:
    if rows is None:
        return None
    if isinstance(rows, (pa.Array, pa.ChunkedArray)):
        rows = rows.to_numpy(zero_copy_only=False)
    values = np.asarray(rows)
    if values.dtype == bool:
        if values.shape != (total,):
            raise ValueError(f"rows: a mask needs one value per features row ({total}), got "
                             f"shape {values.shape}")
        return np.flatnonzero(values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or (
            values.size and (values.min() < 0 or values.max() >= total)):
        raise ValueError(f"rows must be a boolean mask or row numbers in 0..{total - 1}")
    return values.astype(np.int64)


def evaluate(rules: Rules, features: pa.Table, *, vectors: Vectors | None = None,
             text_vectors: Mapping[str, np.ndarray] | None = None,
             duplicates: pa.Table | None = None,
             evidence: Mapping[str, pa.Table] | None = None,
             rows: Rows | None = None) -> Evaluation:
    """Every flag of ``rules`` for every row of ``features``.

    ``vectors``: family -> (image_ids, unit vectors float32 (n, d), model_id), any order, any
    subset of the images. ``text_vectors``: prompt -> unit vector of the same model as
    ``vectors['clip']`` (embed :meth:`Rules.prompt_sets`). ``duplicates``: features/dupes.parquet
    (image_id, group_id, kind); without it groups are made from the perceptual hashes.
    ``evidence``: Phase V tables keyed by image_id ('ocr', 'detect', ...).

    ``features`` must be the whole collection: odd_size is relative to the collection's median
    size and a duplicate group's keeper is chosen among all its members. To flag only some
    images (one part of a resumable run), pass ``rows`` (a boolean mask over ``features`` or
    row numbers): the output then has those rows only, and per-image work (CLIP scores,
    evidence joins) is done for them alone.
    """
    picked = _row_indices(rows, features.num_rows)
    ctx = Inputs(features, picked, _prompts_by_family(rules), vectors, text_vectors, duplicates,
                 evidence)
    keys = features.select([c for c in ("image_id", "fingerprint") if c in features.column_names])
    if picked is not None:
        keys = keys.take(pa.array(picked))
    done: dict[str, Result] = {}
    n = keys.num_rows
    fingerprint = (keys["fingerprint"] if "fingerprint" in keys.column_names
                   else pa.nulls(n, pa.string()))
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "image_id": keys["image_id"],
        "fingerprint": fingerprint,
        "rules_version": pa.repeat(pa.scalar(rules.version, pa.string()), n),
    }
    skipped: dict[str, str] = {}
    for rule in rules.flags:
        result = done[rule.name] = _node(rule.node, ctx, done)
        missing = ~result.valid
        columns[rule.name] = pa.array(result.flag, pa.bool_(), mask=missing)
        columns[f"{rule.name}_score"] = pa.array(result.score.astype(np.float32), pa.float32(),
                                                 mask=missing)
        columns[f"{rule.name}_evidence"] = _evidence_column(ctx, result.bits)
        if n and not result.valid.any():
            skipped[rule.name] = "; ".join(result.reasons) or "no input could be computed"
    return Evaluation(table=pa.table(columns), skipped=skipped, notes=ctx.notes)
