"""Check one flag's YAML mapping and compile it into a :mod:`nodes` tree plus its resolved spec.

Every problem goes through ``fail(path, problem)`` with the path of the offending key inside the
flag, so :mod:`exoray.strata.rules` can name the file, line, flag and key in one line. The spec
is the rule with every default filled in (issue thresholds, margins, op, file hashes): printing
it shows exactly what runs, and hashing it gives the rules version.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa

from exoray.engine.schemas import FEATURES_SCHEMA
from exoray.explore import quality
from exoray.image.dupes import KINDS as DUPLICATE_KINDS
from exoray.strata import nodes as N
from exoray.strata.expr import (
    And,
    Name,
    Not,
    SubsetError,
    format_node,
    parse_expression,
    unknown_flag_message,
)
from exoray.strata.expr import Node as ExprNode

Path_ = tuple[Any, ...]
Fail = Callable[[Path_, str], NoReturn]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
OPS = ("above", "below")
COMBINE_KINDS = ("all_of", "any_of", "first_of")
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "feature": ("issue", "column", "op", "threshold"),
    "zero_shot": ("positive", "negative", "margin", "embedding"),
    "linear_head": ("embedding", "models", "model_name", "weights", "bias", "sha256", "op",
                    "threshold"),
    "evidence": ("table", "column", "op", "threshold"),
    "duplicate": ("member", "kinds"),
    "all_of": ("inputs",),
    "any_of": ("inputs",),
    "first_of": ("inputs",),
    "not": ("input",),
    "expr": ("expr",),
}
# Only families with a text encoder can score prompts.
TEXT_FAMILIES = ("clip",)
# Numeric (and yes/no) Phase II columns: the ones a threshold can apply to.
FEATURE_COLUMNS = tuple(
    f.name for f in FEATURES_SCHEMA
    if (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type))
)


def _hint(word: str, valid: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(valid), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


class Compiler:
    """Compiles the flags of one rules set; ``known`` is every flag name, for references."""

    def __init__(self, known: set[str], base_dir: Path, removed: set[str] | None = None) -> None:
        self.known = known
        self.base_dir = base_dir
        self.removed = removed or set()

    def unknown(self, name: str) -> str:
        if name in self.removed:
            return (f"refers to flag {name!r}, which the rules remove ('{name}: null'); keep it "
                    "or remove or redefine this flag too")
        return unknown_flag_message(name, self.known)

    # -- shared checks ---------------------------------------------------------------------------
    def number(self, raw: dict, key: str, path: Path_, fail: Fail, example: str) -> float:
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            fail(path + (key,), f"must be a number, got {value!r} ({type(value).__name__}); "
                                f"e.g. {key}: {example}")
        return float(value)

    def required(self, raw: dict, key: str, path: Path_, fail: Fail, what: str) -> Any:
        if key not in raw or raw[key] is None:
            fail(path, f"missing key {key!r}: {what}")
        return raw[key]

    def op(self, raw: dict, path: Path_, fail: Fail) -> str:
        value = raw.get("op", "above")
        if value not in OPS:
            fail(path + ("op",), f"op must be 'above' or 'below', got {value!r}")
        return value

    def identifier(self, raw: dict, key: str, path: Path_, fail: Fail, example: str) -> str:
        value = self.required(raw, key, path, fail, f"e.g. {key}: {example}")
        if not isinstance(value, str) or not NAME_RE.match(value):
            fail(path + (key,), f"must be a lower-case name like {example!r}, got {value!r}")
        return value

    def strings(self, raw: dict, key: str, path: Path_, fail: Fail, example: str) -> list[str]:
        value = raw.get(key)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value \
                or not all(isinstance(v, str) and v.strip() for v in value):
            fail(path + (key,) if key in raw else path,
                 f"needs {key!r}: a non-empty list of texts, e.g. {key}: {example}")
        return list(dict.fromkeys(value))

    # -- one rule ---------------------------------------------------------------------------------
    def rule(self, raw: Any, path: Path_, fail: Fail, *, top: bool) -> tuple[N.Node, Any]:
        """(node, spec) of a flag mapping (``top``) or an inline input (a mapping or a name)."""
        if not top and isinstance(raw, str):
            return self.ref(raw, path, fail), raw
        if not isinstance(raw, dict):
            fail(path, "must be a mapping of keys (kind: ..., ...)" if top else
                 "must be a flag name or an inline rule mapping with a 'kind'")
        kind = raw.get("kind")
        if kind not in KIND_KEYS:
            where = path + ("kind",) if "kind" in raw else path
            fail(where, f"{'unknown kind ' + repr(kind) if 'kind' in raw else 'missing kind'}; "
                        f"{_hint(str(kind), list(KIND_KEYS))}valid kinds: {', '.join(KIND_KEYS)}")
        allowed = ("kind", "help", *KIND_KEYS[kind]) if top else ("kind", *KIND_KEYS[kind])
        for key in raw:
            if key not in allowed:
                fail(path + (key,), f"unknown key; {_hint(str(key), allowed)}valid keys for kind "
                                    f"{kind!r}: {', '.join(sorted(allowed))}")
        handler = self.not_ if kind == "not" else getattr(self, kind)  # 'not' is a keyword
        node, spec = handler(raw, path, fail)
        spec = {"kind": kind, **spec}
        if top and raw.get("help") is not None:
            if not isinstance(raw["help"], str):
                fail(path + ("help",), "must be one line of text")
            spec["help"] = raw["help"]
        return node, spec

    def ref(self, name: Any, path: Path_, fail: Fail) -> N.Ref:
        if name not in self.known:
            fail(path, self.unknown(str(name)))
        return N.Ref(name)

    # -- kinds -----------------------------------------------------------------------------------
    def feature(self, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        if "issue" in raw:
            for key in ("column", "op"):
                if key in raw:
                    fail(path + (key,), "an 'issue' rule takes its column and op from "
                                        "exoray.explore.quality; remove the key or the 'issue'")
            try:
                issue = quality.get_issue(raw["issue"])
            except ValueError as exc:
                fail(path + ("issue",), str(exc))
            if issue.threshold is None:
                if "threshold" in raw:
                    fail(path + ("threshold",), f"issue {issue.name!r} is yes/no and has no "
                                                "threshold; remove the key")
                return N.Feature(issue.direction, None, issue=issue.name), {"issue": issue.name}
            threshold = issue.threshold
            if "threshold" in raw:
                threshold = self.number(raw, "threshold", path, fail, f"{issue.threshold:g}")
                try:
                    threshold = quality.check_threshold(issue.name, threshold)
                except ValueError as exc:
                    fail(path + ("threshold",), str(exc))
            return (N.Feature(issue.direction, float(threshold), issue=issue.name),
                    {"issue": issue.name, "threshold": float(threshold)})
        column = self.required(raw, "column", path, fail,
                               "a Phase II column (or 'issue': a quality issue)")
        if column not in FEATURE_COLUMNS:
            fail(path + ("column",), f"unknown feature column {column!r}; "
                                     f"{_hint(str(column), FEATURE_COLUMNS)}valid columns: "
                                     f"{', '.join(FEATURE_COLUMNS)}")
        op = self.op(raw, path, fail)
        self.required(raw, "threshold", path, fail, "e.g. threshold: 0.5")
        threshold = self.number(raw, "threshold", path, fail, "0.5")
        return (N.Feature(op, threshold, column=column),
                {"column": column, "op": op, "threshold": threshold})

    def zero_shot(self, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        positive = self.strings(raw, "positive", path, fail, "['a photo']")
        negative = self.strings(raw, "negative", path, fail, "['an illustration']")
        margin = self.number(raw, "margin", path, fail, "0.0") if "margin" in raw else 0.0
        embedding = raw.get("embedding", "clip")
        if embedding not in TEXT_FAMILIES:
            fail(path + ("embedding",), f"zero_shot needs a family with a text encoder; valid: "
                                        f"{', '.join(TEXT_FAMILIES)}")
        return (N.ZeroShot(tuple(positive), tuple(negative), margin, embedding),
                {"positive": positive, "negative": negative, "margin": margin,
                 "embedding": embedding})

    def linear_head(self, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        embedding = raw.get("embedding", "clip")
        if not isinstance(embedding, str) or not NAME_RE.match(embedding):
            fail(path + ("embedding",), f"must be an embedding family like 'clip', got "
                                        f"{embedding!r}")
        models = self.strings(raw, "models", path, fail, "['open_clip:ViT-B-32/openai']")
        model_name = raw.get("model_name", "")
        if not isinstance(model_name, str):
            fail(path + ("model_name",), "must be text, e.g. model_name: OpenAI CLIP ViT-B-32")
        weights = self.required(raw, "weights", path, fail, "a .npz/.json path or a list of "
                                                            "numbers")
        spec: dict[str, Any] = {"embedding": embedding, "models": models}
        if model_name:
            spec["model_name"] = model_name
        if isinstance(weights, str):
            if "bias" in raw:
                fail(path + ("bias",), "the bias comes from the weights file; remove 'bias'")
            vector, bias, digest = self.head_file(weights, raw.get("sha256"), path, fail)
            spec.update(weights=str(self.resolve(weights)), sha256=digest)
        else:
            if not isinstance(weights, list) or not weights or not all(
                    isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
                fail(path + ("weights",), "must be a .npz/.json path or a list of numbers")
            if "sha256" in raw:
                fail(path + ("sha256",), "sha256 pins a weights file; remove it for inline weights")
            self.required(raw, "bias", path, fail, "e.g. bias: 0.0 (inline weights need one)")
            vector = np.asarray(weights, dtype=np.float64)
            bias = self.number(raw, "bias", path, fail, "0.0")
            spec.update(weights=[float(w) for w in vector], bias=bias)
        if not np.all(np.isfinite(vector)):
            fail(path + ("weights",), "weights hold NaN or infinity")
        op = self.op(raw, path, fail)
        self.required(raw, "threshold", path, fail, "e.g. threshold: 5.0")
        threshold = self.number(raw, "threshold", path, fail, "5.0")
        spec.update(op=op, threshold=threshold)
        return (N.LinearHead(embedding, tuple(models), tuple(float(w) for w in vector), bias, op,
                             threshold, model_name), spec)

    def resolve(self, name: str) -> Path:
        path = Path(name).expanduser()
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def head_file(self, name: str, pinned: Any, path: Path_,
                  fail: Fail) -> tuple[np.ndarray, float, str]:
        """Weights, bias and sha256 of a linear head file (.npz or .json)."""
        where = path + ("weights",)
        file = self.resolve(name)
        fix = ("give a .npz (arrays 'weight' and 'bias') or .json ({\"weight\": [...], "
               "\"bias\": 0.0}) file, relative to the rules file")
        if not file.is_file():
            fail(where, f"weights file {str(file)!r} does not exist; {fix}")
        data = file.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if pinned is not None and pinned != digest:
            fail(path + ("sha256",), f"{file.name} has sha256 {digest}, not {pinned}: the file "
                                     "changed; restore it or remove the 'sha256' key")
        suffix = file.suffix.lower()
        if suffix not in (".npz", ".json"):
            fail(where, f"unknown weights format {file.suffix!r}; {fix}")
        try:
            if suffix == ".npz":
                with np.load(file, allow_pickle=False) as npz:
                    table = {k: npz[k] for k in npz.files}
            else:
                table = json.loads(data)
        except (ValueError, OSError) as exc:  # np.load and json raise these on bad files
            fail(where, f"cannot read {file.name}: {exc}; {fix}")
        weight = next((table[k] for k in ("weight", "weights", "w", "coef") if k in table), None)
        bias = next((table[k] for k in ("bias", "b", "intercept") if k in table), None)
        try:
            vector = np.asarray(weight, dtype=np.float64).squeeze()
            bias_value = np.asarray(bias, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            fail(where, f"{file.name}: 'weight' and 'bias' must be numbers; {fix}")
        if weight is None or bias is None or vector.ndim != 1 or bias_value.size != 1:
            fail(where, f"{file.name} must hold one weight vector (d,) or (1, d) and one bias; "
                        f"{fix}")
        return vector, float(bias_value[0]), digest

    def evidence(self, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        table = self.identifier(raw, "table", path, fail, "ocr")
        column = self.identifier(raw, "column", path, fail, "text_area")
        op = self.op(raw, path, fail)
        self.required(raw, "threshold", path, fail, "e.g. threshold: 0.1")
        threshold = self.number(raw, "threshold", path, fail, "0.1")
        return (N.Evidence(table, column, op, threshold),
                {"table": table, "column": column, "op": op, "threshold": threshold})

    def duplicate(self, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        member = self.required(raw, "member", path, fail, "'any' or 'redundant'")
        if member not in ("any", "redundant"):
            fail(path + ("member",), f"member must be 'any' or 'redundant', got {member!r}")
        kinds = raw.get("kinds", list(DUPLICATE_KINDS))
        if not isinstance(kinds, list) or not kinds or any(k not in DUPLICATE_KINDS for k in kinds):
            fail(path + ("kinds",), f"must be a list of group kinds among "
                                    f"{', '.join(DUPLICATE_KINDS)}, got {kinds!r}")
        kinds = [k for k in DUPLICATE_KINDS if k in kinds]
        return N.Duplicate(member, tuple(kinds)), {"member": member, "kinds": kinds}

    def _inputs(self, items: Any, path: Path_, fail: Fail) -> tuple[list[N.Node], list]:
        compiled = [self.rule(item, path + (i,), fail, top=False) for i, item in enumerate(items)]
        return [c[0] for c in compiled], [c[1] for c in compiled]

    def _combine(self, op: str, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        items = self.required(raw, "inputs", path, fail, "a list of flag names or inline rules")
        if not isinstance(items, list) or not items:
            fail(path + ("inputs",), "must be a non-empty list of flag names or inline rules")
        nodes, specs = self._inputs(items, path + ("inputs",), fail)
        return N.Combine(op, tuple(nodes)), {"inputs": specs}

    def all_of(self, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        return self._combine("all_of", raw, path, fail)

    def any_of(self, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        return self._combine("any_of", raw, path, fail)

    def first_of(self, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        return self._combine("first_of", raw, path, fail)

    def not_(self, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        item = self.required(raw, "input", path, fail, "a flag name or an inline rule")
        node, spec = self.rule(item, path + ("input",), fail, top=False)
        return N.Combine("not", (node,)), {"input": spec}

    def expr(self, raw: dict, path: Path_, fail: Fail) -> tuple[N.Node, dict]:
        text = self.required(raw, "expr", path, fail, "e.g. expr: 'photo and not dark'")
        try:
            root = parse_expression(text)
        except SubsetError as exc:
            fail(path + ("expr",), str(exc))
        return self._from_expr(root, path + ("expr",), fail), {"expr": format_node(root)}

    def _from_expr(self, node: ExprNode, path: Path_, fail: Fail) -> N.Node:
        if isinstance(node, Name):
            if node.name not in self.known:
                fail(path, f"column {node.column}: {self.unknown(node.name)}")
            return N.Ref(node.name)
        if isinstance(node, Not):
            return N.Combine("not", (self._from_expr(node.operand, path, fail),))
        op = "all_of" if isinstance(node, And) else "any_of"
        return N.Combine(op, tuple(self._from_expr(c, path, fail) for c in node.operands))


