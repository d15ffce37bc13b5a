"""Leaf signals of the rules: one vectorised pass per leaf over all rows, never a loop per image.

Every leaf returns a :class:`Result` aligned to the features rows: a flag, whether it could be
computed (``valid``), a signed score (> 0 when flagged, in the rule's own units) and the evidence
kinds used (bits). A leaf that cannot run at all (no CLIP vectors, no OCR table, another model's
vectors) returns all-invalid with a one-line reason instead of raising: the other flags still
count, and the reason says what to run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exoray.explore import quality
from exoray.image.dupes import KINDS as DUPLICATE_KINDS
from exoray.image.dupes import find_hash_duplicates
from exoray.strata import nodes as N

# Evidence kinds that come first when naming what a value was computed from.
EVIDENCE_ORDER = ("features", "dupes")
Vectors = Mapping[str, tuple[list[str] | pa.Array, np.ndarray, str]]


@dataclass
class Result:
    flag: np.ndarray  # bool, False where not valid
    valid: np.ndarray  # bool
    score: np.ndarray  # float64, NaN where not valid
    bits: np.ndarray  # int64 evidence bits, 0 where not valid
    reasons: tuple[str, ...] = ()


def invalid(n: int, reason: str) -> Result:
    return Result(np.zeros(n, bool), np.zeros(n, bool), np.full(n, math.nan),
                  np.zeros(n, np.int64), (reason,))


def threshold(values: np.ndarray, op: str, limit: float | None, bit: int) -> Result:
    """Flag ``values`` (float64, NaN = unknown) against a limit; yes/no when ``limit`` is None."""
    valid = ~np.isnan(values)
    with np.errstate(invalid="ignore"):
        if limit is None:
            flag, score = values >= 1.0, values - 0.5
        elif op == "above":
            flag, score = values > limit, values - limit
        else:
            flag, score = values < limit, limit - values
    return Result(flag & valid, valid, np.where(valid, score, math.nan),
                  np.where(valid, bit, 0).astype(np.int64))


def _positions(ids: pa.Array | pa.ChunkedArray, value_set: pa.Array) -> np.ndarray:
    """Per id: its index in ``value_set`` (first match), -1 where absent."""
    pos = pc.index_in(ids, value_set=value_set)
    if isinstance(pos, pa.ChunkedArray):
        pos = pos.combine_chunks() if pos.num_chunks else pa.array([], pa.int32())
    return pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _as_array(values: pa.Array | pa.ChunkedArray | list[str]) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    return values if isinstance(values, pa.Array) else pa.array(values, pa.string())


class Inputs:
    """Everything a leaf may read, aligned to the features rows once and cached."""

    def __init__(self, features: pa.Table, rows: np.ndarray | None,
                 prompts: Mapping[str, list[str]], vectors: Vectors | None,
                 text_vectors: Mapping[str, np.ndarray] | None, duplicates: pa.Table | None,
                 evidence: Mapping[str, pa.Table] | None) -> None:
        if "image_id" not in features.column_names:
            raise ValueError("features table has no 'image_id' column; pass Phase II rows "
                             "(exoray.engine.readers.read_features)")
        self.features = features  # the whole collection: medians and duplicate groups
        self.total = features.num_rows
        self.all_ids = _as_array(features["image_id"])
        self.rows = rows  # the rows to evaluate (None: all)
        self.ids = self.all_ids if rows is None else self.all_ids.take(pa.array(rows))
        self.n = len(self.ids)
        self.collection = quality.Collection(features)
        self.prompts = prompts  # family -> every prompt the rules use
        self.vectors = dict(vectors or {})
        self.text_vectors = dict(text_vectors or {})
        self.duplicates = duplicates
        self.evidence = dict(evidence or {})
        self.kinds: dict[str, int] = {}
        self.notes: list[str] = []
        self._groups: tuple[pa.Table | None, str] | None = None
        self._families: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
        self._sims: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
        self._evidence_pos: dict[str, np.ndarray] = {}

    def bit(self, kind: str) -> int:
        if kind not in self.kinds:
            self.kinds[kind] = 1 << len(self.kinds)
        return self.kinds[kind]

    def label(self, bits: int) -> str:
        names = [k for k, b in self.kinds.items() if bits & b]
        names.sort(key=lambda k: (EVIDENCE_ORDER.index(k) if k in EVIDENCE_ORDER else 9, k))
        return "+".join(names)

    # -- duplicate groups ------------------------------------------------------------------------
    def groups(self) -> tuple[pa.Table | None, str]:
        """(image_id, group_id[, kind]) groups and their evidence kind, or (None, reason)."""
        if self._groups is None:
            self._groups = self._make_groups()
        return self._groups

    def _make_groups(self) -> tuple[pa.Table | None, str]:
        if self.duplicates is not None:
            missing = {"image_id", "group_id"} - set(self.duplicates.column_names)
            if missing:
                raise ValueError(f"duplicates table lacks {sorted(missing)}; pass "
                                 "features/dupes.parquet (image_id, group_id, kind)")
            return self.duplicates, "dupes"
        names = self.features.column_names
        if "phash" not in names:
            return None, "needs duplicate groups: run `exoray dupes BASE`"
        content = (self.features["content_hash"] if "content_hash" in names
                   else pa.nulls(self.total, pa.string()))
        try:
            groups = find_hash_duplicates(self.all_ids, content, self.features["phash"],
                                          max_distance=quality.NEAR_MAX_DISTANCE)
        except ValueError as exc:
            return None, f"cannot group duplicates from perceptual hashes ({exc})"
        self.notes.append(f"no duplicates table: grouped from perceptual hashes now (distance "
                          f"{quality.NEAR_MAX_DISTANCE}); `exoray dupes BASE` saves the groups")
        return groups, "features"

    # -- embeddings ------------------------------------------------------------------------------
    def family(self, family: str) -> tuple[np.ndarray, np.ndarray, str] | str:
        """(row -> vector index or -1, vectors float32 (m, d), model_id), or a reason."""
        if family in self._families:
            return self._families[family]
        if family not in self.vectors:
            return f"needs {family} embeddings: run `exoray embed BASE --model {family}`"
        ids, matrix, model_id = self.vectors[family]
        matrix = np.asarray(matrix, dtype=np.float32)
        ids = _as_array(ids)
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise ValueError(f"vectors[{family!r}]: {len(ids)} ids but a matrix of shape "
                             f"{matrix.shape}; pass (image_ids, (n, d) array, model_id)")
        pos = _positions(self.ids, ids)
        if self.n < matrix.shape[0] // 2:  # a part of the collection: score its vectors only
            has = pos >= 0
            matrix = matrix[pos[has]]
            pos = np.where(has, np.cumsum(has) - 1, -1)
        missing = int((pos < 0).sum())
        if missing and self.n:
            self.notes.append(f"{family} vectors ({model_id}) missing for {missing} of {self.n} "
                              f"images: their {family} flags are null; run `exoray embed BASE "
                              f"--model {family}`")
        self._families[family] = (pos, matrix, model_id)
        return self._families[family]

    def sims(self, family: str) -> tuple[np.ndarray, dict[str, int]]:
        """Cosine of every vector to every prompt of the rules that has a text vector, once."""
        if family not in self._sims:
            _, matrix, _ = self._families[family]  # only asked after family() succeeded
            prompts = [p for p in self.prompts.get(family, [])
                       if p in self.text_vectors
                       and np.shape(self.text_vectors[p]) == (matrix.shape[1],)]
            text = np.asarray([self.text_vectors[p] for p in prompts],
                              dtype=np.float32).reshape(len(prompts), matrix.shape[1])
            self._sims[family] = (matrix @ text.T, {p: i for i, p in enumerate(prompts)})
        return self._sims[family]

    def evidence_positions(self, name: str) -> np.ndarray:
        """Per features row: its row in evidence table ``name`` (-1 where absent), once."""
        if name not in self._evidence_pos:
            self._evidence_pos[name] = _positions(self.ids,
                                                  _as_array(self.evidence[name]["image_id"]))
        return self._evidence_pos[name]

    def pick(self, values: np.ndarray) -> np.ndarray:
        """The evaluated rows of a value per collection row."""
        return values if self.rows is None else values[self.rows]

    def aligned(self, pos: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per features row: ``values[pos]`` as float64, NaN where ``pos`` is -1."""
        out = np.full(self.n, math.nan)
        has = pos >= 0
        out[has] = values[pos[has]]
        return out


# -- leaves ---------------------------------------------------------------------------------------
def feature(ctx: Inputs, node: N.Feature) -> Result:
    names = set(ctx.features.column_names)
    if node.issue:
        issue = quality.get_issue(node.issue)
        missing = [c for c in issue.columns if c not in names]
        if missing:
            return invalid(ctx.n, f"features have no column {', '.join(missing)}: rerun "
                                  "`exoray features BASE`")
        kind = "features"
        if issue.needs_dupes:
            groups, kind = ctx.groups()
            if groups is None:
                return invalid(ctx.n, kind)
            ctx.collection.dupes = groups
        scores = ctx.pick(issue.scores(ctx.collection))
        return threshold(scores, node.op, node.threshold, ctx.bit(kind))
    if node.column not in names:
        return invalid(ctx.n, f"features have no column {node.column}: rerun "
                              "`exoray features BASE`")
    return threshold(ctx.pick(ctx.collection.column(node.column)), node.op, node.threshold,
                     ctx.bit("features"))


def zero_shot(ctx: Inputs, node: N.ZeroShot) -> Result:
    found = ctx.family(node.embedding)
    if isinstance(found, str):
        return invalid(ctx.n, found)
    pos, matrix, model_id = found
    sims, column = ctx.sims(node.embedding)
    lost = [p for p in (*node.positive, *node.negative) if p not in column]
    if lost:
        return invalid(ctx.n, f"no {matrix.shape[1]}-d text vector for {len(lost)} prompt(s), "
                              f"e.g. {lost[0]!r}: encode Rules.prompt_sets() with {model_id}")
    best_pos = sims[:, [column[p] for p in node.positive]].max(axis=1, initial=-math.inf)
    best_neg = sims[:, [column[p] for p in node.negative]].max(axis=1, initial=-math.inf)
    score = ctx.aligned(pos, best_pos.astype(np.float64) - best_neg)
    return threshold(score, "above", node.margin, ctx.bit(node.embedding))


def linear_head(ctx: Inputs, node: N.LinearHead) -> Result:
    found = ctx.family(node.embedding)
    if isinstance(found, str):
        return invalid(ctx.n, found)
    pos, matrix, model_id = found
    if model_id not in node.models:
        wanted = node.model_name or " or ".join(node.models)
        spec = node.models[0].split(":", 1)[-1]
        return invalid(ctx.n, f"linear head needs {wanted} embeddings ({', '.join(node.models)}), "
                              f"BASE has {model_id}: run `exoray embed BASE --model "
                              f"{node.embedding}:{spec}`")
    weights = np.asarray(node.weights, dtype=np.float32)
    if weights.size != matrix.shape[1]:
        return invalid(ctx.n, f"linear head has {weights.size} weights but {model_id} vectors "
                              f"have {matrix.shape[1]} dimensions; use the head made for it")
    score = matrix @ weights + np.float32(node.bias)
    return threshold(ctx.aligned(pos, score), node.op, node.threshold, ctx.bit(node.embedding))


def evidence(ctx: Inputs, node: N.Evidence) -> Result:
    table = ctx.evidence.get(node.table)
    if table is None:
        return invalid(ctx.n, f"no {node.table!r} evidence (Phase V) was given")
    for column in ("image_id", node.column):
        if column not in table.column_names:
            return invalid(ctx.n, f"{node.table!r} evidence has no column {column!r} (it has "
                                  f"{', '.join(table.column_names)})")
    values = table[node.column]
    if pa.types.is_boolean(values.type):
        values = values.cast(pa.int8())
    try:
        numbers = values.cast(pa.float64()).fill_null(math.nan).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return invalid(ctx.n, f"{node.table!r} evidence column {node.column!r} is not numeric "
                              f"({values.type})")
    values_by_row = ctx.aligned(ctx.evidence_positions(node.table), numbers)
    return threshold(values_by_row, node.op, node.threshold, ctx.bit(node.table))


def duplicate(ctx: Inputs, node: N.Duplicate) -> Result:
    groups, kind = ctx.groups()
    if groups is None:
        return invalid(ctx.n, kind)
    if "kind" in groups.column_names and set(node.kinds) != set(DUPLICATE_KINDS):
        groups = groups.filter(pc.is_in(groups["kind"], pa.array(node.kinds)))
    pos = _positions(_as_array(groups["image_id"]), ctx.all_ids)
    present = pos >= 0
    rows = pos[present]
    gid = groups["group_id"].to_numpy()[present].astype(np.int64)
    _, inverse, counts = np.unique(gid, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    member = counts[inverse] >= 2
    value = np.zeros(ctx.total)
    value[rows[member]] = 1.0
    if node.member == "redundant" and member.any():
        value[_keepers(ctx, rows[member], inverse[member])] = 0.0
    return threshold(ctx.pick(value), "above", None, ctx.bit(kind))


def _keepers(ctx: Inputs, rows: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Row of each group's member to keep: the ranking of `exoray dupes --list` (KEEP_RULE)."""
    feats = ctx.features.take(pa.array(rows))
    names = feats.column_names
    cols: dict[str, pa.Array] = {"g": pa.array(group), "row": pa.array(rows)}
    order = [("g", "ascending")]
    if "width" in names and "height" in names:
        cols["pixels"] = pc.multiply(feats["width"].cast(pa.int64()),
                                     feats["height"].cast(pa.int64()))
        order.append(("pixels", "descending"))
    for name, how in (("sharpness", "descending"), ("bytes", "descending")):
        if name in names:
            cols[name] = feats[name]
            order.append((name, how))
    if "relpath" in names:
        cols["depth"] = pc.count_substring(feats["relpath"], "/")
        cols["length"] = pc.utf8_length(feats["relpath"])
        cols["relpath"] = feats["relpath"]
        order += [("depth", "ascending"), ("length", "ascending"), ("relpath", "ascending")]
    cols["image_id"] = feats["image_id"]
    order.append(("image_id", "ascending"))
    ranked = pa.table(cols).sort_by(order)
    g = ranked["g"].to_numpy()
    first = np.ones(g.size, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    return ranked["row"].to_numpy()[first]


LEAVES = {N.Feature: feature, N.ZeroShot: zero_shot, N.LinearHead: linear_head,
          N.Evidence: evidence, N.Duplicate: duplicate}
